"""Audio reliability per RAS audio window of a face track: is the sound in this window likely this person's
speech? RAS's rule, from the `mouth` store (cache/audio_windows.py holds the rule and its sources).

Windows: RAS's grid (4 s every 2 s, the last one partial [start, duration)) over the video's frames.
Per window: open seconds (the mouth store's open flag per frame, smoothed as RAS does: closed gaps <=
0.15 s filled, open blips <= 0.20 s removed), coverage (share of the window's frames with a mouth
measurement, i.e. a detected face) and reliable = open >= 1.0 s and coverage >= 0.8. A video without an
audio stream has no reliable window (open seconds and coverage are still stored).

The mouth store's rows are put on the video's frames [k/fps, (k+1)/fps) by `cache.align.align_to_frames`
(a frame is open when the overlap-weighted open flag is >= 0.5), so its rate does not matter. Mouth CSVs
imported with `import-features --format csv` count frames from 1 (frame k is frame k − 1 here); RAS's own
code reads them one frame late (see cache/audio_windows.py).

The open flag is the store's column named `open` (the `mouth` extractor), `mouth_open` (RAS's CSVs),
`open_flag` or `is_open`; a store whose columns are named but include none of these, or whose unnamed
flag column holds values other than 0 and 1, is refused with one line naming the store and its columns
(no threshold is ever put on an area or a ratio).
Values per window: (open_s, coverage, reliable as 0/1); the last column is what `raav` reads.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

import numpy as np

from cache.align import align_to_frames
from cache.media import frame_times
from cache.store import FeatureStore
from cache.audio_windows import AudioWindowRule, audio_windows
from extract.base import StoreExtractor, UnitResult, VideoContext, register

log = logging.getLogger(__name__)

COLUMNS = ("open_s", "coverage", "reliable")
OPEN_COLUMN_NAMES = ("open", "open_flag", "mouth_open", "is_open")


def column_names(store: FeatureStore, unit: str) -> list[str] | None:
    """The store's column names (group attribute, else the store config), None when unnamed."""
    for attrs in (store.unit_attrs(unit), store.meta.config):
        names = attrs.get("columns") or attrs.get("column_names")
        if names:
            return [str(n) for n in names]
    return None


def open_column(store: FeatureStore, unit: str, values: np.ndarray) -> int:
    """Index of the mouth store's open-flag column: a column named like an open flag, else (unnamed
    columns) column 1 of (opening, open) pairs or the only column, if it holds only 0 and 1.
    ValueError (one line naming the store and its columns) when there is no open flag."""
    names = column_names(store, unit)
    need = f"audio_reliability needs an open flag column named one of {', '.join(OPEN_COLUMN_NAMES)}"
    if names:
        for candidate in OPEN_COLUMN_NAMES:
            if candidate in names:
                return names.index(candidate)
        raise ValueError(f"{store.path}: mouth store without an open flag (columns {', '.join(names)}): {need} "
                         "(import RAS's mouth CSVs with their mouth_open column)")
    col = 1 if values.shape[1] >= 2 else 0
    seen = values[:, col][np.isfinite(values[:, col])]
    if not np.isin(seen, (0.0, 1.0)).all():
        raise ValueError(f"{store.path}: mouth store without an open flag (unnamed columns, {values.shape[1]} wide; "
                         f"column {col} holds values other than 0 and 1): {need}")
    return col


def mouth_on_frames(flag: np.ndarray, times: np.ndarray, valid: np.ndarray, n_frames: int,
                    fps: float) -> tuple[np.ndarray, np.ndarray]:
    """(open, detected) per frame 0..n_frames-1 from mouth rows (flag (M,), times (M, 2), valid (M,))."""
    share, detected = align_to_frames(np.asarray(flag, np.float32).reshape(-1, 1), times, frame_times(n_frames, fps),
                                      valid)
    return (share[:, 0] >= 0.5) & detected, detected


def reliability_rows(open_flag: np.ndarray, detected: np.ndarray, n_frames: int, fps: float,
                     rule: AudioWindowRule, has_audio: bool = True) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-frame open flag and detection -> values (W, 3) float32 (open_s, coverage, reliable), window times
    (W, 2) seconds and valid (W,)."""
    w = audio_windows(n_frames, fps, rule, open_flag, detected)
    reliable = w.reliable & has_audio
    values = np.stack([w.open_s, w.coverage, reliable.astype(np.float32)], axis=1).astype(np.float32)
    return values.reshape(-1, 3), w.times, np.ones(len(w), dtype=bool)


@register
class AudioReliabilityExtractor(StoreExtractor):
    """`audio_reliability`: per track and RAS audio window, (open_s, coverage, reliable) from `mouth`."""

    name = "audio_reliability"
    Config = AudioWindowRule
    kind = "window"
    unit = "track"
    version = "2"  # 2: RAS's windows (partial last window, open >= 1.0 s, detection coverage)
    family = None
    requires = ("mouth",)

    def process_stores(self, video: VideoContext, stores: Mapping[str, FeatureStore]) -> dict[str, UnitResult]:
        from extract.runner import ExtractionError  # a store without an open flag fails every video alike

        mouth = stores["mouth"]
        has_audio = bool(video.info.has_audio)
        if not has_audio:
            log.info("%s: no audio stream; every audio_reliability window is unreliable", video.stem)
        out: dict[str, UnitResult] = {}
        for track in self.units_for(video):
            group = mouth.read(track)
            values = group.values.reshape(len(group.values), -1).astype(np.float32)
            try:
                col = open_column(mouth, track, values)
            except ValueError as err:
                raise ExtractionError(str(err)) from None
            n_frames = int(video.info.n_frames)
            flag, detected = mouth_on_frames(values[:, col], group.times, group.valid, n_frames, video.fps)
            vals, times, valid = reliability_rows(flag, detected, n_frames, video.fps, self.config, has_audio)
            out[track] = UnitResult(vals, times, valid, {"columns": list(COLUMNS), "has_audio": has_audio})
        return out
