"""Run kinds: a run folder holds a trained head (train/results/restore.py) or another kind registered here
(an ensemble, train/results/ensemble.py). Each kind answers "predictions for a split" itself
(`predictions(split, device, check, **locations) -> RunSplit`), so evaluation, prediction and export ask a
run and never check which kind it is. The registry is filled when `train.results` is imported."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from train.data.dataset import TrackDataset
from train.results.restore import RunSplit, TrainedRun
from train.runs.folder import RunDir
from train.runs.lock import refuse_running


class RunKind(Protocol):
    run: RunDir

    def predictions(
        self, split: str, device: str = "auto", check: Callable[[TrackDataset], Any] | None = None, **locations
    ) -> RunSplit: ...


KINDS: list[type] = []  # kinds other than a trained head, each with `holds(run) -> bool` and (run, runs_dir) arguments


def register_kind(cls: type) -> type:
    if cls not in KINDS:
        KINDS.append(cls)
    return cls


def open_run(run: str | Path, runs_dir: Path = Path("artifacts/runs")) -> RunKind:
    """The run folder `run` (a name under `runs_dir` or a path) as the kind it holds."""
    rd = RunDir.resolve(run, Path(runs_dir))
    refuse_running(rd.path)
    for kind in KINDS:
        if kind.holds(rd):
            return kind(rd, Path(runs_dir))
    return TrainedRun(rd, Path(runs_dir))


def run_split_predictions(
    run: str | Path,
    split: str,
    runs_dir: Path = Path("artifacts/runs"),
    device: str = "auto",
    check: Callable[[TrackDataset], Any] | None = None,
    **locations,
) -> RunSplit:
    """Predictions of a trained run (its best checkpoint) or of an ensemble run (its members combined).
    `check(dataset)` runs before predicting (e.g. the coverage check); its result is kept as `checked`."""
    return open_run(run, runs_dir).predictions(split, device, check, **locations)
