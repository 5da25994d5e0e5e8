"""Bring your own features: import per-frame features made by other tools into a regular feature store.

Sources and conventions (README, "Bring your own features"):

* **Unit names.** Each source unit is named by a track (`video10_left`) or, for `--unit video`, by a
  video stem (`video10`). A name must be a track of the manifest (train/val label file or test entry);
  a video stem whose video has other tracks (`video10` for `video10_left` + `video10_right`) is reported
  as ambiguous unless `--unit video` is asked for. Unmatched units are reported, never dropped silently.
* **npz**: one `<unit>.npz` per unit with `features` (or `values`) (N, ...), and `frames` (N,) frame
  indices and/or `times`/`timestamps` ((N,) starts or (N, 2) [start, end) seconds); optional `valid` (N,).
* **npy**: `<unit>.npy` values (N, ...), with optional sidecars `<unit>.frames.npy`, `<unit>.times.npy`
  and `<unit>.valid.npy` (same meaning as in npz). Without frames or times, row i is frame i.
* **csv** (OpenFace style): a header row; a `frame` column and/or a `timestamp` (or `time`) column;
  `success` (0 → invalid) and `confidence` (below `--min-confidence` → invalid) when present; the
  columns `frame`, `face_id`, `timestamp`, `time`, `confidence`, `success`, `valid` are not features,
  every other column is, except an index column (a header that is empty, `Unnamed: <i>` or `index`, holding
  whole numbers rising from 0 or 1: what pandas' `to_csv` writes first), which is dropped with a note.
  `--columns a,b` takes exactly those feature columns (in that order); `--drop-columns c` leaves some out.
  An empty header cell is named `Unnamed: <i>` (as pandas does), so it can be named in these options.
  The store records the names of the columns it holds (root and unit attribute `columns`); every unit
  must have the same ones. Names are stripped (OpenFace writes `" timestamp"`). Frames count from 1 by
  default (OpenFace). An empty cell is NaN. Several rows for one frame (several faces): the successful,
  most confident row is kept and the others are counted in the notes.
* **hdf5**: one file (or a folder of `.h5`/`.hdf5`); per unit either a dataset (N, ...) (row i is frame i)
  or a group with the npz keys. Groups without such datasets are searched one level further down. A file
  written by `export-features` is restored exactly instead (see `cache/exporters.py`): same values bit for
  bit, times, valid, attributes, and the original metadata and fingerprint (the manifest is not used).

Frame indices become times with the real fps of the unit's video (`probe_video`; for a variable-rate
video with a frame-time record in the cache, the recorded frame times, as label frames) when `fps_from_video`
(default: on whenever frames are given); `--no-fps-from-video` uses the source's timestamps instead
(an error for a source that has only frame indices). `--frame-index-base` says whether the source counts
frames from 0 or 1 (default 1 for csv, 0 otherwise). A frame-indexed unit covers every frame
0..n_frames-1 of its video (and any source frames beyond the end, which are kept and counted);
frames missing from the source are invalid rows. Timestamped rows are kept as given (sorted by start);
a row of a (N,) timestamp source lasts the median step between timestamps (1/fps for a single row).

Rows with NaN or inf, or with values beyond float32's range (1e39 would be stored as inf; float64's
with `--dtype float64`), are kept, zeroed and marked invalid, and counted in the notes (not a failure).
A failure (unreadable file, non-numeric values, no rows, features of width 0, a dimension that differs
from the first imported unit, a duplicate frame, a duplicate or negative timestamp where timestamps place
the rows, a name that matches no track or is not a safe name (`cache/names.py`), values float16 cannot
hold) is one line naming the file and the reason; the other units still import. Whole numbers float32
cannot hold exactly (above 2**24) are stored as float64 (`--dtype float32` refuses them). A UTF-8 BOM
at the start of a csv is not part of its header. `--dtype auto` (the default) stores a unit as float16 when
that keeps every column (`cache/precision.py`: rounding error within 1 % of the column's std, whole numbers
exact, no overflow) and as float32 otherwise, with a note; `--dtype float16` refuses such a unit.
The store's `FeatureMeta.config` records the importer's options and every source file's path, size and
sha256, so the fingerprint changes whenever a source changes.
"""

from __future__ import annotations

import csv
import hashlib
import logging
import re
import warnings
import zipfile
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import zarr

from cache.exporters import FORMAT_ATTR, is_affcache_export, read_attrs
from cache.manifest import Manifest
from cache.frametimes import FrameClock
from cache.location import open_group
from cache.media import MediaError, SourceStat, VideoInfo, probe_video
from cache.names import UnsafeName, check_name
from cache.precision import choose_dtype, float16_losses
from cache.store import EXTRAS_GROUP, DamagedGroup, FeatureMeta, FeatureStore, store_exists, store_path

log = logging.getLogger(__name__)

IMPORTER_VERSION = "2"  # 2: csv index columns dropped, --dtype auto, column names recorded
FORMATS = ("npz", "npy", "csv", "hdf5")
EXTENSIONS = {"npz": (".npz",), "npy": (".npy",), "csv": (".csv",), "hdf5": (".h5", ".hdf5")}
DEFAULT_FRAME_BASE = {"csv": 1}  # OpenFace counts frames from 1
VALUE_KEYS = ("features", "values")
FRAME_KEYS = ("frames",)
TIME_KEYS = ("times", "timestamps")
VALID_KEY = "valid"
NPY_SIDECARS = ("frames", "times", "valid")
CSV_FRAME_COLUMNS = ("frame",)
CSV_TIME_COLUMNS = ("timestamp", "time")
CSV_META_COLUMNS = ("frame", "face_id", "timestamp", "time", "confidence", "success", "valid")
CSV_INDEX_NAMES = re.compile(r"(unnamed: \d+|index)", re.IGNORECASE)
DTYPES = ("auto", "float16", "float32", "float64")
SPANS = ("video", "source")
FLOAT32_EXACT_INT = 2**24  # float32 holds every whole number up to here, and not 2**24 + 1


class SourceError(ValueError):
    """A source (file, or file:key) that cannot be imported; the message is one line naming it."""

    def __init__(self, where: str | Path, reason: str):
        self.where, self.reason = str(where), reason
        super().__init__(f"{where}: {reason}")


@dataclass(frozen=True)
class ImportConfig:
    """Options of one import. `None` means the format's default (see the module docstring)."""

    fmt: str
    unit: str = "track"  # track | video: one group per track or per video
    fps_from_video: bool | None = None  # None: on when the source gives frame indices
    frame_index_base: int | None = None  # None: 1 for csv (OpenFace), 0 otherwise
    min_confidence: float = 0.5  # csv: rows below are invalid
    dtype: str = "auto"  # stored dtype: auto = float16 unless a column would lose precision, then float32
    columns: tuple[str, ...] | None = None  # csv: exactly these feature columns, in this order
    drop_columns: tuple[str, ...] = ()  # csv: feature columns left out
    span: str = "video"  # video: 0..n_frames-1 of the video; source: first..last source frame
    replace: bool = False  # a store of this name with another fingerprint is moved aside, not refused

    def __post_init__(self) -> None:
        if self.fmt not in FORMATS:
            raise ValueError(f"format must be one of {', '.join(FORMATS)}, got {self.fmt!r}")
        if self.unit not in ("track", "video"):
            raise ValueError(f"unit must be track or video, got {self.unit!r}")
        if self.frame_index_base not in (None, 0, 1):
            raise ValueError(f"frame index base must be 0 or 1, got {self.frame_index_base!r}")
        if self.span not in SPANS:
            raise ValueError(f"span must be one of {SPANS}, got {self.span!r}")
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {', '.join(DTYPES)}, got {self.dtype!r}")
        if self.fmt != "csv" and (self.columns or self.drop_columns):
            raise ValueError("--columns and --drop-columns choose csv columns by name; this source is " + self.fmt)
        if self.columns is not None and not self.columns:
            raise ValueError("--columns names no column")
        object.__setattr__(self, "columns", tuple(self.columns) if self.columns is not None else None)
        object.__setattr__(self, "drop_columns", tuple(self.drop_columns))

    @property
    def base(self) -> int:
        return self.frame_index_base if self.frame_index_base is not None else DEFAULT_FRAME_BASE.get(self.fmt, 0)

    def to_config(self) -> dict[str, Any]:
        """What goes into the store's FeatureMeta.config (everything that changes the stored data)."""
        config = {k: v for k, v in asdict(self).items() if k != "replace"}
        config["frame_index_base"] = self.base
        if self.fmt != "csv":
            for key in ("min_confidence", "columns", "drop_columns"):
                config.pop(key)
        else:
            config["columns"] = list(self.columns) if self.columns is not None else None
            config["drop_columns"] = list(self.drop_columns)
        return config


@dataclass
class SourceRows:
    """One unit's rows as read: values, 0-based frame indices and/or times, validity, and notes."""

    values: np.ndarray
    frames: np.ndarray | None = None
    times: np.ndarray | None = None  # (N,) starts or (N, 2) [start, end)
    valid: np.ndarray | None = None
    notes: list[str] = field(default_factory=list)
    columns: list[str] | None = None  # names of the value columns, when the source has them (csv)


@dataclass(frozen=True)
class SourceUnit:
    """A unit found in a source: its name, where it is (for messages), and how to load it (lazily)."""

    name: str
    where: str
    path: Path
    load: Callable[[], SourceRows]


@dataclass(frozen=True)
class Target:
    """Where a source unit goes: the group name, the video that gives it fps and frames, its tracks."""

    unit: str
    video: Path
    tracks: tuple[str, ...]


@dataclass
class Placed:
    """Rows on the store's time axis, ready to write."""

    values: np.ndarray
    times: np.ndarray
    valid: np.ndarray
    stats: dict[str, Any]
    dtype: str = "float16"  # the stored dtype chosen for this unit


@dataclass
class ImportReport:
    store: Path
    imported: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    fingerprint: str = ""
    complete: list[str] = field(default_factory=list)  # already complete from the same sources: skipped

    @property
    def ok(self) -> bool:
        return not self.failed

    def summary(self) -> str:
        skipped = f", {len(self.complete)} already complete" if self.complete else ""
        return f"imported {len(self.imported)}, failed {len(self.failed)}{skipped} → {self.store}"


# --------------------------------------------------------------------------------------------------
# Finding source files
# --------------------------------------------------------------------------------------------------


def infer_format(source: Path) -> str:
    """The format from a file's extension, or from the one kind of feature file in a folder."""
    source = Path(source)
    suffixes = {source.suffix.lower()} if source.is_file() else {p.suffix.lower() for p in source.rglob("*")}
    found = [fmt for fmt, exts in EXTENSIONS.items() if suffixes & set(exts)]
    if len(found) != 1:
        what = "no" if not found else "several kinds of"
        raise SourceError(source, f"{what} feature files ({', '.join(found) or 'npz/npy/csv/h5'}): pass --format")
    return found[0]


def find_source_files(source: Path, fmt: str) -> list[Path]:
    """The files of this format: `source` itself, or every such file below the folder `source`."""
    source = Path(source)
    exts = EXTENSIONS[fmt]
    if source.is_file():
        if source.suffix.lower() not in exts:
            raise SourceError(source, f"not a {fmt} file (expected {'/'.join(exts)})")
        return [source]
    if not source.is_dir():
        raise SourceError(source, "no such file or folder")
    files = sorted(p for p in source.rglob("*") if p.is_file() and p.suffix.lower() in exts)
    if not files:
        raise SourceError(source, f"no {'/'.join(exts)} files here")
    return files


def file_digest(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def describe_files(files: list[Path]) -> list[dict[str, Any]]:
    """Path, size and sha256 of each source file, for the store's config (and so its fingerprint)."""
    return [
        {"path": str(p.resolve()), "size": p.stat().st_size, "sha256": file_digest(p)} for p in files
    ]


# --------------------------------------------------------------------------------------------------
# Reading arrays into SourceRows (shared checks)
# --------------------------------------------------------------------------------------------------


def _numeric_values(where: str, values: np.ndarray) -> np.ndarray:
    values = np.asarray(values)
    if values.dtype.kind not in "biuf":
        raise SourceError(where, f"non-numeric values (dtype {values.dtype})")
    if values.ndim == 0:
        raise SourceError(where, "values are a scalar, expected (N, ...) rows")
    if values.ndim == 1:
        values = values[:, None]
    if not len(values):
        raise SourceError(where, f"no rows (values of shape {values.shape})")
    if 0 in values.shape[1:]:
        raise SourceError(where, f"features of width 0 (values of shape {values.shape})")
    if values.dtype.kind in "biu":  # whole numbers float32 cannot hold exactly (> 2**24) stay float64
        exact = values.dtype.itemsize <= 2 or np.abs(values).max() <= FLOAT32_EXACT_INT
        return values.astype(np.float32 if exact else np.float64)
    return values


def _frame_indices(where: str, frames: np.ndarray, n: int, base: int) -> np.ndarray:
    frames = np.asarray(frames)
    if frames.shape != (n,):
        raise SourceError(where, f"frames have shape {frames.shape}, expected ({n},) like the values")
    if frames.dtype.kind not in "iuf":
        raise SourceError(where, f"non-numeric frame indices (dtype {frames.dtype})")
    if frames.dtype.kind == "f":
        whole = np.isfinite(frames) & (frames == np.round(frames))
        if not whole.all():
            raise SourceError(where, f"frame index {frames[~whole][0]!r} is not a whole number")
    index = frames.astype(np.int64) - base
    if n and index.min() < 0:
        raise SourceError(where, f"frame index {int(index.min()) + base} is below the frame index base {base}")
    frames_seen, counts = np.unique(index, return_counts=True)
    if (counts > 1).any():
        first = int(np.argmax(counts > 1))
        raise SourceError(where, f"frame {int(frames_seen[first]) + base} appears {int(counts[first])} times")
    return index


def _timestamps(where: str, times: np.ndarray, n: int) -> np.ndarray:
    times = np.asarray(times)
    if times.dtype.kind not in "iuf":
        raise SourceError(where, f"non-numeric times (dtype {times.dtype})")
    if times.shape not in ((n,), (n, 2)):
        raise SourceError(where, f"times have shape {times.shape}, expected ({n},) or ({n}, 2)")
    times = times.astype(np.float64)
    if not np.isfinite(times).all():
        raise SourceError(where, "times contain NaN or inf")
    if times.ndim == 2 and (times[:, 1] <= times[:, 0]).any():
        raise SourceError(where, "a row's end time is not after its start")
    return times


def _validity(where: str, valid: np.ndarray, n: int) -> np.ndarray:
    valid = np.asarray(valid)
    if valid.shape != (n,) or valid.dtype.kind not in "biuf":
        raise SourceError(where, f"valid must be ({n},) bool, got {valid.dtype} {valid.shape}")
    return valid.astype(bool)


def make_rows(
    where: str,
    values: np.ndarray,
    frames: np.ndarray | None,
    times: np.ndarray | None,
    valid: np.ndarray | None,
    base: int,
) -> SourceRows:
    """Check one unit's arrays and bring frames to 0-based indices. No frames and no times: row i is frame i."""
    values = _numeric_values(where, values)
    n = len(values)
    index = _frame_indices(where, frames, n, base) if frames is not None else None
    stamps = _timestamps(where, times, n) if times is not None else None
    if index is None and stamps is None:
        index = np.arange(n, dtype=np.int64)
    return SourceRows(
        values=values,
        frames=index,
        times=stamps,
        valid=_validity(where, valid, n) if valid is not None else None,
    )


def _first_key(arrays: Mapping[str, Any], keys: tuple[str, ...]) -> Any | None:
    return next((arrays[k] for k in keys if k in arrays), None)


def rows_from_arrays(where: str, arrays: Mapping[str, np.ndarray], base: int) -> SourceRows:
    """SourceRows from named arrays (an npz file, an HDF5 group)."""
    values = _first_key(arrays, VALUE_KEYS)
    if values is None:
        raise SourceError(where, f"no 'features' or 'values' array (has: {', '.join(sorted(arrays)) or 'nothing'})")
    return make_rows(
        where, values, _first_key(arrays, FRAME_KEYS), _first_key(arrays, TIME_KEYS), arrays.get(VALID_KEY), base
    )


# --------------------------------------------------------------------------------------------------
# npz
# --------------------------------------------------------------------------------------------------


def read_npz(path: Path, cfg: ImportConfig) -> SourceRows:
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {key: data[key] for key in data.files}
    except ValueError as err:  # object arrays need pickle
        raise SourceError(path, f"non-numeric (object) arrays: {err}") from None
    except (OSError, zipfile.BadZipFile, EOFError) as err:
        raise SourceError(path, f"cannot read npz ({type(err).__name__}: {err})") from None
    return rows_from_arrays(str(path), arrays, cfg.base)


def npz_units(path: Path, cfg: ImportConfig) -> Iterator[SourceUnit]:
    yield SourceUnit(path.stem, str(path), path, partial(read_npz, path, cfg))


# --------------------------------------------------------------------------------------------------
# npy (+ sidecars)
# --------------------------------------------------------------------------------------------------


def _load_npy(path: Path) -> np.ndarray:
    try:
        return np.load(path, allow_pickle=False)
    except ValueError as err:
        raise SourceError(path, f"non-numeric (object) array: {err}") from None
    except (OSError, EOFError) as err:
        raise SourceError(path, f"cannot read npy ({type(err).__name__}: {err})") from None


def _npy_sidecar(path: Path, kind: str) -> Path:
    return path.with_name(f"{path.stem}.{kind}.npy")


def _npy_main(path: Path) -> tuple[str, str | None]:
    """(unit name, sidecar kind or None) of a .npy file name."""
    stem = path.stem
    for kind in NPY_SIDECARS:
        if stem.endswith(f".{kind}"):
            return stem[: -len(kind) - 1], kind
    return stem, None


def read_npy(path: Path, cfg: ImportConfig) -> SourceRows:
    arrays = {"values": _load_npy(path)}
    for kind in NPY_SIDECARS:
        sidecar = _npy_sidecar(path, kind)
        if sidecar.is_file():
            arrays[kind] = _load_npy(sidecar)
    return rows_from_arrays(str(path), arrays, cfg.base)


def _raise(where: str, reason: str) -> SourceRows:
    raise SourceError(where, reason)


def npy_units(path: Path, cfg: ImportConfig) -> Iterator[SourceUnit]:
    name, kind = _npy_main(path)
    if kind is None:
        yield SourceUnit(name, str(path), path, partial(read_npy, path, cfg))
    elif not path.with_name(f"{name}.npy").is_file():
        yield SourceUnit(name, str(path), path, partial(_raise, str(path), f"a {kind} sidecar without {name}.npy"))


# --------------------------------------------------------------------------------------------------
# csv (OpenFace style)
# --------------------------------------------------------------------------------------------------


def _csv_table(path: Path) -> tuple[list[str], np.ndarray]:
    """Stripped header names and the body as a (rows, columns) array of stripped strings."""
    try:
        with open(path, encoding="utf-8-sig", newline="") as handle:
            lines = [row for row in csv.reader(handle)]
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise SourceError(path, f"cannot read csv ({type(err).__name__}: {err})") from None
    if not lines or not any(cell.strip() for cell in lines[0]):
        raise SourceError(path, "empty file (no header row)")
    header = [cell.strip() for cell in lines[0]]
    body = []
    for lineno, row in enumerate(lines[1:], start=2):
        if not any(cell.strip() for cell in row):
            continue
        if len(row) != len(header):
            raise SourceError(path, f"line {lineno} has {len(row)} fields, the header has {len(header)}")
        body.append([cell.strip() for cell in row])
    table = np.array(body, dtype=str).reshape(len(body), len(header))
    return header, table


def _parse_columns(path: Path, names: list[str], cells: np.ndarray) -> np.ndarray:
    """Columns of strings to float64; an empty cell is NaN; the first bad cell is reported by line and column."""
    cells = np.where(cells == "", "nan", cells)
    try:
        return cells.astype(np.float64).reshape(cells.shape)
    except ValueError:
        raise _first_bad_cell(path, names, cells) from None


def _first_bad_cell(path: Path, names: list[str], cells: np.ndarray) -> SourceError:
    for col, name in enumerate(names):
        for row, cell in enumerate(cells[:, col]):
            try:
                float(cell)
            except ValueError:
                return SourceError(path, f"line {row + 2}, column '{name}': non-numeric value '{cell[:20]}'")
    return SourceError(path, "non-numeric values")


def _csv_column(header: list[str], candidates: tuple[str, ...]) -> int | None:
    lowered = [name.lower() for name in header]
    return next((lowered.index(c) for c in candidates if c in lowered), None)


def _keep_best_per_frame(key: np.ndarray, rank: np.ndarray) -> tuple[np.ndarray, int]:
    """Row indices keeping, for each key, the row of highest rank (first on ties); and how many were dropped."""
    order = np.lexsort((np.arange(len(key)), -rank, key))
    first = np.ones(len(order), dtype=bool)
    first[1:] = key[order][1:] != key[order][:-1]
    keep = np.sort(order[first])
    return keep, len(key) - len(keep)


def _csv_header(path: Path) -> list[str]:
    try:
        with open(path, encoding="utf-8-sig", newline="") as handle:
            first = next(csv.reader(handle), [])
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise SourceError(path, f"cannot read csv ({type(err).__name__}: {err})") from None
    if not any(cell.strip() for cell in first):
        raise SourceError(path, "empty file (no header row)")
    return [cell.strip() or f"Unnamed: {i}" for i, cell in enumerate(first)]  # pandas' name for a blank


def _csv_numbers(path: Path, header: list[str]) -> np.ndarray:
    """The body as float64 (rows, columns): numpy's fast parser, or on any problem the slow path that
    reads empty cells as NaN and names the first bad line and column."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # "input contained no data"
            data = np.loadtxt(path, delimiter=",", skiprows=1, ndmin=2, comments=None, encoding="utf-8-sig")
    except (ValueError, UnicodeDecodeError):
        data = None  # the slow path names the problem
    if data is not None and data.size == 0:
        return np.zeros((0, len(header)))
    if data is not None and data.shape[1] == len(header):
        return data
    header, table = _csv_table(path)
    return _parse_columns(path, header, table)


def _is_index_column(values: np.ndarray) -> bool:
    """Whole numbers rising by at least 1 from 0 or 1 (pandas' row index, possibly of a filtered frame)."""
    if not len(values):
        return True
    if not np.isfinite(values).all() or (values != np.round(values)).any() or values[0] not in (0, 1):
        return False
    return bool((np.diff(values) >= 1).all())


def _named(path: Path, header: list[str], wanted: tuple[str, ...], option: str) -> list[int]:
    missing = [name for name in wanted if name not in header]
    if missing:
        raise SourceError(path, f"{option} names column(s) {', '.join(map(repr, missing))} not in the header ({', '.join(header)})")
    return [header.index(name) for name in wanted]


def csv_feature_columns(path: Path, header: list[str], data: np.ndarray, cfg: ImportConfig) -> tuple[list[int], list[str]]:
    """Indices of the feature columns, and notes: `--columns` as given; otherwise every column but the
    frame/time/validity ones, an index column and `--drop-columns`."""
    if cfg.columns is not None:
        return _named(path, header, cfg.columns, "--columns"), []
    dropped = set(_named(path, header, cfg.drop_columns, "--drop-columns"))
    notes, cols = [], []
    for i, name in enumerate(header):
        if name.lower() in CSV_META_COLUMNS or i in dropped:
            continue
        if CSV_INDEX_NAMES.fullmatch(name):
            if _is_index_column(data[:, i]):
                notes.append(f"index column '{name}' (row numbers, as pandas writes) dropped: not a feature")
                continue
            notes.append(f"column '{name}' is named like an index but holds other values: kept as a feature (--drop-columns drops it)")
        cols.append(i)
    return cols, notes


def read_csv(path: Path, cfg: ImportConfig) -> SourceRows:
    header = _csv_header(path)
    frame_col = _csv_column(header, CSV_FRAME_COLUMNS)
    time_col = _csv_column(header, CSV_TIME_COLUMNS)
    if frame_col is None and time_col is None:
        raise SourceError(path, "no 'frame' or 'timestamp' column")
    data = _csv_numbers(path, header)
    feature_cols, column_notes = csv_feature_columns(path, header, data, cfg)
    if not feature_cols:
        raise SourceError(path, f"no feature columns (header: {', '.join(header)})")
    valid = np.ones(len(data), dtype=bool)
    rank = np.zeros(len(data))
    for col in (_csv_column(header, ("success",)), _csv_column(header, ("valid",))):
        if col is not None:
            valid &= np.nan_to_num(data[:, col]) != 0
    conf_col = _csv_column(header, ("confidence",))
    if conf_col is not None:
        confidence = np.nan_to_num(data[:, conf_col], nan=-np.inf)
        valid &= confidence >= cfg.min_confidence
        rank = np.where(np.isfinite(confidence), confidence, -1.0)
    notes = list(column_notes)
    key_col = frame_col if frame_col is not None else time_col
    can_choose = conf_col is not None or _csv_column(header, ("success",)) is not None
    keep, dropped = _keep_best_per_frame(data[:, key_col], rank + 2.0 * valid) if can_choose else (None, 0)
    if dropped:  # without success/confidence columns duplicates are an error (make_rows reports them)
        notes.append(f"{path}: {dropped} extra row(s) for frames already given (several faces?) left out, kept the most confident")
        data, valid = data[keep], valid[keep]
    rows = make_rows(
        str(path),
        data[:, feature_cols],
        data[:, frame_col] if frame_col is not None else None,
        data[:, time_col] if time_col is not None else None,
        valid,
        cfg.base,
    )
    rows.notes.extend(notes)
    rows.columns = [header[i] for i in feature_cols]
    return rows


def csv_units(path: Path, cfg: ImportConfig) -> Iterator[SourceUnit]:
    yield SourceUnit(path.stem, str(path), path, partial(read_csv, path, cfg))


# --------------------------------------------------------------------------------------------------
# hdf5
# --------------------------------------------------------------------------------------------------


def _hdf5_entries(group: h5py.Group, prefix: str = "", depth: int = 0) -> Iterator[str]:
    """Keys of units: datasets and groups at the top; a top group holding only groups is a folder of units."""
    for key, obj in group.items():
        path = f"{prefix}{key}"
        if key == EXTRAS_GROUP:
            continue
        is_container = isinstance(obj, h5py.Group) and len(obj) and all(isinstance(c, h5py.Group) for c in obj.values())
        if is_container and depth == 0 and not any(k in obj for k in VALUE_KEYS):
            yield from _hdf5_entries(obj, f"{path}/", depth + 1)
            continue
        yield path


def read_hdf5_entry(path: Path, key: str, cfg: ImportConfig) -> SourceRows:
    where = f"{path}:{key}"
    try:
        with h5py.File(path, "r") as handle:
            obj = handle[key]
            if isinstance(obj, h5py.Dataset):
                return make_rows(where, obj[...], None, None, None, cfg.base)
            arrays = {k: v[...] for k, v in obj.items() if isinstance(v, h5py.Dataset)}
    except (OSError, KeyError, TypeError) as err:
        raise SourceError(where, f"cannot read ({type(err).__name__}: {err})") from None
    return rows_from_arrays(where, arrays, cfg.base)


def hdf5_units(path: Path, cfg: ImportConfig) -> Iterator[SourceUnit]:
    try:
        with h5py.File(path, "r") as handle:
            keys = list(_hdf5_entries(handle))
    except OSError as err:
        raise SourceError(path, f"cannot open as HDF5 ({err})") from None
    for key in keys:
        yield SourceUnit(key.rsplit("/", 1)[-1], f"{path}:{key}", path, partial(read_hdf5_entry, path, key, cfg))


READERS: dict[str, Callable[[Path, ImportConfig], Iterator[SourceUnit]]] = {
    "npz": npz_units,
    "npy": npy_units,
    "csv": csv_units,
    "hdf5": hdf5_units,
}


# --------------------------------------------------------------------------------------------------
# Matching units to the manifest
# --------------------------------------------------------------------------------------------------


class TargetIndex:
    """Resolves a source unit name to a track (unit=track) or a video (unit=video) of the manifest."""

    def __init__(self, manifest: Manifest, unit: str):
        self.unit = unit
        self.tracks = {t.name: t for t in manifest.tracks}
        self.videos = manifest.videos()

    def resolve(self, name: str, where: str) -> Target:
        return self._video(name, where) if self.unit == "video" else self._track(name, where)

    def _track(self, name: str, where: str) -> Target:
        if name in self.tracks:
            track = self.tracks[name]
            return Target(unit=name, video=track.video, tracks=(name,))
        if name in self.videos:
            names = ", ".join(t.name for t in self.videos[name])
            raise SourceError(where, f"'{name}' names a video with tracks {names}: ambiguous; name the source by track or import with --unit video")
        raise SourceError(where, f"'{name}' matches no track of the manifest (no label file, test entry or video)")

    def _video(self, name: str, where: str) -> Target:
        if name in self.videos:
            tracks = self.videos[name]
            return Target(unit=name, video=tracks[0].video, tracks=tuple(t.name for t in tracks))
        if name in self.tracks:
            raise SourceError(where, f"'{name}' is a track; a --unit video store is keyed by video ('{self.tracks[name].video_stem}')")
        raise SourceError(where, f"'{name}' matches no video of the manifest (no label file or test entry for it)")


# --------------------------------------------------------------------------------------------------
# Placing rows on the time axis
# --------------------------------------------------------------------------------------------------


def place_frames(rows: SourceRows, info: VideoInfo, span: str, clock: FrameClock | None = None) -> Placed:
    """One row per frame index at that frame's time (k / fps, or the recorded presentation time of a
    variable-rate video: `clock`, as label frames); frames absent from the source are invalid."""
    index = rows.frames
    last = int(index.max()) + 1 if len(index) else 0
    first = 0 if span == "video" or not len(index) else int(index.min())
    stop = max(info.n_frames, last) if span == "video" else last
    values = np.zeros((stop - first, *rows.values.shape[1:]), dtype=rows.values.dtype)
    valid = np.zeros(stop - first, dtype=bool)
    values[index - first] = rows.values
    valid[index - first] = True if rows.valid is None else rows.valid
    times = (clock or FrameClock()).label_times(info.path.stem, stop, info.fps)[first:]
    stats = {
        "time_base": "frames",
        "first_frame": first,
        "missing_rows": int(len(valid) - len(index)),
        "rows_past_video_end": int((index >= info.n_frames).sum()),
    }
    return Placed(values, times, valid, stats)


def _check_timestamps(where: str, times: np.ndarray) -> None:
    """Timestamps that place rows: none negative, no start given twice (like a duplicate frame)."""
    starts = times[:, 0] if times.ndim == 2 else times
    if len(starts) and starts.min() < 0:
        raise SourceError(where, f"negative timestamp {float(starts.min())!r} s (times start at 0)")
    seen, counts = np.unique(starts, return_counts=True)
    if (counts > 1).any():
        first = int(np.argmax(counts > 1))
        raise SourceError(where, f"timestamp {float(seen[first])!r} s appears {int(counts[first])} times")


def place_times(rows: SourceRows, info: VideoInfo, where: str = "") -> Placed:
    """Rows as timestamped, sorted by start; (N,) starts last the median step (1/fps for one row).
    A negative or repeated start is refused (SourceError)."""
    times = rows.times
    _check_timestamps(where or str(info.path), times)
    if times.ndim == 1:
        steps = np.diff(np.unique(times))
        step = float(np.median(steps)) if len(steps) else 1.0 / info.fps
        times = np.stack([times, times + step], axis=1)
    order = np.argsort(times[:, 0], kind="stable")
    valid = np.ones(len(order), dtype=bool) if rows.valid is None else rows.valid[order]
    stats = {"time_base": "timestamps", "missing_rows": 0, "rows_past_video_end": int((times[:, 0] >= info.duration).sum())}
    return Placed(rows.values[order], times[order], valid, stats)


def _check_frame_range(where: str, index: np.ndarray, info: VideoInfo) -> None:
    """Frames a little past the end are kept (counts differ by a frame or more); far past is a wrong source."""
    limit = 2 * info.n_frames + 100
    if len(index) and int(index.max()) >= limit:
        raise SourceError(
            where, f"frame index {int(index.max())} is far past the {info.n_frames} frames of {info.path.name} (another video?)"
        )


def place_rows(where: str, rows: SourceRows, info: VideoInfo, cfg: ImportConfig, clock: FrameClock | None = None) -> Placed:
    use_frames = rows.frames is not None and cfg.fps_from_video is not False
    if use_frames:
        _check_frame_range(where, rows.frames, info)
        placed = place_frames(rows, info, cfg.span, clock)
    elif rows.times is not None:
        placed = place_times(rows, info, where)
    else:
        raise SourceError(where, "has frame indices but no timestamps, and --no-fps-from-video needs timestamps")
    _invalidate_nonfinite(placed, cfg.dtype)
    _choose_dtype(where, placed, cfg.dtype, rows.columns)
    return placed


def _invalidate_nonfinite(placed: Placed, dtype: str = "float32") -> None:
    """Rows with NaN/inf, or with values beyond the range of the widest dtype they may be stored as
    (float32 unless float64 is asked for; 1e39 would be stored as inf), are zeroed and marked invalid."""
    placed.stats["nan_rows"] = placed.stats["overflow_rows"] = 0
    if not placed.values.size:
        return
    flat = placed.values.reshape(len(placed.values), -1)
    finite = np.isfinite(flat).all(axis=1)
    limit = np.finfo(np.float64 if dtype == "float64" else np.float32).max
    with np.errstate(invalid="ignore"):
        in_range = (np.abs(np.where(np.isfinite(flat), flat, 0)) <= limit).all(axis=1)
    bad = ~finite | ~in_range
    placed.stats["nan_rows"] = int((~finite & placed.valid).sum())
    placed.stats["overflow_rows"] = int((finite & ~in_range & placed.valid).sum())
    if bad.any():
        placed.values[bad] = 0
        placed.valid &= ~bad


def _choose_dtype(where: str, placed: Placed, dtype: str, columns: list[str] | None) -> None:
    """float16 only where it keeps every column (cache/precision.py); `auto` falls back to float32."""
    if dtype == "float16":
        problems = float16_losses(placed.values, columns, placed.valid)
        if problems:
            raise SourceError(where, f"float16 would lose precision in {', '.join(problems[:5])}; import with --dtype float32 (or --dtype auto)")
    placed.dtype, problems = choose_dtype(dtype, placed.values, columns, placed.valid)
    if problems:
        placed.stats["float32_because"] = problems
    if placed.dtype == "float32" and placed.values.dtype == np.float64:
        inexact = float32_inexact_integers(placed.values, columns, placed.valid)
        if inexact and dtype == "float32":
            raise SourceError(where, f"float32 cannot hold {', '.join(inexact[:5])} exactly; import with --dtype float64 (or --dtype auto)")
        if inexact:
            placed.dtype = "float64"
            placed.stats["float64_because"] = inexact


def float32_inexact_integers(values: np.ndarray, columns: list[str] | None, valid: np.ndarray) -> list[str]:
    """Columns of whole numbers (valid rows) that float32 would change (16,777,217 → 16,777,216)."""
    flat = values.reshape(len(values), -1)[valid]
    if not len(flat):
        return []
    whole = (flat == np.round(flat)).all(axis=0)
    changed = (flat.astype(np.float32).astype(np.float64) != flat).any(axis=0)
    return [
        (f"'{columns[c]}'" if columns is not None and c < len(columns) else f"column {c}")
        + f" (whole numbers up to {np.abs(flat[:, c]).max():.0f})"
        for c in np.flatnonzero(whole & changed)
    ]


# --------------------------------------------------------------------------------------------------
# The import
# --------------------------------------------------------------------------------------------------


@dataclass
class _Run:
    """State of one import: the store (made on the first write), the manifest index, probed videos,
    seen units and the dimension."""

    path: Path
    meta: FeatureMeta
    index: TargetIndex
    cfg: ImportConfig
    digests: dict[Path, str]
    report: ImportReport
    probes: dict[Path, VideoInfo] = field(default_factory=dict)
    seen: dict[str, str] = field(default_factory=dict)
    dim: tuple[tuple[int, ...], str] | None = None
    columns: tuple[list[str] | None, str] | None = None
    clock: FrameClock = field(default_factory=FrameClock)  # the cache's frame-time record (variable-rate videos)
    _store: FeatureStore | None = None

    def store(self) -> FeatureStore:
        """Open the store; an existing one is checked against the fingerprint (or moved aside with `replace`)."""
        if self._store is None:
            on_mismatch = "new" if self.cfg.replace else "refuse"
            self._store = FeatureStore.create_or_open(self.path, self.meta, on_mismatch=on_mismatch)
        return self._store

    def already_complete(self, target: Target) -> bool:
        """The unit is complete and intact in this (same-fingerprint, so same-sources) store, made for the
        same video: re-importing skips it, so after `verify` only the damaged units are redone."""
        if self._store is None:  # no store yet: nothing is complete
            return False
        return self._store.is_complete(target.unit, SourceStat.of(target.video), check_chunks=True)

    def probe(self, video: Path, where: str) -> VideoInfo:
        if video not in self.probes:
            try:
                self.probes[video] = probe_video(video)
            except MediaError as err:
                raise SourceError(where, f"its video cannot be probed ({err})") from None
        return self.probes[video]

    def check_dim(self, where: str, shape: tuple[int, ...]) -> None:
        if self.dim is None:
            self.dim = (shape, where)
        elif shape != self.dim[0]:
            raise SourceError(where, f"feature dimension {shape} differs from {self.dim[0]} of {self.dim[1]}")

    def check_columns(self, where: str, columns: list[str] | None) -> None:
        """Every unit holds the same named columns (a store never mixes two layouts of the same width)."""
        if self.columns is None:
            self.columns = (columns, where)
        elif columns != self.columns[0]:
            raise SourceError(where, f"columns {columns} differ from {self.columns[0]} of {self.columns[1]}")

    def record_columns(self) -> None:
        """The column names in the store's root attributes (`columns`), once, after the first unit."""
        names = self.columns[0] if self.columns else None
        if names is not None and self._store is not None:
            root = open_group(self._store.path, mode="a")
            if root.attrs.get("columns") != names:
                root.attrs["columns"] = names


def _unit_attrs(
    run: _Run, unit: SourceUnit, target: Target, info: VideoInfo, rows: SourceRows, placed: Placed
) -> dict[str, Any]:
    return {
        "source": asdict(SourceStat.of(target.video)),
        "fps": info.fps,
        "n_frames": info.n_frames,
        "tracks": list(target.tracks),
        "imported_from": unit.where,
        "imported_sha256": run.digests.get(unit.path, ""),
        "format": run.cfg.fmt,
        "frame_index_base": run.cfg.base,
        **({"columns": rows.columns} if rows.columns is not None else {}),
        **placed.stats,
    }


def _check_unit_name(name: str, where: str) -> None:
    """SourceError at `where` unless `name` can be a store group (cache.names.check_name's rule and line)."""
    try:
        check_name(name, "unit name")
    except UnsafeName as err:
        raise SourceError(where, str(err)) from None


def import_unit(run: _Run, unit: SourceUnit) -> None:
    """Import one source unit, or record one line saying why not."""
    try:
        _check_unit_name(unit.name, unit.where)
        target = run.index.resolve(unit.name, unit.where)
        _check_unit_name(target.unit, unit.where)  # a manifest name (a label file's stem) that cannot be a group
        if target.unit in run.seen:
            raise SourceError(unit.where, f"unit '{target.unit}' was already imported from {run.seen[target.unit]}")
        if run.already_complete(target):
            run.seen[target.unit] = unit.where
            run.report.complete.append(target.unit)
            return
        rows = unit.load()
        info = run.probe(target.video, unit.where)
        placed = place_rows(unit.where, rows, info, run.cfg, run.clock)
        run.check_dim(unit.where, placed.values.shape[1:])
        run.check_columns(unit.where, rows.columns)
        attrs = _unit_attrs(run, unit, target, info, rows, placed)
        run.store().write(target.unit, placed.values, placed.times, placed.valid, attrs, placed.dtype)
        run.record_columns()
    except (SourceError, DamagedGroup) as err:  # a damaged existing group: one line (it names `verify`)
        run.report.failed.append(str(err))
        log.debug("%s", err)
        return
    run.seen[target.unit] = unit.where
    run.report.imported.append(target.unit)
    run.report.notes.extend(rows.notes)
    if placed.stats.get("float32_because"):
        run.report.notes.append(f"{unit.where}: stored as float32, float16 would lose {', '.join(placed.stats['float32_because'][:5])}")
    if placed.stats.get("float64_because"):
        run.report.notes.append(f"{unit.where}: stored as float64, float32 would change {', '.join(placed.stats['float64_because'][:5])}")
    if placed.stats["nan_rows"]:
        run.report.notes.append(f"{unit.where}: {placed.stats['nan_rows']} row(s) with NaN/inf marked invalid")
    if placed.stats["overflow_rows"]:
        run.report.notes.append(f"{unit.where}: {placed.stats['overflow_rows']} row(s) with values beyond float32's range marked invalid")
    if placed.stats["rows_past_video_end"]:
        run.report.notes.append(
            f"{unit.where}: {placed.stats['rows_past_video_end']} row(s) past the end of {target.video.name} ({info.n_frames} frames) kept"
        )


def import_meta(name: str, source: Path, files: list[Path], cfg: ImportConfig) -> tuple[FeatureMeta, dict[Path, str]]:
    described = describe_files(files)
    meta = FeatureMeta(
        name=name,
        kind="frame",
        unit=cfg.unit,
        model_ref=f"import:{cfg.fmt}:{Path(source).resolve()}",
        config={**cfg.to_config(), "files": described},
        version=f"import-{IMPORTER_VERSION}",
    )
    return meta, {p: d["sha256"] for p, d in zip(files, described)}


def import_features(
    source: Path,
    name: str,
    cache_dir: Path,
    cfg: ImportConfig,
    manifest: Manifest | Callable[[], Manifest],
) -> ImportReport:
    """Import `source` into `<cache_dir>/<name>.zarr`. Per-unit failures are in the report; a source that
    cannot be used at all raises SourceError, and an existing store of another fingerprint raises
    FingerprintMismatch (unless `cfg.replace`). The store is created on the first unit written, so an import
    where everything fails leaves no empty store. `manifest` may be a callable, called only when needed."""
    check_name(name, "feature name")
    files = find_source_files(source, cfg.fmt)
    if cfg.fmt == "hdf5" and len(files) == 1 and is_affcache_export(files[0]):
        return restore_export(files[0], name, cache_dir, cfg.replace)
    meta, digests = import_meta(name, source, files, cfg)
    path = store_path(cache_dir, name)
    report = ImportReport(store=path, fingerprint=meta.fingerprint)
    manifest = manifest() if callable(manifest) else manifest
    run = _Run(path=path, meta=meta, index=TargetIndex(manifest, cfg.unit), cfg=cfg, digests=digests, report=report,
               clock=FrameClock.open(cache_dir))
    if store_exists(path):
        run.store()  # refuse a store of another fingerprint before any work; nothing is created otherwise
    for path in files:
        try:
            units = list(READERS[cfg.fmt](path, cfg))
        except SourceError as err:
            report.failed.append(str(err))
            log.debug("%s", err)
            continue
        for unit in units:
            import_unit(run, unit)
    report.notes = _counted(report.notes)
    for note in report.notes:
        log.debug("%s", note)
    return report


def _counted(notes: list[str]) -> list[str]:
    """Notes said once with how many units said them (an index column in 594 files is one note)."""
    counts = Counter(notes)
    return [f"{note} ({counts[note]} units)" if counts[note] > 1 else note for note in dict.fromkeys(notes)]


# --------------------------------------------------------------------------------------------------
# Restoring an affcache export
# --------------------------------------------------------------------------------------------------


def _h5_keys(group: h5py.Group) -> list[str]:
    """The keys as a list. Never write zarr inside a loop over an h5py view: h5py's items()/keys()
    generators hold its global lock while they yield, and the garbage collector freeing an h5py object
    on zarr's I/O thread then waits for that lock forever (h5py#2019)."""
    return list(group.keys())


def _restore_group(store: FeatureStore, path: Path, key: str, group: h5py.Group) -> None:
    _check_unit_name(key, f"{path}:{key}")
    try:
        values, times, valid = (group[k][...] for k in ("values", "times", "valid"))
    except KeyError as err:
        raise SourceError(f"{path}:{key}", f"not an affcache unit group ({err})") from None
    attrs = {k: v for k, v in read_attrs(group).items() if k not in ("complete", "rows", "chunks")}
    store.write(key, values, times, valid, attrs, dtype=str(values.dtype))


def _restore_extras(store: FeatureStore, handle: h5py.File) -> None:
    if EXTRAS_GROUP not in handle:
        return
    extras = handle[EXTRAS_GROUP]
    for key in _h5_keys(extras):
        dataset = extras[key]
        store.put_extra(key, dataset[...], read_attrs(dataset))


def restore_export(path: Path, name: str, cache_dir: Path, replace: bool = False) -> ImportReport:
    """Rebuild a store from an `export-features` file: same metadata, fingerprint, units, rows and attributes."""
    with h5py.File(path, "r") as handle:
        root_attrs = {k: v for k, v in read_attrs(handle).items() if k != FORMAT_ATTR}
        meta = FeatureMeta.from_attrs(root_attrs)
        if meta.fingerprint != root_attrs.get("fingerprint"):
            raise SourceError(path, f"fingerprint {root_attrs.get('fingerprint')} does not match its metadata ({meta.fingerprint})")
        if meta.name != name:
            log.info("%s: keeping the exported metadata (feature '%s', fingerprint %s) under the name %s", path, meta.name, meta.fingerprint, name)
        store = FeatureStore.create_or_open(store_path(cache_dir, name), meta, on_mismatch="new" if replace else "refuse")
        zarr.open_group(str(store.path), mode="a").attrs.update(root_attrs)  # any root attributes beyond the metadata
        report = ImportReport(store=store.path, fingerprint=meta.fingerprint)
        for key in _h5_keys(handle):
            group = handle[key]
            if key == EXTRAS_GROUP or not isinstance(group, h5py.Group):
                continue
            try:
                _restore_group(store, path, key, group)
            except SourceError as err:
                report.failed.append(str(err))
                log.debug("%s", err)
                continue
            report.imported.append(key)
        _restore_extras(store, handle)
    return report
