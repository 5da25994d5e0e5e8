"""`clip`: open_clip image embeddings of face crops, and the 3x3 VA region prompt prototypes.

Crops go through the transforms open_clip returns with the model (CLIP's own resize, crop and
normalisation), as batched tensor ops on the model's device (`extract/clip_input.py`). `full`: ViT-B-16 with `openai` weights; `tiny`: a 2-layer model of a registered tiny
config, saved and loaded back through the same `extract.models.load_open_clip`.
The store's extra `region_prototypes` (9, D) holds the text prototypes of the 9 VA regions (3 templates
each, averaged, L2-normalised); its attrs give the prompts and the region centres (valence, arousal).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np

from cache.regions import PROMPT_TEMPLATES, REGION_STATES, region_prompts  # noqa: F401  (re-exported)
from cache.store import FeatureStore
from extract.base import CropBatch, CropExtractor, UnitResult, VideoContext, box_crops, register, rows_to_results

log = logging.getLogger(__name__)

@dataclass
class ClipConfig:
    crop_size: int = 256  # crop side before CLIP's own preprocessing
    crop_margin: float = 0.1
    normalize: bool = True  # store L2-normalised embeddings


@register
class ClipExtractor(CropExtractor):
    name = "clip"
    Config = ClipConfig
    family = "open_clip"
    version = "1"

    def __init__(self, config: ClipConfig | None = None, profile: str = "full", model_ref: str | None = None, **kw: Any):
        super().__init__(config, profile, model_ref, **kw)
        self.model: Any = None
        self.preprocess: Any = None
        self.tokenizer: Any = None
        self.inputs: Any = None

    def load(self, device: str = "cpu") -> None:
        from extract.models import load_open_clip

        super().load(device)
        from extract.clip_input import ClipInput

        self.model, self.preprocess, self.tokenizer = load_open_clip(self.model_ref, device)
        self.inputs = ClipInput(self.preprocess)

    def write_extras(self, store: FeatureStore) -> None:
        from extract.models import region_text_prototypes

        prompts, centres = region_prompts()
        protos = region_text_prototypes(self.model, self.tokenizer, self.device)
        store.put_extra("region_prototypes", protos, {"prompts": prompts, "centres": centres, "order": "valence-major"})

    def embed(self, crops: np.ndarray) -> np.ndarray:
        """(B, S, S, 3) uint8 crops -> (B, D) float32 embeddings (model forward on the runner's device)."""
        import torch

        pixels = self.inputs(crops, self.device)
        with self.model_time():
            features = self.model.encode_image(pixels).float()
            if self.config.normalize:
                features = torch.nn.functional.normalize(features, dim=-1)
            return features.cpu().numpy()

    def begin(self, video: VideoContext) -> dict[str, Any]:
        return {"rows": {t: [] for t in video.tracks}}

    def process_crops(self, state: dict[str, Any], batch: CropBatch) -> None:
        ok = batch.has_box
        dim = int(self.model.visual.output_dim)
        values = np.zeros((len(ok), dim), dtype=np.float32)
        if ok.any():
            crops, _ = box_crops(batch, self.config.crop_size, self.config.crop_margin)  # shared with face_crops
            values[ok] = self.embed(crops)
        state["rows"][batch.track].append((batch.times.copy(), values, ok.copy()))

    def end(self, state: dict[str, Any]) -> dict[str, UnitResult]:
        return rows_to_results(state["rows"], int(self.model.visual.output_dim), {"model": self.public_model_ref()})

    def close(self) -> None:
        self.model = self.preprocess = self.tokenizer = self.inputs = None
