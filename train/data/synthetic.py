"""Synthetic datasets with cached features for tests and benchmarks (no extraction involved).

Writes, under `root`: tiny real videos (a few frames at the track's fps, so the container gives the
fps), label files in the Aff-Wild2 layout, a test sample submission, and under `cache_dir` feature
stores: a per-track visual frame feature and a per-video 50 Hz audio feature. With `signal=True` the
features are noisy linear maps of the labels (so a head can learn them); otherwise random.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cache.manifest import CHALLENGE_DIR, SPLIT_DIRS, SUBMISSION_HEADER, video_stem
from cache.media import frame_times
from cache.store import FeatureMeta, FeatureStore, store_path


@dataclass
class SynthTrack:
    name: str
    split: str
    fps: float
    n_frames: int


@dataclass
class SynthConfig:
    tracks: list[SynthTrack]
    visual: str = "clip"
    visual_dim: int = 16
    audio: str = "wavlm"
    audio_dim: int = 8
    audio_rate: float = 50.0
    signal: bool = True
    noise: float = 0.3
    invalid_share: float = 0.05  # labels set to -5,-5
    no_face_share: float = 0.05  # visual rows marked invalid (one stretch per track)
    region_prototypes: bool = True
    seed: int = 0
    extra_stores: dict[str, int] = field(default_factory=dict)  # more visual stores: name -> dim


def default_tracks(n_train: int = 6, n_val: int = 3, n_test: int = 2, frames: tuple[int, int] = (300, 700), seed: int = 0) -> list[SynthTrack]:
    """A few tracks per split at mixed fps; the first two train tracks are the two people of one video."""
    rng = np.random.default_rng(seed)
    fps_choices = (30.0, 25.0, 15.0)
    out: list[SynthTrack] = []
    for split, n in (("train", n_train), ("val", n_val), ("test", n_test)):
        for i in range(n):
            name = f"{split}{i}"
            if split == "train" and i < 2:
                name = f"duo_{'left' if i == 0 else 'right'}"
            out.append(SynthTrack(name, split, fps_choices[i % 3], int(rng.integers(*frames))))
    duo = [t for t in out if t.name.startswith("duo_")]
    for t in duo[1:]:  # both people of a video share fps
        t.fps = duo[0].fps
    return out


def smooth_trace(rng: np.random.Generator, n: int, scale: float = 0.6) -> np.ndarray:
    """A smooth random series in (-1, 1) of n frames."""
    t = np.arange(n)
    out = np.zeros(n)
    for _ in range(3):
        period = rng.uniform(60, 400)
        out += rng.uniform(0.2, 0.5) * np.sin(2 * np.pi * t / period + rng.uniform(0, 2 * np.pi))
    return np.tanh(scale * out / 0.6).astype(np.float32)


def write_tiny_video(path: Path, fps: float, n_frames: int = 3) -> None:
    """A few black frames: enough for the container to carry the fps the dataset reads."""
    from cache.sample_data import write_av_file

    path.parent.mkdir(parents=True, exist_ok=True)
    write_av_file(path, np.zeros((n_frames, 16, 16, 3), np.uint8), fps)


def _write_labels(path: Path, va: np.ndarray, valid: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = ["valence,arousal"]
    lines += [f"{v:.4f},{a:.4f}" if ok else "-5,-5" for (v, a), ok in zip(va, valid)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def make_synthetic(root: Path, cache_dir: Path, cfg: SynthConfig) -> dict[str, np.ndarray]:
    """Write the dataset and the stores; return the true VA (T, 2) of every track (test included)."""
    root, cache_dir = Path(root), Path(cache_dir)
    rng = np.random.default_rng(cfg.seed)
    w_vis = rng.normal(size=(2, cfg.visual_dim)).astype(np.float32)
    w_aud = rng.normal(size=(1, cfg.audio_dim)).astype(np.float32)
    truth: dict[str, np.ndarray] = {}
    visual = FeatureStore.create_or_open(
        store_path(cache_dir, cfg.visual), FeatureMeta(name=cfg.visual, kind="frame", unit="track", model_ref="synthetic")
    )
    extras = {
        name: FeatureStore.create_or_open(store_path(cache_dir, name), FeatureMeta(name=name, unit="track", model_ref="synthetic"))
        for name in cfg.extra_stores
    }
    audio = FeatureStore.create_or_open(
        store_path(cache_dir, cfg.audio),
        FeatureMeta(name=cfg.audio, kind="frame", unit="video", model_ref="synthetic", config={"rate": cfg.audio_rate}),
    )
    if cfg.region_prototypes:
        visual.put_extra("region_prototypes", rng.normal(size=(9, cfg.visual_dim)).astype(np.float32))
    videos_done: set[str] = set()
    test_rows: list[str] = []
    test_names: list[str] = []
    for track in cfg.tracks:
        n = track.n_frames
        va = np.stack([smooth_trace(rng, n), smooth_trace(rng, n, 0.8)], axis=1)
        truth[track.name] = va
        stem = video_stem(track.name)
        if stem not in videos_done:
            write_tiny_video(root / "videos" / f"{stem}.mp4", track.fps)
        if track.split == "test":
            test_names.append(track.name)
            test_rows += [f"{track.name}/{k:05d}.jpg,0,0" for k in range(1, n + 1)]
        else:
            valid = np.ones(n, dtype=bool)
            n_bad = int(cfg.invalid_share * n)
            if n_bad:
                s = int(rng.integers(0, n - n_bad))
                valid[s : s + n_bad] = False
            _write_labels(root / "annotations" / CHALLENGE_DIR / SPLIT_DIRS[track.split] / f"{track.name}.txt", va, valid)
        times = frame_times(n, track.fps)
        noise = rng.normal(size=(n, cfg.visual_dim)).astype(np.float32)
        values = va @ w_vis + cfg.noise * noise if cfg.signal else noise
        face = np.ones(n, dtype=bool)
        n_gap = int(cfg.no_face_share * n)
        if n_gap:
            s = int(rng.integers(0, n - n_gap))
            face[s : s + n_gap] = False
        visual.write(track.name, values, times, face, attrs={"fps": track.fps, "frames": n})
        for name, dim in cfg.extra_stores.items():
            extras[name].write(track.name, rng.normal(size=(n, dim)).astype(np.float32), times, attrs={"fps": track.fps})
        if stem not in videos_done:
            videos_done.add(stem)
            duration = n / track.fps
            rows = int(np.ceil(duration * cfg.audio_rate))
            j = np.arange(rows)
            a_times = np.stack([j / cfg.audio_rate, (j + 1) / cfg.audio_rate], axis=1)
            centre_frames = np.clip(((j + 0.5) / cfg.audio_rate * track.fps).astype(int), 0, n - 1)
            a_noise = rng.normal(size=(rows, cfg.audio_dim)).astype(np.float32)
            a_values = va[centre_frames, 1:2] @ w_aud + cfg.noise * a_noise if cfg.signal else a_noise
            audio.write(stem, a_values, a_times, attrs={"rate": cfg.audio_rate})
    annotations = root / "annotations"
    annotations.mkdir(parents=True, exist_ok=True)
    if test_names:
        (annotations / "CVPR_10th_ABAW_VA_test_set_sample.txt").write_text(
            SUBMISSION_HEADER + "\n" + "\n".join(test_rows) + "\n", encoding="utf-8"
        )
    return truth


def _track_windows(duration: float, length_s: float, hop_s: float, min_s: float = 1.0) -> np.ndarray:
    """(W, 2) windows of `length_s` every `hop_s` over [0, duration), the last one cut at the end and
    kept only if at least `min_s` long (at least one window for any positive duration)."""
    starts = np.arange(0.0, duration, hop_s)
    ends = np.minimum(starts + length_s, duration)
    keep = (ends - starts) >= min(min_s, duration) - 1e-9
    return np.stack([starts[keep], ends[keep]], axis=1)


def _segment_means(va: np.ndarray, fps: float, windows: np.ndarray) -> np.ndarray:
    """Mean true VA over the frames of each [start, end) window (at least one frame each)."""
    return np.stack([va[int(s * fps) : max(int(np.ceil(e * fps)), int(s * fps) + 1)].mean(0) for s, e in windows])


def write_segment_store(
    cache_dir: Path, name: str, tracks: list[SynthTrack], truth: dict[str, np.ndarray], dim: int = 12,
    segment_s: float = 4.0, hop_s: float = 2.0, noise: float = 0.3, seed: int = 1,
) -> None:
    """A per-track `segment` feature (like qwen3vl): one row per `segment_s` segment every `hop_s`, a
    noisy linear map of the mean true VA over the segment's frames."""
    _write_segments(cache_dir, name, tracks, truth, dim, segment_s, hop_s, seed,
                    lambda signal, rng: signal + noise * rng.normal(size=signal.shape), {})


def _write_segments(
    cache_dir: Path, name: str, tracks: list[SynthTrack], truth: dict[str, np.ndarray], dim: int,
    segment_s: float, hop_s: float, seed: int,
    values: Callable[[np.ndarray, np.random.Generator], np.ndarray], attrs: dict[str, Any],
) -> None:
    """The segment-store writer both synthetic segment features share: per track, `values(signal, rng)`
    of the segments' signal (a fixed random linear map of each segment's mean true VA) is written."""
    rng = np.random.default_rng(seed)
    w = rng.normal(size=(2, dim)).astype(np.float32)
    store = FeatureStore.create_or_open(
        store_path(cache_dir, name), FeatureMeta(name=name, kind="segment", unit="track", model_ref="synthetic")
    )
    for track in tracks:
        win = _track_windows(track.n_frames / track.fps, segment_s, hop_s)
        signal = _segment_means(truth[track.name], track.fps, win) @ w
        store.write(track.name, values(signal, rng), win, attrs={"fps": track.fps, **attrs})


def write_reliability_store(
    cache_dir: Path, tracks: list[SynthTrack], reliable_share: float = 0.6, window_s: float = 4.0,
    hop_s: float = 2.0, seed: int = 2, name: str = "audio_reliability",
) -> None:
    """A per-track `window` feature laid out like extract's `audio_reliability`: columns (open_s,
    coverage, reliable 0/1) per `window_s` window every `hop_s`; reliable drawn at random (open >= 1.0 s)."""
    rng = np.random.default_rng(seed)
    store = FeatureStore.create_or_open(
        store_path(cache_dir, name),
        FeatureMeta(name=name, kind="window", unit="track", model_ref="synthetic",
                    config={"columns": ["open_s", "coverage", "reliable"]}),
    )
    for track in tracks:
        win = _track_windows(track.n_frames / track.fps, window_s, hop_s)
        reliable = (rng.random(len(win)) < reliable_share).astype(np.float32)
        open_s = np.where(reliable > 0, rng.uniform(1.0, 4.0, len(win)), rng.uniform(0.0, 0.99, len(win)))
        values = np.stack([open_s, np.ones(len(win)), reliable], axis=1).astype(np.float32)
        store.write(track.name, values, win, attrs={"fps": track.fps})


def write_multirow_segment_store(
    cache_dir: Path, name: str, tracks: list[SynthTrack], truth: dict[str, np.ndarray], dim: int = 12,
    rows: dict[str, float] | None = None, segment_s: float = 4.0, hop_s: float = 2.0, seed: int = 3,
) -> None:
    """A per-track segment store laid out like `qwen3vl`: values (N, R, dim) with rows named by the group
    attribute `row_names`; row r is signal_r x (linear map of the segment's mean VA) + noise, so rows can
    be told apart by how well they predict (default: mm_last informative, vis_mean almost noise)."""
    rows = rows or {"mm_mean": 0.5, "mm_last": 1.0, "vis_mean": 0.05, "vis_last": 0.05}
    gains = list(rows.values())
    _write_segments(
        cache_dir, name, tracks, truth, dim, segment_s, hop_s, seed,
        lambda signal, rng: np.stack([g * signal + 0.3 * rng.normal(size=signal.shape) for g in gains], axis=1).astype(np.float32),
        {"row_names": list(rows)},
    )
