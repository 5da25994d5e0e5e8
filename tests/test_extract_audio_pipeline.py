"""ast, wavlm, audio_reliability and qwen3vl end to end through the runner (tiny profile) on a small
sample dataset, and audio reliability against the generator's ground truth."""

from __future__ import annotations

import logging
import os
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
torch.set_num_threads(1)

from cache.align import align_to_frames  # noqa: E402
from cache.manifest import load_manifest  # noqa: E402
from cache.media import frame_times, probe_video  # noqa: E402
from cache.sample_data import SAMPLE_VIDEOS, TRAIN, SampleConfig, write_sample_dataset  # noqa: E402
from cache.store import FeatureMeta, FeatureStore, store_path  # noqa: E402
from extract.base import VideoContext  # noqa: E402
from extract.reliability import AudioReliabilityExtractor  # noqa: E402
from extract.runner import RunOptions  # noqa: E402
from extract.backends import run_extraction  # noqa: E402

FEATURES = ["ast", "wavlm", "audio_reliability", "qwen3vl"]
TRACKS = {"5-60-1920x1080": ["5-60-1920x1080"], "video48": ["video48_left", "video48_right"], "video55": ["video55"]}
SPEECH_MIN = 0.5  # a window at least this much speech of the track's own face must be reliable


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("audio_sample")
    # one single-face video, one two-person video, and the video without audio (moved to train)
    videos = tuple(replace(v, split=TRAIN) for v in SAMPLE_VIDEOS if v.stem in TRACKS)
    write_sample_dataset(root, SampleConfig(seed=0, min_seconds=9.0, max_seconds=9.0, videos=videos, workers=1))
    return root


def _truth(root: Path, stem: str) -> dict[str, np.ndarray]:
    return dict(np.load(root / "ground_truth" / f"{stem}.npz"))


def _speech_fraction(truth: dict, face: int, windows: np.ndarray) -> np.ndarray:
    """Fraction of each window during which this face speaks and the audio carries it."""
    speaking = truth["speaking"][face] & bool(truth["has_audio"])
    times = frame_times(len(speaking), float(truth["fps"]))
    frac, _ = align_to_frames(speaking[:, None].astype(np.float32), times, windows)
    return frac[:, 0]


def _check_against_truth(root: Path, reliability: dict[str, tuple[np.ndarray, np.ndarray]]) -> tuple[int, int]:
    """Silent windows unreliable, speech windows reliable; returns (speech windows, silent windows) seen."""
    n_speech = n_silent = 0
    for stem, tracks in TRACKS.items():
        truth = _truth(root, stem)
        for face, track in enumerate(tracks):
            values, windows = reliability[track]
            frac = _speech_fraction(truth, face, windows)
            reliable = values[:, 2] > 0.5
            silent, speech = frac == 0, frac >= SPEECH_MIN
            assert not reliable[silent].any(), (track, windows[silent & reliable])
            assert reliable[speech].all(), (track, windows[speech & ~reliable], values[speech & ~reliable])
            n_speech += int(speech.sum())
            n_silent += int(silent.sum())
    return n_speech, n_silent


def test_reliability_matches_ground_truth_speech(dataset, tmp_path):
    """audio_reliability on a `mouth` store made from the generator's ground-truth mouth_open."""
    store = FeatureStore.create_or_open(store_path(tmp_path, "mouth"), FeatureMeta(name="mouth", kind="frame"))
    manifest = load_manifest(dataset)
    ext = AudioReliabilityExtractor()
    results = {}
    for stem, tracks in TRACKS.items():
        truth = _truth(dataset, stem)
        for face, track in enumerate(tracks):
            open_flag = truth["mouth_open"][face].astype(np.float32)
            values = np.stack([truth["mouth_opening"][face], open_flag], 1)
            times = frame_times(len(open_flag), float(truth["fps"]))
            store.write(track, values, times, attrs={"columns": ["opening_ratio", "open"]})
        video = VideoContext(stem, manifest.track(tracks[0]).video, probe_video(manifest.track(tracks[0]).video), tracks)
        for track, r in ext.process_stores(video, {"mouth": FeatureStore.open(store.path)}).items():
            assert r.attrs["columns"] == ["open_s", "coverage", "reliable"]
            np.testing.assert_allclose(r.values[:, 1], 1.0)  # ground truth covers every frame
            results[track] = (r.values, r.times)
    n_speech, n_silent = _check_against_truth(dataset, results)
    assert n_speech >= 3 and n_silent >= 3  # both kinds are actually tested
    assert not results["video55"][0][:, 2].any()  # no audio: nothing reliable


@pytest.fixture(scope="module")
def extracted(dataset, tmp_path_factory):
    work = tmp_path_factory.mktemp("audio_extract")
    os.environ.setdefault("YOLO_CONFIG_DIR", str(work / "ultralytics"))
    options = RunOptions(
        split="train", features=FEATURES, data_root=dataset, cache_dir=work / "features", models_dir=work / "models",
        profile="tiny", device="cpu", progress=False, batch_size=16,
        configs={"qwen3vl": {"crop_size": 64, "describe": True, "max_new_tokens": 4}},
    )
    logger = logging.getLogger("extract.audio")
    records: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: records.append(record.getMessage())  # type: ignore[method-assign]
    logger.addHandler(handler)
    old_level = logger.level
    logger.setLevel(logging.INFO)
    try:
        summary = run_extraction(options)
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)
    return work, options, summary, records


def test_end_to_end_every_track(extracted, dataset):
    work, _, summary, records = extracted
    assert summary.ok, summary.failed
    stores = {f: FeatureStore.open(store_path(work / "features", f)) for f in FEATURES + ["faces", "mouth"]}
    tracks = [t for ts in TRACKS.values() for t in ts]
    for name in ("faces", "mouth", "audio_reliability", "qwen3vl"):
        assert stores[name].units() == sorted(tracks), name
    # audio features: one group per video with audio; the video without audio has none, and a logged line
    for name in ("ast", "wavlm"):
        assert stores[name].units() == ["5-60-1920x1080", "video48"], name
    assert any("video55" in line and "no audio stream" in line for line in records), records

    fps = 30.0
    ast = stores["ast"].read("video48")
    assert ast.values.shape[1] == 64 and np.allclose(np.diff(ast.times[:, 0]), 1.0)
    wav = stores["wavlm"].read("video48")
    assert np.allclose(np.diff(wav.times[:, 0]), 0.02) and abs(len(wav.values) / 50 - 9.0) < 0.1
    q = stores["qwen3vl"].read("video48_left")
    assert q.values.shape == (4, 4, 64) and q.valid.all()  # 9 s: [0,4) [2,6) [4,8) [6,9)
    np.testing.assert_allclose(q.times, [[0, 4], [2, 6], [4, 8], [6, 9]])
    assert q.attrs["row_names"] == ["mm_mean", "mm_last", "vis_mean", "vis_last"] and len(q.attrs["descriptions"]) == 4

    # every feature aligns onto the label frames by time
    n = len(load_manifest(dataset).track("video48_left").labels)
    frames = frame_times(n, fps)
    for name, unit in (("ast", "video48"), ("wavlm", "video48"), ("qwen3vl", "video48_left"), ("audio_reliability", "video48_left")):
        g = stores[name].read(unit)
        aligned, mask = align_to_frames(g.values, g.times, frames, g.valid)
        assert aligned.shape[0] == n and mask.mean() > 0.99, (name, mask.mean())
    # a frame in [2, 4) is the average of segments 0 and 1
    aligned, _ = align_to_frames(q.values, q.times, frames)
    np.testing.assert_allclose(aligned[75], q.values[:2].astype(np.float32).mean(0), atol=1e-3)


def test_end_to_end_reliability_from_the_mouth_extractor(extracted, dataset):
    work = extracted[0]
    store = FeatureStore.open(store_path(work / "features", "audio_reliability"))
    results = {}
    for tracks in TRACKS.values():
        for track in tracks:
            g = store.read(track)
            results[track] = (g.values.astype(np.float32), g.times)
    assert not results["video55"][0][:, 2].any()
    _check_against_truth(dataset, results)


def test_rerun_skips_everything(extracted):
    _, options, _, _ = extracted
    again = run_extraction(options)
    assert again.ok and not again.done and sorted(again.skipped) == sorted(TRACKS)
