"""`face_crops`: each track's aligned face crops at the CLIP input size, uint8, so that the visual tower
(or its top blocks) can be trained from the cache without decoding a video or finding a face again.

A crop is exactly what the `clip` extractor feeds its model, stopped before normalisation: the same
`crop_faces` box crop (memoised on the batch, so `clip` and `face_crops` in one run crop once), then the
geometric part of open_clip's own eval transform (resize, centre crop) for the model's input size.
`train/heads/backbones.py` applies the normalisation (x / 255 − mean) / std, which reproduces the `clip`
embeddings (tests/test_finetune.py).

Storage (`codec`, recorded in the store's config and so in its fingerprint; `cache/crop_codec.py`):
`jpeg:95` (default) stores each crop as a JPEG of quality 95 in a fixed-width row of S*S*3/2 + 5 bytes
(the JPEG about 15 KB a frame, 44 GB for Aff-Wild2; landmark displacement and PSNR per quality in
bench/README.md); `lossless` stores (N, S, S, 3) uint8 pixels (about 105 KB a frame, 320 GB). S = the
model's input size (224 for ViT-B/16 and for the tiny model), chunks of 32 rows, blosc-zstd (with bit
shuffle for lossless pixels, without for JPEG bytes). Frames without a face are black (empty) rows with
valid False. Read crops back with `cache/crops.py` `CropReader` (batched torchvision decode, nvjpeg on
a GPU). The store's extra `input_spec` records the model, input size and normalisation it was made for;
training refuses a backbone with another model or size.

Memory: a track's crops are spilled to a temporary file as they come (150 KB a frame) and handed to the
store as a memory map, written in chunk-sized blocks, so a long video never sits in RAM.
"""

from __future__ import annotations

import logging
import os
import tempfile
from dataclasses import dataclass
from typing import Any

import numpy as np

from cache.crop_codec import CropCodec
from cache.crops import INPUT_SPEC_EXTRA
from cache.store import FeatureStore, StoreLayout
from extract.base import CropBatch, CropExtractor, UnitResult, VideoContext, box_crops, register

log = logging.getLogger(__name__)

CROP_LAYOUT = StoreLayout(chunk_rows=32, cname="zstd", clevel=3, shuffle="bitshuffle")
# JPEG rows: bit shuffling gains nothing on compressed bytes and made chunks 2.7x slower to decompress
JPEG_LAYOUT = StoreLayout(chunk_rows=32, cname="zstd", clevel=3, shuffle="noshuffle")


def crop_layout(codec: str) -> StoreLayout:
    """How a face_crops store of this codec chunks and compresses its rows."""
    return JPEG_LAYOUT if CropCodec.parse(codec).lossy else CROP_LAYOUT


@dataclass
class FaceCropsConfig:
    crop_size: int = 256  # box crop side before CLIP's own resize / centre crop (as `clip`)
    crop_margin: float = 0.1
    codec: str = "jpeg:95"  # lossless | jpeg:Q (cache/crop_codec.py); chosen in bench/face_crops_size.py

    def __post_init__(self) -> None:
        CropCodec.parse(self.codec)  # a wrong name fails at configuration, not after a video


@register
class FaceCropsExtractor(CropExtractor):
    name = "face_crops"
    Config = FaceCropsConfig
    family = "open_clip"
    version = "1"
    store_dtype = "uint8"
    autocast = False

    @property
    def store_layout(self) -> StoreLayout:  # type: ignore[override]
        return crop_layout(self.config.codec)

    def __init__(self, config: FaceCropsConfig | None = None, profile: str = "full", model_ref: str | None = None, **kw: Any):
        super().__init__(config, profile, model_ref, **kw)
        self.inputs: Any = None
        self.spec: dict[str, Any] = {}
        self._spill: str | None = None

    def weights_digest(self) -> str:
        return ""  # crops depend on the architecture's input transform, not on its weights

    def load(self, device: str = "cpu") -> None:
        from extract.clip_input import ClipInput
        from extract.models import clip_input_spec, load_open_clip

        super().load(device)
        model, preprocess, _ = load_open_clip(self.model_ref, "cpu")
        self.inputs = ClipInput(preprocess)
        self.spec = clip_input_spec(model, self.public_model_ref(), preprocess)
        self.codec = CropCodec.parse(self.config.codec)
        del model

    @property
    def size(self) -> int:
        return int(self.spec["image_size"])

    def write_extras(self, store: FeatureStore) -> None:
        store.put_extra(INPUT_SPEC_EXTRA, np.array([self.size], dtype=np.int64), self.spec)

    def to_input(self, crops: np.ndarray) -> np.ndarray:
        """(B, c, c, 3) box crops -> (B, S, S, 3) uint8 model-input crops (before normalisation), by the
        batched transform `clip` uses (`extract/clip_input.py`), so both see the same pixels."""
        if not len(crops):
            return np.zeros((0, self.size, self.size, 3), dtype=np.uint8)
        return self.inputs.geometric(crops, self.device).permute(0, 2, 3, 1).cpu().numpy()

    def begin(self, video: VideoContext) -> dict[str, Any]:
        self._clean_spill()
        self._spill = tempfile.mkdtemp(prefix="affcache-crops-")
        files = {t: open(os.path.join(self._spill, f"{i}.u8"), "wb") for i, t in enumerate(video.tracks)}
        return {"files": files, "rows": {t: [] for t in video.tracks}}

    def process_crops(self, state: dict[str, Any], batch: CropBatch) -> None:
        crops, ok = box_crops(batch, self.config.crop_size, self.config.crop_margin)
        rows = np.zeros((len(ok), self.size, self.size, 3), dtype=np.uint8)
        rows[ok] = self.to_input(crops)
        state["files"][batch.track].write(self.codec.encode(rows, ok).tobytes())
        state["rows"][batch.track].append((batch.times.copy(), ok.copy()))

    def end(self, state: dict[str, Any]) -> dict[str, UnitResult]:
        out = {}
        shape = self.codec.row_shape(self.size)
        for track, handle in state["files"].items():
            handle.close()
            rows = state["rows"][track]
            times = np.concatenate([r[0] for r in rows]) if rows else np.zeros((0, 2))
            valid = np.concatenate([r[1] for r in rows]) if rows else np.zeros(0, dtype=bool)
            if len(valid):
                values = np.memmap(handle.name, dtype=np.uint8, mode="r", shape=(len(valid), *shape))
            else:
                values = np.zeros((0, *shape), dtype=np.uint8)
            os.unlink(handle.name)  # the map stays readable until it is dropped
            out[track] = UnitResult(values, times, valid, {"model": self.spec["model"], "image_size": self.size,
                                                           "codec": self.codec.name})
        return out

    def _clean_spill(self) -> None:
        if self._spill is not None:
            import shutil

            shutil.rmtree(self._spill, ignore_errors=True)
            self._spill = None

    def close(self) -> None:
        self._clean_spill()
        self.inputs = None
