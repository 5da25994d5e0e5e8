"""RAS's audio-window rules shared by the audio-window levels (train/data/window_audio.py, the audio model;
train/data/window_fusion.py, the fusion sample): the rule with a run's `data.window_filter` overrides,
matching a store's windows to a level's windows, and the mouth rule on `audio_reliability`'s values."""

from __future__ import annotations

import dataclasses
from collections.abc import Container, Mapping
from typing import TYPE_CHECKING

import numpy as np

from cache.audio_windows import AudioWindowRule

if TYPE_CHECKING:
    from cache.manifest import Track
    from train.data.sources import FeatureSource

RELIABILITY_FEATURE = "audio_reliability"
OPEN_S, COVERAGE = 0, 1  # audio_reliability columns: open_s, coverage, reliable


def best_match(values: np.ndarray, times: np.ndarray, valid: np.ndarray, spans: np.ndarray) -> np.ndarray:
    """(W, ...) for each span, the row of the valid window that overlaps it most (the same window when both
    follow RAS's grid; NaN where none reaches it). Not an overlap average: neighbouring windows overlap by
    half, and averaging them would blur the rule."""
    valid = np.asarray(valid, bool)
    values = np.asarray(values, np.float64)[valid]
    times = np.asarray(times, np.float64).reshape(-1, 2)[valid]
    out = np.full((len(spans), *values.shape[1:]), np.nan)
    for i, (s, e) in enumerate(np.asarray(spans, np.float64).reshape(-1, 2)):
        overlap = np.minimum(times[:, 1], e) - np.maximum(times[:, 0], s)
        if len(overlap) and overlap.max() > 0:
            out[i] = values[int(np.argmax(overlap))]
    return out


def reliability_at(source: FeatureSource, units: Container[str], track: Track,
                   spans: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """(open_s, coverage) per span from the track's `audio_reliability` windows (best_match); None when the
    store has no group for the track (`units`: the store's groups)."""
    group = source.group_for(track)
    if group not in units:
        return None
    raw = source.read(group)
    vals = best_match(raw.values.reshape(len(raw.values), -1)[:, [OPEN_S, COVERAGE]], raw.times,
                      np.asarray(raw.valid, bool), spans)
    return vals[:, 0], vals[:, 1]


def is_reliable(open_s: np.ndarray, coverage: np.ndarray, rule: AudioWindowRule) -> np.ndarray:
    """RAS's mouth rule: open long enough and the mouth seen over enough of the window (NaN: not)."""
    return (np.nan_to_num(open_s) >= rule.min_open_s - 1e-9) & (np.nan_to_num(coverage) >= rule.min_coverage - 1e-9)


def window_rule(overrides: Mapping[str, float] | None) -> AudioWindowRule:
    """RAS's rule with `data.window_filter` overrides; ValueError naming unknown keys."""
    known = [f.name for f in dataclasses.fields(AudioWindowRule)]
    unknown = sorted(set(overrides or {}) - set(known))
    if unknown:
        raise ValueError(f"window_filter: unknown key(s) {unknown}; known: {', '.join(known)}")
    return AudioWindowRule(**dict(overrides or {}))
