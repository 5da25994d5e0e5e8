"""Predictions for a bare folder of videos (no annotations): one CSV per video (frame, time, valence,
arousal; frame counts from 0, time is the frame's start in seconds: k / fps, or the recorded presentation
time of a variable-rate video, as label frames) and one plot."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from cache.frametimes import FrameClock
from cache.location import Location, as_location, parent
from cache.manifest import Manifest, Track
from cache.media import probe_video
from extract.bare import extract_videos, extractable
from extract.runner import RunSummary
from train.config import TrainConfig
from train.results.restore import LoadedRun, load_run, predict_tracks
from train.runs.folder import RunDir
from train.runs.lock import refuse_running
from train.scoring.report import plot_track

log = logging.getLogger(__name__)

VIDEO_CSV_HEADER = "frame,time,valence,arousal"


@dataclass
class VideoPredictions:
    written: list[Path] = field(default_factory=list)  # CSVs
    plots: list[Path] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # "video: reason"
    notes: list[str] = field(default_factory=list)  # predicted, but some feature missing (masked)


def write_video_csv(path: Path, va: np.ndarray, starts: np.ndarray) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8", newline="") as handle:
        handle.write(VIDEO_CSV_HEADER + "\n")
        for k, (v, a) in enumerate(va):
            handle.write(f"{k},{starts[k]:.6f},{v:.6f},{a:.6f}\n")
    tmp.replace(path)
    return path


def predict_videos(loaded: LoadedRun, tracks: list[Track], out_dir: Path, allow_missing: bool = False) -> VideoPredictions:
    """Predict every frame of every track (one per video) that has every feature the run needs; the others
    are listed in `skipped`. With allow_missing, a track that lacks some (e.g. no audio) is predicted with
    them masked, as in training, and noted; one with none of the model's inputs never is."""
    from train.scoring.evaluate import input_features

    out = VideoPredictions()
    ready: list[Track] = []
    inputs = input_features(loaded.model, list(loaded.sources))
    for track in tracks:
        missing = [n for n, s in loaded.sources.items() if not s.store.is_complete(s.group_for(track))]
        if all(n in missing for n in inputs):
            out.skipped.append(f"{track.video}: no features {', '.join(missing)}")
            continue
        if missing and not allow_missing:
            out.skipped.append(f"{track.video}: no {', '.join(missing)} (--allow-missing masks it)")
            continue
        if missing:
            out.notes.append(f"{track.video}: no {', '.join(missing)} (masked)")
        ready.append(track)
    if not ready:
        return out
    first = next(iter(loaded.sources.values()), None)
    clock = FrameClock.open(parent(first.store.path) if first is not None else None)
    for track in ready:  # one row per presented frame, never per frame the container only declares
        if track.labels is None and not track.n_frames:
            track.n_frames = clock.presented(track.video_stem)
    preds = predict_tracks(loaded, ready)
    for track in ready:
        if track.name not in preds:  # the dataset left it out: its video cannot be probed
            out.skipped.append(f"{track.video}: the video cannot be read")
            continue
        fps = float(probe_video(track.video).fps)
        va = preds[track.name]
        starts = clock.label_times(track.video_stem, len(va), fps)[:, 0]
        out.written.append(write_video_csv(Path(out_dir) / f"{track.name}.csv", va, starts))
        plot = Path(out_dir) / f"{track.name}.png"
        plot_track(track.name, fps, va, None, None, plot)
        out.plots.append(plot)
    return out


@dataclass
class BareVideoPlan:
    """What `predict RUN --videos` extracts for a run, and where (the run's own store settings, same fingerprints)."""

    run: RunDir
    cfg: TrainConfig
    target: Location  # where the videos' features go
    made: list[str]  # features an extractor makes
    other: list[str]  # features read from `target` as they are


def bare_video_plan(run: str | Path, runs_dir: Path, cache_dir: str | None) -> BareVideoPlan:
    """Features go to `cache_dir`, default `video-features` beside the runs folder."""
    rd = RunDir.resolve(run, runs_dir)
    refuse_running(rd.path)
    cfg = TrainConfig.load(rd.config)
    target = as_location(cache_dir) if cache_dir else rd.path.resolve().parent.parent / "video-features"
    made, other = extractable(cfg.data.features)
    return BareVideoPlan(rd, cfg, target, made, other)


def extract_bare_videos(plan: BareVideoPlan, videos: Path, models_dir: Path, device: str) -> tuple[Manifest, RunSummary]:
    """The run's features of every video under `videos`, made as the run's own stores were."""
    return extract_videos(videos, plan.made, plan.target, reference_cache=plan.cfg.data.cache_dir, models_dir=models_dir,
                          device=device)


def predict_bare_videos(plan: BareVideoPlan, manifest: Manifest, runs_dir: Path, out: Path | None, device: str,
                        allow_missing: bool = False) -> tuple[Path, VideoPredictions]:
    """One CSV and one plot per video into `out` (default RUN/predictions/videos)."""
    loaded = load_run(plan.run.path, runs_dir, device, cache_dir=plan.target)
    out_dir = out or plan.run.predictions / "videos"
    return out_dir, predict_videos(loaded, manifest.tracks, out_dir, allow_missing)
