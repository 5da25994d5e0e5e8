"""`mamba`: features projected and fused per frame, then Mamba blocks (pure PyTorch selective scan from
mambapy, no CUDA-only package), bidirectional or causal, per-frame VA.

Two blocks (`block`):
- "mambapy": mambapy's residual block (pre-RMSNorm, x + mixer(norm(x))), a final LayerNorm.
- "ras": the block layout of RAS's behaviour model (src_behavior_model/src/models/transformer_model.py,
  `MambaBlock`): the mixer output added to the block's input and then normalised (post-norm,
  LN(mixer(x) + drop(x))), no final norm. The mixer is mambapy's selective scan at `expand` (RAS: 1, its
  in_proj is d_model → 2·d_model); RAS's own simplified scan (A_bar = exp(−A)·softplus(...)) is not copied.
With `direction: causal` (RAS) a frame sees only itself and earlier frames; "bidirectional" adds a scan
over the reversed real frames, merged by a linear layer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from mambapy.mamba import Mamba, MambaBlock, MambaConfig
from torch import Tensor, nn

from .registry import register_head
from .common import BaseHead, GroupProjector, HeadConfig, HeadOutput, trailing_lengths

DIRECTIONS = ("bidirectional", "causal")
BLOCKS = ("mambapy", "ras")


@dataclass
class MambaHeadConfig(HeadConfig):
    layers: int = 2  # RAS used 12 over Qwen segments
    d_state: int = 8
    d_conv: int = 5
    expand: int = 2
    direction: str = "bidirectional"  # "bidirectional" | "causal"
    block: str = "mambapy"  # "mambapy" | "ras" (module docstring)

    @classmethod
    def from_dict(cls, config: "dict[str, Any] | HeadConfig | None") -> "HeadConfig":  # type: ignore[override]
        """As HeadConfig's; a run folder written before `direction` says `bidirectional: true|false`."""
        if isinstance(config, dict) and "bidirectional" in config:
            config = dict(config)
            both = bool(config.pop("bidirectional"))
            config.setdefault("direction", "bidirectional" if both else "causal")
        return super().from_dict(config)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.direction not in DIRECTIONS:
            raise ValueError(f"direction must be one of {', '.join(DIRECTIONS)}, got {self.direction!r}")
        if self.block not in BLOCKS:
            raise ValueError(f"block must be one of {', '.join(BLOCKS)}, got {self.block!r}")
        if self.expand < 1:
            raise ValueError(f"expand must be >= 1, got {self.expand}")


def reverse_real(x: Tensor, lengths: Tensor) -> Tensor:
    """Reverse each row's real frames in place, leaving trailing padding where it is (an involution),
    so a causal scan over the result never sees padding before a real frame."""
    T = x.shape[1]
    t = torch.arange(T, device=x.device).unsqueeze(0)
    L = lengths.to(x.device).unsqueeze(1)
    idx = torch.where(t < L, L - 1 - t, t)
    return x.gather(1, idx.unsqueeze(-1).expand_as(x))


class PostNormMambaStack(nn.Module):
    """`layers` blocks of x ← LN(mixer(x) + drop(x)) (RAS's MambaBlock with its AddAndNorm)."""

    def __init__(self, config: MambaConfig, dropout: float) -> None:
        super().__init__()
        self.mixers = nn.ModuleList([MambaBlock(config) for _ in range(config.n_layers)])
        self.norms = nn.ModuleList([nn.LayerNorm(config.d_model) for _ in range(config.n_layers)])
        self.drop = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        for mixer, norm in zip(self.mixers, self.norms):
            x = norm(mixer(x) + self.drop(x))
        return x


@register_head("mamba")
class MambaHead(BaseHead):
    config_class = MambaHeadConfig

    def __init__(self, feature_dims: dict[str, int], cfg: MambaHeadConfig) -> None:
        super().__init__(feature_dims, cfg)
        H = cfg.hidden
        self.inputs = GroupProjector(feature_dims, self.visual + self.audio, H, cfg.dropout)
        both = cfg.direction == "bidirectional"

        def stack() -> nn.Module:
            config = MambaConfig(
                d_model=H, n_layers=cfg.layers, d_state=cfg.d_state, d_conv=cfg.d_conv,
                expand_factor=cfg.expand, pscan=True, use_cuda=False,
            )
            return PostNormMambaStack(config, cfg.dropout) if cfg.block == "ras" else Mamba(config)

        self.forward_scan = stack()
        self.backward_scan = stack() if both else None
        self.merge = nn.Linear(2 * H, H) if both else nn.Identity()
        self.norm = nn.LayerNorm(H) if cfg.block == "mambapy" else nn.Identity()
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, features: dict[str, Tensor], masks: dict[str, Tensor], pad: Tensor) -> HeadOutput:
        x, _ = self.inputs(features, masks, pad)
        y = self.forward_scan(x)
        if self.backward_scan is not None:
            lengths = trailing_lengths(pad)
            yb = reverse_real(self.backward_scan(reverse_real(x, lengths)), lengths)
            y = self.merge(torch.cat([y, yb], dim=-1))
        return self.finish(self.norm(self.drop(y)))
