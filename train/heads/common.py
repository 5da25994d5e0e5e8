"""Building blocks shared by the heads: configs, modality split, masking, positional encoding,
stream projection, masked attention, the region projector and the VA head."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

AUDIO_PREFIXES = ("ast", "wavlm", "audio")


def is_audio_feature(name: str) -> bool:
    """Default modality by feature name (same rule as train/config.py): ast*, wavlm*, audio* are audio."""
    return name.startswith(AUDIO_PREFIXES)


@dataclass
class HeadOutput:
    va: Tensor  # (B, T, 2) in [-1, 1]
    hidden: Tensor  # (B, T, H)
    region_logits: Tensor | None = None  # (B, T, R)
    extras: dict[str, Any] = field(default_factory=dict)


@dataclass
class HeadConfig:
    """Fields every head takes. Subclasses add their own; build them with `from_dict`."""

    hidden: int = 256
    dropout: float = 0.1
    visual: list[str] | None = None
    audio: list[str] | None = None
    region_prototypes: Any = None  # (R, D_text) list of lists, array or tensor; R = 9 for the 3×3 grid
    region_scale: float = 10.0
    # feature used only as a mask (never as an input stream) by heads that read audio reliability
    reliability_feature: str = "audio_reliability"
    # the VA regressor: "linear" (dropout + FC) or "mlp" (FC + LN + GELU + Dropout + FC, RAS's face model)
    regressor: str = "linear"
    # width of the "mlp" regressor's inner layer; 0 = `hidden` (RAS's behaviour model: 512 over hidden 256)
    regressor_hidden: int = 0

    @classmethod
    def from_dict(cls, config: "dict[str, Any] | HeadConfig | None") -> "HeadConfig":
        if config is None:
            return cls()
        if isinstance(config, cls):
            return config
        if isinstance(config, HeadConfig):
            raise TypeError(f"{cls.__name__} expected, got {type(config).__name__}")
        if not isinstance(config, dict):
            raise TypeError(f"head config must be a dict or {cls.__name__}, got {type(config).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(config) - known)
        if unknown:
            raise ValueError(f"unknown {cls.__name__} option(s) {unknown}; known: {sorted(known)}")
        return cls(**config)

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly copy (prototypes as nested lists)."""
        out = asdict(self)
        protos = out.get("region_prototypes")
        if isinstance(protos, (np.ndarray, Tensor)):
            out["region_prototypes"] = np.asarray(protos.tolist() if isinstance(protos, Tensor) else protos).tolist()
        return out

    def __post_init__(self) -> None:
        if self.hidden < 1:
            raise ValueError(f"hidden must be positive, got {self.hidden}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.regressor not in ("linear", "mlp"):
            raise ValueError(f"regressor must be 'linear' or 'mlp', got {self.regressor!r}")
        if self.regressor_hidden < 0:
            raise ValueError(f"regressor_hidden must be >= 0 (0 = hidden), got {self.regressor_hidden}")


def split_modalities(feature_dims: dict[str, int], cfg: HeadConfig) -> tuple[list[str], list[str]]:
    """(visual, audio) feature names, excluding the reliability feature. Explicit lists win; when only
    one list is given the other one is the rest."""
    names = [n for n in feature_dims if n != cfg.reliability_feature]
    for given in (cfg.visual, cfg.audio):
        for n in given or []:
            if n not in feature_dims:
                raise ValueError(f"feature {n!r} named in the head config is not among {sorted(feature_dims)}")
    if cfg.visual is not None and cfg.audio is not None:
        visual, audio = list(cfg.visual), list(cfg.audio)
    elif cfg.visual is not None:
        visual = list(cfg.visual)
        audio = [n for n in names if n not in visual]
    elif cfg.audio is not None:
        audio = list(cfg.audio)
        visual = [n for n in names if n not in audio]
    else:
        visual = [n for n in names if not is_audio_feature(n)]
        audio = [n for n in names if is_audio_feature(n)]
    if set(visual) & set(audio):
        raise ValueError(f"features both visual and audio: {sorted(set(visual) & set(audio))}")
    if not visual and not audio:
        raise ValueError("the head has no input feature")
    return visual, audio


def frame_valid(name: str, masks: dict[str, Tensor], pad: Tensor) -> Tensor:
    """(B, T) bool: real frame and the feature present there (no mask given = present)."""
    m = masks.get(name)
    return pad if m is None else (m.bool() & pad)


def safe_key_padding(valid: Tensor) -> tuple[Tensor, Tensor]:
    """Key padding mask (True = ignore) from (B, S) validity, and (B,) rows with any valid key.
    Rows with none are left unmasked so attention stays finite; callers replace their outputs."""
    any_valid = valid.any(dim=1)
    return ~valid & any_valid.unsqueeze(1), any_valid


def sinusoidal_encoding(length: int, dim: int, device: torch.device | None = None) -> Tensor:
    """(length, dim) sinusoidal positional encoding (Vaswani et al.), computed for any length."""
    pos = torch.arange(length, device=device, dtype=torch.float32).unsqueeze(1)
    div = torch.exp(torch.arange(0, dim, 2, device=device, dtype=torch.float32) * (-math.log(10000.0) / dim))
    pe = torch.zeros(length, dim, device=device)
    pe[:, 0::2] = torch.sin(pos * div)
    pe[:, 1::2] = torch.cos(pos * div[: dim // 2])
    return pe


class PositionalEncoding(nn.Module):
    def __init__(self, dim: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.dim = dim
        self.drop = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        return self.drop(x + sinusoidal_encoding(x.shape[1], self.dim, x.device).to(x.dtype))


class StreamProjector(nn.Module):
    """One feature (B, T, D_f) -> (B, T, H). Missing frames get a learned 'missing' vector instead
    of their values (which are never read, so NaN in them cannot leak)."""

    def __init__(self, in_dim: int, hidden: int, dropout: float) -> None:
        super().__init__()
        self.proj = nn.Sequential(nn.Linear(in_dim, hidden), nn.LayerNorm(hidden), nn.GELU(), nn.Dropout(dropout))
        self.missing = nn.Parameter(torch.zeros(hidden))

    def forward(self, x: Tensor, valid: Tensor) -> Tensor:
        v = valid.unsqueeze(-1)
        h = self.proj(torch.where(v, x, torch.zeros((), dtype=x.dtype, device=x.device)))
        return torch.where(v, h, self.missing.to(h.dtype))


class GroupProjector(nn.Module):
    """Several features -> one (B, T, H) stream: per-feature StreamProjector, then concat + linear."""

    def __init__(self, feature_dims: dict[str, int], names: Sequence[str], hidden: int, dropout: float) -> None:
        super().__init__()
        self.names = list(names)
        self.streams = nn.ModuleDict({n: StreamProjector(feature_dims[n], hidden, dropout) for n in self.names})
        self.fuse = nn.Linear(hidden * len(self.names), hidden) if len(self.names) > 1 else nn.Identity()

    def forward(self, features: dict[str, Tensor], masks: dict[str, Tensor], pad: Tensor) -> tuple[Tensor, Tensor]:
        """Fused stream and its (B, T) validity (any member feature present on a real frame)."""
        hs, valids = [], []
        for n in self.names:
            valid = frame_valid(n, masks, pad)
            hs.append(self.streams[n](get_feature(features, n), valid))
            valids.append(valid)
        return self.fuse(torch.cat(hs, dim=-1)), torch.stack(valids, 0).any(0)


def get_feature(features: dict[str, Tensor], name: str) -> Tensor:
    try:
        return features[name]
    except KeyError:
        raise KeyError(f"feature {name!r} missing from the batch (got {sorted(features)})") from None


def trailing_lengths(pad: Tensor) -> Tensor:
    """(B,) number of real frames; padding must be a suffix of each row (how windows are padded)."""
    lengths = pad.sum(1)
    expected = torch.arange(pad.shape[1], device=pad.device).unsqueeze(0) < lengths.unsqueeze(1)
    if not torch.equal(expected, pad.bool()):
        raise ValueError("pad must mark a prefix of real frames followed by padding in every row")
    return lengths


class BiGRUEncoder(nn.Module):
    """BiGRU over the real frames only, output projected back to `out_dim`. A batch of full windows (most
    batches: windows are cut at the stride) runs unpacked, which is the same computation without
    packing's per-step bookkeeping (2.5x faster at T = 400 on a CPU); a batch holding a shorter window is
    packed, so its backward direction starts at its last real frame."""

    def __init__(self, in_dim: int, gru_hidden: int, out_dim: int, layers: int = 1, dropout: float = 0.0) -> None:
        super().__init__()
        self.gru = nn.GRU(
            in_dim, gru_hidden, num_layers=layers, batch_first=True, bidirectional=True,
            dropout=dropout if layers > 1 else 0.0,
        )
        self.out = nn.Linear(2 * gru_hidden, out_dim)

    def forward(self, x: Tensor, lengths: Tensor) -> Tensor:
        T = x.shape[1]
        if bool((lengths >= T).all()):
            return self.out(self.gru(x)[0])
        packed = nn.utils.rnn.pack_padded_sequence(
            x, lengths.clamp_min(1).cpu(), batch_first=True, enforce_sorted=False
        )
        y, _ = self.gru(packed)
        y, _ = nn.utils.rnn.pad_packed_sequence(y, batch_first=True, total_length=T)
        return self.out(y)


class CrossAttentionBlock(nn.Module):
    """Post-norm cross-attention + 4x FFN. Rows whose keys are all invalid return the query unchanged."""

    def __init__(self, dim: int, heads: int, dropout: float, ffn_mult: int = 4) -> None:
        super().__init__()
        self.attn = nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True)
        self.norm1 = nn.LayerNorm(dim)
        self.ffn = nn.Sequential(
            nn.Linear(dim, ffn_mult * dim), nn.GELU(), nn.Dropout(dropout), nn.Linear(ffn_mult * dim, dim)
        )
        self.norm2 = nn.LayerNorm(dim)
        self.drop = nn.Dropout(dropout)

    def forward(self, q: Tensor, kv: Tensor, kv_valid: Tensor) -> Tensor:
        kpm, any_valid = safe_key_padding(kv_valid)
        a, _ = self.attn(q, kv, kv, key_padding_mask=kpm, need_weights=False)
        x = self.norm1(q + self.drop(a))
        x = self.norm2(x + self.drop(self.ffn(x)))
        return torch.where(any_valid.view(-1, 1, 1), x, q)


class RegionProjector(nn.Module):
    """Soft prompt guidance: region_scale · cos(P(hidden), prototypes) with P trainable and the
    text prototypes a fixed buffer, so the KL term reaches the head's parameters."""

    def __init__(self, hidden: int, prototypes: Any, scale: float) -> None:
        super().__init__()
        protos = torch.as_tensor(np.asarray(prototypes, dtype=np.float32))
        if protos.ndim != 2 or protos.shape[0] < 2:
            raise ValueError(f"region_prototypes must be (R, D_text) with R >= 2, got {tuple(protos.shape)}")
        if not torch.isfinite(protos).all():
            raise ValueError("region_prototypes contain non-finite values")
        self.register_buffer("prototypes", F.normalize(protos, dim=-1))
        self.proj = nn.Linear(hidden, protos.shape[1])
        self.scale = float(scale)

    def forward(self, hidden: Tensor) -> Tensor:
        z = F.normalize(self.proj(hidden), dim=-1)
        return self.scale * z @ self.prototypes.to(z.dtype).T


class VAHead(nn.Module):
    """Per-frame VA in [-1, 1]: tanh(linear(dropout(h))), or with kind="mlp" the regression head of RAS's
    face model, tanh(FC(Dropout(GELU(LN(FC(h)))))) with an inner width `width` (0 = hidden)."""

    def __init__(self, hidden: int, dropout: float, kind: str = "linear", width: int = 0) -> None:
        super().__init__()
        if kind == "mlp":
            inner = width or hidden
            self.mlp = nn.Sequential(
                nn.Linear(hidden, inner), nn.LayerNorm(inner), nn.GELU(), nn.Dropout(dropout), nn.Linear(inner, 2)
            )
        else:
            self.drop = nn.Dropout(dropout)
            self.linear = nn.Linear(hidden, 2)
        self.kind = kind

    def forward(self, h: Tensor) -> Tensor:
        return torch.tanh(self.mlp(h) if self.kind == "mlp" else self.linear(self.drop(h)))


class BaseHead(nn.Module):
    """Holds the config, the modality split and the output end (VA head + optional region projector)."""

    config_class: type[HeadConfig] = HeadConfig
    name: str = ""

    def __init__(self, feature_dims: dict[str, int], cfg: HeadConfig) -> None:
        super().__init__()
        if not feature_dims:
            raise ValueError("feature_dims is empty")
        self.cfg = cfg
        self.feature_dims = dict(feature_dims)
        self.visual, self.audio = split_modalities(feature_dims, cfg)
        self.va_head = VAHead(cfg.hidden, cfg.dropout, cfg.regressor, cfg.regressor_hidden)
        self.region = (
            RegionProjector(cfg.hidden, cfg.region_prototypes, cfg.region_scale)
            if cfg.region_prototypes is not None
            else None
        )

    def finish(self, hidden: Tensor, extras: dict[str, Any] | None = None) -> HeadOutput:
        return HeadOutput(
            va=self.va_head(hidden),
            hidden=hidden,
            region_logits=self.region(hidden) if self.region is not None else None,
            extras=extras or {},
        )
