"""Row selection in multi-row stores: `--features qwen3vl:mm_last` reads one named row of a store whose
values are (N, R, D) (e.g. `qwen3vl`: rows `mm_mean`, `mm_last`, `vis_mean`, `vis_last`).

A feature reference is `STORE` or `STORE:ROW`. ROW is a name from the group attribute `row_names` (or
the store config's `row_names`), or an integer index. The selected feature keeps the whole reference as
its name (so runs, heads and exports tell `qwen3vl:mm_last` from `qwen3vl:vis_mean`) and reads
`values[:, row]`; without a row, a multi-row store is flattened (every row concatenated), as before.
"""

from __future__ import annotations

from typing import Any

import numpy as np

ROW_SEPARATOR = ":"


class UnknownRow(KeyError):
    """A feature reference names a row the store does not have."""


def split_feature(ref: str) -> tuple[str, str | None]:
    """`qwen3vl:mm_last` -> ('qwen3vl', 'mm_last'); `clip` -> ('clip', None)."""
    store, sep, row = ref.partition(ROW_SEPARATOR)
    if sep and not row:
        raise ValueError(f"feature reference {ref!r}: empty row name after '{ROW_SEPARATOR}'")
    return store, (row if sep else None)


def row_index(row: str, shape: tuple[int, ...], attrs: dict[str, Any], store_config: dict[str, Any], where: str) -> int:
    """Index of `row` along axis 1 of values shaped `shape` (N, R, ...)."""
    if len(shape) < 3:
        raise UnknownRow(f"{where}: values are {shape[1:]} per row, not (rows, dim): no row {row!r} to select")
    names = list(attrs.get("row_names") or store_config.get("row_names") or [])
    if row in names:
        return names.index(row)
    if row.lstrip("-").isdigit() and -shape[1] <= int(row) < shape[1]:
        return int(row) % shape[1]
    known = ", ".join(names) if names else f"indices 0..{shape[1] - 1}"
    raise UnknownRow(f"{where}: no row {row!r}; known rows: {known}")


def select_row(values: np.ndarray, row: str | None, attrs: dict[str, Any], store_config: dict[str, Any], where: str) -> np.ndarray:
    """values[:, row] (the named row), or values unchanged when no row is asked for."""
    if row is None:
        return values
    return values[:, row_index(row, values.shape, attrs, store_config, where)]
