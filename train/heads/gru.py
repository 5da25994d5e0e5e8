"""`gru`: a BiGRU per feature stream, outputs projected, concatenated and fused, then per-frame VA."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from .registry import register_head
from .common import BaseHead, BiGRUEncoder, HeadConfig, HeadOutput, StreamProjector, frame_valid, get_feature, trailing_lengths


@dataclass
class GRUConfig(HeadConfig):
    gru_hidden: int = 256
    gru_layers: int = 1


@register_head("gru")
class GRUHead(BaseHead):
    config_class = GRUConfig

    def __init__(self, feature_dims: dict[str, int], cfg: GRUConfig) -> None:
        super().__init__(feature_dims, cfg)
        self.streams = self.visual + self.audio
        H = cfg.hidden
        self.proj = nn.ModuleDict({n: StreamProjector(feature_dims[n], H, cfg.dropout) for n in self.streams})
        self.temporal = nn.ModuleDict(
            {n: BiGRUEncoder(H, cfg.gru_hidden, H, cfg.gru_layers, cfg.dropout) for n in self.streams}
        )
        self.fuse = nn.Sequential(
            nn.Linear(H * len(self.streams), H), nn.GELU(), nn.Dropout(cfg.dropout), nn.LayerNorm(H)
        )

    def forward(self, features: dict[str, Tensor], masks: dict[str, Tensor], pad: Tensor) -> HeadOutput:
        lengths = trailing_lengths(pad)
        outs = [
            self.temporal[n](self.proj[n](get_feature(features, n), frame_valid(n, masks, pad)), lengths)
            for n in self.streams
        ]
        return self.finish(self.fuse(torch.cat(outs, dim=-1)))
