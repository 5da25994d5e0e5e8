"""Feature stores at fsspec URLs (file://, memory://) work like local folders: write, read, list, refuse or
move aside on a fingerprint mismatch, and the CLI extracts into and trains from such a location."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from cache.sample_data import SampleConfig, write_sample_dataset
from cache.store import FeatureMeta, FeatureStore, FingerprintMismatch, aside_path, list_stores, store_path

torch.set_num_threads(1)
TIMES = np.array([[0, 1], [1, 2], [2, 3]], dtype=float)


@pytest.fixture(params=["memory", "file"])
def base(request, tmp_path):
    return f"memory://affcache-test-{os.getpid()}-{tmp_path.name}" if request.param == "memory" else f"file://{tmp_path}/cache"


def test_store_at_a_url(base):
    path = store_path(base, "clip")
    assert path == f"{base}/clip.zarr"
    old, new = FeatureMeta("clip", version="1"), FeatureMeta("clip", version="2")
    FeatureStore.create_or_open(path, old).write("video1", np.arange(6.0).reshape(3, 2), TIMES)
    assert list_stores(base) == {"clip": path}
    group = FeatureStore.open(path, expect_fingerprint=old.fingerprint).read("video1")
    np.testing.assert_array_equal(group.values, np.arange(6.0).reshape(3, 2))
    with pytest.raises(FingerprintMismatch, match=new.fingerprint):
        FeatureStore.create_or_open(path, new)
    assert FeatureStore.create_or_open(path, new, on_mismatch="new").units() == []
    aside = FeatureStore.open(aside_path(store_path(base, "clip"), old.fingerprint))
    assert aside.units() == ["video1"] and list(list_stores(base)) == ["clip"]


def test_cli_extracts_into_and_trains_from_a_url(tmp_path):
    import pipeline

    os.environ.setdefault("YOLO_CONFIG_DIR", str(tmp_path / "ultralytics"))
    data = tmp_path / "data"
    write_sample_dataset(data, SampleConfig.short(("video20", "12-30-640x360"), 3.0))
    cache = f"file://{tmp_path}/remote-cache"
    runner = CliRunner()
    common = ["--data-root", str(data), "--cache-dir", cache]
    for split in ("train", "val"):
        out = runner.invoke(pipeline.app, ["extract", "--split", split, "--features", "mouth", "--profile", "tiny",
                                           "--models-dir", str(tmp_path / "models"), "--device", "cpu", *common])
        assert out.exit_code == 0, out.output
    assert set(list_stores(cache)) == {"faces", "mouth", "frame_times"}  # frame_times: the decoded videos' clocks
    assert (tmp_path / "remote-cache" / "mouth.zarr" / "zarr.json").is_file()  # the URL's folder, not "file:/…"
    assert not Path("file:").exists()
    status = runner.invoke(pipeline.app, ["status", *common])
    assert "mouth" in status.output and "1/1" in status.output
    trained = runner.invoke(pipeline.app, ["train", "--model", "gru", "--features", "mouth", "--epochs", "1",
                                           "--window", "32", "--stride", "16", "--head", "hidden=8",
                                           "--runs-dir", str(tmp_path / "runs"), "--device", "cpu", *common])
    assert trained.exit_code == 0, trained.output
    assert "run folder" in trained.output
