"""A rich progress bar per split, counting frames, with frames/s."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, ProgressColumn, Task, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.text import Text

from cache.console import make_console


class FramesPerSecond(ProgressColumn):
    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text(f"{speed:6.1f} frames/s" if speed else "   -- frames/s", style="progress.data.speed")


class SplitProgress:
    """`advance(n_frames)` moves the frame bar (a terminal); `video(...)` prints one line per video when
    stdout is not a terminal (a log file, a pipe), so a log shows the run going on."""

    def __init__(self, split: str, n_videos: int, advance: Callable[[int], None], lines: Console | None):
        self.split, self.n_videos, self._advance, self._lines = split, n_videos, advance, lines
        self._count = 0

    def __call__(self, n_frames: int) -> None:
        self._advance(n_frames)

    def video(self, stem: str, status: str, frames: int = 0, seconds: float = 0.0, features: list[str] | None = None,
              fps: float | None = None) -> None:
        """status: done | skipped | failed (then `features` holds the reason)."""
        self._count += 1
        if self._lines is None:
            return
        head = f"extract {self.split} [{self._count}/{self.n_videos}] {stem}: {status}"
        if status == "done":
            rate = frames / seconds if seconds > 0 else 0.0
            at = f" at {fps:g} fps" if fps else ""
            text = f"{head}, {frames} frames{at} in {seconds:.1f} s ({rate:.1f} frames/s); {', '.join(features or [])}"
        elif status == "skipped":
            text = f"{head} (every feature already complete)"
        else:
            text = f"{head}: {'; '.join(features or [])}"
        self._lines.print(text, markup=False, highlight=False, soft_wrap=True)


@contextmanager
def split_progress(
    split: str, total: int, enabled: bool = True, n_videos: int = 0, stdout: Console | None = None
) -> Iterator[SplitProgress]:
    """Yields a `SplitProgress`: a rich frame bar on stderr when stdout is a terminal, one line per video
    on stdout when it is not. Disabled: neither."""
    stdout = stdout or make_console()
    if not enabled:
        yield SplitProgress(split, n_videos, lambda n: None, None)
        return
    if not stdout.is_terminal:
        yield SplitProgress(split, n_videos, lambda n: None, stdout)
        return
    progress = Progress(
        TextColumn(f"[bold]extract {split}"), BarColumn(), MofNCompleteColumn(), TextColumn("frames"),
        FramesPerSecond(), TimeElapsedColumn(), TimeRemainingColumn(),
        console=make_console(stderr=True), transient=False,
    )
    with progress:
        task = progress.add_task(split, total=max(total, 1))
        yield SplitProgress(split, n_videos, lambda n: progress.advance(task, n), None)


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
