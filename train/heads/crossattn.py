"""`crossattn` (REFERENCE method 1): a BiGRU per modality, cross-attention with query = visual and
key/value = audio (post-norm, 4x FFN), gated fusion g·attended + (1−g)·visual, per-frame VA."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from .registry import register_head
from .common import BaseHead, BiGRUEncoder, CrossAttentionBlock, GroupProjector, HeadConfig, HeadOutput, trailing_lengths


@dataclass
class CrossAttnConfig(HeadConfig):
    gru_hidden: int = 256
    heads: int = 4
    ffn_mult: int = 4


@register_head("crossattn")
class CrossAttnHead(BaseHead):
    config_class = CrossAttnConfig

    def __init__(self, feature_dims: dict[str, int], cfg: CrossAttnConfig) -> None:
        super().__init__(feature_dims, cfg)
        if not self.visual or not self.audio:
            raise ValueError(f"crossattn needs visual and audio features, got visual={self.visual} audio={self.audio}")
        H = cfg.hidden
        self.vis_in = GroupProjector(feature_dims, self.visual, H, cfg.dropout)
        self.aud_in = GroupProjector(feature_dims, self.audio, H, cfg.dropout)
        self.vis_gru = BiGRUEncoder(H, cfg.gru_hidden, H)
        self.aud_gru = BiGRUEncoder(H, cfg.gru_hidden, H)
        self.cross = CrossAttentionBlock(H, cfg.heads, cfg.dropout, cfg.ffn_mult)
        self.gate = nn.Linear(2 * H, H)
        self.norm = nn.LayerNorm(H)

    def forward(self, features: dict[str, Tensor], masks: dict[str, Tensor], pad: Tensor) -> HeadOutput:
        lengths = trailing_lengths(pad)
        v, _ = self.vis_in(features, masks, pad)
        a, a_valid = self.aud_in(features, masks, pad)
        v = self.vis_gru(v, lengths)
        a = self.aud_gru(a, lengths)
        # rows with no valid audio get attended = v, hence fused = v
        attended = self.cross(v, a, a_valid)
        g = torch.sigmoid(self.gate(torch.cat([v, attended], dim=-1)))
        fused = g * attended + (1 - g) * v
        return self.finish(self.norm(fused), {"fusion_gate": g})
