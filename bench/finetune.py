"""Training a backbone top from the cache vs from raw video, in one run.

    python bench/finetune.py                       # small: 2 sample videos of 8 s, tiny CLIP, 24-layer narrow WavLM
    python bench/finetune.py --clip ViT-B-16 --wavlm large --seconds 20   # real architectures (random weights)
    python bench/finetune.py --clip ViT-B-16 --wavlm large --device cuda  # on a GPU (bf16 autocast in training)

For `wavlm:4` and `clip:2`, prints training frames per second (label frames through the model, each
once: window = stride) with the top fed from the cache (`wavlm_hidden` / `face_crops` + the backbone top,
`train/fit/finetune.py`) and with the same model fed from raw video, their ratio (targets: >= 5x for
wavlm:4 of 24 layers, >= 3x for clip:2), peak RSS and the share of the step time spent waiting for data.

Raw video costs, per epoch, what the cache saves, plus the same training step:
- wavlm: decode the audio and run the frozen lower layers on the 4 s / 2 s windows (exactly the
  `wavlm_hidden` extraction), then the top layers train as in the cached path;
- clip: decode, face detection and tracking, crops (the `faces` + `face_crops` extraction, with the crops
  written uncompressed so their compression is not charged to the raw path), then the whole tower runs
  on the crops (frozen prefix without gradient, the top K training) as in the cached path.
So raw seconds per frame = extraction seconds per frame + cached training seconds per frame. Each phase
runs in its own process (peak RSS per phase).

    python bench/finetune.py --crops                          # crops/s delivered vs the tower's need
    python bench/finetune.py --crops --device cuda --codecs jpeg:95,lossless

`--crops`: the data side of `--finetune clip:all` at the real shapes (window 400, frames_per_window 100,
batch 8: 800 crops of 224 px a step) on a face_crops store of real faces (the sample's astronaut, as
bench/face_crops_size.py) per codec. Prints crops/s delivered by the fine-tuning reader (CropReader: the
sent rows' chunks only, one batched decode over `--decode-workers` threads; nvjpeg with --device cuda)
beside the previous reader (the window's whole row range, a listing per read), the decode rate per core,
and the tower's need: ViT-B/16 (random weights, all blocks trained) forward + backward, measured on
`--device` (bf16 on CUDA) or, on a CPU, the GPU step the issue estimates (0.25-0.38 s for 800 crops on
an H200-class GPU); target: delivered >= 3x the tower's need, and the data wait share that leaves.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("YOLO_OFFLINE", "1")

VIDEOS = ("video20", "video2")
SPECS = ("wavlm:4", "clip:2")


def build_wavlm(folder: Path, size: str) -> str:
    """A randomly initialised 24-layer WavLM (WavLM-Large's depth and front end); `small` narrows the
    transformer (hidden 256) so a shared CPU can run it, `large` is WavLM-Large's shape."""
    import torch
    from transformers import Wav2Vec2FeatureExtractor, WavLMConfig, WavLMModel

    if (folder / "config.json").is_file():
        return str(folder)
    torch.manual_seed(0)
    kw = dict(num_hidden_layers=24, feat_extract_norm="layer", do_stable_layer_norm=True, conv_bias=True)
    if size == "small":
        kw.update(hidden_size=256, num_attention_heads=4, intermediate_size=1024)
    else:
        kw.update(hidden_size=1024, num_attention_heads=16, intermediate_size=4096)
    WavLMModel(WavLMConfig(**kw)).save_pretrained(folder)
    Wav2Vec2FeatureExtractor(feature_size=1, sampling_rate=16000, padding_value=0.0, do_normalize=True,
                             return_attention_mask=True).save_pretrained(folder)
    return str(folder)


DEVICE = os.environ.get("AFFCACHE_BENCH_DEVICE", "cpu")  # set from --device for every phase


def options(work: Path, features: list[str], cache: str, refs: dict[str, str], force: bool = False,
            crops_codec: str = "jpeg:95", **kw):
    from extract.runner import RunOptions

    return RunOptions(split="train", features=features, data_root=work / "data", cache_dir=work / cache,
                      models_dir=work / "models", profile="tiny", device=DEVICE, progress=False, batch_size=16,
                      model_refs=refs, force=force, configs={"wavlm_hidden": {"top_layers": 4},
                                                             "face_crops": {"codec": crops_codec}}, **kw)


def phase_setup(work: Path, args: argparse.Namespace) -> dict:
    from cache.sample_data import SampleConfig, write_sample_dataset
    from extract.backends import run_extraction

    if not (work / "data").is_dir():
        write_sample_dataset(work / "data", SampleConfig.short(VIDEOS, args.seconds))
    refs = {"wavlm_hidden": build_wavlm(work / "models" / f"wavlm24-{args.wavlm}", args.wavlm)}
    if args.clip != "tiny":
        refs["face_crops"] = args.clip
    summary = run_extraction(options(work, ["faces", "face_crops", "wavlm_hidden"], "cache", refs))
    return {"ok": summary.ok, "refs": refs}


def _config(work: Path, spec: str, refs: dict[str, str], steps: int, window: int, frames: int = 0):
    from train.config import DataConfig, TrainConfig

    feature = "wavlm_hidden" if spec.startswith("wavlm") else "face_crops"
    ref = refs.get(feature)
    data = DataConfig(features=[feature], data_root=str(work / "data"), cache_dir=str(work / "cache"),
                      window=window, stride=window)
    return TrainConfig(model="gru", data=data, name=f"bench-{spec.replace(':', '-')}", runs_dir=str(work / "runs"),
                       head={"hidden": 32, "gru_hidden": 32}, batch_size=2, lr=2e-4, device=DEVICE,
                       lambda_region=0.0, max_steps_per_epoch=steps,
                       finetune={"spec": spec, "profile": "tiny", "models_dir": str(work / "models"),
                                 "frames_per_window": frames if spec.startswith("clip") else 0,
                                 **({"ref": ref} if ref else {})})


def phase_cached(work: Path, spec: str, refs: dict[str, str], steps: int, window: int, frames: int = 0) -> dict:
    """Train the top from the cache: label frames per second and data wait share."""
    import numpy as np
    import torch

    from cache.location import as_location
    from cache.prefetch import Prefetcher
    from train.data.sources import open_features
    from train.fit.finetune import parameter_groups
    from train.fit.loop import open_split
    from train.fit.losses import va_loss
    from train.fit.model import build_model
    from train.data.tensors import autocast, resolve_device, to_tensors

    torch.set_num_threads(1)
    device = resolve_device(DEVICE)
    cfg = _config(work, spec, refs, steps, window, frames)
    sources = open_features(as_location(cfg.data.cache_dir), cfg.data.features)
    dataset = open_split(cfg, "train", sources, training=True)
    model, _ = build_model(cfg, sources)
    model.to(device)
    optimizer = torch.optim.AdamW(parameter_groups(model, cfg), lr=cfg.lr)
    order = dataset.epoch_order(np.random.default_rng(0))
    order = (order * (1 + steps * cfg.batch_size // max(len(order), 1)))[: steps * cfg.batch_size]
    model.train()
    frames, n = 0, 0
    loader = Prefetcher(dataset.batches(order, cfg.batch_size), depth=2)
    start = time.perf_counter()
    try:
        for batch in loader:
            tb = to_tensors(batch, device)
            with autocast(device):  # bf16 on CUDA, as the training loop
                out = model(tb.features, tb.masks, tb.pad)
            loss, _ = va_loss(out, tb.labels, tb.label_mask)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if device.type == "cuda":
                torch.cuda.synchronize()
            frames += int(batch.length.sum())
            n += 1
            if n == 1:  # the first step pays one-off costs (allocations); time the rest
                start, frames, loader.wait_s = time.perf_counter(), 0, 0.0
    finally:
        loader.close()
        dataset.close()
    elapsed = time.perf_counter() - start
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return {"fps": frames / elapsed, "frames": frames, "seconds": elapsed, "wait_share": loader.wait_s / elapsed,
            "trainable_params": trainable}


def phase_raw(work: Path, spec: str, refs: dict[str, str]) -> dict:
    """What raw video costs per epoch before the same step: the extraction the cache saves."""
    from cache.store import StoreLayout
    from extract.face_crops import FaceCropsExtractor
    from extract.backends import run_extraction

    if spec.startswith("wavlm"):
        features = ["wavlm_hidden"]
    else:
        features = ["faces", "face_crops"]
        FaceCropsExtractor.store_layout = StoreLayout(chunk_rows=32, cname="lz4", clevel=0, shuffle="noshuffle")
    summary = run_extraction(options(work, features, "raw-cache", refs, force=True, crops_codec="lossless"))
    frames = sum(_label_frames(work).values())  # the label frames an epoch trains on
    return {"seconds": summary.seconds, "frames": frames, "decode_wait": summary.decode_wait, "ok": summary.ok}


def _label_frames(work: Path) -> dict[str, int]:
    from cache.manifest import load_manifest

    manifest = load_manifest(work / "data", splits=("train",))
    return {t.name: len(t.labels) for t in manifest.split("train")}


def run_phase(argv: list[str]) -> dict:
    out = subprocess.run([sys.executable, __file__, *argv], capture_output=True, text=True, cwd=ROOT,
                         env={**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")})
    lines = [line for line in out.stdout.splitlines() if line.startswith("RESULT ")]
    if out.returncode != 0 or not lines:
        raise SystemExit(f"phase {argv[:3]} failed:\n{out.stdout[-2000:]}\n{out.stderr[-3000:]}")
    return json.loads(lines[-1][len("RESULT "):])


GPU_STEP_S = (0.25, 0.38)  # estimated ViT-B/16 fwd+bwd of 800 crops, bf16, H200 class (issue 25)


def crop_store(folder: Path, codec: str, rows: int) -> "object":
    """A face_crops store of `rows` real-face crops in one unit, written as the extractor writes them."""
    import numpy as np

    from bench.face_crops_size import astronaut_crops
    from cache.crop_codec import CropCodec
    from cache.store import FeatureMeta, FeatureStore
    from extract.face_crops import INPUT_SPEC_EXTRA, crop_layout

    faces = astronaut_crops(64)
    crops = faces[np.arange(rows) % len(faces)]
    c = CropCodec.parse(codec)
    store = FeatureStore.create_or_open(folder, FeatureMeta("face_crops", config={"codec": c.name}), on_mismatch="new")
    if "v" not in store.units():
        store.write("v", c.encode(crops), np.stack([np.arange(rows), np.arange(rows) + 1.0], 1) / 30,
                    dtype="uint8", layout=crop_layout(c.name))
        store.put_extra(INPUT_SPEC_EXTRA, np.array([224]), {"model": "ViT-B-16", "image_size": 224})
    return store


def crops_rate(work: Path, device_name: str, codecs: str, workers: int, batches: int, window: int = 400,
               per_window: int = 100, batch: int = 8, measure_tower: bool = True) -> list[dict]:
    """One row per codec: crops/s delivered (1 core and `workers`), the previous reader's rate, the
    tower's need and the data wait share left (see the module doc)."""
    import math

    import numpy as np
    import torch

    from cache.crops import CropReader

    torch.set_num_threads(1)
    rows = window * 6
    step = math.ceil(window / per_window)
    rng = np.random.default_rng(0)

    def plans(n: int) -> list[list[np.ndarray]]:  # per batch: the rows each window sends (random start, phase)
        return [[s + np.arange(int(rng.integers(step)), window, step) for s in rng.integers(0, rows - window, batch)]
                for _ in range(n)]

    need = tower_need(device_name, batch * len(range(0, window, step)), measure_tower)
    out = []
    for codec in codecs.split(","):
        store = crop_store(work / f"crops-{codec.replace(':', '')}.zarr", codec, rows)
        device = "cuda" if device_name == "cuda" and codec.startswith("jpeg") else "cpu"
        rates = {}
        for n_workers in sorted({1, workers}):
            reader = CropReader(store, device=device, workers=n_workers)
            reader.read("v", np.arange(8))  # opens the arrays once
            done, t0 = 0, time.perf_counter()
            for windows in plans(batches):
                done += len(reader.decode(np.concatenate([reader.encoded("v", w) for w in windows])))
            if device == "cuda":
                torch.cuda.synchronize()
            rates[n_workers] = done / (time.perf_counter() - t0)
        t0, done = time.perf_counter(), 0
        one = CropReader(store, device=device, workers=1)
        for windows in plans(max(1, batches // 2)):  # before: each window's whole row range, listed per read
            for w in windows:
                rows_read = store.read("v", rows=slice(int(w.min()), int(w.max()) + 1)).values
                done += len(one.decode(rows_read[w - w.min()]))
        before = done / (time.perf_counter() - t0)
        t_data, t_step = need["crops"] / rates[workers], need["step_s"][0]  # the faster step: the larger need
        out.append({"codec": codec, "decode": device, "workers": workers, "crops_s": rates[workers],
                    "per_core": rates[1], "before_s": before, "need_s": need["crops_s"], "need": need["line"],
                    "ratio": rates[workers] / need["crops_s"],
                    "wait": max(0.0, t_data - t_step) / max(t_data, t_step),
                    "cores_for_3x": 3 * need["crops_s"] / rates[1]})
    return out


def print_crops(rows: list[dict]) -> None:
    print(f"tower: {rows[0]['need']}")
    for r in rows:
        print(f"  {r['codec']:9s} delivered {r['crops_s']:8,.0f} crops/s ({r['workers']} workers, {r['decode']} decode), "
              f"{r['per_core']:7,.0f} per core; before (whole row ranges, 1 core) {r['before_s']:6,.0f} crops/s | "
              f"tower needs {r['need_s']:,.0f} crops/s: delivered {r['ratio']:.2f}x (target >= 3x), data wait "
              f"{100 * r['wait']:.0f}% of a step; 3x needs {r['cores_for_3x']:.0f} decoding cores", flush=True)


def tower_need(device: str, crops: int = 800, measure: bool = True) -> dict:
    """Crops/s the ViT-B/16 tower consumes training all blocks on `crops` a step: measured on CUDA,
    estimated (GPU_STEP_S, scaled to `crops`) elsewhere."""
    import torch

    if device != "cuda" or not measure:
        lo, hi = (t * crops / 800 for t in GPU_STEP_S)
        lo, hi = GPU_STEP_S
        return {"step_s": (lo, hi), "crops_s": crops / lo, "crops": crops,
                "line": f"GPU step estimated {lo:.2f}-{hi:.2f} s for {crops} crops -> needs up to {crops / lo:,.0f} crops/s"}
    import open_clip

    model = open_clip.create_model("ViT-B-16", pretrained=None).visual.to("cuda").train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-6)
    x = torch.randn(crops, 3, 224, 224, device="cuda")

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        with torch.autocast("cuda", torch.bfloat16):
            loss = model(x).float().square().mean()
        loss.backward()
        opt.step()

    step()
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(3):
        step()
    torch.cuda.synchronize()
    sec = (time.perf_counter() - t0) / 3
    return {"step_s": (sec, sec), "crops_s": crops / sec, "crops": crops,
            "line": f"ViT-B/16 all blocks, bf16, measured {sec:.3f} s for {crops} crops -> {crops / sec:,.0f} crops/s"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=ROOT / "artifacts" / "bench-finetune")
    parser.add_argument("--seconds", type=float, default=8.0, help="length of each sample video")
    parser.add_argument("--steps", type=int, default=6, help="training steps timed per cached phase")
    parser.add_argument("--window", type=int, default=400, help="label frames per window (= stride; 400 as in training)")
    parser.add_argument("--clip", default="tiny", help="tiny | an open_clip name (e.g. ViT-B-16, random weights)")
    parser.add_argument("--wavlm", default="small", choices=("small", "large"))
    parser.add_argument("--frames-per-window", type=int, default=0,
                        help="clip: frames per window through the tower in training (0 = all)")
    parser.add_argument("--specs", default=",".join(SPECS), help="which of wavlm:4, clip:2 to run")
    parser.add_argument("--device", default="cpu", help="cpu | cuda | auto (extraction and training alike)")
    parser.add_argument("--crops", action="store_true", help="crops/s delivered vs the tower's need (see above)")
    parser.add_argument("--codecs", default="jpeg:95,lossless", help="--crops: face_crops codecs to compare")
    parser.add_argument("--decode-workers", type=int, default=2, help="--crops: decoding threads")
    parser.add_argument("--batches", type=int, default=4, help="--crops: batches timed per codec")
    parser.add_argument("--phase", default="", help=argparse.SUPPRESS)
    parser.add_argument("--spec", default="", help=argparse.SUPPRESS)
    parser.add_argument("--refs", default="{}", help=argparse.SUPPRESS)
    args = parser.parse_args()
    work = args.work.resolve()
    global DEVICE
    DEVICE = os.environ["AFFCACHE_BENCH_DEVICE"] = args.device
    if args.crops:
        args.work.mkdir(parents=True, exist_ok=True)
        print(f"crops for clip:all at window 400, frames_per_window 100, batch 8 (800 crops a step); "
              f"device {args.device}")
        print_crops(crops_rate(args.work, args.device, args.codecs, args.decode_workers, args.batches))
        return
    if args.phase:
        refs = json.loads(args.refs)
        if args.phase == "setup":
            result = phase_setup(work, args)
        elif args.phase == "cached":
            result = phase_cached(work, args.spec, refs, args.steps, args.window, args.frames_per_window)
        else:
            result = phase_raw(work, args.spec, refs)
        result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print("RESULT " + json.dumps(result))
        return
    common = ["--work", str(work), "--seconds", str(args.seconds), "--clip", args.clip, "--wavlm", args.wavlm,
              "--device", args.device]
    setup = run_phase([*common, "--phase", "setup"])
    refs = json.dumps(setup["refs"])
    print(f"cache at {work} (2 sample videos of {args.seconds:g} s; clip={args.clip}, wavlm=24 layers {args.wavlm}; "
          f"device {args.device}, CPU threads {os.environ.get('OMP_NUM_THREADS', '1')})")
    for spec in [s for s in args.specs.split(",") if s]:
        cached = run_phase([*common, "--phase", "cached", "--spec", spec, "--refs", refs,
                            "--steps", str(args.steps), "--window", str(args.window),
                            "--frames-per-window", str(args.frames_per_window)])
        raw = run_phase([*common, "--phase", "raw", "--spec", spec, "--refs", refs])
        raw_spf = raw["seconds"] / raw["frames"] + 1 / cached["fps"]
        ratio = cached["fps"] * raw_spf
        target = 5.0 if spec.startswith("wavlm") else 3.0
        print(f"{spec}: from cache {cached['fps']:.1f} frames/s (data wait {100 * cached['wait_share']:.1f}%, "
              f"peak RSS {cached['peak_rss_mb']:.0f} MB, {cached['trainable_params']:,} trainable parameters); "
              f"from raw video {1 / raw_spf:.1f} frames/s (extraction {raw['seconds']:.1f} s for {raw['frames']} frames, "
              f"peak RSS {raw['peak_rss_mb']:.0f} MB); ratio {ratio:.1f}x (target >= {target:g}x)")


if __name__ == "__main__":
    main()
