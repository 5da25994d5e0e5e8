"""Bytes per frame of `face_crops` under candidate codecs, and the projected size for Aff-Wild2.

    python bench/face_crops_size.py                                  # a real face photo with jitter
    python bench/face_crops_size.py --store artifacts/features/face_crops.zarr   # + crops of a store

The real face: scikit-image's astronaut photo, 96 crops of its face box moved by ~2 px (normal jitter),
cropped as `face_crops` does (box crop at 256 px with margin 0.1, then bicubic resize to 224 px). Codecs
are applied per chunk of 32 rows, as the store writes them. JPEG and PNG are per frame, for reference.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

AFFWILD2_FRAMES = 2_993_081
CHUNK = 32


def astronaut_crops(n: int = 96, size: int = 224) -> np.ndarray:
    import skimage.data
    from PIL import Image

    from extract.base import crop_faces

    img = skimage.data.astronaut()
    rng = np.random.default_rng(0)
    boxes = [[160 + dx, 60 + dy, 300 + dx, 230 + dy] for dx, dy in rng.normal(0, 2, (n, 2))]
    crops = crop_faces([img] * n, np.array(boxes), 256, 0.1)
    return np.stack([np.asarray(Image.fromarray(c).resize((size, size), Image.BICUBIC)) for c in crops])


def report(label: str, crops: np.ndarray) -> None:
    import cv2
    from numcodecs import Blosc, Zstd

    codecs = {
        "blosc-lz4 + byte shuffle (default store)": Blosc("lz4", 5, Blosc.SHUFFLE),
        "blosc-zstd-3, no shuffle": Blosc("zstd", 3, Blosc.NOSHUFFLE),
        "blosc-zstd-3 + bit shuffle (face_crops)": Blosc("zstd", 3, Blosc.BITSHUFFLE),
        "blosc-zstd-7 + bit shuffle": Blosc("zstd", 7, Blosc.BITSHUFFLE),
        "zstd-9 over the chunk": Zstd(9),
    }
    raw = crops[0].nbytes
    print(f"== {label}: {len(crops)} crops of {crops.shape[1]} px, raw {raw:,} B/frame")
    for name, codec in codecs.items():
        t0 = time.perf_counter()
        size = sum(len(codec.encode(np.ascontiguousarray(crops[a : a + CHUNK]))) for a in range(0, len(crops), CHUNK))
        dt = time.perf_counter() - t0
        bpf = size / len(crops)
        print(f"  {name:42s} {bpf:9,.0f} B/frame  x{raw / bpf:4.2f}  Aff-Wild2 {bpf * AFFWILD2_FRAMES / 1e9:6.0f} GB"
              f"  encode {len(crops) / dt:5.0f} frames/s")
    for name, ext, params in (("png-6 per frame (lossless)", ".png", [cv2.IMWRITE_PNG_COMPRESSION, 6]),
                              ("jpeg q95 per frame (lossy)", ".jpg", [cv2.IMWRITE_JPEG_QUALITY, 95]),
                              ("jpeg q90 per frame (lossy)", ".jpg", [cv2.IMWRITE_JPEG_QUALITY, 90])):
        bpf = float(np.mean([len(cv2.imencode(ext, c[..., ::-1], params)[1]) for c in crops]))
        print(f"  {name:42s} {bpf:9,.0f} B/frame  x{raw / bpf:4.2f}  Aff-Wild2 {bpf * AFFWILD2_FRAMES / 1e9:6.0f} GB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", type=Path, help="a face_crops store: its first 96 valid crops are measured too")
    args = parser.parse_args()
    if args.store:
        from cache.store import FeatureStore

        store = FeatureStore.open(args.store)
        rows = [store.read(u) for u in store.units()[:4]]
        crops = np.concatenate([g.values[g.valid] for g in rows])[:96]
        report(f"store {args.store}", crops)
    report("astronaut (real face, 2 px jitter)", astronaut_crops())


if __name__ == "__main__":
    main()
