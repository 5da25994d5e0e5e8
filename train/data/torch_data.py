"""A torch `IterableDataset` over a split's training windows, for `DataLoader`, Lightning or accelerate.

    loader = DataLoader(WindowBatches(dataset, batch_size=8, shuffle=True), batch_size=None, num_workers=4)
    for epoch in range(n):
        loader.dataset.set_epoch(epoch)   # optional: every pass reshuffles (persistent workers too)
        for batch in loader: ...   # dict of tensors: features, masks, pad, labels, label_mask, track, start, length

It yields whole batches (windows of one batch may differ in length; `TrackDataset.collate` pads them), so
the DataLoader gets `batch_size=None`. With several workers the split's tracks are dealt out to the workers
(balanced by window count, a new deal every epoch): each worker aligns and caches only its own tracks, in its
own LRU of `cache_mb / num_workers`, built inside the worker from a small picklable recipe (track list, store
paths). Nothing aligned is copied to a worker, and the workers' caches together stay within the budget.
Each window is yielded once per epoch, by one worker.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.utils.data import IterableDataset, get_worker_info

from cache.location import Location
from cache.manifest import Track
from cache.store import FeatureStore
from train.data.dataset import Batch, TrackDataset
from train.data.sources import FeatureSource
from train.data.build import build_dataset
from train.data.tensors import standardize_tensors


@dataclass(frozen=True)
class DatasetRecipe:
    """What a worker needs to rebuild a TrackDataset: no open pool, no cached arrays."""

    tracks: tuple[Track, ...]  # with n_frames filled in (no re-probing in the worker)
    stores: tuple[tuple[str, Location, int, float | None, str | None], ...]  # name, store path, dim, fill, row
    window: int
    stride: int
    fps: dict[str, float]
    cache_mb: float
    align_workers: int
    standardizer: Any = None  # the run's train-split statistics, applied as in training
    level: str = "frame"  # what windows run over (train/data/segments.py, train/data/window_audio.py)
    window_filter: Any = None

    @classmethod
    def of(cls, ds: TrackDataset) -> "DatasetRecipe":
        tracks = tuple(dataclasses.replace(t, n_frames=int(n)) for t, n in zip(ds.tracks, ds.n_frames))
        stores = tuple((n, s.store.path, s.dim, s.fill, s.row) for n, s in ds.sources.items())
        return cls(tracks=tracks, stores=stores, window=ds.window, stride=ds.stride,
                   fps={t.name: float(f) for t, f in zip(ds.tracks, ds.fps)}, cache_mb=ds.cache_bytes / 2**20,
                   align_workers=1, standardizer=ds.standardizer, level=ds.level,
                   window_filter=getattr(ds, "filter_rules", None))

    def build(self, cache_mb: float) -> TrackDataset:
        sources = {name: FeatureSource(name=name, store=FeatureStore.open(path), dim=dim, fill=fill, row=row)
                   for name, path, dim, fill, row in self.stores}
        return build_dataset(self.tracks, sources, self.window, self.stride, fps=self.fps, cache_mb=cache_mb,
                             align_workers=self.align_workers, standardizer=self.standardizer, level=self.level,
                             window_filter=self.window_filter)


def batch_to_tensors(batch: Batch, worker: int = -1) -> dict[str, Any]:
    """The batch as CPU tensors, standardized (float32) where it carries statistics, raw float16 elsewhere."""
    masks = {n: torch.from_numpy(m) for n, m in batch.masks.items()}
    features = {n: torch.from_numpy(v) for n, v in batch.features.items()}
    return {
        "features": standardize_tensors(features, masks, batch.standardizer),
        "masks": masks,
        "pad": torch.from_numpy(batch.pad),
        "labels": torch.from_numpy(batch.labels),
        "label_mask": torch.from_numpy(batch.label_mask),
        "track": torch.from_numpy(batch.track),
        "start": torch.from_numpy(batch.start),
        "length": torch.from_numpy(batch.length),
        "worker": worker,
    }


def deal_tracks(track_ids: np.ndarray, windows_per_track: list[int], n_workers: int) -> list[list[int]]:
    """Tracks to workers in the given order, each to the worker with the fewest windows so far."""
    load = [0] * n_workers
    out: list[list[int]] = [[] for _ in range(n_workers)]
    for ti in track_ids:
        w = min(range(n_workers), key=lambda k: (load[k], k))
        out[w].append(int(ti))
        load[w] += windows_per_track[int(ti)]
    return out


class WindowBatches(IterableDataset):
    """Batches of windows of `dataset`. shuffle=True: the training order (tracks shuffled, windows shuffled
    within blocks of `block_tracks` tracks), new every `set_epoch`; shuffle=False: track order, every window."""

    def __init__(self, dataset: TrackDataset, batch_size: int = 8, shuffle: bool = True, seed: int = 0,
                 block_tracks: int = 8):
        super().__init__()
        self.recipe = DatasetRecipe.of(dataset)
        self.batch_size, self.shuffle, self.seed, self.block_tracks = batch_size, shuffle, seed, block_tracks
        self.epoch = 0
        self._passes = 0  # iterations started in this process: persistent workers never see set_epoch
        self._windows_per_track = [len(w) for w in dataset.track_windows]
        self._local: TrackDataset | None = dataset  # used as is when iterated in this process
        self._worker_ds: TrackDataset | None = None

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __getstate__(self) -> dict[str, Any]:  # spawn/forkserver workers: the recipe only
        return {**self.__dict__, "_local": None, "_worker_ds": None}

    def __len__(self) -> int:
        total = sum(self._windows_per_track)
        return -(-total // self.batch_size)  # batches over all workers (each worker's last one may be short)

    def _track_order(self) -> np.ndarray:
        n = len(self._windows_per_track)
        if not self.shuffle:
            return np.arange(n)
        return np.random.default_rng([self.seed, self.epoch, self._passes]).permutation(n)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        info = get_worker_info()
        order = self._track_order()  # the same in every worker: same seed, epoch and pass count
        self._passes += 1
        if info is None:
            ds, mine, worker = self._local, order, -1
            if ds is None:
                ds = self._local = self.recipe.build(self.recipe.cache_mb)
        else:
            if self._worker_ds is None:  # once per worker process, with its share of the cache budget
                self._worker_ds = self.recipe.build(self.recipe.cache_mb / info.num_workers)
            ds, worker = self._worker_ds, info.id
            mine = np.asarray(deal_tracks(order, self._windows_per_track, info.num_workers)[info.id], dtype=np.int64)
        rng = np.random.default_rng([self.seed, self.epoch, self._passes, worker + 1])
        windows: list[int] = []
        for b in range(0, len(mine), max(1, self.block_tracks)):
            block = [w for ti in mine[b : b + self.block_tracks] for w in ds.track_windows[int(ti)]]
            windows.extend(int(w) for w in (rng.permutation(block) if self.shuffle else block))
        for batch in ds.batches(windows, self.batch_size):
            yield batch_to_tensors(batch, worker)
