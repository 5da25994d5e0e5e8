import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("YOLO_OFFLINE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


import pytest  # noqa: E402


@pytest.fixture(scope="session")
def mini_demo(tmp_path_factory):
    """`make demo` in miniature, laid out as it leaves artifacts/: a short sample dataset, the tiny-profile
    `landmarks` feature of every split, and a small gru run `demo-gru-landmarks`. Returns the folder that
    holds artifacts/ (tests chdir there to run the README's snippets as written)."""
    import torch

    from cache.sample_data import SampleConfig, write_sample_dataset
    from extract.runner import RunOptions
    from extract.backends import run_extraction
    from train.config import DataConfig, TrainConfig
    from train.fit.loop import train

    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("mini_demo")
    art = root / "artifacts"
    os.environ.setdefault("YOLO_CONFIG_DIR", str(root / "ultralytics"))
    write_sample_dataset(art / "sample", SampleConfig.short(("video20", "video2", "video7", "12-30-640x360", "video33"), 2.0))
    for split in ("train", "val", "test"):
        summary = run_extraction(RunOptions(
            split=split, features=["landmarks"], data_root=art / "sample", cache_dir=art / "features",
            models_dir=art / "models", profile="tiny", device="cpu", progress=False,
        ))
        assert summary.ok, summary.failed
    data = DataConfig(features=["landmarks"], data_root=str(art / "sample"), cache_dir=str(art / "features"), window=32, stride=16)
    train(TrainConfig(model="gru", data=data, name="demo-gru-landmarks", runs_dir=str(art / "runs"), head={"hidden": 8},
                      epochs=2, lr=3e-3, batch_size=4, device="cpu", smooth_grid=[0, 2]))
    return root
