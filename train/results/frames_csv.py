"""The per-frame CSV of a split (`predict` and `evaluate` write it beside the submission): one row per label
frame of every track, `track,frame,valence,arousal,valid` (frame from 0, as the `--videos` CSVs; valid 1
where the model had some input, 0 where the value is interpolated from its neighbours), and on a labelled
split the ground truth `true_valence,true_arousal,labelled` (labelled 0 where the label is -5 / absent).
The submission itself keeps the challenge's three columns."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from train.data.dataset import TrackDataset

FRAMES_HEADER = "track,frame,valence,arousal,valid"
LABEL_COLUMNS = "true_valence,true_arousal,labelled"


def frames_csv_path(submission: Path) -> Path:
    """`predictions/test.csv` -> `predictions/test.frames.csv`."""
    return Path(submission).with_suffix(".frames.csv")


def write_frames_csv(path: Path, dataset: TrackDataset, preds: list[np.ndarray], present: list[np.ndarray]) -> Path:
    """One row per frame of every track of `dataset` (postprocessed `preds`, raw `present`)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    labelled = dataset.has_labels
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8", newline="") as handle:
        handle.write(FRAMES_HEADER + ("," + LABEL_COLUMNS if labelled else "") + "\n")
        for track, va, has in zip(dataset.tracks, preds, present):
            truth = track.labels if labelled else None
            for k, (v, a) in enumerate(va):
                row = f"{track.name},{k},{v:.6f},{a:.6f},{int(bool(has[k]))}"
                if labelled:
                    if truth is not None and k < len(truth.values):
                        tv, ta = truth.values[k]
                        row += f",{tv:.6f},{ta:.6f},{int(bool(truth.valid[k]))}"
                    else:
                        row += ",,,0"
                handle.write(row + "\n")
    tmp.replace(path)
    return path
