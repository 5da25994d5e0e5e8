"""Training step time of every head at the papers' sizes (its recipe configs/heads/HEAD.yaml).

    python bench/heads.py                         # CPU, batch 8 x 400, 3 timed steps per head
    python bench/heads.py --device cuda --steps 20 --bf16
    python bench/heads.py --heads gru --batch 2   # one head, smaller

Each head is built from its default recipe's `head:` options with the real feature widths (CLIP
ViT-B/16 512, AST 768, WavLM-Large 1024, Qwen3-VL-4B 2560, audio_reliability 3), and trained on random
inputs of `batch` windows of `window` frames: forward, CCC loss, backward, AdamW step. Printed: ms per
step and frames/s. For the BiGRU heads also the packed path (a batch holding one shorter window) beside
the unpacked one (full windows; train/heads/common.py), as a ratio.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

WIDTHS = {"clip": 512, "ast": 768, "wavlm": 1024, "qwen3vl": 2560, "audio_reliability": 3}
GRU_HEADS = ("gru", "crossattn")


def recipe(head: str) -> tuple[dict, list[str]]:
    import yaml

    raw = yaml.safe_load((ROOT / "configs" / "heads" / f"{head}.yaml").read_text())
    return dict(raw.get("head") or {}), list(raw["data"]["features"])


SMALL = {"hidden": 16, "gru_hidden": 8, "layers": 1, "heads": 2, "d_state": 4, "latents": 2}  # --small (smoke)


def time_steps(head: str, batch: int, window: int, steps: int, device: str, bf16: bool, short: int = 0,
               small: bool = False) -> float:
    """Seconds per training step (after one warm-up step); `short` > 0: the last window has that length;
    `small`: narrow, one-layer heads (a smoke check of the code path, not a figure)."""
    import torch

    from train.fit.losses import ccc_loss
    from train.heads import build_head

    options, features = recipe(head)
    options.pop("region_prototypes", None)
    if small:
        options.update({k: v for k, v in SMALL.items() if k in options})
    dims = {n: WIDTHS[n] for n in features}
    torch.manual_seed(0)
    model = build_head(head, dims, options).to(device).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    lengths = torch.full((batch,), window)
    if short:
        lengths[-1] = short
    pad = (torch.arange(window).unsqueeze(0) < lengths.unsqueeze(1)).to(device)
    feats = {n: torch.randn(batch, window, d, device=device) for n, d in dims.items()}
    masks = {n: pad.clone() for n in dims}
    target = torch.rand(batch, window, 2, device=device) * 2 - 1
    autocast = torch.autocast("cuda", torch.bfloat16) if bf16 and device.startswith("cuda") else contextlib.nullcontext()

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        with autocast:
            out = model(feats, masks, pad)
        ccc_loss(out.va.float(), target, pad).backward()
        opt.step()

    step()
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    sync()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    sync()
    return (time.perf_counter() - t0) / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--heads", default="gru,transformer,crossattn,mamba,dcmmoe,raav")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--window", type=int, default=400)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--bf16", action="store_true", help="bf16 autocast (CUDA), as training does")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    args = parser.parse_args()
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"heads at the recipes' sizes, batch {args.batch} x {args.window}, device {args.device}"
          f"{' bf16' if args.bf16 else ''}, {args.steps} steps")
    print(f"  {'head':12s} {'ms/step':>9s} {'frames/s':>10s}  notes")
    for head in args.heads.split(","):
        sec = time_steps(head, args.batch, args.window, args.steps, args.device, args.bf16)
        note = ""
        if head in GRU_HEADS:
            packed = time_steps(head, args.batch, args.window, args.steps, args.device, args.bf16,
                                short=args.window // 2)
            note = f"packed (one shorter window) {packed * 1e3:.1f} ms: unpacked is {packed / sec:.2f}x faster"
        print(f"  {head:12s} {sec * 1e3:9.1f} {args.batch * args.window / sec:10,.0f}  {note}", flush=True)


if __name__ == "__main__":
    main()
