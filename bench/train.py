"""Training-side benchmark on a cache of Aff-Wild2's size filled with random values.

    python bench/train.py --scale 0.05        # 5% of Aff-Wild2: ~30 tracks, ~150k frames
    python bench/train.py                     # full size: 594 tracks, 2,993,081 frames (~13 GB on disk)

Generates (once, reused while the size matches) label files, tiny videos (for the container fps) and
two stores: `face` (512-d per frame, per track) and `audio_wavlm` (1024-d at 50 Hz, per video). Then,
for each data path in its own fresh process — `lazy` (aligned in RAM every epoch, LRU), `views`
(aligned once onto label frames and kept on disk, train/data/views.py; the build is timed), both
standardized with the train split's statistics as training does by default, and `views-raw` (views,
`data.normalize false`) — opens the train split, times the data pipeline alone: batches through the
prefetcher and `to_tensors` (where the standardization is applied, one op per feature on the batch), the
collate alone and `to_tensors` alone per batch (and, with --full-pass, one whole epoch), trains a small
GRU head for a few hundred steps, and prints: store and view sizes, time to open, frames/s of each path
and the ratios (target views >= 10x lazy, standardized views <= 3 ms per batch), the share of a GRU step
spent waiting for data (target <= 5%) and peak RSS (target <= 4 GiB).
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

    from train.data.synthetic import SynthTrack

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
    from train.data.synthetic import SynthConfig, make_synthetic

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


def data_phase(out: Path, path: str, steps: int, batch_size: int, window: int, stride: int, hidden: int,
               cache_mb: float, full_pass: bool, device_name: str = "cpu") -> dict:
    """One data path (`lazy` or `views`) in its own process, so its peak RSS is its own."""
    import numpy as np
    import torch

    torch.set_num_threads(max(1, (os.cpu_count() or 2) - 1))
    from cache.manifest import load_manifest
    from cache.prefetch import Prefetcher
    from train.data.dataset import TrackDataset
    from train.data.sources import open_features
    from train.heads import build_head
    from train.fit.losses import VALossConfig, va_loss
    from train.data.tensors import to_tensors
    from train.data.standardize import fit_standardizer
    from train.data.views import views_size

    views_dir = out / "views" if path.startswith("views") else None
    standardized = path != "views-raw"
    base_rss = rss_mb()
    t0 = time.perf_counter()
    manifest = load_manifest(out / "data", splits=("train",))
    sources = open_features(out / "cache", ["face", "audio_wavlm"])

    def open_dataset() -> TrackDataset:
        return TrackDataset(manifest.split("train"), sources, window=window, stride=stride, cache_mb=cache_mb,
                            views_dir=views_dir)

    ds = open_dataset()
    open_s = time.perf_counter() - t0
    figures: dict = {"path": path, "open_dataset_s": round(open_s, 2), "standardized": standardized}
    standardizer = None
    if standardized:  # as a run fits them (kept in the store: a later run reads them back)
        t = time.perf_counter()
        standardizer = fit_standardizer(sources, ds.tracks)
        figures["statistics_s"] = round(time.perf_counter() - t, 2)
        ds.standardizer = standardizer
    if views_dir is not None:  # built once (reused by every later run while the stores stay the same)
        t = time.perf_counter()
        built = ds.build_views()
        figures.update(view_build_s=round(time.perf_counter() - t, 1), view_tracks_aligned=built,
                       view_bytes=views_size(views_dir))
        ds.close()
        t0 = time.perf_counter()
        ds = open_dataset()
        ds.standardizer = standardizer
        figures["open_dataset_s"] = round(time.perf_counter() - t0, 2)  # as a run opens it: views on disk

    # 1. the data pipeline alone: how fast batches come (the bound for a fast GPU step); the standardization
    # is the device's (to_tensors, in the step), timed apart below
    device = torch.device(device_name)
    order = epochs_order(ds, steps * batch_size, first_epoch=0)
    t1 = time.perf_counter()
    n_batches = 0
    with Prefetcher(ds.batches(order, batch_size), depth=4) as loader:
        for _ in loader:
            n_batches += 1
    data_s = time.perf_counter() - t1
    # the collate alone and to_tensors alone (where a standardized batch is standardized), one thread, on
    # batches whose tracks are ready (views written, or in the LRU: the lazy path's alignment is in the pass
    # above); with views, also the NumPy standardization per window that collate did before (issue 25)
    ids = [order[i : i + batch_size] for i in range(0, min(len(order), 100 * batch_size), batch_size)]
    collate_s = tensors_s = numpy_s = 0.0
    for chunk in ids:
        t = time.perf_counter()
        batch = ds.collate(chunk)
        collate_s += time.perf_counter() - t
        t = time.perf_counter()
        to_tensors(batch, device)
        if device.type == "cuda":
            torch.cuda.synchronize()
        tensors_s += time.perf_counter() - t
        if standardizer is not None and views_dir is not None:
            t = time.perf_counter()
            numpy_per_window(ds, chunk, standardizer)
            numpy_s += time.perf_counter() - t
    figures.update(
        collate_ms_per_batch=round(1000 * collate_s / len(ids), 2),
        to_tensors_ms_per_batch=round(1000 * tensors_s / len(ids), 2),
    )
    if numpy_s:
        figures["numpy_per_window_ms_per_batch"] = round(1000 * numpy_s / len(ids), 2)
    figures.update(
        train_tracks=len(ds.tracks), train_frames=int(ds.n_frames.sum()), windows=len(ds),
        data_only_batches=n_batches, data_only_ms_per_batch=round(1000 * data_s / max(n_batches, 1), 2),
        data_only_frames_per_s=round(n_batches * batch_size * window / data_s),
        data_only_alignments=ds.stats.aligned_tracks, rss_after_data_pass_mb=round(rss_mb()),
    )
    if full_pass:  # one whole epoch of the train split, data path alone
        order = ds.epoch_order(np.random.default_rng([42, 7]), 8)
        t1 = time.perf_counter()
        with Prefetcher(ds.batches(order, batch_size), depth=4) as loader:
            for batch in loader:
                to_tensors(batch, device)
        figures.update(full_pass_windows=len(order), full_pass_s=round(time.perf_counter() - t1, 1))
    ds.close()

    # 2. training a small head on a fresh dataset, another epoch order
    ds = open_dataset()
    ds.standardizer = standardizer
    model = build_head("gru", ds.feature_dims, {"hidden": hidden, "gru_hidden": hidden}).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.01)
    order = epochs_order(ds, steps * batch_size, first_epoch=1)
    loader = Prefetcher(ds.batches(order, batch_size), depth=4)
    step_times = []
    peak = rss_mb()
    t_start = time.perf_counter()
    warm_wait = 0.0
    for i, batch in enumerate(loader):
        s = time.perf_counter()
        tb = to_tensors(batch, device)
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            out_ = model(tb.features, tb.masks, tb.pad)
            loss, _ = va_loss(out_, tb.labels, tb.label_mask, VALossConfig(region_lambda=0))
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        step_times.append(time.perf_counter() - s)
        if i == 0:
            warm_wait = loader.wait_s  # the first batch waits for the first alignment: reported apart
        if i % 10 == 0:
            peak = max(peak, rss_mb())
    total = time.perf_counter() - t_start
    loader.close()
    ds.close()
    wait = loader.wait_s
    figures.update(
        steps=len(step_times),
        step_compute_ms=round(1000 * float(np.mean(step_times)), 1),
        wall_s=round(total, 1),
        data_wait_share=round(wait / total, 4),
        data_wait_share_after_first_batch=round((wait - warm_wait) / max(total - warm_wait, 1e-9), 4),
        aligned_tracks=ds.stats.aligned_tracks,
        rss_after_imports_mb=round(base_rss),
        peak_rss_mb=round(max(peak, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)),
    )
    return figures


def numpy_per_window(ds, window_ids, standardizer) -> None:
    """The views' collate with standardization as it was before it moved to the device: each window's slice
    read, standardized in float32 by NumPy and cast back to float16, per feature."""
    import numpy as np

    for w in window_ids:
        ti, start = ds.windows[w]
        n = min(ds.window, int(ds.n_positions[ti]) - start)
        for name in ds.sources:
            view = ds._view_files[name][ti]
            if view is None:
                continue
            mask = ds._view_mask(name, ti, view)[start : start + n]
            out = ds.views[name].read(view, start, n)
            stats = standardizer.stats.get(name)
            if stats is not None:
                out = (out.astype(np.float32) - stats.mean.astype(np.float32)) / stats.std.astype(np.float32)
                out[~mask] = 0
            out = out.astype(np.float16)
            np.isfinite(out).all(axis=1)


def run_phase(args, path: str) -> dict:
    cmd = [sys.executable, __file__, "--phase", path, "--scale", str(args.scale), "--out", str(args.out),
           "--steps", str(args.steps), "--batch-size", str(args.batch_size), "--window", str(args.window),
           "--stride", str(args.stride), "--hidden", str(args.hidden), "--cache-mb", str(args.cache_mb),
           "--device", args.device]
    if args.full_pass:
        cmd.append("--full-pass")
    res = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    if res.returncode != 0:
        sys.exit(res.stderr)
    return json.loads(res.stdout.strip().splitlines()[-1])


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
    parser.add_argument("--full-pass", action="store_true", help="also time one whole epoch of the train split (data alone)")
    parser.add_argument("--paths", default="lazy,views,views-raw",
                        help="data paths to measure (lazy, views: standardized as training does; views-raw)")
    parser.add_argument("--device", default="cpu", help="where the GRU steps run (cpu | cuda)")
    parser.add_argument("--phase", choices=("all", "lazy", "views", "views-raw"), default="all", help=argparse.SUPPRESS)
    args = parser.parse_args()
    out = args.out / f"scale{args.scale:g}"
    if args.phase != "all":
        print(json.dumps(data_phase(out, args.phase, args.steps, args.batch_size, args.window, args.stride,
                                    args.hidden, args.cache_mb, args.full_pass, args.device)))
        return
    info = generate(out, args.scale)
    shutil.rmtree(out / "views", ignore_errors=True)  # the view build is part of what is measured
    paths = [p.strip() for p in args.paths.split(",") if p.strip()]
    results = {p: run_phase(args, p) for p in paths}
    total_bytes = sum(info["store_bytes"].values())
    full_frames = sum(f for _, f in SPLITS.values())
    print(f"cache: {info['plan']['tracks']} tracks, {info['plan']['frames']:,} frames (scale {args.scale:g}); "
          f"generated in {info['generate_s']} s")
    for name, size in info["store_bytes"].items():
        print(f"  {name}: {size / 2**20:,.0f} MiB on disk")
    print(f"  total {total_bytes / 2**30:.2f} GiB; at full size about "
          f"{total_bytes / info['plan']['frames'] * full_frames / 2**30:.1f} GiB")
    any_ = next(iter(results.values()))
    print(f"train split: {any_['train_tracks']} tracks, {any_['train_frames']:,} frames, {any_['windows']} windows "
          f"of {args.window}/{args.stride}")
    if "views" in results:
        v = results["views"]
        print(f"aligned views: built in {v['view_build_s']} s ({v['view_tracks_aligned']} tracks), "
              f"{v['view_bytes'] / 2**30:.2f} GiB on disk")
    for path, f in results.items():
        print(f"[{path}] {'standardized' if f['standardized'] else 'raw'}: collate {f['collate_ms_per_batch']} ms + "
              f"to_tensors {f['to_tensors_ms_per_batch']} ms per batch ({args.device})"
              + (f"; statistics {f['statistics_s']} s" if "statistics_s" in f else "")
              + (f"; NumPy per window as before: {f['numpy_per_window_ms_per_batch']} ms"
                 if "numpy_per_window_ms_per_batch" in f else ""))
        print(f"[{path}] open {f['open_dataset_s']} s; data alone {f['data_only_ms_per_batch']} ms per batch "
              f"({f['data_only_frames_per_s']:,} frames/s, {f['data_only_alignments']} track alignments)"
              + (f"; full pass {f['full_pass_windows']} windows in {f['full_pass_s']} s" if "full_pass_s" in f else ""))
        print(f"[{path}] {f['steps']} gru steps (hidden {args.hidden}, batch {args.batch_size}): "
              f"{f['step_compute_ms']} ms compute per step; data wait {100 * f['data_wait_share']:.1f}% "
              f"({100 * f['data_wait_share_after_first_batch']:.1f}% after the first batch); "
              f"peak RSS {f['peak_rss_mb']} MiB")
    if {"lazy", "views"} <= results.keys():
        ratio = results["views"]["data_only_frames_per_s"] / max(results["lazy"]["data_only_frames_per_s"], 1)
        v = results["views"]
        print(f"views / lazy frames per second: {ratio:.1f}x (target >= 10x); views data wait "
              f"{100 * v['data_wait_share_after_first_batch']:.1f}% of a gru step (target <= 5%); "
              f"peak RSS {v['peak_rss_mb']} MiB (target <= 4096); open {v['open_dataset_s']} s (target <= 30)")
        print(f"standardized views: collate {v['collate_ms_per_batch']} ms per batch (target <= 3; the standardization "
              f"is in to_tensors, on the device: {v['to_tensors_ms_per_batch']} ms here on {args.device}); before, "
              f"NumPy per window {v.get('numpy_per_window_ms_per_batch', '?')} ms more")
    if {"views", "views-raw"} <= results.keys():
        v, r = results["views"], results["views-raw"]
        print(f"standardized / raw views: {v['data_only_frames_per_s'] / max(r['data_only_frames_per_s'], 1):.2f}x "
              f"frames per second; collate {v['collate_ms_per_batch']} vs {r['collate_ms_per_batch']} ms, to_tensors "
              f"{v['to_tensors_ms_per_batch']} vs {r['to_tensors_ms_per_batch']} ms")
    print(json.dumps({"scale": args.scale, **info, "paths": results}))


if __name__ == "__main__":
    main()
