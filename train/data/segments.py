"""Segment-level training (RAS's behaviour branch): sequences of segment embeddings instead of frames.

With `DataConfig.level = "segment"` a window's positions are the segments of the run's first feature
(a segment store such as `qwen3vl:mm_last`, 4 s segments every 2 s), so `window`/`stride` count segments
(RAS: 16 / 8). Any head runs over them (RAS: `mamba`, 12 layers, d 256, state 8, conv 5). Everything
else is the ordinary loop, evaluation, prediction and export:

- a segment's inputs: the grid feature's own row; any other feature aligned onto the segment's
  [start, end) by `cache.align.align_to_frames` (overlap-weighted mean);
- a segment's target: the mean of the valid frame labels over the segment, by the same function
  (label frames at the dataset's frame clock times; frames cut by a segment edge count by their overlap, so
  when the edges fall on frame edges it is the plain mean); a segment with no valid label is masked;
- predictions: overlapping windows are averaged per segment, then each label frame takes the
  overlap-weighted mean of the segments over it (segment-to-frame expansion with overlap averaging,
  again `align_to_frames`); a frame no segment reaches counts as featureless (interpolated later).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from cache.align import align_to_frames
from cache.manifest import Track
from train.data.dataset import AlignedTrack, TrackDataset, _align_in_column_blocks
from train.data.levels import register_level
from train.data.sources import FeatureSource

log = logging.getLogger(__name__)


def segment_targets(
    labels: np.ndarray, label_valid: np.ndarray, label_times: np.ndarray, segments: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(S, 2) mean of the valid frame labels (frames at `label_times` (T, 2) seconds) over each segment
    [start, end) seconds, and (S,) whether the segment has any valid label."""
    return align_to_frames(np.asarray(labels, np.float32), label_times, segments, valid=label_valid)


def expand_to_frames(
    values: np.ndarray, segments: np.ndarray, present: np.ndarray, label_times: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Per-segment values (S, C) onto the label frames at `label_times` (T, 2): each frame the overlap-weighted
    mean of the present segments over it; (T, C) and (T,) frames reached by a present segment."""
    return align_to_frames(values, segments, label_times, valid=present)


@register_level
class SegmentDataset(TrackDataset):
    """A `TrackDataset` whose positions are the segments of the first feature (the grid)."""

    level = "segment"

    @classmethod
    def build(cls, tracks: Sequence[Track], sources: Mapping[str, FeatureSource], window: int, stride: int, *,
              views_dir: Path | None = None, window_filter: Mapping[str, float] | None = None, **kwargs) -> "SegmentDataset":
        """Aligned onto its own rows, not label frames: no aligned views (`views_dir` unused)."""
        return cls(tracks, sources, window, stride, **kwargs)

    @property
    def grid_feature(self) -> str:
        return next(iter(self.sources))

    def _positions(self) -> np.ndarray:
        source = self.sources[self.grid_feature]
        self.segment_times: list[np.ndarray] = []
        for track in self.tracks:
            group = source.group_for(track)
            if group in self._units[self.grid_feature]:
                times = np.asarray(source.store.read_index(group)[0], dtype=np.float64).reshape(-1, 2)
            else:
                times = np.zeros((0, 2))
            self.segment_times.append(times)
        if self.level == "segment" and source.store.meta.kind == "frame":
            log.warning("segment level over '%s', a frame feature: one position per stored frame", self.grid_feature)
        return np.array([len(t) for t in self.segment_times], dtype=np.int64)

    def align_track(self, ti: int) -> AlignedTrack:
        track = self.tracks[ti]
        segments = self.segment_times[ti]
        n = len(segments)
        values: dict[str, np.ndarray] = {}
        masks: dict[str, np.ndarray] = {}
        for name, source in self.sources.items():
            group = source.group_for(track)
            if group not in self._units[name]:
                values[name] = np.zeros((n, source.dim), dtype=np.float16)
                masks[name] = np.zeros(n, dtype=bool)
                continue
            raw = source.read(group)
            flat = raw.values.reshape(len(raw.values), -1)
            valid = np.asarray(raw.valid, dtype=bool) & np.isfinite(flat).all(axis=1)
            if name == self.grid_feature:
                out = np.zeros((n, source.dim), dtype=np.float32)
                out[valid] = flat[valid]
                mask = valid
            else:
                out, mask = _align_in_column_blocks(flat, raw.times, segments, valid, source.fill)
            # float16, non-finite rows masked, standardized per batch on the device: as frame-level features
            values[name], masks[name] = self._finish(name, track.name, out, mask)
        if track.labels is not None:
            labels, label_valid = segment_targets(
                np.asarray(track.labels.values, np.float32), np.asarray(track.labels.valid, bool), self.label_times(ti), segments
            )
        else:
            labels, label_valid = np.zeros((n, 2), np.float32), np.zeros(n, bool)
        with self._lock:
            self.stats.aligned_tracks += 1
        return AlignedTrack(values=values, masks=masks, labels=labels, label_valid=label_valid)

    def to_frames(self, ti: int, values: np.ndarray, present: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        n_frames = int(self.n_frames[ti])
        if len(values) == 0:
            return np.zeros((n_frames, values.shape[1] if values.ndim == 2 else 2), np.float32), np.zeros(n_frames, bool)
        return expand_to_frames(values, self.segment_times[ti], present, self.label_times(ti))
