"""`transformer`: features projected and fused per frame, sinusoidal positions, a Transformer encoder
with key padding masks, per-frame VA. (The RAS face model used 5 layers and 16 heads.)"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor, nn

from .registry import register_head
from .common import BaseHead, GroupProjector, HeadConfig, HeadOutput, PositionalEncoding, safe_key_padding


@dataclass
class TransformerConfig(HeadConfig):
    layers: int = 2
    heads: int = 4
    ffn_mult: int = 4

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.hidden % self.heads:
            raise ValueError(f"hidden ({self.hidden}) must be divisible by heads ({self.heads})")


@register_head("transformer")
class TransformerHead(BaseHead):
    config_class = TransformerConfig

    def __init__(self, feature_dims: dict[str, int], cfg: TransformerConfig) -> None:
        super().__init__(feature_dims, cfg)
        H = cfg.hidden
        self.inputs = GroupProjector(feature_dims, self.visual + self.audio, H, cfg.dropout)
        self.pos = PositionalEncoding(H, cfg.dropout)
        layer = nn.TransformerEncoderLayer(
            H, cfg.heads, cfg.ffn_mult * H, cfg.dropout, activation="gelu", batch_first=True, norm_first=True
        )
        self.encoder = nn.TransformerEncoder(layer, cfg.layers, norm=nn.LayerNorm(H), enable_nested_tensor=False)

    def forward(self, features: dict[str, Tensor], masks: dict[str, Tensor], pad: Tensor) -> HeadOutput:
        x, _ = self.inputs(features, masks, pad)
        kpm, _ = safe_key_padding(pad.bool())
        return self.finish(self.encoder(self.pos(x), src_key_padding_mask=kpm))
