"""A head trains on an imported store (a team's own per-frame features, as .npz) next to a store made
by affcache itself; the imported store is read like any other and its fingerprint is recorded."""

from __future__ import annotations

import json

import numpy as np
import torch

from cache.importers import ImportConfig, import_features
from cache.manifest import load_manifest
from train.config import DataConfig, TrainConfig
from train.fit.loop import train
from train.data.synthetic import SynthConfig, default_tracks, make_synthetic

torch.set_num_threads(1)


def test_gru_on_imported_npz_next_to_a_cached_store(tmp_path):
    data, cache, sources = tmp_path / "data", tmp_path / "cache", tmp_path / "their_features"
    tracks = default_tracks(n_train=4, n_val=2, n_test=1, frames=(200, 260), seed=3)
    # the affcache-made visual store carries no signal: whatever is learnt comes from the import
    truth = make_synthetic(data, cache, SynthConfig(tracks=tracks, signal=False, region_prototypes=False))
    sources.mkdir()
    rng = np.random.default_rng(0)
    mixing = rng.normal(size=(2, 12))
    fps = {t.name: t.fps for t in tracks}
    for name, va in truth.items():
        frames = np.arange(len(va))
        keep = (frames < 40) | (frames >= 60)  # their face model found no face on frames 40..59
        features = va @ mixing + rng.normal(0, 0.2, size=(len(va), 12))
        times = np.stack([frames, frames + 1], axis=1) / fps[name]  # the synthetic videos are stubs: use times
        np.savez(sources / f"{name}.npz", times=times[keep], features=features[keep].astype(np.float32))

    report = import_features(
        sources, "theirs", cache, ImportConfig(fmt="npz", fps_from_video=False), load_manifest(data)
    )
    assert not report.failed, report.failed
    assert len(report.imported) == len(truth)

    cfg = TrainConfig(
        model="gru",
        data=DataConfig(features=["theirs", "clip"], data_root=str(data), cache_dir=str(cache), window=64, stride=32),
        name="imported", runs_dir=str(tmp_path / "runs"), head={"hidden": 16, "gru_hidden": 16},
        epochs=4, lr=3e-3, batch_size=8, device="cpu", smooth_grid=[0, 2],
    )
    result = train(cfg)
    assert result.eval.raw["P"] > 0.5  # a constant predictor scores 0
    recorded = json.loads((result.run.path / "features.json").read_text())
    assert recorded["theirs"]["fingerprint"] == report.fingerprint
    assert recorded["clip"]["unit"] == "track"
