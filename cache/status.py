"""What is in a dataset and its cache: counts per split and per feature store."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from cache.checks import ProblemKind, dataset_dirs, dataset_problems, require_dataset
from cache.manifest import Manifest, load_manifest
from cache.store import DamagedGroup, DamagedStore, FeatureStore, FingerprintMismatch, list_stores


@dataclass
class SplitStatus:
    split: str
    tracks: int
    labelled_frames: int
    valid_frames: int
    with_video: int = 0  # tracks whose video was found (the counts above include those without)
    complete: dict[str, int] = field(default_factory=dict)  # feature -> tracks with a complete group


def complete_units(store: FeatureStore, damaged: list[str]) -> set[str]:
    """The store's complete, intact groups (arrays where arrays belong, shapes as recorded, chunk files all
    there by a listing); one line per damaged group goes to `damaged` instead of an exception."""
    done = set()
    for unit in store.units(complete_only=False):
        try:
            attrs = store.unit_attrs(unit)
            if not attrs.get("complete"):
                continue
            store.open_arrays(unit, attrs)  # the cheap checks: node kinds, shapes, chunk files present
        except DamagedGroup as err:
            damaged.append(str(err))
            continue
        done.add(unit)
    return done


def dataset_status(manifest: Manifest, cache_dir: Path, damaged: list[str] | None = None) -> list[SplitStatus]:
    """Counts per split; damaged stores and groups (never counted complete) are listed in `damaged`."""
    damaged = [] if damaged is None else damaged
    stores: dict[str, FeatureStore] = {}
    units: dict[str, set[str]] = {}
    for name, path in list_stores(cache_dir).items():
        try:
            stores[name] = FeatureStore.open(path)
        except FileNotFoundError:
            continue
        except (DamagedStore, FingerprintMismatch) as err:  # unreadable or inconsistent root metadata
            damaged.append(str(err))
            continue
        units[name] = complete_units(stores[name], damaged)
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
            done = units[name]
            key = (lambda t: t.video_stem) if store.meta.unit == "video" else (lambda t: t.name)
            status.complete[name] = sum(key(t) in done for t in tracks)
        result.append(status)
    return result


def status_report(data_root: Path, videos: Path | None, labels: Path | None, cache_dir: str | Path
                  ) -> tuple[list[SplitStatus], list[str], list[ProblemKind]]:
    """`pipeline.py status`: counts per split and store, damaged groups (one line each) and the dataset's
    problems by kind (the manifest's own warnings are summarised there, not logged one by one)."""
    require_dataset(data_root, videos, labels)
    manifest_log = logging.getLogger("cache.manifest")
    manifest_log.disabled = True
    try:
        manifest = load_manifest(data_root, videos, labels)
    finally:
        manifest_log.disabled = False
    damaged: list[str] = []
    rows = dataset_status(manifest, cache_dir, damaged)
    problems = dataset_problems(manifest, dataset_dirs(data_root, videos, labels)[1])
    return rows, damaged, problems
