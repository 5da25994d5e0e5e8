"""Window grids on an audio or video timeline, in seconds (shared by the audio and segment extractors)."""

from __future__ import annotations

import math

import numpy as np


def sliding_windows(duration: float, window: float, hop: float, min_window: float = 0.0) -> np.ndarray:
    """[start, end) seconds of windows of `window` seconds every `hop` seconds over [0, duration).

    Windows start at 0, hop, 2·hop, ... while the start lies inside the audio; a window that would run past
    the end is cut at the end. A trailing window shorter than `min_window` is dropped unless it is the only
    one. Windows already covering the end make later starts redundant, so the grid stops at the first
    window that reaches the end.
    """
    if duration <= 0 or window <= 0 or hop <= 0:
        return np.zeros((0, 2))
    rows = []
    n = max(1, math.ceil(duration / hop - 1e-9))
    for k in range(n):
        start = k * hop
        end = min(start + window, duration)
        if rows and end - start < min_window:
            break
        rows.append((start, end))
        if end >= duration - 1e-9:
            break
    return np.asarray(rows, dtype=np.float64).reshape(-1, 2)
