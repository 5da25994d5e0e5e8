"""Scaling benchmark: local backend vs Ray, and concurrent writers on one feature store.

    python bench/scale.py [--seconds 4] [--features faces,mouth] [--workers 2] [--mib 32]

- extraction frames/s: the train split of the sample dataset (4 videos, tiny profile) with the local
  backend (one process, torch on `--workers` threads), then with Ray (`--workers` CPUs, one task per
  video, 1 CPU each) twice on fresh caches: cold (worker processes import torch and load models) and
  warm (workers reused). Ray's own start is not counted. Ratio = Ray warm / local.
- store write throughput: 1, 2 and 4 writer processes, each writing `--mib` MiB of float16 rows
  (its own groups, 4 groups each, complete-last) into one store at the same time; MiB/s over all writers.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("YOLO_OFFLINE", "1")
VIDEOS = ("video20", "video48", "5-60-1920x1080", "118-30-640x480")


def make_dataset(out: Path, seconds: float) -> None:
    from cache.sample_data import SAMPLE_VIDEOS, SampleConfig, write_sample_dataset

    videos = tuple(v for v in SAMPLE_VIDEOS if v.stem in VIDEOS)
    write_sample_dataset(out, SampleConfig(seed=0, min_seconds=seconds, max_seconds=seconds, videos=videos, workers=1))


def extraction(work: Path, features: list[str], workers: int) -> dict[str, float]:
    import ray
    import torch

    from extract.runner import RunOptions
    from extract.backends import run_extraction

    def options(cache: str, **kw):
        return RunOptions(split="train", features=features, data_root=work / "data", cache_dir=work / cache,
                          models_dir=work / "models", profile="tiny", device="cpu", progress=False, **kw)

    run_extraction(options("warmup", only_videos=["video20"]))  # builds the tiny models, warms imports
    torch.set_num_threads(workers)
    local = run_extraction(options("local"))
    assert local.ok, local.failed
    ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False, object_store_memory=200 * 2**20)
    try:
        cold = run_extraction(options("ray_cold", backend="ray"))
        warm = run_extraction(options("ray_warm", backend="ray"))
    finally:
        ray.shutdown()
    assert cold.ok and warm.ok, (cold.failed, warm.failed)
    fps = {name: s.frames / s.seconds for name, s in (("local", local), ("ray_cold", cold), ("ray_warm", warm))}
    return {**fps, "frames": float(local.frames)}


def _writer(path: str, index: int, mib: float, start: mp.Event) -> None:
    import numpy as np

    from cache.store import FeatureMeta, FeatureStore

    store = FeatureStore.create_or_open(Path(path), FeatureMeta("bench", config={"dim": 256}))
    rows = int(mib * 2**20 / (256 * 2) / 4)  # 4 groups of float16 (rows, 256)
    rng = np.random.default_rng(index)
    data = rng.normal(size=(rows, 256)).astype(np.float16)
    times = np.stack([np.arange(rows) / 30, (np.arange(rows) + 1) / 30], 1)
    start.wait()
    for g in range(4):
        store.write(f"w{index}_g{g}", data, times, dtype="float16")


def write_throughput(work: Path, writers: int, mib: float) -> float:
    path = work / f"writers{writers}.zarr"
    shutil.rmtree(path, ignore_errors=True)
    ctx = mp.get_context("spawn")
    start = ctx.Event()
    procs = [ctx.Process(target=_writer, args=(str(path), i, mib, start)) for i in range(writers)]
    for p in procs:
        p.start()
    time.sleep(3.0)  # let every process import and prepare its data
    t0 = time.perf_counter()
    start.set()
    for p in procs:
        p.join()
        assert p.exitcode == 0, p.exitcode
    elapsed = time.perf_counter() - t0
    from cache.store import FeatureStore

    assert len(FeatureStore.open(path).units()) == 4 * writers  # every group complete
    return writers * mib / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--features", default="faces,mouth")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--mib", type=float, default=32.0, help="MiB each writer writes")
    parser.add_argument("--skip-extract", action="store_true")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="affcache-scale-"))
    os.environ.setdefault("YOLO_CONFIG_DIR", str(work / "ultralytics"))
    try:
        print(f"machine: {os.cpu_count()} CPU(s)")
        if not args.skip_extract:
            make_dataset(work / "data", args.seconds)
            r = extraction(work, [f for f in args.features.split(",") if f], args.workers)
            print(f"extraction ({args.features}, tiny, {int(r['frames'])} frames, {len(VIDEOS)} videos):")
            print(f"  local backend ({args.workers} torch threads): {r['local']:7.1f} frames/s")
            print(f"  ray, {args.workers} workers, cold:            {r['ray_cold']:7.1f} frames/s")
            print(f"  ray, {args.workers} workers, warm:            {r['ray_warm']:7.1f} frames/s"
                  f"   (ratio ray warm / local: {r['ray_warm'] / r['local']:.2f})")
        print(f"store writes ({args.mib:g} MiB float16 per writer, 4 groups each, one store):")
        base = None
        for n in (1, 2, 4):
            mibs = write_throughput(work, n, args.mib)
            base = base or mibs
            print(f"  {n} writer(s): {mibs:7.1f} MiB/s   ({mibs / base:.2f}x one writer)")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
