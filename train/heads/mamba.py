"""`mamba`: features projected and fused per frame, then Mamba blocks (pure PyTorch selective scan from
mambapy, no CUDA-only package), optionally bidirectional, per-frame VA."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from mambapy.mamba import Mamba, MambaConfig
from torch import Tensor, nn

from .registry import register_head
from .common import BaseHead, GroupProjector, HeadConfig, HeadOutput, trailing_lengths


@dataclass
class MambaHeadConfig(HeadConfig):
    layers: int = 2  # RAS used 12 over Qwen segments
    d_state: int = 8
    d_conv: int = 5
    expand: int = 2
    bidirectional: bool = True


def reverse_real(x: Tensor, lengths: Tensor) -> Tensor:
    """Reverse each row's real frames in place, leaving trailing padding where it is (an involution),
    so a causal scan over the result never sees padding before a real frame."""
    T = x.shape[1]
    t = torch.arange(T, device=x.device).unsqueeze(0)
    L = lengths.to(x.device).unsqueeze(1)
    idx = torch.where(t < L, L - 1 - t, t)
    return x.gather(1, idx.unsqueeze(-1).expand_as(x))


@register_head("mamba")
class MambaHead(BaseHead):
    config_class = MambaHeadConfig

    def __init__(self, feature_dims: dict[str, int], cfg: MambaHeadConfig) -> None:
        super().__init__(feature_dims, cfg)
        H = cfg.hidden
        self.inputs = GroupProjector(feature_dims, self.visual + self.audio, H, cfg.dropout)

        def stack() -> Mamba:
            return Mamba(MambaConfig(
                d_model=H, n_layers=cfg.layers, d_state=cfg.d_state, d_conv=cfg.d_conv,
                expand_factor=cfg.expand, pscan=True, use_cuda=False,
            ))

        self.forward_scan = stack()
        self.backward_scan = stack() if cfg.bidirectional else None
        self.merge = nn.Linear(2 * H, H) if cfg.bidirectional else nn.Identity()
        self.norm = nn.LayerNorm(H)
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, features: dict[str, Tensor], masks: dict[str, Tensor], pad: Tensor) -> HeadOutput:
        x, _ = self.inputs(features, masks, pad)
        y = self.forward_scan(x)
        if self.backward_scan is not None:
            lengths = trailing_lengths(pad)
            yb = reverse_real(self.backward_scan(reverse_real(x, lengths)), lengths)
            y = self.merge(torch.cat([y, yb], dim=-1))
        return self.finish(self.norm(self.drop(y)))
