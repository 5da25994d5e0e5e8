"""RAS's fusion sample (`data.level: audio_window` with an audio token store, e.g. configs/ras/fusion-raav.yaml):
one sample per RAS audio window (src_audio_and_fusion/src/fusion/data/abaw_mm_dataset.py).

- Windows: RAS's audio windows on the track's label frames (cache/audio_windows.py: 4 s every 2 s, the
  last one partial; [start_frame, end_frame) at the track's fps), each a batch row of its own length.
- Frame streams (face, behaviour embeddings ...) and targets: per label frame of the window, as at frame level.
- Audio: the window's block tokens (a token store: `NAME_blocks` of `export --windows`, 4 × [embedding, VA])
  in the row's first 4 positions (RAS: audio_embedding [T_a = 4, D]); the other positions hold none
  (mask off). Tokens are standardized like any input: on the device, with the batch (train/data/tensors.py).
- Reliability: one mask per window (RAS's `_audio_om_filter_pass`: open >= 1.0 s and face coverage >= 0.8,
  the window's row of `audio_reliability`, the rule's values overridable by `data.window_filter`), written
  to every frame of the row in the reliability feature's last column; without `audio_reliability` every
  window counts as reliable. With `raav` set `audio_tokens: frames` (the token positions are the keys) and
  `audio_fallback: row` (the whole window hears the audio when its mask passes), as in RAS.
Every window is a training window (RAS trains fusion on every window; the mask only gates the audio).
Predictions of overlapping windows are averaged per frame, as at frame level.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from cache.manifest import Track
from cache.audio_windows import audio_windows
from train.data.dataset import Batch, TrackDataset
from train.data.sources import FeatureSource
from train.data.window_rules import RELIABILITY_FEATURE, best_match, is_reliable, reliability_at, window_rule


class AudioWindowFusionDataset(TrackDataset):
    """RAS's fusion sample: one RAS audio window of label frames with its audio block tokens (module doc)."""

    level = "audio_window"  # built by WindowAudioDataset.build when a token store is among the features

    def __init__(self, tracks: Sequence[Track], sources: Mapping[str, FeatureSource], window: int, stride: int, *,
                 window_filter: Mapping[str, float] | None = None, **kwargs):
        self.rule = window_rule(window_filter)
        self.filter_rules = dict(window_filter or {})
        self.token_sources = {n: s for n, s in sources.items() if s.tokens}
        self._ends: dict[tuple[int, int], int] = {}
        self._tokens: dict[int, dict[str, tuple[np.ndarray, np.ndarray]]] = {}
        super().__init__(tracks, {n: s for n, s in sources.items() if not s.tokens}, window, stride, **kwargs)
        self.token_units = {n: set(s.store.units()) for n, s in self.token_sources.items()}

    @property
    def feature_dims(self) -> dict[str, int]:
        return {**{n: s.dim for n, s in self.sources.items()}, **{n: s.dim for n, s in self.token_sources.items()}}

    def window_starts(self, n: int, window: int, stride: int, ti: int = 0) -> list[int]:
        """RAS's audio windows over the track's `n` label frames."""
        frames = audio_windows(n, float(self.fps[ti]), self.rule).frames
        for s, e in frames:
            self._ends[(ti, int(s))] = int(e)
        return [int(s) for s in frames[:, 0]]

    def window_length(self, ti: int, start: int) -> int:
        return self._ends[(ti, start)] - start

    def window_spans(self, ti: int) -> np.ndarray:
        """(W, 2) seconds of the track's windows, in `track_windows` order."""
        fps = float(self.fps[ti])
        starts = [self.windows[w][1] for w in self.track_windows[ti]]
        return np.array([(s / fps, self._ends[(ti, s)] / fps) for s in starts], np.float64).reshape(-1, 2)

    def window_inputs(self, ti: int) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """Per token store: (W, tokens, D) float32 tokens of each of the track's windows (raw: the batch is
        standardized on the device) and (W,) whether a token row reached it; and under RELIABILITY_FEATURE
        the (W,) window mask."""
        if ti in self._tokens:
            return self._tokens[ti]
        track, spans = self.tracks[ti], self.window_spans(ti)
        out: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        for name, source in self.token_sources.items():
            tokens = np.zeros((len(spans), source.tokens, source.dim), np.float32)
            found = np.zeros(len(spans), bool)
            group = source.group_for(track)
            if group in self.token_units[name]:
                raw = source.read(group)
                t = source.tokens
                values = raw.values.reshape(-1, t * source.dim).astype(np.float32)
                matched = best_match(values, raw.times[::t], np.asarray(raw.valid, bool)[::t], spans)
                found = np.isfinite(matched).all(axis=1)
                tokens[found] = matched[found].reshape(-1, t, source.dim)
            out[name] = (tokens, found)
        reliable = np.ones(len(spans), bool)
        rel = self.sources.get(RELIABILITY_FEATURE)
        if rel is not None:
            measured = reliability_at(rel, self._units[RELIABILITY_FEATURE], track, spans)
            reliable = is_reliable(*measured, self.rule) if measured is not None else np.zeros(len(spans), bool)
        out[RELIABILITY_FEATURE] = (reliable, reliable)
        self._tokens[ti] = out
        return out

    def collate(self, window_ids: Sequence[int]) -> Batch:
        batch = super().collate(window_ids)
        B, L = batch.pad.shape
        for name, source in self.token_sources.items():
            feats = np.zeros((B, L, source.dim), np.float32)
            masks = np.zeros((B, L), bool)
            for b, w in enumerate(window_ids):
                ti, _ = self.windows[w]
                k = w - self.track_windows[ti][0]  # a track's windows are numbered consecutively
                tokens, found = self.window_inputs(ti)[name]
                n = min(source.tokens, L)
                if found[k]:
                    feats[b, :n] = tokens[k, :n]
                    masks[b, :n] = True
            batch.features[name], batch.masks[name] = feats, masks
        if RELIABILITY_FEATURE in self.sources:
            rel = batch.features[RELIABILITY_FEATURE]
            for b, w in enumerate(window_ids):
                ti, _ = self.windows[w]
                k = w - self.track_windows[ti][0]
                rel[b, :, -1] = float(self.window_inputs(ti)[RELIABILITY_FEATURE][0][k])
                batch.masks[RELIABILITY_FEATURE][b] = batch.pad[b]
        return batch

