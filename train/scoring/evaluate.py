"""Per-frame predictions for a split and their CCC.

Window predictions are averaged per frame (overlapping windows), frames where no feature is present
take values interpolated from their neighbours, then an optional centred moving average (separate
half-windows for V and A, chosen on validation from a grid) and clipping to [-1, 1]. CCC_V, CCC_A and
P are computed over all valid frames of the split concatenated.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import numpy as np
import torch

from train.data.dataset import TrackDataset
from train.scoring.metrics import ccc, va_scores
from cache.prefetch import Prefetcher
from train.data.tensors import autocast, to_tensors

log = logging.getLogger(__name__)


@dataclass
class SplitPredictions:
    """Raw (window-averaged) per-frame predictions of every track of a dataset."""

    va: list[np.ndarray]  # per track (T, 2) float32
    has_feature: list[np.ndarray]  # per track (T,) bool: any feature present
    inputs: list[dict[str, np.ndarray]] = field(default_factory=list)  # per track, per input feature (T,) bool: present


@dataclass
class EvalResult:
    raw: dict[str, float]
    smoothed: dict[str, float]
    half_windows: tuple[int, int]  # (valence, arousal) half-windows of the moving average
    frames: int  # valid frames scored
    grid: dict[str, dict[int, float]] = field(default_factory=dict)  # ccc per half-window, when chosen
    missing: dict = field(default_factory=dict)  # gaps accepted with --allow-missing (train.results.coverage.Coverage)
    edges: str = "shrink"  # ends of the moving average (moving_average)
    per_track: dict[str, dict[str, float]] = field(default_factory=dict)  # track -> smoothed ccc_v, ccc_a, P, frames

    def to_dict(self) -> dict:
        out = asdict(self)
        out["half_windows"] = list(self.half_windows)
        out["grid"] = {k: {str(h): c for h, c in v.items()} for k, v in self.grid.items()}
        return out


def accumulate_windows(n_frames: int, windows: Sequence[tuple[int, np.ndarray]]) -> np.ndarray:
    """Average per frame the predictions (L_i, C) of windows starting at s_i. Frames no window covers
    get 0."""
    if not windows:
        return np.zeros((n_frames, 2), dtype=np.float32)
    channels = windows[0][1].shape[1]
    total = np.zeros((n_frames, channels), dtype=np.float64)
    count = np.zeros(n_frames, dtype=np.float64)
    for start, pred in windows:
        n = min(len(pred), n_frames - start)
        total[start : start + n] += pred[:n]
        count[start : start + n] += 1
    out = np.zeros_like(total)
    covered = count > 0
    out[covered] = total[covered] / count[covered, None]
    return out.astype(np.float32)


def input_features(model: torch.nn.Module, names: Sequence[str]) -> list[str]:
    """Features the model reads as input streams: a head's visual + audio lists (a mask-only feature
    such as `audio_reliability` is not one of them); every name for a model without such lists."""
    streams = [*(getattr(model, "visual", None) or []), *(getattr(model, "audio", None) or [])]
    used = [n for n in names if n in streams]
    return used or list(names)


@torch.no_grad()
def predict_split(
    model: torch.nn.Module, dataset: TrackDataset, device: torch.device, batch_size: int = 8, prefetch: int = 4
) -> SplitPredictions:
    """Run the model over every window of the dataset (in track order) and average per frame.
    `has_feature` marks frames where any of the model's input features is present (mask-only
    features such as audio reliability do not count)."""
    was_training = model.training
    model.eval()
    n_tracks = len(dataset.tracks)
    total = [np.zeros((int(n), 2), dtype=np.float64) for n in dataset.n_positions]
    count = [np.zeros(int(n), dtype=np.float64) for n in dataset.n_positions]
    inputs = input_features(model, list(dataset.sources))
    per_input = [{name: np.zeros(int(n), dtype=bool) for name in inputs} for n in dataset.n_positions]
    loader = Prefetcher(dataset.batches(dataset.sequential_order(), batch_size), depth=prefetch)
    try:
        for batch in loader:
            tb = to_tensors(batch, device)
            with autocast(device):
                out = model(tb.features, tb.masks, tb.pad)
            va = out.va.float().cpu().numpy()
            for b in range(len(batch.track)):
                ti, s, n = int(batch.track[b]), int(batch.start[b]), int(batch.length[b])
                total[ti][s : s + n] += va[b, :n]
                count[ti][s : s + n] += 1
                for name in inputs:
                    per_input[ti][name][s : s + n] |= np.asarray(batch.masks[name][b, :n], dtype=bool)
    finally:
        loader.close()
        model.train(was_training)
    va_out, present, by_input = [], [], []
    for ti in range(n_tracks):
        c = np.maximum(count[ti], 1)[:, None]
        mean = (total[ti] / c).astype(np.float32)
        any_input = np.logical_or.reduce([*per_input[ti].values(), np.zeros(len(mean), dtype=bool)])  # has_feature
        va, has = dataset.to_frames(ti, mean, any_input)  # segments -> frames
        va_out.append(va)
        present.append(has)
        by_input.append({name: np.asarray(dataset.to_frames(ti, mean, mask)[1], dtype=bool) for name, mask in per_input[ti].items()})
    return SplitPredictions(va=va_out, has_feature=present, inputs=by_input)


def fill_missing(pred: np.ndarray, present: np.ndarray) -> np.ndarray:
    """Linear interpolation over frames where `present` is False (nearest value at the ends); a track
    with no present frame is left as it is."""
    present = np.asarray(present, dtype=bool)
    if present.all() or not present.any():
        return pred
    idx = np.arange(len(pred))
    out = pred.copy()
    for c in range(pred.shape[1]):
        out[~present, c] = np.interp(idx[~present], idx[present], pred[present, c])
    return out


SMOOTH_EDGES = ("shrink", "repeat")


def moving_average(x: np.ndarray, half: int, edges: str = "shrink") -> np.ndarray:
    """Centred moving average of a 1-D series over 2·half+1 frames. At the ends the window shrinks to
    the frames there are ("shrink") or the edge value is repeated to fill it ("repeat": RAS's
    replicate padding, src_audio_and_fusion/src/callbacks/multimodal_framewise_v2_callback.py)."""
    if edges not in SMOOTH_EDGES:
        raise ValueError(f"smoothing edges must be one of {', '.join(SMOOTH_EDGES)}, got {edges!r}")
    x = np.asarray(x, dtype=np.float64)
    if half <= 0 or len(x) == 0:
        return x.astype(np.float32)
    if edges == "repeat":
        padded = np.concatenate([np.full(half, x[0]), x, np.full(half, x[-1])])
        csum = np.concatenate([[0.0], np.cumsum(padded)])
        k = 2 * half + 1
        return ((csum[k:] - csum[:-k]) / k).astype(np.float32)
    csum = np.concatenate([[0.0], np.cumsum(x)])
    idx = np.arange(len(x))
    lo = np.maximum(idx - half, 0)
    hi = np.minimum(idx + half + 1, len(x))
    return ((csum[hi] - csum[lo]) / (hi - lo)).astype(np.float32)


def smooth_va(pred: np.ndarray, half_windows: tuple[int, int], edges: str = "shrink") -> np.ndarray:
    """V and A each smoothed with its own half-window, clipped to [-1, 1]."""
    out = np.stack([moving_average(pred[:, 0], half_windows[0], edges), moving_average(pred[:, 1], half_windows[1], edges)], axis=1)
    return np.clip(out, -1.0, 1.0).astype(np.float32)


def postprocess(
    pred: np.ndarray, present: np.ndarray, half_windows: tuple[int, int] = (0, 0), edges: str = "shrink"
) -> np.ndarray:
    """Fill featureless frames, smooth V and A with their own half-windows, clip to [-1, 1]."""
    return smooth_va(fill_missing(np.asarray(pred, dtype=np.float32), present), half_windows, edges)


def concat_valid(dataset: TrackDataset, preds: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Predictions and labels of every valid labelled frame of the split, concatenated (as CCC is scored)."""
    pred_rows, true_rows = [], []
    for track, pred in zip(dataset.tracks, preds):
        if track.labels is None:
            continue
        valid = np.asarray(track.labels.valid, dtype=bool)
        pred_rows.append(pred[valid])
        true_rows.append(np.asarray(track.labels.values)[valid])
    if not pred_rows:
        raise ValueError("no labelled frames to score")
    return np.concatenate(pred_rows), np.concatenate(true_rows)


def score(dataset: TrackDataset, preds: Sequence[np.ndarray]) -> dict[str, float]:
    """CCC_V, CCC_A and P over all valid frames of the dataset's tracks concatenated. NaN predictions on
    valid frames are refused with one line naming the first track (a NaN would make every score NaN)."""
    check_finite(dataset, preds)
    pred, true = concat_valid(dataset, preds)
    return va_scores(pred, true)


def check_finite(dataset: TrackDataset, preds: Sequence[np.ndarray]) -> None:
    """ValueError when a prediction on a valid labelled frame is NaN or infinite."""
    bad = []
    for track, pred in zip(dataset.tracks, preds):
        if track.labels is None:
            continue
        rows = np.asarray(pred)[np.asarray(track.labels.valid, dtype=bool)]
        n = int((~np.isfinite(rows)).any(axis=1).sum())
        if n:
            bad.append((track.name, n))
    if bad:
        total = sum(n for _, n in bad)
        raise ValueError(
            f"predictions are NaN/inf on {total} valid frame(s) of {len(bad)} track(s), first {bad[0][0]} "
            f"({bad[0][1]} frame(s)): the model output is not finite, nothing was scored"
        )


def choose_smoothing(
    dataset: TrackDataset, split: SplitPredictions, grid: Sequence[int], edges: str = "shrink"
) -> tuple[tuple[int, int], dict[str, dict[int, float]]]:
    """Half-windows for V and A (each chosen alone) that maximise CCC on this dataset."""
    filled = [fill_missing(p, m) for p, m in zip(split.va, split.has_feature)]
    curves: dict[str, dict[int, float]] = {"ccc_v": {}, "ccc_a": {}}
    true_rows = concat_valid(dataset, filled)[1]
    for half in sorted(set(int(h) for h in grid) | {0}):
        smoothed = [smooth_va(p, (half, half), edges) for p in filled]
        pred_rows = concat_valid(dataset, smoothed)[0]
        curves["ccc_v"][half] = ccc(pred_rows[:, 0], true_rows[:, 0])
        curves["ccc_a"][half] = ccc(pred_rows[:, 1], true_rows[:, 1])
    best_v = max(curves["ccc_v"], key=lambda h: (curves["ccc_v"][h], -h))
    best_a = max(curves["ccc_a"], key=lambda h: (curves["ccc_a"][h], -h))
    return (best_v, best_a), curves


def evaluate_predictions(
    dataset: TrackDataset,
    split: SplitPredictions,
    half_windows: tuple[int, int] | None = None,
    grid: Sequence[int] | None = None,
    edges: str = "shrink",
) -> EvalResult:
    """Raw and smoothed scores. Smoothing half-windows are given, or chosen here from `grid`; `edges` is
    how the moving average treats the ends of a track (moving_average)."""
    raw_preds = [postprocess(p, m) for p, m in zip(split.va, split.has_feature)]
    raw = score(dataset, raw_preds)
    curves: dict[str, dict[int, float]] = {}
    if half_windows is None:
        half_windows, curves = choose_smoothing(dataset, split, grid or [0], edges)
    smoothed_preds = [postprocess(p, m, half_windows, edges) for p, m in zip(split.va, split.has_feature)]
    smoothed = score(dataset, smoothed_preds)
    frames = sum(int(t.labels.valid.sum()) for t in dataset.tracks if t.labels is not None)
    return EvalResult(raw=raw, smoothed=smoothed, half_windows=tuple(half_windows), frames=frames, grid=curves, edges=edges,
                      per_track=per_track_scores(dataset, smoothed_preds))


def per_track_scores(dataset: TrackDataset, preds: Sequence[np.ndarray]) -> dict[str, dict[str, float]]:
    """CCC_V, CCC_A, P and the valid frames of each labelled track on its own (NaN where a track has
    fewer than 2 valid frames or constant labels)."""
    out: dict[str, dict[str, float]] = {}
    for track, pred in zip(dataset.tracks, preds):
        if track.labels is None:
            continue
        valid = np.asarray(track.labels.valid, dtype=bool)
        n = int(valid.sum())
        if n < 2:
            out[track.name] = {"ccc_v": float("nan"), "ccc_a": float("nan"), "P": float("nan"), "frames": n}
            continue
        true = np.asarray(track.labels.values)[valid]
        scores = va_scores(np.asarray(pred)[valid], true)
        out[track.name] = {**{k: float(v) for k, v in scores.items()}, "frames": n}
    return out


