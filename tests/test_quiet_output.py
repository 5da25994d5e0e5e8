"""Quiet by default, as a user sees it in a pipe: one summary line per stored dtype choice (not one per video
and feature), no third-party bars or hub retries, and offline without weights one line naming the model id,
the folder searched and the `--model NAME=PATH` flag."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def sample(tmp_path_factory) -> Path:
    from cache.sample_data import SAMPLE_VIDEOS, SampleConfig, write_sample_dataset

    root = tmp_path_factory.mktemp("quiet")
    videos = tuple(v for v in SAMPLE_VIDEOS if v.stem in ("video20", "video48"))  # 3 tracks
    write_sample_dataset(root / "data", SampleConfig(seed=0, min_seconds=2.0, max_seconds=2.0, videos=videos))
    return root


def _pipeline(root: Path, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "YOLO_CONFIG_DIR": str(root / "yolo"), **(env or {})}
    return subprocess.run([sys.executable, str(ROOT / "pipeline.py"), *args], capture_output=True, text=True, env=env,
                          cwd=root, timeout=300)


def test_extract_tells_the_dtype_once_per_store_and_choice(sample):
    args = ["extract", "--features", "mouth,landmarks", "--data-root", "data", "--profile", "tiny", "--device", "cpu",
            "--models-dir", "models"]
    quiet = _pipeline(sample, *args, "--cache-dir", "quiet")
    assert quiet.returncode == 0, quiet.stderr
    dtype_lines = [l for l in quiet.stderr.splitlines() if "stored as" in l]
    # landmarks are pixel coordinates: float16 would round them, on every track; one line says so for all three
    assert dtype_lines == [l for l in dtype_lines if l.startswith("INFO landmarks: 3 group(s) stored as float32")]
    assert len(dtype_lines) == 1 and "float16 would lose precision in column 0" in dtype_lines[0]
    assert len(quiet.stderr.splitlines()) <= 3, quiet.stderr  # also "running faces (required)", "no face weights"

    verbose = _pipeline(sample, "--verbose", *args, "--cache-dir", "verbose")
    assert verbose.returncode == 0, verbose.stderr
    assert "DEBUG mouth: 3 group(s) stored as float16" in verbose.stderr.splitlines()
    assert sum("stored as float32, float16 would lose" in l for l in verbose.stderr.splitlines()) == 3  # per group


@pytest.mark.parametrize("feature,model_id", [("wavlm", "microsoft/wavlm-large"), ("clip", "ViT-B-16:openai")])
def test_offline_without_weights_is_one_line_with_the_flag(sample, tmp_path, feature, model_id):
    done = _pipeline(sample, "extract", "--features", feature, "--data-root", "data", "--cache-dir", "full",
                     "--profile", "full", "--device", "cpu", "--models-dir", "models",
                     env={"HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "1"})
    assert done.returncode == 1
    assert done.stdout.strip() == (
        f"extract failed: {feature}: no weights for '{model_id}' on this machine (looked in {tmp_path / 'hf' / 'hub'}) "
        f"and none could be downloaded; download them once online, or give a local copy: --model {feature}=PATH")
    for noise in ("Retrying", "Loading weights", "Traceback", "Failed to download"):
        assert noise not in done.stderr, done.stderr


def test_quiet_switches_off_the_hub_and_transformers_chatter(monkeypatch):
    from cache.native_logs import QUIET_ENV, quiet_libraries

    for key in QUIET_ENV:
        monkeypatch.delenv(key, raising=False)
    before = {n: logging.getLogger(n).level for n in ("huggingface_hub", "transformers")}
    try:
        quiet_libraries()
        assert os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] == "1"
        from huggingface_hub.utils import are_progress_bars_disabled

        assert are_progress_bars_disabled()
        retry = logging.getLogger("huggingface_hub.utils._http")
        assert not retry.isEnabledFor(logging.WARNING)  # "Retrying in 1s [Retry 1/5]" stays out
    finally:
        for name, level in before.items():
            logging.getLogger(name).setLevel(level)


def test_a_store_sums_up_its_dtype_choices(tmp_path):
    from cache.store import FeatureMeta, FeatureStore

    store = FeatureStore.create_or_open(tmp_path / "x.zarr", FeatureMeta(name="x"))
    rng = np.random.default_rng(0)
    times = np.stack([np.arange(50.0), np.arange(50.0) + 1], axis=1)
    store.write("a", rng.normal(0, 1, (50, 2)), times, dtype="auto")
    store.write("b", rng.normal(0, 1, (50, 2)), times, dtype="auto")
    pixels = np.stack([3000 + rng.normal(0, 1, 50), rng.normal(0, 1, 50)], axis=1)  # float16 steps of 2 px at 3000
    store.write("c", pixels, times, dtype="auto")
    assert store.dtype_summary() == ["x: 2 group(s) stored as float16",
                                     "x: 1 group(s) stored as float32 (float16 would lose precision in column 0)"]
    assert store.dtype_summary() == []  # told once
