"""Concordance correlation coefficient, as the ABAW challenge scores it.

CCC uses population moments over all valid frames of a split concatenated (not a per-video mean).
P is the mean of CCC for valence and arousal.
"""

from __future__ import annotations

import numpy as np


def ccc(pred: np.ndarray, true: np.ndarray, mask: np.ndarray | None = None) -> float:
    """2·cov(x, y) / (var x + var y + (mean x − mean y)²) over the frames where mask is True. NaN when no
    frame is left or a kept value is NaN (a NaN prediction is never scored as 0); 0 when both series are
    constant and the denominator is 0."""
    x = np.asarray(pred, dtype=np.float64).ravel()
    y = np.asarray(true, dtype=np.float64).ravel()
    if mask is not None:
        keep = np.asarray(mask, dtype=bool).ravel()
        x, y = x[keep], y[keep]
    if x.size == 0 or np.isnan(x).any() or np.isnan(y).any():
        return float("nan")
    mx, my = x.mean(), y.mean()
    cov = ((x - mx) * (y - my)).mean()
    denom = x.var() + y.var() + (mx - my) ** 2
    return float(2 * cov / denom) if denom > 0 else 0.0


def va_scores(pred: np.ndarray, true: np.ndarray, mask: np.ndarray | None = None) -> dict[str, float]:
    """CCC for valence (column 0) and arousal (column 1) and their mean P, for (N, 2) arrays."""
    pred, true = np.asarray(pred), np.asarray(true)
    v = ccc(pred[:, 0], true[:, 0], mask)
    a = ccc(pred[:, 1], true[:, 1], mask)
    return {"ccc_v": v, "ccc_a": a, "P": (v + a) / 2}
