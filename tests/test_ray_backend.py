"""The Ray backend and sharding (`extract --backend ray`, `--shard i/n`).

A local Ray cluster (2 CPUs, started once for this module) extracts a small split; every group of every
feature must equal a local-backend run (valid and times identical, values within the resume tolerance of
tests/test_extract_pipeline.py). Shards run through the CLI with either backend and add up to the split.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
ray = pytest.importorskip("ray")
torch.set_num_threads(1)

from cache.sample_data import SampleConfig, write_sample_dataset  # noqa: E402
from cache.store import FeatureStore, store_path  # noqa: E402
from extract.ray_backend import _portable, extract_video, task_resources  # noqa: E402
from extract.runner import ExtractionError, RunOptions, iter_videos, parse_shard, shard_videos  # noqa: E402
from extract.backends import run_extraction  # noqa: E402

FEATURES = ["faces", "mouth", "clip"]  # clip: the backend's extras path (region prototypes)
TRACKS = ["video20", "video48_left", "video48_right"]


@pytest.fixture(scope="module")
def cluster(workspace: Path):  # after workspace: the workers inherit its environment (YOLO_CONFIG_DIR)
    if ray.is_initialized():
        ray.shutdown()
    ray.init(num_cpus=2, include_dashboard=False, object_store_memory=100 * 2**20, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("ray")
    os.environ.setdefault("YOLO_CONFIG_DIR", str(root / "ultralytics"))
    write_sample_dataset(root / "data", SampleConfig.short(("video20", "video48"), 2.0))
    (root / "data" / "videos" / "empty.mp4").write_bytes(b"")  # fails in the driver's probe, one line
    train = root / "data" / "annotations" / "VA_Estimation_Challenge" / "Train_Set"
    (train / "empty.txt").write_text("valence,arousal\n" + "0.1,0.2\n" * 10)
    return root


def _options(root: Path, cache: str, **kw) -> RunOptions:
    return RunOptions(
        split="train", features=list(FEATURES), data_root=root / "data", cache_dir=root / cache,
        models_dir=root / "models", profile="tiny", device="cpu", progress=False, batch_size=16, **kw,
    )


@pytest.fixture(scope="module")
def local_run(workspace: Path):
    return run_extraction(_options(workspace, "local"))


def assert_same_stores(a: Path, b: Path, features=FEATURES, tracks=TRACKS) -> None:
    """Every group of every feature: same units, valid and times identical, values within 2e-3."""
    for feature in features:
        sa, sb = FeatureStore.open(store_path(a, feature)), FeatureStore.open(store_path(b, feature))
        assert sa.fingerprint == sb.fingerprint, feature
        assert sa.units() == sb.units() == sorted(tracks), (feature, sa.units(), sb.units())
        for unit in sa.units():
            ga, gb = sa.read(unit), sb.read(unit)
            np.testing.assert_array_equal(ga.valid, gb.valid)
            np.testing.assert_array_equal(ga.times, gb.times)
            np.testing.assert_allclose(
                ga.values.astype(np.float32), gb.values.astype(np.float32), atol=2e-3, err_msg=f"{feature}/{unit}"
            )
            assert ga.attrs["rows"] == gb.attrs["rows"] == len(ga.values)


def test_ray_backend_equals_local(cluster, workspace: Path, local_run) -> None:
    summary = run_extraction(_options(workspace, "ray", backend="ray"))
    assert summary.done == local_run.done == ["video20: faces, mouth, clip", "video48: faces, mouth, clip"]
    assert summary.failed == local_run.failed and len(summary.failed) == 1
    assert "empty.mp4" in summary.failed[0] and "\n" not in summary.failed[0]
    assert summary.frames == local_run.frames > 0 and set(summary.hook_seconds) == set(FEATURES)
    assert summary.write_seconds > 0 and local_run.load_seconds > 0 and set(local_run.hook_seconds) == set(FEATURES)
    assert_same_stores(workspace / "local", workspace / "ray")
    a = FeatureStore.open(store_path(workspace / "local", "clip")).get_extra("region_prototypes")[0]
    b = FeatureStore.open(store_path(workspace / "ray", "clip")).get_extra("region_prototypes")[0]
    np.testing.assert_allclose(a, b, atol=1e-6)
    again = run_extraction(_options(workspace, "ray", backend="ray"))  # resumable like the local backend
    assert not again.done and again.skipped == ["video20", "video48"]


def test_cli_shards_with_either_backend_add_up(cluster, workspace: Path, local_run) -> None:
    from typer.testing import CliRunner

    import pipeline

    args = [
        "extract", "--split", "train", "--features", ",".join(FEATURES), "--data-root", str(workspace / "data"),
        "--cache-dir", str(workspace / "cli"), "--profile", "tiny", "--device", "cpu",
        "--models-dir", str(workspace / "models"), "--batch-size", "16",
    ]
    runner = CliRunner()
    # sorted stems: empty, video20, video48 -> shard 0/2 = empty + video48, shard 1/2 = video20
    first = runner.invoke(pipeline.app, args + ["--backend", "ray", "--shard", "0/2"])
    out = " ".join(first.output.split())
    assert first.exit_code == 1, first.output  # the empty file fails, same status as the local backend
    assert "1 video(s) done, 0 skipped as already complete, 1 failed" in out and "empty.mp4" in out
    assert FeatureStore.open(store_path(workspace / "cli", "faces")).units() == ["video48_left", "video48_right"]
    second = runner.invoke(pipeline.app, args + ["--shard", "1/2"])  # local backend
    assert second.exit_code == 0, second.output
    assert "1 video(s) done" in " ".join(second.output.split())
    assert_same_stores(workspace / "local", workspace / "cli")
    bad = runner.invoke(pipeline.app, args + ["--shard", "2/2"])
    assert bad.exit_code == 2 and "need 0 <= i < n" in bad.output


def test_shard_partition_is_deterministic_disjoint_and_complete(workspace: Path) -> None:
    from cache.manifest import load_manifest

    videos = iter_videos(load_manifest(workspace / "data", splits=("train",)), "train")
    assert [v[0] for v in videos] == ["empty", "video20", "video48"]
    fake = [(f"v{k:02d}", Path(f"v{k:02d}.mp4"), [f"v{k:02d}"]) for k in (5, 1, 9, 3, 7, 2, 8)]
    for n in (1, 2, 3, 7, 9):
        parts = [[v[0] for v in shard_videos(fake, (i, n))] for i in range(n)]
        assert sorted(sum(parts, [])) == sorted(v[0] for v in fake)  # together complete, disjoint
        assert parts == [[v[0] for v in shard_videos(list(reversed(fake)), (i, n))] for i in range(n)]  # order-free
    assert parse_shard("1/4") == (1, 4) and parse_shard(None) is None
    for text in ("4/4", "-1/2", "1", "a/b", "0/0"):
        with pytest.raises(ExtractionError, match="shard"):
            parse_shard(text)


def test_task_resources_follow_profile_and_device() -> None:
    cpu = RunOptions(profile="full", device="cpu", cpus_per_task=2)
    assert task_resources(cpu, cluster_gpus=4) == {"num_cpus": 2.0, "num_gpus": 0.0}
    assert task_resources(RunOptions(profile="full", device="cuda"), 1)["num_gpus"] == 0.5
    assert task_resources(RunOptions(profile="tiny", device="auto"), 2)["num_gpus"] == 0.25
    assert task_resources(RunOptions(profile="full", device="auto"), 0)["num_gpus"] == 0.0
    assert task_resources(RunOptions(profile="full", device="cuda", gpus_per_task=1), 1)["num_gpus"] == 1.0
    with pytest.raises(ExtractionError, match="cluster has 0"):
        task_resources(RunOptions(profile="full", device="cuda"), 0)
    with pytest.raises(ExtractionError, match="would see no GPU"):
        task_resources(RunOptions(device="cuda", gpus_per_task=0), 1)
    with pytest.raises(ExtractionError, match="cpus-per-task"):
        task_resources(RunOptions(device="cpu", cpus_per_task=0), 0)


def test_worker_reports_a_failing_video_in_one_line(workspace: Path, local_run) -> None:
    """The task body, run in-process: paths travel as absolute strings; an error is a line, not a raise."""
    data = _portable(_options(workspace, "local"))
    assert all(isinstance(data[k], str) and os.path.isabs(data[k]) for k in ("data_root", "cache_dir", "models_dir"))
    assert data["backend"] == "local" and data["on_mismatch"] == "refuse"
    gone = workspace / "gone.mp4"
    result = extract_video(data, "gone", str(gone), ["gone"], 0, ["faces"])
    assert result["status"] == "failed" and "gone.mp4" in result["line"] and "\n" not in result["line"]
    assert result["frames"] == 0
