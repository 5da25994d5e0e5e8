"""`raav` (REFERENCE method 2): visual streams fused per frame by reliability gating (per-stream MLP
score + log prior, invalid streams excluded, weights renormalised over valid ones), then the fused
sequence reads audio through a bottleneck of learnable latents (latents attend to reliable audio
tokens, frames attend to latents, residual + LayerNorm; frames without reliable audio keep the
visual sequence), a small Transformer encoder, per-frame VA."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from .registry import register_head
from .common import (
    BaseHead, GroupProjector, HeadConfig, HeadOutput, PositionalEncoding, StreamProjector, frame_valid,
    get_feature, safe_key_padding,
)


RELIABILITY_RULES = ("threshold", "all", "any")
RULE_EPS = 1e-3  # aligned flags are float16 means of 0/1: "all" is r >= 1 - eps, "any" is r > eps


def frame_reliable(aligned: Tensor, rule: str, threshold: float = 0.5) -> Tensor:
    """(B, T) bool from the aligned window flags r (B, T) by the rule (see RAAVConfig.reliability_rule)."""
    if rule == "all":
        return aligned >= 1.0 - RULE_EPS
    if rule == "any":
        return aligned > RULE_EPS
    return aligned > threshold


@dataclass
class RAAVConfig(HeadConfig):
    priors: dict[str, float] | None = None  # e.g. {"face": 0.85, "qwen": 0.15}; unnamed streams get 1/S
    latents: int = 4
    heads: int = 4
    layers: int = 2  # Transformer encoder after the audio bottleneck
    ffn_mult: int = 4
    audio_fallback: str = "frame"  # "frame": frames without reliable audio keep the visual sequence; "row": only rows without any
    # Frame-level audio reliability from the per-window flags (last column of the reliability feature),
    # which the dataset aligns onto frames as the overlap-weighted mean r of the windows over the frame:
    #   "threshold" r > reliability_threshold (0.5: with 4 s / 2 s windows about "both windows reliable";
    #               the rule of runs made before this option)
    #   "all"       every window over the frame is reliable (r = 1)
    #   "any"       some window over the frame is reliable (r > 0): RAS's rule, their fusion datasets keep a
    #               frame's audio when any window holding it passed the mouth filter (src_audio_and_fusion)
    reliability_rule: str = "threshold"
    # audio keys the latents attend to: "frames" (every frame's aligned audio) or "windows" (one token per
    # audio window: a frame starts a token where its audio row differs from the previous frame's, which
    # gives one per window for a window store exported by train/data/window_audio.py; RAS's fusion reads the
    # audio as window tokens)
    audio_tokens: str = "frames"
    reliability_threshold: float = 0.5

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.hidden % self.heads:
            raise ValueError(f"hidden ({self.hidden}) must be divisible by heads ({self.heads})")
        if self.reliability_rule not in RELIABILITY_RULES:
            raise ValueError(f"reliability_rule must be one of {RELIABILITY_RULES}, got {self.reliability_rule!r}")
        if self.audio_tokens not in ("frames", "windows"):
            raise ValueError(f"audio_tokens must be 'frames' or 'windows', got {self.audio_tokens!r}")
        if self.audio_fallback not in ("frame", "row"):
            raise ValueError(f"audio_fallback must be 'frame' or 'row', got {self.audio_fallback!r}")
        if self.latents < 1:
            raise ValueError(f"latents must be positive, got {self.latents}")
        for name, p in (self.priors or {}).items():
            if not p > 0:
                raise ValueError(f"prior of {name!r} must be positive, got {p}")


@register_head("raav")
class RAAVHead(BaseHead):
    config_class = RAAVConfig

    def __init__(self, feature_dims: dict[str, int], cfg: RAAVConfig) -> None:
        super().__init__(feature_dims, cfg)
        if not self.visual:
            raise ValueError("raav needs at least one visual feature")
        H = cfg.hidden
        self.proj = nn.ModuleDict({n: StreamProjector(feature_dims[n], H, cfg.dropout) for n in self.visual})
        self.score = nn.ModuleDict(
            {n: nn.Sequential(nn.Linear(H, max(H // 2, 1)), nn.GELU(), nn.Linear(max(H // 2, 1), 1)) for n in self.visual}
        )
        priors = cfg.priors or {}
        unknown = sorted(set(priors) - set(self.visual))
        if unknown:
            raise ValueError(f"priors name streams that are not visual features: {unknown} (visual: {self.visual})")
        default = 1.0 / len(self.visual)
        self.register_buffer(
            "log_prior", torch.tensor([math.log(priors.get(n, default)) for n in self.visual], dtype=torch.float32)
        )
        if self.audio:
            self.aud_in = GroupProjector(feature_dims, self.audio, H, cfg.dropout)
            self.latent = nn.Parameter(torch.randn(cfg.latents, H) * 0.02)
            self.lat_attn = nn.MultiheadAttention(H, cfg.heads, dropout=cfg.dropout, batch_first=True)
            self.lat_norm = nn.LayerNorm(H)
            self.frm_attn = nn.MultiheadAttention(H, cfg.heads, dropout=cfg.dropout, batch_first=True)
            self.frm_norm = nn.LayerNorm(H)
        self.pos = PositionalEncoding(H, cfg.dropout)
        layer = nn.TransformerEncoderLayer(
            H, cfg.heads, cfg.ffn_mult * H, cfg.dropout, activation="gelu", batch_first=True, norm_first=True
        )
        self.encoder = nn.TransformerEncoder(layer, cfg.layers, norm=nn.LayerNorm(H), enable_nested_tensor=False)

    def audio_reliable(self, features: dict[str, Tensor], masks: dict[str, Tensor], pad: Tensor, a_valid: Tensor) -> Tensor:
        ok = a_valid
        if "audio_reliability" in masks:
            ok = ok & masks["audio_reliability"].bool()
        rel = self.cfg.reliability_feature
        if rel in features:
            flag = frame_reliable(features[rel][..., -1], self.cfg.reliability_rule, self.cfg.reliability_threshold)
            ok = ok & flag & frame_valid(rel, masks, pad)
        return ok

    def audio_keys(self, features: dict[str, Tensor], reliable: Tensor) -> Tensor:
        """(B, T) frames whose audio is a key: every reliable frame, or with audio_tokens="windows" the
        reliable frames that start a new audio row (one token per window)."""
        if self.cfg.audio_tokens == "frames":
            return reliable
        raw = torch.cat([get_feature(features, n) for n in self.audio], dim=-1)
        starts = torch.ones_like(reliable)
        starts[:, 1:] = (raw[:, 1:] != raw[:, :-1]).any(-1)
        return reliable & starts

    def fuse_visual(self, features: dict[str, Tensor], masks: dict[str, Tensor], pad: Tensor) -> tuple[Tensor, Tensor]:
        """(B, T, H) fused visual sequence and (B, T, S) stream weights (zero rows where no stream is valid)."""
        hs, scores, valids = [], [], []
        for n in self.visual:
            valid = frame_valid(n, masks, pad)
            h = self.proj[n](get_feature(features, n), valid)
            hs.append(h)
            scores.append(self.score[n](h).squeeze(-1))
            valids.append(valid)
        h, valid = torch.stack(hs, 2), torch.stack(valids, -1)  # (B, T, S, H), (B, T, S)
        logits = torch.stack(scores, -1) + self.log_prior.to(h.dtype)
        any_valid = valid.any(-1, keepdim=True)
        # invalid streams -> -inf; frames with none valid get finite logits (no NaN) and zero weights
        logits = torch.where(valid, logits, torch.full_like(logits, float("-inf")))
        logits = torch.where(any_valid, logits, torch.zeros_like(logits))
        weights = torch.softmax(logits, -1) * any_valid
        return (weights.unsqueeze(-1) * h).sum(2), weights

    def forward(self, features: dict[str, Tensor], masks: dict[str, Tensor], pad: Tensor) -> HeadOutput:
        z_vis, weights = self.fuse_visual(features, masks, pad)
        extras: dict[str, Tensor] = {"stream_weights": weights, "z_vis": z_vis}
        z0 = z_vis
        if self.audio:
            a, a_valid = self.aud_in(features, masks, pad)
            reliable = self.audio_reliable(features, masks, pad, a_valid)
            kpm, row_ok = safe_key_padding(self.audio_keys(features, reliable))
            lat = self.latent.unsqueeze(0).expand(a.shape[0], -1, -1).to(a.dtype)
            la, _ = self.lat_attn(lat, a, a, key_padding_mask=kpm, need_weights=False)
            lat = self.lat_norm(lat + la)
            fa, _ = self.frm_attn(z_vis, lat, lat, need_weights=False)
            attended = self.frm_norm(z_vis + fa)
            keep = reliable if self.cfg.audio_fallback == "frame" else row_ok.unsqueeze(1).expand_as(reliable)
            z0 = torch.where(keep.unsqueeze(-1), attended, z_vis)
            extras.update(audio_reliable=reliable, z0=z0)
        kpm, _ = safe_key_padding(pad.bool())
        return self.finish(self.encoder(self.pos(z0), src_key_padding_mask=kpm), extras)
