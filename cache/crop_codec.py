"""How `face_crops` rows are stored: `lossless` (the pixels) or `jpeg:Q` (each crop a JPEG of quality Q).

A JPEG row is a fixed-width uint8 row of the store, so every store mechanism (chunks, crc32c checksums,
chunk counts, verify, row slices) works unchanged:

    byte 0: kind (0 no crop, 1 JPEG), bytes 1-4: payload length (uint32 little endian), then the payload,
    then zeros (blosc compresses the zeros to almost nothing).

The width is S*S*3 / 2 + 5 (half the pixels: a read decompresses half the bytes of a full-width row). A
face at q95 takes about a tenth of it and pure noise 40 %; a crop whose JPEG would not fit is encoded at
a lower quality (steps of 5) until it does, with a warning. Decoding takes a batch of rows: torchvision's `decode_jpeg`
(nvjpeg when `device` is a CUDA device), split over `workers` threads on the CPU.
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # annotations only: importing this module needs no torch
    import torch

log = logging.getLogger(__name__)

HEADER = 5
EMPTY, JPEG, RAW = 0, 1, 2  # RAW: rows of stores whose width held raw pixels (read, never written now)
CODECS_HELP = "lossless | jpeg:Q (Q in 1..100)"


@dataclass(frozen=True)
class CropCodec:
    """A parsed codec name: `lossless` or `jpeg:Q`."""

    kind: str  # lossless | jpeg
    quality: int = 0

    @classmethod
    def parse(cls, name: str) -> "CropCodec":
        text = str(name).strip().lower()
        if text == "lossless":
            return cls("lossless")
        head, _, q = text.partition(":")
        if head == "jpeg" and q.isdigit() and 1 <= int(q) <= 100:
            return cls("jpeg", int(q))
        raise ValueError(f"face_crops codec {name!r} is not one of {CODECS_HELP}")

    @property
    def name(self) -> str:
        return "lossless" if self.kind == "lossless" else f"jpeg:{self.quality}"

    @property
    def lossy(self) -> bool:
        return self.kind != "lossless"

    def row_shape(self, size: int) -> tuple[int, ...]:
        """Shape of one stored row for crops of `size` px."""
        return (size, size, 3) if not self.lossy else (size * size * 3 // 2 + HEADER,)

    def encode(self, crops: np.ndarray, present: np.ndarray | None = None) -> np.ndarray:
        """(N, S, S, 3) uint8 crops -> stored rows; `present` False rows are stored empty."""
        crops = np.ascontiguousarray(crops, dtype=np.uint8)
        if not self.lossy:
            return crops
        import torch
        from torchvision.io import encode_jpeg

        n, size = len(crops), crops.shape[1] if crops.ndim == 4 else 0
        out = np.zeros((n, *self.row_shape(size)), dtype=np.uint8)
        present = np.ones(n, dtype=bool) if present is None else np.asarray(present, dtype=bool)
        width = out.shape[1] - HEADER
        for i in np.flatnonzero(present):
            image, quality = torch.from_numpy(crops[i]).permute(2, 0, 1), self.quality
            payload = encode_jpeg(image, quality=quality).numpy()
            while len(payload) > width and quality > 5:
                quality = max(5, quality - 5)
                payload = encode_jpeg(image, quality=quality).numpy()
            if len(payload) > width:
                raise ValueError(f"a {size} px crop does not fit a JPEG row even at quality 5")
            if quality != self.quality:
                log.warning("a crop took more than %d bytes at quality %d: stored at quality %d", width, self.quality, quality)
            out[i, 0] = JPEG
            out[i, 1:HEADER] = np.frombuffer(np.uint32(len(payload)).tobytes(), dtype=np.uint8)
            out[i, HEADER : HEADER + len(payload)] = payload
        return out

    def decode(self, rows: np.ndarray, size: int, device: str = "cpu", workers: int = 1) -> torch.Tensor:
        """Stored rows -> (N, S, S, 3) uint8 tensor on `device` (empty rows are black)."""
        import torch

        if not self.lossy:
            return torch.from_numpy(np.require(rows, np.uint8, ["C", "W"])).to(device)
        rows = np.asarray(rows)
        out = torch.zeros((len(rows), size, size, 3), dtype=torch.uint8, device=device)
        if not len(rows):
            return out
        lengths = rows[:, 1:HEADER].copy().view("<u4").reshape(-1)
        for i in np.flatnonzero(rows[:, 0] == RAW):
            raw = rows[i, HEADER : HEADER + lengths[i]].reshape(size, size, 3)
            out[i] = torch.from_numpy(raw.copy()).to(device)
        jpeg = np.flatnonzero(rows[:, 0] == JPEG)
        if not len(jpeg):
            return out
        datas = [torch.from_numpy(rows[i, HEADER : HEADER + lengths[i]].copy()) for i in jpeg]
        images = _decode_jpegs(datas, device, workers)
        out[torch.as_tensor(jpeg, device=device)] = torch.stack(images).permute(0, 2, 3, 1)
        return out


def _decode_jpegs(datas: list, device: str, workers: int) -> list:
    """torchvision's batched decode: one call on CUDA (nvjpeg), split over `workers` threads on the CPU."""
    from torchvision.io import ImageReadMode, decode_jpeg

    if str(device).startswith("cuda"):
        return list(decode_jpeg(datas, mode=ImageReadMode.RGB, device=device))
    if workers <= 1 or len(datas) < 2 * workers:
        return list(decode_jpeg(datas, mode=ImageReadMode.RGB))
    parts = [datas[k::workers] for k in range(workers)]
    with ThreadPoolExecutor(workers) as pool:
        decoded = list(pool.map(lambda p: decode_jpeg(p, mode=ImageReadMode.RGB), parts))
    images: list = [None] * len(datas)
    for k, part in enumerate(decoded):
        images[k::workers] = part
    return images


def codec_of(config: dict) -> CropCodec:
    """The codec a face_crops store records in its config (stores made before the option: lossless)."""
    return CropCodec.parse(config.get("codec", "lossless"))
