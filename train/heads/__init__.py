"""Temporal-fusion heads over cached features, registered by name and built from feature dims.

    head = build_head("crossattn", {"clip": 512, "ast": 768}, {"hidden": 128})
    out = head(features, masks, pad)   # HeadOutput(va (B,T,2), hidden (B,T,H), region_logits, extras)
"""

from __future__ import annotations

from typing import Any, Callable

from torch import nn

from .common import BaseHead, HeadConfig, HeadOutput, is_audio_feature

HEADS: dict[str, type] = {}


def register_head(name: str) -> Callable[[type], type]:
    def deco(cls: type) -> type:
        if name in HEADS and HEADS[name] is not cls:
            raise ValueError(f"head {name!r} is already registered to {HEADS[name].__name__}")
        HEADS[name] = cls
        cls.name = name
        return cls

    return deco


def build_head(name: str, feature_dims: dict[str, int], config: dict[str, Any] | HeadConfig | None = None) -> nn.Module:
    """Build head `name`; `config` is a plain dict (unknown keys raise) or the head's config dataclass."""
    try:
        cls = HEADS[name]
    except KeyError:
        raise KeyError(f"unknown head {name!r}; registered: {sorted(HEADS)}") from None
    cfg = cls.config_class.from_dict(config)
    return cls(dict(feature_dims), cfg)


from . import blockpool, crossattn, dcmmoe, gru, mamba, raav, transformer  # noqa: E402,F401  (fill the registry)

__all__ = ["HEADS", "BaseHead", "HeadConfig", "HeadOutput", "build_head", "is_audio_feature", "register_head"]
