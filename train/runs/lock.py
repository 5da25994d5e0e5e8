"""One training process per run folder: an exclusive `flock` on RUN/.lock, held for the whole run.

The operating system drops the lock when the process ends, however it ends (SIGKILL, OOM, a node
that reboots), so a killed run never leaves it stuck; the file itself stays and means nothing on its
own. (flock is per host: runs on two machines sharing a network folder are not kept apart.)
"""

from __future__ import annotations

import fcntl
import logging
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

LOCK_NAME = ".lock"

log = logging.getLogger(__name__)


class RunLocked(FileExistsError):
    """Another process is training into this run folder."""


@contextmanager
def run_lock(folder: Path) -> Iterator[None]:
    """Hold the run folder's lock or fail at once. A folder this call created and that holds nothing but
    the lock when the run ends (it failed before writing anything) is removed again."""
    folder = Path(folder)
    created = not folder.exists()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LOCK_NAME
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
        os.close(fd)
        raise RunLocked(
            f"run folder {folder} is in use by another training process (pid {holder}): "
            "wait for it to end, or choose another --name"
        ) from None
    except OSError as err:  # a file system without flock (some network mounts): go on, unguarded, and say so
        log.warning("run folder %s: no lock (%s); do not start a second run on this name", folder, err.strerror or err)
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        if created and [p.name for p in folder.iterdir()] == [LOCK_NAME]:
            shutil.rmtree(folder, ignore_errors=True)
        os.close(fd)  # releases the lock


def is_running(folder: Path) -> int | None:
    """The pid of the process training into `folder` now (its lock is held), else None. Takes a shared
    lock for a moment and never creates the lock file."""
    path = Path(folder) / LOCK_NAME
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # no lock file: never trained here
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        text = os.pread(fd, 32, 0).decode(errors="replace").strip()
        return int(text) if text.isdigit() else -1
    except OSError:  # no flock on this file system: nothing to tell
        return None
    finally:
        os.close(fd)  # also releases the shared lock
    return None


def refuse_running(folder: Path) -> None:
    """RunLocked when a training process holds `folder`'s lock: its checkpoints, metrics and smoothing
    are intermediate, so evaluating, predicting or exporting it would score a run that is not done."""
    pid = is_running(folder)
    if pid is not None:
        raise RunLocked(
            f"run {Path(folder).name} is still training (pid {pid if pid > 0 else '?'}, lock {Path(folder) / LOCK_NAME}): "
            "wait for it to end"
        )
