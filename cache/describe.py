"""What one feature store holds, for people: kind, unit, width, dtype, column names, fingerprint.

Column names come from the store's root attribute `columns` (written by the csv importer; `None` for
stores whose columns have no names, e.g. embeddings). Read-only and cheap: one row of one unit is read.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cache.location import Location, open_group
from cache.store import FeatureStore


@dataclass
class StoreSummary:
    name: str
    kind: str
    unit: str
    units: int
    dim: int | None
    dtypes: list[str]
    columns: list[str] | None
    fingerprint: str

    def columns_text(self, limit: int = 12) -> str:
        if not self.columns:
            return "-"
        shown = ", ".join(self.columns[:limit])
        return shown + (f", … ({len(self.columns)} in all)" if len(self.columns) > limit else "")


def store_columns(path: Location) -> list[str] | None:
    """The column names a store records (root attribute `columns`), or None."""
    names = open_group(path, mode="r").attrs.get("columns")
    return list(names) if names is not None else None


def describe_store(name: str, store: FeatureStore) -> StoreSummary:
    units = store.units()
    dim, dtypes = None, []
    if units:
        sample = store.read(units[0], rows=slice(0, 1)).values
        dim = int(np.prod(sample.shape[1:])) if sample.ndim > 1 else 1
        dtypes = sorted({str(store.read(u, rows=slice(0, 0)).values.dtype) for u in units[:1] + units[-1:]})
    return StoreSummary(
        name=name, kind=store.meta.kind, unit=store.meta.unit, units=len(units), dim=dim, dtypes=dtypes,
        columns=store_columns(store.path), fingerprint=store.fingerprint,
    )
