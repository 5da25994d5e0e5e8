"""TensorBoard event files in the run folder: every numeric key of each metrics.jsonl row as a scalar under
the same name, at step = epochs finished (`tensorboard --logdir artifacts/runs` then shows every run)."""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


class MetricsWriter:
    """A SummaryWriter for one run. On resume, `purge_step` drops events of epochs after the checkpoint
    (as metrics.jsonl drops their rows). Without tensorboard installed it only says so, once."""

    def __init__(self, run_path: Path, purge_step: int | None = None):
        self._writer = None
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as err:  # tensorboard is a declared dependency; a bare torch install lacks it
            log.warning("no TensorBoard event files for %s: %s", run_path, err)
            return
        if purge_step is None:  # a fresh start in a reused folder: the old run's curves go with its metrics
            for old in Path(run_path).glob("events.out.tfevents.*"):
                old.unlink()
        self._writer = SummaryWriter(log_dir=str(run_path), purge_step=purge_step)

    def log(self, row: Mapping[str, Any], step: int) -> None:
        if self._writer is None:
            return
        for key, value in row.items():
            if key == "epoch" or isinstance(value, bool) or not isinstance(value, (int, float)):
                continue
            if math.isfinite(value):
                self._writer.add_scalar(key, float(value), global_step=step)
        self._writer.flush()

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
