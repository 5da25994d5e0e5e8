"""Experiment tracking: TensorBoard event files in every run folder with the keys of metrics.jsonl, and
`pipeline.py runs` comparing the runs of a runs dir (table, sort, --diff)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from train.config import DataConfig, TrainConfig
from train.fit.loop import train
from train.data.synthetic import SynthConfig, default_tracks, make_synthetic

torch.set_num_threads(1)


def _cfg(base: Path, name: str, lr: float, window: int = 48, epochs: int = 2) -> TrainConfig:
    data = DataConfig(features=["clip"], data_root=str(base / "data"), cache_dir=str(base / "cache"), window=window, stride=window)
    return TrainConfig(model="gru", data=data, name=name, runs_dir=str(base / "runs"), head={"hidden": 8}, epochs=epochs,
                       lr=lr, batch_size=4, device="cpu", smooth_grid=[0, 2], max_steps_per_epoch=6)


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    base = tmp_path_factory.mktemp("tracking")
    make_synthetic(base / "data", base / "cache", SynthConfig(tracks=default_tracks(3, 2, 0, (150, 200), seed=2)))
    train(_cfg(base, "slow", lr=1e-4))
    train(_cfg(base, "fast", lr=3e-2, window=32, epochs=3))
    return base


def _scalars(run: Path) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run))
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def test_every_run_folder_has_tensorboard_curves_of_its_metrics(base):
    """Grouped tags (train/…, val/…, time/…) on one axis, the optimizer steps: per-epoch metrics at each
    epoch's last step, the loss of every step, and the final numbers with the run's settings (HParams)."""
    from train.runs.tracking import tag

    run = base / "runs" / "fast"
    assert list(run.glob("events.out.tfevents.*"))
    rows = [json.loads(l) for l in (run / "metrics.jsonl").read_text().splitlines()]
    numeric = {k for k, v in rows[0].items() if isinstance(v, (int, float)) and not isinstance(v, bool) and k != "epoch"}
    scalars = _scalars(run)
    final = {"final/P_smoothed", "final/ccc_v_smoothed", "final/ccc_a_smoothed", "final/P_raw", "final/ccc_v_raw",
             "final/ccc_a_raw", "final/best_epoch", "final/epochs_run"}
    assert set(scalars) == {tag(k) for k in numeric} | {"train/loss_step", "train/epoch"} | final
    assert {"train/loss", "val/P_raw", "val/ccc_v", "train/lr", "time/epoch_s"} <= set(scalars)
    ends = [sum(r["steps"] for r in rows[: i + 1]) for i in range(len(rows))]  # optimizer steps at each epoch's end
    for key in numeric:
        assert [s for s, _ in scalars[tag(key)]] == ends
        assert [v for _, v in scalars[tag(key)]] == pytest.approx([r[key] for r in rows], rel=1e-5, abs=1e-7)
    assert [v for _, v in scalars["train/epoch"]] == [1, 2, 3]
    per_step = scalars["train/loss_step"]
    assert [s for s, _ in per_step] == list(range(1, ends[-1] + 1))
    first = [v for s, v in per_step if s <= ends[0]]
    assert sum(first) / len(first) == pytest.approx(rows[0]["train_loss"], rel=1e-4)  # the epoch's loss is their mean
    stored = json.loads((run / "eval_val.json").read_text())
    assert scalars["final/P_smoothed"] == [(ends[-1], pytest.approx(stored["smoothed"]["P"], abs=1e-6))]

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import plugin_data_pb2

    acc = EventAccumulator(str(run))
    acc.Reload()
    content = acc.PluginTagToContent("hparams")
    start = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/session_start_info"]).session_start_info
    assert start.hparams["lr"].number_value == pytest.approx(3e-2) and start.hparams["model"].string_value == "gru"
    assert start.hparams["data.window"].number_value == 32
    experiment = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/experiment"]).experiment
    assert "final/P_smoothed" in {m.name.tag for m in experiment.metric_infos}


def test_resume_replaces_the_curves_after_the_checkpoint(base):
    run = base / "runs" / "fast"
    train(_cfg(base, "fast", lr=3e-2, window=32, epochs=4), resume=True)
    scalars = _scalars(run)
    rows = [json.loads(l) for l in (run / "metrics.jsonl").read_text().splitlines()]
    ends = [sum(r["steps"] for r in rows[: i + 1]) for i in range(len(rows))]
    assert [s for s, _ in scalars["val/P_raw"]] == ends and len(ends) == 4  # no step written twice
    assert [s for s, _ in scalars["train/loss_step"]] == list(range(1, ends[-1] + 1))


def test_tensorboard_starts_from_the_installed_environment():
    """`tensorboard --logdir …` as the README says: its entry point imports (setuptools' pkg_resources is
    pinned for tensorboard 2.20) and answers."""
    import subprocess
    import sys

    from tensorboard.main import run_main  # noqa: F401 - the console script's target

    done = subprocess.run([sys.executable, "-m", "tensorboard.main", "--version_tb"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().startswith("2.20")


def test_runs_table_sort_and_diff(base):
    from pipeline import app

    runner = CliRunner()
    runs = str(base / "runs")
    out = runner.invoke(app, ["runs", "--runs-dir", runs, "--sort", "name"], env={"COLUMNS": "200"})
    assert out.exit_code == 0, out.output
    header = next(l for l in out.output.splitlines() if "┃" in l)
    assert "name" in header and "val P smoothed" in header and "val P raw (best epoch)" in header and "smoothing" in header
    body = [l for l in out.output.splitlines() if "│" in l]
    assert [l.split("│")[1].strip() for l in body] == ["fast", "slow"]
    slow = json.loads((base / "runs" / "slow" / "eval_val.json").read_text())
    cells = [c.strip() for c in body[1].split("│")[1:-1]]
    assert cells[:4] == ["slow", "gru", "clip", "2"]
    assert cells[4] == f"{slow['smoothed']['P']:.4f}" and cells[6] == f"{slow['smoothed']['ccc_v']:.4f}"
    raw = max(json.loads(l)["val_P"] for l in (base / "runs" / "slow" / "metrics.jsonl").read_text().splitlines())
    assert cells[5] == f"{raw:.4f}"
    hv, ha = slow["half_windows"]
    assert cells[8] == f"V {hv}, A {ha}"

    by_p = runner.invoke(app, ["runs", "--runs-dir", runs, "--sort", "P"], env={"COLUMNS": "200"})
    order = [l.split("│")[1].strip() for l in by_p.output.splitlines() if "│" in l]
    p = {n: json.loads((base / "runs" / n / "eval_val.json").read_text())["smoothed"]["P"] for n in ("fast", "slow")}
    assert order == sorted(p, key=p.get, reverse=True)

    diff = runner.invoke(app, ["runs", "--runs-dir", runs, "--diff", "slow", "fast"], env={"COLUMNS": "200"})
    assert diff.exit_code == 0, diff.output
    keys = {l.split("│")[1].strip(): l for l in diff.output.splitlines() if "│" in l}
    assert set(keys) == {"lr", "data.window", "data.stride", "epochs"}
    assert "0.0001" in keys["lr"] and "0.03" in keys["lr"]

    bad = runner.invoke(app, ["runs", "--runs-dir", runs, "--sort", "loss"])
    assert bad.exit_code == 1 and "--sort must be one of" in bad.output
    missing = runner.invoke(app, ["runs", "--runs-dir", runs, "--diff", "slow", "nope"])
    assert missing.exit_code == 1 and "no run 'nope'" in missing.output


def test_runs_in_a_pipe_is_one_line_per_run_and_tsv_json_read_back(base, tmp_path):
    """`pipeline.py runs | cat` with a long run name: nothing wrapped or cut (rich's 80 columns off a terminal
    split it before); --format tsv and json give the same values for scripts."""
    import os
    import shutil
    import subprocess
    import sys

    long_name = "demo-dcmmoe-face_gru-clip-wavlm-qwen3vl-window400-stride150-lr0.0001-seed42-a-name-longer-than-80"
    runs = tmp_path / "runs"
    shutil.copytree(base / "runs" / "slow", runs / long_name)
    env = {k: v for k, v in os.environ.items() if k != "COLUMNS"}
    root = Path(__file__).resolve().parents[1]

    def run(*args: str) -> str:
        done = subprocess.run([sys.executable, str(root / "pipeline.py"), "runs", "--runs-dir", str(runs), *args],
                              capture_output=True, text=True, env=env, cwd=root, timeout=120)
        assert done.returncode == 0, done.stderr
        return done.stdout

    lines = run().splitlines()
    body = [l for l in lines if long_name in l]
    assert len(body) == 1  # the whole name on one row, with every other cell
    assert [c.strip() for c in body[0].split("│")[1:5]] == [long_name, "gru", "clip", "2"]
    assert all(len(l) < 400 for l in lines)  # as wide as the cells, not padded to an unlimited width
    assert not any("…" in l for l in lines)
    smoothed = json.loads((runs / long_name / "eval_val.json").read_text())["smoothed"]["P"]

    header, row = run("--format", "tsv").splitlines()
    cells = dict(zip(header.split("\t"), row.split("\t")))
    assert cells["name"] == long_name and cells["features"] == "clip"
    assert float(cells["val_P_smoothed"]) == pytest.approx(smoothed, abs=1e-6)
    assert "val_P_raw" in cells

    (record,) = json.loads(run("--format", "json"))
    assert record["name"] == long_name and record["val_P_smoothed"] == pytest.approx(smoothed, abs=1e-6)

    # a run that has not finished: no smoothed P yet (never ranked on its raw one), its raw P shown apart
    shutil.copytree(base / "runs" / "fast", runs / "unfinished")
    (runs / "unfinished" / "eval_val.json").unlink()
    records = json.loads(run("--format", "json", "--sort", "P"))
    assert [r["name"] for r in records] == [long_name, "unfinished"]
    assert records[1]["val_P_smoothed"] is None and records[1]["val_P_raw"] is not None


def test_train_in_a_pipe_prints_whole_lines_with_p_labelled(base, tmp_path):
    """`pipeline.py train … 2>&1 | tee log` with a runs dir deeper than 80 columns: every epoch line whole,
    its P called raw; the run folder's path on one line; the final table's rows raw and smoothed."""
    import os
    import subprocess
    import sys

    runs = tmp_path / ("a-runs-folder-with-a-long-name-" * 3) / "runs"
    root = Path(__file__).resolve().parents[1]
    env = {**{k: v for k, v in os.environ.items() if k != "COLUMNS"}, "PYTHONPATH": str(root)}
    done = subprocess.run(
        [sys.executable, str(root / "pipeline.py"), "train", "--model", "gru", "--features", "clip", "--name", "piped",
         "--data-root", str(base / "data"), "--cache-dir", str(base / "cache"), "--runs-dir", str(runs), "--device", "cpu",
         "--epochs", "2", "--window", "48", "--stride", "48", "--head", "hidden=8", "--max-steps", "3", "eval.smooth_grid=[0,2]"],
        capture_output=True, text=True, env=env, cwd=root, timeout=300)
    assert done.returncode == 0, done.stderr
    epochs = [l for l in (done.stdout + done.stderr).splitlines() if l.startswith("epoch ") and "val CCC_V" in l]
    assert len(epochs) == 2
    assert all(" P raw " in l and " data wait " in l for l in epochs)  # one line each, not split at 80 columns
    assert f"run folder: {runs / 'piped'}" in done.stdout.splitlines()
    rows = [l for l in done.stdout.splitlines() if l.startswith("| val |")]
    assert [l.split("|")[2].strip().split(" ")[0] for l in rows] == ["raw", "smoothed"]
