"""One "did you mean" for every name a user types (features, runs, recipes, heads): the closest known
names first, and the choices listed when nothing is close."""

from __future__ import annotations

import difflib
from collections.abc import Iterable

MAX_LISTED = 12  # more choices than this: the first ones and a count


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
