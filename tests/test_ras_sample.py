"""RAS's branches on the built-in sample with tiny models, end to end: extraction (Qwen on whole frames
with RAS's prompt; WavLM + mouth + audio reliability), the segment-level behaviour run on `qwen3vl:mm_last`
and the window-level audio run, each evaluated and exported like any run."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

torch = pytest.importorskip("torch")
torch.set_num_threads(1)

from cache.sample_data import SampleConfig, write_sample_dataset  # noqa: E402
from cache.store import FeatureStore, store_path  # noqa: E402
from extract.qwen3vl import RAS_PROMPT  # noqa: E402
from extract.runner import RunOptions  # noqa: E402
from extract.backends import run_extraction  # noqa: E402


@pytest.fixture(scope="module")
def sample(tmp_path_factory):
    root = tmp_path_factory.mktemp("ras_sample")
    os.environ.setdefault("YOLO_CONFIG_DIR", str(root / "ultralytics"))
    write_sample_dataset(root / "data", SampleConfig.short(("video20", "12-30-640x360"), 6.0))
    for split in ("train", "val"):
        opts = RunOptions(
            split=split, features=["qwen3vl", "wavlm", "audio_reliability"], data_root=root / "data",
            cache_dir=root / "cache", models_dir=root / "models", profile="tiny", device="cpu", progress=False,
            batch_size=16, configs={"qwen3vl": {"input": "frames", "frame_size": 64, "prompt": "ras"}},
        )
        assert run_extraction(opts).ok
    return root


def _common(root):
    return ["--data-root", str(root / "data"), "--cache-dir", str(root / "cache"), "--runs-dir", str(root / "runs"),
            "--device", "cpu", "--epochs", "1"]


def test_behaviour_branch_on_the_sample(sample):
    from typer.testing import CliRunner

    from pipeline import app
    from train.results.export import export_run

    store = FeatureStore.open(store_path(sample / "cache", "qwen3vl"))
    assert store.meta.config["input"] == "frames" and store.meta.config["prompt"] == RAS_PROMPT
    res = CliRunner().invoke(app, [
        "train", "--model", "mamba", "--features", "qwen3vl:mm_last", "--level", "segment", "--window", "16",
        "--stride", "8", "--name", "behaviour", "--head", "hidden=16", "--head", "layers=2", *_common(sample),
    ])
    assert res.exit_code == 0, res.output
    assert np.isfinite(json.loads((sample / "runs" / "behaviour" / "eval_val.json").read_text())["raw"]["P"])
    export_run("behaviour", "ras_behaviour", splits=("train", "val"), runs_dir=sample / "runs", device="cpu")
    out = FeatureStore.open(store_path(sample / "cache", "ras_behaviour"))
    group = out.read("video20")
    assert group.values.shape[1] == 16 + 2 and group.valid.all()


def test_audio_branch_on_the_sample(sample):
    from typer.testing import CliRunner

    from pipeline import app
    from train.results.window_export import export_windows

    res = CliRunner().invoke(app, [
        "train", "--model", "blockpool", "--features", "wavlm,audio_reliability", "--level", "audio_window",
        "--window", "200", "--stride", "100", "--name", "audio", "--head", "hidden=16", "--head", "attn_dim=8",
        *_common(sample),
    ])
    assert res.exit_code == 0, res.output
    written = export_windows("audio", "ras_audio", splits=("train", "val"), runs_dir=sample / "runs", device="cpu")
    assert written == {"train": 1, "val": 1}
    group = FeatureStore.open(store_path(sample / "cache", "ras_audio")).read("video20")
    assert group.values.shape == (2, 16 + 2)  # 6 s: windows [0, 4) and [2, 6)
    np.testing.assert_allclose(group.attrs["window_times"], [[0, 4], [2, 6]], atol=0.03)
