"""A rich progress bar per split, counting frames, with frames/s."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, ProgressColumn, Task, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.text import Text


class FramesPerSecond(ProgressColumn):
    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text(f"{speed:6.1f} frames/s" if speed else "   -- frames/s", style="progress.data.speed")


@contextmanager
def split_progress(split: str, total: int, enabled: bool = True) -> Iterator[Callable[[int], None]]:
    """Yields `advance(n_frames)`. Disabled: a no-op."""
    if not enabled:
        yield lambda n: None
        return
    progress = Progress(
        TextColumn(f"[bold]extract {split}"), BarColumn(), MofNCompleteColumn(), TextColumn("frames"),
        FramesPerSecond(), TimeElapsedColumn(), TimeRemainingColumn(),
        console=Console(stderr=True), transient=False,
    )
    with progress:
        task = progress.add_task(split, total=max(total, 1))
        yield lambda n: progress.advance(task, n)


def print_summary(console: Console, summary: "object") -> None:
    """Done, skipped (already complete), partial and failed videos, with reasons."""
    from rich.markup import escape

    done, skipped, failed = summary.done, summary.skipped, summary.failed
    partial = getattr(summary, "partial", [])
    rate = summary.frames / summary.seconds if summary.seconds else 0.0
    console.print(
        f"[bold]extract:[/bold] {len(done)} video(s) done, {len(skipped)} skipped as already complete, "
        f"{len(failed)} failed, {len(partial)} partial (stored, frames short); {summary.frames} frames in {summary.seconds:.1f} s ({rate:.1f} frames/s)",
        highlight=False,
    )
    for line in done:
        console.print(f"  done: {escape(line)}", highlight=False, soft_wrap=True)
    for line in partial:
        console.print(f"  [yellow]partial:[/yellow] {escape(line)}", highlight=False, soft_wrap=True)
    for line in failed:
        console.print(f"  [red]failed:[/red] {escape(line)}", highlight=False, soft_wrap=True)
