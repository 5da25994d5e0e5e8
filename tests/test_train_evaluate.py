"""Evaluation: per-frame averaging of overlapping windows, gap filling, smoothing, clipping, scoring."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from cache.manifest import load_manifest
from train.data.dataset import TrackDataset, window_starts
from train.data.sources import open_features
from train.scoring.evaluate import (
    SplitPredictions,
    accumulate_windows,
    choose_smoothing,
    evaluate_predictions,
    fill_missing,
    moving_average,
    postprocess,
    predict_split,
)
from train.heads import HeadOutput
from train.data.synthetic import SynthConfig, SynthTrack, make_synthetic

torch.set_num_threads(1)


def test_accumulate_windows_by_hand():
    a = np.array([[1, 1], [2, 2], [3, 3], [4, 4]], dtype=np.float32)
    b = np.array([[10, 0], [20, 0], [30, 0], [40, 0]], dtype=np.float32)
    out = accumulate_windows(6, [(0, a), (2, b)])
    expected = [[1, 1], [2, 2], [6.5, 1.5], [12, 2], [30, 0], [40, 0]]
    np.testing.assert_allclose(out, expected)
    assert accumulate_windows(3, [(0, a[:2])])[2].tolist() == [0, 0]  # uncovered frame


class PositionHead(nn.Module):
    """va = (position of the frame inside its window) / 1000, for both dimensions."""

    def forward(self, features, masks, pad):
        B, L = pad.shape
        pos = torch.arange(L, dtype=torch.float32).expand(B, L) / 1000
        va = torch.stack([pos, -pos], dim=-1)
        return HeadOutput(va=va, hidden=va)


def test_predict_split_averages_overlapping_windows(tmp_path):
    tracks = [SynthTrack("a", "val", 25.0, 150), SynthTrack("b", "val", 30.0, 40)]
    make_synthetic(tmp_path / "data", tmp_path / "cache", SynthConfig(tracks=tracks))
    manifest = load_manifest(tmp_path / "data", splits=("val",))
    ds = TrackDataset(manifest.split("val"), open_features(tmp_path / "cache", ["clip"]), window=64, stride=40)
    try:
        preds = predict_split(PositionHead(), ds, torch.device("cpu"), batch_size=3)
    finally:
        ds.close()
    starts = window_starts(150, 64, 40)
    assert starts == [0, 40, 80, 86]
    expected = np.zeros(150)
    for f in range(150):
        covering = [f - s for s in starts if s <= f < s + 64]
        expected[f] = np.mean(covering) / 1000
    np.testing.assert_allclose(preds.va[0][:, 0], expected, atol=1e-6)
    np.testing.assert_allclose(preds.va[0][:, 1], -expected, atol=1e-6)
    np.testing.assert_allclose(preds.va[1][:, 0], np.arange(40) / 1000, atol=1e-6)
    # frames 84 and 100 by hand: windows at 40, 80 (and 86 for 100)
    assert preds.va[0][84, 0] == pytest.approx((44 + 4) / 2 / 1000)
    assert preds.va[0][100, 0] == pytest.approx((60 + 20 + 14) / 3 / 1000)
    assert preds.has_feature[0].sum() == 150 - int(0.05 * 150)  # one no-face stretch


def test_moving_average_and_fill():
    np.testing.assert_allclose(moving_average(np.array([0, 0, 3, 0, 0.0]), 1), [0, 1, 1, 1, 0])
    np.testing.assert_allclose(moving_average(np.array([3, 0, 0.0]), 1), [1.5, 1, 0])
    np.testing.assert_allclose(moving_average(np.array([1, 2, 3.0]), 0), [1, 2, 3])
    pred = np.array([[0, 0], [9, 9], [9, 9], [3, 3], [9, 9]], dtype=np.float32)
    present = np.array([True, False, False, True, False])
    np.testing.assert_allclose(fill_missing(pred, present)[:, 0], [0, 1, 2, 3, 3])
    out = postprocess(np.array([[2.0, -3.0], [0.5, 0.5]]), np.array([True, True]))
    np.testing.assert_allclose(out, [[1, -1], [0.5, 0.5]])


def test_moving_average_with_repeated_edges_as_ras():
    x = np.array([3, 0, 0, 0, 6.0])
    # kernel 3: the ends see the edge value twice (RAS's replicate padding), not a shorter window
    np.testing.assert_allclose(moving_average(x, 1, "repeat"), [2, 1, 0, 2, 4])
    np.testing.assert_allclose(moving_average(x, 1), [1.5, 1, 0, 2, 3])
    # kernel 5 on 3 frames: pads of two edge values each side
    np.testing.assert_allclose(moving_average(np.array([1, 2, 4.0]), 2, "repeat"), [1.8, 2.4, 3.0], rtol=1e-6)
    # as RAS's code computes it (F.pad replicate + conv1d with a flat kernel of k = 2·half + 1)
    import torch
    import torch.nn.functional as F

    y = np.random.default_rng(3).normal(size=40)
    for k in (7, 13, 9, 11):
        ras = F.conv1d(F.pad(torch.tensor(y).view(1, 1, -1), (k // 2, k // 2), mode="replicate"), torch.ones(1, 1, k, dtype=torch.float64) / k)
        np.testing.assert_allclose(moving_average(y, k // 2, "repeat"), ras.view(-1).numpy(), atol=1e-6)
    np.testing.assert_allclose(moving_average(x, 0, "repeat"), x)
    out = postprocess(np.stack([x, x], 1) / 10, np.ones(5, bool), (1, 0), "repeat")
    np.testing.assert_allclose(out[:, 0], [0.2, 0.1, 0, 0.2, 0.4], atol=1e-6)
    np.testing.assert_allclose(out[:, 1], x / 10, atol=1e-6)
    with pytest.raises(ValueError, match="shrink, repeat"):
        moving_average(x, 1, "reflect")


def test_default_grid_holds_ras_kernels():
    from train.config import DataConfig, TrainConfig

    grid = TrainConfig(model="gru", data=DataConfig(features=["clip"])).smooth_grid
    assert {3, 4, 5, 6} <= set(grid)  # RAS's kernels 7 / 13 (val) and 9 / 11 (test) are half-windows 3, 6, 4, 5


def test_nan_predictions_are_one_line_error(tmp_path):
    tracks = [SynthTrack("a", "val", 25.0, 100)]
    make_synthetic(tmp_path / "data", tmp_path / "cache", SynthConfig(tracks=tracks, invalid_share=0.0))
    manifest = load_manifest(tmp_path / "data", splits=("val",))
    ds = TrackDataset(manifest.split("val"), open_features(tmp_path / "cache", ["clip"]), window=64, stride=32)
    try:
        va = ds.tracks[0].labels.values.astype(np.float32).copy()
        va[10:13] = np.nan
        split = SplitPredictions(va=[va], has_feature=[np.ones(len(va), bool)])
        with pytest.raises(ValueError, match=r"NaN/inf on 3 valid frame\(s\) of 1 track\(s\), first a ") as err:
            evaluate_predictions(ds, split, grid=[0, 1])
        assert "\n" not in str(err.value)
    finally:
        ds.close()


def test_smoothing_chosen_per_dimension(tmp_path):
    tracks = [SynthTrack("a", "val", 25.0, 600), SynthTrack("b", "val", 25.0, 500)]
    make_synthetic(tmp_path / "data", tmp_path / "cache", SynthConfig(tracks=tracks, invalid_share=0.0))
    manifest = load_manifest(tmp_path / "data", splits=("val",))
    ds = TrackDataset(manifest.split("val"), open_features(tmp_path / "cache", ["clip"]), window=64, stride=32)
    try:
        rng = np.random.default_rng(0)
        va = [t.labels.values + np.stack([0.5, 0.05]) * rng.normal(size=t.labels.values.shape) for t in ds.tracks]
        split = SplitPredictions(va=[v.astype(np.float32) for v in va], has_feature=[np.ones(len(v), bool) for v in va])
        (hv, ha), curves = choose_smoothing(ds, split, [0, 1, 4, 16, 64])
        assert hv > ha  # the noisier valence wants the longer window
        result = evaluate_predictions(ds, split, grid=[0, 1, 4, 16, 64])
        assert result.half_windows == (hv, ha)
        assert result.smoothed["P"] > result.raw["P"]
        assert result.smoothed["ccc_v"] == pytest.approx(curves["ccc_v"][hv])
        fixed = evaluate_predictions(ds, split, half_windows=(0, 0))
        assert fixed.smoothed == pytest.approx(fixed.raw)
    finally:
        ds.close()
