"""`pipeline.py align`: write the missing aligned views (train/data/views.py) of every track of a split, as
training would open that split."""

from __future__ import annotations

import time
from pathlib import Path

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from train.config import DataConfig, TrainConfig, parse_fill
from train.data.sources import open_features
from train.data.views import views_size
from train.fit.loop import open_split


def build_split_views(
    features: list[str],
    split: str,
    data_root: Path,
    cache_dir: str,
    fill: str = "",
    views_dir: str | None = None,
    videos: Path | None = None,
    labels: Path | None = None,
    console=None,
) -> str:
    """Write the missing aligned views of every track of a split (`pipeline.py align`); returns a summary."""
    data = DataConfig(
        features=features, data_root=str(data_root), videos=str(videos) if videos else None,
        labels=str(labels) if labels else None, cache_dir=str(cache_dir), nearest_fill=parse_fill(fill),
        views=True, views_dir=views_dir,
    )
    sources = open_features(cache_dir, data.features, data.nearest_fill)
    start = time.perf_counter()
    dataset = open_split(TrainConfig(model="-", data=data), split, sources)
    try:
        if not dataset.views:
            raise ValueError(f"no room for the aligned views of split '{split}' (see the warning above)")
        with Progress(TextColumn("aligning {task.description}"), BarColumn(), MofNCompleteColumn(),
                      TimeRemainingColumn(), console=console, transient=True) as progress:
            task = progress.add_task(split, total=len(dataset.tracks))
            aligned = dataset.build_views(progress=lambda done, total: progress.update(task, completed=done, total=total))
        folder = next(iter(dataset.views.values())).folder.parent.parent
    finally:
        dataset.close()
    frames = int(dataset.n_frames.sum())
    return (f"{split}: {len(dataset.tracks)} tracks, {frames:,} frames of {', '.join(features)}: "
            f"{aligned} tracks aligned, {len(dataset.tracks) - aligned} already in views under {folder} "
            f"({time.perf_counter() - start:.1f} s; {views_size(folder) / 2**20:,.0f} MiB there)")
