"""Where stores live: a local (or shared POSIX) path, or any fsspec URL Zarr accepts (s3://, gs://,
file://, memory://, ...). Local paths stay `Path`s; URLs stay strings, since `Path` would fold `//`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import fsspec
import zarr

Location = Path | str


def is_url(location: Location) -> bool:
    return isinstance(location, str) and "://" in location


def as_location(location: Location | None) -> Location | None:
    """A URL string as given; anything else as a Path."""
    if location is None or is_url(location):
        return location
    return Path(location)


def join(base: Location, name: str) -> Location:
    return f"{str(base).rstrip('/')}/{name}" if is_url(base) else Path(base) / name


def name_of(location: Location) -> str:
    return str(location).rstrip("/").rsplit("/", 1)[-1]


def _fs(url: str) -> tuple[fsspec.AbstractFileSystem, str]:
    return fsspec.core.url_to_fs(url)


def exists(location: Location) -> bool:
    if is_url(location):
        fs, path = _fs(location)
        return fs.exists(path)
    return Path(location).exists()


def move(src: Location, dst: Location) -> None:
    """Move a store. Local: one rename (atomic on one file system). URL: a copy, then the source is
    removed metadata first (every zarr.json, deepest first), so a kill part-way never leaves a group
    that looks complete with its arrays gone."""
    if is_url(src):
        fs, path = _fs(src)
        fs.copy(path, _fs(dst)[1], recursive=True)
        metadata = sorted((p for p in fs.find(path) if p.rsplit("/", 1)[-1] == "zarr.json"), key=len, reverse=True)
        for key in metadata:
            fs.rm_file(key)
        fs.rm(path, recursive=True)
    else:
        import os

        os.replace(str(src), str(dst))


def children(location: Location, suffix: str) -> list[Location]:
    """Entries directly below `location` whose name ends with `suffix`, sorted."""
    if is_url(location):
        fs, path = _fs(location)
        if not fs.isdir(path):
            return []
        names = sorted(p.rstrip("/").rsplit("/", 1)[-1] for p in fs.ls(path, detail=False))
        return [join(location, n) for n in names if n.endswith(suffix)]
    base = Path(location)
    return sorted(base.glob(f"*{suffix}")) if base.is_dir() else []


def open_group(location: Location, mode: str, **kwargs: Any) -> zarr.Group:
    """zarr.open_group for a path or a URL (local file:// URLs create their folders as needed)."""
    if is_url(location) and str(location).startswith("file://"):
        kwargs.setdefault("storage_options", {"auto_mkdir": True})
    return zarr.open_group(str(location), mode=mode, **kwargs)


def parent(location: Location) -> Location:
    return str(location).rstrip("/").rsplit("/", 1)[0] if is_url(location) else Path(location).parent
