"""RAS's window-level audio model on cached 50 Hz audio states (`--level audio_window --model blockpool`).

Positions are the rows of the run's first feature (an audio store such as `wavlm`, or `wavlm_hidden` with
`--head window_encoder=wavlm_top` to train WavLM's top layers per window as RAS does; 50 rows per second,
unit video: both tracks of a two-person video read the same audio); `window`/`stride` count rows, so
200 / 100 are RAS's 4 s windows every 2 s (plus one window aligned to the end). A row's target is the
mean of the valid label frames over it (`cache.align.align_to_frames`, as for segments); the head
(`blockpool`) cuts each window into 4 blocks, pools each by attentive statistics and predicts one VA
per block, carried by the block's rows, so the CCC loss runs over the rows of each block.

Training windows (training only; evaluation, prediction and export see every window) must pass RAS's
filter: the mouth is open for at least `min_open` (0.25) of the window and valid labels cover at least
`min_coverage` (0.8) of it. The mouth-open share comes from the `audio_reliability` feature when the run
reads it (its `open_frac` column: open time over window length from the `mouth` store's smoothed open
flag, on the same 4 s / 2 s grid; the reliability window that overlaps the audio window most);
without it only label coverage filters (logged). Label coverage = valid-label time / window length.

Export (`export_windows`, `pipeline.py export --windows`): one row per window and track, the mean over the
window's rows of [256-d block embedding, VA], as a `window`-kind store. The row's `times` are the part
of the timeline where that window is the most central one (consecutive windows split at the midpoint of
their centres, the rule the `wavlm` store stitches by), so every label frame aligns onto exactly one
window and `raav --head audio_tokens=windows` reads one audio token per window, as RAS's fusion does;
the full window spans are in the group attribute `window_times`.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from cache.align import align_to_frames
from cache.manifest import Track
from train.data.levels import register_level
from train.data.segments import SegmentDataset
from train.data.sources import FeatureSource

log = logging.getLogger(__name__)

MIN_OPEN = 0.25  # RAS: mouth open >= 0.25 x window length
MIN_COVERAGE = 0.8  # RAS: label coverage >= 0.8
RELIABILITY_FEATURE = "audio_reliability"
OPEN_COLUMN = 0  # audio_reliability columns: open_frac, coverage, reliable


def label_coverage(label_valid: np.ndarray, label_times: np.ndarray, spans: np.ndarray) -> np.ndarray:
    """(W,) share of each span [start, end) seconds covered by valid label frames (at `label_times` (T, 2);
    time no label frame reaches counts as uncovered)."""
    valid = np.asarray(label_valid, dtype=np.float32).reshape(-1, 1)
    spans = np.asarray(spans, dtype=np.float64).reshape(-1, 2)
    if not len(valid) or not len(spans):
        return np.zeros(len(spans))
    share, _ = align_to_frames(valid, label_times, spans)  # over the labelled part of each span
    reached = np.array([_covered_time(label_times, s, e) for s, e in spans])
    return share[:, 0] * reached / np.maximum(spans[:, 1] - spans[:, 0], 1e-9)


def _covered_time(times: np.ndarray, start: float, end: float) -> float:
    """Seconds of [start, end) that the rows [s, e) reach (rows assumed not to overlap, as label frames)."""
    overlap = np.minimum(times[:, 1], end) - np.maximum(times[:, 0], start)
    return float(np.clip(overlap, 0.0, None).sum())


def open_share(open_frac: np.ndarray, times: np.ndarray, valid: np.ndarray, spans: np.ndarray) -> np.ndarray:
    """(W,) mouth-open share of each span: the open fraction of the valid reliability window that overlaps
    it most (the same window when both follow the 4 s / 2 s grid; 0 where none reaches it). Not an
    overlap average: neighbouring windows overlap by half, and averaging them would blur the rule."""
    open_frac = np.asarray(open_frac, np.float64).reshape(-1)
    times = np.asarray(times, np.float64).reshape(-1, 2)[np.asarray(valid, bool)]
    open_frac = open_frac[np.asarray(valid, bool)]
    out = np.zeros(len(spans))
    for i, (s, e) in enumerate(np.asarray(spans, np.float64).reshape(-1, 2)):
        overlap = np.minimum(times[:, 1], e) - np.maximum(times[:, 0], s)
        if len(overlap) and overlap.max() > 0:
            out[i] = open_frac[int(np.argmax(overlap))]
    return out


def keep_windows(open_frac: np.ndarray | None, coverage: np.ndarray, min_open: float = MIN_OPEN,
                 min_coverage: float = MIN_COVERAGE) -> np.ndarray:
    """RAS's training filter: (W,) bool, mouth open long enough (when known) and labels covering enough."""
    keep = np.asarray(coverage) >= min_coverage - 1e-9
    if open_frac is not None:
        keep &= np.asarray(open_frac) >= min_open - 1e-9
    return keep


def central_spans(spans: np.ndarray) -> np.ndarray:
    """(W, 2): for each window, the part of the timeline where it is the most central window
    (consecutive windows split at the midpoint of their centres); together a partition of the spans."""
    spans = np.asarray(spans, dtype=np.float64).reshape(-1, 2)
    if len(spans) < 2:
        return spans.copy()
    centres = spans.mean(axis=1)
    cuts = (centres[:-1] + centres[1:]) / 2
    return np.stack([np.concatenate([[spans[0, 0]], cuts]), np.concatenate([cuts, [spans[-1, 1]]])], axis=1)


@register_level
class WindowAudioDataset(SegmentDataset):
    """Windows over the rows of an audio store; training windows filtered (see the module doc)."""

    level = "audio_window"

    @classmethod
    def build(cls, tracks: Sequence[Track], sources: Mapping[str, FeatureSource], window: int, stride: int, *,
              views_dir: Path | None = None, window_filter: Mapping[str, float] | None = None,
              **kwargs) -> "WindowAudioDataset":
        """Aligned onto the audio store's rows (`views_dir` unused); training windows filtered by `window_filter`."""
        return cls(tracks, sources, window, stride, window_filter=window_filter, **kwargs)

    def __init__(self, *args, window_filter: Mapping[str, float] | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        rules = {"min_open": MIN_OPEN, "min_coverage": MIN_COVERAGE, **dict(window_filter or {})}
        unknown = set(rules) - {"min_open", "min_coverage"}
        if unknown:
            raise ValueError(f"window_filter: unknown key(s) {sorted(unknown)}; known: min_open, min_coverage")
        self.filter_rules = rules
        self.keep = self._filter()

    def window_spans(self, ti: int) -> np.ndarray:
        """(W, 2) seconds of the track's windows, in `track_windows` order."""
        rows = self.segment_times[ti]
        out = []
        for w in self.track_windows[ti]:
            start = self.windows[w][1]
            end = min(start + self.window, len(rows)) - 1
            out.append((rows[start, 0], rows[end, 1]))
        return np.asarray(out, dtype=np.float64).reshape(-1, 2)

    def _filter(self) -> np.ndarray:
        keep = np.zeros(len(self.windows), dtype=bool)
        rel = self.sources.get(RELIABILITY_FEATURE)
        if rel is None and self.has_labels:
            log.warning("audio windows: no '%s' feature in the run: training windows are filtered by label "
                        "coverage only (add it to --features for RAS's mouth-open rule)", RELIABILITY_FEATURE)
        for ti, track in enumerate(self.tracks):
            ids = self.track_windows[ti]
            if not ids or track.labels is None:
                continue
            spans = self.window_spans(ti)
            coverage = label_coverage(np.asarray(track.labels.valid, bool), self.label_times(ti), spans)
            opened = None
            if rel is not None:
                group = rel.group_for(track)
                if group in self._units[RELIABILITY_FEATURE]:
                    raw = rel.read(group)
                    vals = raw.values.reshape(len(raw.values), -1)
                    opened = open_share(vals[:, OPEN_COLUMN], raw.times, np.asarray(raw.valid, bool), spans)
                else:
                    opened = np.zeros(len(spans))  # no mouth measurement: not speech we can trust
            keep[ids] = keep_windows(opened, coverage, self.filter_rules["min_open"], self.filter_rules["min_coverage"])
        if len(self.windows) and self.has_labels:
            log.info("audio windows: %d of %d pass the filter %s (it only thins a training order)",
                     int(keep.sum()), len(keep), self.filter_rules)
        return keep

    def epoch_order(self, rng: np.random.Generator, block_tracks: int = 8) -> list[int]:
        """The training order of the parent, less the windows that fail the filter."""
        return [w for w in super().epoch_order(rng, block_tracks) if self.keep[w]]


