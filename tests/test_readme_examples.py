"""The README's examples of a new extractor and a new head run as written."""

from __future__ import annotations

import os
import re
import sys
import types
from pathlib import Path

import numpy as np
import torch

from cache.sample_data import SampleConfig, write_sample_dataset
from cache.store import FeatureStore, store_path

ROOT = Path(__file__).resolve().parents[1]
torch.set_num_threads(1)


def load_readme_example(tag: str) -> types.ModuleType:
    """Run the README's python block marked `<!-- example: TAG -->` as a module."""
    text = (ROOT / "README.md").read_text()
    match = re.search(rf"<!-- example: {tag} -->\s*```python\n(.*?)```", text, re.S)
    assert match, f"README has no '{tag}' example"
    module = types.ModuleType(f"readme_{tag}")
    sys.modules[module.__name__] = module  # dataclasses look their module up
    exec(compile(match.group(1), "README.md", "exec"), module.__dict__)
    return module


def test_extractor_example_runs_through_the_runner(tmp_path):
    from extract.base import unregister
    from extract.runner import RunOptions, run_extraction

    os.environ.setdefault("YOLO_CONFIG_DIR", str(tmp_path / "ultralytics"))
    load_readme_example("extractor")
    try:
        write_sample_dataset(tmp_path / "data", SampleConfig.short(("video20",), 2.0))
        summary = run_extraction(RunOptions(
            split="train", features=["brightness"], data_root=tmp_path / "data", cache_dir=tmp_path / "cache",
            models_dir=tmp_path / "models", profile="tiny", device="cpu", progress=False,
        ))
        assert summary.ok
        group = FeatureStore.open(store_path(tmp_path / "cache", "brightness")).read("video20")
        assert group.values.shape == (60, 1)
        assert group.valid.mean() > 0.9
        assert 0.05 < float(group.values[group.valid].mean()) < 0.95
        np.testing.assert_allclose(group.times[1] - group.times[0], [1 / 30, 1 / 30], atol=1e-9)
    finally:
        unregister("brightness")


def test_head_example_builds_and_learns():
    from train.heads import HEADS, build_head
    from train.losses import ccc_loss

    load_readme_example("head")
    try:
        torch.manual_seed(0)
        head = build_head("frame_mlp", {"landmarks": 6}, {"hidden": 16, "layers": 3})
        x = torch.randn(2, 50, 6)
        target = torch.tanh(x[..., :2])
        masks, pad = {"landmarks": torch.ones(2, 50, dtype=torch.bool)}, torch.ones(2, 50, dtype=torch.bool)
        opt = torch.optim.Adam(head.parameters(), lr=1e-2)
        losses = []
        for _ in range(30):
            out = head({"landmarks": x}, masks, pad)
            loss = ccc_loss(out.va, target, pad)
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.item())
        assert out.va.shape == (2, 50, 2) and out.va.abs().max() <= 1
        assert losses[-1] < 0.5 * losses[0]
    finally:
        HEADS.pop("frame_mlp", None)
