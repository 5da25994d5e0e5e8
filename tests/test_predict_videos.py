"""`pipeline.py predict RUN --videos DIR`: a trained model applied to a bare folder of clips (no annotations):
the run's features are extracted with the run's own settings (same fingerprints), every frame is predicted,
one CSV (frame, time, valence, arousal) and one plot per video."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
from typer.testing import CliRunner

from cache.manifest import load_manifest
from cache.media import probe_video
from cache.store import FeatureStore, store_path
from train.results.restore import load_run, predict_tracks


def test_predict_a_bare_folder_of_videos(mini_demo, tmp_path):
    from pipeline import app

    art = mini_demo / "artifacts"
    clips = tmp_path / "my clips"
    (clips / "sub").mkdir(parents=True)
    shutil.copy(next((art / "sample" / "videos").rglob("video20.mp4")), clips / "interview.mp4")
    shutil.copy(next((art / "sample" / "videos").rglob("video7.mp4")), clips / "sub" / "party.mp4")
    (clips / "notes.txt").write_text("not a video")
    cache, out = tmp_path / "clip-features", tmp_path / "out"
    args = ["predict", "demo-gru-landmarks", "--runs-dir", str(art / "runs"), "--videos", str(clips),
            "--cache-dir", str(cache), "--out", str(out), "--models-dir", str(art / "models"), "--device", "cpu"]
    result = CliRunner().invoke(app, args, env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "2 video(s) predicted" in result.output
    assert sorted(p.name for p in out.iterdir()) == ["interview.csv", "interview.png", "party.csv", "party.png"]

    # the new stores are the run's features (same fingerprint), keyed by clip name
    recorded = json.loads((art / "runs" / "demo-gru-landmarks" / "features.json").read_text())
    store = FeatureStore.open(store_path(cache, "landmarks"))
    assert store.fingerprint == recorded["landmarks"]["fingerprint"]
    assert sorted(store.units()) == ["interview", "party"]

    # one row per frame; the values are the run's predictions for the same video found through the dataset
    run = load_run("demo-gru-landmarks", art / "runs", "cpu")
    track = load_manifest(art / "sample").track("video20")
    expected = predict_tracks(run, [track])["video20"]
    with open(out / "interview.csv", newline="") as handle:
        rows = list(csv.reader(handle))
    assert rows[0] == ["frame", "time", "valence", "arousal", "valid"]
    info = probe_video(clips / "interview.mp4")
    body = np.array(rows[1:], dtype=np.float64)
    assert len(body) == info.n_frames == len(expected)
    np.testing.assert_array_equal(body[:, 0], np.arange(info.n_frames))
    np.testing.assert_allclose(body[:, 1], np.arange(info.n_frames) / info.fps, atol=1e-6)
    np.testing.assert_allclose(body[:, 2:4], expected, atol=1e-5)
    assert body[:, 4].all()  # a face in every frame
    assert np.abs(body[:, 2:4]).max() <= 1 and np.ptp(body[:, 2]) > 0
    assert (out / "party.png").stat().st_size > 5000

    # again: nothing re-extracted; a clip that cannot be decoded is named and fails the command
    (clips / "broken.mp4").write_bytes(b"\x00" * 2048)
    again = CliRunner().invoke(app, args, env={"COLUMNS": "200"})
    assert again.exit_code == 1
    assert "2 skipped as already complete, 1 failed" in again.output
    assert "not predicted:" in again.output and "broken.mp4" in again.output
    assert "2 video(s) predicted" in again.output


def test_a_missing_video_folder_is_one_line(mini_demo, tmp_path):
    from pipeline import app

    art = mini_demo / "artifacts"
    empty = CliRunner().invoke(app, ["predict", "demo-gru-landmarks", "--runs-dir", str(art / "runs"), "--videos",
                                     str(tmp_path / "nothing-here")])
    assert empty.exit_code == 1 and "no video folder or file" in empty.output
    assert not (tmp_path / "nothing-here").exists()
