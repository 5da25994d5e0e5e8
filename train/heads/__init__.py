"""Temporal-fusion heads over cached features, registered by name and built from feature dims.

    head = build_head("crossattn", {"clip": 512, "ast": 768}, {"hidden": 128})
    out = head(features, masks, pad)   # HeadOutput(va (B,T,2), hidden (B,T,H), region_logits, extras)
"""

from __future__ import annotations

from .common import BaseHead, HeadConfig, HeadOutput, is_audio_feature
from .registry import HEADS, build_head, register_head
from . import blockpool, crossattn, dcmmoe, gru, mamba, raav, transformer  # noqa: F401  (fill the registry)

__all__ = ["HEADS", "BaseHead", "HeadConfig", "HeadOutput", "build_head", "is_audio_feature", "register_head"]
