"""Experiment tracking in the run folder: TensorBoard event files always, MLflow as well when the recipe
says `tracking: mlflow` (train/runs/mlflow_tracker.py).

One x axis for every curve: the optimizer steps done (per-step loss and per-epoch metrics side by side);
tags are grouped `train/…` (loss per step and per epoch, loss parts, lr, epoch), `val/…` (CCC_V, CCC_A,
P raw: the per-epoch score on unsmoothed predictions) and `time/…`; the final evaluation's numbers
(smoothed P among them) go with the run's settings to the HParams tab (`tensorboard --logdir
artifacts/runs` compares the runs there)."""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

TIME_KEYS = ("epoch_s", "data_wait_share")


def tag(key: str) -> str:
    """A metrics.jsonl key as a grouped TensorBoard tag: train_loss -> train/loss, val_P -> val/P_raw."""
    if key == "val_P":
        return "val/P_raw"
    if key.startswith(("train_", "val_")):
        group, rest = key.split("_", 1)
        return f"{group}/{rest}"
    if key in TIME_KEYS:
        return f"time/{key}"
    return f"train/{key}"  # lr, steps


def hparam_values(config: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """A nested config as flat hparams (numbers, strings and bools; lists joined as text; None left out)."""
    from recipes.loader import dotted

    return {name: ",".join(map(str, value)) if isinstance(value, (list, tuple)) else value
            for name, value in dotted(config, prefix).items() if isinstance(value, (list, tuple, bool, int, float, str))}


class MetricsWriter:
    """A SummaryWriter for one run. On resume, `purge_step` (optimizer steps at the checkpoint) drops the
    events written after it (as metrics.jsonl drops their rows). Without tensorboard it only says so, once."""

    def __init__(self, run_path: Path, purge_step: int | None = None, mlflow: Any = None):
        self._writer = None
        self._mlflow = mlflow  # an MlflowTracker (train/runs/mlflow_tracker.py) that gets the same numbers
        self._finished = False
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as err:  # tensorboard is a declared dependency; a bare torch install lacks it
            log.warning("no TensorBoard event files for %s: %s", run_path, err)
            return
        if purge_step is None:  # a fresh start in a reused folder: the old run's curves go with its metrics
            for old in Path(run_path).glob("events.out.tfevents.*"):
                old.unlink()
        self._writer = SummaryWriter(log_dir=str(run_path), purge_step=purge_step)

    def log(self, row: Mapping[str, Any], step: int, epochs_done: int | None = None) -> None:
        """One epoch's metrics row at `step` (optimizer steps so far)."""
        scalars = {tag(k): float(v) for k, v in row.items()
                   if k != "epoch" and not isinstance(v, bool) and isinstance(v, (int, float)) and math.isfinite(v)}
        if epochs_done is not None:
            scalars["train/epoch"] = float(epochs_done)
        self._scalars(scalars, step)

    def _scalars(self, scalars: Mapping[str, float], step: int) -> None:
        if self._mlflow is not None:
            self._mlflow.log_metrics(scalars, step)
        if self._writer is None:
            return
        for key, value in scalars.items():
            self._writer.add_scalar(key, value, global_step=step)
        self._writer.flush()

    def log_step(self, loss: float, step: int) -> None:
        """One optimizer step's loss."""
        if not math.isfinite(loss):
            return
        if self._mlflow is not None:
            self._mlflow.log_metrics({"train/loss_step": float(loss)}, step)
        if self._writer is not None:
            self._writer.add_scalar("train/loss_step", float(loss), global_step=step)

    def log_final(self, config: Mapping[str, Any], metrics: Mapping[str, float], step: int) -> None:
        """The run's settings and its final numbers (final/P_smoothed, ...) for the HParams tab."""
        finite = {f"final/{k}": float(v) for k, v in metrics.items() if isinstance(v, (int, float)) and math.isfinite(v)}
        self._finished = True
        if self._writer is not None:
            from torch.utils.tensorboard.summary import hparams

            writer = self._writer._get_file_writer()
            for summary in hparams(hparam_values(config), finite):  # experiment, session start, session end
                writer.add_summary(summary)
        self._scalars(finite, step)

    def close(self) -> None:
        if self._mlflow is not None:
            self._mlflow.close(self._finished)
            self._mlflow = None
        if self._writer is not None:
            self._writer.close()
            self._writer = None
