"""Sweeps: a grid of tiny trials gives the same runs as starting them by hand, and a re-run skips them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from pipeline import app
from train.config import DataConfig, TrainConfig
from train.fit.loop import train
from train.fit.sweep import SweepError, expand_trials, load_sweep
from train.data.synthetic import SynthConfig, SynthTrack, make_synthetic


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    root = tmp_path_factory.mktemp("sweep")
    tracks = [SynthTrack(f"tr{i}", "train", 25.0, 300) for i in range(3)] + [SynthTrack("va0", "val", 25.0, 300)]
    make_synthetic(root / "data", root / "cache", SynthConfig(tracks=tracks, region_prototypes=False))
    return root


def _sweep_file(root: Path) -> Path:
    path = root / "sweep.yaml"
    path.write_text(f"""
name: tiny
set:
  model: gru
  data.features: [clip, wavlm]
  data.data_root: {root / 'data'}
  data.cache_dir: {root / 'cache'}
  data.window: 100
  data.stride: 50
  optim.epochs: 1
  optim.max_steps_per_epoch: 3
  head.hidden: 8
  head.gru_hidden: 8
  eval.smooth_grid: [0, 2]
grid:
  optim.lr: [1.0e-3, 1.0e-2]
  seed: [1, 2]
""")

    return path


def _metrics(run: Path) -> list[dict]:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    for row in rows:  # timings differ between any two runs
        for key in [k for k in row if "time" in k or "wait" in k or k.endswith("_s") or "per_s" in k]:
            row.pop(key)
    return rows


def test_a_sweep_equals_the_runs_started_by_hand_and_resumes(synth, tmp_path):
    runs = tmp_path / "runs"
    result = CliRunner().invoke(app, ["sweep", "--config", str(_sweep_file(synth)), "--runs-dir", str(runs)])
    assert result.exit_code == 0, result.output
    folders = sorted(p.name for p in (runs / "tiny").iterdir() if p.is_dir())
    assert folders == ["lr0.001_seed1", "lr0.001_seed2", "lr0.01_seed1", "lr0.01_seed2"]
    assert (runs / "tiny" / "best.yaml").is_file()
    # one "best" everywhere: smoothed validation P, labelled, in the trial lines, the table and best.yaml
    import re

    lines = dict(re.findall(r"trial (\S+): trained val P smoothed (-?[0-9.]+) \(raw, best epoch -?[0-9.]+\)", result.output))
    assert len(lines) == 4
    winner = max(lines, key=lambda n: float(lines[n]))
    table = [l.split("│")[1].strip() for l in result.output.splitlines() if "│" in l]
    assert table[0] == winner and "best smoothed validation P first" in result.output
    header = (runs / "tiny" / "best.yaml").read_text().splitlines()[0]
    assert header == f"# best trial of sweep tiny: {winner}, validation P smoothed {float(lines[winner]):.4f}"
    stored = json.loads((runs / "tiny" / winner / "eval_val.json").read_text())["smoothed"]["P"]
    assert f"{stored:.4f}" == lines[winner]

    for lr, seed in ((1e-2, 2),):
        by_hand = TrainConfig(
            model="gru", name=f"hand-{lr}-{seed}", runs_dir=str(tmp_path / "hand"), lr=lr, seed=seed, epochs=1,
            max_steps_per_epoch=3, head={"hidden": 8, "gru_hidden": 8}, smooth_grid=[0, 2],
            data=DataConfig(features=["clip", "wavlm"], data_root=str(synth / "data"), cache_dir=str(synth / "cache"),
                            window=100, stride=50),
        )
        train(by_hand)
        trial = runs / "tiny" / f"lr{lr:.3g}_seed{seed}"
        assert _metrics(trial) == _metrics(tmp_path / "hand" / by_hand.name)
        swept = TrainConfig.load(trial / "config.yaml").to_dict()
        hand = TrainConfig.load(tmp_path / "hand" / by_hand.name / "config.yaml").to_dict()
        for cfg in (swept, hand):
            cfg.pop("name"), cfg.pop("runs_dir")
        assert swept == hand

    again = CliRunner().invoke(app, ["sweep", "--config", str(_sweep_file(synth)), "--runs-dir", str(runs), "--format", "json"])
    assert again.exit_code == 0
    assert again.stderr.count(": skipped val P smoothed") == 4  # the trial lines; stdout is the table alone
    records = json.loads(again.stdout)
    assert [r["name"] for r in records][0] == winner and len(records) == 4
    assert records[0]["val_P_smoothed"] == pytest.approx(float(lines[winner]), abs=1e-4)


def test_random_draws_are_reproducible_and_bad_keys_are_named(synth, tmp_path):
    space = {"samples": 3, "seed": 5, "space": {"optim.lr": {"loguniform": [1e-5, 1e-3]}, "head.hidden": [8, 16]}}
    first, second = expand_trials(None, space), expand_trials(None, space)
    assert [t.values for t in first] == [t.values for t in second]
    assert all(1e-5 <= t.values["optim.lr"] <= 1e-3 and t.values["head.hidden"] in (8, 16) for t in first)

    bad = tmp_path / "bad.yaml"
    bad.write_text("set:\n  model: gru\n  data.features: [clip]\ngrid:\n  optim.lrr: [1.0e-3]\n")
    with pytest.raises(SweepError, match="unknown key 'optim.lrr'.*optim.lr"):
        load_sweep(bad)


def test_a_sweep_on_ray_gives_the_local_runs(synth, tmp_path):
    """One Ray task per trial (a local 2-CPU cluster): the same run folders and metrics as the local backend."""
    ray = pytest.importorskip("ray")
    sweep = tmp_path / "sweep.yaml"
    sweep.write_text(_sweep_file(synth).read_text().replace("seed: [1, 2]", "seed: [1]"))
    local = CliRunner().invoke(app, ["sweep", "--config", str(sweep), "--runs-dir", str(tmp_path / "local")])
    assert local.exit_code == 0, local.output
    ray.init(num_cpus=2, include_dashboard=False, object_store_memory=100 * 2**20, log_to_driver=False)
    try:
        remote = CliRunner().invoke(app, ["sweep", "--config", str(sweep), "--runs-dir", str(tmp_path / "ray"),
                                          "--backend", "ray", "--cpus-per-trial", "1"])
    finally:
        ray.shutdown()
    assert remote.exit_code == 0, remote.output
    assert remote.output.count(": trained") == 2
    for trial in ("lr0.001_seed1", "lr0.01_seed1"):
        # a Ray worker runs torch on its own thread count: sums in another order, equal to float precision
        assert _metrics(tmp_path / "ray" / "tiny" / trial) == [
            {k: pytest.approx(v, rel=1e-5, abs=1e-7) if isinstance(v, float) else v for k, v in row.items()}
            for row in _metrics(tmp_path / "local" / "tiny" / trial)
        ]


def test_distinct_values_that_print_alike_are_distinct_trials():
    trials = expand_trials({"optim.lr": [1e-4, 1.00001e-4, 1e-4]}, None)
    names = [t.name for t in trials]
    assert len(trials) == 2 and len(set(names)) == 2  # the repeated 1e-4 is one trial, 1.00001e-4 another
    assert names[0] == "lr0.0001" and names[1].startswith("lr0.0001-")
    assert [t.values["optim.lr"] for t in trials] == [1e-4, 1.00001e-4]


def test_a_trial_whose_config_changed_is_retrained_not_reused(synth, tmp_path):
    runs = tmp_path / "runs"
    text = _sweep_file(synth).read_text().replace("  optim.lr: [1.0e-3, 1.0e-2]\n  seed: [1, 2]\n", "  seed: [1]\n")
    sweep = tmp_path / "one.yaml"
    sweep.write_text(text)
    first = CliRunner().invoke(app, ["sweep", "--config", str(sweep), "--runs-dir", str(runs)])
    assert first.exit_code == 0, first.output
    trial = runs / "tiny" / "seed1"
    assert TrainConfig.load(trial / "config.yaml").head["hidden"] == 8

    sweep.write_text(text.replace("head.hidden: 8", "head.hidden: 12"))
    again = CliRunner().invoke(app, ["sweep", "--config", str(sweep), "--runs-dir", str(runs)])
    assert again.exit_code == 0, again.output
    assert "trial seed1: retrained" in again.output and "skipped" not in again.output
    assert TrainConfig.load(trial / "config.yaml").head["hidden"] == 12
    aside = [p for p in (runs / "tiny").iterdir() if p.name.startswith("seed1.old-")]
    assert len(aside) == 1 and TrainConfig.load(aside[0] / "config.yaml").head["hidden"] == 8
    assert "hidden: 12" in (runs / "tiny" / "best.yaml").read_text()
    third = CliRunner().invoke(app, ["sweep", "--config", str(sweep), "--runs-dir", str(runs)])
    assert "trial seed1: skipped" in third.output  # unchanged now: reused


def test_a_sweep_value_gets_the_check_of_its_flag(synth, tmp_path):
    text = _sweep_file(synth).read_text().replace("optim.lr: [1.0e-3, 1.0e-2]", "optim.epochs: [2, 0]")
    bad = tmp_path / "bad.yaml"
    bad.write_text(text)
    with pytest.raises(SweepError, match=r"trial epochs0_seed1: optim.epochs \(--epochs\) must be >= 1, got 0"):
        load_sweep(bad, runs_dir=str(tmp_path / "runs"))
    assert not (tmp_path / "runs").exists()
