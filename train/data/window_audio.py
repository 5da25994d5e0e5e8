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

import dataclasses
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch

from cache.align import align_to_frames
from cache.store import FeatureStore, store_path
from train.data.segments import SegmentDataset
from train.data.tensors import autocast, to_tensors

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


class WindowAudioDataset(SegmentDataset):
    """Windows over the rows of an audio store; training windows filtered (see the module doc)."""

    level = "audio_window"

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


@torch.no_grad()
def window_rows(model: torch.nn.Module, dataset: WindowAudioDataset, device: torch.device, ti: int,
                batch_size: int = 8) -> np.ndarray:
    """(W, H + 2) float32: per window of track `ti`, the mean over its rows of [hidden, VA]."""
    model.eval()
    out = []
    ids = dataset.track_windows[ti]
    for i in range(0, len(ids), batch_size):
        batch = dataset.collate(ids[i : i + batch_size])
        tb = to_tensors(batch, device)
        with autocast(device):
            res = model(tb.features, tb.masks, tb.pad)
        rows = torch.cat([res.hidden.float(), res.va.float()], dim=-1)
        w = tb.pad.float().unsqueeze(-1)
        out.append(((rows * w).sum(1) / w.sum(1).clamp_min(1.0)).cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, 0), np.float32)


def export_windows(
    run: str | Path, name: str, splits: Sequence[str] = ("train", "val", "test"), runs_dir: Path = Path("artifacts/runs"),
    cache_dir: Path | None = None, data_root: Path | None = None, device: str = "auto", force: bool = False,
    on_mismatch: str = "refuse", checkpoint: str = "best",
) -> dict[str, int]:
    """Write an `audio_window` run's per-window [embedding, VA] as a window-kind store `name` (one group
    per track); returns groups written per split."""
    from train.results.export import export_meta, load_json, open_export_split, weights_digest
    from train.results.restore import load_run

    loaded = load_run(run, Path(runs_dir), device, data_root=data_root, cache_dir=cache_dir, checkpoint=checkpoint)
    if loaded.cfg.data.level != "audio_window":
        raise ValueError(f"run {loaded.run.path.name} is not an audio-window run (level {loaded.cfg.data.level!r})")
    if name in loaded.cfg.data.features:
        raise ValueError(f"export name '{name}' is one of the run's own input features: choose another")
    ckpt_used = "best" if checkpoint == "best" and loaded.run.best.is_file() else "last"
    hidden = getattr(loaded.model.cfg, "hidden", None)
    meta = export_meta(name, loaded.run.path.name, load_json(loaded.run.config),
                       {n: s.fingerprint for n, s in loaded.sources.items()}, weights_digest(loaded.model), ckpt_used, hidden)
    meta = dataclasses.replace(meta, kind="window", config={**meta.config, "rows": "one per audio window (mean over its rows)"})
    store = FeatureStore.create_or_open(store_path(loaded.cfg.data.cache_dir, name), meta, on_mismatch=on_mismatch)
    written: dict[str, int] = {}
    for split in splits:
        dataset = open_export_split(loaded, split, name)
        if dataset is None:
            continue
        written[split] = 0
        try:
            for ti, track in enumerate(dataset.tracks):
                if not dataset.track_windows[ti] or (store.is_complete(track.name) and not force):
                    continue
                spans = dataset.window_spans(ti)
                rows = window_rows(loaded.model, dataset, loaded.device, ti, loaded.cfg.batch_size)
                store.write(track.name, rows, central_spans(spans), np.ones(len(rows), bool), attrs={
                    "fps": float(dataset.fps[ti]), "split": split, "run": loaded.run.path.name,
                    "window_times": spans.tolist(),
                }, dtype="auto")  # float16 unless a column would lose precision (few windows: small spreads)
                written[split] += 1
        finally:
            dataset.close()
        log.info("export %s, %s: %d windowed tracks written", name, split, written[split])
    return written
