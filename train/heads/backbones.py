"""Backbone tops trained from the cache: the CLIP visual tower on cached face crops, and WavLM's top
layers on the cached input of those layers.

Weights come through the extraction loaders (`extract.models.load_open_clip`, `extract.wavlm_model.
load_wavlm`): a real reference (open_clip tag, hub id) with `full`, the tiny local models otherwise. Only
those model modules are imported from `extract/` (never an extractor).

- `ClipTower`: crops (N, S, S, 3) uint8 -> L2-normalised image embeddings (N, D), computed as open_clip's
  `encode_image` does (normalisation, patch embedding, blocks, pooling, projection); the first
  depth − K blocks run without gradient, the last K blocks, the final norm and the projection train
  (`clip:all`: everything). Equals the `clip` store for the same frames (tests/test_finetune.py).
- `WavlmTop`: the input of the top K layers (N, T, D) -> the model's last hidden state (N, T, D).
  WavLM computes a relative position bias in its first layer and hands it to every later layer; it
  depends only on the window length and layer 0's bucket embedding, so it is recomputed here from
  those weights for each length (not cached). With `do_stable_layer_norm` (WavLM-Large) the encoder's
  final layer norm follows the top layer and trains with it.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

log = logging.getLogger(__name__)

FAMILIES = {"clip": "open_clip", "wavlm": "wavlm"}
STORES = {"clip": "face_crops", "wavlm": "wavlm_hidden"}


class BackboneMismatch(ValueError):
    """A cache made for another model or input size than the backbone, or a top deeper than the model."""


def _set_trainable(module: nn.Module, flag: bool) -> None:
    for p in module.parameters():
        p.requires_grad_(flag)


# ---- CLIP ---------------------------------------------------------------------------------------------
class ClipTower(nn.Module):
    """open_clip visual tower with a frozen prefix and a trainable top (see the module doc)."""

    def __init__(self, visual: nn.Module, top: int | None, mean: Sequence[float], std: Sequence[float],
                 grad_checkpointing: bool = False, name: str = "clip") -> None:
        super().__init__()
        self.visual = visual
        blocks = self.blocks
        depth = len(blocks)
        if top is not None and not 1 <= top <= depth:
            raise BackboneMismatch(f"clip:{top} asks for the top {top} blocks, but {name} has {depth}")
        self.top = depth if top is None else top
        self.all = top is None
        self.grad_checkpointing = grad_checkpointing
        self.register_buffer("mean", torch.tensor(list(mean), dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(list(std), dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        _set_trainable(visual, self.all)
        if not self.all:
            for block in blocks[depth - self.top :]:
                _set_trainable(block, True)
            for part in ("ln_post", "attn_pool", "attn_pool_contrastive"):
                module = getattr(visual, part, None)
                if isinstance(module, nn.Module):
                    _set_trainable(module, True)
            if isinstance(getattr(visual, "proj", None), nn.Parameter):
                visual.proj.requires_grad_(True)

    @property
    def blocks(self) -> nn.ModuleList:
        return self.visual.transformer.resblocks

    @property
    def out_dim(self) -> int:
        return int(self.visual.output_dim)

    def pixels(self, crops: Tensor) -> Tensor:
        """uint8 (N, S, S, 3) -> normalised float (N, 3, S, S), as ToTensor + Normalize."""
        x = crops.permute(0, 3, 1, 2).float().div(255)
        return (x - self.mean) / self.std

    def forward(self, crops: Tensor) -> Tensor:
        visual = self.visual
        batch_first = getattr(visual.transformer, "batch_first", True)
        n_frozen = len(self.blocks) - self.top
        with torch.set_grad_enabled(torch.is_grad_enabled() and self.all):
            x = visual._embeds(self.pixels(crops))
            if not batch_first:
                x = x.transpose(0, 1)
        with torch.no_grad():
            for block in self.blocks[:n_frozen]:
                x = block(x)
        for block in self.blocks[n_frozen:]:
            if self.grad_checkpointing and torch.is_grad_enabled() and self.training:
                x = checkpoint(block, x, use_reentrant=False)
            else:
                x = block(x)
        if not batch_first:
            x = x.transpose(0, 1)
        pooled, _ = visual._pool(x)
        if getattr(visual, "proj", None) is not None:
            pooled = pooled @ visual.proj
        return F.normalize(pooled.float(), dim=-1)


@dataclass
class ClipBackbone:
    tower: ClipTower
    spec: dict[str, Any]  # model, image_size, mean, std, ... (extract.models.clip_input_spec)
    prototypes: Any  # (9, D) region text prototypes of this model's text tower
    ref: str


def load_clip_backbone(ref: str, top: int | None, grad_checkpointing: bool = False) -> ClipBackbone:
    from extract.models import clip_input_spec, clip_preprocess_parts, load_open_clip, region_text_prototypes

    model, preprocess, tokenizer = load_open_clip(ref, "cpu")
    spec = clip_input_spec(model, ref, preprocess)
    _, mean, std = clip_preprocess_parts(preprocess)
    prototypes = region_text_prototypes(model, tokenizer, "cpu")
    tower = ClipTower(model.visual, top, mean, std, grad_checkpointing, name=spec["model"])
    return ClipBackbone(tower=tower, spec=spec, prototypes=prototypes, ref=ref)


def check_crops_spec(store_spec: dict[str, Any], backbone_spec: dict[str, Any], store_path: str) -> None:
    """Refuse crops made for another model or input size than the backbone (one line naming both)."""
    made = (store_spec.get("model"), int(store_spec.get("image_size", -1)))
    want = (backbone_spec["model"], int(backbone_spec["image_size"]))
    if made != want:
        raise BackboneMismatch(
            f"{store_path} holds crops made for {made[0]} at {made[1]} px, but the backbone is {want[0]} at "
            f"{want[1]} px: extract face_crops for this model (--model face_crops=REF) or train the matching backbone"
        )


def save_clip_backbone(tower: ClipTower, ref: str, folder: Path) -> str:
    """The base model with the trained visual tower, in open_clip's local-dir format (safetensors)."""
    from extract.models import load_open_clip, save_open_clip

    model, _, _ = load_open_clip(ref, "cpu")
    model.visual.load_state_dict(tower.visual.state_dict())
    return save_open_clip(model, ref, folder)


# ---- WavLM --------------------------------------------------------------------------------------------
class RelativePositionBias(nn.Module):
    """WavLM's relative position bias (layer 0's bucket embedding), recomputed for any window length."""

    def __init__(self, attention: nn.Module) -> None:
        super().__init__()
        self.rel_attn_embed = nn.Embedding.from_pretrained(attention.rel_attn_embed.weight.detach().clone(), freeze=True)
        self.num_buckets, self.max_distance = attention.num_buckets, attention.max_distance
        self.num_heads = attention.num_heads
        self._attention_cls = type(attention)

    def forward(self, length: int, batch: int) -> Tensor:
        bias = self._attention_cls.compute_bias(self, length, length)  # (H, T, T), the model's own code
        return bias.unsqueeze(0).expand(batch, -1, -1, -1).reshape(batch * self.num_heads, length, length)

    def _relative_positions_bucket(self, relative_positions: Tensor) -> Tensor:
        return self._attention_cls._relative_positions_bucket(self, relative_positions)


class WavlmTop(nn.Module):
    """The last `stored` layers of a WavLM encoder run from their cached input; the last `top` of them
    (and the final layer norm of the stable-layer-norm variant) train, the others run without gradient."""

    def __init__(self, model: nn.Module, top: int, stored: int, grad_checkpointing: bool = False, name: str = "wavlm") -> None:
        super().__init__()
        layers = model.encoder.layers
        depth = len(layers)
        if not 1 <= top <= depth:
            raise BackboneMismatch(f"wavlm:{top} asks for the top {top} layers, but {name} has {depth}")
        if top > stored:
            raise BackboneMismatch(
                f"wavlm:{top} needs the input of the top {top} layers, but the wavlm_hidden store holds the input of "
                f"the top {stored}: extract wavlm_hidden with top_layers >= {top}"
            )
        self.depth, self.top, self.stored = depth, top, stored
        self.layers = nn.ModuleList(list(layers)[depth - stored :])
        self.stable = bool(model.config.do_stable_layer_norm)
        self.final_norm = model.encoder.layer_norm if self.stable else nn.Identity()
        self.bias = RelativePositionBias(layers[0].attention)
        self.grad_checkpointing = grad_checkpointing
        _set_trainable(self, False)
        for layer in self.layers[stored - top :]:
            _set_trainable(layer, True)
        _set_trainable(self.final_norm, True)
        self.hidden = int(model.config.hidden_size)

    @property
    def out_dim(self) -> int:
        return self.hidden

    def forward(self, x: Tensor, valid: Tensor | None = None) -> Tensor:
        """x (B, L, D) the top layers' input; `valid` (B, L) bool: positions other positions may attend to
        (padding masked out, as WavLM's own attention_mask: a window's output does not depend on its batch)."""
        n, length, _ = x.shape
        bias = self.bias(length, n).to(x.dtype)
        # no mask on a batch without padding (most batches): the same result, and torch's warning about the
        # bool padding mask beside the float position bias (HF's WavLM pairs them so) only where it matters
        mask = None if valid is None or bool(valid.all()) else valid.bool()
        n_frozen = self.stored - self.top
        with torch.no_grad():
            for layer in self.layers[:n_frozen]:
                x = layer(x, attention_mask=mask, position_bias=bias)[0]
        for layer in self.layers[n_frozen:]:
            if self.grad_checkpointing and torch.is_grad_enabled() and self.training:
                x = checkpoint(lambda h, m=layer: m(h, attention_mask=mask, position_bias=bias)[0], x, use_reentrant=False)
            else:
                x = layer(x, attention_mask=mask, position_bias=bias)[0]
        return self.final_norm(x)


@dataclass
class WavlmBackbone:
    top: WavlmTop
    ref: str
    digest: str


def load_wavlm_backbone(ref: str, top: int, stored: int, grad_checkpointing: bool = False, name: str = "") -> WavlmBackbone:
    from extract.models import weights_digest
    from extract.wavlm_model import load_wavlm

    bundle = load_wavlm(ref, "cpu")
    module = WavlmTop(bundle.model, top, stored, grad_checkpointing, name=name or ref)
    return WavlmBackbone(top=module, ref=ref, digest=weights_digest(ref))


def save_wavlm_backbone(top: WavlmTop, ref: str, folder: Path) -> str:
    """The base model with the trained top layers, saved as a transformers folder (safetensors) that
    `load_wavlm` (and so `extract --model wavlm=FOLDER`) reads."""
    from extract.wavlm_model import load_wavlm

    bundle = load_wavlm(ref, "cpu")
    layers = bundle.model.encoder.layers
    for i, layer in enumerate(top.layers):
        layers[top.depth - top.stored + i].load_state_dict(layer.state_dict())
    if top.stable:
        bundle.model.encoder.layer_norm.load_state_dict(top.final_norm.state_dict())
    folder = Path(folder)
    bundle.model.save_pretrained(folder, safe_serialization=True)
    bundle.feature_extractor.save_pretrained(folder)
    return str(folder)


def parse_spec(spec: str) -> tuple[str, int | None]:
    """`clip:2` -> ('clip', 2); `clip:all` -> ('clip', None); `wavlm:4` -> ('wavlm', 4)."""
    family, sep, depth = str(spec).partition(":")
    if family not in STORES or not sep:
        raise ValueError(f"--finetune must be clip:K, clip:all or wavlm:K, got {spec!r}")
    if depth == "all" and family == "clip":
        return family, None
    try:
        k = int(depth)
    except ValueError:
        raise ValueError(f"--finetune {spec} (K must be a whole number{' or all' if family == 'clip' else ''})") from None
    if k < 1:
        raise ValueError(f"--finetune {spec} (K must be at least 1)")
    return family, k
