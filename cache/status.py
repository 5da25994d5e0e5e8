"""What is in a dataset and its cache: counts per split and per feature store."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from cache.manifest import Manifest
from cache.store import FeatureStore, FingerprintMismatch, list_stores


@dataclass
class SplitStatus:
    split: str
    tracks: int
    labelled_frames: int
    valid_frames: int
    with_video: int = 0  # tracks whose video was found (the counts above include those without)
    complete: dict[str, int] = field(default_factory=dict)  # feature -> tracks with a complete group


def dataset_status(manifest: Manifest, cache_dir: Path) -> list[SplitStatus]:
    stores: dict[str, FeatureStore] = {}
    for name, path in list_stores(cache_dir).items():
        try:
            stores[name] = FeatureStore.open(path)
        except (FingerprintMismatch, FileNotFoundError):
            continue
    result = []
    for split in ("train", "val", "test"):
        tracks = manifest.split(split) + [t for t in manifest.no_video if t.split == split]
        status = SplitStatus(
            split=split,
            tracks=len(tracks),
            with_video=len(manifest.split(split)),
            labelled_frames=sum(t.n_frames or 0 for t in tracks),
            valid_frames=sum(int(t.labels.valid.sum()) for t in tracks if t.labels is not None),
        )
        for name, store in stores.items():
            done = set(store.units())
            key = (lambda t: t.video_stem) if store.meta.unit == "video" else (lambda t: t.name)
            status.complete[name] = sum(key(t) in done for t in tracks)
        result.append(status)
    return result
