"""Numpy batches to device tensors, and the device / autocast choice."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch

from train.data.dataset import Batch
from train.data.standardize import Standardizer


@dataclass
class TensorBatch:
    features: dict[str, torch.Tensor]  # (B, L, D) float32
    masks: dict[str, torch.Tensor]  # (B, L) bool
    pad: torch.Tensor  # (B, L) bool, True = real frame
    labels: torch.Tensor  # (B, L, 2)
    label_mask: torch.Tensor  # (B, L) bool


def resolve_device(name: str) -> torch.device:
    """auto -> cuda when available, else cpu."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("--device cuda asked for, but torch sees no CUDA device")
    return torch.device(name)


def to_tensors(batch: Batch, device: torch.device) -> TensorBatch:
    """The batch on `device`: features sent as stored (float16: half the bytes), made float32 there and
    standardized there when the batch carries statistics (one op per feature on the whole batch)."""
    nb = device.type == "cuda"
    masks = {k: torch.from_numpy(v).to(device, non_blocking=nb) for k, v in batch.masks.items()}
    raw = {k: torch.from_numpy(v).to(device, non_blocking=nb) for k, v in batch.features.items()}
    features = standardize_tensors(raw, masks, batch.standardizer)
    return TensorBatch(
        features={k: _float(v) for k, v in features.items()},
        masks=masks,
        pad=torch.from_numpy(batch.pad).to(device, non_blocking=nb),
        labels=torch.from_numpy(batch.labels).to(device, non_blocking=nb),
        label_mask=torch.from_numpy(batch.label_mask).to(device, non_blocking=nb),
    )


def standardize_tensors(
    features: dict[str, torch.Tensor], masks: dict[str, torch.Tensor], standardizer: Standardizer | None
) -> dict[str, torch.Tensor]:
    """(x - mean) / std of each feature the statistics cover, as x * (1/std) - mean/std on the tensors' device:
    one float32 copy of the batch scaled and shifted in place; frames without a value (mask False, padding)
    stay 0. The inputs are never changed (float16 or float32 in, new float32 tensors out)."""
    if standardizer is None:
        return features
    out = dict(features)
    for name, x in features.items():
        affine = standardizer.affine(name, x.device)
        if affine is None or not x.is_floating_point():
            continue
        scale, shift = affine
        y = x.to(torch.float32, copy=True).mul_(scale).add_(shift)
        out[name] = y.masked_fill_(~masks[name].unsqueeze(-1), 0)
    return out


def _float(t: torch.Tensor) -> torch.Tensor:
    """Features to float32; integer arrays (uint8 face crops, index maps) stay as they are."""
    return t.float() if t.is_floating_point() else t


def autocast(device: torch.device):
    """bf16 autocast on CUDA, nothing elsewhere."""
    if device.type == "cuda":
        return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()
