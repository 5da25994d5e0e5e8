"""The experiment loop without friction (issue 23): unique default run names (head, features, a digest of the
settings), `train --resume RUN` alone continuing a run from its config.yaml with the overrides given now
applied and said, `runs --diff` over resolved nested configs with metrics side by side, and
`train --print-config` showing the resolved recipe without training."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

import pipeline
from train.config import TrainConfig

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def synth(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from train.data.synthetic import SynthConfig, default_tracks, make_synthetic

    base = tmp_path_factory.mktemp("loop")
    make_synthetic(base / "data", base / "cache", SynthConfig(tracks=default_tracks(3, 2, 0, (120, 160), seed=4), visual_dim=8, audio_dim=4))
    return base


def _cli(*args) -> "object":
    return CliRunner().invoke(pipeline.app, [str(a) for a in args], env={"COLUMNS": "250"})


def _train(synth: Path, *extra) -> "object":
    return _cli("train", "--model", "gru", "--features", "clip", "--epochs", "1", "--window", "32", "--stride", "32",
                "--batch-size", "4", "--head", "hidden=8", "--max-steps", "3", "--data-root", synth / "data",
                "--cache-dir", synth / "cache", "--runs-dir", synth / "runs", "--device", "cpu", *extra)


def _runs(synth: Path) -> list[str]:
    runs = synth / "runs"
    return sorted(p.name for p in runs.iterdir() if (p / "config.yaml").is_file()) if runs.is_dir() else []


def test_variants_get_their_own_default_names_and_a_run_resumes_by_name(synth, caplog):
    first = _train(synth)
    assert first.exit_code == 0, first.output
    second = _train(synth, "--lr", "3e-3")  # a second variant: not refused for its name
    assert second.exit_code == 0, second.output
    names = _runs(synth)
    assert len(names) == 2 and all(re.fullmatch(r"gru-clip-[0-9a-f]{6}", n) for n in names), names
    again = _train(synth)  # the same recipe again: the same name, which holds a checkpoint
    assert again.exit_code == 1 and "pass --resume" in again.output
    longer = _train(synth, "--epochs", "2", "--resume")  # a longer schedule is the same run
    assert longer.exit_code == 0, longer.output
    assert _runs(synth) == names

    # `train --resume RUN` alone: from its config.yaml; what is given now applies and is said
    run = next(n for n in names if TrainConfig.load(synth / "runs" / n / "config.yaml").lr == 3e-3)
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="train.fit.loop"):
        res = _cli("train", "--resume", run, "--epochs", "2", "optim.weight_decay=0.05", "--runs-dir", synth / "runs")
    assert res.exit_code == 0, res.output
    said = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert said == [f"resuming {run} with changed settings: optim.epochs 1 -> 2, optim.weight_decay 0.01 -> 0.05"]
    cfg = TrainConfig.load(synth / "runs" / run / "config.yaml")
    assert (cfg.epochs, cfg.weight_decay, cfg.lr) == (2, 0.05, 3e-3)
    rows = (synth / "runs" / run / "metrics.jsonl").read_text().splitlines()
    assert len(rows) == 2 and _runs(synth) == names
    # the same with --name RUN --resume; the model it trains cannot change under a checkpoint
    caplog.clear()
    same = _cli("train", "--name", run, "--resume", "--epochs", "2", "--runs-dir", synth / "runs")
    assert same.exit_code == 0, same.output
    assert not [r for r in caplog.records if "changed settings" in r.getMessage()]
    other = _cli("train", "--resume", run, "head.hidden=16", "--runs-dir", synth / "runs")
    assert other.exit_code == 1 and "cannot resume with another head.hidden" in " ".join(other.output.split())


def test_runs_diff_compares_resolved_configs_and_metrics(synth):
    if len(_runs(synth)) < 2:  # run alone: the two variants the test above trains
        assert _train(synth).exit_code == 0 and _train(synth, "--lr", "3e-3").exit_code == 0
    a, b = _runs(synth)
    res = _cli("runs", "--runs-dir", synth / "runs", "--diff", a, b)
    assert res.exit_code == 0, res.output
    rows = {line.split("│")[1].strip(): line for line in res.output.splitlines() if "│" in line}
    assert "optim.lr" in rows and "lr" not in rows  # nested keys, dotted
    assert "head.hidden" not in rows and "name" not in rows
    for metric in ("val P (smoothed)", "val P (raw)", "best epoch", "epochs run"):
        assert metric in rows, rows.keys()
    import json

    def best(name):
        lines = [json.loads(x) for x in (synth / "runs" / name / "metrics.jsonl").read_text().splitlines()]
        return max(lines, key=lambda r: r["val_P"])["epoch"]

    assert [c.strip() for c in rows["best epoch"].split("│")[2:4]] == [str(best(a)), str(best(b))]
    # a run retrained from its own config.yaml differs from it in nothing (defaults filled on both sides)
    again = _cli("train", "--config", synth / "runs" / a / "config.yaml", "name=copy", "--max-steps", "3",
                 "--runs-dir", synth / "runs")
    assert again.exit_code == 0, again.output
    same = _cli("runs", "--runs-dir", synth / "runs", "--diff", a, "copy")
    keys = [line.split("│")[1].strip() for line in same.output.splitlines() if "│" in line]
    assert keys[0] == "(config)" and "same config" in same.output and not any(k.startswith(("optim.", "head.", "data.")) for k in keys)


def test_print_config_shows_the_resolved_recipe_without_training(synth, tmp_path):
    res = _cli("train", "--model", "gru", "--features", "clip", "--lr", "5e-4", "--print-config", "--runs-dir", tmp_path / "runs",
               "--data-root", synth / "data", "--cache-dir", synth / "cache")
    assert res.exit_code == 0, res.output
    from omegaconf import OmegaConf

    printed = OmegaConf.to_container(OmegaConf.create(res.output))
    assert printed["optim"]["lr"] == 5e-4 and printed["model"] == "gru" and printed["data"]["features"] == ["clip"]
    assert printed["head"]["hidden"] == 256  # the head's defaults filled, as config.yaml holds them
    assert re.search(r"# resolved recipe; the run: .*gru-clip-[0-9a-f]{6}", res.output)
    assert not (tmp_path / "runs").exists()
