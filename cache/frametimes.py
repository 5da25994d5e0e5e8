"""Frame times from the container: frame k of a video is the k-th frame the container presents (its
packets sorted by presentation timestamp), and it covers [pts_k, pts_k+1) seconds on the stream's
timeline (the timeline audio is on too).

A constant-rate video (every pts within a quarter frame of k / fps) gets exactly [k/fps, (k+1)/fps), so
stores and label frames of such videos are the same as before frame times were read from timestamps.
A variable-rate video, or one with a frame missing from the container, keeps its real timestamps.

The extraction runner records each decoded video's frame times in the `frame_times` store of the cache
(unit video, one row per presented frame, `valid` = the frame decoded; group attributes: declared,
decoded and presented counts, `constant_rate`). `FrameClock` reads that record so that training maps
label frame k to the same time as the visual row of frame k; a video without a record (or a
constant-rate one) uses k / fps.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import asdict
from typing import Any

import numpy as np

from cache.location import Location
from cache.media import SourceStat, frame_times
from cache.store import FeatureMeta, FeatureStore, store_exists, store_path

log = logging.getLogger(__name__)

FRAME_TIMES_STORE = "frame_times"
CFR_TOLERANCE = 0.25  # frames: a pts this close to k / fps counts as constant rate


def is_constant_rate(starts: np.ndarray, fps: float) -> bool:
    """Every presentation time within CFR_TOLERANCE frames of k / fps."""
    starts = np.asarray(starts, dtype=np.float64)
    if not len(starts) or not fps or fps <= 0:
        return True
    k = np.arange(len(starts), dtype=np.float64)
    return bool(np.all(np.abs(starts - k / fps) <= CFR_TOLERANCE / fps))


def bad_starts(starts: np.ndarray) -> np.ndarray:
    """Which presentation times cannot be a frame's time: missing (NaN, inf, decord's "no timestamp"
    value -3.7e17 s), negative, or not after the last good time before them."""
    starts = np.asarray(starts, dtype=np.float64)
    bad = ~np.isfinite(starts) | (starts < 0)
    previous = np.maximum.accumulate(np.where(bad, -np.inf, starts))
    before = np.concatenate([[-np.inf], previous[:-1]])
    return bad | (starts <= before)


def repaired_starts(starts: np.ndarray, fps: float, other: np.ndarray | None = None) -> tuple[np.ndarray, str | None]:
    """`starts` with every bad time (`bad_starts`) replaced, and a note saying what was replaced (None when
    nothing was): from `other` (the other decoder's times of the same frames) where it has a good time
    that keeps the order, else on the frame clock: between two good neighbours at their pace, before the
    first or after the last good one at 1 / fps (every frame at k / fps when none is good, or when the
    first good time leaves no room for the frames before it)."""
    starts = np.asarray(starts, dtype=np.float64).copy()
    bad = bad_starts(starts)
    if not bad.any():
        return starts, None
    n, count = len(starts), int(bad.sum())
    sources = []
    if other is not None and len(other) == n:
        other = np.asarray(other, dtype=np.float64)
        take = bad & ~bad_starts(other)
        trial = np.where(take, other, starts)
        if take.any() and not (bad_starts(trial) & ~bad).any():  # never spoils a good time
            starts, bad = trial, bad_starts(trial)
            sources.append(f"{int(take.sum() - (bad & take).sum())} from the other decoder")
    if bad.any():
        k = np.arange(n, dtype=np.float64)
        good = np.flatnonzero(~bad)
        if not len(good) or starts[good[0]] - good[0] / fps < 0:  # none good, or no room before the first
            starts = k / fps
        else:
            g0, g1 = good[0], good[-1]
            filled = np.interp(k, good, starts[good])
            filled = np.where(k < g0, starts[g0] - (g0 - k) / fps, filled)
            filled = np.where(k > g1, starts[g1] + (k - g1) / fps, filled)
            starts = np.where(bad, filled, starts)
        sources.append(f"{int(bad.sum())} on the frame clock")
    note = f"{count} of {n} frame timestamps missing, negative or out of order: replaced ({', '.join(sources)})"
    return starts, note


def presented_times(starts: np.ndarray, fps: float) -> np.ndarray:
    """(N, 2) [start, end) seconds of frames presented at `starts` (sorted pts, seconds): k / fps for a
    constant-rate video; otherwise each frame lasts until the next one, the last one as long as the one
    before it."""
    starts = np.asarray(starts, dtype=np.float64).reshape(-1)
    n = len(starts)
    if is_constant_rate(starts, fps):
        return frame_times(n, fps)
    steps = np.diff(starts)
    last = float(steps[-1]) if len(steps) else 1.0 / fps
    ends = np.append(starts[1:], starts[-1] + max(last, 1e-6))
    return np.stack([starts, ends], axis=1)


def extend_times(times: np.ndarray, n: int, fps: float) -> np.ndarray:
    """The first `n` rows of `times` (N, 2); past its end, frames continue at the pace of the last one."""
    times = np.asarray(times, dtype=np.float64).reshape(-1, 2)
    if n <= len(times):
        return times[:n].copy()
    if not len(times):
        return frame_times(n, fps)
    step = float(times[-1, 1] - times[-1, 0])
    step = step if step > 0 else 1.0 / fps
    extra = times[-1, 1] + step * np.arange(n - len(times), dtype=np.float64)
    return np.concatenate([times, np.stack([extra, extra + step], axis=1)])


# ---- the per-video record in the cache ---------------------------------------------------------
def frame_times_meta() -> FeatureMeta:
    return FeatureMeta(name=FRAME_TIMES_STORE, kind="frame", unit="video", model_ref="container", version="1")


def write_frame_record(
    cache_dir: Location, stem: str, times: np.ndarray, decoded: np.ndarray, source: SourceStat, attrs: Mapping[str, Any]
) -> None:
    """Record a video's presented frames: times (N, 2), decoded (N,) and the counts in `attrs`."""
    store = FeatureStore.create_or_open(store_path(cache_dir, FRAME_TIMES_STORE), frame_times_meta(), on_mismatch="new")
    index = np.arange(len(times), dtype=np.float32)[:, None]
    store.write(stem, index, times, decoded, attrs={"source": asdict(source), **attrs}, dtype="float32")


def read_frame_record_attrs(cache_dir: Location, stem: str, source: SourceStat) -> dict[str, Any] | None:
    """The record's attributes for this video made from this same source file; None if there is none."""
    path = store_path(cache_dir, FRAME_TIMES_STORE)
    try:
        if not store_exists(path):
            return None
        store = FeatureStore.open(path)
        return store.unit_attrs(stem) if store.is_complete(stem, source) else None
    except Exception as err:  # a damaged record only loses this check
        log.warning("%s: frame-time record unreadable (%s)", path, err)
        return None


class FrameClock:
    """Label-frame times per video: the recorded presentation times where the cache has a record of a
    variable-rate video, k / fps otherwise."""

    def __init__(self, store: FeatureStore | None = None):
        self._store = store
        self._units = set(store.units()) if store is not None else set()
        self._times: dict[str, np.ndarray | None] = {}

    @classmethod
    def open(cls, cache_dir: Location | None) -> "FrameClock":
        """The clock of a cache dir (no record store: every video on k / fps)."""
        if cache_dir is None:
            return cls()
        path = store_path(cache_dir, FRAME_TIMES_STORE)
        if not store_exists(path):
            return cls()
        try:
            return cls(FeatureStore.open(path))
        except Exception as err:  # an unreadable record must not stop training: fall back to k / fps
            log.warning("%s: frame-time record unreadable (%s); label frames use k / fps", path, err)
            return cls()

    def recorded(self, video_stem: str) -> np.ndarray | None:
        """The recorded (N, 2) times of a variable-rate video, None for a constant-rate or unknown one."""
        if video_stem not in self._units:
            return None
        if video_stem not in self._times:
            attrs = self._store.unit_attrs(video_stem)
            variable = not attrs.get("constant_rate", True)
            self._times[video_stem] = np.asarray(self._store.read(video_stem).times, np.float64) if variable else None
        return self._times[video_stem]

    def presented(self, video_stem: str) -> int | None:
        """How many frames the video presented when it was decoded (None: no record). A container may
        declare more (an AVI header counting a packed frame): rows past the presented ones would be invented."""
        if video_stem not in self._units:
            return None
        value = self._store.unit_attrs(video_stem).get("presented")
        return int(value) if value is not None else None

    def label_times(self, video_stem: str, n: int, fps: float) -> np.ndarray:
        """[start, end) seconds of label frames 0..n-1 of a track of this video."""
        times = self.recorded(video_stem)
        return frame_times(n, fps) if times is None else extend_times(times, n, fps)
