"""Feature stores as the datasets read them: a named source per feature (`store:row` selects one row of a
multi-row store, train/data/rows.py), opened from a cache folder with its flattened dimension."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cache.manifest import Track
from cache.store import FeatureGroup, FeatureStore, store_exists, store_path
from train.data.rows import select_row, split_feature


class MissingFeatureStore(FileNotFoundError):
    """A feature asked for has no store in the cache dir."""


@dataclass(frozen=True)
class FeatureSource:
    """One feature store as the dataset reads it."""

    name: str
    store: FeatureStore
    dim: int
    fill: float | None = None  # nearest-fill distance in seconds, None = no fill
    row: str | None = None  # `store:row` reads values[:, row] of a multi-row store (train/data/rows.py)

    @property
    def unit(self) -> str:
        return self.store.meta.unit

    @property
    def fingerprint(self) -> str:
        return self.store.fingerprint

    @property
    def tokens(self) -> int:
        """Tokens per row of a token store (config `tokens`: e.g. the 4 audio block tokens of an audio window,
        train/results/window_export.py), 0 otherwise. A token store reads as one row per token."""
        return 0 if self.row is not None else int(self.store.meta.config.get("tokens") or 0)

    def group_for(self, track: Track) -> str:
        return track.video_stem if self.unit == "video" else track.name

    def read(self, group: str, rows: slice | None = None) -> FeatureGroup:
        """The group as stored, with the selected row only (when the feature names one)."""
        raw = self.store.read(group, rows=rows)
        if self.row is not None:
            raw.values = select_row(raw.values, self.row, raw.attrs, self.store.meta.config, f"feature '{self.name}', group {group}")
        elif self.tokens:  # (W, tokens, D) -> (W * tokens, D), each token on its row's span
            n = len(raw.values)
            raw.values = raw.values.reshape(n * self.tokens, -1)
            raw.times = np.repeat(raw.times, self.tokens, axis=0)
            raw.valid = np.repeat(np.asarray(raw.valid, bool), self.tokens)
        return raw


def open_features(
    cache_dir: Path, names: Sequence[str], nearest_fill: Mapping[str, float] | None = None
) -> dict[str, FeatureSource]:
    """Open each named feature's store and read its flattened dimension from its first group
    (`store:row` names one row of a multi-row store, train/data/rows.py)."""
    sources: dict[str, FeatureSource] = {}
    for name in names:
        store_name, row = split_feature(name)
        path = store_path(cache_dir, store_name)
        if not store_exists(path):
            raise MissingFeatureStore(f"feature '{name}': no store at {path}")
        store = FeatureStore.open(path)
        units = store.units()
        if not units:
            raise MissingFeatureStore(f"feature '{name}': store {path} has no complete group")
        fill = (nearest_fill or {}).get(name)
        source = FeatureSource(name=name, store=store, dim=0, fill=fill, row=row)
        sample = source.read(units[0], rows=slice(0, 1)).values
        dim = int(np.prod(sample.shape[1:])) if sample.ndim > 1 else 1
        sources[name] = FeatureSource(name=name, store=store, dim=dim, fill=fill, row=row)
    return sources
