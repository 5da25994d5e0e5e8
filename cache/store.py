"""The feature store: one Zarr v3 store per feature, one group per unit (track or video).

Each group holds `values` (N, ...) float16, `times` (N, 2) float64 seconds, `valid` (N,) bool and
attributes (source identity, fps, frame count, `complete`). `complete` is written last, so a crash
never leaves a group that looks complete. The root carries the feature's metadata and a fingerprint;
a store is never mixed with results of another fingerprint.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import zarr
from zarr.codecs import BloscCodec, BloscShuffle
from zarr.errors import ContainsGroupError

from cache.location import Location, as_location, children, exists, join, move, name_of, open_group, parent
from cache.media import SourceStat

log = logging.getLogger(__name__)

CHUNK_ROWS = 4096
EXTRAS_GROUP = "_extras"
FEATURE_KINDS = ("frame", "window", "segment")
UNIT_KINDS = ("track", "video")


class FingerprintMismatch(RuntimeError):
    """A store exists with another fingerprint than the one requested."""


class IncompleteGroup(KeyError):
    """A group that is missing or was never marked complete."""


@dataclass(frozen=True)
class FeatureMeta:
    """What produced a feature: everything that makes two stores comparable."""

    name: str
    kind: str = "frame"  # frame | window | segment
    unit: str = "track"  # track | video
    model_ref: str = ""
    weights_digest: str = ""
    config: dict[str, Any] = field(default_factory=dict)
    version: str = "1"

    def __post_init__(self) -> None:
        if self.kind not in FEATURE_KINDS:
            raise ValueError(f"feature kind must be one of {FEATURE_KINDS}, got {self.kind!r}")
        if self.unit not in UNIT_KINDS:
            raise ValueError(f"feature unit must be one of {UNIT_KINDS}, got {self.unit!r}")

    @property
    def fingerprint(self) -> str:
        payload = json.dumps(asdict(self), sort_keys=True, default=str)
        return hashlib.sha256(payload.encode()).hexdigest()[:16]

    def to_attrs(self) -> dict[str, Any]:
        return {**json.loads(json.dumps(asdict(self), default=str)), "fingerprint": self.fingerprint}

    @classmethod
    def from_attrs(cls, attrs: dict[str, Any]) -> "FeatureMeta":
        keys = {"name", "kind", "unit", "model_ref", "weights_digest", "config", "version"}
        return cls(**{k: attrs[k] for k in keys if k in attrs})


@dataclass
class FeatureGroup:
    values: np.ndarray
    times: np.ndarray
    valid: np.ndarray
    attrs: dict[str, Any]


@dataclass(frozen=True)
class StoreLayout:
    """How a group's `values` are chunked and compressed (times and valid always use the default).
    Large rows (face crops: 150 KB each) need fewer rows per chunk than embeddings."""

    chunk_rows: int = CHUNK_ROWS
    cname: str = "lz4"  # blosc compressor: lz4 | zstd | ...
    clevel: int = 5
    shuffle: str = "shuffle"  # shuffle | bitshuffle | noshuffle


DEFAULT_LAYOUT = StoreLayout()


def _compressor(layout: StoreLayout = DEFAULT_LAYOUT) -> BloscCodec:
    return BloscCodec(cname=layout.cname, clevel=layout.clevel, shuffle=BloscShuffle(layout.shuffle))


def store_path(cache_dir: Location, name: str) -> Location:
    return join(as_location(cache_dir), f"{name}.zarr")


def store_exists(path: Location) -> bool:
    """A Zarr group is at `path` (a folder or an fsspec URL)."""
    return exists(join(as_location(path), "zarr.json"))


class GroupWriter:
    """Appends rows to one unit's arrays; the group becomes complete only on `close()`."""

    def __init__(self, group: zarr.Group, dim: tuple[int, ...], dtype: str, layout: StoreLayout = DEFAULT_LAYOUT):
        self._group = group
        self._dim, self._dtype = dim, dtype
        self._layout = layout
        self._arrays: dict[str, zarr.Array] | None = None
        self.rows = 0

    def _create(self) -> dict[str, zarr.Array]:
        specs = {
            "values": ((0, *self._dim), (self._layout.chunk_rows, *self._dim), self._dtype, self._layout),
            "times": ((0, 2), (CHUNK_ROWS, 2), "float64", DEFAULT_LAYOUT),
            "valid": ((0,), (CHUNK_ROWS,), "bool", DEFAULT_LAYOUT),
        }
        return {
            key: self._group.create_array(
                key, shape=shape, chunks=chunks, dtype=dtype, compressors=_compressor(layout), overwrite=True
            )
            for key, (shape, chunks, dtype, layout) in specs.items()
        }

    def append(self, values: np.ndarray, times: np.ndarray, valid: np.ndarray | None = None) -> None:
        values = np.asarray(values)
        times = np.asarray(times, dtype=np.float64)
        valid = np.ones(len(values), dtype=bool) if valid is None else np.asarray(valid, dtype=bool)
        if values.shape[1:] != self._dim:
            raise ValueError(f"values of shape {values.shape[1:]} do not match the group's {self._dim}")
        if not (len(values) == len(times) == len(valid)) or times.shape[1:] != (2,):
            raise ValueError(f"lengths differ: values {len(values)}, times {times.shape}, valid {len(valid)}")
        finite = np.isfinite(values.reshape(len(values), -1)).all(axis=1) if len(values) else valid
        if not finite.all():
            log.warning("%d rows with NaN/inf in %s marked invalid", int((~finite).sum()), self._group.path)
            values = np.where(finite.reshape(-1, *([1] * len(self._dim))), values, 0)
            valid = valid & finite
        if self._arrays is None:
            self._arrays = self._create()
        for key, data in (("values", values.astype(self._dtype)), ("times", times), ("valid", valid)):
            self._arrays[key].append(data, axis=0)
        self.rows += len(values)

    def close(self, attrs: dict[str, Any] | None = None) -> None:
        if self._arrays is None:
            self._arrays = self._create()
        self._group.attrs.update({**(attrs or {}), "rows": self.rows})
        self._group.attrs["complete"] = True  # last, on its own


class FeatureStore:
    """One feature's store. Open with the metadata you expect; a mismatch is refused."""

    def __init__(self, path: Location, root: zarr.Group, meta: FeatureMeta):
        self.path = as_location(path)
        self._root = root
        self.meta = meta

    @property
    def fingerprint(self) -> str:
        return self.meta.fingerprint

    @classmethod
    def create_or_open(cls, path: Location, meta: FeatureMeta, on_mismatch: str = "refuse") -> "FeatureStore":
        """Open for writing. on_mismatch='refuse' raises FingerprintMismatch; 'new' moves the old
        store aside (to `<name>.<old fingerprint>.zarr`, nothing is deleted) and starts a new one."""
        path = as_location(path)
        if store_exists(path):
            root = open_group(path, mode="a")
            found = root.attrs.get("fingerprint")
            if found == meta.fingerprint:
                return cls(path, root, meta)
            if on_mismatch != "new":
                raise FingerprintMismatch(
                    f"{path}: store fingerprint {found} differs from the requested {meta.fingerprint} "
                    "(another model or config); use a new cache dir or ask for a new store"
                )
            aside = store_path(parent(path), f"{name_of(path).removesuffix('.zarr')}.{found}")
            log.warning("moving store with fingerprint %s aside to %s", found, aside)
            move(path, aside)
        # root metadata and fingerprint in one (atomic) write: a process opening the store concurrently
        # (another shard, a Ray worker) never sees a root without its fingerprint
        try:
            root = open_group(path, mode="a", attributes=meta.to_attrs())
        except ContainsGroupError:  # another process created it between our check and our write
            root = open_group(path, mode="a")
        found = root.attrs.get("fingerprint")
        if found is None:
            root.attrs.update(meta.to_attrs())
        elif found != meta.fingerprint:  # created meanwhile by a process with another config
            raise FingerprintMismatch(
                f"{path}: store fingerprint {found} differs from the requested {meta.fingerprint} "
                "(created concurrently with another model or config)"
            )
        return cls(path, root, meta)

    @classmethod
    def open(cls, path: Location, expect_fingerprint: str | None = None) -> "FeatureStore":
        """Open an existing store for reading."""
        path = as_location(path)
        if not store_exists(path):
            raise FileNotFoundError(f"{path}: no feature store here")
        root = open_group(path, mode="r")
        attrs = dict(root.attrs)
        if "fingerprint" not in attrs:
            raise FingerprintMismatch(f"{path}: not a feature store (no fingerprint)")
        meta = FeatureMeta.from_attrs(attrs)
        if meta.fingerprint != attrs["fingerprint"]:
            raise FingerprintMismatch(f"{path}: stored fingerprint {attrs['fingerprint']} does not match its metadata")
        if expect_fingerprint is not None and expect_fingerprint != meta.fingerprint:
            raise FingerprintMismatch(
                f"{path}: store fingerprint {meta.fingerprint} differs from the expected {expect_fingerprint}"
            )
        return cls(path, root, meta)

    def units(self, complete_only: bool = True) -> list[str]:
        names = sorted(k for k in self._root.group_keys() if k != EXTRAS_GROUP)
        return [n for n in names if not complete_only or self.is_complete(n)]

    def unit_attrs(self, unit: str) -> dict[str, Any]:
        try:
            return dict(self._root[unit].attrs)
        except KeyError:
            return {}

    def is_complete(self, unit: str, source: SourceStat | None = None) -> bool:
        """Complete, and (when `source` is given) made from that same file, size and mtime."""
        attrs = self.unit_attrs(unit)
        if not attrs.get("complete"):
            return False
        if source is not None and attrs.get("source") != asdict(source):
            return False
        return True

    @contextmanager
    def writer(
        self, unit: str, dim: tuple[int, ...], dtype: str = "float16", attrs: dict[str, Any] | None = None,
        layout: StoreLayout | None = None,
    ) -> Iterator[GroupWriter]:
        """Write one unit from scratch; it is marked complete only if the block ends without error."""
        if unit == EXTRAS_GROUP or "/" in unit:
            raise ValueError(f"invalid unit name {unit!r}")
        group = self._root.create_group(unit, overwrite=True)
        writer = GroupWriter(group, tuple(dim), dtype, layout or DEFAULT_LAYOUT)
        yield writer
        writer.close(attrs)

    def write(
        self,
        unit: str,
        values: np.ndarray,
        times: np.ndarray,
        valid: np.ndarray | None = None,
        attrs: dict[str, Any] | None = None,
        dtype: str = "float16",
        layout: StoreLayout | None = None,
    ) -> None:
        """Write a whole unit; rows go in chunk-sized blocks, so `values` may be a memory map larger
        than RAM (face crops of a long video)."""
        values = values if isinstance(values, np.ndarray) else np.asarray(values)
        times = np.asarray(times)
        valid = np.ones(len(values), dtype=bool) if valid is None else np.asarray(valid, dtype=bool)
        step = (layout or DEFAULT_LAYOUT).chunk_rows
        with self.writer(unit, values.shape[1:], dtype, attrs, layout) as w:
            for a in range(0, max(len(values), 1), step):
                w.append(values[a : a + step], times[a : a + step], valid[a : a + step])

    def read(self, unit: str, rows: slice | None = None) -> FeatureGroup:
        if not self.is_complete(unit):
            raise IncompleteGroup(f"{self.path}: group '{unit}' is missing or incomplete")
        group = self._root[unit]
        sel = rows if rows is not None else slice(None)
        return FeatureGroup(
            values=group["values"][sel],
            times=group["times"][sel],
            valid=group["valid"][sel],
            attrs=dict(group.attrs),
        )

    def read_index(self, unit: str) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
        """A unit's times, valid and attributes without its values (face crops are 150 KB a row)."""
        if not self.is_complete(unit):
            raise IncompleteGroup(f"{self.path}: group '{unit}' is missing or incomplete")
        group = self._root[unit]
        return group["times"][:], np.asarray(group["valid"][:], dtype=bool), dict(group.attrs)

    def put_extra(self, name: str, array: np.ndarray, attrs: dict[str, Any] | None = None) -> None:
        """Store data that goes with the feature but is not per unit (e.g. region prompt embeddings)."""
        extras = self._root.require_group(EXTRAS_GROUP)
        arr = extras.create_array(name, shape=array.shape, dtype=array.dtype, overwrite=True)
        arr[...] = array
        arr.attrs.update(attrs or {})

    def get_extra(self, name: str) -> tuple[np.ndarray, dict[str, Any]]:
        try:
            arr = self._root[f"{EXTRAS_GROUP}/{name}"]
        except KeyError:
            raise KeyError(f"{self.path}: no extra '{name}'") from None
        return arr[...], dict(arr.attrs)


def list_stores(cache_dir: Location) -> dict[str, Location]:
    """Feature name → store location for every current store in cache_dir (moved-aside ones excluded)."""
    stores = {}
    for path in children(as_location(cache_dir), ".zarr"):
        name = name_of(path).removesuffix(".zarr")
        if "." not in name and store_exists(path):
            stores[name] = path
    return stores
