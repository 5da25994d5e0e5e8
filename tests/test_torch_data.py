"""The windows of a split through a torch DataLoader (IterableDataset), with several workers: every window
once per epoch, each track aligned by one worker only, the same arrays as TrackDataset, and a head trains on it."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from cache.manifest import load_manifest
from train.data.build import build_dataset
from train.data.sources import open_features
from train.data.synthetic import SynthConfig, default_tracks, make_synthetic
from train.data.torch_data import WindowBatches, deal_tracks

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    base = tmp_path_factory.mktemp("torchdata")
    make_synthetic(base / "data", base / "cache", SynthConfig(tracks=default_tracks(5, 1, 0, (120, 260), seed=5)))
    tracks = load_manifest(base / "data").split("train")
    ds = build_dataset(tracks, open_features(base / "cache", ["clip", "wavlm"]), window=40, stride=30, cache_mb=64)
    yield ds
    ds.close()


def _collect(loader) -> list[dict]:
    return [b for b in loader]


@pytest.mark.parametrize("workers", [0, 2])
def test_every_window_once_per_epoch_with_workers(dataset, workers):
    batches = WindowBatches(dataset, batch_size=4, shuffle=True, seed=1)
    loader = DataLoader(batches, batch_size=None, num_workers=workers, persistent_workers=workers > 0)
    seen_by_epoch = []
    for epoch in range(2):
        batches.set_epoch(epoch)
        got = _collect(loader)
        pairs = [(int(t), int(s)) for b in got for t, s in zip(b["track"], b["start"])]
        assert Counter(pairs) == Counter((ti, s) for ti, s in dataset.windows)  # each window exactly once
        seen_by_epoch.append(pairs)
        owner: dict[int, set[int]] = {}
        for b in got:
            for t in b["track"].tolist():
                owner.setdefault(t, set()).add(b["worker"])
        assert all(len(w) == 1 for w in owner.values())  # a track is read by one worker only
        assert {w for ws in owner.values() for w in ws} == ({-1} if workers == 0 else {0, 1})
        for b in got[:3]:  # the arrays are TrackDataset's own
            ids = [dataset.windows.index((int(t), int(s))) for t, s in zip(b["track"], b["start"])]
            ref = dataset.collate(ids)
            for name in ref.features:
                np.testing.assert_array_equal(b["features"][name].numpy(), ref.features[name])
                np.testing.assert_array_equal(b["masks"][name].numpy(), ref.masks[name])
            np.testing.assert_array_equal(b["labels"].numpy(), ref.labels)
            np.testing.assert_array_equal(b["label_mask"].numpy(), ref.label_mask)
    assert seen_by_epoch[0] != seen_by_epoch[1]  # set_epoch reshuffles


def test_workers_share_the_cache_budget_and_tracks_are_dealt_by_windows(dataset):
    batches = WindowBatches(dataset, batch_size=4)
    assert batches.recipe.cache_mb == pytest.approx(64)
    deal = deal_tracks(np.arange(4), [10, 1, 1, 1], 2)
    assert deal == [[0], [1, 2, 3]]
    assert len(batches) == -(-len(dataset.windows) // 4)


def test_sequential_order_and_a_training_step(dataset):
    from train.heads import build_head
    from train.fit.losses import ccc_loss

    loader = DataLoader(WindowBatches(dataset, batch_size=8, shuffle=False), batch_size=None, num_workers=2)
    pairs = [(int(t), int(s)) for b in loader for t, s in zip(b["track"], b["start"])]
    assert sorted(pairs) == sorted(dataset.windows)
    head = build_head("gru", dataset.feature_dims, {"hidden": 8})
    opt = torch.optim.Adam(head.parameters(), lr=1e-2)
    for batch in loader:
        features = {n: v.float() for n, v in batch["features"].items()}
        out = head(features, batch["masks"], batch["pad"])
        loss = ccc_loss(out.va, batch["labels"], batch["label_mask"])
        opt.zero_grad()
        loss.backward()
        opt.step()
        assert torch.isfinite(loss)


def test_spawned_workers_rebuild_from_the_recipe(dataset):
    batches = WindowBatches(dataset, batch_size=16, shuffle=False)
    loader = DataLoader(batches, batch_size=None, num_workers=1, multiprocessing_context="spawn")
    got = list(loader)
    assert sorted((int(t), int(s)) for b in got for t, s in zip(b["track"], b["start"])) == sorted(dataset.windows)
    assert {b["worker"] for b in got} == {0}
