"""Export a feature store to one HDF5 file (h5py), so that any tool can read an affcache feature.

Layout of the file:
  /                 root attributes: the store's metadata (name, kind, unit, model_ref, weights_digest,
                    config, version, fingerprint) and `affcache_format`
  /<unit>/values    (N, ...) in the store's dtype (float16 unless the store says otherwise)
  /<unit>/times     (N, 2) float64 [start, end) seconds
  /<unit>/valid     (N,) bool
  /<unit>           group attributes: the unit's attributes (source, fps, n_frames, complete, rows, ...)
  /_extras/<name>   data stored with the feature (`FeatureStore.put_extra`), with its attributes

Attributes that HDF5 cannot hold as a scalar (dicts, lists, None) are JSON strings; their names are listed
in the JSON attribute `affcache_json_keys` of the same object, so reading them back is exact.
`import-features FILE --format hdf5` recognises such a file by `affcache_format` and restores the store
exactly (values bit for bit, times, valid, attributes, metadata and fingerprint).
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import zarr

from cache.store import EXTRAS_GROUP, FeatureStore

log = logging.getLogger(__name__)

FORMAT_ATTR = "affcache_format"
EXPORT_FORMAT = "affcache-feature-store/1"
JSON_KEYS_ATTR = "affcache_json_keys"
DATASETS = ("values", "times", "valid")
_INT64 = (-(2**63), 2**63 - 1)


@dataclass
class ExportReport:
    out: Path
    units: list[str] = field(default_factory=list)
    extras: list[str] = field(default_factory=list)

    def summary(self) -> str:
        return f"exported {len(self.units)} unit(s) and {len(self.extras)} extra(s) to {self.out}"


def _is_plain_scalar(value: Any) -> bool:
    """A value HDF5 stores as an attribute and gives back unchanged (after `.item()`)."""
    if isinstance(value, bool | float | str):
        return True
    return isinstance(value, int) and _INT64[0] <= value <= _INT64[1]


def write_attrs(obj: h5py.Group | h5py.Dataset, attrs: dict[str, Any]) -> None:
    """Write attributes to an HDF5 object: plain scalars as they are, everything else as JSON."""
    json_keys = []
    for key, value in attrs.items():
        if _is_plain_scalar(value):
            obj.attrs[key] = value
        else:
            obj.attrs[key] = json.dumps(value, sort_keys=True)
            json_keys.append(key)
    obj.attrs[JSON_KEYS_ATTR] = json.dumps(json_keys)


def read_attrs(obj: h5py.Group | h5py.Dataset) -> dict[str, Any]:
    """Attributes as Python values; those listed in `affcache_json_keys` are decoded from JSON."""
    json_keys = set(json.loads(obj.attrs[JSON_KEYS_ATTR])) if JSON_KEYS_ATTR in obj.attrs else set()
    out: dict[str, Any] = {}
    for key, value in obj.attrs.items():
        if key == JSON_KEYS_ATTR:
            continue
        if isinstance(value, bytes):
            value = value.decode("utf-8")
        if key in json_keys:
            out[key] = json.loads(value)
        elif isinstance(value, np.generic):
            out[key] = value.item()
        elif isinstance(value, np.ndarray):
            out[key] = value.tolist()
        else:
            out[key] = value
    return out


def _write_dataset(group: h5py.Group, name: str, data: np.ndarray) -> h5py.Dataset:
    if data.size == 0:  # HDF5 cannot chunk an empty dataset
        return group.create_dataset(name, data=data)
    return group.create_dataset(name, data=data, compression="gzip", compression_opts=4, shuffle=True)


def _export_units(store: FeatureStore, out: h5py.File, report: ExportReport) -> None:
    for unit in store.units():
        group_data = store.read(unit)
        group = out.create_group(unit)
        for name in DATASETS:
            _write_dataset(group, name, getattr(group_data, name))
        write_attrs(group, group_data.attrs)
        report.units.append(unit)


def _export_extras(store: FeatureStore, out: h5py.File, report: ExportReport) -> None:
    names = store.extra_names()
    if not names:
        return
    group = out.create_group(EXTRAS_GROUP)
    for name in names:
        data, attrs = store.get_extra(name)
        dataset = _write_dataset(group, name, data)
        write_attrs(dataset, attrs)
        report.extras.append(name)


def export_store(store_dir: Path, out: Path) -> ExportReport:
    """Write every complete unit (and the extras) of the store at `store_dir` to the HDF5 file `out`.

    Written to `<out>.partial` first and renamed at the end, so a crash never leaves a half file at `out`.
    """
    store = FeatureStore.open(store_dir)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(out.name + ".partial")
    report = ExportReport(out=out)
    root_attrs = dict(zarr.open_group(str(store_dir), mode="r").attrs)
    try:
        with h5py.File(partial, "w") as handle:
            write_attrs(handle, {**root_attrs, FORMAT_ATTR: EXPORT_FORMAT})
            _export_units(store, handle, report)
            _export_extras(store, handle, report)
        os.replace(partial, out)
    finally:
        partial.unlink(missing_ok=True)
    log.info("%s: %s", store_dir, report.summary())
    return report


def is_affcache_export(path: Path) -> bool:
    """True for an HDF5 file written by `export_store`."""
    try:
        with h5py.File(path, "r") as handle:
            value = handle.attrs.get(FORMAT_ATTR)
    except OSError:
        return False
    if isinstance(value, bytes):
        value = value.decode("utf-8")
    return isinstance(value, str) and value.startswith("affcache-feature-store/")
