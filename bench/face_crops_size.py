"""What each `face_crops` codec costs and loses, on real faces; the projected Aff-Wild2 size.

    python bench/face_crops_size.py                          # astronaut (96 frames) + 200 lfw_subset faces
    python bench/face_crops_size.py --n 32 --lfw 40          # quicker
    python bench/face_crops_size.py --store artifacts/features/face_crops.zarr   # + crops of a store

Faces: scikit-image's astronaut rendered as the sample videos do (`cache/sample_data.FaceRenderer`:
expression warps and a rigid head motion), and its 200 real `lfw_subset` faces (25 px, upscaled to the
tile and moved by a random rotation / shift); both cropped as `face_crops` does (box crop at 256 px,
margin 0.1, then resize to 224). For `lossless` and `jpeg:85/90/95` (`cache/crop_codec.py`), rows are
stored as the store does (chunks of 32 rows, blosc-zstd-3 over the encoded rows, bit shuffle for lossless):

- bytes per frame on disk and the projected Aff-Wild2 size (2,993,081 frames);
- PSNR (over the set) and mean SSIM of the decoded crops against the lossless ones;
- displacement of MediaPipe's 478 face-mesh landmarks (refined mesh, the real weights in its wheel) found
  on the decoded crop vs on the lossless crop, in crop pixels (mean over landmarks; median and p95 over
  frames), on the frames where the mesh finds the face in both;
- decode frames/s on one core (torch threads 1): blosc + torchvision decode_jpeg in batches of 32.
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
CODECS = ("lossless", "jpeg:85", "jpeg:90", "jpeg:95")


def to_input(crops: np.ndarray, size: int = 224) -> np.ndarray:
    from PIL import Image

    return np.stack([np.asarray(Image.fromarray(c).resize((size, size), Image.BICUBIC)) for c in crops])


def astronaut_crops(n: int = 96, seed: int = 0) -> np.ndarray:
    """The sample videos' face: expression warps and head motion, cropped by its face box."""
    from cache.sample_data import FaceRenderer, HeadPose
    from extract.base import crop_faces

    rng = np.random.default_rng(seed)
    face = FaceRenderer(size=256)
    frames, boxes = [], []
    for _ in range(n):
        pose = HeadPose(*rng.normal(0, [3, 3, 4]))
        frames.append(face.render(*rng.uniform(-1, 1, 2), rng.uniform(0, 1), pose))
        boxes.append(face.face_box(pose) + rng.normal(0, 2, 4))  # a detector's box jitter
    return to_input(crop_faces(frames, np.array(boxes), 256, 0.1))


def lfw_crops(n: int = 200, seed: int = 0) -> np.ndarray:
    """scikit-image's real lfw_subset faces (the first n), upscaled and moved as the sample moves a face."""
    import cv2
    import skimage.data

    from extract.base import crop_faces

    faces = skimage.data.lfw_subset()[:n]  # (200, 25, 25) float gray
    rng = np.random.default_rng(seed)
    frames, boxes = [], []
    for f in faces:
        tile = cv2.resize((np.clip(f, 0, 1) * 255).astype(np.uint8), (256, 256), interpolation=cv2.INTER_CUBIC)
        tile = np.repeat(tile[..., None], 3, axis=2)
        matrix = cv2.getRotationMatrix2D((128.0, 128.0), float(rng.normal(0, 4)), 1.0)
        matrix[:, 2] += rng.normal(0, 3, 2)
        frames.append(cv2.warpAffine(tile, matrix, (256, 256), borderMode=cv2.BORDER_REFLECT101))
        boxes.append(np.array([28.0, 28.0, 228.0, 228.0]) + rng.normal(0, 2, 4))
    return to_input(crop_faces(frames, np.array(boxes), 256, 0.1))


def blosc_of(codec: str):
    """The blosc compressor a face_crops store of this codec uses (extract/face_crops.py crop_layout)."""
    from numcodecs import Blosc

    from extract.face_crops import crop_layout

    layout = crop_layout(codec)
    shuffle = {"shuffle": Blosc.SHUFFLE, "bitshuffle": Blosc.BITSHUFFLE, "noshuffle": Blosc.NOSHUFFLE}[layout.shuffle]
    return Blosc(layout.cname, layout.clevel, shuffle)


def stored_bytes(rows: np.ndarray, codec: str) -> float:
    """Bytes per row as the store writes them (face_crops' layout over chunks of 32 rows)."""
    blosc = blosc_of(codec)
    return sum(len(blosc.encode(np.ascontiguousarray(rows[a : a + CHUNK]))) for a in range(0, len(rows), CHUNK)) / len(rows)


def decode_rate(codec, rows: np.ndarray, size: int, budget_s: float = 3.0) -> float:
    """Frames/s on one core: blosc decompression of stored chunks + the codec's batched decode."""
    import torch

    torch.set_num_threads(1)
    blosc = blosc_of(codec.name)
    chunks = [blosc.encode(np.ascontiguousarray(rows[a : a + CHUNK])) for a in range(0, len(rows), CHUNK)]
    done, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < budget_s or not done:
        for c in chunks:
            block = np.frombuffer(blosc.decode(c), dtype=np.uint8).reshape(-1, *rows.shape[1:])
            codec.decode(block, size, "cpu", 1)
            done += len(block)
    return done / (time.perf_counter() - t0)


class Mesh:
    """MediaPipe's face mesh (478 refined landmarks, static images) in crop pixels."""

    def __init__(self) -> None:
        import mediapipe as mp

        self.mesh = mp.solutions.face_mesh.FaceMesh(static_image_mode=True, max_num_faces=1, refine_landmarks=True)

    def __call__(self, image: np.ndarray) -> np.ndarray | None:
        found = self.mesh.process(np.ascontiguousarray(image)).multi_face_landmarks
        if not found:
            return None
        h, w = image.shape[:2]
        return np.array([(p.x * w, p.y * h) for p in found[0].landmark])


def report(label: str, crops: np.ndarray, mesh: Mesh | None, rate_s: float) -> list[str]:
    from skimage.metrics import peak_signal_noise_ratio, structural_similarity

    from cache.crop_codec import CropCodec

    size = crops.shape[1]
    lines = [f"== {label}: {len(crops)} crops of {size} px, raw {crops[0].nbytes:,} B/frame",
             f"  {'codec':9s} {'B/frame':>9s} {'Aff-Wild2':>10s} {'PSNR dB':>8s} {'SSIM':>6s} "
             f"{'landmark px mean/median/p95 (faces)':>36s} {'decode fr/s/core':>17s}"]
    ref = [mesh(c) for c in crops] if mesh else []
    for name in CODECS:
        codec = CropCodec.parse(name)
        rows = codec.encode(crops)
        bpf = stored_bytes(rows, name)
        back = codec.decode(rows, size).numpy()
        if codec.lossy:
            psnr = peak_signal_noise_ratio(crops, back, data_range=255)  # over the set: a frame may be exact
            ssim = np.mean([structural_similarity(a, b, channel_axis=2, data_range=255) for a, b in zip(crops, back)])
        else:
            assert np.array_equal(back, crops), "lossless must give the pixels back"
            psnr, ssim = float("inf"), 1.0
        moved = "-"
        if mesh and codec.lossy:
            d = [np.linalg.norm(mesh(b) - r, axis=1).mean() for r, b in zip(ref, back) if r is not None and mesh(b) is not None]
            if d:
                moved = f"{np.mean(d):.3f}/{np.median(d):.3f}/{np.percentile(d, 95):.3f} ({len(d)})"
        rate = decode_rate(codec, rows, size, rate_s)
        lines.append(f"  {name:9s} {bpf:9,.0f} {bpf * AFFWILD2_FRAMES / 1e9:8.0f} GB {psnr:8.2f} {ssim:6.4f} "
                     f"{moved:>36s} {rate:17,.0f}")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=96, help="astronaut frames")
    parser.add_argument("--lfw", type=int, default=200, help="lfw_subset faces (at most 200)")
    parser.add_argument("--rate-seconds", type=float, default=2.0, help="time per decode-rate measurement")
    parser.add_argument("--no-mesh", action="store_true", help="skip the MediaPipe landmark displacement")
    parser.add_argument("--store", type=Path, help="a face_crops store: its first 96 valid crops are measured too")
    args = parser.parse_args()
    mesh = None if args.no_mesh else Mesh()
    sets = [("astronaut as the sample renders it", astronaut_crops(args.n)), ("lfw_subset (real faces)", lfw_crops(args.lfw))]
    if args.store:
        from cache.crops import CropReader
        from cache.store import FeatureStore

        store = FeatureStore.open(args.store)
        reader = CropReader(store)
        pieces = []
        for unit in store.units()[:4]:
            _, valid, _ = store.read_index(unit)
            pieces.append(reader.read(unit, np.flatnonzero(valid)[:96]).numpy())
        sets.append((f"store {args.store}", np.concatenate(pieces)[:96]))
    for label, crops in sets:
        print("\n".join(report(label, crops, mesh, args.rate_seconds)), flush=True)


if __name__ == "__main__":
    main()
