"""`export`: a run's per-frame [hidden, VA] as a feature store: one group per track of every split, label
frame times, validity from the run's inputs, window averaging as in evaluation, a fingerprint that
follows the run and its inputs, idempotent re-export."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from cache.media import frame_times
from cache.store import FeatureStore, FingerprintMismatch, aside_path, list_stores, store_path
from train.config import DataConfig, TrainConfig
from train.data.sources import open_features
from train.scoring.evaluate import accumulate_windows, predict_split
from train.results.export import checkpoint_digest, export_meta, export_run
from train.fit.loop import train
from train.results.restore import load_run
from train.data.synthetic import SynthConfig, default_tracks, make_synthetic
from train.data.tensors import to_tensors

torch.set_num_threads(1)
HIDDEN = 12


def _cfg(base: Path, name: str, epochs: int = 2, seed: int = 42, max_steps: int | None = None) -> TrainConfig:
    data = DataConfig(features=["clip"], data_root=str(base / "data"), cache_dir=str(base / "cache"), window=64, stride=32)
    return TrainConfig(model="gru", data=data, name=name, runs_dir=str(base / "runs"),
                       head={"hidden": HIDDEN, "gru_hidden": 8}, epochs=epochs, lr=3e-3, device="cpu",
                       smooth_grid=[0, 2], seed=seed, max_steps_per_epoch=max_steps)


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    base = tmp_path_factory.mktemp("export")
    tracks = default_tracks(n_train=3, n_val=2, n_test=2, frames=(150, 260), seed=3)
    make_synthetic(base / "data", base / "cache", SynthConfig(tracks=tracks))
    train(_cfg(base, "face"))
    return base


@pytest.fixture(scope="module")
def exported(base):
    report = export_run("face", "face_gru", runs_dir=base / "runs", device="cpu")
    return report, FeatureStore.open(store_path(base / "cache", "face_gru"))


def test_export_layout(base, exported):
    report, store = exported
    loaded = load_run("face", base / "runs", "cpu")
    meta = store.meta
    assert (meta.kind, meta.unit, meta.model_ref) == ("frame", "track", "run:face")
    assert meta.weights_digest == checkpoint_digest(loaded.run.best)
    assert meta.config["input_fingerprints"] == {"clip": loaded.sources["clip"].fingerprint}
    assert meta.config["run_config"]["model"] == "gru" and meta.config["run_config"]["head"]["hidden"] == HIDDEN
    assert report.dim == HIDDEN + 2 and report.fingerprint == store.fingerprint
    names = []
    for split in ("train", "val", "test"):
        ds = loaded.dataset(split)
        try:
            preds = predict_split(loaded.model, ds, loaded.device, 8)
            assert report.written[split] == len(ds.tracks) and report.skipped[split] == 0
            for ti, track in enumerate(ds.tracks):
                names.append(track.name)
                g = store.read(track.name)
                n = int(ds.n_frames[ti])
                assert g.values.shape == (n, HIDDEN + 2)
                np.testing.assert_array_equal(g.times, frame_times(n, ds.fps[ti]))
                np.testing.assert_array_equal(g.valid, ds.track(ti).masks["clip"])  # no face -> invalid
                assert 0 < g.valid.mean() < 1
                assert g.attrs["split"] == split and g.attrs["frames"] == n
                # the VA columns are evaluation's window-averaged predictions
                np.testing.assert_allclose(g.values[:, -2:], preds.va[ti], atol=2e-3)
            # the hidden columns: HeadOutput.hidden of every window, averaged per frame
            ti = 0
            windows = []
            with torch.no_grad():
                for w in ds.track_windows[ti]:
                    batch = ds.collate([w])
                    tb = to_tensors(batch, loaded.device)
                    windows.append((int(batch.start[0]), loaded.model(tb.features, tb.masks, tb.pad).hidden[0].numpy()))
            assert len(windows) > 2  # overlapping windows really are averaged
            want = accumulate_windows(int(ds.n_frames[ti]), windows)
            np.testing.assert_allclose(store.read(ds.tracks[ti].name).values[:, :HIDDEN], want, atol=1e-2, rtol=1e-2)
        finally:
            ds.close()
    assert sorted(names) == store.units()  # one group per track of every split
    # the export is a feature like any other
    sources = open_features(base / "cache", ["face_gru", "clip"])
    assert sources["face_gru"].dim == HIDDEN + 2 and "face_gru" in list_stores(base / "cache")


def test_reexport_skips_and_force_rewrites(base, exported):
    report, store = exported
    before = store.read("val0").values
    again = export_run("face", "face_gru", runs_dir=base / "runs", device="cpu")
    assert again.fingerprint == report.fingerprint
    assert sum(again.written.values()) == 0 and sum(again.skipped.values()) == sum(report.written.values())
    from pipeline import app

    runner = CliRunner()
    res = runner.invoke(app, ["export", "face", "--name", "face_gru", "--splits", "val", "--runs-dir",
                              str(base / "runs"), "--device", "cpu"])
    assert res.exit_code == 0, res.output
    assert "val: 0 written, 2 skipped" in res.output
    res = runner.invoke(app, ["export", "face", "--name", "face_gru", "--splits", "val", "--force", "--runs-dir",
                              str(base / "runs"), "--device", "cpu"])
    assert res.exit_code == 0 and "val: 2 written, 0 skipped" in res.output, res.output
    np.testing.assert_array_equal(FeatureStore.open(store_path(base / "cache", "face_gru")).read("val0").values, before)


def test_fingerprint_follows_the_run_and_its_inputs(base, exported):
    report, store = exported
    train(_cfg(base, "face2", epochs=1, seed=7, max_steps=2))
    from pipeline import app

    res = CliRunner().invoke(app, ["export", "face2", "--name", "face_gru", "--runs-dir", str(base / "runs"),
                                   "--device", "cpu"])
    assert res.exit_code == 1 and "--new-store" in res.output, res.output
    with pytest.raises(FingerprintMismatch):
        export_run("face2", "face_gru", runs_dir=base / "runs", device="cpu")
    other = export_run("face2", "face_gru_b", splits=("val",), runs_dir=base / "runs", device="cpu")
    assert other.fingerprint != report.fingerprint
    assert FeatureStore.open(store_path(base / "cache", "face_gru_b")).units() == ["val0", "val1"]
    # same run, other inputs (a re-extracted store) -> another fingerprint; the run's config is recorded
    cfg = TrainConfig.load(base / "runs" / "face" / "config.yaml").to_dict()
    args = ("face_gru", "face", cfg)
    same = export_meta(*args, {"clip": store.meta.config["input_fingerprints"]["clip"]}, store.meta.weights_digest, "best", HIDDEN)
    assert same.fingerprint == store.fingerprint  # locations (runs_dir, cache_dir, ...) are not part of it
    assert export_meta(*args, {"clip": "0" * 16}, store.meta.weights_digest, "best", HIDDEN).fingerprint != store.fingerprint
    # asked for, a store with another fingerprint is moved aside (nothing deleted)
    moved = export_run("face2", "face_gru_b", splits=("val",), runs_dir=base / "runs", device="cpu")
    assert moved.fingerprint == other.fingerprint
    newer = export_run("face", "face_gru_b", splits=("val",), runs_dir=base / "runs", device="cpu", on_mismatch="new")
    assert newer.fingerprint != other.fingerprint
    assert FeatureStore.open(store_path(base / "cache", "face_gru_b")).meta.model_ref == "run:face"
    assert aside_path(store_path(base / "cache", "face_gru_b"), other.fingerprint).is_dir()


def test_export_refuses_its_own_input_name_and_unknown_splits(base):
    with pytest.raises(ValueError, match="own input"):
        export_run("face", "clip", runs_dir=base / "runs", device="cpu")
    with pytest.raises(ValueError, match="unknown split"):
        export_run("face", "face_x", splits=("dev",), runs_dir=base / "runs", device="cpu")


def test_out_of_fold_export_of_the_train_split(base, exported):
    _, plain = exported
    report = export_run("face", "face_oof", runs_dir=base / "runs", device="cpu", folds=2)
    oof = FeatureStore.open(store_path(base / "cache", "face_oof"))
    folds_dir = base / "runs" / "face" / "folds"
    held = [TrainConfig.load(folds_dir / f"fold{f}" / "config.yaml").data.holdout for f in range(2)]
    train_tracks = sorted(u for u in plain.units() if plain.unit_attrs(u)["split"] == "train")
    assert sorted(held[0] + held[1]) == train_tracks and held[0] and held[1]
    for f in range(2):  # each fold run trained without its held-out tracks
        fold = load_run(folds_dir / f"fold{f}", folds_dir, "cpu")
        seen = fold.dataset("train")
        assert not {t.name for t in seen.tracks} & set(held[f])
        seen.close()
    for unit in oof.units():
        values = oof.read(unit).values
        assert values.shape[1] == 2  # predictions only: the fold runs' hidden spaces differ from the run's
        same = np.array_equal(values, plain.read(unit).values[:, -2:])
        # train tracks come from the fold that did not see them; val and test from the run itself
        assert same == (unit not in train_tracks), unit
    assert oof.meta.config["train_folds"] == 2 and oof.fingerprint != plain.fingerprint
    assert report.dim == 2
    assert report.written["train"] == len(train_tracks)
    stamps = {f: (folds_dir / f"fold{f}" / "checkpoints" / "last.pt").stat().st_mtime for f in range(2)}
    again = export_run("face", "face_oof", runs_dir=base / "runs", device="cpu", folds=2)
    assert sum(again.written.values()) == 0 and again.fingerprint == report.fingerprint
    assert stamps == {f: (folds_dir / f"fold{f}" / "checkpoints" / "last.pt").stat().st_mtime for f in range(2)}
