"""Extraction for a bare folder of videos (no annotations): one track per video, named by its stem, and
extractor settings copied from existing stores so the new stores get the same fingerprints (a trained run
then accepts them)."""

from __future__ import annotations

import logging
import os
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from cache.location import Location
from cache.manifest import Manifest, Track, VIDEO_EXTENSIONS
from cache.names import safe_name
from cache.store import FeatureStore, store_exists, store_path
from extract.base import DEFAULT_MODELS_DIR, get_extractor, is_tiny_ref, with_dependencies
from extract.runner import RunOptions, RunSummary
from extract.backends import run_extraction

log = logging.getLogger(__name__)

BARE_SPLIT = "videos"


class BareVideoError(ValueError):
    """Bare videos that cannot each get a unit name of their own (one line naming the files)."""


def bare_manifest(videos: Path | Sequence[Path]) -> Manifest:
    """A video folder (searched recursively for .mp4/.avi) or a list of files -> one unlabelled track each,
    each file its own unit (`bare_unit_names`: no `_left/_right` pairing, duplicate stems made unique)."""
    if isinstance(videos, (str, Path)):
        root = Path(videos)
        if root.is_file():
            files, base = [root], root.parent
        elif root.is_dir():
            files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in VIDEO_EXTENSIONS)
            base = root
        else:
            raise FileNotFoundError(f"no video folder or file {root}")
    else:
        files = [Path(p) for p in videos]
        base = Path(os.path.commonpath([p.resolve().parent for p in files])) if files else Path(".")
        files = [p.resolve() for p in files]
    if not files:
        raise FileNotFoundError(f"no {' or '.join(VIDEO_EXTENSIONS)} videos under {videos}")
    found = bare_unit_names(files, base)
    return Manifest(tracks=[Track(name=name, split=BARE_SPLIT, video=path, unit=name) for name, path in sorted(found.items())])


def bare_unit_names(files: Sequence[Path], base: Path) -> dict[str, Path]:
    """A safe unit name (cache/names.py) for each video file: its stem when no other file has it; else its
    path below `base` (`a/clip.mp4` -> `a__clip`), with the extension when that is not enough either
    (`x.mp4` beside `x.avi`). Names that still collide are a BareVideoError. No `_left/_right` rule: a
    bare video is one unit whatever its name ends with."""
    stems = Counter(safe_name(p.stem) for p in files)
    names: dict[str, Path] = {}
    taken: dict[str, list[Path]] = {}
    for path in files:
        name = safe_name(path.stem)
        if stems[name] > 1:
            name = _path_name(path, base, suffix=False)
        taken.setdefault(name, []).append(path)
    for name, paths in taken.items():
        if len(paths) == 1:
            names[name] = paths[0]
            continue
        for path in paths:  # same stem and folder: x.mp4 and x.avi
            longer = _path_name(path, base, suffix=True)
            if longer in names or longer in taken:
                raise BareVideoError(f"videos {', '.join(map(str, paths))} cannot be told apart by name (unit {longer!r}); rename one")
            names[longer] = path
    return names


def _path_name(path: Path, base: Path, suffix: bool) -> str:
    """`path` below `base` (its file name when outside) as one safe name: `a/clip.mp4` -> `a__clip`
    (`a__clip_mp4` with the suffix)."""
    rel = path.relative_to(base) if path.is_relative_to(base) else Path(path.name)
    return "__".join(safe_name(part) for part in (rel if suffix else rel.with_suffix("")).parts)


def extractable(features: Sequence[str]) -> tuple[list[str], list[str]]:
    """(features an extractor makes, features made some other way: export, import)."""
    made, other = [], []
    for name in features:
        try:
            get_extractor(name)
            made.append(name)
        except KeyError:
            other.append(name)
    return made, other


def options_like(
    features: Sequence[str], reference_cache: Location | None, cache_dir: Location, models_dir: Path = DEFAULT_MODELS_DIR,
    device: str = "auto", batch_size: int = 32,
) -> RunOptions:
    """Extraction options for `features` (and what they require) with each extractor's config, model reference
    and profile read from the store of the same name in `reference_cache` (the defaults where there is none)."""
    names = with_dependencies(list(features))
    configs: dict[str, dict] = {}
    refs: dict[str, str] = {}
    tiny = False
    for name in names:
        path = store_path(reference_cache, name) if reference_cache is not None else None
        if path is None or not store_exists(path):
            continue
        meta = FeatureStore.open(path).meta
        configs[name] = {k: v for k, v in meta.config.items() if k != "inputs"}  # inputs: recomputed
        if is_tiny_ref(meta.model_ref):  # made with the tiny profile: the same tiny models, built under models_dir
            tiny = True
        elif meta.model_ref:
            refs[name] = meta.model_ref
    return RunOptions(
        split=BARE_SPLIT, features=list(features), cache_dir=cache_dir, models_dir=Path(models_dir),
        profile="tiny" if tiny else "full", device=device, model_refs=refs, configs=configs, batch_size=batch_size,
    )


def extract_videos(
    videos: Path | Sequence[Path], features: Sequence[str], cache_dir: Location, reference_cache: Location | None = None,
    models_dir: Path = DEFAULT_MODELS_DIR, device: str = "auto", profile: str | None = None, progress: bool = True,
) -> tuple[Manifest, RunSummary]:
    """Extract `features` for every video (resumable like `pipeline.py extract`); stores under cache_dir keyed
    by video stem. `profile` overrides the one read from the reference stores."""
    manifest = bare_manifest(videos)
    opts = options_like(features, reference_cache, cache_dir, models_dir, device)
    if profile is not None:
        opts.profile = profile
    if isinstance(videos, (str, Path)):
        opts.data_root = Path(videos)  # what the run's settings are applied to (the tiny-profile warning names it)
    opts.progress = progress
    return manifest, run_extraction(opts, manifest=manifest)
