"""`build_dataset`: the dataset of a level (train/data/levels.py), one way for the loop, evaluation and bench."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from cache.manifest import Track
from train.data import dataset, segments, window_audio  # noqa: F401  (fill the level registry)
from train.data.dataset import TrackDataset
from train.data.levels import LEVELS
from train.data.sources import FeatureSource

if TYPE_CHECKING:
    from train.data.standardize import Standardizer


def build_dataset(
    tracks: Sequence[Track],
    sources: Mapping[str, FeatureSource],
    window: int,
    stride: int,
    fps: Mapping[str, float] | None = None,
    cache_mb: float = 1024.0,
    align_workers: int = 2,
    views_dir: Path | None = None,
    standardizer: "Standardizer | None" = None,
    level: str = "frame",
    window_filter: Mapping[str, float] | None = None,
) -> TrackDataset:
    """A `TrackDataset` of `level` (kept as a function so the loop, evaluation and bench build it one way);
    level `segment`: windows over the first feature's segments (train/data/segments.py); `audio_window`:
    windows over an audio store's rows, training windows filtered (train/data/window_audio.py). Those two
    align onto their own rows, not label frames: no aligned views."""
    try:
        cls = LEVELS[level]
    except KeyError:
        raise ValueError(f"unknown level {level!r}; known: {', '.join(sorted(LEVELS))}") from None
    return cls.build(tracks, sources, window, stride, views_dir=views_dir, window_filter=window_filter, fps=fps,
                     cache_mb=cache_mb, align_workers=align_workers, standardizer=standardizer)
