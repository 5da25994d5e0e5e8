"""`dcmmoe` (REFERENCE method 2, the paper's version): every feature is a modality projected to d_h;
one cross-attention expert per ordered pair (q, k), M(M−1) experts of N layers each (query q,
key/value k, padding and missing-feature masks); per-frame gate g_l = W_g·h̄_l + b_g from the mean
of the projected streams, softmax over experts, z_l = Σ weights · expert outputs; per-frame VA."""

from __future__ import annotations

from dataclasses import dataclass
from itertools import permutations

import torch
from torch import Tensor, nn

from .registry import register_head
from .common import (
    BaseHead, CrossAttentionBlock, HeadConfig, HeadOutput, StreamProjector, frame_valid, get_feature,
    sinusoidal_encoding,
)


@dataclass
class DCMMOEConfig(HeadConfig):
    layers: int = 2  # N layers per expert
    heads: int = 4
    ffn_mult: int = 4
    positional: bool = True  # sinusoidal positions on the projected streams (attention is order-blind)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.hidden % self.heads:
            raise ValueError(f"hidden ({self.hidden}) must be divisible by heads ({self.heads})")


class CrossExpert(nn.Module):
    def __init__(self, dim: int, heads: int, layers: int, dropout: float, ffn_mult: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList([CrossAttentionBlock(dim, heads, dropout, ffn_mult) for _ in range(layers)])

    def forward(self, q: Tensor, kv: Tensor, kv_valid: Tensor) -> Tensor:
        for layer in self.layers:
            q = layer(q, kv, kv_valid)
        return q


@register_head("dcmmoe")
class DCMMOEHead(BaseHead):
    config_class = DCMMOEConfig

    def __init__(self, feature_dims: dict[str, int], cfg: DCMMOEConfig) -> None:
        super().__init__(feature_dims, cfg)
        self.modalities = self.visual + self.audio
        if len(self.modalities) < 2:
            raise ValueError(f"dcmmoe needs at least two modalities, got {self.modalities}")
        H = cfg.hidden
        self.proj = nn.ModuleDict({n: StreamProjector(feature_dims[n], H, cfg.dropout) for n in self.modalities})
        self.expert_pairs: list[tuple[str, str]] = list(permutations(self.modalities, 2))
        self.experts = nn.ModuleList(
            [CrossExpert(H, cfg.heads, cfg.layers, cfg.dropout, cfg.ffn_mult) for _ in self.expert_pairs]
        )
        self.gate = nn.Linear(H, len(self.expert_pairs))
        self.norm = nn.LayerNorm(H)

    def forward(self, features: dict[str, Tensor], masks: dict[str, Tensor], pad: Tensor) -> HeadOutput:
        valid = {n: frame_valid(n, masks, pad) for n in self.modalities}
        h = {n: self.proj[n](get_feature(features, n), valid[n]) for n in self.modalities}
        if self.cfg.positional:
            B, T, H = next(iter(h.values())).shape
            pe = sinusoidal_encoding(T, H, pad.device)
            h = {n: x + pe.to(x.dtype) for n, x in h.items()}

        outs, usable = [], []
        for (q, k), expert in zip(self.expert_pairs, self.experts):
            outs.append(expert(h[q], h[k], valid[k]))
            # an expert says nothing where its query is missing or its key modality is absent from the row
            usable.append(valid[q] & valid[k].any(1, keepdim=True))
        Z = torch.stack(outs, dim=2)  # (B, T, E, H)
        usable_t = torch.stack(usable, dim=-1)  # (B, T, E)

        logits = self.gate(torch.stack(list(h.values()), 0).mean(0))  # (B, T, E)
        any_usable = usable_t.any(-1, keepdim=True)
        logits = torch.where(usable_t | ~any_usable, logits, torch.full_like(logits, float("-inf")))
        weights = torch.softmax(logits, dim=-1)
        z = (weights.unsqueeze(-1) * Z).sum(2)
        return self.finish(self.norm(z), {"gate": weights})
