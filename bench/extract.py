"""Stage 1 benchmark: frames/s per extractor, pipeline efficiency, peak RSS against video length.

    python bench/extract.py [--profile tiny] [--seconds 3] [--long-factor 10] [--device cpu]
    python bench/extract.py --audio [--profile tiny] [--seconds 10]   (ast, wavlm, audio_reliability, qwen3vl)

- frames/s per extractor: frames of the run / seconds inside that extractor's hooks (its model work on the
  runner's batches: detection, face mesh, CLIP forward with preprocessing).
- efficiency: sum of those hook seconds / wall time of the run with the models warm: the run's model
  loading (and extras), once per run whatever the videos' length, is timed apart (`RunSummary.load_seconds`)
  and left out; the rest is decoding that was not hidden behind the models, store writes (timed apart)
  and crops bookkeeping. Printed with the figure that counts the loading too. Target >= 0.8.
- host vs model per feature: of a feature's hook time, the time inside its model forwards (extractors
  that time them: clip, ast) and the rest (preprocessing, crops, bookkeeping), with the model share.
- torch threads: `--threads` (default 1, the runner's default `torch_threads`).
- peak RSS: a fresh process extracts a short video and one `--long-factor` times longer. Target <= 1.5x.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
FEATURES = ["faces", "mouth", "landmarks", "clip"]


def make_dataset(out: Path, seconds: float) -> None:
    from cache.sample_data import SAMPLE_VIDEOS, SampleConfig, write_sample_dataset

    videos = tuple(v for v in SAMPLE_VIDEOS if v.stem in ("video20",))
    write_sample_dataset(out, SampleConfig(seed=0, min_seconds=seconds, max_seconds=seconds, videos=videos))


def child(data: str, cache: str, models: str, profile: str, device: str, threads: int) -> None:
    """Run one extraction and print a JSON line with the summary and peak RSS."""
    import resource

    import torch

    torch.set_num_threads(threads)
    from extract.runner import RunOptions
    from extract.backends import run_extraction

    opts = RunOptions(split="train", features=FEATURES, data_root=Path(data), cache_dir=Path(cache),
                      models_dir=Path(models), profile=profile, device=device, progress=False, force=True,
                      torch_threads=threads)
    summary = run_extraction(opts)  # first run: loads models (warm-up)
    t0 = time.perf_counter()
    summary = run_extraction(opts)
    wall = time.perf_counter() - t0
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"frames": summary.frames, "wall": wall, "hooks": summary.hook_seconds,
                      "model": summary.model_seconds,
                      "decode_wait": summary.decode_wait, "load": summary.load_seconds, "write": summary.write_seconds,
                      "rss_mb": rss, "failed": summary.failed}))


def run_child(data: Path, cache: Path, models: Path, args: argparse.Namespace) -> dict:
    cmd = [sys.executable, __file__, "--child", str(data), str(cache), str(models), args.profile, args.device, str(args.threads)]
    env = {**os.environ, "YOLO_OFFLINE": "1", "HF_HUB_OFFLINE": "1"}
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


# ---- audio and segment extractors (ast, wavlm, audio_reliability, qwen3vl) ---------------------------
AUDIO_FEATURES = ["ast", "wavlm", "audio_reliability", "qwen3vl"]


def bench_audio(args: argparse.Namespace) -> None:
    """ast / wavlm: seconds of audio per second of hook time; qwen3vl: segments per second; efficiency.

    One single-face video with audio of max(--seconds, 10) s; a warm-up run loads the models, the timed
    run redoes everything (force). faces and mouth run too (qwen3vl and audio_reliability need them).
    """
    import torch

    torch.set_num_threads(args.threads)
    from cache.store import FeatureStore, store_path
    from extract.runner import RunOptions
    from extract.backends import run_extraction

    seconds = max(args.seconds, 10.0)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        from cache.sample_data import SAMPLE_VIDEOS, SampleConfig, write_sample_dataset

        videos = tuple(v for v in SAMPLE_VIDEOS if v.stem == "5-60-1920x1080")
        write_sample_dataset(tmp / "data", SampleConfig(seed=0, min_seconds=seconds, max_seconds=seconds, videos=videos))
        opts = RunOptions(split="train", features=AUDIO_FEATURES, data_root=tmp / "data", cache_dir=tmp / "cache",
                          models_dir=ROOT / "artifacts" / "models", profile=args.profile, device=args.device,
                          progress=False, force=True, torch_threads=args.threads)
        run_extraction(opts)  # warm-up: builds / loads the models
        t0 = time.perf_counter()
        summary = run_extraction(opts)
        wall = time.perf_counter() - t0
        audio_s = sum(float(FeatureStore.open(store_path(opts.cache_dir, "ast")).unit_attrs(u)["audio_seconds"])
                      for u in FeatureStore.open(store_path(opts.cache_dir, "ast")).units())
        qwen = FeatureStore.open(store_path(opts.cache_dir, "qwen3vl"))
        segments = sum(int(qwen.unit_attrs(u)["rows"]) for u in qwen.units())
    hooks = summary.hook_seconds
    print(f"profile {args.profile}, device {args.device}, torch threads {args.threads}: {seconds:g} s video, "
          f"{audio_s:.1f} s audio, {segments} qwen3vl segments, {summary.frames} frames, wall {wall:.2f} s")
    for name in ("ast", "wavlm"):
        if hooks.get(name):
            print(f"    {name:18s} {audio_s / hooks[name]:8.1f} s of audio per s  ({hooks[name]:.2f} s)")
    if hooks.get("qwen3vl"):
        print(f"    {'qwen3vl':18s} {segments / hooks['qwen3vl']:8.2f} segments per s ({hooks['qwen3vl']:.2f} s)")
    for name in ("faces", "mouth", "audio_reliability"):
        if hooks.get(name):
            print(f"    {name:18s} {summary.frames / hooks[name]:8.1f} frames/s  ({hooks[name]:.2f} s)")
    print_host_model(hooks, summary.model_seconds)
    print_efficiency(hooks, wall, summary.decode_wait, summary.load_seconds, summary.write_seconds)


def print_host_model(hooks: dict[str, float], model: dict[str, float]) -> None:
    """Host time vs model time of each feature whose extractor times its model forwards."""
    for name, sec in model.items():
        host = hooks.get(name, sec) - sec
        print(f"    {name:10s} host {host:7.2f} s  model {sec:7.2f} s  model share {sec / max(sec + host, 1e-9):.2f}")


def print_efficiency(hooks: dict[str, float], wall: float, decode_wait: float, load: float, write: float) -> None:
    """Efficiency with the models warm (their loading, once per run, left out of the wall time) and where the
    rest of the wall time went."""
    busy = sum(hooks.values())
    rest = wall - busy - decode_wait - load - write
    print(f"    efficiency (model hook time / wall, models warm) = {busy / max(wall - load, 1e-9):.2f}; "
          f"with the run's model loading {busy / wall:.2f}")
    print(f"    wall {wall:.2f} s = hooks {busy:.2f} + decode wait {decode_wait:.2f} + model loading {load:.2f} (once "
          f"per run) + store writes {write:.2f} + other {rest:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", default="tiny")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--long-factor", type=float, default=10.0)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (RunOptions.torch_threads)")
    parser.add_argument("--child", nargs=6)
    parser.add_argument("--audio", action="store_true", help="bench ast, wavlm, audio_reliability, qwen3vl instead")
    args = parser.parse_args()
    if args.audio:
        bench_audio(args)
        return
    if args.child:
        data, cache, models, profile, device, threads = args.child
        child(data, cache, models, profile, device, int(threads))
        return
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        make_dataset(tmp / "short", args.seconds)
        make_dataset(tmp / "long", args.seconds * args.long_factor)
        models = ROOT / "artifacts" / "models"
        short = run_child(tmp / "short", tmp / "c_short", models, args)
        long = run_child(tmp / "long", tmp / "c_long", models, args)
    print(f"profile {args.profile}, device {args.device}, torch threads {args.threads}")
    for name, res in (("short", short), ("long", long)):
        hooks = res["hooks"]
        print(f"[{name}] {res['frames']} frames in {res['wall']:.2f} s -> {res['frames'] / res['wall']:.1f} frames/s (all features)")
        for feature, seconds in hooks.items():
            print(f"    {feature:10s} {res['frames'] / seconds:8.1f} frames/s  ({seconds:.2f} s)")
        print_host_model(hooks, res.get("model", {}))
        print_efficiency(hooks, res["wall"], res["decode_wait"], res["load"], res["write"])
    ratio = long["rss_mb"] / short["rss_mb"]
    print(f"peak RSS: short {short['rss_mb']:.0f} MiB, {args.long_factor:g}x longer {long['rss_mb']:.0f} MiB -> ratio {ratio:.2f} (target <= 1.5)")


if __name__ == "__main__":
    main()
