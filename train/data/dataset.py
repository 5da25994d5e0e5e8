"""Windows over cached features aligned onto label frames.

Label frame k of a track is the k-th frame its video presents: [k/fps, (k+1)/fps) with the container fps,
or, for a variable-rate video, the presentation times recorded at extraction (`cache.frametimes`). Each
feature is aligned onto those frames by `cache.align.align_to_frames` when a track is first needed (in
the store's precision). A dataset with a `standardizer` (train/data/standardize.py) does not standardize in
NumPy: each batch carries the statistics and `train.data.tensors.to_tensors` applies them as one tensor op on
the whole batch, on the device (so a batch from the views is a few reads and nothing else).

Two data paths give the same batches:
- aligned views (`views_dir` set, the default in training): each (track, feature) is aligned once and
  kept on disk (`train/data/views.py`); a batch is then a few contiguous reads, whatever the run;
- the lazy path (no `views_dir`): aligned float16 (T, D) arrays are kept in an LRU bounded in bytes
  (`cache_mb`). Training order shuffles tracks, then windows within blocks of a few tracks, so each
  track is aligned about once per epoch and the LRU holds a block (plus what the prefetcher aligns
  ahead), never the split.

RAM: at most `cache_mb` (default 1 GiB) of aligned tracks (tracks whose views are not yet written pass
through it), plus the batches in the prefetch queue (8 × 400 × D × 2 bytes each, e.g. 10 MB for
D = 1536), one raw group being aligned, and the views' masks (one byte per frame and feature).
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from cache.align import align_to_frames
from cache.frametimes import FrameClock
from cache.location import parent
from cache.manifest import Track
from cache.media import MediaError, VideoInfo, probe_video
from train.data.levels import register_level
from train.data.sources import FeatureSource
from train.data.views import FeatureViews, ViewFile, track_key, widen_buffer

if TYPE_CHECKING:
    from train.data.standardize import Standardizer

log = logging.getLogger(__name__)

ALIGN_BLOCK_BYTES = 32 * 2**20


def window_starts(n_frames: int, window: int, stride: int) -> list[int]:
    """Starts of windows of `window` frames every `stride` frames, plus one aligned to the end."""
    if n_frames <= window:
        return [0]
    starts = list(range(0, n_frames - window + 1, stride))
    if starts[-1] + window < n_frames:
        starts.append(n_frames - window)
    return starts


@dataclass
class AlignedTrack:
    """One track's features on its label frames."""

    values: dict[str, np.ndarray]  # (T, D) float16 (float32 for a group kept wider), not standardized
    masks: dict[str, np.ndarray]  # (T,) bool: the feature has a finite value here
    labels: np.ndarray  # (T, 2) float32 (zeros where invalid / unknown)
    label_valid: np.ndarray  # (T,) bool

    @property
    def nbytes(self) -> int:
        return sum(v.nbytes for v in self.values.values()) + self.labels.nbytes + 8 * len(self.labels)


@dataclass
class Batch:
    """A batch of windows as numpy arrays; `pad` is True on real frames."""

    features: dict[str, np.ndarray]  # (B, L, D) float16 (float32 when a window's group is kept wider), raw
    masks: dict[str, np.ndarray]  # (B, L) bool
    pad: np.ndarray  # (B, L) bool
    labels: np.ndarray  # (B, L, 2) float32
    label_mask: np.ndarray  # (B, L) bool: valid label on a real frame
    track: np.ndarray  # (B,) int: index into the dataset's tracks
    start: np.ndarray  # (B,) int
    length: np.ndarray  # (B,) int
    standardizer: "Standardizer | None" = None  # applied to `features` by to_tensors (train/data/tensors.py)


@dataclass
class DatasetStats:
    nonfinite: dict[str, int] = field(default_factory=dict)  # aligned frames masked for NaN/inf
    nonfinite_rows: dict[str, int] = field(default_factory=dict)  # stored rows marked valid but NaN/inf (masked)
    missing_groups: dict[str, int] = field(default_factory=dict)  # tracks with no group in a store
    aligned_tracks: int = 0  # alignments done (cache misses)


@register_level
class TrackDataset:
    """Tracks of one split, their frames, windows and (lazily) aligned features."""

    level = "frame"  # what windows run over (the `level` of train/data/build.py's build_dataset)

    def window_starts(self, n: int, window: int, stride: int, ti: int = 0) -> list[int]:
        """Window starts over track `ti`'s `n` positions (a level may plan its own grid)."""
        return window_starts(n, window, stride)

    def window_length(self, ti: int, start: int) -> int:
        """Positions of the window of track `ti` starting at `start` (a level may size each window)."""
        return min(self.window, int(self.n_positions[ti]) - start)

    def __init__(
        self,
        tracks: Sequence[Track],
        sources: Mapping[str, FeatureSource],
        window: int = 400,
        stride: int = 150,
        fps: Mapping[str, float] | None = None,
        cache_mb: float = 1024.0,
        align_workers: int = 2,
        views_dir: Path | None = None,
        standardizer: "Standardizer | None" = None,
        clock: FrameClock | None = None,
    ):
        self.tracks = list(tracks)
        self.standardizer = standardizer
        self.sources = dict(sources)
        if clock is None:  # the frame-time record of the cache the features come from
            first = next(iter(self.sources.values()), None)
            clock = FrameClock.open(parent(first.store.path) if first is not None else None)
        self.clock = clock
        self.window, self.stride = window, stride
        self.cache_bytes = int(cache_mb * 2**20)
        self.stats = DatasetStats(
            nonfinite={n: 0 for n in self.sources}, missing_groups={n: 0 for n in self.sources},
            nonfinite_rows={n: 0 for n in self.sources},
        )
        self._fps_override = dict(fps or {})
        self._probe_cache: dict[Path, object] = {}
        self.unreadable = self._leave_out_unreadable()  # track -> why its video cannot be read
        self.fps = np.array([self._track_fps(t) for t in self.tracks], dtype=np.float64)
        self.n_frames = np.array([self._track_frames(t) for t in self.tracks], dtype=np.int64)
        self._units = {n: set(s.store.units()) for n, s in self.sources.items()}
        self.missing_groups: dict[str, list[str]] = {}  # feature -> tracks with no complete group
        for name, source in self.sources.items():
            missing = [t.name for t in self.tracks if source.group_for(t) not in self._units[name]]
            self.missing_groups[name] = missing
            self.stats.missing_groups[name] = len(missing)
            if missing:
                log.warning(
                    "feature %s: %d of %d tracks have no complete group (masked), e.g. %s",
                    name, len(missing), len(self.tracks), ", ".join(missing[:3]),
                )
        # positions a window runs over: label frames here, segments in train.data.segments.SegmentDataset
        self.n_positions = self._positions()
        self.windows: list[tuple[int, int]] = []
        self.track_windows: list[list[int]] = []
        for ti, n in enumerate(self.n_positions):
            ids = []
            for start in self.window_starts(int(n), window, stride, ti) if n > 0 else []:
                ids.append(len(self.windows))
                self.windows.append((ti, start))
            self.track_windows.append(ids)
        self.views: dict[str, FeatureViews] = {}
        self._view_files: dict[str, list[ViewFile | None]] = {}
        self._view_masks: dict[tuple[str, int], np.ndarray] = {}
        self._views_ready: set[int] = set()
        self._views_checked: set[tuple[str, int]] = set()  # (feature, track) views found intact in this process
        if views_dir is not None:
            self._open_views(Path(views_dir))
        self._lru: OrderedDict[int, AlignedTrack] = OrderedDict()
        self._lru_bytes = 0
        self._inflight: dict[int, Future] = {}
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(max_workers=max(1, align_workers), thread_name_prefix="align")

    @classmethod
    def build(cls, tracks: Sequence[Track], sources: Mapping[str, FeatureSource], window: int, stride: int, *,
              views_dir: Path | None = None, window_filter: Mapping[str, float] | None = None, **kwargs) -> "TrackDataset":
        """The dataset of this level from `build_dataset`'s options (label frames: aligned views when asked)."""
        return cls(tracks, sources, window, stride, views_dir=views_dir, **kwargs)

    # ---------------------------------------------------------------- frames and fps
    def _leave_out_unreadable(self) -> dict[str, str]:
        """Drop the tracks whose video cannot be probed (all of them listed in one warning) so that one bad
        file does not stop a run over hundreds; a split left with no track is an error."""
        unreadable: dict[str, str] = {}
        mismatched = 0
        for track in self.tracks:
            if track.name in self._fps_override and (track.labels is not None or track.n_frames):
                continue
            try:
                info = self._probe(track)
            except MediaError as err:
                unreadable[track.name] = str(err)
                continue
            mismatched += track.labels is not None and len(track.labels) != info.n_frames
        if mismatched:
            log.info("%d track(s) have a label count that differs from their video's frame count "
                     "(aligned by time; `status --verbose` lists them)", mismatched)
        if not unreadable:
            return unreadable
        reasons = dict.fromkeys(unreadable.values())
        log.warning(
            "%d track(s) left out, their video cannot be read: %s (%s)", len(unreadable), ", ".join(unreadable),
            "; ".join(reasons),
        )
        self.tracks = [t for t in self.tracks if t.name not in unreadable]
        if not self.tracks:
            raise MediaError(f"no track left: every video of the split cannot be read ({'; '.join(reasons)})")
        return unreadable

    def video_info(self, track: Track) -> VideoInfo:
        """The container facts of a track's video (probed once; MediaError when it cannot be read)."""
        return self._probe(track)

    def _probe(self, track: Track) -> VideoInfo:
        if track.video not in self._probe_cache:
            self._probe_cache[track.video] = probe_video(track.video)
        return self._probe_cache[track.video]

    def _track_fps(self, track: Track) -> float:
        if track.name in self._fps_override:
            return float(self._fps_override[track.name])
        return float(self._probe(track).fps)

    def _track_frames(self, track: Track) -> int:
        if track.labels is not None:
            return len(track.labels)
        if track.n_frames:
            return int(track.n_frames)
        return int(self._probe(track).n_frames)

    def _positions(self) -> np.ndarray:
        """(tracks,) sequence length per track in the unit windows are cut in (label frames)."""
        return self.n_frames

    def to_frames(self, ti: int, values: np.ndarray, present: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per-position values (and where any input is present) as per-label-frame ones (identity here)."""
        return values, present

    @property
    def feature_dims(self) -> dict[str, int]:
        return {n: s.dim for n, s in self.sources.items()}

    @property
    def has_labels(self) -> bool:
        return all(t.labels is not None for t in self.tracks)

    def __len__(self) -> int:
        return len(self.windows)

    # ---------------------------------------------------------------- aligned views
    def _open_views(self, views_dir: Path) -> None:
        """Name each (feature, track)'s view file; the ones not on disk yet are written on first use."""
        for name, source in self.sources.items():
            views = FeatureViews(views_dir, name, source.fingerprint, source.fill, source.dim)
            files: list[ViewFile | None] = []
            for ti, track in enumerate(self.tracks):
                group = source.group_for(track)
                if group not in self._units[name]:
                    files.append(None)
                    continue
                key = track_key(source.store.unit_attrs(group), self.label_times(ti))
                files.append(views.file(track.name, key))
            self.views[name] = views
            self._view_files[name] = files

    def view_ready(self, ti: int) -> bool:
        """Every feature of track `ti` is in an aligned view on disk (or has no group: all masked)."""
        if not self.views:
            return False
        if ti in self._views_ready:  # a written view stays: no file checks per window on the batch path
            return True
        ready = all(f[ti] is None or self._intact_view(name, ti) is not None for name, f in self._view_files.items())
        if ready:
            self._views_ready.add(ti)
        return ready

    def build_views(self, track_ids: Sequence[int] | None = None,
                    progress: Callable[[int, int], None] | None = None) -> int:
        """Write the missing views of the given tracks (all by default); returns how many tracks were aligned."""
        if not self.views:
            raise ValueError("this dataset was opened without a views folder")
        todo = [ti for ti in (range(len(self.tracks)) if track_ids is None else track_ids) if not self.view_ready(ti)]
        for done, _ in enumerate(self._pool.map(self.align_track, todo), start=1):
            if progress is not None:
                progress(done, len(todo))
        return len(todo)

    def _intact_view(self, name: str, ti: int) -> ViewFile | None:
        """The (feature, track) view when it is on disk and intact (checked once per process: `FeatureViews.check`);
        a view that fails is removed with one warning and None returned, so that it is aligned again."""
        view = self._view_files[name][ti]
        if view is None or not view.exists():
            return None
        if (name, ti) in self._views_checked:
            return view
        problem = self.views[name].check(view, int(self.n_frames[ti]))
        if problem is None:
            with self._lock:
                self._views_checked.add((name, ti))
            return view
        log.warning("feature %s, track %s: aligned view %s failed its check (%s): removed, aligned again from the store",
                    name, self.tracks[ti].name, view.values, problem)
        self.views[name].discard(view)
        with self._lock:
            self._view_masks.pop((name, ti), None)
        return None

    def _view_mask(self, name: str, ti: int, view: ViewFile) -> np.ndarray:
        key = (name, ti)
        mask = self._view_masks.get(key)
        if mask is None:
            mask = self._view_masks[key] = self.views[name].mask(view)
        return mask

    # ---------------------------------------------------------------- alignment
    def label_times(self, ti: int) -> np.ndarray:
        """[start, end) seconds of each label frame of track `ti` (see `cache.frametimes.FrameClock`)."""
        track = self.tracks[ti]
        return self.clock.label_times(track.video_stem, int(self.n_frames[ti]), float(self.fps[ti]))

    def align_feature(self, ti: int, name: str, targets: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """One feature of track `ti` on its label frames, as a batch holds it: float16 (T, D) values (float32
        for a group kept wider; never standardized here: see `Batch.standardizer`) and a (T,) mask."""
        aligned, mask = self.aligned_raw(ti, name, targets)
        return self._finish(name, self.tracks[ti].name, aligned, mask)

    def aligned_raw(self, ti: int, name: str, targets: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """One feature of track `ti` on its label frames in the store's precision, not standardized: read
        from its aligned view when there is one, else aligned from the store (and written to the view)."""
        track, source = self.tracks[ti], self.sources[name]
        n = int(self.n_frames[ti])
        view = self._view_files[name][ti] if self.views else None
        if view is not None and self._intact_view(name, ti) is not None:
            return self.views[name].read(view), self._view_mask(name, ti, view)
        group = source.group_for(track)
        if group not in self._units[name]:
            return np.zeros((n, source.dim), dtype=np.float16), np.zeros(n, dtype=bool)
        targets = self.label_times(ti) if targets is None else targets
        raw = source.read(group)
        flat = raw.values.reshape(len(raw.values), -1)
        valid = np.asarray(raw.valid, dtype=bool) & np.isfinite(flat).all(axis=1)
        bad_rows = int(np.asarray(raw.valid, dtype=bool).sum() - valid.sum())
        if bad_rows:  # the store writer never leaves these; a store written some other way may
            with self._lock:
                self.stats.nonfinite_rows[name] += bad_rows
            log.warning("feature %s, group %s: %d rows with NaN/inf masked", name, group, bad_rows)
        aligned, mask = _align_in_column_blocks(flat, raw.times, targets, valid, source.fill)
        finite = np.isfinite(aligned).all(axis=1)
        if not finite.all():  # float16 overflow in the alignment: masked, counted in _finish's terms
            bad = mask & ~finite
            with self._lock:
                self.stats.nonfinite[name] += int(bad.sum())
            log.warning("feature %s, track %s: %d frames with NaN/inf masked", name, track.name, int(bad.sum()))
            aligned[~finite] = 0
            mask = mask & finite
        if view is not None:
            self.views[name].write(view.track, view.key, aligned, mask)
            with self._lock:
                self._views_checked.add((name, ti))  # written by this process: no need to read it back
        return aligned, mask

    def _finish(self, name: str, track: str, aligned: np.ndarray, mask: np.ndarray, count: bool = True
                ) -> tuple[np.ndarray, np.ndarray]:
        """Cast to float16 (a float32 group stays float32); frames that are NaN/inf are masked (the
        standardization is the batch's, applied on the device: `Batch.standardizer`)."""
        if aligned.dtype != np.float32:
            with np.errstate(over="ignore"):
                aligned = aligned.astype(np.float16, copy=not aligned.flags.writeable)  # may overflow: masked below
        finite = np.isfinite(aligned).all(axis=1)
        if finite.all():
            return aligned, mask
        bad = mask & ~finite
        if count and bad.any():
            with self._lock:
                self.stats.nonfinite[name] += int(bad.sum())
            log.warning("feature %s, track %s: %d frames with NaN/inf masked", name, track, int(bad.sum()))
        if not aligned.flags.writeable:
            aligned = aligned.copy()
        aligned[~finite] = 0
        return aligned, mask & finite

    def align_track(self, ti: int) -> AlignedTrack:
        """Every feature of track `ti` on its label frames (from views where written; no LRU)."""
        track = self.tracks[ti]
        n = int(self.n_frames[ti])
        targets = self.label_times(ti)
        values: dict[str, np.ndarray] = {}
        masks: dict[str, np.ndarray] = {}
        for name in self.sources:
            values[name], masks[name] = self.align_feature(ti, name, targets)
        if track.labels is not None:
            labels = np.asarray(track.labels.values, dtype=np.float32)
            label_valid = np.asarray(track.labels.valid, dtype=bool)
        else:
            labels = np.zeros((n, 2), dtype=np.float32)
            label_valid = np.zeros(n, dtype=bool)
        with self._lock:
            self.stats.aligned_tracks += 1
        return AlignedTrack(values=values, masks=masks, labels=labels, label_valid=label_valid)

    def track(self, ti: int) -> AlignedTrack:
        """Aligned track from the LRU, aligning it (or waiting for a prefetch) when absent."""
        with self._lock:
            if ti in self._lru:
                self._lru.move_to_end(ti)
                return self._lru[ti]
            future = self._inflight.get(ti)
            if future is None:
                future = Future()
                self._inflight[ti] = future
                owner = True
            else:
                owner = False
        if not owner:
            return future.result()
        try:
            aligned = self.align_track(ti)
        except BaseException as err:
            with self._lock:
                self._inflight.pop(ti, None)
            future.set_exception(err)
            raise
        with self._lock:
            self._lru[ti] = aligned
            self._lru_bytes += aligned.nbytes
            while self._lru_bytes > self.cache_bytes and len(self._lru) > 1:
                _, old = self._lru.popitem(last=False)
                self._lru_bytes -= old.nbytes
            self._inflight.pop(ti, None)
        future.set_result(aligned)
        return aligned

    def prefetch(self, track_ids: Sequence[int]) -> None:
        """Start aligning tracks in the background (no-op for cached, in-flight or viewed ones)."""
        for ti in track_ids:
            if self.view_ready(ti):
                continue
            with self._lock:
                busy = ti in self._lru or ti in self._inflight
            if not busy:
                self._pool.submit(self._prefetch_one, ti)

    def _prefetch_one(self, ti: int) -> None:
        try:
            self.track(ti)
        except Exception as err:  # surfaced again when the track is read for real
            log.debug("prefetch of track %d failed: %s", ti, err)

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
        for views in self.views.values():
            views.close()

    # ---------------------------------------------------------------- windows and batches
    def epoch_order(self, rng: np.random.Generator, block_tracks: int = 8) -> list[int]:
        """Window ids for one training epoch: tracks shuffled, then windows shuffled within blocks of
        `block_tracks` tracks (so the LRU needs to hold only a block)."""
        track_ids = rng.permutation(len(self.tracks))
        order: list[int] = []
        for b in range(0, len(track_ids), max(1, block_tracks)):
            block = [w for ti in track_ids[b : b + block_tracks] for w in self.track_windows[ti]]
            order.extend(int(w) for w in rng.permutation(np.asarray(block, dtype=np.int64)))
        return order

    def sequential_order(self) -> list[int]:
        return list(range(len(self.windows)))

    def collate(self, window_ids: Sequence[int]) -> Batch:
        items = [self.windows[w] for w in window_ids]
        lengths = [self.window_length(ti, start) for ti, start in items]
        B, L = len(items), max(lengths)
        # feature buffers are not zeroed up front (every real frame is written below; the rest is zeroed per
        # window), so each byte of the batch is written once
        features = {n: np.empty((B, L, s.dim), dtype=np.float16) for n, s in self.sources.items()}
        masks = {n: np.zeros((B, L), dtype=bool) for n in self.sources}
        pad = np.zeros((B, L), dtype=bool)
        labels = np.zeros((B, L, 2), dtype=np.float32)
        label_mask = np.zeros((B, L), dtype=bool)
        for b, ((ti, start), n) in enumerate(zip(items, lengths)):
            sl = slice(start, start + n)
            if self.view_ready(ti):  # slices of the on-disk views, no alignment, no LRU, no cast
                track = self.tracks[ti]
                for name in self.sources:
                    view = self._view_files[name][ti]
                    if view is None:
                        features[name][b] = 0
                        continue
                    # rows in a view are finite (masked when aligned): read straight into the batch
                    features[name] = self.views[name].read_into_batch(view, start, features[name], b, n)
                    masks[name][b, :n] = self._view_mask(name, ti, view)[sl]
                if track.labels is not None:
                    labels[b, :n] = np.asarray(track.labels.values[sl], dtype=np.float32)
                    label_mask[b, :n] = np.asarray(track.labels.valid[sl], dtype=bool)
            else:
                aligned = self.track(ti)
                for name in self.sources:
                    _widened(features, name, aligned.values[name].dtype)[b, :n] = aligned.values[name][sl]
                    masks[name][b, :n] = aligned.masks[name][sl]
                labels[b, :n] = aligned.labels[sl]
                label_mask[b, :n] = aligned.label_valid[sl]
            if n < L:
                for buffer in features.values():
                    buffer[b, n:] = 0
            pad[b, :n] = True
        return Batch(
            features=features, masks=masks, pad=pad, labels=labels, label_mask=label_mask,
            track=np.array([ti for ti, _ in items], dtype=np.int64),
            start=np.array([s for _, s in items], dtype=np.int64),
            length=np.array(lengths, dtype=np.int64),
            standardizer=self.standardizer,  # what it covers is standardized by to_tensors
        )

    def batches(self, order: Sequence[int], batch_size: int, lookahead_tracks: int = 4) -> Iterator[Batch]:
        """Batches over `order`, asking the align pool for the next few tracks ahead of time."""
        firsts: list[tuple[int, int]] = []  # (track, batch that first needs it), in order of use
        seen: set[int] = set()
        for i, w in enumerate(order):
            ti = self.windows[w][0]
            if ti not in seen:
                seen.add(ti)
                firsts.append((ti, i // batch_size))
        cursor = 0
        for bi, i in enumerate(range(0, len(order), batch_size)):
            while cursor < len(firsts) and firsts[cursor][1] < bi:
                cursor += 1
            self.prefetch([ti for ti, _ in firsts[cursor : cursor + lookahead_tracks]])
            yield self.collate(order[i : i + batch_size])


def _widened(features: dict[str, np.ndarray], name: str, dtype: np.dtype) -> np.ndarray:
    """The batch buffer of `name`, made float32 (once per batch) when a window brings a float32 group."""
    if dtype == np.float32 and features[name].dtype != np.float32:
        features[name] = widen_buffer(features[name])
    return features[name]


def _align_in_column_blocks(
    flat: np.ndarray, times: np.ndarray, targets: np.ndarray, valid: np.ndarray, fill: float | None
) -> tuple[np.ndarray, np.ndarray]:
    """align_to_frames over blocks of columns, into one (T, D) array of the store's precision (float16, or
    float32 for wider stores): the same result with temporaries (float64 inside the alignment) bounded to
    about ALIGN_BLOCK_BYTES, whatever the length."""
    n_rows, dim = flat.shape
    fast = _same_frames(flat, times, targets, valid, fill)
    if fast is not None:
        return fast
    block = max(1, min(dim, ALIGN_BLOCK_BYTES // (8 * max(n_rows, len(targets), 1))))
    out = np.empty((len(targets), dim), dtype=_aligned_dtype(flat))
    mask = np.zeros(len(targets), dtype=bool)
    for c in range(0, dim, block):
        part, mask = align_to_frames(flat[:, c : c + block], times, targets, valid=valid, nearest_fill=fill)
        with np.errstate(over="ignore"):
            out[:, c : c + block] = part  # float16: may overflow to inf, checked by the caller
    return out, mask


def _aligned_dtype(flat: np.ndarray) -> type:
    """float16 stores align to float16; a store kept wider (precision) keeps float32 until standardized."""
    return np.float16 if flat.dtype == np.float16 else np.float32


def _same_frames(
    flat: np.ndarray, times: np.ndarray, targets: np.ndarray, valid: np.ndarray, fill: float | None
) -> tuple[np.ndarray, np.ndarray] | None:
    """Fast path for a frame feature on exactly the label frames (row k = frame k): the overlap-weighted
    mean is the row itself. None when the rows are on other times (or a fill is needed)."""
    m = min(len(flat), len(targets))
    if m == 0 or not np.allclose(times[:m], targets[:m], rtol=0, atol=1e-6):
        return None
    if len(flat) > m and times[m:, 0].min() < targets[-1, 1] - 1e-6:
        return None
    mask = np.zeros(len(targets), dtype=bool)
    mask[:m] = valid[:m]
    if fill is not None and not mask.all():
        return None
    out = np.zeros((len(targets), flat.shape[1]), dtype=_aligned_dtype(flat))
    with np.errstate(over="ignore"):
        out[:m] = flat[:m]
    out[~mask] = 0
    return out, mask


