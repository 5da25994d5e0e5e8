"""Aligned views: each feature aligned once onto a track's label frames and kept on disk.

Aligning a store onto label frames (an overlap matrix per track, in float64) costs far more than a
training step on a GPU. A view does it once per (track, feature) and keeps the result as two `.npy`
files, float16 values (T, D) contiguous and a (T,) mask, so a training batch is a few contiguous reads.

Layout: `VIEWS_DIR/<feature>/<store fingerprint>-<fill>/<track>.<key>.npy` and `….mask.npy`, where
`key` hashes what the aligned rows depend on beyond the store's fingerprint: the group's identity
(its `content_digest`, a hash of the rows written, so a group re-extracted with other rows gets a new key), the
label-frame times (the fps table, the frame count) and the view format. A stale file is never read:
its key no longer matches, and it is replaced when the track is next aligned.

Views are per track, so every split, fold and run over the same stores shares them. A file is
written under a temporary name and renamed into place (values last, so the values file's presence
means the set is complete); a process killed while writing leaves only a temporary file, which the
next build of that feature folder removes. Two processes aligning the same track write identical
files; the last rename wins.

Each view carries a sidecar `<track>.<key>.sum.json` written with it (before the values): the rows, width,
dtype and a crc32 of the values' data bytes and of the mask's. A dataset checks a view the first time it
uses it in a process (`FeatureViews.check`: one sequential read of the files); a view that fails (data
zeroed or overwritten, a mask swapped, cut or of another length, no sidecar) is removed with one warning
line and aligned again from the store. `pipeline.py verify` checks every view the same way.

Reads go through `os.pread` on a kept file descriptor rather than a memory map, so what a run reads
counts against the page cache, not the process's memory: RSS stays flat whatever the split's size.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import threading
import zlib
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from cache.location import Location, is_url

if TYPE_CHECKING:  # annotations only: this module stays free of the loaders above it
    from cache.manifest import Track
    from train.config import DataConfig
    from train.data.sources import FeatureSource

log = logging.getLogger(__name__)

VIEW_FORMAT = "2"  # 2: a checksum sidecar beside each view
_CHUNK = 16 * 2**20  # bytes read at a time when checking a view
_TMP = re.compile(r"\.tmp-(\d+)-")


def default_views_dir(cache_dir: Location) -> Path:
    """`CACHE_DIR/_views` for a local cache; `artifacts/views` when the cache is an fsspec URL."""
    if is_url(str(cache_dir)):
        return Path("artifacts/views")
    return Path(str(cache_dir)) / "_views"


def _fill_tag(fill: float | None) -> str:
    return "nofill" if fill is None else f"fill{fill:g}"


def track_key(group_attrs: dict, targets: np.ndarray) -> str:
    """What a track's aligned rows depend on besides the store fingerprint and the fill."""
    identity = {
        "format": VIEW_FORMAT,
        "content": group_attrs.get("content_digest"),
        # groups written before `content_digest` existed: their recorded identity and size
        "source": group_attrs.get("source"),
        "rows": group_attrs.get("rows"),
        "frames": len(targets),
        "targets": hashlib.sha256(np.ascontiguousarray(targets, dtype=np.float64).tobytes()).hexdigest()[:16],
    }
    return hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class ViewFile:
    """One (track, feature) view on disk."""

    track: str
    key: str
    values: Path
    mask: Path

    @property
    def sums(self) -> Path:
        """The checksum sidecar written with the view."""
        return self.values.with_name(self.values.name[: -len(".npy")] + ".sum.json")

    def exists(self) -> bool:
        return self.values.is_file() and self.mask.is_file()

    def paths(self) -> tuple[Path, Path, Path]:
        return self.values, self.mask, self.sums


class FeatureViews:
    """The views of one feature store (one fingerprint, one fill setting) in a views folder."""

    def __init__(self, views_dir: Path, feature: str, fingerprint: str, fill: float | None, dim: int):
        self.folder = Path(views_dir) / feature / f"{fingerprint}-{_fill_tag(fill)}"
        self.feature, self.dim = feature, dim
        self._fds: OrderedDict[Path, tuple[int, int, int, np.dtype]] = OrderedDict()  # path -> (fd, offset, rows, dtype)
        self._lock = threading.Lock()
        self._cleaned = False

    def file(self, track: str, key: str) -> ViewFile:
        return ViewFile(track=track, key=key, values=self.folder / f"{track}.{key}.npy",
                        mask=self.folder / f"{track}.{key}.mask.npy")

    # ---------------------------------------------------------------- writing
    def write(self, track: str, key: str, values: np.ndarray, mask: np.ndarray) -> ViewFile:
        """Write one track's aligned rows atomically and drop the track's files of other keys."""
        self.folder.mkdir(parents=True, exist_ok=True)
        self._remove_stale_tmp()
        target = self.file(track, key)
        tag = f".tmp-{os.getpid()}-{threading.get_ident()}"
        tmp_values, tmp_mask, tmp_sums = (p.with_name(p.name + tag) for p in target.paths())
        dtype = np.float32 if values.dtype == np.float32 else np.float16  # the store's precision
        values = np.ascontiguousarray(values, dtype=dtype).reshape(len(values), self.dim)
        mask = np.ascontiguousarray(mask, dtype=bool).reshape(-1)
        for path, array in ((tmp_mask, mask), (tmp_values, values)):
            with open(path, "wb") as handle:
                np.save(handle, array, allow_pickle=False)
        sums = {"rows": len(values), "dim": self.dim, "dtype": np.dtype(dtype).name,
                "values_crc32": zlib.crc32(values), "mask_crc32": zlib.crc32(mask)}
        tmp_sums.write_text(json.dumps(sums, sort_keys=True) + "\n", encoding="utf-8")
        os.replace(tmp_mask, target.mask)
        os.replace(tmp_sums, target.sums)
        os.replace(tmp_values, target.values)  # last: the values file means the set is complete
        own = re.compile(rf"^{re.escape(track)}\.([0-9a-f]{{16}})(\.mask\.npy|\.npy|\.sum\.json)$")
        for old in self.folder.glob(f"{glob_escape(track)}.*"):
            match = own.match(old.name)
            if match and match.group(1) != key:
                old.unlink(missing_ok=True)
        return target

    def _remove_stale_tmp(self) -> None:
        """Temporary files left by killed writers (their process is gone)."""
        if self._cleaned:
            return
        self._cleaned = True
        for path in self.folder.glob("*.tmp-*"):
            match = _TMP.search(path.name)
            if match and not _pid_alive(int(match.group(1))):
                path.unlink(missing_ok=True)

    # ---------------------------------------------------------------- checking
    def check(self, view: ViewFile, frames: int) -> str | None:
        """None when the view on disk is what was written for `frames` label frames; else what is wrong
        (one short phrase). Reads both files once, sequentially."""
        return view_problem(view, frames, self.dim)

    def discard(self, view: ViewFile) -> None:
        """Remove a view's files (and forget its open descriptor) so that it is aligned again."""
        with self._lock:
            entry = self._fds.pop(view.values, None)
            if entry is not None:
                os.close(entry[0])
        for path in view.paths():
            path.unlink(missing_ok=True)

    # ---------------------------------------------------------------- reading
    def mask(self, view: ViewFile) -> np.ndarray:
        mask = np.load(view.mask, allow_pickle=False)
        if mask.dtype != bool or mask.ndim != 1:
            raise OSError(f"{view.mask}: not a (T,) bool mask; delete it to rebuild")
        return mask

    def read(self, view: ViewFile, start: int = 0, n: int | None = None) -> np.ndarray:
        """Rows [start, start + n) of the values (the whole track when n is None) by one pread."""
        with self._lock:  # an fd evicted by another thread is never read after its close
            fd, offset, rows, dtype = self._open(view.values)
            row_bytes = dtype.itemsize * self.dim
            n = rows - start if n is None else n
            buf = os.pread(fd, n * row_bytes, offset + start * row_bytes)
        if len(buf) != n * row_bytes:
            raise OSError(f"{view.values}: short read ({len(buf)} of {n * row_bytes} bytes); delete it to rebuild")
        return np.frombuffer(buf, dtype=dtype).reshape(n, self.dim)

    def read_into_batch(self, view: ViewFile, start: int, batch: np.ndarray, b: int, n: int) -> np.ndarray:
        """Rows [start, start + n) into `batch[b, :n]` of a (B, L, D) batch buffer: one preadv under one lock, no
        copy, when the buffer has the view's dtype. Returns the buffer, made float32 first (a copy) when the view
        is float32 and the buffer float16."""
        with self._lock:
            fd, offset, rows, dtype = self._open(view.values)
            if dtype == np.float32 and batch.dtype != np.float32:
                batch = widen_buffer(batch)
            out = batch[b, :n]
            if out.dtype == dtype and out.flags.c_contiguous and out.shape[1:] == (self.dim,):
                row_bytes = dtype.itemsize * self.dim
                got = os.preadv(fd, [memoryview(out).cast("B")], offset + start * row_bytes)
                if got != n * row_bytes:
                    raise OSError(f"{view.values}: short read ({got} of {n * row_bytes} bytes); delete it to rebuild")
                return batch
        out[...] = self.read(view, start, n)
        return batch

    def _open(self, path: Path) -> tuple[int, int, int, np.dtype]:
        """(fd, offset of the data, rows, dtype) of a values file; the caller holds the lock."""
        if path in self._fds:
            self._fds.move_to_end(path)
            return self._fds[path]
        with open(path, "rb") as f:
            version = np.lib.format.read_magic(f)
            reader = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            shape, fortran, dtype = reader(f)
            offset = f.tell()
        if dtype not in (np.float16, np.float32) or fortran or len(shape) != 2 or shape[1] != self.dim:
            raise OSError(f"{path}: not a float (T, {self.dim}) view; delete it to rebuild")
        self._fds[path] = (os.open(path, os.O_RDONLY), offset, int(shape[0]), np.dtype(dtype))
        while len(self._fds) > 256:  # a bounded number of open files
            _, (old_fd, *_) = self._fds.popitem(last=False)
            os.close(old_fd)
        return self._fds[path]

    def close(self) -> None:
        with self._lock:
            for fd, *_ in self._fds.values():
                os.close(fd)
            self._fds.clear()


def widen_buffer(batch: np.ndarray) -> np.ndarray:
    """A float16 batch buffer as float32 (once per batch, when a window brings a group kept wider)."""
    return batch.astype(np.float32)


def view_problem(view: ViewFile, frames: int | None = None, dim: int | None = None) -> str | None:
    """What is wrong with a view against its checksum sidecar (and, when given, the frames and width it
    must have); None when intact."""
    try:
        sums = json.loads(view.sums.read_text(encoding="utf-8"))
        rows, width, crc_values, crc_mask = (int(sums[k]) for k in ("rows", "dim", "values_crc32", "mask_crc32"))
    except FileNotFoundError:
        return "no checksum sidecar"
    except (OSError, ValueError, KeyError, TypeError) as err:
        return f"unreadable checksum sidecar ({type(err).__name__})"
    if (frames is not None and rows != frames) or (dim is not None and width != dim):
        return f"recorded for {rows} frames x {width}, the track has {frames} x {dim}"
    try:
        values_problem = _data_problem(view.values, (rows, width), crc_values, ("float16", "float32"))
        mask_problem = _data_problem(view.mask, (rows,), crc_mask, ("bool",))
    except OSError as err:
        return f"unreadable ({err.strerror or type(err).__name__})"
    if values_problem:
        return f"values {values_problem}"
    if mask_problem:
        return f"mask {mask_problem}"
    return None


@dataclass
class ViewsCheck:
    """`verify_views`: views checked, and (file, problem) of each that failed."""

    checked: int = 0
    damaged: list[tuple[str, str]] = field(default_factory=list)
    removed: int = 0


_VALUES = re.compile(r"^(?P<track>.+)\.(?P<key>[0-9a-f]{16})\.npy$")


def verify_views(views_dir: Path, dry_run: bool = False) -> ViewsCheck:
    """Check every view under `views_dir` against its sidecar (`pipeline.py verify`); a damaged one is
    removed unless `dry_run`, and the next run that needs it aligns it again from the store."""
    result = ViewsCheck()
    for values in sorted(Path(views_dir).rglob("*.npy")) if Path(views_dir).is_dir() else []:
        match = _VALUES.match(values.name)
        if match is None or values.name.endswith(".mask.npy"):
            continue
        view = ViewFile(match["track"], match["key"], values, values.with_name(values.name[: -len(".npy")] + ".mask.npy"))
        result.checked += 1
        problem = "mask file missing" if not view.mask.is_file() else view_problem(view)
        if problem is None:
            continue
        result.damaged.append((str(values.relative_to(views_dir)), problem))
        if not dry_run:
            for path in view.paths():
                path.unlink(missing_ok=True)
            result.removed += 1
    return result


def _data_problem(path: Path, shape: tuple[int, ...], crc: int, dtypes: tuple[str, ...]) -> str | None:
    """What is wrong with an .npy file against its recorded shape and crc32 of the data bytes (None: intact)."""
    with open(path, "rb") as f:
        try:
            version = np.lib.format.read_magic(f)
            reader = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            got_shape, fortran, dtype = reader(f)
        except ValueError:
            return "header unreadable"
        if tuple(got_shape) != shape or fortran or np.dtype(dtype).name not in dtypes:
            return f"of shape {tuple(got_shape)} {np.dtype(dtype).name}, recorded {shape}"
        expected = int(np.prod(shape)) * np.dtype(dtype).itemsize
        got, size = 0, 0
        while chunk := f.read(_CHUNK):
            got = zlib.crc32(chunk, got)
            size += len(chunk)
    if size != expected:
        return f"cut or padded ({size} of {expected} data bytes)"
    if got != crc:
        return "checksum differs from the one written (overwritten)"
    return None


def glob_escape(text: str) -> str:
    return re.sub(r"([*?\[])", r"[\1]", text)


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def views_size(views_dir: Path) -> int:
    """Bytes on disk under a views folder."""
    return sum(p.stat().st_size for p in Path(views_dir).rglob("*.npy") if p.is_file())


def fits_on_disk(views_dir: Path, needed_bytes: int, margin: float = 1.2) -> bool:
    """Whether `needed_bytes` (with a margin) fit in the free space where the views go."""
    probe = Path(views_dir)
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    return shutil.disk_usage(probe).free > needed_bytes * margin


def views_dir_for(data: DataConfig, tracks: Sequence[Track], sources: Mapping[str, FeatureSource]) -> Path | None:
    """Where a dataset's aligned views go, or None for the lazy path: `data.views` off, or the views would
    not fit on the disk (then the run aligns in RAM, as it says)."""
    if not data.views:
        return None
    views_dir = Path(data.views_dir) if data.views_dir else default_views_dir(data.cache_dir)
    frames = sum(len(t.labels) if t.labels is not None else int(t.n_frames or 0) for t in tracks)
    needed = frames * sum(2 * s.dim + 1 for s in sources.values())
    if not fits_on_disk(views_dir, needed):
        log.warning(
            "aligned views of %d frames need about %.1f GiB, more than is free under %s: aligning in RAM instead "
            "(data.views_dir=… puts them elsewhere)", frames, needed / 2**30, views_dir,
        )
        return None
    return views_dir


