"""Features at their true scale (issue 18): a GRU on pandas-written mouth CSVs, with and without the
index column and standardization. Prints validation P for each way of reading the same files.

    .venv/bin/python bench/feature_scale.py [--train 8 --val 3 --frames 1500,3000 --epochs 6 --steps 50]

The CSVs are what pandas' `to_csv` writes: a blank-named index column (0..N-1), a 1-based zero-padded
frame column, `surface_area_mouth` (~1e-4..1e-2, carries arousal and valence) and `mouth_open` (0/1,
follows valence). The videos are real (16x16, black) so frame indices map to times with their fps.
"""

from __future__ import annotations

import argparse
import io
import logging
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # bench/train.py shadows the train package

import numpy as np
import torch
from rich.console import Console

from cache.importers import ImportConfig, import_features
from cache.manifest import load_manifest, video_stem
from cache.sample_data import write_av_file
from train.config import DataConfig, TrainConfig
from train.fit.loop import train
from train.data.synthetic import SynthConfig, default_tracks, make_synthetic


def write_csvs(root: Path, out: Path, truth: dict[str, np.ndarray], fps: dict[str, float], seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    out.mkdir(parents=True, exist_ok=True)
    for name, va in truth.items():
        n = len(va)
        write_av_file(root / "videos" / f"{video_stem(name)}.mp4", np.zeros((n, 16, 16, 3), np.uint8), fps[name])
        area = np.clip(4e-3 + 2.5e-3 * va[:, 1] + 1e-3 * va[:, 0] + 8e-4 * rng.normal(size=n), 1e-4, 1e-2)
        flag = (va[:, 0] + 0.5 * rng.normal(size=n) > 0).astype(int)
        lines = [",frame,surface_area_mouth,mouth_open"]
        lines += [f"{i},{i + 1:05d},{float(area[i])!r},{flag[i]}" for i in range(n)]
        (out / f"{name}.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")


def run(base: Path, name: str, features: str, normalize: bool, args) -> float:
    cfg = TrainConfig(
        model="gru",
        data=DataConfig(features=[features], data_root=str(base / "data"), cache_dir=str(base / "cache"), window=64,
                        stride=32, normalize=normalize),
        name=name, runs_dir=str(base / "runs"), head={"hidden": 64, "gru_hidden": 64}, epochs=args.epochs,
        early_stop=args.epochs, lr=1e-3, batch_size=8, device="cpu", max_steps_per_epoch=args.steps, smooth_grid=[0],
        n_plot_tracks=0,
    )
    start = time.perf_counter()
    result = train(cfg, console=Console(file=io.StringIO()))
    raw = result.eval.raw
    print(f"{name:<38} val P {raw['P']:.3f} (CCC_V {raw['ccc_v']:.3f}, CCC_A {raw['ccc_a']:.3f})  "
          f"{args.epochs * args.steps} steps, {time.perf_counter() - start:.0f} s")
    return raw["P"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train", type=int, default=8)
    parser.add_argument("--val", type=int, default=3)
    parser.add_argument("--frames", default="1500,3000")
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--steps", type=int, default=50)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(1)
    lo, hi = (int(x) for x in args.frames.split(","))
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        tracks = default_tracks(n_train=args.train, n_val=args.val, n_test=0, frames=(lo, hi), seed=1)
        truth = make_synthetic(base / "data", base / "cache", SynthConfig(tracks=tracks, signal=False, region_prototypes=False))
        write_csvs(base / "data", base / "csv", truth, {t.name: t.fps for t in tracks})
        manifest = load_manifest(base / "data")
        as_before = ImportConfig(fmt="csv", columns=("Unnamed: 0", "surface_area_mouth", "mouth_open"))
        for store, cfg in (("mouth_with_index", as_before), ("mouth", ImportConfig(fmt="csv"))):
            report = import_features(base / "csv", store, base / "cache", cfg, manifest)
            assert report.ok, report.failed
            print(f"import {store}: {report.summary()}; notes: {'; '.join(report.notes) or '-'}")
        run(base, "index kept, raw (as before issue 18)", "mouth_with_index", False, args)
        run(base, "index kept, standardized", "mouth_with_index", True, args)
        run(base, "index dropped, raw", "mouth", False, args)
        run(base, "index dropped, standardized (default)", "mouth", True, args)


if __name__ == "__main__":
    main()
