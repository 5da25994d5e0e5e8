"""Per-track CCC (report.md, `evaluate --per-track`) and `evaluate --split test --labels DIR` where the test
ground truth is given (the sample ships it as challenge label files in ground_truth/Test_Set), issue 23."""

from __future__ import annotations

import csv
import json

import numpy as np
from typer.testing import CliRunner

from cache.sample_data import TEST_LABELS_DIR
from train.scoring.metrics import ccc


def _cli(*args):
    from pipeline import app

    return CliRunner().invoke(app, [str(a) for a in args], env={"COLUMNS": "200"})


def test_evaluate_the_test_split_against_given_labels_per_track(mini_demo):
    art = mini_demo / "artifacts"
    run = ["demo-gru-landmarks", "--runs-dir", art / "runs", "--device", "cpu"]
    refused = _cli("evaluate", *run, "--split", "test")
    assert refused.exit_code == 1 and "--labels DIR" in refused.output and "ground_truth/Test_Set" in refused.output

    truth = art / "sample" / TEST_LABELS_DIR
    res = _cli("evaluate", *run, "--split", "test", "--labels", truth, "--per-track")
    assert res.exit_code == 0, res.output
    result = json.loads((art / "runs" / "demo-gru-landmarks" / "eval_test.json").read_text())
    tracks = sorted(p.stem for p in truth.glob("*.txt"))
    assert sorted(result["per_track"]) == tracks and tracks
    # each track's numbers are the CCC of its own valid frames, as in the per-frame CSV
    with open(art / "runs" / "demo-gru-landmarks" / "predictions" / "test.frames.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    for name in tracks:
        mine = [r for r in rows if r["track"] == name and r["labelled"] == "1"]
        pred = np.array([[float(r["valence"]), float(r["arousal"])] for r in mine])
        true = np.array([[float(r["true_valence"]), float(r["true_arousal"])] for r in mine])
        got = result["per_track"][name]
        assert got["frames"] == len(mine)
        np.testing.assert_allclose([got["ccc_v"], got["ccc_a"]], [ccc(pred[:, 0], true[:, 0]), ccc(pred[:, 1], true[:, 1])], atol=1e-4)
        line = next(line for line in res.output.splitlines() if line.startswith(f"| {name} |"))
        assert f"{got['P']:.4f}" in line

    wrong = _cli("evaluate", *run, "--split", "test", "--labels", art / "sample" / "annotations")
    assert wrong.exit_code == 1 and "have no label file in" in wrong.output


def test_report_lists_the_ccc_of_every_validation_track(mini_demo):
    folder = mini_demo / "artifacts" / "runs" / "demo-gru-landmarks"
    report = folder / "report.md"
    text = report.read_text()
    assert "## CCC per track" in text
    per_track = json.loads((folder / "eval_val.json").read_text())["per_track"]
    assert per_track
    for name, s in per_track.items():
        assert f"| {name} | {s['ccc_v']:.4f} | {s['ccc_a']:.4f} | {s['P']:.4f} | {s['frames']} |" in text

    from train.scoring.evaluate import EvalResult
    from train.scoring.report import track_title

    result = EvalResult(raw={}, smoothed={}, half_windows=(0, 0), frames=0, per_track={"a": {"ccc_v": 0.5, "ccc_a": 0.25, "P": 0.375, "frames": 9}})
    assert track_title("a", result) == "a: CCC_V 0.500, CCC_A 0.250, P 0.375 (smoothed)"  # the plot's title
    assert track_title("b", result) == "b"


def test_report_plots_shade_the_frames_a_feature_was_missing(tmp_path, monkeypatch):
    """report.md's validation plots get the same shading as the --videos plots: per input feature, the
    frames it had no value (here: the synthetic clip store's invalid rows)."""
    import train.scoring.report as report
    from train.config import DataConfig, TrainConfig
    from train.data.synthetic import SynthConfig, default_tracks, make_synthetic
    from train.fit.loop import train
    from train.results.kinds import run_split_predictions

    make_synthetic(tmp_path / "data", tmp_path / "cache", SynthConfig(tracks=default_tracks(2, 1, 0, (120, 140), seed=6)))
    seen = {}
    real = report.plot_track
    monkeypatch.setattr(report, "plot_track", lambda title, *a, inputs=None, **k: (seen.__setitem__(title.split(":")[0], inputs), real(title, *a, inputs=inputs, **k)))
    data = DataConfig(features=["clip"], data_root=str(tmp_path / "data"), cache_dir=str(tmp_path / "cache"), window=32, stride=32)
    train(TrainConfig(model="gru", data=data, name="r", runs_dir=str(tmp_path / "runs"), head={"hidden": 8}, epochs=1,
                      batch_size=4, device="cpu", smooth_grid=[0], max_steps_per_epoch=2, n_plot_tracks=1))
    res = run_split_predictions("r", "val", tmp_path / "runs", "cpu")
    res.dataset.close()
    name = res.dataset.tracks[0].name
    assert set(seen[name]) == {"clip"}
    np.testing.assert_array_equal(seen[name]["clip"], res.preds.inputs[0]["clip"])
    np.testing.assert_array_equal(res.preds.inputs[0]["clip"], res.preds.has_feature[0])
