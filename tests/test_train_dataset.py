"""Dataset over cached features: windows, masks, alignment of a 50 Hz video-unit store, NaN/inf guard."""

from __future__ import annotations

import math

import numpy as np
import pytest

from cache.align import align_to_frames
from cache.manifest import load_manifest
from cache.media import frame_times
from cache.store import FeatureMeta, FeatureStore, store_path
from train.data.sources import MissingFeatureStore, open_features
from train.data.dataset import TrackDataset, window_starts
from train.data.synthetic import SynthConfig, SynthTrack, make_synthetic


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    root = tmp_path_factory.mktemp("ds")
    tracks = [
        SynthTrack("duo_left", "train", 25.0, 530),
        SynthTrack("duo_right", "train", 25.0, 530),
        SynthTrack("solo", "train", 30.0, 90),  # shorter than a window
        SynthTrack("other", "val", 15.0, 401),
        SynthTrack("t0", "test", 30.0, 120),
    ]
    truth = make_synthetic(root / "data", root / "cache", SynthConfig(tracks=tracks, invalid_share=0.1, no_face_share=0.1))
    return root, truth


def _dataset(root, split, features=("clip", "wavlm"), fill=None, **kw):
    manifest = load_manifest(root / "data", splits=(split,))
    sources = open_features(root / "cache", list(features), fill)
    return TrackDataset(manifest.split(split), sources, **kw)


def test_window_starts_cover_the_track_and_end_aligned():
    assert window_starts(1000, 400, 150) == [0, 150, 300, 450, 600]
    assert window_starts(1001, 400, 150) == [0, 150, 300, 450, 600, 601]
    assert window_starts(400, 400, 150) == [0]
    assert window_starts(90, 400, 150) == [0]
    for n in (401, 777, 5000):
        starts = window_starts(n, 400, 150)
        assert starts[-1] + 400 == n  # last window aligned to the end
        assert len(starts) == math.ceil((n - 400) / 150) + 1
        assert all(b - a <= 150 for a, b in zip(starts, starts[1:]))


def test_windows_count_and_collate(synth):
    root, _ = synth
    ds = _dataset(root, "train", window=400, stride=150)
    try:
        by_name = {t.name: i for i, t in enumerate(ds.tracks)}
        assert ds.n_frames[by_name["duo_left"]] == 530
        assert [s for ti, s in ds.windows if ti == by_name["duo_left"]] == [0, 130]
        assert [s for ti, s in ds.windows if ti == by_name["solo"]] == [0]
        assert len(ds) == 2 + 2 + 1
        ids = [w for w, (ti, _) in enumerate(ds.windows) if ti == by_name["solo"]] + [0]
        batch = ds.collate(ids)
        assert batch.pad.shape == (2, 400) and batch.features["clip"].shape == (2, 400, 16)
        assert batch.pad[0].sum() == 90 and batch.pad[1].all()
        assert not batch.label_mask[0, 90:].any() and not batch.masks["clip"][0, 90:].any()
        assert batch.features["wavlm"].shape[-1] == 8
    finally:
        ds.close()


def test_masks_for_invalid_labels_missing_faces_and_fill(synth):
    root, truth = synth
    ds = _dataset(root, "val", window=64, stride=32)
    filled = _dataset(root, "val", window=64, stride=32, fill={"clip": math.inf})
    try:
        track = ds.tracks[0]
        aligned = ds.track(0)
        assert np.array_equal(aligned.label_valid, track.labels.valid)
        assert (~aligned.label_valid).sum() == 40
        group = FeatureStore.open(store_path(root / "cache", "clip")).read(track.name)
        assert np.array_equal(aligned.masks["clip"], group.valid)  # frame feature: one row per frame
        assert (~aligned.masks["clip"]).sum() == 40
        assert not aligned.values["clip"][~aligned.masks["clip"]].any()  # masked frames hold zeros
        want, want_mask = align_to_frames(group.values, group.times, frame_times(401, 15.0), valid=group.valid)
        assert np.array_equal(aligned.masks["clip"], want_mask)
        np.testing.assert_array_equal(aligned.values["clip"], want.astype(np.float16))
        assert filled.track(0).masks["clip"].all()
        assert aligned.masks["wavlm"].all()
    finally:
        ds.close()
        filled.close()


def test_video_unit_store_at_50hz_aligned_onto_each_track(synth):
    root, _ = synth
    ds = _dataset(root, "train", window=400, stride=150)
    try:
        audio = FeatureStore.open(store_path(root / "cache", "wavlm"))
        assert audio.meta.unit == "video"
        raw = audio.read("duo")
        for name in ("duo_left", "duo_right"):
            ti = [t.name for t in ds.tracks].index(name)
            got = ds.track(ti)
            targets = frame_times(530, 25.0)  # fps read from the video container
            want, mask = align_to_frames(raw.values, raw.times, targets, valid=raw.valid)
            assert np.array_equal(got.masks["wavlm"], mask)
            np.testing.assert_allclose(got.values["wavlm"], want.astype(np.float16))
        # at 25 fps, each label frame is exactly two 20 ms rows
        np.testing.assert_allclose(
            got.values["wavlm"][10], raw.values[20:22].astype(np.float32).mean(0), rtol=1e-2, atol=1e-2
        )
    finally:
        ds.close()


def test_test_split_frames_from_sample_submission(synth):
    root, _ = synth
    ds = _dataset(root, "test", window=64, stride=32)
    try:
        assert ds.n_frames.tolist() == [120] and not ds.has_labels
        batch = ds.collate([0])
        assert not batch.label_mask.any() and batch.pad.all()
    finally:
        ds.close()


def test_a_float32_group_stays_float32_up_to_the_batch(synth, tmp_path):
    """A group kept wider than float16 (cache/precision.py) is neither cast nor masked on the way to a batch:
    1e6 would be inf in float16; the batch buffer of that feature is float32 (standardized later, on the device)."""
    root, _ = synth
    cache = tmp_path / "cache"
    store = FeatureStore.create_or_open(store_path(cache, "big"), FeatureMeta(name="big"))
    values = np.ones((401, 3), dtype=np.float32)
    values[5:9] = 1e6  # fine in float32, inf in float16
    store.write("other", values, frame_times(401, 15.0), dtype="float32")
    manifest = load_manifest(root / "data", splits=("val",))
    for views_dir in (None, tmp_path / "views"):
        ds = TrackDataset(manifest.split("val"), open_features(cache, ["big"]), window=64, stride=32, views_dir=views_dir)
        try:
            aligned = ds.track(0)
            assert aligned.values["big"].dtype == np.float32 and aligned.masks["big"].all()
            np.testing.assert_array_equal(aligned.values["big"][5:9], 1e6)
            assert ds.stats.nonfinite["big"] == 0
            batch = ds.collate([0])  # from the views the second time
            assert batch.features["big"].dtype == np.float32 and batch.features["big"][0, 5, 0] == 1e6
        finally:
            ds.close()


def test_missing_groups_and_stores(synth, tmp_path):
    root, _ = synth
    cache = tmp_path / "cache"
    FeatureStore.create_or_open(store_path(cache, "part"), FeatureMeta(name="part")).write(
        "duo_left", np.ones((530, 2)), frame_times(530, 25.0)
    )
    manifest = load_manifest(root / "data", splits=("train",))
    ds = TrackDataset(manifest.split("train"), open_features(cache, ["part"]), window=400, stride=150, cache_mb=0)
    try:
        assert ds.stats.missing_groups["part"] == 2
        names = [t.name for t in ds.tracks]
        assert ds.track(names.index("duo_left")).masks["part"].all()
        assert not ds.track(names.index("solo")).masks["part"].any()
        ds.track(names.index("duo_left"))  # LRU of 0 MiB keeps only the last track: aligned again
        assert ds.stats.aligned_tracks == 3
    finally:
        ds.close()
    with pytest.raises(MissingFeatureStore, match="nope"):
        open_features(cache, ["nope"])


def test_epoch_order_is_a_blocked_permutation(synth):
    root, _ = synth
    ds = _dataset(root, "train", window=64, stride=32)
    try:
        order = ds.epoch_order(np.random.default_rng(0), block_tracks=1)
        assert sorted(order) == list(range(len(ds)))
        tracks = [ds.windows[w][0] for w in order]
        changes = sum(a != b for a, b in zip(tracks, tracks[1:]))
        assert changes == len(ds.tracks) - 1  # blocks of one track: each track's windows together
        assert order == ds.epoch_order(np.random.default_rng(0), block_tracks=1)
        batches = list(ds.batches(order, 8))
        assert sum(len(b.track) for b in batches) == len(ds)
    finally:
        ds.close()
