"""Aligned views: the same batches as the lazy path, shared on disk, rebuilt when stale, safe to kill."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from cache.manifest import load_manifest
from cache.store import FeatureStore, store_path
from train.data.dataset import TrackDataset
from train.data.sources import open_features
from train.data.synthetic import SynthConfig, SynthTrack, make_synthetic

ROOT = Path(__file__).resolve().parents[1]
FEATURES = ["clip", "wavlm"]


@pytest.fixture()
def synth(tmp_path):
    tracks = [
        SynthTrack("duo_left", "train", 25.0, 530),
        SynthTrack("duo_right", "train", 25.0, 530),
        SynthTrack("solo", "train", 30.0, 90),
        SynthTrack("long", "train", 15.0, 1200),
        SynthTrack("other", "val", 15.0, 401),
    ]
    make_synthetic(tmp_path / "data", tmp_path / "cache", SynthConfig(tracks=tracks, invalid_share=0.1, no_face_share=0.1))
    return tmp_path


def _dataset(root: Path, views_dir: Path | None, split: str = "train", fill=None) -> TrackDataset:
    manifest = load_manifest(root / "data", splits=(split,))
    sources = open_features(root / "cache", FEATURES, fill)
    return TrackDataset(manifest.split(split), sources, window=200, stride=75, views_dir=views_dir)


def _all_batches(ds: TrackDataset):
    return list(ds.batches(ds.sequential_order(), 4))


def _assert_same(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        for name in FEATURES:
            np.testing.assert_array_equal(x.features[name], y.features[name])
            np.testing.assert_array_equal(x.masks[name], y.masks[name])
        np.testing.assert_array_equal(x.labels, y.labels)
        np.testing.assert_array_equal(x.label_mask, y.label_mask)
        np.testing.assert_array_equal(x.pad, y.pad)


def _view_files(views_dir: Path) -> dict[str, bytes]:
    return {str(p.relative_to(views_dir)): p.read_bytes() for p in sorted(views_dir.rglob("*.npy"))}


def test_views_give_the_lazy_batches_and_are_reused(synth):
    lazy = _dataset(synth, None)
    expected = _all_batches(lazy)
    lazy.close()

    views_dir = synth / "views"
    first = _dataset(synth, views_dir)
    assert not any(first.view_ready(ti) for ti in range(len(first.tracks)))
    _assert_same(_all_batches(first), expected)  # first use aligns and writes the views
    assert all(first.view_ready(ti) for ti in range(len(first.tracks)))
    aligned_first = first.stats.aligned_tracks
    first.close()
    assert aligned_first == len(first.tracks)

    second = _dataset(synth, views_dir)  # another run: slices of the views, nothing aligned
    _assert_same(_all_batches(second), expected)
    assert second.stats.aligned_tracks == 0
    # a 50 Hz store aligned onto 25/30/15 fps frames: one file pair per (feature, track)
    assert len(list((views_dir / "wavlm").rglob("*.mask.npy"))) == 4
    second.close()

    # another fill setting is another view, never the same files
    filled = _dataset(synth, views_dir, fill={"clip": float("inf")})
    filled.build_views()
    assert len([p for p in (views_dir / "clip").iterdir() if p.is_dir()]) == 2
    filled.close()


def test_standardized_batches_are_the_same_from_views(synth):
    from train.data.standardize import fit_standardizer

    lazy = _dataset(synth, None)
    lazy.standardizer = fit_standardizer(lazy.sources, lazy.tracks)
    expected = _all_batches(lazy)
    lazy.close()
    for _ in range(2):  # first use (aligned, written) then from the views
        ds = _dataset(synth, synth / "views")
        ds.standardizer = fit_standardizer(ds.sources, ds.tracks)
        _assert_same(_all_batches(ds), expected)
        ds.close()
    # batches stay raw and carry the statistics; to_tensors standardizes them on the device, one op per feature
    from train.data.tensors import to_tensors

    raw = np.concatenate([b.features["clip"][b.masks["clip"]] for b in expected]).astype(np.float32)
    tensors = [to_tensors(b, torch.device("cpu")) for b in expected]
    x = np.concatenate([t.features["clip"][t.masks["clip"]].numpy() for t in tensors])
    stats = lazy.standardizer.stats["clip"]
    np.testing.assert_allclose(x, (raw - stats.mean) / stats.std, rtol=1e-4, atol=1e-4)
    assert np.abs(x.std(axis=0) - 1).max() < 0.05 and np.abs(raw.std(axis=0) - 1).max() > 0.3  # it mattered
    assert all((t.features["clip"][~t.masks["clip"]] == 0).all() for t in tensors)


def test_a_reextracted_store_makes_its_views_stale(synth):
    views_dir = synth / "views"
    ds = _dataset(synth, views_dir)
    ds.build_views()
    ds.close()
    before = _view_files(views_dir)

    # re-extract one track's group with other values (same fingerprint, as `extract --force` would)
    store = FeatureStore.open(store_path(synth / "cache", "clip"))
    old = store.read("solo")
    writable = FeatureStore.create_or_open(store.path, store.meta)
    writable.write("solo", old.values + 1, old.times, old.valid, attrs={k: v for k, v in old.attrs.items()
                                                                         if k not in ("complete", "rows", "chunks", "content_digest")})

    again = _dataset(synth, views_dir)
    ti = [t.name for t in again.tracks].index("solo")
    assert not again.view_ready(ti)
    assert all(again.view_ready(i) for i in range(len(again.tracks)) if i != ti)
    values, mask = again.align_feature(ti, "clip")
    np.testing.assert_allclose(values[mask], (old.values[: len(values)] + 1)[mask], atol=1e-2)
    again.close()
    after = _view_files(views_dir)
    stale = [k for k in before if k.split("/")[-1].startswith("solo.") and k.startswith("clip/")]
    assert stale and not any(k in after for k in stale)  # the stale pair was replaced, not kept beside
    assert len(after) == len(before)


_BUILD = """
import sys, time
sys.path.insert(0, {root!r})
import numpy as np
from cache.manifest import load_manifest
from train.data.dataset import TrackDataset
from train.data.sources import open_features
import train.data.views as views

slow = views.FeatureViews.write
def write(self, *a, **k):
    out = slow(self, *a, **k)
    print("wrote", flush=True)
    time.sleep(0.5)
    return out
views.FeatureViews.write = write
manifest = load_manifest({data!r}, splits=("train",))
ds = TrackDataset(manifest.split("train"), open_features({cache!r}, {features!r}), window=200, stride=75,
                  views_dir={views!r}, align_workers=1)
ds.build_views()
print("done", flush=True)
"""


def test_a_build_killed_half_way_then_rebuilt_equals_a_clean_build(synth):
    views_dir = synth / "views"
    script = _BUILD.format(root=str(ROOT), data=str(synth / "data"), cache=str(synth / "cache"),
                           features=FEATURES, views=str(views_dir))
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    seen = 0
    deadline = time.time() + 120
    while seen < 3 and time.time() < deadline:
        if proc.stdout.readline().startswith("wrote"):
            seen += 1
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert seen == 3
    partial = _dataset(synth, views_dir)
    ready = sum(partial.view_ready(ti) for ti in range(len(partial.tracks)))
    assert 0 < ready < len(partial.tracks)  # killed half-way
    partial.build_views()
    partial.close()

    clean_dir = synth / "clean"
    clean = _dataset(synth, clean_dir)
    clean.build_views()
    clean.close()
    assert _view_files(views_dir) == _view_files(clean_dir)
    assert not list(views_dir.rglob("*.tmp-*"))


def _damage_zero_values(view_values: Path, mask: Path) -> None:
    data = bytearray(view_values.read_bytes())
    data[128:] = bytes(len(data) - 128)
    view_values.write_bytes(bytes(data))


def _damage_overwrite_values(view_values: Path, mask: Path) -> None:
    arr = np.load(view_values)
    np.save(view_values, (arr.astype(np.float32) * 0.5).astype(arr.dtype))  # a valid .npy of other values


def _damage_all_false_mask(view_values: Path, mask: Path) -> None:
    np.save(mask, np.zeros(len(np.load(mask)), dtype=bool))


def _damage_mask_wrong_length(view_values: Path, mask: Path) -> None:
    np.save(mask, np.ones(len(np.load(mask)) + 7, dtype=bool))


def _damage_truncated_mask(view_values: Path, mask: Path) -> None:
    mask.write_bytes(mask.read_bytes()[:-40])


def _damage_no_sidecar(view_values: Path, mask: Path) -> None:
    view_values.with_name(view_values.name[:-4] + ".sum.json").unlink()


@pytest.mark.parametrize("damage", [_damage_zero_values, _damage_overwrite_values, _damage_all_false_mask,
                                    _damage_mask_wrong_length, _damage_truncated_mask, _damage_no_sidecar])
def test_a_damaged_view_is_rebuilt_from_the_store_with_one_warning(synth, damage, caplog):
    import logging

    lazy = _dataset(synth, None)
    expected = _all_batches(lazy)
    lazy.close()
    views_dir = synth / "views"
    ds = _dataset(synth, views_dir)
    ds.build_views()
    ds.close()
    values = sorted((views_dir / "clip").rglob("long.*.npy"))
    view_values = next(p for p in values if not p.name.endswith(".mask.npy"))
    mask = next(p for p in values if p.name.endswith(".mask.npy"))
    damage(view_values, mask)

    again = _dataset(synth, views_dir)
    with caplog.at_level(logging.WARNING, logger="train.data.dataset"):
        _assert_same(_all_batches(again), expected)  # never the damaged bytes, never a traceback
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and "long" in warnings[0] and "failed its check" in warnings[0], warnings
    assert again.stats.aligned_tracks == 1  # only that track aligned again
    again.close()
    caplog.clear()
    third = _dataset(synth, views_dir)  # rewritten: intact again, nothing aligned, nothing said
    with caplog.at_level(logging.WARNING, logger="train.data.dataset"):
        _assert_same(_all_batches(third), expected)
    assert third.stats.aligned_tracks == 0 and not caplog.records
    third.close()


def test_verify_checks_the_views_and_removes_damaged_ones(synth):
    from typer.testing import CliRunner

    from pipeline import app

    views_dir = synth / "views"
    ds = _dataset(synth, views_dir)
    ds.build_views()
    ds.close()
    n_views = len([p for p in views_dir.rglob("*.npy") if not p.name.endswith(".mask.npy")])
    mask = next(p for p in sorted((views_dir / "wavlm").rglob("solo.*.mask.npy")))
    np.save(mask, np.zeros(len(np.load(mask)), dtype=bool))  # all False, right length

    args = ["verify", "--cache-dir", str(synth / "cache"), "--views-dir", str(views_dir)]
    dry = CliRunner().invoke(app, [*args, "--dry-run"])
    assert dry.exit_code == 1, dry.output
    assert f"checked {n_views} aligned view(s)" in dry.output and "1 damaged" in dry.output and "solo" in dry.output
    assert "mask checksum differs" in dry.output and mask.is_file()
    fix = CliRunner().invoke(app, args)
    assert fix.exit_code == 1 and "1 removed" in fix.output and not mask.exists(), fix.output
    assert CliRunner().invoke(app, args).exit_code == 0
    again = _dataset(synth, views_dir)  # the next run aligns that one view again
    again.build_views()
    assert again.stats.aligned_tracks == 1
    again.close()
    assert CliRunner().invoke(app, args).exit_code == 0


def test_a_damaged_view_over_a_damaged_store_is_the_store_error(synth, caplog):
    """The view fails its check (one warning) and the store's group cannot be read either: the store's own
    error (DamagedGroup: one line at the command line, naming `verify`), never the damaged view's bytes."""
    import logging

    from cache.store import DamagedGroup

    views_dir = synth / "views"
    ds = _dataset(synth, views_dir)
    ds.build_views()
    ds.close()
    mask = next(p for p in sorted((views_dir / "clip").rglob("long.*.mask.npy")))
    np.save(mask, np.zeros(len(np.load(mask)), dtype=bool))
    chunk = next(p for p in sorted((synth / "cache" / "clip.zarr" / "long" / "values").rglob("*"))
                 if p.is_file() and p.name != "zarr.json")
    chunk.write_bytes(b"\0garbage" * 8)
    again = _dataset(synth, views_dir)
    ti = [t.name for t in again.tracks].index("long")
    with caplog.at_level(logging.WARNING, logger="train.data.dataset"), pytest.raises(DamagedGroup, match="verify"):
        again.collate(again.track_windows[ti][:1])
    assert sum("failed its check" in r.getMessage() for r in caplog.records) == 1
    again.close()
    assert not mask.exists()  # the damaged view is gone, never read


def test_standardizing_a_batch_leaves_the_batch_as_it_was(synth):
    """to_tensors standardizes a copy: the batch (float16, or a float32 group's buffer shared with torch on the
    CPU) keeps its raw values, so a batch read twice gives the same tensors."""
    from train.data.standardize import fit_standardizer
    from train.data.tensors import to_tensors

    ds = _dataset(synth, None)
    ds.standardizer = fit_standardizer(ds.sources, ds.tracks)
    batch = ds.collate([0, 1])
    batch.features["clip"] = batch.features["clip"].astype(np.float32)  # as a float32 group's buffer
    before = {k: v.copy() for k, v in batch.features.items()}
    first, second = to_tensors(batch, torch.device("cpu")), to_tensors(batch, torch.device("cpu"))
    for name in FEATURES:
        np.testing.assert_array_equal(batch.features[name], before[name])
        assert torch.equal(first.features[name], second.features[name]) and first.features[name].dtype == torch.float32
    ds.close()


@pytest.mark.parametrize("with_views", [False, True])
def test_collate_writes_every_byte_of_its_uninitialised_buffers(synth, monkeypatch, with_views):
    """collate takes its feature buffers uninitialised: padding (the short `solo` window) must come out 0 and
    the batches equal those built on zeroed memory, whatever the memory held before."""
    views_dir = synth / "views" if with_views else None
    ds = _dataset(synth, views_dir)
    expected = _all_batches(ds)  # aligns (and writes the views)
    empty = np.empty
    monkeypatch.setattr(np, "empty", lambda shape, dtype=float, *a, **k: np.full(shape, np.nan, dtype=dtype))
    try:
        got = _all_batches(ds)
    finally:
        monkeypatch.setattr(np, "empty", empty)
        ds.close()
    _assert_same(got, expected)
    short = [b for b in got if not b.pad.all()]
    assert short, "the fixture has a track shorter than a window"
    for batch in got:
        for name in FEATURES:
            assert np.isfinite(batch.features[name]).all()
            assert (batch.features[name][~batch.pad] == 0).all()
