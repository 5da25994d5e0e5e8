"""RAS's window-level audio model on cached 50 Hz audio states (`--level audio_window --model blockpool`).

Positions are the rows of the run's first feature (an audio store such as `wavlm`, or `wavlm_hidden` with
`--head window_encoder=wavlm_top` to train WavLM's top layers per window as RAS does; 50 rows per second,
unit video: both tracks of a two-person video read the same audio); `window`/`stride` count rows, so
200 / 100 are RAS's 4 s windows every 2 s (the last one partial, as RAS's). A row's target is the
mean of the valid label frames over it (`cache.align.align_to_frames`, as for segments); the head
(`blockpool`) cuts each window into 4 blocks, pools each by attentive statistics and predicts one VA
per block, carried by the block's rows, so the CCC loss runs over the rows of each block.

Windows follow RAS's grid (cache/audio_windows.py): `window` rows every `stride` rows while they fit,
then one partial window to the end (RAS pads its audio; here the last batch row is shorter, and the head
cuts its blocks on the full window, `blockpool` `window_rows`, so block i is still second i).
Training windows (training only; evaluation, prediction and export see every window) pass RAS's filter
(src/audio/data/abaw_va_dataset.py): the window is reliable, i.e. the mouth is open >= 1.0 s and a face is
detected on >= 0.8 of its frames (the `audio_reliability` feature's open_s and coverage columns, for the
reliability window that overlaps the audio window most: the same window on RAS's grid), and at least 2 of
its 4 one-second blocks hold a valid label frame. Without `audio_reliability` in the run only the block
rule filters (logged). `data.window_filter` overrides the rule's values (`min_open_s`, `min_coverage`,
`min_valid_blocks`, ...: the fields of `cache.audio_windows.AudioWindowRule`).

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

from cache.manifest import Track
from cache.audio_windows import AudioWindowRule, audio_windows
from cache.windows import sliding_windows
from train.data.window_rules import (  # noqa: F401  (re-exported names)
    COVERAGE, OPEN_S, RELIABILITY_FEATURE, best_match, is_reliable, reliability_at, window_rule,
)
from train.data.levels import register_level
from train.data.segments import SegmentDataset
from train.data.sources import FeatureSource

log = logging.getLogger(__name__)

def ras_window_starts(n_rows: int, window: int, stride: int) -> list[int]:
    """Starts of RAS's windows over `n_rows` rows: every `stride` while a full window fits, then one
    partial window to the end (cache.audio_windows.window_grid on rows)."""
    return [int(s) for s in sliding_windows(float(n_rows), float(window), float(stride))[:, 0]]


def keep_windows(open_s: np.ndarray | None, coverage: np.ndarray | None, valid_blocks: np.ndarray,
                 rule: AudioWindowRule) -> np.ndarray:
    """RAS's training filter: (W,) bool, reliable (when known: open_s and coverage given) and enough
    valid label blocks."""
    keep = np.asarray(valid_blocks) >= rule.min_valid_blocks
    if open_s is not None:
        keep &= is_reliable(open_s, coverage, rule)
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
        """Aligned onto the audio store's rows (`views_dir` unused); training windows filtered by `window_filter`.
        A run that reads audio block tokens (`NAME_blocks` of `export --windows`) is RAS's fusion sample
        instead: train/data/window_fusion.py."""
        if any(s.tokens for s in sources.values()):
            from train.data.window_fusion import AudioWindowFusionDataset

            return AudioWindowFusionDataset(tracks, sources, window, stride, window_filter=window_filter, **kwargs)
        return cls(tracks, sources, window, stride, window_filter=window_filter, **kwargs)

    def __init__(self, *args, window_filter: Mapping[str, float] | None = None, **kwargs):
        self.rule = window_rule(window_filter)
        super().__init__(*args, **kwargs)
        self.filter_rules = dict(window_filter or {})
        self.keep = self._filter()

    def window_starts(self, n: int, window: int, stride: int, ti: int = 0) -> list[int]:
        """RAS's grid on the audio rows (partial last window)."""
        return ras_window_starts(n, window, stride)

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
            log.warning("audio windows: no '%s' feature in the run: training windows are filtered by their label "
                        "blocks only (add it to --features for RAS's mouth rule)", RELIABILITY_FEATURE)
        for ti, track in enumerate(self.tracks):
            ids = self.track_windows[ti]
            if not ids or track.labels is None:
                continue
            spans = self.window_spans(ti)
            labels = np.asarray(track.labels.values, np.float64)
            ras = audio_windows(len(labels), float(self.fps[ti]), self.rule, labels=labels,
                                label_valid=np.asarray(track.labels.valid, bool))
            blocks = best_match(ras.block_valid.sum(axis=1), ras.times, np.ones(len(ras), bool), spans)
            open_s = coverage = None
            if rel is not None:
                found = reliability_at(rel, self._units[RELIABILITY_FEATURE], track, spans)
                # no mouth measurement: not speech we can trust
                open_s, coverage = found if found is not None else (np.zeros(len(spans)), np.zeros(len(spans)))
            keep[ids] = keep_windows(open_s, coverage, np.nan_to_num(blocks), self.rule)
        if len(self.windows) and self.has_labels:
            log.info("audio windows: %d of %d pass RAS's filter (it only thins a training order)",
                     int(keep.sum()), len(keep))
        return keep

    def epoch_order(self, rng: np.random.Generator, block_tracks: int = 8) -> list[int]:
        """The training order of the parent, less the windows that fail the filter."""
        return [w for w in super().epoch_order(rng, block_tracks) if self.keep[w]]


