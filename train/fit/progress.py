"""Training progress that reads well anywhere: a rich bar on a terminal, and plain lines (epoch, step,
loss, steps/s, ETA) every N steps or M seconds when stdout is a log file or a pipe (Slurm, nohup, CI)."""

from __future__ import annotations

import time
from dataclasses import dataclass

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn


@dataclass
class ProgressSettings:
    every_steps: int = 50  # a line at least every this many steps ...
    every_seconds: float = 60.0  # ... or after this many seconds, whichever comes first
    lines: bool | None = None  # None: lines when the console is not a terminal, a bar when it is


def format_seconds(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


class EpochProgress:
    """`with EpochProgress(...) as p: ... p.step(mean_loss)` once per step (also for skipped steps)."""

    def __init__(self, console: Console, epoch: int, epochs: int, n_steps: int, settings: ProgressSettings | None = None):
        self.console, self.epoch, self.epochs, self.n_steps = console, epoch, epochs, n_steps
        self.settings = settings or ProgressSettings()
        lines = self.settings.lines
        self.lines = (not console.is_terminal) if lines is None else lines
        self._bar: Progress | None = None
        self._done = 0
        self._start = self._last_time = 0.0
        self._last_step = 0

    def __enter__(self) -> "EpochProgress":
        self._start = self._last_time = time.perf_counter()
        if not self.lines:
            self._bar = Progress(
                TextColumn("[bold]epoch {task.fields[epoch]}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                TextColumn("loss {task.fields[loss]}"), console=self.console, transient=True,
            )
            self._bar.__enter__()
            self._task = self._bar.add_task("train", total=self.n_steps, epoch=f"{self.epoch + 1}/{self.epochs}", loss="-")
        return self

    def step(self, loss: float | None) -> None:
        self._done += 1
        if self._bar is not None:
            self._bar.update(self._task, advance=1, loss="-" if loss is None else f"{loss:.4f}")
            return
        now = time.perf_counter()
        s = self.settings
        due = self._done - self._last_step >= max(1, s.every_steps) or now - self._last_time >= s.every_seconds
        if due and self._done < self.n_steps:
            self._last_step, self._last_time = self._done, now
            self.console.print(self.line(loss, now - self._start), markup=False, highlight=False, soft_wrap=True)

    def line(self, loss: float | None, elapsed: float) -> str:
        rate = self._done / elapsed if elapsed > 0 else 0.0
        eta = (self.n_steps - self._done) / rate if rate > 0 else float("nan")
        loss_text = "-" if loss is None else f"{loss:.4f}"
        eta_text = format_seconds(eta) if eta == eta else "-"
        return (
            f"epoch {self.epoch + 1}/{self.epochs}  step {self._done}/{self.n_steps}  loss {loss_text}  "
            f"{rate:.2f} steps/s  ETA {eta_text}"
        )

    def __exit__(self, *exc) -> None:
        if self._bar is not None:
            self._bar.__exit__(*exc)
