"""Audio reliability per window of a face track: is the sound in this window likely this person's speech?

Method 2's mouth filter: a window's audio counts as reliable when the mouth is open for at least
`min_open` (0.25) of the window and the window is covered (`min_coverage`, 0.8). Windows are
`window_s` (4 s) every `hop_s` (2 s) over the track, like the WavLM windows; a trailing window shorter
than `min_window_s` (1 s) is dropped.

Decisions:
- open_frac = time with a valid mouth measurement that is open / window length (not / covered time,
  so a window with few measurements cannot look like speech).
- coverage ("label coverage") = fraction of the window's time with a valid mouth measurement, i.e. a
  face was found and measured. This is the coverage of the *input* of the filter; it exists on every
  split (the test split has no labels) and the labels' own validity is masked by training anyway.
- Both are sums of overlap time between the mouth rows' [start, end) and the window, so the mouth
  store's rate does not matter (the same overlap rule as `cache.align.align_to_frames`).
- A video without an audio stream has no reliable window (reliable = False everywhere; open_frac and
  coverage are still stored).
Values per window: (open_frac, coverage, reliable as 0/1).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from cache.store import FeatureStore
from extract.base import StoreExtractor, UnitResult, VideoContext, register
from extract.windows import sliding_windows

log = logging.getLogger(__name__)

COLUMNS = ("open_frac", "coverage", "reliable")


@dataclass(frozen=True)
class ReliabilityConfig:
    window_s: float = 4.0
    hop_s: float = 2.0
    min_window_s: float = 1.0
    min_open: float = 0.25  # open time >= min_open x window length
    min_coverage: float = 0.8  # valid mouth time >= min_coverage x window length

    def __post_init__(self) -> None:
        if self.window_s <= 0 or self.hop_s <= 0:
            raise ValueError("window_s and hop_s must be positive")
        if not (0 <= self.min_open <= 1 and 0 <= self.min_coverage <= 1):
            raise ValueError("min_open and min_coverage are fractions in [0, 1]")


def reliability_windows(
    open_flag: np.ndarray,
    times: np.ndarray,
    valid: np.ndarray,
    duration: float,
    config: ReliabilityConfig,
    has_audio: bool = True,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """From per-row mouth open flags with times (M, 2) and validity (M,) over a track of `duration` seconds:
    values (W, 3) float32 (open_frac, coverage, reliable), window times (W, 2), valid (W,)."""
    windows = sliding_windows(duration, config.window_s, config.hop_s, config.min_window_s)
    n = len(windows)
    if n == 0:
        return np.zeros((0, 3), np.float32), windows, np.zeros(0, bool)
    open_flag = np.asarray(open_flag, dtype=np.float32).reshape(-1)
    valid = np.asarray(valid, dtype=bool).reshape(-1)
    times = np.asarray(times, dtype=np.float64).reshape(-1, 2)
    # Time the rows do not reach (past the last frame) counts as uncovered: divide by the window length.
    covered_time = _overlap_time(valid.astype(np.float32), times, windows)
    open_time = _overlap_time(open_flag * valid, times, windows)
    length = windows[:, 1] - windows[:, 0]
    coverage = np.clip(covered_time / length, 0.0, 1.0)
    open_frac = np.clip(open_time / length, 0.0, 1.0)
    reliable = (open_frac >= config.min_open - 1e-9) & (coverage >= config.min_coverage - 1e-9) & has_audio
    values = np.stack([open_frac, coverage, reliable.astype(np.float32)], axis=1).astype(np.float32)
    return values, windows, np.ones(n, dtype=bool)


def _overlap_time(weights: np.ndarray, times: np.ndarray, windows: np.ndarray) -> np.ndarray:
    """Σ over rows of weight × overlap(row, window) in seconds, per window (rows sorted by start)."""
    order = np.argsort(times[:, 0], kind="stable")
    starts, ends, weights = times[order, 0], times[order, 1], weights[order]
    reach = np.maximum.accumulate(ends) if len(ends) else ends
    out = np.zeros(len(windows))
    for i, (w0, w1) in enumerate(windows):
        lo = np.searchsorted(reach, w0, side="right")
        hi = np.searchsorted(starts, w1, side="left")
        if hi > lo:
            overlap = np.clip(np.minimum(ends[lo:hi], w1) - np.maximum(starts[lo:hi], w0), 0.0, None)
            out[i] = float((overlap * weights[lo:hi]).sum())
    return out


# ---- registration --------------------------------------------------------------------------------
OPEN_COLUMN_NAMES = ("open", "open_flag", "mouth_open", "is_open")


def open_column(store: FeatureStore, unit: str, dim: int) -> int:
    """Index of the mouth store's open-flag column: named by a `columns` attribute (group or store
    config), else column 1 of (opening, open) pairs, else the only column."""
    for attrs in (store.unit_attrs(unit), store.meta.config):
        names = attrs.get("columns") or attrs.get("column_names")
        if names:
            for candidate in OPEN_COLUMN_NAMES:
                if candidate in names:
                    return list(names).index(candidate)
    return 1 if dim >= 2 else 0


@register
class AudioReliabilityExtractor(StoreExtractor):
    """`audio_reliability`: per track and audio window, (open_frac, coverage, reliable) from `mouth`."""

    name = "audio_reliability"
    Config = ReliabilityConfig
    kind = "window"
    unit = "track"
    version = "1"
    family = None
    requires = ("mouth",)

    def process_stores(self, video: VideoContext, stores: Mapping[str, FeatureStore]) -> dict[str, UnitResult]:
        mouth = stores["mouth"]
        has_audio = bool(video.info.has_audio)
        if not has_audio:
            log.info("%s: no audio stream; every audio_reliability window is unreliable", video.stem)
        out: dict[str, UnitResult] = {}
        for track in self.units_for(video):
            group = mouth.read(track)
            values = group.values.reshape(len(group.values), -1)
            col = open_column(mouth, track, values.shape[1])
            flag = values[:, col].astype(np.float32) >= 0.5
            duration = max(video.info.n_frames / video.fps, float(group.times[:, 1].max()) if len(group.times) else 0.0)
            vals, times, valid = reliability_windows(flag, group.times, group.valid, duration, self.config, has_audio)
            out[track] = UnitResult(vals, times, valid, {"columns": list(COLUMNS), "has_audio": has_audio})
        return out
