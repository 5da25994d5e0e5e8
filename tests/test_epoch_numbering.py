"""One epoch numbering, from 1, in every file and line (issue 23): metrics.jsonl, the console's epoch lines,
TensorBoard steps, the resume line, report.md's best epoch and eval_val.json's best_epoch all name the same
epoch; a run written when metrics.jsonl and checkpoints counted from 0 reads (and resumes) numbered from 1."""

from __future__ import annotations

import io
import json
import logging
import re
from pathlib import Path

import pytest
import torch
from rich.console import Console

from train.config import DataConfig, TrainConfig
from train.data.synthetic import SynthConfig, default_tracks, make_synthetic
from train.fit.loop import numbered_from_one, train
from train.runs.folder import RunDir

torch.set_num_threads(1)


def _cfg(base: Path, name: str, epochs: int) -> TrainConfig:
    data = DataConfig(features=["clip"], data_root=str(base / "data"), cache_dir=str(base / "cache"), window=32, stride=32)
    return TrainConfig(model="gru", data=data, name=name, runs_dir=str(base / "runs"), head={"hidden": 8}, epochs=epochs,
                       lr=3e-2, batch_size=4, device="cpu", smooth_grid=[0, 2], max_steps_per_epoch=4, early_stop=99)


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    base = tmp_path_factory.mktemp("epochs")
    make_synthetic(base / "data", base / "cache", SynthConfig(tracks=default_tracks(3, 2, 0, (120, 160), seed=3)))
    return base


def test_every_file_and_line_counts_epochs_from_one(base, caplog):
    seen = []

    def stop_after_two(epoch, row):
        seen.append((epoch, row["epoch"]))
        if epoch == 2:
            raise KeyboardInterrupt

    out = io.StringIO()
    with pytest.raises(KeyboardInterrupt):
        train(_cfg(base, "r", 4), on_epoch_end=stop_after_two, console=Console(file=out, width=200))
    assert seen == [(1, 1), (2, 2)]
    with caplog.at_level(logging.INFO, logger="train.fit.loop"):
        result = train(_cfg(base, "r", 4), resume=True, console=Console(file=out, width=200))
    run = result.run
    rows = run.read_metrics()
    assert [r["epoch"] for r in rows] == [1, 2, 3, 4]
    on_disk = [json.loads(line)["epoch"] for line in run.metrics.read_text().splitlines()]
    assert on_disk == [1, 2, 3, 4]
    console = re.findall(r"^epoch (\d)/4 .*val CCC_V", out.getvalue(), re.M)
    assert console == ["1", "2", "3", "4"]
    best = max(rows, key=lambda r: r["val_P"])["epoch"]
    starred = [int(n) for n in re.findall(r"^epoch (\d)/4 .*  \*", out.getvalue(), re.M)]
    assert starred[-1] == best == result.best_epoch
    assert json.loads(run.eval_file("val").read_text())["best_epoch"] == best
    assert f"best epoch {best} " in run.report.read_text()
    resumed = next(r.getMessage() for r in caplog.records if r.getMessage().startswith("resuming"))
    best_of_two = max(rows[:2], key=lambda r: r["val_P"])["epoch"]
    assert "after epoch 2 " in resumed and resumed.endswith(f"at epoch {best_of_two})")

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run.path))
    acc.Reload()
    assert [e.value for e in acc.Scalars("train/epoch")] == [1, 2, 3, 4]  # the x axis is optimizer steps


def test_a_run_numbered_from_zero_reads_and_resumes_from_one(base):
    folder = RunDir(base / "runs" / "old")
    folder.make()
    folder.metrics.write_text("".join(json.dumps({"epoch": e, "val_P": 0.1 * e}) + "\n" for e in (0, 1, 2)))
    assert [r["epoch"] for r in folder.read_metrics()] == [1, 2, 3]
    folder.truncate_metrics(2)
    assert [json.loads(line)["epoch"] for line in folder.metrics.read_text().splitlines()] == [1, 2]
    # a checkpoint's loop state from then: best epoch 1 (0-based) is epoch 2; none yet (-1) is 0
    assert numbered_from_one({"epoch": 3, "best_epoch": 1, "best_P": 0.2, "since_best": 1})["best_epoch"] == 2
    assert numbered_from_one({"epoch": 0, "best_epoch": -1})["best_epoch"] == 0
    assert numbered_from_one({"epoch": 3, "best_epoch": 2, "numbered_from": 1})["best_epoch"] == 2
