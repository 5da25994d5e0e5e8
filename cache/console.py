"""The one place rich consoles and log handlers are made, so output reads anywhere.

On a terminal: rich as usual (its width, colours, bars). In a pipe or a log file (Slurm, nohup, CI,
`| tee`): no wrapping and no truncation (a line is as long as its text, a table as wide as its cells),
no colour codes, and plain `LEVEL message` log lines."""

from __future__ import annotations

import logging
import sys
from typing import IO, Any

from rich.console import Console
from rich.logging import RichHandler

# rich needs a width to lay a table out; off a terminal this is "as wide as the cells" in practice
UNWRAPPED_WIDTH = 100_000
RULE_WIDTH = 80  # a section rule in a log file: a short line, not UNWRAPPED_WIDTH dashes


class AnywhereConsole(Console):
    """A rich Console whose rules stay short when the width is the unwrapped one."""

    def rule(self, title: Any = "", *args: Any, **kwargs: Any) -> None:
        if self.width < UNWRAPPED_WIDTH:
            super().rule(title, *args, **kwargs)
            return
        text = f" {title} " if title else ""
        side = max(3, (RULE_WIDTH - len(text)) // 2)
        self.print(f"{'─' * side}{text}{'─' * side}", markup=False, highlight=False)


def make_console(stderr: bool = False, file: IO[str] | None = None, **kwargs: Any) -> Console:
    """A console for stdout (or stderr, or `file`): rich's own on a terminal, unwrapped and untruncated
    otherwise (a console forced into terminal mode, e.g. FORCE_COLOR, counts as a terminal)."""
    probe = Console(stderr=stderr, file=file, **kwargs)
    if probe.is_terminal or "width" in kwargs:
        return AnywhereConsole(stderr=stderr, file=file, **kwargs)
    return AnywhereConsole(stderr=stderr, file=file, width=UNWRAPPED_WIDTH, soft_wrap=True, **kwargs)


def log_handler() -> logging.Handler:
    """Log records on stderr: rich's handler on a terminal, one plain `LEVEL message` line otherwise."""
    console = make_console(stderr=True)
    if console.is_terminal:
        return RichHandler(console=console, show_path=False, show_time=False)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    return handler
