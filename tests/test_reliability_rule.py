"""The frame-level audio reliability rule of `raav`: from per-window flags aligned onto frames,
today's rule (`threshold`), every covering window (`all`) or any covering window (`any`, RAS)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cache.align import align_to_frames
from cache.media import frame_times
from train.heads import build_head
from train.heads.raav import frame_reliable


def _aligned_flags() -> np.ndarray:
    # windows [0,4) reliable, [2,6) not, [4,6.5) reliable; frames at 2 fps over 6.5 s
    windows = np.array([[0.0, 4.0], [2.0, 6.0], [4.0, 6.5]])
    flags = np.array([[1.0], [0.0], [1.0]])
    aligned, _ = align_to_frames(flags, windows, frame_times(13, 2.0))
    return aligned[:, 0].astype(np.float16)  # as the dataset keeps it


def test_rules_by_hand():
    r = torch.from_numpy(_aligned_flags().astype(np.float32))
    all_ = frame_reliable(r, "all").numpy()
    any_ = frame_reliable(r, "any").numpy()
    thr = frame_reliable(r, "threshold", 0.5).numpy()
    # [0,2): only window 0 (reliable); [2,4): windows 0 and 1; [4,6): windows 1 and 2; [6,6.5): window 2
    assert all_.tolist() == [True] * 4 + [False] * 8 + [True]
    assert any_.tolist() == [True] * 13
    assert thr.tolist() == [True] * 4 + [False] * 8 + [True]  # 0.5 is not > 0.5: both windows needed


def test_rule_is_a_raav_option_and_changes_the_mask():
    dims = {"face": 4, "wavlm": 3, "audio_reliability": 3}
    r = torch.from_numpy(_aligned_flags().astype(np.float32))[None]
    feats = {"face": torch.randn(1, 13, 4), "wavlm": torch.randn(1, 13, 3),
             "audio_reliability": torch.stack([r, r, r], -1)}
    pad = torch.ones(1, 13, dtype=torch.bool)
    masks = {k: pad.clone() for k in dims}
    out = {}
    for rule in ("all", "any"):
        head = build_head("raav", dims, {"hidden": 8, "heads": 2, "layers": 1, "reliability_rule": rule}).eval()
        out[rule] = head(feats, masks, pad).extras["audio_reliable"][0].tolist()
    assert sum(out["any"]) == 13 and sum(out["all"]) == 5
    with pytest.raises(ValueError, match="reliability_rule"):
        build_head("raav", dims, {"hidden": 8, "heads": 2, "reliability_rule": "most"})
