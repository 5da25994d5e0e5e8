"""`tracking: mlflow`: a run started as a user would (a recipe key on the command line) also lands in a local
MLflow store under the runs dir, with the run's settings, the same metrics as metrics.jsonl on the same step
axis, and the final smoothed P. Runs where the `mlflow` extra is installed."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import pytest
from typer.testing import CliRunner

ROOT = Path(__file__).resolve().parents[1]
FAST = ["optim.epochs=2", "optim.max_steps_per_epoch=3", "optim.lr=0.01", "head.hidden=8", "head.gru_hidden=8",
        "data.window=48", "data.stride=48", "eval.smooth_grid=[0,2]"]


def test_the_extra_is_declared():
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert any(r.startswith("mlflow-skinny") for r in extras["mlflow"])


def test_a_run_with_tracking_mlflow(tmp_path):
    mlflow = pytest.importorskip("mlflow")
    import torch

    from pipeline import app
    from train.data.synthetic import SynthConfig, default_tracks, make_synthetic

    torch.set_num_threads(1)
    make_synthetic(tmp_path / "data", tmp_path / "cache", SynthConfig(tracks=default_tracks(2, 1, 0, (120, 150), seed=3)))
    runs = tmp_path / "runs"
    res = CliRunner().invoke(app, [
        "train", "--model", "gru", "--features", "clip", "--name", "tracked", "--data-root", str(tmp_path / "data"),
        "--cache-dir", str(tmp_path / "cache"), "--runs-dir", str(runs), "--device", "cpu", *FAST, "tracking=mlflow"])
    assert res.exit_code == 0, res.output
    run = runs / "tracked"
    ids = json.loads((run / "mlflow.json").read_text())
    assert ids["tracking_uri"] == (runs / "mlruns").resolve().as_uri() and (runs / "mlruns").is_dir()

    client = mlflow.tracking.MlflowClient(tracking_uri=ids["tracking_uri"])
    got = client.get_run(ids["run_id"])
    assert got.info.run_name == "tracked" and got.info.status == "FINISHED"
    assert got.data.params["model"] == "gru" and float(got.data.params["lr"]) == 0.01
    assert got.data.params["data.window"] == "48" and got.data.params["tracking"] == "mlflow"
    rows = [json.loads(l) for l in (run / "metrics.jsonl").read_text().splitlines()]
    history = client.get_metric_history(ids["run_id"], "val/P_raw")
    ends = [sum(r["steps"] for r in rows[: i + 1]) for i in range(len(rows))]
    assert [(m.step, m.value) for m in history] == [(s, pytest.approx(r["val_P"], abs=1e-6)) for s, r in zip(ends, rows)]
    assert len(client.get_metric_history(ids["run_id"], "train/loss_step")) == ends[-1]
    stored = json.loads((run / "eval_val.json").read_text())
    assert got.data.metrics["final/P_smoothed"] == pytest.approx(stored["smoothed"]["P"], abs=1e-6)
    artifacts = {a.path for a in client.list_artifacts(ids["run_id"])}
    assert {"report.md", "config.json"} <= artifacts


def test_an_unknown_tracker_is_one_line(tmp_path):
    from pipeline import app

    res = CliRunner().invoke(app, ["train", "--model", "gru", "--features", "clip", "--runs-dir", str(tmp_path), "tracking=wandb"])
    assert res.exit_code == 1
    assert "unknown tracker 'wandb'; trackers: mlflow, tensorboard (recipe key `tracking`)" in res.output
