"""`pipeline.py windows`: the windows a run would train or predict on, on the built-in sample."""

from __future__ import annotations

import csv

import numpy as np
import pytest
from typer.testing import CliRunner

from cache.manifest import load_manifest
from cache.media import frame_times, probe_video
from cache.sample_data import SampleConfig, write_sample_dataset
from cache.store import FeatureMeta, FeatureStore, store_path
from cache.audio_windows import audio_windows
from pipeline import app


@pytest.fixture(scope="module")
def sample(tmp_path_factory):
    root = tmp_path_factory.mktemp("windows_cli")
    write_sample_dataset(root / "data", SampleConfig.short(("video20",), 9.0))
    manifest = load_manifest(root / "data")
    store = FeatureStore.create_or_open(store_path(root / "cache", "mouth"), FeatureMeta(name="mouth", kind="frame"))
    rng = np.random.default_rng(0)
    for track in manifest.tracks:
        info = probe_video(track.video)
        flag = (np.arange(info.n_frames) // 15) % 2 == 0  # open half a second, closed half a second
        values = np.stack([rng.random(info.n_frames), flag], axis=1).astype(np.float32)
        valid = np.ones(info.n_frames, bool)
        valid[: info.n_frames // 10] = False  # no face at the start
        store.write(track.name, values, frame_times(info.n_frames, info.fps), valid,
                    attrs={"columns": ["opening_ratio", "open"]})
    return root, manifest


def _run(root, *args):
    out = root / "w.csv"
    res = CliRunner().invoke(app, ["windows", "--data-root", str(root / "data"), "--cache-dir", str(root / "cache"),
                                   "--csv", str(out), *args])
    assert res.exit_code == 0, res.output
    with out.open() as f:
        return list(csv.DictReader(f)), res.output


def test_audio_windows_of_the_sample(sample):
    root, manifest = sample
    split = next(t.split for t in manifest.tracks if t.labels is not None)
    rows, output = _run(root, "--split", split, "--level", "audio_window")
    tracks = [t for t in manifest.split(split)]
    for track in tracks:
        info = probe_video(track.video)
        mine = [r for r in rows if r["track"] == track.name]
        flag = (np.arange(info.n_frames) // 15) % 2 == 0
        seen = np.ones(info.n_frames, bool)
        seen[: info.n_frames // 10] = False
        ref = audio_windows(info.n_frames, info.fps, open_flag=flag & seen, detected=seen,  # undetected: closed
                            labels=track.labels.values, label_valid=track.labels.valid)
        assert len(mine) == len(ref) >= 3
        last = mine[-1]
        assert float(last["end_time"]) == pytest.approx(info.n_frames / info.fps)  # partial last window
        assert [int(r["start_frame"]) for r in mine] == ref.frames[:, 0].tolist()
        np.testing.assert_allclose([float(r["open_s"]) for r in mine], ref.open_s, atol=1e-9)
        np.testing.assert_allclose([float(r["coverage"]) for r in mine], ref.coverage, atol=1e-9)
        assert [r["used_for_training"] == "True" for r in mine] == ref.train.tolist()
        first = mine[0]
        v = track.labels.values[: int(first["end_frame"])][track.labels.valid[: int(first["end_frame"])]]
        assert float(first["valence"]) == pytest.approx(float(v[:, 0].mean()), abs=1e-6)
        assert float(first["arousal_b0"]) == pytest.approx(float(ref.block_targets[0, 0, 1]), abs=1e-6)
    assert f"{len(rows)} audio_window windows of {len(tracks)} {split} tracks" in output


def test_frame_windows_and_a_recipe(sample, tmp_path):
    root, manifest = sample
    split = next(t.split for t in manifest.tracks if t.labels is not None)
    rows, _ = _run(root, "--split", split, "--level", "frame", "--window", "100", "--stride", "50")
    track = manifest.split(split)[0]
    n = len(track.labels)
    mine = [r for r in rows if r["track"] == track.name]
    starts = list(range(0, n - 100 + 1, 50))
    starts += [n - 100] if starts[-1] + 100 < n else []
    assert [int(r["start_frame"]) for r in mine] == starts
    assert all(r["open_s"] == "" and r["used_for_training"] == "True" for r in mine)
    recipe = tmp_path / "r.yaml"
    recipe.write_text("model: blockpool\ndata:\n  features: [wavlm]\n  level: audio_window\n  window: 200\n"
                      "  stride: 100\n  window_filter: {min_open_s: 0.0, min_coverage: 0.0}\n")
    default, _ = _run(root, "--split", split, "--level", "audio_window")
    assert not all(r["used_for_training"] == "True" for r in default if r["track"] == track.name)
    rows, _ = _run(root, "--split", split, "--recipe", str(recipe))
    assert all(r["used_for_training"] == "True" for r in rows if r["track"] == track.name)  # the recipe's rule


def test_segment_windows_run_over_the_first_feature(sample):
    root, manifest = sample
    track = next(t for t in manifest.tracks if t.labels is not None)
    store = FeatureStore.create_or_open(store_path(root / "cache", "seg"), FeatureMeta(name="seg", kind="segment"))
    times = np.array([[2.0 * k, 2.0 * k + 4.0] for k in range(4)])  # 4 s segments every 2 s
    store.write(track.name, np.zeros((4, 3), np.float32), times)
    rows, _ = _run(root, "--split", track.split, "--level", "segment", "--features", "seg", "--window", "2", "--stride", "1")
    fps = probe_video(track.video).fps
    # windows of 2 segments every segment: [0, 6), [2, 8), [4, 10) s
    assert [(float(r["start_time"]), float(r["end_time"])) for r in rows] == [(0.0, 6.0), (2.0, 8.0), (4.0, 10.0)]
    assert [int(r["end_frame"]) for r in rows] == [round(t * fps) for t in (6.0, 8.0, 10.0)]
