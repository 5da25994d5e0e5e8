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


def _predict_args(art: Path, clips: Path, cache: Path, out: Path) -> list[str]:
    """`predict demo-gru-landmarks --videos CLIPS` on the mini demo's run."""
    return ["predict", "demo-gru-landmarks", "--runs-dir", str(art / "runs"), "--videos", str(clips),
            "--cache-dir", str(cache), "--out", str(out), "--models-dir", str(art / "models"), "--device", "cpu"]


def test_predict_a_bare_folder_of_videos(mini_demo, tmp_path):
    from pipeline import app

    art = mini_demo / "artifacts"
    clips = tmp_path / "my clips"
    (clips / "sub").mkdir(parents=True)
    shutil.copy(next((art / "sample" / "videos").rglob("video20.mp4")), clips / "interview.mp4")
    shutil.copy(next((art / "sample" / "videos").rglob("video7.mp4")), clips / "sub" / "party.mp4")
    (clips / "notes.txt").write_text("not a video")
    cache, out = tmp_path / "clip-features", tmp_path / "out"
    args = _predict_args(art, clips, cache, out)
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


def test_bare_videos_are_each_their_own_unit(mini_demo, tmp_path):
    """`x.mp4` beside `x_left.mp4`, and two `clip.mp4` in different sub-folders (issue 24): four videos, four
    units, each predicted from its own frames (no `_left/_right` pairing, none dropped)."""
    from pipeline import app

    art = mini_demo / "artifacts"
    clips = tmp_path / "clips"
    for rel, source in (("x.mp4", "video20"), ("x_left.mp4", "video7"), ("a/clip.mp4", "video2"), ("b/clip.mp4", "video33")):
        (clips / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(next((art / "sample" / "videos").rglob(f"{source}.mp4")), clips / rel)
    cache, out = tmp_path / "features", tmp_path / "out"
    args = _predict_args(art, clips, cache, out)
    result = CliRunner().invoke(app, args, env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "4 video(s) predicted" in result.output
    assert sorted(p.name for p in out.glob("*.csv")) == ["a__clip.csv", "b__clip.csv", "x.csv", "x_left.csv"]
    assert sorted(FeatureStore.open(store_path(cache, "landmarks")).units()) == ["a__clip", "b__clip", "x", "x_left"]
    run = load_run("demo-gru-landmarks", art / "runs", "cpu")
    manifest = load_manifest(art / "sample")
    units = {"x_left": ("x_left.mp4", "video7"), "a__clip": ("a/clip.mp4", "video2"),
             "b__clip": ("b/clip.mp4", "video33"), "x": ("x.mp4", "video20")}
    expected = {s: predict_tracks(run, [manifest.track(s)])[s] for _, s in units.values()}
    for unit, (rel, source) in units.items():
        with open(out / f"{unit}.csv", newline="") as handle:
            body = np.array(list(csv.reader(handle))[1:], dtype=np.float64)[:, 2:4]
        assert len(body) == probe_video(clips / rel).n_frames, unit  # the sample's labels may run a frame longer
        # the clip's own video (windows over 50 presented frames vs 51 label frames differ a little at the end)
        gap = {s: np.abs(body - e[: len(body)]).max() for s, e in expected.items() if len(e) >= len(body)}
        assert min(gap, key=gap.get) == source and gap[source] < 1e-2, (unit, gap)


def test_bare_videos_that_cannot_be_told_apart_are_refused(mini_demo, tmp_path):
    from extract.bare import BareVideoError, bare_manifest
    from pipeline import app

    art = mini_demo / "artifacts"
    video = next((art / "sample" / "videos").rglob("video20.mp4"))
    clips = tmp_path / "clips"
    for rel in ("a b/c.mp4", "a_b/c.mp4"):  # both would be the unit a_b__c
        (clips / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(video, clips / rel)
    try:
        bare_manifest(clips)
    except BareVideoError as err:
        assert "cannot be told apart" in str(err) and "a b/c.mp4" in str(err)
    else:
        raise AssertionError("two videos with one unit name were accepted")
    result = CliRunner().invoke(app, _predict_args(art, clips, tmp_path / "f", tmp_path / "o"), env={"COLUMNS": "300"})
    assert result.exit_code == 1 and "cannot be told apart" in result.output, result.output
    assert not (tmp_path / "f").exists() and not (tmp_path / "o").exists()


def test_no_rows_past_the_presented_frames(mini_demo, tmp_path):
    """An AVI whose header declares two frames more than it presents (the sample's video7-3.avi: 473 and
    471 in full, 52 and 50 here): one CSV row per presented frame, none at invented times (issue 24)."""
    from cache.sample_data import SampleConfig, write_sample_dataset
    from pipeline import app

    art = mini_demo / "artifacts"
    write_sample_dataset(tmp_path / "s", SampleConfig.short(("video7-3",), 2.0))
    clips = tmp_path / "clips"
    clips.mkdir()
    shutil.copy(next((tmp_path / "s").rglob("video7-3.avi")), clips / "packed.avi")
    declared = probe_video(clips / "packed.avi").n_frames
    out = tmp_path / "out"
    result = CliRunner().invoke(app, _predict_args(art, clips, tmp_path / "f", out), env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    record = FeatureStore.open(store_path(tmp_path / "f", "frame_times"))
    presented = record.unit_attrs("packed")["presented"]
    assert presented == declared - 2
    with open(out / "packed.csv", newline="") as handle:
        body = np.array(list(csv.reader(handle))[1:], dtype=np.float64)
    assert len(body) == presented
    # each row at its presented frame's recorded time: from 0, rising, none past the video's end
    np.testing.assert_allclose(body[:, 1], record.read("packed").times[:, 0], atol=1e-6)
    assert body[0, 1] == 0 and np.all(np.diff(body[:, 1]) > 0) and body[-1, 1] < declared / 25.0
