"""Model weights as safetensors (no pickle): `model.safetensors` (best validation P) and
`model_last.safetensors` (last epoch) next to the run's config.yaml. Evaluate, predict and export load
these; the full checkpoints/*.pt (optimiser, scheduler, RNG) are only for --resume."""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

WEIGHTS_FILES = {"best": "model.safetensors", "last": "model_last.safetensors"}


def weights_file(run_path: Path, which: str = "best") -> Path:
    if which not in WEIGHTS_FILES:
        raise ValueError(f"checkpoint must be best or last, got {which!r}")
    return Path(run_path) / WEIGHTS_FILES[which]


def save_weights(path: Path, model: nn.Module, metadata: dict[str, str] | None = None) -> None:
    """Write atomically; tensors shared between modules are stored once (safetensors.torch.save_model)."""
    from safetensors.torch import save_model

    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    save_model(model, str(tmp), metadata=metadata)
    os.replace(tmp, path)


def load_weights(model: nn.Module, path: Path, device: str | torch.device = "cpu") -> nn.Module:
    """Load into `model`; a damaged file or weights of another shape is a CheckpointError naming the file."""
    from safetensors.torch import load_model

    from train.runs.checkpoint import CheckpointError

    try:
        load_model(model, str(path), strict=True, device=str(device))
    except FileNotFoundError:
        raise
    except Exception as err:  # safetensors and torch raise several types for a bad file or a shape mismatch
        reason = str(err).strip().splitlines()[0][:200] if str(err).strip() else type(err).__name__
        raise CheckpointError(f"weights {path} cannot be read ({reason}): damaged or not this run's model") from None
    return model


def read_metadata(path: Path) -> dict[str, str]:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as handle:
        return dict(handle.metadata() or {})
