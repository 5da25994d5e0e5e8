"""`grada`: per-frame 256-d affect embeddings of face crops from an EfficientNet face encoder (RAS's face
branch: GRADA, an EfficientNet-B1 multi-task fine-tuned on emotion data).

Model (`FaceEncoder`): a timm `EfficientNet` without its classifier (global-pooled features), then the
GRADA embedding head: Dropout(0.1) -> Linear(features, 256) -> BatchNorm1d -> Tanh. The module names
(`model`, `dropout_after_pretrained`, `embeddings_layer`, `batchnorm`, `activation_embeddings`) follow
the ones RAS's extractor calls (SMIL-SPCRAS/CVPRW-26, src_visual_dynamic_model/extract_grada_features.py).
Preprocessing as there: the crop scaled to the model's input size (240 for B1), ImageNet mean/std.

Weights come from one file (`--model grada=/path/to/encoder.safetensors`); there is no public hub copy,
so profile `full` needs that reference. The file is a safetensors state dict whose metadata key
`affcache_face_encoder` holds the architecture (`FaceEncoderSpec` as JSON); a `.pt`/`.pth` file holding
{"spec": {...}, "state_dict": {...}} or a bare state dict (then EfficientNet-B1 / 256-d is assumed) loads
too. Heads a checkpoint may carry beyond the embedding (emotion classifier, VA regression) are ignored;
any missing encoder weight is an error. Profile `tiny`: the same class with small channel/depth
multipliers and input size, saved to a file and loaded back through `load_face_encoder`.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from extract.base import CropBatch, CropExtractor, UnitResult, VideoContext, crop_faces, register, rows_to_results
from extract.models import ModelFamily, register_family

log = logging.getLogger(__name__)

SPEC_KEY = "affcache_face_encoder"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
IGNORED_HEADS = ("classifier.", "regression.")  # GRADA's task heads: not part of the embedding


@dataclass(frozen=True)
class FaceEncoderSpec:
    """Architecture of a face encoder file (EfficientNet-B1 = multipliers 1.0 / 1.1, input 240)."""

    variant: str = "efficientnet_b1"  # timm architecture family of the block layout
    channel_multiplier: float = 1.0
    depth_multiplier: float = 1.1
    embed_dim: int = 256
    image_size: int = 240
    activation: str = "tanh"  # tanh | relu | gelu | identity (GRADA: tanh)


TINY_SPEC = FaceEncoderSpec(channel_multiplier=0.25, depth_multiplier=0.2, embed_dim=256, image_size=64)


def build_face_encoder(spec: FaceEncoderSpec) -> Any:
    """A randomly initialised `FaceEncoder` of `spec` (timm EfficientNet backbone + embedding head)."""
    import torch
    from timm.models.efficientnet import _gen_efficientnet
    from torch import nn

    activations = {"tanh": nn.Tanh, "relu": nn.ReLU, "gelu": nn.GELU, "identity": nn.Identity}
    if spec.activation not in activations:
        raise ValueError(f"face encoder activation must be one of {sorted(activations)}, got {spec.activation!r}")

    class FaceEncoder(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            # num_classes=0: the timm model returns its global-pooled features
            self.model = _gen_efficientnet(
                spec.variant, channel_multiplier=spec.channel_multiplier, depth_multiplier=spec.depth_multiplier,
                pretrained=False, num_classes=0,
            )
            self.dropout_after_pretrained = nn.Dropout(0.1)
            self.embeddings_layer = nn.Linear(self.model.num_features, spec.embed_dim)
            self.batchnorm = nn.BatchNorm1d(spec.embed_dim, momentum=0.1, affine=True)
            self.activation_embeddings = activations[spec.activation]()
            self.spec = spec

        def forward(self, pixels: torch.Tensor) -> torch.Tensor:
            x = self.dropout_after_pretrained(self.model(pixels))
            return self.activation_embeddings(self.batchnorm(self.embeddings_layer(x)))

    return FaceEncoder()


def save_face_encoder(model: Any, path: Path) -> Path:
    """Write a `FaceEncoder` to one safetensors file with its spec in the metadata."""
    from safetensors.torch import save_file

    path = Path(path)
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    save_file(state, str(path), metadata={SPEC_KEY: json.dumps(asdict(model.spec))})
    return path


def _read_weights(path: Path) -> tuple[FaceEncoderSpec, dict[str, Any]]:
    if path.suffix == ".safetensors":
        from safetensors import safe_open
        from safetensors.torch import load_file

        with safe_open(str(path), framework="pt") as handle:
            meta = handle.metadata() or {}
        spec = FaceEncoderSpec(**json.loads(meta[SPEC_KEY])) if SPEC_KEY in meta else FaceEncoderSpec()
        return spec, load_file(str(path))
    import torch

    raw = torch.load(str(path), map_location="cpu", weights_only=True)
    if isinstance(raw, dict) and "state_dict" in raw:
        return FaceEncoderSpec(**raw.get("spec", {})), raw["state_dict"]
    return FaceEncoderSpec(), raw


def load_face_encoder(ref: str | Path, device: str = "cpu") -> Any:
    """The face encoder a weights file holds, in eval mode on `device` (real or tiny alike)."""
    path = Path(ref)
    if not path.is_file():
        raise FileNotFoundError(f"face encoder weights not found: {path} (give them with --model grada=/path)")
    spec, state = _read_weights(path)
    model = build_face_encoder(spec)
    state = {k: v for k, v in state.items() if not k.startswith(IGNORED_HEADS)}
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as err:  # shapes differ from the spec
        missing, unexpected = [str(err).splitlines()[1].strip() if "\n" in str(err) else str(err)], []
    if missing or unexpected:
        raise ValueError(
            f"{path}: not a face encoder of {spec.variant} (x{spec.channel_multiplier}/x{spec.depth_multiplier}, "
            f"{spec.embed_dim}-d): missing {missing[:3]}{'...' if len(missing) > 3 else ''}, "
            f"unexpected {unexpected[:3]}{'...' if len(unexpected) > 3 else ''}"
        )
    model.eval().to(device)
    log.info("face encoder %s loaded from %s", spec.variant, path)
    return model


def build_tiny_face_encoder(folder: Path) -> str:
    """A small random encoder of the same class, saved as a file loadable by `load_face_encoder`."""
    import torch

    torch.manual_seed(0)
    return str(save_face_encoder(build_face_encoder(TINY_SPEC).eval(), Path(folder) / "face-encoder-tiny.safetensors"))


register_family(ModelFamily("face_encoder", None, build_tiny_face_encoder, load_face_encoder))


@dataclass(frozen=True)
class FaceEncoderConfig:
    crop_margin: float = 0.1  # margin around the face box before scaling to the model's input size


@register
class FaceEncoderExtractor(CropExtractor):
    """`grada`: (N, embed_dim) embedding per frame of the track's face; frames without a face are invalid
    (the training side fills them from the nearest frame with `--fill grada=inf`, as RAS does)."""

    name = "grada"
    Config = FaceEncoderConfig
    family = "face_encoder"
    version = "1"

    def load(self, device: str = "cpu") -> None:
        super().load(device)
        self.model = load_face_encoder(self.model_ref, device)

    def embed(self, crops: np.ndarray) -> np.ndarray:
        """(B, S, S, 3) uint8 crops at the model's input size -> (B, D) float32."""
        import torch

        pixels = torch.from_numpy(crops).to(self.device).permute(0, 3, 1, 2).float() / 255.0
        mean = torch.tensor(IMAGENET_MEAN, device=self.device).view(1, 3, 1, 1)
        std = torch.tensor(IMAGENET_STD, device=self.device).view(1, 3, 1, 1)
        return self.model((pixels - mean) / std).float().cpu().numpy()

    def begin(self, video: VideoContext) -> dict[str, Any]:
        return {"rows": {t: [] for t in video.tracks}}

    def process_crops(self, state: dict[str, Any], batch: CropBatch) -> None:
        ok = batch.has_box
        spec = self.model.spec
        values = np.zeros((len(ok), spec.embed_dim), dtype=np.float32)
        if ok.any():
            frames = [f for f, k in zip(batch.frames, ok) if k]
            crops = crop_faces(frames, batch.boxes[ok], spec.image_size, self.config.crop_margin)
            values[ok] = self.embed(crops)
        state["rows"][batch.track].append((batch.times.copy(), values, ok.copy()))

    def end(self, state: dict[str, Any]) -> dict[str, UnitResult]:
        return rows_to_results(state["rows"], self.model.spec.embed_dim, {"model": self.public_model_ref()})

    def close(self) -> None:
        self.model = None
