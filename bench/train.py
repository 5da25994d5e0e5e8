"""Training-side benchmark on a cache of Aff-Wild2's size filled with random values.

    python bench/train.py --scale 0.05        # 5% of Aff-Wild2: ~30 tracks, ~150k frames
    python bench/train.py                     # full size: 594 tracks, 2,993,081 frames (~13 GB on disk)

Generates (once, reused while the size matches) label files, tiny videos (for the container fps) and
two stores: `face` (512-d per frame, per track) and `audio_wavlm` (1024-d at 50 Hz, per video). Then, in
a fresh process, opens the train split and trains a small GRU head for a few hundred steps, and prints:
store size on disk, time to open the dataset, peak RSS, step time and the share of it spent waiting
for data (target <= 10%).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# Aff-Wild2 VA: tracks and labelled frames per split (docs/DESIGN.md)
SPLITS = {"train": (356, 1_682_057), "val": (76, 383_814), "test": (162, 927_210)}
FPS_CHOICES = (30.0, 30.0, 30.0, 25.0, 15.0)


def plan_tracks(scale: float, seed: int = 0):
    import numpy as np

    from train.synthetic import SynthTrack

    rng = np.random.default_rng(seed)
    tracks = []
    for split, (n_tracks, n_frames) in SPLITS.items():
        n = max(2, round(n_tracks * scale))
        total = max(n * 500, round(n_frames * scale))
        share = rng.lognormal(0.0, 0.6, size=n)
        frames = np.maximum(450, np.round(share / share.sum() * total)).astype(int)
        frames[-1] += total - frames.sum()
        frames = np.maximum(frames, 450)
        for i, f in enumerate(frames):
            tracks.append(SynthTrack(f"{split}{i:03d}", split, FPS_CHOICES[i % len(FPS_CHOICES)], int(f)))
    return tracks


def du(path: Path) -> int:
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file())


def generate(out: Path, scale: float) -> dict:
    from train.synthetic import SynthConfig, make_synthetic

    tracks = plan_tracks(scale)
    stamp = out / "plan.json"
    plan = {"scale": scale, "tracks": len(tracks), "frames": sum(t.n_frames for t in tracks)}
    if stamp.is_file() and json.loads(stamp.read_text()).get("plan") == plan:
        return json.loads(stamp.read_text())
    shutil.rmtree(out, ignore_errors=True)
    start = time.perf_counter()
    cfg = SynthConfig(
        tracks=tracks, visual="face", visual_dim=512, audio="audio_wavlm", audio_dim=1024, signal=False,
        region_prototypes=False, seed=0,
    )
    make_synthetic(out / "data", out / "cache", cfg)
    info = {
        "plan": plan,
        "generate_s": round(time.perf_counter() - start, 1),
        "store_bytes": {p.stem: du(p) for p in sorted((out / "cache").glob("*.zarr"))},
    }
    stamp.write_text(json.dumps(info, indent=2))
    return info


def rss_mb() -> float:
    import psutil

    return psutil.Process().memory_info().rss / 2**20


def epochs_order(ds, n_windows: int, first_epoch: int) -> list[int]:
    """Window ids of consecutive training epochs (as the loop draws them), cut to n_windows."""
    import numpy as np

    order: list[int] = []
    epoch = first_epoch
    while len(order) < n_windows:
        order += ds.epoch_order(np.random.default_rng([42, epoch]), 8)
        epoch += 2
    return order[:n_windows]


def train_phase(out: Path, steps: int, batch_size: int, window: int, stride: int, hidden: int, cache_mb: float) -> dict:
    """Runs in its own process so its peak RSS is the training's alone."""
    import numpy as np
    import torch

    torch.set_num_threads(max(1, (os.cpu_count() or 2) - 1))
    from cache.manifest import load_manifest
    from train.dataset import TrackDataset, open_features
    from train.heads import build_head
    from train.losses import VALossConfig, va_loss
    from cache.prefetch import Prefetcher
    from train.tensors import to_tensors

    base_rss = rss_mb()
    t0 = time.perf_counter()
    manifest = load_manifest(out / "data", splits=("train",))
    sources = open_features(out / "cache", ["face", "audio_wavlm"])

    def open_dataset() -> TrackDataset:
        return TrackDataset(manifest.split("train"), sources, window=window, stride=stride, cache_mb=cache_mb)

    ds = open_dataset()
    open_s = time.perf_counter() - t0

    # 1. the data pipeline alone: how fast batches come (the bound for a fast GPU step)
    order = epochs_order(ds, steps * batch_size, first_epoch=0)
    t1 = time.perf_counter()
    n_batches = 0
    with Prefetcher(ds.batches(order, batch_size), depth=4) as loader:
        for _ in loader:
            n_batches += 1
    data_s = time.perf_counter() - t1
    data_rss = rss_mb()
    data_alignments = ds.stats.aligned_tracks
    ds.close()

    # 2. training a small head on a fresh dataset (cold LRU), another epoch order
    ds = open_dataset()
    model = build_head("gru", ds.feature_dims, {"hidden": hidden, "gru_hidden": hidden})
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.01)
    order = epochs_order(ds, steps * batch_size, first_epoch=1)
    loader = Prefetcher(ds.batches(order, batch_size), depth=4)
    step_times = []
    peak = rss_mb()
    t_start = time.perf_counter()
    warm_wait = 0.0
    for i, batch in enumerate(loader):
        s = time.perf_counter()
        tb = to_tensors(batch, torch.device("cpu"))
        out_ = model(tb.features, tb.masks, tb.pad)
        loss, _ = va_loss(out_, tb.labels, tb.label_mask, VALossConfig(region_lambda=0))
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        step_times.append(time.perf_counter() - s)
        if i == 0:
            warm_wait = loader.wait_s  # the first batch waits for the first alignment: reported apart
        if i % 10 == 0:
            peak = max(peak, rss_mb())
    total = time.perf_counter() - t_start
    loader.close()
    ds.close()
    wait = loader.wait_s
    return {
        "open_dataset_s": round(open_s, 2),
        "train_tracks": len(ds.tracks),
        "train_frames": int(ds.n_frames.sum()),
        "windows": len(ds),
        "data_only_batches": n_batches,
        "data_only_ms_per_batch": round(1000 * data_s / max(n_batches, 1), 1),
        "data_only_frames_per_s": round(n_batches * batch_size * window / data_s),
        "data_only_alignments": data_alignments,
        "rss_after_data_pass_mb": round(data_rss),
        "steps": len(step_times),
        "step_compute_ms": round(1000 * float(np.mean(step_times)), 1),
        "wall_s": round(total, 1),
        "data_wait_share": round(wait / total, 4),
        "data_wait_share_after_first_batch": round((wait - warm_wait) / max(total - warm_wait, 1e-9), 4),
        "aligned_tracks": ds.stats.aligned_tracks,
        "rss_after_imports_mb": round(base_rss),
        "peak_rss_mb": round(max(peak, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", type=float, default=1.0, help="fraction of Aff-Wild2's size (default 1 = full)")
    parser.add_argument("--out", type=Path, default=ROOT / "artifacts" / "bench" / "train")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--window", type=int, default=400)
    parser.add_argument("--stride", type=int, default=150)
    parser.add_argument("--hidden", type=int, default=32)
    parser.add_argument("--cache-mb", type=float, default=1024.0)
    parser.add_argument("--phase", choices=("all", "train"), default="all", help=argparse.SUPPRESS)
    args = parser.parse_args()
    out = args.out / f"scale{args.scale:g}"
    if args.phase == "train":
        print(json.dumps(train_phase(out, args.steps, args.batch_size, args.window, args.stride, args.hidden, args.cache_mb)))
        return
    info = generate(out, args.scale)
    cmd = [sys.executable, __file__, "--phase", "train", "--scale", str(args.scale), "--out", str(args.out),
           "--steps", str(args.steps), "--batch-size", str(args.batch_size), "--window", str(args.window),
           "--stride", str(args.stride), "--hidden", str(args.hidden), "--cache-mb", str(args.cache_mb)]
    res = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    if res.returncode != 0:
        sys.exit(res.stderr)
    figures = json.loads(res.stdout.strip().splitlines()[-1])
    total_bytes = sum(info["store_bytes"].values())
    full_frames = sum(f for _, f in SPLITS.values())
    print(f"cache: {info['plan']['tracks']} tracks, {info['plan']['frames']:,} frames (scale {args.scale:g}); "
          f"generated in {info['generate_s']} s")
    for name, size in info["store_bytes"].items():
        print(f"  {name}: {size / 2**20:,.0f} MiB on disk")
    print(f"  total {total_bytes / 2**30:.2f} GiB; at full size about "
          f"{total_bytes / info['plan']['frames'] * full_frames / 2**30:.1f} GiB")
    print(f"open train split: {figures['open_dataset_s']} s ({figures['train_tracks']} tracks, "
          f"{figures['train_frames']:,} frames, {figures['windows']} windows of {args.window}/{args.stride})")
    print(f"data pipeline alone: {figures['data_only_ms_per_batch']} ms per batch "
          f"({figures['data_only_frames_per_s']:,} frames/s, {figures['data_only_batches']} batches, "
          f"{figures['data_only_alignments']} track alignments); RSS after it {figures['rss_after_data_pass_mb']} MiB")
    print(f"{figures['steps']} steps of a gru head (hidden {args.hidden}), batch {args.batch_size}: "
          f"{figures['step_compute_ms']} ms compute per step, {figures['wall_s']} s wall")
    print(f"data wait: {100 * figures['data_wait_share']:.1f}% of training time "
          f"({100 * figures['data_wait_share_after_first_batch']:.1f}% after the first batch); target <= 10%")
    print(f"RSS: {figures['rss_after_imports_mb']:.0f} MiB after imports, peak {figures['peak_rss_mb']:.0f} MiB "
          f"(aligned-track LRU budget {args.cache_mb:.0f} MiB; {figures['aligned_tracks']} track alignments)")
    print(json.dumps({"scale": args.scale, **info, **figures}))


if __name__ == "__main__":
    main()
