"""The windows a run would train or predict on, one row each (`pipeline.py windows`): a recipe checked before
a day of GPU time.

Levels (train/data/levels.py):
- `frame`: `window` label frames every `stride` plus one aligned to the end (train/data/dataset.py).
- `segment`: `window` rows of the first feature (a segment store) every `stride`, plus one aligned to the end.
- `audio_window`: RAS's audio windows (cache/audio_windows.py): 4 s every 2 s over the video's frames, the
  last one partial, open seconds and coverage from the `mouth` store (its open flag per frame, smoothed as
  RAS does; no `mouth` store or group: empty), block targets, and the training filter of
  train/data/window_audio.py (reliable and >= 2 labelled blocks). An `audio_window` run over 50 Hz rows
  with window 200 / stride 100 trains on exactly these windows.
Per row: track, window index, start/end frame (0-based, end exclusive), start/end time (s), open seconds,
coverage, reliable, used_for_training (the window passes the level's training filter: every labelled window
for frame/segment), per-block and overall targets (mean of the valid label frames; empty when none).
"""

from __future__ import annotations

import csv
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from cache.manifest import Track
from cache.media import VideoInfo, probe_video
from cache.store import FeatureStore, store_path
from cache.audio_windows import AudioWindowRule, audio_windows
from extract.reliability import mouth_on_frames, open_column
from train.data.dataset import window_starts
from train.data.sources import open_features

LEVELS = ("frame", "segment", "audio_window")
MOUTH_FEATURE = "mouth"


def columns(blocks: int) -> list[str]:
    """The CSV header for windows of `blocks` blocks."""
    per_block = [f"{d}_b{i}" for i in range(blocks) for d in ("valence", "arousal")]
    return ["track", "window", "start_frame", "end_frame", "start_time", "end_time", "open_s", "coverage",
            "reliable", "used_for_training", *per_block, "valence", "arousal"]


def _label_mean(track: Track, start: int, end: int) -> np.ndarray:
    if track.labels is None:
        return np.full(2, np.nan)
    values, valid = np.asarray(track.labels.values, np.float64), np.asarray(track.labels.valid, bool)
    a, b = max(0, start), min(end, len(values))
    if b <= a or not valid[a:b].any():
        return np.full(2, np.nan)
    return values[a:b][valid[a:b]].mean(axis=0)


def _mouth(cache_dir: Path, track: Track, n_frames: int, fps: float) -> tuple[np.ndarray, np.ndarray] | None:
    """(open, detected) per frame from the `mouth` store, None without a store or a complete group."""
    path = store_path(cache_dir, MOUTH_FEATURE)
    try:
        store = FeatureStore.open(path)
    except (FileNotFoundError, KeyError):
        return None
    if track.name not in store.units():
        return None
    group = store.read(track.name)
    values = group.values.reshape(len(group.values), -1).astype(np.float32)
    return mouth_on_frames(values[:, open_column(store, track.name, values)], group.times, group.valid, n_frames, fps)


def _row(track: Track, w: int, frames: tuple[int, int], times: tuple[float, float], blocks: int, **extra) -> dict:
    row = {"track": track.name, "window": w, "start_frame": frames[0], "end_frame": frames[1],
           "start_time": times[0], "end_time": times[1], "open_s": "", "coverage": "", "reliable": "",
           "used_for_training": track.labels is not None}
    row.update({f"{d}_b{i}": "" for i in range(blocks) for d in ("valence", "arousal")})
    target = _label_mean(track, *frames)
    row.update(valence=target[0], arousal=target[1])
    row.update(extra)
    return row


def audio_window_rows(track: Track, info: VideoInfo, cache_dir: Path, rule: AudioWindowRule) -> list[dict]:
    """RAS's audio windows of one track (see the module doc)."""
    n, fps = int(info.n_frames), float(info.fps)
    mouth = _mouth(cache_dir, track, n, fps)
    labels = None if track.labels is None else np.asarray(track.labels.values, np.float64)
    valid = None if track.labels is None else np.asarray(track.labels.valid, bool)
    w = audio_windows(n, fps, rule, *(mouth or (None, None)), labels, valid)
    rows = []
    for i in range(len(w)):
        extra = {"used_for_training": bool(w.train[i]) and mouth is not None,
                 "valence": w.target[i, 0], "arousal": w.target[i, 1]}
        if mouth is not None:
            extra.update(open_s=float(w.open_s[i]), coverage=float(w.coverage[i]), reliable=bool(w.reliable[i]))
        for b in range(rule.blocks):
            extra.update({f"valence_b{b}": w.block_targets[i, b, 0], f"arousal_b{b}": w.block_targets[i, b, 1]})
        rows.append(_row(track, i, (int(w.frames[i, 0]), int(w.frames[i, 1])),
                         (float(w.times[i, 0]), float(w.times[i, 1])), rule.blocks, **extra))
    return rows


def list_windows(
    tracks: Sequence[Track], level: str, window: int, stride: int, cache_dir: Path,
    rule: AudioWindowRule = AudioWindowRule(), first_feature: str | None = None,
    video_info: Callable[[Path], VideoInfo] = probe_video,
) -> list[dict]:
    """One row per window of each track at `level` (see the module doc); `video_info` gives a video's fps
    and frame count (a probe of the file by default)."""
    if level not in LEVELS:
        raise ValueError(f"level must be one of {', '.join(LEVELS)}, got {level!r}")
    if level == "segment" and not first_feature:
        raise ValueError("level 'segment' windows run over the first feature's rows: name it (--features)")
    source = open_features(Path(cache_dir), [first_feature])[first_feature] if level == "segment" else None
    rows: list[dict] = []
    for track in tracks:
        info = video_info(track.video)
        fps = float(info.fps)
        if level == "audio_window":
            rows += audio_window_rows(track, info, Path(cache_dir), rule)
        elif level == "frame":
            n = len(track.labels) if track.labels is not None else int(track.n_frames or info.n_frames)
            for w, s in enumerate(window_starts(n, window, stride) if n else []):
                e = min(s + window, n)
                rows.append(_row(track, w, (s, e), (s / fps, e / fps), rule.blocks))
        else:
            group = source.group_for(track)
            if group not in source.store.units():
                continue
            times = source.read(group).times
            for w, s in enumerate(window_starts(len(times), window, stride) if len(times) else []):
                e = min(s + window, len(times))
                t0, t1 = float(times[s, 0]), float(times[e - 1, 1])
                rows.append(_row(track, w, (int(np.rint(t0 * fps)), int(np.rint(t1 * fps))), (t0, t1), rule.blocks))
    return rows


def write_windows_csv(rows: Sequence[dict], path: Path, blocks: int = AudioWindowRule().blocks) -> None:
    """The rows as CSV (NaN targets as empty cells)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns(blocks))
        writer.writeheader()
        for row in rows:
            writer.writerow({k: "" if isinstance(v, float) and np.isnan(v) else v for k, v in row.items()})
