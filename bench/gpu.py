"""GPU figures in one run: real-size backbones with random weights, every head's training step, the data
paths and the fine-tuning crop reader per codec; one table, also written to bench/results/gpu-<date>.md.

    bash bench/gpu.sh               # on a CUDA machine (bf16 autocast): < 10 min on one H200-class GPU
    bash bench/gpu.sh --quick       # fewer iterations, smaller training scale: < 4 min
    bash bench/gpu.sh --cpu-smoke   # anywhere: tiny sizes, a few iterations, same code paths (tests/test_bench_gpu.py)

Extraction (at the batch sizes the runner uses): CLIP ViT-B/16 image tower (32 face crops of 224 px per
batch, `extract --batch-size` default), WavLM-Large (8 windows of 4 s, extract/wavlm.py), AST-base
(10 s log-mel windows, 8 per batch), Qwen3-VL-4B (`--qwen`; one 16-frame segment per forward, as
extract/qwen3vl.py). For each: items/s (frames, audio seconds or segments) and the GPU busy share
(sampled from nvidia-smi while the loop runs; "-" without it). Host-side preprocessing is not part of
these loops: the figures bound what the runner can reach.

Training: `bench/train.py` at a small scale with the model on this device, both data paths (lazy vs
aligned views): step time and data wait share. Every head (`bench/heads.py`, its recipe's sizes, batch
8 x 400, bf16): step time, and the data wait share it would see on the views (the views' data time per
batch against its step, prefetched: max(0, data - step) / max(data, step)).
Fine-tuning crops (`bench/finetune.py --crops`, per codec): crops/s delivered by the reader (nvjpeg for
JPEG on CUDA) against the ViT-B/16 tower's measured need (800 crops a step, all blocks, bf16).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


class BusySampler:
    """GPU utilisation (%) sampled from nvidia-smi every 0.2 s on a thread."""

    def __init__(self) -> None:
        self.samples: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                out = subprocess.run(["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits"],
                                     capture_output=True, text=True, timeout=2)
                self.samples.append(float(out.stdout.strip().splitlines()[0]))
            except (OSError, ValueError, IndexError, subprocess.TimeoutExpired):
                return
            time.sleep(0.2)

    def __enter__(self) -> "BusySampler":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=3)

    @property
    def share(self) -> float | None:
        return sum(self.samples) / len(self.samples) / 100 if self.samples else None


def timed(fn, device, iters: int, warmup: int = 2) -> tuple[float, float | None]:
    """Seconds per call (after warm-up) and the GPU busy share while timing."""
    import torch

    for _ in range(warmup):
        fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    with BusySampler() if device.type == "cuda" else _Null() as sampler:
        start = time.perf_counter()
        for _ in range(iters):
            fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        elapsed = (time.perf_counter() - start) / iters
    return elapsed, getattr(sampler, "share", None)


class _Null:
    share = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return None


def autocast(device):
    import torch

    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")


def bench_clip(device, smoke: bool, iters: int) -> dict:
    import open_clip
    import torch

    if smoke:
        from extract.models import TINY_CLIP_CONFIG, TINY_CLIP_NAME, build_tiny_open_clip

        folder = ROOT / "artifacts" / "bench" / "gpu" / "tiny-clip"
        folder.mkdir(parents=True, exist_ok=True)
        build_tiny_open_clip(folder)  # registers the tiny config
        name, size, batch = TINY_CLIP_NAME, TINY_CLIP_CONFIG["vision_cfg"]["image_size"], 4
    else:
        name, size, batch = "ViT-B-16", 224, 32
    model = open_clip.create_model(name, pretrained=None).to(device).eval()
    images = torch.randn(batch, 3, size, size, device=device)

    @torch.no_grad()
    def step():
        with autocast(device):
            model.encode_image(images)

    sec, busy = timed(step, device, iters)
    return {"model": f"clip {name}", "batch": f"{batch} crops", "per_s": batch / sec, "unit": "frames/s", "busy": busy}


def bench_wavlm(device, smoke: bool, iters: int) -> dict:
    import torch
    from transformers import WavLMConfig, WavLMModel

    if smoke:
        cfg = WavLMConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                          conv_dim=(16, 16), conv_stride=(5, 2), conv_kernel=(10, 3), num_conv_pos_embeddings=16)
        batch, seconds = 2, 4.0
    else:  # WavLM-Large: 24 layers of 1024, 16 heads, 4096 FFN
        cfg = WavLMConfig(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096,
                          feat_extract_norm="layer", do_stable_layer_norm=True)
        batch, seconds = 8, 4.0
    model = WavLMModel(cfg).to(device).eval()
    audio = torch.randn(batch, int(16000 * seconds), device=device)

    @torch.no_grad()
    def step():
        with autocast(device):
            model(audio, output_hidden_states=True)

    sec, busy = timed(step, device, iters)
    return {"model": "wavlm-large" if not smoke else "wavlm tiny", "batch": f"{batch} x {seconds:g} s",
            "per_s": batch * seconds / sec, "unit": "audio s/s", "busy": busy}


def bench_ast(device, smoke: bool, iters: int) -> dict:
    import torch
    from transformers import ASTConfig, ASTModel

    if smoke:
        cfg = ASTConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                        max_length=1024, num_mel_bins=128)
        batch = 2
    else:
        cfg = ASTConfig()  # AST base: 12 layers of 768, 1024 frames x 128 mels (10.24 s)
        batch = 8
    model = ASTModel(cfg).to(device).eval()
    mels = torch.randn(batch, cfg.max_length, cfg.num_mel_bins, device=device)

    @torch.no_grad()
    def step():
        with autocast(device):
            model(mels)

    sec, busy = timed(step, device, iters)
    return {"model": "ast-base" if not smoke else "ast tiny", "batch": f"{batch} x 10 s", "per_s": batch * 10.24 / sec,
            "unit": "audio s/s", "busy": busy}


def bench_qwen(device, smoke: bool, iters: int) -> dict:
    import torch
    from transformers import Qwen3VLConfig, Qwen3VLForConditionalGeneration

    if smoke:
        text = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, head_dim=16,
                    intermediate_size=128, rope_scaling={"rope_type": "default", "mrope_section": [2, 3, 3]})
        vision = dict(depth=2, hidden_size=64, intermediate_size=128, num_heads=4, out_hidden_size=64,
                      deepstack_visual_indexes=[0])
        size = 64
    else:  # Qwen3-VL-4B: Qwen3-4B text (36 x 2560, 32 heads, 8 kv, FFN 9728) and a 24 x 1024 vision tower
        text = dict(hidden_size=2560, num_hidden_layers=36, num_attention_heads=32, num_key_value_heads=8,
                    head_dim=128, intermediate_size=9728,
                    rope_scaling={"rope_type": "default", "mrope_section": [24, 20, 20]})
        vision = dict(depth=24, hidden_size=1024, intermediate_size=4096, num_heads=16, out_hidden_size=2560,
                      deepstack_visual_indexes=[5, 11, 17])
        size = 224
    model = Qwen3VLForConditionalGeneration(Qwen3VLConfig(text_config=text, vision_config=vision))
    model = model.to(device, dtype=torch.bfloat16 if device.type == "cuda" else torch.float32).eval()
    frames, patch, merge = 16, 16, 2
    grid = torch.tensor([[frames // 2, size // patch, size // patch]], device=device)
    n_patches = int(grid.prod())
    pixels = torch.randn(n_patches, 3 * 2 * patch * patch, device=device, dtype=model.dtype)
    video_id, start_id, end_id = (model.config.video_token_id, model.config.vision_start_token_id,
                                  model.config.vision_end_token_id)
    per_frame = n_patches // (frames // 2) // (merge * merge)
    frame_tokens = [start_id] + [video_id] * per_frame + [end_id]  # one block per temporal patch, as the processor
    ids = torch.tensor([frame_tokens * (frames // 2) + list(range(100, 164))], device=device)

    types = (ids == video_id).long() * 2  # what the processor returns: 2 marks video tokens

    @torch.no_grad()
    def step():
        model(input_ids=ids, mm_token_type_ids=types, pixel_values_videos=pixels, video_grid_thw=grid,
              output_hidden_states=True)

    sec, busy = timed(step, device, max(1, iters // 2))
    return {"model": "qwen3-vl-4b" if not smoke else "qwen3-vl tiny", "batch": "1 segment (16 frames)",
            "per_s": 1 / sec, "unit": "segments/s", "busy": busy}


def bench_training(device_name: str, smoke: bool, quick: bool = False) -> list[dict]:
    scale, steps = ("0.002", "3") if smoke else ("0.01", "30") if quick else ("0.05", "100")
    cmd = [sys.executable, str(ROOT / "bench" / "train.py"), "--scale", scale, "--steps", steps, "--hidden", "256",
           "--device", device_name, "--out", str(ROOT / "artifacts" / "bench" / "gpu")]
    res = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    if res.returncode != 0:
        return [{"model": "training", "error": res.stderr.strip().splitlines()[-1] if res.stderr else "failed"}]
    figures = json.loads(res.stdout.strip().splitlines()[-1])["paths"]
    return [{"model": f"gru 256 train step, {path} data", "batch": "8 x 400", "per_s": 1000 / f["step_compute_ms"],
             "unit": "steps/s", "busy": None, "wait": f["data_wait_share_after_first_batch"],
             "data_fps": f["data_only_frames_per_s"]} for path, f in figures.items()]


def bench_heads(device, smoke: bool, steps: int, data_ms: float | None) -> list[dict]:
    """Every head's training step at its recipe's sizes (smoke: narrow heads on short windows)."""
    from bench.heads import time_steps

    batch, window = (1, 16) if smoke else (8, 400)
    rows = []
    for head in ("gru", "transformer", "crossattn", "mamba", "dcmmoe", "raav"):
        try:
            sec = time_steps(head, batch, window, steps, device.type, bf16=device.type == "cuda", small=smoke)
        except Exception as err:  # noqa: BLE001 - one head must not hide the others
            rows.append({"model": f"head {head}", "error": f"{type(err).__name__}: {err}"})
            continue
        wait = None if data_ms is None else max(0.0, data_ms / 1e3 - sec) / max(data_ms / 1e3, sec)
        rows.append({"model": f"head {head} train step", "batch": f"{batch} x {window}", "per_s": 1 / sec,
                     "unit": "steps/s", "busy": None, "wait": wait, "note": f"{sec * 1e3:.1f} ms/step"})
    return rows


def bench_crops(device, smoke: bool, batches: int) -> list[dict]:
    """The fine-tuning crop reader per codec against the tower's need (bench/finetune.py --crops)."""
    import os

    from bench.finetune import crops_rate

    work = ROOT / "artifacts" / "bench" / "gpu" / "crops"
    work.mkdir(parents=True, exist_ok=True)
    workers = 2 if smoke else max(1, min(8, (os.cpu_count() or 2) - 2))
    sizes = dict(window=40, per_window=10, batch=2, measure_tower=False) if smoke else {}
    rows = crops_rate(work, device.type, "jpeg:95,lossless", workers, batches, **sizes)
    return [{"model": f"finetune crops {r['codec']} ({r['decode']} decode)", "batch": f"{r['workers']} workers",
             "per_s": r["crops_s"], "unit": "crops/s", "busy": None, "wait": r["wait"],
             "note": f"{r['ratio']:.2f}x the tower's {r['need_s']:,.0f} crops/s; {r['per_core']:,.0f} per core"}
            for r in rows]


def views_data_ms(rows: list[dict]) -> float | None:
    """The views' data time per batch of 8 x 400 from bench/train.py's rows (None when not measured)."""
    for r in rows:
        if r.get("model", "").endswith("views data") and r.get("data_fps"):
            return 8 * 400 / r["data_fps"] * 1e3
    return None


def write_markdown(path: Path, header: str, rows: list[dict], command: str) -> None:
    lines = [f"# GPU figures {time.strftime('%Y-%m-%d %H:%M')}", "", f"`{command}`", "", header, "",
             "| figure | batch | throughput | GPU busy | data wait | note |", "|---|---|---:|---:|---:|---|"]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['model']} | | error: {r['error']} | | | |")
            continue
        busy = "-" if r.get("busy") is None else f"{100 * r['busy']:.0f}%"
        wait = "-" if r.get("wait") is None else f"{100 * r['wait']:.1f}%"
        lines.append(f"| {r['model']} | {r['batch']} | {r['per_s']:,.1f} {r['unit']} | {busy} | {wait} | {r.get('note', '')} |")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cpu-smoke", action="store_true", help="tiny sizes on CPU: check the script before a GPU run")
    parser.add_argument("--qwen", action="store_true", help="also Qwen3-VL-4B (about 9 GB in bf16)")
    parser.add_argument("--iters", type=int, default=10)
    parser.add_argument("--skip-training", action="store_true")
    parser.add_argument("--quick", action="store_true", help="fewer iterations and a smaller training scale (< 4 min)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results", help="where gpu-<date>.md goes")
    args = parser.parse_args()
    import torch

    device = torch.device("cuda" if torch.cuda.is_available() and not args.cpu_smoke else "cpu")
    if device.type == "cpu" and not args.cpu_smoke:
        sys.exit("no CUDA device: run with --cpu-smoke to check the script on CPU")
    smoke, iters = args.cpu_smoke, (2 if args.cpu_smoke else 3 if args.quick else args.iters)
    t_start = time.perf_counter()
    rows = []
    for bench in (bench_clip, bench_wavlm, bench_ast) + ((bench_qwen,) if args.qwen or smoke else ()):
        try:
            rows.append(bench(device, smoke, iters))
        except Exception as err:  # noqa: BLE001 - one failing model must not hide the others' figures
            rows.append({"model": bench.__name__, "error": f"{type(err).__name__}: {err}"})
        if device.type == "cuda":
            torch.cuda.empty_cache()
    if not args.skip_training:
        rows += bench_training(device.type, smoke, args.quick)
        rows += bench_heads(device, smoke, 1 if smoke else 3 if args.quick else 10, views_data_ms(rows))
    try:
        rows += bench_crops(device, smoke, 1 if smoke else 2 if args.quick else 6)
    except Exception as err:  # noqa: BLE001
        rows.append({"model": "finetune crops", "error": f"{type(err).__name__}: {err}"})
    name = torch.cuda.get_device_name() if device.type == "cuda" else "cpu (smoke)"
    header = (f"device: {name}; torch {torch.__version__}; bf16 autocast {'on' if device.type == 'cuda' else 'off'}; "
              f"{time.perf_counter() - t_start:.0f} s")
    out = args.out / f"gpu-{time.strftime('%Y-%m-%d')}{'-smoke' if smoke else ''}.md"
    write_markdown(out, header, rows, "bash bench/gpu.sh " + " ".join(sys.argv[1:]))
    print(header)
    print(f"{'model':<34} {'batch':<22} {'throughput':>22} {'GPU busy':>9} {'data wait':>10}")
    for r in rows:
        if "error" in r:
            print(f"{r['model']:<34} error: {r['error']}")
            continue
        busy = "-" if r.get("busy") is None else f"{100 * r['busy']:.0f}%"
        wait = "-" if r.get("wait") is None else f"{100 * r['wait']:.1f}%"
        print(f"{r['model']:<34} {r['batch']:<22} {r['per_s']:>12,.1f} {r['unit']:<9} {busy:>9} {wait:>10}")
    print(f"written to {out}")
    print(json.dumps(rows, default=str))


if __name__ == "__main__":
    main()
