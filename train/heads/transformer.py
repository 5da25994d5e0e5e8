"""`transformer`: features projected and fused per frame, sinusoidal positions, a Transformer encoder
with key padding masks, per-frame VA.

Two blocks (`block`):
- "prenorm": torch's pre-norm encoder layer, positions added once before the first layer, a final norm.
- "ras": the layer of RAS's face model as its code runs it (src_visual_dynamic_model/model.py,
  `TransformerEncoderLayer` and `VisualDynamicModel._forward_backbone`): the positional encoding is added
  again to every layer's input, self-attention, post-norm add, a GELU feed-forward (RAS: width 1×, so
  `ffn_mult: 1`), post-norm add, and an outer residual around each layer (x = x + layer(x)); no final norm.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor, nn

from .registry import register_head
from .common import BaseHead, GroupProjector, HeadConfig, HeadOutput, PositionalEncoding, safe_key_padding

BLOCKS = ("prenorm", "ras")


@dataclass
class TransformerConfig(HeadConfig):
    layers: int = 2
    heads: int = 4
    ffn_mult: int = 4
    block: str = "prenorm"  # "prenorm" | "ras" (module docstring)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.hidden % self.heads:
            raise ValueError(f"hidden ({self.hidden}) must be divisible by heads ({self.heads})")
        if self.block not in BLOCKS:
            raise ValueError(f"block must be one of {', '.join(BLOCKS)}, got {self.block!r}")
        if self.ffn_mult < 1:
            raise ValueError(f"ffn_mult must be >= 1, got {self.ffn_mult}")


class RASEncoderLayer(nn.Module):
    """One layer of RAS's face transformer: q = x + PE; h = LN(MHA(q, q, q) + drop(q));
    out = LN(FF(h) + drop(h)), FF = Linear(H, m·H) → GELU → Dropout → Linear(m·H, H). The caller adds
    `out` to x. (RAS draws the encoding's dropout separately for query, key and value; here once, the
    same in evaluation.)"""

    def __init__(self, dim: int, heads: int, ffn_mult: int, dropout: float) -> None:
        super().__init__()
        self.pos = PositionalEncoding(dim, dropout)
        self.attn = nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True)
        width = ffn_mult * dim
        self.ff = nn.Sequential(nn.Linear(dim, width), nn.GELU(), nn.Dropout(dropout), nn.Linear(width, dim))
        self.norm_attn, self.norm_ff = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.drop_attn, self.drop_ff = nn.Dropout(dropout), nn.Dropout(dropout)

    def forward(self, x: Tensor, key_padding_mask: Tensor | None = None) -> Tensor:
        q = self.pos(x)
        a, _ = self.attn(q, q, q, key_padding_mask=key_padding_mask, need_weights=False)
        h = self.norm_attn(a + self.drop_attn(q))
        return self.norm_ff(self.ff(h) + self.drop_ff(h))


@register_head("transformer")
class TransformerHead(BaseHead):
    config_class = TransformerConfig

    def __init__(self, feature_dims: dict[str, int], cfg: TransformerConfig) -> None:
        super().__init__(feature_dims, cfg)
        H = cfg.hidden
        self.inputs = GroupProjector(feature_dims, self.visual + self.audio, H, cfg.dropout)
        if cfg.block == "ras":
            self.blocks = nn.ModuleList([RASEncoderLayer(H, cfg.heads, cfg.ffn_mult, cfg.dropout) for _ in range(cfg.layers)])
            return
        self.pos = PositionalEncoding(H, cfg.dropout)
        layer = nn.TransformerEncoderLayer(
            H, cfg.heads, cfg.ffn_mult * H, cfg.dropout, activation="gelu", batch_first=True, norm_first=True
        )
        self.encoder = nn.TransformerEncoder(layer, cfg.layers, norm=nn.LayerNorm(H), enable_nested_tensor=False)

    def forward(self, features: dict[str, Tensor], masks: dict[str, Tensor], pad: Tensor) -> HeadOutput:
        x, _ = self.inputs(features, masks, pad)
        kpm, _ = safe_key_padding(pad.bool())
        if self.cfg.block == "ras":
            for layer in self.blocks:
                x = x + layer(x, kpm)
            return self.finish(x)
        return self.finish(self.encoder(self.pos(x), src_key_padding_mask=kpm))
