"""Time alignment: the one function that puts any feature onto a track's label frames.

Every feature row covers [start, end) seconds. A label frame's value is the mean of the rows that
overlap it, each weighted by the length of the overlap. This covers frame-rate features, 50 Hz audio
frames, sliding windows and segments (segment-to-frame expansion with overlap averaging) alike.
"""

from __future__ import annotations

import numpy as np
from scipy import sparse


def align_to_frames(
    values: np.ndarray,
    times: np.ndarray,
    targets: np.ndarray,
    valid: np.ndarray | None = None,
    nearest_fill: float | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Map rows `values` (N, ...) with `times` (N, 2) onto target intervals `targets` (T, 2).

    Returns (T, ...) float32 values and a (T,) bool mask of targets that got any valid overlap.
    With `nearest_fill` (seconds, may be inf), a target without overlap takes the value of the
    nearest valid row whose interval lies within that distance, and counts as valid.
    """
    values = np.asarray(values)
    times = np.asarray(times, dtype=np.float64)
    targets = np.asarray(targets, dtype=np.float64)
    n_rows, n_targets = len(values), len(targets)
    tail = values.shape[1:]
    flat = values.reshape(n_rows, -1).astype(np.float32)
    out = np.zeros((n_targets, flat.shape[1]), dtype=np.float32)
    mask = np.zeros(n_targets, dtype=bool)
    keep = np.ones(n_rows, dtype=bool) if valid is None else np.asarray(valid, dtype=bool).copy()
    keep &= times[:, 1] > times[:, 0]
    if n_targets == 0 or not keep.any():
        return out.reshape(n_targets, *tail), mask

    rows = np.flatnonzero(keep)
    order = rows[np.argsort(times[rows, 0], kind="stable")]
    starts, ends = times[order, 0], times[order, 1]
    # Rows are sorted by start; the running max of ends bounds which rows can still reach a target.
    reach = np.maximum.accumulate(ends)
    lo = np.searchsorted(reach, targets[:, 0], side="right")
    hi = np.searchsorted(starts, targets[:, 1], side="left")
    counts = np.maximum(hi - lo, 0)
    target_idx = np.repeat(np.arange(n_targets), counts)
    offsets = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
    row_idx = np.repeat(lo, counts) + offsets
    overlap = np.minimum(targets[target_idx, 1], ends[row_idx]) - np.maximum(targets[target_idx, 0], starts[row_idx])
    positive = overlap > 0
    target_idx, row_idx, overlap = target_idx[positive], row_idx[positive], overlap[positive]

    weights = sparse.csr_matrix((overlap, (target_idx, row_idx)), shape=(n_targets, len(order)))
    total = np.asarray(weights.sum(axis=1)).ravel()
    mask = total > 0
    summed = weights @ flat[order].astype(np.float64)
    out[mask] = (summed[mask] / total[mask, None]).astype(np.float32)

    if nearest_fill is not None and not mask.all():
        _fill_nearest(out, mask, targets, flat[order], starts, ends, nearest_fill)
    return out.reshape(n_targets, *tail), mask


def _fill_nearest(
    out: np.ndarray,
    mask: np.ndarray,
    targets: np.ndarray,
    row_values: np.ndarray,
    starts: np.ndarray,
    ends: np.ndarray,
    limit: float,
) -> None:
    centres = (starts + ends) / 2
    by_centre = np.argsort(centres, kind="stable")
    sorted_centres = centres[by_centre]
    missing = np.flatnonzero(~mask)
    target_centres = targets[missing].mean(axis=1)
    pos = np.searchsorted(sorted_centres, target_centres)
    left = by_centre[np.clip(pos - 1, 0, len(by_centre) - 1)]
    right = by_centre[np.clip(pos, 0, len(by_centre) - 1)]

    def gap(row: np.ndarray) -> np.ndarray:
        # distance between the target interval and the row interval (0 if they touch)
        return np.maximum(0.0, np.maximum(starts[row] - targets[missing, 1], targets[missing, 0] - ends[row]))

    gap_left, gap_right = gap(left), gap(right)
    best = np.where(gap_left <= gap_right, left, right)
    best_gap = np.minimum(gap_left, gap_right)
    ok = best_gap <= limit
    out[missing[ok]] = row_values[best[ok]]
    mask[missing[ok]] = True
