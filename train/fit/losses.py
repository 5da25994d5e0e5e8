"""Training losses: per-dimension CCC (optionally + MAE/MSE) and soft prompt guidance over the 3×3 VA
regions (Gaussian soft labels from the distance of the true VA to region centres, KL to the head's
region logits). Everything is computed with masks as weights, so invalid labels (-5) never enter
and no host sync is needed."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, Sequence

import torch
from torch import Tensor

from cache.regions import REGION_LEVELS
from train.heads.common import HeadOutput



def region_centres(device: torch.device | None = None) -> Tensor:
    """(9, 2) centres of the 3×3 VA regions; index = 3·i_valence + i_arousal, levels (-0.66, 0, 0.66).
    Region prototypes must be stored in this order."""
    levels = torch.tensor(REGION_LEVELS, device=device)
    v, a = torch.meshgrid(levels, levels, indexing="ij")
    return torch.stack([v.reshape(-1), a.reshape(-1)], dim=-1)


def _clean(x: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
    """Float32 values with invalid frames set to 0 (so -5 or NaN there cannot leak), and float weights."""
    m = mask.bool()
    x = x.float()
    return torch.where(m.unsqueeze(-1), x, torch.zeros((), device=x.device)), m.float()


def _ccc_over(pred: Tensor, true: Tensor, mask: Tensor, dims: tuple[int, ...]) -> Tensor:
    """CCC per dimension over the valid frames reduced over `dims` (population moments)."""
    p, w = _clean(pred, mask)
    t, _ = _clean(true, mask)
    w = w.unsqueeze(-1)  # (B, T, 1)
    n = w.sum(dims, keepdim=True).clamp_min(1.0)
    mp, mt = (p * w).sum(dims, keepdim=True) / n, (t * w).sum(dims, keepdim=True) / n
    dp, dt = (p - mp) * w, (t - mt) * w
    vp, vt, cov = ((d * e).sum(dims, keepdim=True) / n for d, e in ((dp, dp), (dt, dt), (dp, dt)))
    # |2·cov| <= denom, so the clamp only matters when both series are constant and equal (CCC := 0)
    return (2 * cov / (vp + vt + (mp - mt) ** 2).clamp_min(1e-12)).squeeze(dims)


def ccc_per_dim(pred: Tensor, true: Tensor, mask: Tensor) -> Tensor:
    """(2,) CCC per dimension over the valid frames of the batch, population moments."""
    return _ccc_over(pred, true, mask, (0, 1))


def ccc_per_window(pred: Tensor, true: Tensor, mask: Tensor) -> Tensor:
    """(B, 2) CCC per dimension of each window over its own valid frames (RAS's face loss,
    src_visual_dynamic_model/losses.py); a window without valid frames gets 0."""
    return _ccc_over(pred, true, mask, (1,))


def ccc_loss(pred: Tensor, true: Tensor, mask: Tensor, weights: Sequence[float] = (0.5, 0.5)) -> Tensor:
    """Σ_d w_d·(1 − CCC_d) over the valid frames; 0 (still in the graph) when no frame is valid."""
    c = ccc_per_dim(pred, true, mask)
    w = torch.as_tensor(weights, dtype=c.dtype, device=c.device)
    has = mask.bool().any().to(c.dtype)
    return has * (w * (1 - c)).sum()


def window_ccc_loss(
    pred: Tensor, true: Tensor, mask: Tensor, weights: Sequence[float] = (0.5, 0.5), min_frames: int = 1
) -> tuple[Tensor, Tensor]:
    """Σ_d w_d·(1 − CCC_d) per window, averaged over the windows with at least `min_frames` valid frames;
    and whether any window had that many (0 loss, still in the graph, when none)."""
    c = ccc_per_window(pred, true, mask)  # (B, 2)
    w = torch.as_tensor(weights, dtype=c.dtype, device=c.device)
    per_window = ((1 - c) * w).sum(-1)
    use = (mask.bool().sum(1) >= max(int(min_frames), 1)).to(c.dtype)
    return (per_window * use).sum() / use.sum().clamp_min(1.0), use.sum() > 0


def input_mask(label_mask: Tensor, input_masks: dict[str, Tensor], names: Sequence[str]) -> Tensor:
    """The frames the loss counts: labelled frames where every input in `names` has a value (its batch
    mask, after any nearest fill); RAS's face training mask valid & ~missing (src_visual_dynamic_model/train.py)."""
    mask = label_mask.bool()
    for name in names:
        if name not in input_masks:
            raise ValueError(f"loss.require_input names {name!r}, not an input of this batch ({', '.join(sorted(input_masks))})")
        mask = mask & input_masks[name].bool()
    return mask


def regression_loss(pred: Tensor, true: Tensor, mask: Tensor, kind: str = "mae", weights: Sequence[float] = (0.5, 0.5)) -> Tensor:
    """Σ_d w_d·mean over valid frames of |e| ("mae") or e² ("mse")."""
    p, w = _clean(pred, mask)
    t, _ = _clean(true, mask)
    err = (p - t).abs() if kind == "mae" else (p - t) ** 2 if kind == "mse" else None
    if err is None:
        raise ValueError(f"kind must be 'mae' or 'mse', got {kind!r}")
    per_dim = (err * w.unsqueeze(-1)).sum((0, 1)) / w.sum().clamp_min(1.0)
    return (torch.as_tensor(weights, dtype=per_dim.dtype, device=per_dim.device) * per_dim).sum()


def _soft_log_labels(va: Tensor, centres: Tensor | None, sigma: float) -> Tensor:
    c = region_centres(va.device) if centres is None else centres.to(va.device, torch.float32)
    d2 = ((va.float().unsqueeze(-2) - c) ** 2).sum(-1)
    return torch.log_softmax(-d2 / (2 * sigma**2), dim=-1)


def soft_region_labels(va: Tensor, centres: Tensor | None = None, sigma: float = 0.45) -> Tensor:
    """(N, 9) Gaussian soft labels ∝ exp(−d²/2σ²), normalised (any leading shape works)."""
    return _soft_log_labels(va, centres, sigma).exp()


def region_kl_loss(region_logits: Tensor, true_va: Tensor, mask: Tensor, sigma: float = 0.45, centres: Tensor | None = None) -> Tensor:
    """KL(soft ‖ softmax(logits)) per frame, averaged over the valid frames (0 when none)."""
    if centres is None and region_logits.shape[-1] != 9:
        raise ValueError(f"region logits have {region_logits.shape[-1]} regions, the 3×3 grid has 9")
    t, w = _clean(true_va, mask)
    log_q = _soft_log_labels(t, centres, sigma)
    log_p = torch.log_softmax(region_logits.float(), dim=-1)
    kl = (log_q.exp() * (log_q - log_p)).sum(-1)
    return (kl * w).sum() / w.sum().clamp_min(1.0)


@dataclass
class VALossConfig:
    ccc_weights: tuple[float, float] = (0.5, 0.5)  # V, A
    regression: str | None = None  # None, "mae" or "mse"
    regression_weight: float = 1.0
    region_lambda: float = 0.2  # applied only when the head emits region logits
    region_sigma: float = 0.45
    # "batch": CCC pooled over the valid frames of the batch; "window": CCC per window then averaged
    # (RAS's face model, src_visual_dynamic_model/losses.py)
    ccc_over: str = "batch"
    # below this many valid frames (in the batch, or in every window with ccc_over window) the loss is its
    # regression part alone (MSE unless `regression` names another), as RAS's CCCMSELoss min_valid = 4
    # (src_audio_and_fusion/src/losses/ccc_mse_loss.py)
    ccc_min_frames: int = 4

    def __post_init__(self) -> None:
        self.ccc_weights = tuple(float(w) for w in self.ccc_weights)  # type: ignore[assignment]
        if len(self.ccc_weights) != 2:
            raise ValueError(f"ccc_weights must have two values (V, A), got {self.ccc_weights}")
        if self.regression not in (None, "mae", "mse"):
            raise ValueError(f"regression must be None, 'mae' or 'mse', got {self.regression!r}")
        if self.ccc_over not in ("batch", "window"):
            raise ValueError(f"ccc_over must be 'batch' or 'window', got {self.ccc_over!r}")
        if self.ccc_min_frames < 0:
            raise ValueError(f"ccc_min_frames must be >= 0, got {self.ccc_min_frames}")

    @classmethod
    def from_dict(cls, raw: dict[str, Any] | None) -> "VALossConfig":
        raw = dict(raw or {})
        unknown = sorted(set(raw) - {f.name for f in fields(cls)})
        if unknown:
            raise ValueError(f"unknown VALossConfig option(s) {unknown}")
        return cls(**raw)


def va_loss(output: HeadOutput, true: Tensor, mask: Tensor, cfg: VALossConfig | None = None) -> tuple[Tensor, dict[str, Tensor]]:
    """CCC (+ optional MAE/MSE) + λ·KL; returns the total and its detached parts. With fewer valid frames
    than `ccc_min_frames` the CCC part (and its added regression) gives way to the regression loss alone
    (`parts["fallback"]` is 1 then); chosen with torch.where, so no host sync."""
    cfg = cfg or VALossConfig()
    if cfg.ccc_over == "window":
        ccc, enough = window_ccc_loss(output.va, true, mask, cfg.ccc_weights, cfg.ccc_min_frames)
    else:
        ccc = ccc_loss(output.va, true, mask, cfg.ccc_weights)
        enough = mask.bool().sum() >= cfg.ccc_min_frames
    total = ccc
    parts = {"ccc": ccc.detach()}
    reg = None
    if cfg.regression is not None:
        reg = regression_loss(output.va, true, mask, cfg.regression, cfg.ccc_weights)
        total = total + cfg.regression_weight * reg
        parts[cfg.regression] = reg.detach()
    if cfg.ccc_min_frames > 1:  # the regression part already computed, else MSE
        fallback = reg if reg is not None else regression_loss(output.va, true, mask, "mse", cfg.ccc_weights)
        total = torch.where(enough, total, fallback)
        parts["fallback"] = (~enough).float()
    if output.region_logits is not None and cfg.region_lambda > 0:
        region_mask = output.extras.get("region_mask")  # frames whose logits are their own (fine-tuned CLIP)
        kl = region_kl_loss(output.region_logits, true, mask if region_mask is None else mask & region_mask, cfg.region_sigma)
        total = total + cfg.region_lambda * kl
        parts["kl"] = kl.detach()
    parts["total"] = total.detach()
    return total, parts
