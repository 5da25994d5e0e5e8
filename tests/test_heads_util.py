"""Shared helpers for the head tests (small sizes: 2 shared CPU cores). No tests here."""

from __future__ import annotations

import torch

SMALL = {
    "gru": {"hidden": 32, "gru_hidden": 16, "dropout": 0.0},
    "transformer": {"hidden": 32, "layers": 1, "heads": 4, "dropout": 0.0},
    "mamba": {"hidden": 32, "layers": 1, "d_state": 4, "d_conv": 3, "dropout": 0.0},
    "crossattn": {"hidden": 32, "gru_hidden": 16, "heads": 4, "dropout": 0.0},
    "dcmmoe": {"hidden": 32, "layers": 1, "heads": 4, "dropout": 0.0},
    "raav": {"hidden": 32, "layers": 1, "heads": 4, "dropout": 0.0},
}
DIMS = {"clip": 12, "ast": 10}


def make_batch(dims: dict[str, int], lengths: list[int], T: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    B = len(lengths)
    pad = torch.arange(T).unsqueeze(0) < torch.tensor(lengths).unsqueeze(1)
    features = {n: torch.randn(B, T, d, generator=g) for n, d in dims.items()}
    masks = {n: pad.clone() for n in dims}
    return features, masks, pad


def extend(features, masks, pad, extra: int, seed: int = 1):
    """Append `extra` padding frames holding garbage (features random, masks random)."""
    g = torch.Generator().manual_seed(seed)
    B = pad.shape[0]
    f2 = {n: torch.cat([x, 100 * torch.randn(B, extra, x.shape[-1], generator=g)], 1) for n, x in features.items()}
    m2 = {n: torch.cat([m, torch.rand(B, extra, generator=g) > 0.5], 1) for n, m in masks.items()}
    p2 = torch.cat([pad, torch.zeros(B, extra, dtype=torch.bool)], 1)
    return f2, m2, p2
