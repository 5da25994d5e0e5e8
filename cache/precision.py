"""Does a cast to float16 keep a feature? One check for every writer that stores float16.

float16 keeps about 3 significant digits (relative step 2^-10 for normal numbers, so a rounding error of at
most 2^-11 ≈ 4.9e-4 of the value). What matters to a model is the error against the column's spread, not
against its value:

* a zero-centred column (an embedding, a z-score, an angle) loses about 2e-4 of its std (RMS);
* a column with a large offset and a small signal (an area of 30,000 ± 5 px², a timestamp in ms) loses most
  of its signal: at 30,000 float16 steps by 16.

So a column fails when the RMS rounding error exceeds `FLOAT16_TOLERANCE` (1 %) of its std: noise at -40 dB
of the signal, reached only when |mean| is some 50 times the std, never by ordinary embeddings. A counter
(0..18,016) is spread over its whole range, so its rounding error against its std is small (4e-4); it fails
the second test instead: a column of whole numbers must stay whole-number exact, which float16 is only up to
2048. Values beyond float16's range (65,504) fail too. Only valid, finite values are measured.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

FLOAT16_TOLERANCE = 1e-2  # RMS rounding error / std above which a column is refused
FLOAT16_MAX = float(np.finfo(np.float16).max)
_FLOAT16_EXACT_INT = 2048
SAMPLE_ROWS = 4096  # rows the rounding statistics are measured on (evenly spaced)


class Float16PrecisionError(ValueError):
    """A cast to float16 would lose what a column holds; the message is one line naming the columns."""


def float16_losses(
    values: np.ndarray,
    names: Sequence[str] | None = None,
    valid: np.ndarray | None = None,
    tolerance: float = FLOAT16_TOLERANCE,
) -> list[str]:
    """One description per column (of the values flattened to (N, D)) that float16 would harm, e.g.
    `'area' (rounding error 0.31 of its std)`; empty when the cast is safe. Overflow is checked on every
    row; the rounding statistics on at most SAMPLE_ROWS evenly spaced rows, over blocks of columns, so a
    wide embedding of a long track costs little."""
    values = np.asarray(values)
    if values.dtype == np.float16 or values.size == 0:
        return []
    flat = values.reshape(len(values), -1)
    if valid is not None:
        flat = flat[np.asarray(valid, dtype=bool)]
    if not len(flat):
        return []
    magnitude = np.abs(flat)
    peak = np.where(np.isfinite(magnitude), magnitude, 0).max(axis=0)
    if len(flat) > SAMPLE_ROWS:
        flat = flat[np.linspace(0, len(flat) - 1, SAMPLE_ROWS).astype(np.int64)]
    problems = []
    step = max(1, (4 << 20) // (8 * len(flat)))  # ~4 MB of float64 per block
    for first in range(0, flat.shape[1], step):
        found = _block_losses(flat[:, first : first + step].astype(np.float64), peak[first : first + step], tolerance)
        for offset, problem in enumerate(found):
            if problem:
                col = first + offset
                label = f"'{names[col]}'" if names is not None and col < len(names) else f"column {col}"
                problems.append(f"{label} ({problem})")
    return problems


def _block_losses(x: np.ndarray, peak: np.ndarray, tolerance: float) -> list[str]:
    finite = np.isfinite(x)
    count = np.maximum(finite.sum(axis=0), 1)
    x = np.where(finite, x, 0.0)  # non-finite values are not measured
    with np.errstate(over="ignore", invalid="ignore"):
        error = x - x.astype(np.float16).astype(np.float64)
    error[~finite | ~np.isfinite(error)] = 0.0
    mean = x.sum(axis=0) / count
    std = np.sqrt((np.where(finite, x - mean, 0.0) ** 2).sum(axis=0) / count)
    rms = np.sqrt((error**2).sum(axis=0) / count)
    whole = (x == np.round(x)).all(axis=0)
    out = []
    for col in range(x.shape[1]):
        if peak[col] > FLOAT16_MAX:
            out.append(f"values up to {peak[col]:.6g} overflow float16")
        elif whole[col] and peak[col] > _FLOAT16_EXACT_INT and np.any(error[:, col] != 0):
            out.append(f"whole numbers up to {peak[col]:.0f}: float16 is exact only up to 2048")
        elif std[col] > 0 and rms[col] > tolerance * std[col]:
            out.append(f"rounding error {rms[col] / std[col]:.2g} of its std")
        else:
            out.append("")
    return out


def check_float16(
    where: str, values: np.ndarray, names: Sequence[str] | None = None, valid: np.ndarray | None = None
) -> None:
    """Raise Float16PrecisionError (one line) when float16 would harm a column of `values`."""
    problems = float16_losses(values, names, valid)
    if problems:
        raise Float16PrecisionError(
            f"{where}: float16 would lose precision in {len(problems)} column(s): {', '.join(problems[:5])}"
            f"{' …' if len(problems) > 5 else ''}; store them with --dtype float32 (or --dtype auto)"
        )


def choose_dtype(
    dtype: str, values: np.ndarray, names: Sequence[str] | None = None, valid: np.ndarray | None = None
) -> tuple[str, list[str]]:
    """The dtype to store: `auto` is float16 when the cast is safe, else float32 (with the reasons)."""
    if dtype != "auto":
        return dtype, []
    problems = float16_losses(values, names, valid)
    return ("float32" if problems else "float16"), problems
