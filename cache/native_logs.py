"""Silence the C++ log lines of MediaPipe, absl, glog and TensorFlow Lite (`W0000 … inference_feedback_manager.cc`,
`INFO: Created TensorFlow Lite XNNPACK delegate`, …) unless the user asks for them (`--verbose`).

The environment variables (GLOG_minloglevel, TF_CPP_MIN_LOG_LEVEL) cover the libraries that honour them;
MediaPipe 0.10.21's absl logs before `absl::InitializeLog()` ignore them and write straight to file
descriptor 2, so the process's fd 2 is also routed through a filter thread that drops those lines (info
and warning levels) and passes everything else on. Python's own `sys.stderr` is moved to a copy of the
original descriptor first, so rich still sees the terminal (bars, colours) and Python logs never wait
on the filter. Call it before mediapipe is imported."""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import re
import sys
import threading

NATIVE_ENV = {"GLOG_minloglevel": "2", "TF_CPP_MIN_LOG_LEVEL": "3", "ABSL_MIN_LOG_LEVEL": "2"}
# glog / absl prefix of info and warning lines (I1130 …, W0000 …), and TF Lite's plain-text notices
NOISE = re.compile(
    rb"^(?:[IW]\d{4} [\d:.]+\s+\d+ \S+:\d+\]"
    rb"|INFO: Created TensorFlow Lite"
    rb"|WARNING: All log messages before absl::InitializeLog\(\) is called)"
)

_installed = False


# third-party progress bars and chatter, off unless --verbose: Hugging Face hub downloads and retries,
# transformers' "Loading weights" bar and advisories
QUIET_ENV = {"HF_HUB_DISABLE_PROGRESS_BARS": "1", "HF_HUB_VERBOSITY": "error", "TRANSFORMERS_VERBOSITY": "error",
             "TRANSFORMERS_NO_ADVISORY_WARNINGS": "1"}
QUIET_LOGGERS = ("huggingface_hub", "transformers", "httpx", "httpcore", "urllib3", "filelock", "open_clip")


def quiet_libraries() -> None:
    """Progress bars of the hub and transformers off, and their retry / advisory warnings below ERROR.
    Before they are imported the variables do it; after, their own switches."""
    for key, value in QUIET_ENV.items():
        os.environ.setdefault(key, value)
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)
    if "huggingface_hub" in sys.modules:  # its import sets its own level from HF_HUB_VERBOSITY
        from huggingface_hub.utils import disable_progress_bars, logging as hub_logging

        disable_progress_bars()
        hub_logging.set_verbosity_error()
    if "transformers" in sys.modules:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        hf_logging.set_verbosity_error()


def is_noise(line: bytes) -> bool:
    return bool(NOISE.match(line))


def silence_native_logs() -> bool:
    """Set the log-level variables and filter fd 2 (once per process). Returns whether the filter was
    installed: not when stderr is not the process's own (under pytest or a Typer test runner)."""
    global _installed
    for key, value in NATIVE_ENV.items():
        os.environ.setdefault(key, value)
    logging.getLogger("absl").setLevel(logging.ERROR)
    if _installed or sys.stderr is not sys.__stderr__:
        return _installed
    try:
        sys.stderr.flush()
        original = os.dup(2)
        read_end, write_end = os.pipe()
        os.dup2(write_end, 2)
        os.close(write_end)
    except OSError:
        return False
    sys.stderr = sys.__stderr__ = os.fdopen(original, "w", buffering=1, encoding=sys.stderr.encoding, errors="backslashreplace")
    thread = threading.Thread(target=_pump, args=(read_end, original), name="native-log-filter", daemon=True)
    thread.start()

    def drain() -> None:  # let the thread pass on what C++ wrote last, then stop it
        try:
            os.dup2(original, 2)
        except OSError:
            return
        thread.join(timeout=1.0)

    atexit.register(drain)
    _installed = True
    return True


def _pump(read_end: int, out: int) -> None:
    """Read until every writer has closed fd 2's pipe. Never stops early: a writer blocked on a full pipe
    would hang the process, so output that cannot be written (a closed stderr) is dropped."""
    with os.fdopen(read_end, "rb", buffering=0) as source:
        pending = b""
        while True:
            chunk = source.read(65536)
            if not chunk:
                break
            pending += chunk
            *lines, pending = pending.split(b"\n")
            _write(out, b"".join(line + b"\n" for line in lines if not is_noise(line)))
        if not is_noise(pending):
            _write(out, pending)


def _write(fd: int, data: bytes) -> None:
    with contextlib.suppress(OSError):  # the terminal or log behind fd 2 is gone: nothing left to tell
        while data:
            data = data[os.write(fd, data):]
