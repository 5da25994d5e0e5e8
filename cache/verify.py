"""Checking a cache against what was recorded at completion (`pipeline.py verify`).

Every complete group of every store (or of the named features) is read back chunk by chunk: checksums
(crc32c, on groups written with them), decoding, shapes against the recorded row count, and the chunk
files present against the recorded chunk count. Damaged groups are marked incomplete (unless it is a
dry run), so that the next `extract` / `import-features` / `export` redoes exactly those.

Groups written before checksums and counts were recorded are still decoded and shape-checked; a missing
chunk file cannot be told from a chunk that was never written there, so they are counted as unchecked.
A node of the wrong kind (a group where an array belongs) is damage like any other, never a traceback.

Extras derived from groups (standardization statistics: attribute `derived_from`, cache/store.py) are
also checked against the groups' content now: statistics whose groups were rewritten since are stale
(never read again: their key no longer matches) and are removed unless it is a dry run. Derived extras
that are damaged are recomputed by the next `train`, so that is the command named.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

from cache.location import Location, exists
from cache.row_spec import expected_row_shape, row_shape_problem
from cache.store import (
    DERIVED_FROM,
    EXTRAS_GROUP,
    STANDARDIZATION_EXTRA,
    DamagedGroup,
    DamagedStore,
    FeatureStore,
    FingerprintMismatch,
    short_reason,
    has_checksums,
    list_stores,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Damage:
    feature: str
    unit: str  # a group name, `_extras/<name>`, or "(store)" for the store's own metadata
    problem: str
    redo: str  # the command that rewrites it


@dataclass
class VerifyReport:
    stores: list[str] = field(default_factory=list)
    groups: int = 0  # complete groups checked
    unchecked: int = 0  # of those, written before checksums and chunk counts (decoded and shape-checked only)
    damaged: list[Damage] = field(default_factory=list)
    marked: int = 0  # damaged groups marked incomplete
    stale: list[Damage] = field(default_factory=list)  # derived extras whose groups changed since
    removed: int = 0  # stale extras removed

    @property
    def ok(self) -> bool:
        return not self.damaged


def redo_command(store: FeatureStore) -> str:
    """Which command rewrites this store's groups: its metadata says where it came from."""
    ref = store.meta.model_ref
    if ref.startswith("import:"):
        return "import-features"
    if ref.startswith("run:"):
        return "export"
    return "extract"


def _read_every_chunk(store: FeatureStore, unit: str) -> bool:
    """Read the group chunk by chunk (DamagedGroup on any problem); True when it carries checksums and
    chunk counts, False for a group written before them."""
    attrs = store.unit_attrs(unit)
    arrays = store.open_arrays(unit, attrs)
    for key, array in arrays.items():
        step = array.chunks[0] if array.chunks else 1
        for start in range(0, array.shape[0], step):
            try:
                array[start : start + step]
            except Exception as err:  # checksum mismatch, undecodable chunk: many error types
                raise DamagedGroup(store.path, unit, f"{key} rows {start}-{start + step - 1}: {short_reason(err)}") from None
    return "chunks" in attrs and all(has_checksums(a) for a in arrays.values())


def _check_extras(store: FeatureStore, feature: str, redo: str, report: VerifyReport, dry_run: bool) -> None:
    """Every extra reads back; one derived from groups still matches their content (else stale)."""
    for name in store.extra_names():
        where = f"{EXTRAS_GROUP}/{name}"
        derived = name.startswith(STANDARDIZATION_EXTRA)
        try:
            _, attrs = store.get_extra(name)
        except DamagedGroup as err:
            report.damaged.append(Damage(feature, where, err.problem, "train (recomputes it)" if derived
                                         else f"{redo} (loads the extractor, which writes it again)"))
            continue
        sources = attrs.get(DERIVED_FROM)
        if not isinstance(sources, dict):
            continue
        changed = _changed_groups(store, sources)
        if not changed:
            continue
        shown = ", ".join(changed[:3]) + (" …" if len(changed) > 3 else "")
        report.stale.append(Damage(feature, where, f"group {shown} rewritten since it was computed",
                                   "nothing: recomputed when next needed"))
        if not dry_run:
            store.remove_extra(name)
            report.removed += 1


def _changed_groups(store: FeatureStore, sources: dict) -> list[str]:
    """The groups whose recorded identity differs from the one an extra was computed on (or that are gone)."""
    complete = set(store.units())
    changed = []
    for group, identity in sources.items():
        try:
            now = store.group_identities([group])[group] if group in complete else None
        except DamagedGroup:
            now = None
        if now != identity:
            changed.append(group)
    return sorted(changed)


def verify_store(name: str, path: Location, report: VerifyReport, dry_run: bool) -> None:
    try:
        store = FeatureStore.open(path, writable=not dry_run)
    except (DamagedStore, FingerprintMismatch) as err:
        report.damaged.append(Damage(name, "(store)", str(err), "move the store aside"))
        return
    report.stores.append(name)
    redo = redo_command(store)
    try:
        row_shape = expected_row_shape(store)
    except DamagedGroup:  # an unreadable input_spec: reported with the extras below
        row_shape = None
    for unit in store.units(complete_only=False):
        try:
            if not store.unit_attrs(unit).get("complete"):
                continue
            report.groups += 1
            shape_problem = row_shape_problem(store.open_arrays(unit)["values"].shape[1:], row_shape)
            if shape_problem:
                raise DamagedGroup(store.path, unit, shape_problem)
            if not _read_every_chunk(store, unit):
                report.unchecked += 1
            continue
        except DamagedGroup as err:
            problem = err.problem
        report.damaged.append(Damage(name, unit, problem, redo))
        log.warning("%s: group '%s' is damaged: %s", path, unit, problem)
        if not dry_run:
            store.mark_incomplete(unit, problem)
            report.marked += 1
    _check_extras(store, name, redo, report, dry_run)


def verify_cache(cache_dir: Location, features: Sequence[str] | None = None, dry_run: bool = False) -> VerifyReport:
    """Verify the stores of `features` (default: every store) in `cache_dir`; see the module docstring."""
    if not exists(cache_dir):
        raise FileNotFoundError(f"{cache_dir}: no such cache folder")
    stores = list_stores(cache_dir)
    if features:
        unknown = [f for f in features if f not in stores]
        if unknown:
            raise FileNotFoundError(
                f"no store for {', '.join(unknown)} in {cache_dir} (stores there: {', '.join(stores) or 'none'})"
            )
        stores = {f: stores[f] for f in features}
    report = VerifyReport()
    for name, path in stores.items():
        verify_store(name, path, report, dry_run)
    return report
