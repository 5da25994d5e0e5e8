"""`blockpool` (RAS's audio model): a window of audio frames (e.g. 4 s of 50 Hz WavLM states) passes a
window encoder, is cut into `blocks` (4) equal blocks, each block is pooled by attentive statistics
(attention-weighted mean and standard deviation), and a regression head maps each block to a 256-d
embedding and a VA prediction. Every frame of a block carries its block's embedding and VA, so the
ordinary loop, evaluation and export work per frame (train/data/window_audio.py cuts the windows).

Following RAS's public code (SMIL-SPCRAS/CVPRW-26, src_audio_and_fusion/src/audio/models/):
attention scores = Linear(D, 128) -> Tanh -> Dropout -> Linear(128, 1); std = sqrt(var + 1e-6);
head = LayerNorm(2D) -> Dropout -> Linear(2D, 256) -> GELU (the 256-d embedding) -> Dropout -> Linear -> VA
(here through affcache's VA head, i.e. with a tanh). Blocks are cut on the full window's length
(`window_rows`, the run's `data.window` unless given): RAS pads every window's audio to 4 s
(src_audio_and_fusion/src/audio/data/abaw_va_dataset.py `_load_audio`) and cuts the padded states into 4 chunks
(models/wavlm_s2s_model.py `_pool_chunks`), so block i always covers second i, as the block targets of
cache/audio_windows.py; a partial last window has fewer rows in its late blocks, and none past its end (such a
block is flagged in `block_valid`). `window_rows: 0` cuts each window's own length into `blocks` instead.

Window encoders (`window_encoder=NAME`, options in `window_encoder_options`) map (B, L, D) frames and
their (B, L) validity to (B, L, D'): `identity` for frozen stored states (`wavlm`); `wavlm_top` runs
WavLM's top layers (train/heads/backbones.py `WavlmTop`, issue 13) over a window of a `wavlm_hidden` store (the
input of those layers), as RAS fine-tunes WavLM-Large's top 4 layers on each 4 s window: options `top`
(trained layers, 4), `stored` (layers the store holds the input of; default `top`), `ref` (weights; default
the profile's model of family `checkpoint`: wavlm = microsoft/wavlm-large, wavlm_ser = RAS's SER checkpoint,
extract/wavlm_model.py), `profile`, `models_dir`, `backbone_lr` (5e-6, RAS), `grad_checkpointing`. Its input is
never standardized, and its parameters train at `backbone_lr` (`parameter_groups`). Other encoders
register with `register_window_encoder`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from .registry import register_head
from .common import BaseHead, HeadConfig, HeadOutput, frame_valid, get_feature

WINDOW_ENCODERS: dict[str, Callable[..., nn.Module]] = {}


def register_window_encoder(name: str) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Register a factory `(in_dim, **options) -> module` whose module maps (x (B, L, D), valid (B, L)) to
    (B, L, D') and has an `out_dim` attribute."""

    def deco(factory: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        WINDOW_ENCODERS[name] = factory
        return factory

    return deco


class IdentityEncoder(nn.Module):
    def __init__(self, in_dim: int) -> None:
        super().__init__()
        self.out_dim = in_dim

    def forward(self, x: Tensor, valid: Tensor) -> Tensor:
        return x


register_window_encoder("identity")(IdentityEncoder)


@register_window_encoder("wavlm_top")
class WavlmTopEncoder(nn.Module):
    raw_input = True  # reads a backbone's hidden states: never standardized

    def __init__(self, in_dim: int, top: int = 4, stored: int | None = None, ref: str | None = None,
                 profile: str = "full", models_dir: str = "artifacts/models", backbone_lr: float = 5e-6,
                 grad_checkpointing: bool = False, checkpoint: str = "wavlm") -> None:
        super().__init__()
        from train.heads.backbones import BackboneMismatch, load_wavlm_backbone

        if ref is None:
            from extract.models import resolve_model_ref
            from extract.wavlm_model import CHECKPOINTS

            if checkpoint not in CHECKPOINTS:
                raise ValueError(f"wavlm_top: checkpoint must be one of {', '.join(CHECKPOINTS)}, got {checkpoint!r}")
            ref = resolve_model_ref(checkpoint, profile, models_dir)
        self.top = load_wavlm_backbone(ref, top, stored or top, grad_checkpointing).top
        if self.top.out_dim != in_dim:
            raise BackboneMismatch(f"wavlm_top: {ref} has width {self.top.out_dim}, the audio feature {in_dim}")
        self.out_dim, self.backbone_lr = self.top.out_dim, backbone_lr

    def forward(self, x: Tensor, valid: Tensor) -> Tensor:
        # padding rows (a partial last window in a batch of full ones) masked out of attention, as RAS passes
        # its padded audio's attention_mask to WavLM (src_audio_and_fusion/src/audio/models/wavlm_s2s_model.py)
        return self.top(x, valid)


def block_index(lengths: Tensor, length: int, blocks: int, window_rows: int = 0) -> Tensor:
    """(B, L) block of each position: position t is in block floor(t * blocks / n), n = `window_rows` (the full
    window: block i covers the same span of every window, RAS) or, with 0, the row's n real positions (padding
    positions get the last block; they are masked anyway)."""
    t = torch.arange(length, device=lengths.device).unsqueeze(0)
    n = (torch.full_like(lengths, window_rows) if window_rows > 0 else lengths.clamp_min(1)).unsqueeze(1)
    return torch.div(t * blocks, n, rounding_mode="floor").clamp(max=blocks - 1)


class AttentiveStatsPool(nn.Module):
    """Per block: w = softmax over the block's valid positions of score(x); mean = Σ w x,
    std = sqrt(Σ w (x - mean)² + 1e-6). Returns (B, blocks, 2D) and (B, blocks) blocks with any position."""

    def __init__(self, dim: int, attn_dim: int = 128, dropout: float = 0.0) -> None:
        super().__init__()
        self.score = nn.Sequential(nn.Linear(dim, attn_dim), nn.Tanh(), nn.Dropout(dropout), nn.Linear(attn_dim, 1, bias=False))

    def forward(self, x: Tensor, valid: Tensor, block: Tensor, blocks: int) -> tuple[Tensor, Tensor]:
        scores = self.score(x).squeeze(-1).float()  # (B, L)
        member = (block.unsqueeze(1) == torch.arange(blocks, device=x.device).view(1, -1, 1)) & valid.unsqueeze(1)
        logits = scores.unsqueeze(1).masked_fill(~member, float("-inf"))  # (B, blocks, L)
        has = member.any(-1)
        w = torch.softmax(torch.where(has.unsqueeze(-1), logits, torch.zeros_like(logits)), dim=-1) * member
        xf = x.float()
        mean = w @ xf  # (B, blocks, D)
        var = (w.unsqueeze(-1) * (xf.unsqueeze(1) - mean.unsqueeze(2)) ** 2).sum(2)
        std = torch.sqrt(var + 1e-6)
        return torch.cat([mean, std], dim=-1).to(x.dtype), has


@dataclass
class BlockPoolConfig(HeadConfig):
    blocks: int = 4
    attn_dim: int = 128
    window_encoder: str = "identity"
    window_encoder_options: dict[str, Any] = field(default_factory=dict)
    # rows of a full window, on which the blocks are cut (RAS: the 4 s it pads to); None: the run's data.window
    # (train.fit.model.head_options); 0: each window's own length
    window_rows: int | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.blocks < 1:
            raise ValueError(f"blocks must be positive, got {self.blocks}")
        if self.window_rows is not None and self.window_rows < 0:
            raise ValueError(f"window_rows must be >= 0, got {self.window_rows}")
        if self.window_encoder not in WINDOW_ENCODERS:
            raise ValueError(f"unknown window_encoder {self.window_encoder!r}; registered: {sorted(WINDOW_ENCODERS)}")


@register_head("blockpool")
class BlockPoolHead(BaseHead):
    config_class = BlockPoolConfig

    def __init__(self, feature_dims: dict[str, int], cfg: BlockPoolConfig) -> None:
        super().__init__(feature_dims, cfg)
        streams = self.audio + self.visual
        if len(streams) != 1:
            raise ValueError(f"blockpool reads one audio feature, got {streams}")
        self.stream = streams[0]
        self.encoder = WINDOW_ENCODERS[cfg.window_encoder](feature_dims[self.stream], **cfg.window_encoder_options)
        dim = self.encoder.out_dim
        self.pool = AttentiveStatsPool(dim, cfg.attn_dim, cfg.dropout)
        self.embed = nn.Sequential(nn.LayerNorm(2 * dim), nn.Dropout(cfg.dropout), nn.Linear(2 * dim, cfg.hidden), nn.GELU())

    @property
    def raw_feature(self) -> str | None:
        """The feature the window encoder reads as a backbone's input (not standardized), if any."""
        return self.stream if getattr(self.encoder, "raw_input", False) else None

    def parameter_groups(self, lr: float) -> list[dict[str, Any]]:
        """AdamW groups: the encoder's trainable parameters at its `backbone_lr` (when it has one), the rest at lr."""
        backbone_lr = getattr(self.encoder, "backbone_lr", None)
        if backbone_lr is None:
            return [{"params": [p for p in self.parameters() if p.requires_grad], "lr": lr, "name": "head"}]
        own = {id(p) for p in self.encoder.parameters()}
        head = [p for p in self.parameters() if p.requires_grad and id(p) not in own]
        backbone = [p for p in self.encoder.parameters() if p.requires_grad]
        return [{"params": head, "lr": lr, "name": "head"}, {"params": backbone, "lr": backbone_lr, "name": "backbone"}]

    def forward(self, features: dict[str, Tensor], masks: dict[str, Tensor], pad: Tensor) -> HeadOutput:
        valid = frame_valid(self.stream, masks, pad)
        x = get_feature(features, self.stream)
        x = self.encoder(torch.where(valid.unsqueeze(-1), x, torch.zeros((), dtype=x.dtype, device=x.device)), valid)
        block = block_index(pad.sum(1), x.shape[1], self.cfg.blocks, self.cfg.window_rows or 0)
        pooled, has = self.pool(x, valid, block, self.cfg.blocks)
        h = self.embed(pooled)  # (B, blocks, H)
        per_frame = h.gather(1, block.unsqueeze(-1).expand(-1, -1, h.shape[-1]))
        out = self.finish(per_frame, {"block_hidden": h, "block_valid": has})
        out.extras["block_va"] = self.va_head(h)
        return out
