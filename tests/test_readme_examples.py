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
    from extract.runner import RunOptions
    from extract.backends import run_extraction

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
    from train.fit.losses import ccc_loss

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


# ---- the "Python API" section, run as written in a folder laid out as `make demo` leaves it


def test_api_aligned_features_of_a_track(mini_demo, monkeypatch):
    from cache.manifest import load_manifest

    monkeypatch.chdir(mini_demo)
    ex = load_readme_example("api-aligned")
    labels = load_manifest(mini_demo / "artifacts" / "sample").track("video20").labels
    stored = FeatureStore.open(store_path(mini_demo / "artifacts" / "features", "landmarks")).read("video20").values.dtype
    assert ex.landmarks.shape[0] == len(labels) == len(ex.va) and ex.landmarks.dtype == stored
    assert ex.landmarks.shape[1] > 10 and ex.has_face.mean() > 0.8
    np.testing.assert_array_equal(ex.va_valid, labels.valid)
    np.testing.assert_allclose(ex.va[labels.valid], labels.values[labels.valid])
    assert np.isfinite(ex.landmarks[ex.has_face].astype(np.float32)).all()


def test_api_load_a_run_and_predict_a_track(mini_demo, monkeypatch, tmp_path):
    from train.results.predict import predict_run

    monkeypatch.chdir(mini_demo)
    ex = load_readme_example("api-predict")
    assert ex.va.shape == (len(ex.track.labels), 2) and np.abs(ex.va).max() <= 1
    assert ex.run.run.path.name == "demo-gru-landmarks" and np.ptp(ex.va[:, 0]) > 0
    # the numbers `pipeline.py predict --split val` writes for that track (video7 is a validation track)
    csv_path = predict_run("demo-gru-landmarks", "val", "artifacts/runs", "cpu", out=tmp_path / "val.csv")
    rows = [line.split(",") for line in csv_path.read_text().splitlines()[1:] if line.startswith("video7/")]
    np.testing.assert_allclose(np.array([[float(v), float(a)] for _, v, a in rows]), ex.va, atol=1e-6)


def test_api_extract_one_feature_for_one_video(mini_demo, monkeypatch):
    monkeypatch.chdir(mini_demo)
    ex = load_readme_example("api-extract")
    assert ex.summary.ok and ex.summary.done == ["video20: faces, landmarks"]
    assert len(ex.rows) == len(ex.times) == len(ex.valid) == 60  # 2 s at 30 fps
    np.testing.assert_allclose(ex.times[:, 0], np.arange(60) / 30, atol=1e-9)
    assert ex.valid.mean() > 0.8
    # the same values as the feature extracted for the dataset (same extractor, same frames)
    reference = FeatureStore.open(store_path(mini_demo / "artifacts" / "features", "landmarks")).read("video20")
    np.testing.assert_array_equal(ex.rows, reference.values)
