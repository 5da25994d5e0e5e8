"""The behaviour branch on cached segments: the row selector (`qwen3vl:mm_last`), segment targets and the
segment-to-frame expansion by hand, and the segment-level trainer through the CLI (RAS's Qwen row
ablation: the informative row beats the noisy one), evaluated and exported like any run."""

from __future__ import annotations

from train.config import TrainConfig  # noqa: E402
import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from cache.store import FeatureStore, store_path
from cache.media import frame_times
from train.data.sources import open_features
from train.data.rows import UnknownRow, split_feature
from train.data.segments import expand_to_frames, segment_targets
from train.data.synthetic import SynthConfig, default_tracks, make_synthetic, write_multirow_segment_store

torch.set_num_threads(1)


def test_split_feature():
    assert split_feature("qwen3vl:mm_last") == ("qwen3vl", "mm_last")
    assert split_feature("clip") == ("clip", None)
    with pytest.raises(ValueError):
        split_feature("qwen3vl:")


def test_segment_targets_by_hand():
    fps = 4.0  # frame k covers [k/4, (k+1)/4)
    k = np.arange(10, dtype=np.float32)
    labels = np.stack([k, -k / 10], axis=1)
    valid = np.ones(10, bool)
    valid[3] = False
    valid[6:8] = False
    segments = np.array([[0.0, 1.0], [0.5, 1.5], [1.5, 2.0], [2.0, 2.5]])
    values, mask = segment_targets(labels, valid, frame_times(10, fps), segments)
    # [0, 1): frames 0..3, frame 3 invalid -> mean(0, 1, 2) = 1
    # [0.5, 1.5): frames 2..5, 3 invalid -> mean(2, 4, 5) = 11/3
    # [1.5, 2): frames 6, 7, both invalid -> no target
    # [2, 2.5): frames 8, 9 -> 8.5
    assert mask.tolist() == [True, True, False, True]
    np.testing.assert_allclose(values[mask, 0], [1.0, 11 / 3, 8.5], rtol=1e-6)
    np.testing.assert_allclose(values[mask, 1], [-0.1, -11 / 30, -0.85], rtol=1e-5)


def test_segment_targets_weigh_frames_cut_by_an_edge_by_their_overlap():
    # fps 2: frame 0 = [0, .5), frame 1 = [.5, 1); segment [0.25, 1) holds half of frame 0 and all of frame 1
    values, mask = segment_targets(np.array([[0.0, 0.0], [3.0, 3.0]], np.float32), np.ones(2, bool),
                                   frame_times(2, 2.0), np.array([[0.25, 1.0]]))
    assert mask.all()
    np.testing.assert_allclose(values[0], [2.0, 2.0])  # (0.25 * 0 + 0.5 * 3) / 0.75


def test_expand_to_frames_by_overlap_averaging():
    segments = np.array([[0.0, 1.0], [0.5, 1.5], [1.5, 2.0]])
    seg_values = np.array([[1.0, 10.0], [3.0, 30.0], [7.0, 70.0]], np.float32)
    present = np.array([True, True, False])
    frames, mask = expand_to_frames(seg_values, segments, present, frame_times(5, 2.0))
    # frames [0,.5) [.5,1) [1,1.5) [1.5,2) [2,2.5)
    assert mask.tolist() == [True, True, True, False, False]
    np.testing.assert_allclose(frames[:3, 0], [1.0, 2.0, 3.0])
    np.testing.assert_allclose(frames[:3, 1], [10.0, 20.0, 30.0])


@pytest.fixture(scope="module")
def qwen_cache(tmp_path_factory):
    base = tmp_path_factory.mktemp("segments")
    tracks = default_tracks(n_train=6, n_val=3, n_test=1, frames=(900, 1400), seed=4)
    truth = make_synthetic(base / "data", base / "cache", SynthConfig(tracks=tracks, noise=0.1))
    write_multirow_segment_store(base / "cache", "qwen3vl", tracks, truth, dim=12)
    return base


def test_row_selector_reads_one_named_row(qwen_cache):
    sources = open_features(qwen_cache / "cache", ["qwen3vl:mm_last", "qwen3vl"])
    assert sources["qwen3vl:mm_last"].dim == 12 and sources["qwen3vl"].dim == 4 * 12
    store = FeatureStore.open(store_path(qwen_cache / "cache", "qwen3vl"))
    unit = store.units()[0]
    whole = store.read(unit).values
    np.testing.assert_array_equal(sources["qwen3vl:mm_last"].read(unit).values, whole[:, 1])
    with pytest.raises(UnknownRow, match="mm_mean, mm_last, vis_mean, vis_last"):
        open_features(qwen_cache / "cache", ["qwen3vl:nope"])


def _train(base, feature: str, name: str) -> None:
    from pipeline import app

    res = CliRunner().invoke(app, [
        "train", "--model", "mamba", "--features", feature, "--level", "segment", "--window", "16", "--stride", "8",
        "--name", name, "--epochs", "6", "--lr", "3e-3", "--batch-size", "4",
        "--head", "hidden=16", "--head", "layers=2", "--head", "d_state=8", "--head", "d_conv=5",
        "--data-root", str(base / "data"), "--cache-dir", str(base / "cache"), "--runs-dir", str(base / "runs"),
        "--device", "cpu",
    ])
    assert res.exit_code == 0, res.output


def test_qwen_row_ablation_from_the_cli(qwen_cache):
    base = qwen_cache
    _train(base, "qwen3vl:mm_last", "mm_last")
    _train(base, "qwen3vl:vis_mean", "vis_mean")
    scores = {n: json.loads((base / "runs" / n / "eval_val.json").read_text())["raw"]["P"] for n in ("mm_last", "vis_mean")}
    assert scores["mm_last"] > 0.5, scores
    assert scores["mm_last"] > scores["vis_mean"] + 0.2, scores
    config = TrainConfig.load(base / "runs" / "mm_last" / "config.yaml").to_dict()
    assert config["data"]["level"] == "segment" and config["data"]["features"] == ["qwen3vl:mm_last"]


def test_segment_run_evaluates_and_exports_per_frame(qwen_cache):
    from train.results.evaluate import evaluate_run
    from train.results.export import export_run

    base = qwen_cache
    if not (base / "runs" / "mm_last" / "config.yaml").is_file():
        _train(base, "qwen3vl:mm_last", "mm_last")
    result = evaluate_run("mm_last", "val", str(base / "runs"), "cpu")
    stored = json.loads((base / "runs" / "mm_last" / "eval_val.json").read_text())
    assert result.raw["P"] == pytest.approx(stored["raw"]["P"], abs=1e-5)
    report = export_run("mm_last", "behaviour", runs_dir=base / "runs", device="cpu")
    store = FeatureStore.open(store_path(base / "cache", "behaviour"))
    assert store.meta.kind == "frame"
    for track in default_tracks(n_train=6, n_val=3, n_test=1, frames=(900, 1400), seed=4):
        group = store.read(track.name)
        assert len(group.values) == track.n_frames  # one row per label frame, expanded from segments
        assert group.values.shape[1] == report.dim == 16 + 2
        assert group.valid.mean() > 0.95


def test_each_row_gets_its_own_standardization(qwen_cache):
    from cache.manifest import load_manifest
    from train.data.standardize import fit_standardizer

    sources = open_features(qwen_cache / "cache", ["qwen3vl:mm_last", "qwen3vl:vis_mean"])
    tracks = load_manifest(qwen_cache / "data", splits=("train",)).split("train")
    first = fit_standardizer(sources, tracks)
    again = fit_standardizer(sources, tracks)  # read back from the store's kept statistics
    for std in (first, again):
        a, b = std.stats["qwen3vl:mm_last"], std.stats["qwen3vl:vis_mean"]
        assert len(a.mean) == len(b.mean) == 12
        assert not np.allclose(a.std, b.std)  # the informative row spreads wider than the noisy one
    np.testing.assert_allclose(first.stats["qwen3vl:vis_mean"].mean, again.stats["qwen3vl:vis_mean"].mean)
