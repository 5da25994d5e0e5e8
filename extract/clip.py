"""`clip`: open_clip image embeddings of face crops, and the 3x3 VA region prompt prototypes.

Crops go through the transforms open_clip returns with the model (CLIP's own resize, crop and
normalisation). `full`: ViT-B-16 with `openai` weights; `tiny`: a 2-layer model of a registered tiny
config, saved and loaded back through the same `extract.models.load_open_clip`.
The store's extra `region_prototypes` (9, D) holds the text prototypes of the 9 VA regions (3 templates
each, averaged, L2-normalised); its attrs give the prompts and the region centres (valence, arousal).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np

from cache.regions import region_grid
from cache.store import FeatureStore
from extract.base import CropBatch, CropExtractor, UnitResult, VideoContext, box_crops, register

log = logging.getLogger(__name__)

# (valence index, arousal index) -> the state words of that region
REGION_STATES = {
    (0, 0): "sad and depressed",
    (0, 1): "unhappy and displeased",
    (0, 2): "angry and distressed",
    (1, 0): "calm and sleepy",
    (1, 1): "neutral",
    (1, 2): "surprised and alert",
    (2, 0): "relaxed and content",
    (2, 1): "pleased and happy",
    (2, 2): "excited and delighted",
}
PROMPT_TEMPLATES = (
    "a photo of a {} face.",
    "a face that looks {}.",
    "a close-up photo of a person who is {}.",
)


def region_prompts() -> tuple[list[list[str]], list[list[float]]]:
    """Prompts per region (9 x 3) and region centres [[v, a], ...], valence-major order."""
    prompts, centres = [], []
    for iv, ia, v, a in region_grid():
        prompts.append([t.format(REGION_STATES[(iv, ia)]) for t in PROMPT_TEMPLATES])
        centres.append([v, a])
    return prompts, centres


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

    def load(self, device: str = "cpu") -> None:
        from extract.models import load_open_clip

        super().load(device)
        self.model, self.preprocess, self.tokenizer = load_open_clip(self.model_ref, device)

    def write_extras(self, store: FeatureStore) -> None:
        import torch

        prompts, centres = region_prompts()
        flat = [p for group in prompts for p in group]
        with torch.inference_mode():
            tokens = self.tokenizer(flat).to(self.device)
            text = self.model.encode_text(tokens).float()
            text = torch.nn.functional.normalize(text, dim=-1).reshape(len(prompts), len(prompts[0]), -1)
            protos = torch.nn.functional.normalize(text.mean(1), dim=-1).cpu().numpy().astype(np.float32)
        store.put_extra("region_prototypes", protos, {"prompts": prompts, "centres": centres, "order": "valence-major"})

    def embed(self, crops: np.ndarray) -> np.ndarray:
        """(B, S, S, 3) uint8 crops -> (B, D) float32 embeddings (model forward on the runner's device)."""
        import torch
        from PIL import Image

        pixels = torch.stack([self.preprocess(Image.fromarray(c)) for c in crops]).to(self.device)
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
        out = {}
        dim = int(self.model.visual.output_dim)
        for track, rows in state["rows"].items():
            times = np.concatenate([r[0] for r in rows]) if rows else np.zeros((0, 2))
            values = np.concatenate([r[1] for r in rows]) if rows else np.zeros((0, dim), dtype=np.float32)
            valid = np.concatenate([r[2] for r in rows]) if rows else np.zeros(0, dtype=bool)
            out[track] = UnitResult(values, times, valid, {"model": self.public_model_ref()})
        return out

    def close(self) -> None:
        self.model = self.preprocess = self.tokenizer = None
