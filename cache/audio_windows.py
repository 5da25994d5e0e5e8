"""RAS's audio windows, as its public code makes them: one rule for the audio branch's training filter,
`audio_reliability` and `pipeline.py windows --level audio_window`.

Sources (RAS's repository, src_audio_and_fusion/):
- grid: scripts/make_s2s_windows.py `slice_audio` (make_s2s_windows.yaml: win_max_length 4, win_shift 2,
  win_min_length 1): windows [k·2, k·2 + 4) s while they fit, then one partial window [start, duration)
  (dropped when shorter than 1 s); duration = frame count / fps. Frames: round(start·fps), round(end·fps)
  (numpy's round, half to even).
- block targets (s2s_frames 4): block i of a window starting at frame f0 is frames
  [f0 + round(i·fps), f0 + round((i + 1)·fps)), the block reaching the window's end cut at its end frame; a
  block starting at or after the end has none; target = the mean of its valid label frames. The published
  `segment_mean_per_bins` takes floor(t0·fps) .. ceil(t1·fps) instead; RAS's released windows follow the
  frame rule (all 25,624 val block targets; floor/ceil matches 23,609). Overall target: `segment_mean` over
  the window's frames [start_frame, end_frame).
- open seconds and coverage: scripts/make_audio_windows.py (make_audio_windows.yaml): the open flag is
  smoothed per frame (closed gaps <= round(0.15·fps) frames between open runs filled, then open runs
  <= round(0.20·fps) frames removed; frames without a measurement count as closed); open seconds = open
  frames in [start_frame, end_frame) / fps; coverage = frames with a detected face/mouth in that range /
  (end_frame − start_frame).
- reliable (RAS's `use_for_audio`) = open seconds >= 1.0 and coverage >= 0.8: the fusion mask of
  src/fusion/data/abaw_mm_dataset.py `_audio_om_filter_pass` (configs/mm_cfg_va_s2s.yaml audio_min_open_sec 1,
  audio_min_coverage_ratio 0.8). make_audio_windows.py as published asks 0.25 × the window's length
  (min_open_ratio), the same for a full 4 s window; RAS's released windows follow 1.0 s on the partial last
  windows too (e.g. val 1-30-1280x720 #171: 0.93 s open of 3.17 s, not kept), so 1.0 s is the rule here.
- training (src/audio/data/abaw_va_dataset.py): reliable windows with at least ceil(4 / 2) = 2 valid blocks.

One deliberate difference: RAS's `load_openmouth_dense` indexes its mouth CSVs by their frame numbers,
which count from 1 (`00001` is the first frame, like the label files), as if they counted from 0, so its
mouth flags sit one frame late. Here mouth frame k (1-based) is frame k − 1 (0-based), as the label files
are read; this one-frame shift is the cause of the remaining differences with RAS's released windows
(bench/ras_windows.py).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cache.windows import sliding_windows

EPS = 1e-9


def _runs(flag: np.ndarray) -> list[tuple[int, int, bool]]:
    """(start, end, value) runs of a boolean array."""
    if not len(flag):
        return []
    edges = np.flatnonzero(np.diff(flag.astype(np.int8))) + 1
    starts = np.concatenate([[0], edges])
    ends = np.concatenate([edges, [len(flag)]])
    return [(int(s), int(e), bool(flag[s])) for s, e in zip(starts, ends)]


def fill_gaps_drop_blips(flag: np.ndarray, max_gap: float, max_blip: float) -> np.ndarray:
    """Closed runs of at most `max_gap` frames between open runs become open, then open runs of at most
    `max_blip` frames become closed (RAS's `smooth_open_flags`, scripts/make_audio_windows.py)."""
    flag = np.asarray(flag, dtype=bool).copy()
    for s, e, value in _runs(flag):
        if not value and s > 0 and e < len(flag) and (e - s) <= max_gap:
            flag[s:e] = True
    for s, e, value in _runs(flag):
        if value and (e - s) <= max_blip:
            flag[s:e] = False
    return flag


@dataclass(frozen=True)
class AudioWindowRule:
    """RAS's values; each cites its file in RAS's code (src_audio_and_fusion/...)."""

    window_s: float = 4.0  # scripts/make_s2s_windows.yaml win_max_length
    hop_s: float = 2.0  # scripts/make_s2s_windows.yaml win_shift
    min_window_s: float = 1.0  # scripts/make_s2s_windows.yaml win_min_length
    blocks: int = 4  # scripts/make_s2s_windows.yaml s2s_frames
    fill_closed_s: float = 0.15  # scripts/make_audio_windows.yaml smoothing.max_gap_sec
    drop_open_s: float = 0.20  # scripts/make_audio_windows.yaml smoothing.min_open_sec
    min_open_s: float = 1.0  # configs/mm_cfg_va_s2s.yaml audio_min_open_sec (= make_audio_windows.yaml 0.25 x 4 s)
    min_coverage: float = 0.8  # make_audio_windows.yaml min_coverage_ratio; mm_cfg_va_s2s.yaml audio_min_coverage_ratio
    min_valid_blocks: int = 2  # src/audio/data/abaw_va_dataset.py: ceil(s2s_steps / 2)

    def __post_init__(self) -> None:
        if self.window_s <= 0 or self.hop_s <= 0 or self.blocks < 1:
            raise ValueError("audio windows: window_s, hop_s and blocks must be positive")
        if self.min_open_s < 0 or not 0 <= self.min_coverage <= 1:
            raise ValueError("audio windows: min_open_s must be >= 0 and min_coverage a fraction in [0, 1]")


@dataclass(frozen=True)
class AudioWindows:
    """W windows of one track. Targets are NaN where no valid label frame falls in the block/window."""

    times: np.ndarray  # (W, 2) seconds [start, end)
    frames: np.ndarray  # (W, 2) int, 0-based frames [start, end)
    open_s: np.ndarray  # (W,) seconds of smoothed open mouth
    coverage: np.ndarray  # (W,) share of the window's frames with a detected face/mouth
    reliable: np.ndarray  # (W,) bool: open >= min_open_s and coverage >= min_coverage (RAS's use_for_audio)
    block_targets: np.ndarray  # (W, blocks, 2)
    block_valid: np.ndarray  # (W, blocks) bool
    target: np.ndarray  # (W, 2)
    train: np.ndarray  # (W,) bool: use_for_audio and >= min_valid_blocks valid blocks (False without labels)

    def __len__(self) -> int:
        return len(self.times)


def ras_round(x: float) -> int:
    """Python's round (half to even), as RAS turns seconds into frame counts."""
    return int(round(x))


def window_grid(duration: float, rule: AudioWindowRule) -> np.ndarray:
    """(W, 2) seconds: RAS's `slice_audio` grid over [0, duration) (partial last window)."""
    return sliding_windows(duration, rule.window_s, rule.hop_s, rule.min_window_s)


def smooth_open(open_flag: np.ndarray, fps: float, rule: AudioWindowRule) -> np.ndarray:
    """RAS's per-frame smoothing of the open flag (frame counts rounded as RAS does, at least 1)."""
    max_gap = max(1, ras_round(rule.fill_closed_s * fps))
    max_blip = max(1, ras_round(rule.drop_open_s * fps))
    return fill_gaps_drop_blips(np.asarray(open_flag, bool), max_gap, max_blip)


def _mean_valid(values: np.ndarray, valid: np.ndarray, a: int, b: int) -> tuple[np.ndarray, bool]:
    a, b = max(0, a), min(b, len(values))
    if b <= a or not valid[a:b].any():
        return np.full(2, np.nan), False
    return values[a:b][valid[a:b]].mean(axis=0), True


def audio_windows(
    n_frames: int,
    fps: float,
    rule: AudioWindowRule = AudioWindowRule(),
    open_flag: np.ndarray | None = None,
    detected: np.ndarray | None = None,
    labels: np.ndarray | None = None,
    label_valid: np.ndarray | None = None,
) -> AudioWindows:
    """RAS's audio windows of a track of `n_frames` frames at `fps`: `open_flag` and `detected` are per
    0-based frame (raw, before smoothing; missing frames are closed and undetected; None: none), `labels`
    (T, 2) and `label_valid` (T,) per label frame (None: no targets, nothing to train on)."""
    if fps <= 0:
        raise ValueError(f"audio windows: fps must be positive, got {fps}")
    times = window_grid(n_frames / fps, rule)
    frames = np.rint(times * fps).astype(np.int64).reshape(-1, 2)
    flag = np.zeros(n_frames, bool) if open_flag is None else np.asarray(open_flag, bool).reshape(-1)
    seen = np.zeros(n_frames, bool) if detected is None else np.asarray(detected, bool).reshape(-1)
    flag = smooth_open(flag, fps, rule)
    open_cum = np.concatenate([[0], np.cumsum(flag)])
    seen_cum = np.concatenate([[0], np.cumsum(seen)])
    s = np.clip(frames[:, 0], 0, len(flag))
    e = np.clip(frames[:, 1], 0, len(flag))
    open_s = (open_cum[e] - open_cum[s]) / fps
    span = frames[:, 1] - frames[:, 0]
    seen_s, seen_e = np.clip(frames[:, 0], 0, len(seen)), np.clip(frames[:, 1], 0, len(seen))
    coverage = np.where(span > 0, (seen_cum[seen_e] - seen_cum[seen_s]) / np.maximum(span, 1), 0.0)
    reliable = (open_s >= rule.min_open_s - EPS) & (coverage >= rule.min_coverage - EPS) & (span > 0)

    n, nb = len(times), rule.blocks
    block_targets = np.full((n, nb, 2), np.nan)
    block_valid = np.zeros((n, nb), bool)
    target = np.full((n, 2), np.nan)
    if labels is not None:
        values = np.asarray(labels, np.float64).reshape(-1, 2)
        valid = np.ones(len(values), bool) if label_valid is None else np.asarray(label_valid, bool).reshape(-1)
        block_s = rule.window_s / nb
        for w, (t_start, t_end) in enumerate(times):
            for i in range(nb):
                t0, t1 = t_start + i * block_s, min(t_start + (i + 1) * block_s, t_end)
                if t0 >= t_end:
                    continue
                a = int(frames[w, 0]) + ras_round(i * block_s * fps)
                b = int(frames[w, 0]) + ras_round((i + 1) * block_s * fps) if t1 < t_end else int(frames[w, 1])
                block_targets[w, i], block_valid[w, i] = _mean_valid(values, valid, a, max(b, a + 1))
            target[w] = _mean_valid(values, valid, int(frames[w, 0]), int(frames[w, 1]))[0]
    train = reliable & (block_valid.sum(axis=1) >= rule.min_valid_blocks) if labels is not None else np.zeros(n, bool)
    return AudioWindows(times, frames, open_s, coverage, reliable, block_targets, block_valid, target, train)
