"""One training process per run folder: two real `train` processes on one --name; the second fails at
once with one line, and a SIGKILLed run does not leave the folder locked."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("torch")

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def synth(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from train.data.synthetic import SynthConfig, default_tracks, make_synthetic

    base = tmp_path_factory.mktemp("run_lock")
    tracks = default_tracks(n_train=3, n_val=1, n_test=0, frames=(150, 200), seed=7)
    make_synthetic(base / "data", base / "cache", SynthConfig(tracks=tracks, visual_dim=8, audio_dim=4))
    return base


def _cmd(base: Path, *extra: str) -> list[str]:
    return [
        sys.executable, "pipeline.py", "train", "--model", "gru", "--features", "clip,wavlm", "--window", "64",
        "--stride", "32", "--batch-size", "8", "--head", "hidden=8", "--head", "gru_hidden=8", "--name", "shared",
        "--data-root", str(base / "data"), "--cache-dir", str(base / "cache"), "--runs-dir", str(base / "runs"),
        "--device", "cpu", *extra,
    ]


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT), "COLUMNS": "200"}


def test_a_second_train_on_a_name_in_use_fails_at_once_and_a_killed_run_frees_it(synth: Path) -> None:
    run = synth / "runs" / "shared"
    first = subprocess.Popen(_cmd(synth, "--epochs", "500"), cwd=ROOT, env=_env(), stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 180
        while not (run / "config.yaml").is_file():  # written once the first run holds the lock and its data
            assert first.poll() is None, first.stdout.read()
            assert time.monotonic() < deadline, "the first run did not start"
            time.sleep(0.05)
        config = (run / "config.yaml").read_text()

        second = subprocess.run(_cmd(synth, "--epochs", "1", "--lr", "1e-2"), cwd=ROOT, env=_env(),
                                capture_output=True, text=True, timeout=120)
        assert second.returncode == 1, second.stdout + second.stderr
        out = second.stdout + second.stderr
        assert "Traceback" not in out
        lines = [line for line in out.splitlines() if "train failed:" in line]
        assert len(lines) == 1 and f"is in use by another training process (pid {first.pid})" in lines[0], out
        assert first.poll() is None  # the first run goes on, its config untouched
        assert (run / "config.yaml").read_text() == config

        first.send_signal(signal.SIGKILL)
        assert first.wait(timeout=30) == -signal.SIGKILL
    finally:
        if first.poll() is None:
            first.kill()
        first.stdout.close()

    # the lock died with the process: the next run on that folder starts (and finishes) at once
    from typer.testing import CliRunner

    import pipeline

    third = CliRunner().invoke(pipeline.app, _cmd(synth, "--epochs", "1", "--resume")[2:])
    assert third.exit_code == 0, third.output
    assert "in use" not in third.output
    assert (run / "eval_val.json").is_file()


def test_lock_is_exclusive_and_a_refused_run_leaves_no_folder(tmp_path: Path) -> None:
    from train.runs.lock import RunLocked, run_lock

    run = tmp_path / "runs" / "r"
    with run_lock(run):
        with pytest.raises(RunLocked, match=rf"in use by another training process \(pid {os.getpid()}\)"):
            with run_lock(run):
                pass
        (run / "config.yaml").write_text("model: gru\n")
    with run_lock(run):  # free again once released; the run's files stay
        assert (run / "config.yaml").is_file()
    with run_lock(tmp_path / "runs" / "failed"):  # a run that wrote nothing (refused data) leaves no folder
        pass
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == ["r"]


def _train_args(base: Path, name: str, *extra: str) -> list[str]:
    return [a if a != "shared" else name for a in _cmd(base, *extra)[2:]]


def test_evaluate_predict_and_export_refuse_a_run_that_is_still_training(synth: Path) -> None:
    from typer.testing import CliRunner

    from pipeline import app
    from train.runs.lock import is_running, run_lock

    runner = CliRunner()
    done = runner.invoke(app, _train_args(synth, "locked", "--epochs", "1"))
    assert done.exit_code == 0, done.output
    run = synth / "runs" / "locked"
    assert is_running(run) is None
    where = ["--runs-dir", str(synth / "runs"), "--device", "cpu"]
    commands = {
        "evaluate": ["evaluate", "locked", *where],
        "predict": ["predict", "locked", "--split", "val", "--out", str(synth / "p.csv"), *where],
        "export": ["export", "locked", "--name", "locked_out", "--splits", "val", *where],
    }
    before = sorted(p.name for p in run.iterdir())
    with run_lock(run):  # what a training process holds for its whole run
        assert is_running(run) == os.getpid()
        for command, args in commands.items():
            result = runner.invoke(app, args)
            assert result.exit_code == 1, (command, result.output)
            assert f"run locked is still training (pid {os.getpid()}" in " ".join(result.output.split()), result.output
    assert sorted(p.name for p in run.iterdir()) == before  # nothing was scored or written
    assert not (synth / "cache" / "locked_out.zarr").exists()
    assert runner.invoke(app, commands["evaluate"]).exit_code == 0  # released: evaluated as usual
