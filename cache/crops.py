"""Reading face crops back from a `face_crops` store: only the rows asked for, decoded in batches.

`CropReader` keeps each unit's opened arrays (the cheap checks and the chunk listing happen once per unit,
not per read), reads only the chunks that hold the requested rows (runs of them as chunk-aligned slices) and
decodes them with the store's codec (`cache/crop_codec.py`): JPEG rows in one batched torchvision call
(nvjpeg on a CUDA `device`), split over `workers` threads on the CPU.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

import numpy as np

from cache.crop_codec import CropCodec, codec_of
from cache.store import DamagedGroup, FeatureStore, IncompleteGroup, short_reason

if TYPE_CHECKING:  # annotations only: importing this module needs no torch
    import torch

INPUT_SPEC_EXTRA = "input_spec"


def crop_size(store: FeatureStore, default: int = 224) -> int:
    """The crop side a face_crops store records in its input spec (`default` when it records none)."""
    try:
        _, spec = store.get_extra(INPUT_SPEC_EXTRA)
    except KeyError:
        return default
    return int(spec["image_size"])


class CropReader:
    """Rows of a face_crops store as (N, S, S, 3) uint8 tensors."""

    def __init__(self, store: FeatureStore, device: str = "cpu", workers: int = 1) -> None:
        self.store, self.device, self.workers = store, device, max(1, int(workers))
        self.codec: CropCodec = codec_of(store.meta.config)
        self.size = crop_size(store)
        self._arrays: dict[str, Any] = {}
        self._lock = threading.Lock()

    def _values(self, unit: str) -> Any:
        with self._lock:
            hit = self._arrays.get(unit)
        if hit is None:
            attrs = self.store.unit_attrs(unit)
            if not attrs.get("complete"):
                raise IncompleteGroup(f"{self.store.path}: group '{unit}' is missing or incomplete")
            hit = self.store.open_arrays(unit, attrs)["values"]
            with self._lock:
                self._arrays[unit] = hit
        return hit

    def encoded(self, unit: str, rows: np.ndarray) -> np.ndarray:
        """The stored rows `rows` of `unit` as they are stored (only their chunks are read)."""
        rows = np.asarray(rows, dtype=np.int64)
        values = self._values(unit)
        if not len(rows):
            return np.zeros((0, *values.shape[1:]), dtype=np.uint8)
        size = int(values.chunks[0])
        chunks = np.unique(rows // size)
        # runs of consecutive touched chunks, each read as one chunk-aligned slice (zarr's orthogonal
        # selection decodes the same chunks but costs 3-4x more per row picked)
        runs = np.split(chunks, np.flatnonzero(np.diff(chunks) > 1) + 1)
        out = np.empty((len(rows), *values.shape[1:]), dtype=values.dtype)
        try:
            for run in runs:
                a, b = int(run[0]) * size, min((int(run[-1]) + 1) * size, values.shape[0])
                pick = np.flatnonzero((rows >= a) & (rows < b))
                out[pick] = values[a:b][rows[pick] - a]
            return out
        except Exception as err:  # checksum mismatch, undecodable chunk (as FeatureStore.read)
            raise DamagedGroup(self.store.path, unit, f"a chunk cannot be read ({short_reason(err)})") from None

    def read(self, unit: str, rows: np.ndarray, device: str | None = None) -> torch.Tensor:
        """Decoded crops of `rows` of `unit`: (len(rows), S, S, 3) uint8 on `device` (default: the reader's)."""
        return self.decode(self.encoded(unit, rows), device)

    def decode(self, encoded: np.ndarray, device: str | None = None) -> torch.Tensor:
        return self.codec.decode(encoded, self.size, device or self.device, self.workers)
