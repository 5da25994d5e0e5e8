"""Names: the one pattern every name that becomes a path must match, and one "did you mean" for every
name a user types (features, runs, recipes, heads).

A safe name (feature/store names, unit/group names, extras) is a single path component made of letters,
digits, `_` and `-`, starting with a letter or digit: no `/` or `\\` (zarr and the file system would make a
path of it: `video2\\values` writes a group over another unit's arrays), no `.` (so no `..`, and no `a.b`
that `list_stores` takes for a moved-aside store `<name>.<fingerprint>`), no spaces or shell characters.
Every writer checks with `check_name`, so a name that cannot be written never reaches the disk. Run,
sweep and step folders (whose names may hold `+`, `=`, `.`) are checked by `check_component`: one folder
name, never a path.

`suggest` / `unknown`: the closest known names first, and the choices listed when nothing is close.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable

MAX_LISTED = 12  # more choices than this: the first ones and a count

SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")
MAX_NAME = 200
RULE = "letters, digits, '_' and '-', starting with a letter or digit (no '/', '\\', '.', spaces)"


class UnsafeName(ValueError):
    """A name that would not be one safe path component; the message is one line."""


def is_safe_name(name: object) -> bool:
    return isinstance(name, str) and len(name) <= MAX_NAME and SAFE_NAME.fullmatch(name) is not None


def check_name(name: object, what: str = "name") -> str:
    """`name` itself when it is safe; otherwise UnsafeName saying which rule it breaks."""
    if not is_safe_name(name):
        raise UnsafeName(f"{what} {name!r} is not a safe name: {RULE}")
    return name  # type: ignore[return-value]


def safe_name(text: str) -> str:
    """A safe name made from `text` (a file stem, a relative path): every run of other characters becomes
    one '_'; empty or leading-underscore results are prefixed with 'u'. Distinct texts may collide: callers
    that need uniqueness check it."""
    name = re.sub(r"[^A-Za-z0-9_-]+", "_", text).strip("_")
    if not name or not name[0].isalnum():
        name = f"u{name}"
    return name[:MAX_NAME]


def check_component(name: object, what: str = "name") -> str:
    """A name that is one path component (run and sweep folders, whose names may hold `+`, `=`, `.`):
    not empty, not `.` or `..`, no `/`, `\\` or NUL. UnsafeName otherwise."""
    if not isinstance(name, str) or name in ("", ".", "..") or any(c in name for c in "/\\\0") or len(name) > 255:
        raise UnsafeName(f"{what} {name!r} is not a single folder name (no '/', '\\', and not '.' or '..')")
    return name


def suggest(name: str, choices: Iterable[str], noun: str) -> str:
    """"did you mean 'landmarks'? features: clip, landmarks, ..." (the clause after an unknown-name error).
    `noun` is the plural shown before the list ("features", "runs in artifacts/runs")."""
    known = sorted(dict.fromkeys(str(c) for c in choices))
    if not known:
        return f"no {noun}"
    close = difflib.get_close_matches(str(name), known, n=3, cutoff=0.6)
    listed = ", ".join(known[:MAX_LISTED]) + (f", … ({len(known)} in all)" if len(known) > MAX_LISTED else "")
    mean = f"did you mean {' or '.join(repr(c) for c in close)}? " if close else ""
    return f"{mean}{noun}: {listed}"


def unknown(kind: str, name: str, choices: Iterable[str], noun: str | None = None) -> str:
    """The one-line error for an unknown name: "unknown head 'gur'; did you mean 'gru'? heads: ..."."""
    return f"unknown {kind} '{name}'; {suggest(name, choices, noun or kind + 's')}"
