"""The feature store: one Zarr v3 store per feature, one group per unit (track or video).

Each group holds `values` (N, ...) float16, `times` (N, 2) float64 seconds, `valid` (N,) bool and
attributes (source identity, fps, frame count, `rows`, `chunks`, `complete`). Every chunk carries a
crc32c checksum (after the compressor). `complete` is written last, and cleared before a group is
overwritten, so a crash never leaves a group that looks complete. The root carries the feature's
metadata and a fingerprint; a store is never mixed with results of another fingerprint.

Damage found while reading (a checksum mismatch, an undecodable or missing chunk, a shape that differs
from what was recorded, unreadable metadata) raises `DamagedGroup` / `DamagedStore`, whose message names
the store, the group and the repair (`pipeline.py verify`).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import shlex
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import zarr
from zarr.codecs import BloscCodec, BloscShuffle, Crc32cCodec
from zarr.core.sync import sync
from zarr.errors import ContainsGroupError

from cache.location import Location, as_location, children, exists, join, move, name_of, open_group, parent
from cache.media import SourceStat
from cache.names import check_name
from cache.precision import check_float16, choose_dtype

log = logging.getLogger(__name__)

CHUNK_ROWS = 4096
EXTRAS_GROUP = "_extras"
# attribute of an extra computed from groups (e.g. standardization statistics): {group: identity} as
# `FeatureStore.group_identities` gave them then; `pipeline.py verify` reports the extra stale when one differs
DERIVED_FROM = "derived_from"
STANDARDIZATION_EXTRA = "standardization_"  # prefix of the extras holding statistics (train/data/standardize.py)
FEATURE_KINDS = ("frame", "window", "segment")
UNIT_KINDS = ("track", "video")


class FingerprintMismatch(RuntimeError):
    """A store exists with another fingerprint than the one requested."""


class IncompleteGroup(KeyError):
    """A group that is missing or was never marked complete."""


class DamagedStore(RuntimeError):
    """Stored data that cannot be read back as it was written: unreadable store metadata, or (as
    `DamagedGroup`) a group with a bad, missing or misshapen chunk. The message says what to run."""


class DamagedGroup(DamagedStore):
    """One group of a store is damaged; `pipeline.py verify` finds every such group and marks it
    incomplete, so that the next extract / import / export redoes exactly those."""

    def __init__(self, store: Location, unit: str, problem: str):
        self.store, self.unit, self.problem = store, unit, problem
        super().__init__(
            f"{store}: group '{unit}' is damaged ({problem}); run `python pipeline.py verify "
            f"{shlex.quote(feature_of(store))} --cache-dir {shlex.quote(str(parent(store)))}` to mark damaged groups for redoing"
        )


def feature_of(path: Location) -> str:
    return name_of(path).removesuffix(".zarr")


def short_reason(err: BaseException) -> str:
    text = str(err).strip().splitlines()[0] if str(err).strip() else ""
    return f"{type(err).__name__}: {text}"[:200]


def _open_root(path: Location, mode: str, **kwargs: Any) -> zarr.Group:
    """The store's root group; unreadable root metadata is a DamagedStore naming the file."""
    try:
        return open_group(path, mode=mode, **kwargs)
    except (ValueError, TypeError, KeyError, UnicodeDecodeError) as err:  # JSONDecodeError is a ValueError
        if isinstance(err, ContainsGroupError):
            raise
        raise DamagedStore(
            f"{join(path, 'zarr.json')}: unreadable store metadata ({short_reason(err)}); move the store aside "
            "(or delete it) and extract or import it again"
        ) from None


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


def _codecs(layout: StoreLayout = DEFAULT_LAYOUT) -> tuple[BloscCodec, Crc32cCodec]:
    """Bytes-to-bytes codecs of every array: the compressor, then a crc32c checksum of its output."""
    return (BloscCodec(cname=layout.cname, clevel=layout.clevel, shuffle=BloscShuffle(layout.shuffle)), Crc32cCodec())


# Every chunk is written, even one equal to the fill value, so that a chunk file that is missing
# is damage (its count is recorded at completion), never a legitimate run of zeros.
ARRAY_CONFIG = {"write_empty_chunks": True}


def create_checked_array(group: zarr.Group, name: str, layout: StoreLayout = DEFAULT_LAYOUT, **kwargs: Any) -> zarr.Array:
    """The one way the project creates a Zarr array: compressed, checksummed, every chunk written."""
    return group.create_array(name, compressors=_codecs(layout), config=ARRAY_CONFIG, overwrite=True, **kwargs)


def has_checksums(array: zarr.Array) -> bool:
    return any(isinstance(codec, Crc32cCodec) for codec in array.metadata.codecs)


def store_path(cache_dir: Location, name: str) -> Location:
    """`<cache_dir>/<name>.zarr` for a safe feature name (cache/names.py); UnsafeName otherwise."""
    return join(as_location(cache_dir), f"{check_name(name, 'feature name')}.zarr")


def aside_path(path: Location, fingerprint: str) -> Location:
    """Where a store of another fingerprint is moved: `<name>.<fingerprint>.zarr` beside it (the dot keeps
    it out of `list_stores`, and no feature name can have one)."""
    return join(parent(path), f"{feature_of(path)}.{fingerprint}.zarr")


def store_exists(path: Location) -> bool:
    """A Zarr group is at `path` (a folder or an fsspec URL)."""
    return exists(join(as_location(path), "zarr.json"))


class GroupWriter:
    """Appends rows to one unit's arrays; the group becomes complete only on `close()`."""

    def __init__(self, group: zarr.Group, dim: tuple[int, ...], dtype: str, layout: StoreLayout = DEFAULT_LAYOUT,
                 on_dtype: Callable[[str, str, list[str]], None] | None = None):
        self._group = group
        self._dim, self._dtype = dim, dtype
        self._layout = layout
        self._arrays: dict[str, zarr.Array] | None = None
        self.rows = 0
        self._digest = hashlib.blake2b(digest_size=16)
        self._on_dtype = on_dtype  # (unit, chosen dtype, columns float16 would lose): `auto`'s choice, told once

    def _create(self) -> dict[str, zarr.Array]:
        specs = {
            "values": ((0, *self._dim), (self._layout.chunk_rows, *self._dim),
                       "float16" if self._dtype == "auto" else self._dtype, self._layout),
            "times": ((0, 2), (CHUNK_ROWS, 2), "float64", DEFAULT_LAYOUT),
            "valid": ((0,), (CHUNK_ROWS,), "bool", DEFAULT_LAYOUT),
        }
        return {
            key: create_checked_array(self._group, key, layout, shape=shape, chunks=chunks, dtype=dtype)
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
        if self._dtype == "auto":  # float16 unless a column would lose precision (cache/precision.py)
            self._dtype, lost = choose_dtype("auto", values, valid=valid)
            log.debug("%s: stored as %s%s", self._group.path, self._dtype, f", float16 would lose {', '.join(lost[:3])}" if lost else "")
            if self._on_dtype is not None:
                self._on_dtype(self._group.basename, str(self._dtype), list(lost))
        elif np.dtype(self._dtype) == np.float16:
            check_float16(str(self._group.store_path).removeprefix("file://"), values, valid=valid)
        if self._arrays is None:
            self._arrays = self._create()
        for key, data in (("values", values.astype(self._dtype)), ("times", times), ("valid", valid)):
            self._arrays[key].append(data, axis=0)
            self._digest.update(np.ascontiguousarray(data).tobytes())
        self.rows += len(values)

    def close(self, attrs: dict[str, Any] | None = None) -> None:
        if self._arrays is None:
            self._arrays = self._create()
        chunks = {key: int(array.nchunks) for key, array in self._arrays.items()}
        # `content_digest` names what the group holds: views aligned from other rows are stale, while a group
        # rewritten with the same rows (a restore, a deterministic re-extraction) keeps its views
        self._group.attrs.update({**(attrs or {}), "rows": self.rows, "chunks": chunks,
                                  "content_digest": self._digest.hexdigest()})
        self._group.attrs["complete"] = True  # last, on its own


class FeatureStore:
    """One feature's store. Open with the metadata you expect; a mismatch is refused."""

    def __init__(self, path: Location, root: zarr.Group, meta: FeatureMeta):
        self.path = as_location(path)
        self._root = root
        self.meta = meta
        self._dtypes: dict[str, tuple[list[str], dict[str, None]]] = {}  # dtype -> (units, columns float16 would lose)

    def _note_dtype(self, unit: str, dtype: str, lost: list[str]) -> None:
        units, columns = self._dtypes.setdefault(dtype, ([], {}))
        units.append(unit)
        columns.update(dict.fromkeys(c.split(" (")[0] for c in lost))  # "column 0 (rounding error …)" -> "column 0"

    def dtype_summary(self) -> list[str]:
        """One line per dtype `auto` chose for the groups written through this store object (then forgotten):
        "clip: 12 group(s) stored as float16"; "… as float32 (float16 would lose precision in column 0, …)"."""
        name = feature_of(self.path)
        lines = []
        for dtype, (units, columns) in sorted(self._dtypes.items()):
            cols = list(columns)
            lost = f" (float16 would lose precision in {', '.join(cols[:5])}{', …' if len(cols) > 5 else ''})" if cols else ""
            lines.append(f"{name}: {len(units)} group(s) stored as {dtype}{lost}")
        self._dtypes.clear()
        return lines

    @property
    def fingerprint(self) -> str:
        return self.meta.fingerprint

    @classmethod
    def create_or_open(cls, path: Location, meta: FeatureMeta, on_mismatch: str = "refuse") -> "FeatureStore":
        """Open for writing. on_mismatch='refuse' raises FingerprintMismatch; 'new' moves the old
        store aside (to `<name>.<old fingerprint>.zarr`, nothing is deleted) and starts a new one."""
        path = as_location(path)
        if store_exists(path):
            root = _open_root(path, mode="a")
            found = root.attrs.get("fingerprint")
            if found == meta.fingerprint:
                return cls(path, root, meta)
            if on_mismatch != "new":
                raise FingerprintMismatch(
                    f"{path}: store fingerprint {found} differs from the requested {meta.fingerprint} "
                    "(another model or config); use a new cache dir or ask for a new store"
                )
            aside = aside_path(path, found)
            log.warning("moving store with fingerprint %s aside to %s", found, aside)
            move(path, aside)  # a rename on a local disk; on a URL a copy, then metadata removed first
        # root metadata and fingerprint in one (atomic) write: a process opening the store concurrently
        # (another shard, a Ray worker) never sees a root without its fingerprint
        try:
            root = _open_root(path, mode="a", attributes=meta.to_attrs())
        except ContainsGroupError:  # another process created it between our check and our write
            root = _open_root(path, mode="a")
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
    def open(cls, path: Location, expect_fingerprint: str | None = None, writable: bool = False) -> "FeatureStore":
        """Open an existing store for reading (`writable`: also for marking groups incomplete)."""
        path = as_location(path)
        if not store_exists(path):
            raise FileNotFoundError(f"{path}: no feature store here")
        root = _open_root(path, mode="a" if writable else "r")
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

    # ---- listing (no reads of chunk data) ---------------------------------------------------------
    def _list(self, prefix: str, recursive: bool) -> list[str]:
        store, base = self._root.store_path.store, self._root.store_path.path
        full = f"{base}/{prefix}" if base else prefix

        async def collect() -> list[str]:
            listing = store.list_prefix(full) if recursive else store.list_dir(full)
            return [key async for key in listing]

        return sync(collect())

    def _has_key(self, key: str) -> bool:
        store, base = self._root.store_path.store, self._root.store_path.path
        return bool(sync(store.exists(f"{base}/{key}" if base else key)))

    def units(self, complete_only: bool = True) -> list[str]:
        """Unit groups, by name. Found by listing, so one unreadable group's metadata does not hide the
        others; with `complete_only`, a group whose metadata cannot be read raises DamagedGroup."""
        names = sorted(n.rstrip("/") for n in self._list("", recursive=False))
        names = [n for n in names if n not in ("zarr.json", EXTRAS_GROUP) and self._has_key(f"{n}/zarr.json")]
        return [n for n in names if not complete_only or self.is_complete(n)]

    def unit_attrs(self, unit: str) -> dict[str, Any]:
        """The group's attributes ({} when there is no such group); unreadable metadata is a DamagedGroup."""
        try:
            group = self._root[unit]
        except KeyError:
            return {}
        except (ValueError, TypeError, UnicodeDecodeError) as err:  # garbage zarr.json
            raise DamagedGroup(self.path, unit, f"unreadable zarr.json: {short_reason(err)}") from None
        if not isinstance(group, zarr.Group):
            raise DamagedGroup(self.path, unit, "an array where a group should be")
        return dict(group.attrs)

    def is_complete(self, unit: str, source: SourceStat | None = None, check_chunks: bool = False) -> bool:
        """Complete, and (when `source` is given) made from the same file: same name, size and mtime, wherever
        the dataset lives now. `check_chunks` also lists the group's chunk files and compares their count with
        the count recorded at completion (a cheap check for deleted chunks: a listing, no reads)."""
        attrs = self.unit_attrs(unit)
        if not attrs.get("complete"):
            return False
        if source is not None and not source.same_file(attrs.get("source")):
            return False
        if check_chunks:
            problem = self.chunk_count_problem(unit, attrs)
            if problem:
                log.warning("%s: group '%s' is damaged (%s): not taken as complete", self.path, unit, problem)
                return False
        return True

    def chunk_count_problem(self, unit: str, attrs: dict[str, Any] | None = None) -> str | None:
        """What is wrong with the chunk files present, judged by a listing against the recorded counts
        (None when fine, or for groups written before counts were recorded)."""
        attrs = self.unit_attrs(unit) if attrs is None else attrs
        recorded = attrs.get("chunks")
        if not isinstance(recorded, dict):
            return None
        found = self._count_chunk_files(f"{unit}/", set(recorded))
        wrong = [f"{key} has {found[key]} of {n} chunk files" for key, n in recorded.items() if found[key] != n]
        return "; ".join(wrong) or None

    def _count_chunk_files(self, prefix: str, arrays: set[str]) -> dict[str, int]:
        """Chunk files (keys `<array>/c/<index>...`) below `prefix`, per array name, by one listing."""
        found = {key: 0 for key in arrays}
        for key in self._list(prefix, recursive=True):
            parts = key.split("/")
            for i, part in enumerate(parts[:-1]):
                if part == "c" and i > 0 and parts[i - 1] in found:
                    found[parts[i - 1]] += 1
                    break
        return found

    # ---- writing ---------------------------------------------------------------------------------
    def _retire(self, unit: str) -> None:
        """Before anything of an existing group is deleted, make it look incomplete (one atomic metadata
        write; unreadable metadata is deleted instead), so a kill inside the removal never leaves a
        complete-looking husk."""
        try:
            attrs = self.unit_attrs(unit)
        except DamagedGroup:
            store, base = self._root.store_path.store, self._root.store_path.path
            sync(store.delete(f"{base}/{unit}/zarr.json" if base else f"{unit}/zarr.json"))
            return
        if attrs.get("complete"):
            self._root[unit].attrs["complete"] = False

    @contextmanager
    def writer(
        self, unit: str, dim: tuple[int, ...], dtype: str = "float16", attrs: dict[str, Any] | None = None,
        layout: StoreLayout | None = None,
    ) -> Iterator[GroupWriter]:
        """Write one unit from scratch; it is marked complete only if the block ends without error. An
        existing group of that name is marked incomplete before it is removed."""
        check_name(unit, "unit name")  # also keeps EXTRAS_GROUP ('_extras') out
        self._retire(unit)
        group = self._root.create_group(unit, overwrite=True)
        writer = GroupWriter(group, tuple(dim), dtype, layout or DEFAULT_LAYOUT, on_dtype=self._note_dtype)
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
        """Write a whole unit. With a `layout`, rows go in chunk-sized blocks, so `values` may be a memory
        map larger than RAM (face crops of a long video)."""
        values = values if isinstance(values, np.ndarray) else np.asarray(values)
        with self.writer(unit, values.shape[1:], dtype, attrs, layout) as w:
            if layout is None:
                w.append(values, times, valid)
                return
            times = np.asarray(times)
            valid = np.ones(len(values), dtype=bool) if valid is None else np.asarray(valid, dtype=bool)
            for a in range(0, max(len(values), 1), layout.chunk_rows):
                step = slice(a, a + layout.chunk_rows)
                w.append(values[step], times[step], valid[step])

    def mark_incomplete(self, unit: str, problem: str) -> None:
        """Make a damaged group incomplete, so the next extract / import / export redoes it. A group whose
        metadata cannot be read is replaced by an empty (incomplete) one."""
        try:
            self.unit_attrs(unit)
        except DamagedGroup:
            self._retire(unit)
            self._root.create_group(unit, overwrite=True, attributes={"complete": False, "damaged": problem})
            return
        self._root[unit].attrs.update({"complete": False, "damaged": problem})

    # ---- reading ---------------------------------------------------------------------------------
    def open_arrays(self, unit: str, attrs: dict[str, Any] | None = None) -> dict[str, zarr.Array]:
        """The group's arrays after the cheap checks (metadata readable, shapes as recorded, chunk files
        all present); anything wrong is a DamagedGroup."""
        attrs = self.unit_attrs(unit) if attrs is None else attrs
        arrays: dict[str, zarr.Array] = {}
        for key in ("values", "times", "valid"):
            try:
                arrays[key] = self._root[f"{unit}/{key}"]
            except KeyError:
                raise DamagedGroup(self.path, unit, f"array '{key}' is missing") from None
            except (ValueError, TypeError, UnicodeDecodeError) as err:
                raise DamagedGroup(self.path, unit, f"unreadable {key}/zarr.json: {short_reason(err)}") from None
            if not isinstance(arrays[key], zarr.Array):
                raise DamagedGroup(self.path, unit, f"'{key}' is a {type(arrays[key]).__name__.lower()}, not an array")
        lengths = {key: array.shape[0] if array.shape else -1 for key, array in arrays.items()}
        rows = attrs.get("rows", lengths["values"])
        if any(n != rows for n in lengths.values()) or arrays["times"].shape[1:] != (2,) or arrays["valid"].ndim != 1:
            shapes = ", ".join(f"{key} {array.shape}" for key, array in arrays.items())
            raise DamagedGroup(self.path, unit, f"shapes {shapes} do not match the {rows} rows recorded")
        problem = self.chunk_count_problem(unit, attrs)
        if problem:
            raise DamagedGroup(self.path, unit, problem)
        return arrays

    def read(self, unit: str, rows: slice | None = None) -> FeatureGroup:
        attrs = self.unit_attrs(unit)
        if not attrs.get("complete"):
            raise IncompleteGroup(f"{self.path}: group '{unit}' is missing or incomplete")
        arrays = self.open_arrays(unit, attrs)
        sel = rows if rows is not None else slice(None)
        try:
            data = {key: array[sel] for key, array in arrays.items()}
        except Exception as err:  # checksum mismatch, undecodable chunk: zarr and numcodecs raise many types
            raise DamagedGroup(self.path, unit, f"a chunk cannot be read ({short_reason(err)})") from None
        return FeatureGroup(values=data["values"], times=data["times"], valid=data["valid"], attrs=attrs)

    def read_index(self, unit: str) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
        """A unit's times, valid and attributes without its values (face crops are 150 KB a row)."""
        attrs = self.unit_attrs(unit)
        if not attrs.get("complete"):
            raise IncompleteGroup(f"{self.path}: group '{unit}' is missing or incomplete")
        arrays = self.open_arrays(unit, attrs)
        return arrays["times"][:], np.asarray(arrays["valid"][:], dtype=bool), attrs

    def put_extra(self, name: str, array: np.ndarray, attrs: dict[str, Any] | None = None) -> None:
        """Store data that goes with the feature but is not per unit (e.g. region prompt embeddings).
        Like a group: an old one is marked incomplete before it is removed; complete after its data."""
        check_name(name, "extra name")
        extras = self._root.require_group(EXTRAS_GROUP)
        # no extra yet (KeyError), or unreadable metadata (overwritten below): nothing to un-complete
        with contextlib.suppress(KeyError, ValueError, TypeError, UnicodeDecodeError):
            old = extras[name]
            if old.attrs.get("complete"):
                old.attrs["complete"] = False
        arr = create_checked_array(extras, name, shape=array.shape, dtype=array.dtype)
        arr[...] = array
        arr.attrs.update({**(attrs or {}), "chunks": int(arr.nchunks)})
        arr.attrs["complete"] = True  # last, on its own

    def remove_extra(self, name: str) -> None:
        """Delete an extra (marked incomplete first, as a group is before its removal)."""
        extras = self._root.require_group(EXTRAS_GROUP)
        with contextlib.suppress(KeyError, ValueError, TypeError, UnicodeDecodeError):
            extras[name].attrs["complete"] = False
        with contextlib.suppress(KeyError):
            del extras[name]

    def group_identities(self, units: Sequence[str]) -> dict[str, str]:
        """What each group holds, as recorded at completion: its `content_digest` (a group written before
        digests: its row count and source), for records derived from groups (`DERIVED_FROM`)."""
        out = {}
        for unit in units:
            attrs = self.unit_attrs(unit)
            out[unit] = str(attrs.get("content_digest") or f"rows={attrs.get('rows')};source={attrs.get('source')}")
        return out

    def extra_names(self) -> list[str]:
        names = sorted(n.rstrip("/") for n in self._list(f"{EXTRAS_GROUP}/", recursive=False))
        return [n for n in names if n != "zarr.json" and self._has_key(f"{EXTRAS_GROUP}/{n}/zarr.json")]

    def get_extra(self, name: str) -> tuple[np.ndarray, dict[str, Any]]:
        where = f"{EXTRAS_GROUP}/{name}"
        try:
            arr = self._root[where]
        except KeyError:
            raise KeyError(f"{self.path}: no extra '{name}'") from None
        except (ValueError, TypeError, UnicodeDecodeError) as err:
            raise DamagedGroup(self.path, where, f"unreadable zarr.json: {short_reason(err)}") from None
        if not isinstance(arr, zarr.Array):
            raise DamagedGroup(self.path, where, f"a {type(arr).__name__.lower()}, not an array")
        attrs = dict(arr.attrs)
        complete, chunks = attrs.pop("complete", None), attrs.pop("chunks", None)
        if has_checksums(arr):  # written with checksums: also marked complete, with its chunk count
            if not complete:
                raise DamagedGroup(self.path, where, "written only in part (its writer was stopped); the next "
                                   "extract of this feature writes it again")
            found = self._count_chunk_files(f"{EXTRAS_GROUP}/", {name})[name]
            if chunks is not None and found != chunks:
                raise DamagedGroup(self.path, where, f"{found} of {chunks} chunk files")
        try:
            return arr[...], attrs
        except Exception as err:  # see read()
            raise DamagedGroup(self.path, where, f"a chunk cannot be read ({short_reason(err)})") from None


def list_stores(cache_dir: Location) -> dict[str, Location]:
    """Feature name → store location for every current store in cache_dir (moved-aside ones excluded)."""
    stores = {}
    for path in children(as_location(cache_dir), ".zarr"):
        name = name_of(path).removesuffix(".zarr")
        if "." not in name and store_exists(path):
            stores[name] = path
    return stores
