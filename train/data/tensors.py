"""Numpy batches to device tensors, and the device / autocast choice."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch

from train.data.dataset import Batch


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
    nb = device.type == "cuda"
    return TensorBatch(
        features={k: _float(torch.from_numpy(v).to(device, non_blocking=nb)) for k, v in batch.features.items()},
        masks={k: torch.from_numpy(v).to(device, non_blocking=nb) for k, v in batch.masks.items()},
        pad=torch.from_numpy(batch.pad).to(device, non_blocking=nb),
        labels=torch.from_numpy(batch.labels).to(device, non_blocking=nb),
        label_mask=torch.from_numpy(batch.label_mask).to(device, non_blocking=nb),
    )


def _float(t: torch.Tensor) -> torch.Tensor:
    """Features to float32; integer arrays (uint8 face crops, index maps) stay as they are."""
    return t.float() if t.is_floating_point() else t


def autocast(device: torch.device):
    """bf16 autocast on CUDA, nothing elsewhere."""
    if device.type == "cuda":
        return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()
