"""A user's mistakes on the command line: each ends with one usage line (exit status 2) naming the option,
never a traceback, and before any work starts. (Failures of the work itself, exit status 1, are in
tests/test_cli_failures.py.)"""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from pipeline import app

TRAIN = ["train", "--model", "gru", "--features", "clip"]
EXPORT = ["export", "some-run", "--name", "x"]

MISTAKES = [
    # (command line, option named, words of the message)
    (["extract", "--model", "clip"], "--model", "FEATURE=REF"),
    (["extract", "--batch-size", "0"], "--batch-size", "greater than or equal to 1"),
    (["extract", "--split", "tain"], "--split", "'tain' is not one of"),
    (["extract", "--profile", "big"], "--profile", "'big' is not one of"),
    (["extract", "--backend", "spark"], "--backend", "'spark' is not one of"),
    (["extract", "--features", ","], "--features", "no feature named"),
    (["extract", "--shard", "5/2"], "--shard", "need 0 <= i < n"),
    ([*TRAIN, "--batch-size", "0"], "--batch-size", "greater than or equal to 1"),
    ([*TRAIN, "--window", "0"], "--window", "greater than or equal to 1"),
    ([*TRAIN, "--epochs", "0"], "--epochs", "greater than or equal to 1"),
    ([*TRAIN, "--stride", "500"], "--stride", "larger than --window 400"),
    ([*TRAIN, "--lr", "0"], "--lr", "greater than 0"),
    ([*TRAIN, "--head", "hidden"], "--head", "key=value"),
    ([*TRAIN, "--head", "hidden=abc"], "--head", "hidden='abc': head 'gru' expects an integer"),
    ([*TRAIN, "--head", "hidden=0"], "--head", "hidden must be positive"),
    ([*TRAIN, "--head", "depth=3"], "--head", "has no option 'depth'"),
    ([*TRAIN, "--loss-weights", "a,b"], "--loss-weights", "two numbers V,A"),
    ([*TRAIN, "--loss-weights", "0.5"], "--loss-weights", "two non-negative numbers"),
    ([*TRAIN, "--fill", "x=y"], "--fill", "FEATURE[=SECONDS]"),
    ([*TRAIN, "--fill", "ast=1"], "--fill", "not in --features clip"),
    (["train", "--model", "gru", "--features", ","], "--features", "no feature named"),
    (["train", "--model", "lstm", "--features", "clip"], "--model", "unknown head 'lstm'"),
    ([*TRAIN, "--device", "gpu"], "--device", "auto, cpu, cuda or cuda:N"),
    ([*EXPORT, "--checkpoint", "foo"], "--checkpoint", "'foo' is not one of"),
    ([*EXPORT, "--folds", "0"], "--folds", "greater than or equal to 1"),
    ([*EXPORT, "--splits", "train,tst"], "--splits", "among train, val, test"),
    (["import-features", "feats", "--name", "x", "--format", "xls"], "--format", "'xls' is not one of"),
    (["import-features", "feats", "--name", "x", "--unit", "frame"], "--unit", "'frame' is not one of"),
    (["import-features", "feats", "--name", "x", "--frame-index-base", "2"], "--frame-index-base", "less than or equal to 1"),
    (["evaluate", "some-run", "--split", "bogus"], "--split", "'bogus' is not one of"),
    (["predict", "some-run", "--device", "tpu"], "--device", "auto, cpu, cuda or cuda:N"),
]


def _check_usage_error(args: list[str], option: str, words: str) -> None:
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2, (args, result.exit_code, result.output)
    assert "Traceback" not in result.output and result.exception is None or isinstance(result.exception, SystemExit)
    errors = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, result.output
    assert option in errors[0] and words in errors[0], errors[0]


@pytest.mark.parametrize(("args", "option", "words"), MISTAKES, ids=[" ".join(m[0][:1] + m[0][-2:]) for m in MISTAKES])
def test_a_mistake_is_one_usage_line(args: list[str], option: str, words: str, tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)  # nothing may be created, wherever the defaults point
    _check_usage_error(args, option, words)
    assert list(tmp_path.iterdir()) == []


def test_cuda_asked_for_on_a_machine_without_it(tmp_path, monkeypatch) -> None:
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.chdir(tmp_path)
    _check_usage_error([*TRAIN, "--device", "cuda"], "--device", "torch sees no CUDA device")
    _check_usage_error(["extract", "--device", "cuda:1"], "--device", "torch sees no CUDA device")


def test_the_exit_code_convention_is_in_the_generated_reference() -> None:
    from pathlib import Path

    text = " ".join((Path(__file__).resolve().parents[1] / "docs" / "CLI.md").read_text(encoding="utf-8").split())
    assert "Exit status, the same for every command: 0 when the work is done; 1 when" in text
    assert "2 when the command line itself is wrong" in text
