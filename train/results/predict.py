"""The challenge submission: one CSV for a split, header `image_location,valence,arousal`, one row
`<track>/<k:05d>.jpg,v,a` per frame, in the sample submission's order (test), values in [-1, 1].
The file is checked against what was expected before it is declared written."""

from __future__ import annotations

import csv
import logging
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from cache.manifest import SUBMISSION_HEADER, load_manifest

log = logging.getLogger(__name__)


class SubmissionError(ValueError):
    """A submission file that does not match the expected rows or holds bad values."""


def frame_location(track: str, k: int) -> str:
    """Frame k (1-based) of a track, as the challenge names it."""
    return f"{track}/{k:05d}.jpg"


def sample_locations(sample_file: Path) -> list[str]:
    """The image_location column of a sample submission file, in order."""
    with open(sample_file, encoding="utf-8", newline="") as handle:
        reader = csv.reader(handle)
        header = next(reader, None)
        if header is None or ",".join(h.strip() for h in header) != SUBMISSION_HEADER:
            raise SubmissionError(f"{sample_file}: header is not '{SUBMISSION_HEADER}'")
        return [row[0].strip() for row in reader if row]


def expected_locations(order: Sequence[str], n_frames: Mapping[str, int]) -> list[str]:
    return [frame_location(t, k) for t in order for k in range(1, int(n_frames[t]) + 1)]


def write_submission(path: Path, locations: Sequence[str], predictions: Mapping[str, np.ndarray]) -> Path:
    """Write one row per location, looking each frame up in its track's (T, 2) predictions."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    short: dict[str, int] = {}
    tmp = path.with_suffix(path.suffix + ".tmp")
    with open(tmp, "w", encoding="utf-8", newline="") as handle:
        handle.write(SUBMISSION_HEADER + "\n")
        for loc in locations:
            track, _, frame = loc.rpartition("/")
            if track not in predictions:
                raise SubmissionError(f"no predictions for track '{track}' (row {loc})")
            pred = predictions[track]
            k = int(frame.split(".")[0])
            if k > len(pred):
                short[track] = k
                k = len(pred)
            v, a = np.clip(pred[k - 1], -1.0, 1.0)
            handle.write(f"{loc},{v:.6f},{a:.6f}\n")
    for track, k in short.items():
        log.warning("track %s: sample file asks for frame %d, predictions have %d: last value repeated", track, k, len(predictions[track]))
    tmp.replace(path)
    return path


def validate_submission(path: Path, expected: Sequence[str]) -> int:
    """Same rows as expected, same order, no gaps, finite values in [-1, 1]; returns the row count."""
    path = Path(path)
    problems: list[str] = []
    with open(path, encoding="utf-8", newline="") as handle:
        reader = csv.reader(handle)
        header = next(reader, None)
        if header is None or ",".join(h.strip() for h in header) != SUBMISSION_HEADER:
            raise SubmissionError(f"{path}: header must be '{SUBMISSION_HEADER}', got {header}")
        n = 0
        for n, row in enumerate(reader, start=1):
            if len(problems) >= 5:
                break
            line = n + 1
            if len(row) != 3:
                problems.append(f"line {line}: expected 3 fields, got {len(row)}")
                continue
            if n > len(expected):
                problems.append(f"line {line}: extra row '{row[0]}' beyond the {len(expected)} expected")
                continue
            if row[0] != expected[n - 1]:
                problems.append(f"line {line}: '{row[0]}' where '{expected[n - 1]}' was expected")
            try:
                values = (float(row[1]), float(row[2]))
            except ValueError:
                problems.append(f"line {line}: non-numeric value in {row}")
                continue
            if not all(math.isfinite(x) and -1.0 <= x <= 1.0 for x in values):
                problems.append(f"line {line}: value not finite or outside [-1, 1]: {row[1]}, {row[2]}")
    if not problems and n != len(expected):
        problems.append(f"{n} rows, {len(expected)} expected (first missing: '{expected[n]}')")
    if problems:
        raise SubmissionError(f"{path}: invalid submission: " + "; ".join(problems))
    return n


def predict_run(
    run: str,
    split: str = "test",
    runs_dir: str = "artifacts/runs",
    device: str = "auto",
    out: Path | None = None,
    allow_missing: bool = False,
    **locations,
) -> Path:
    """Predict every frame of a split with the run's best checkpoint (smoothing chosen on validation,
    frames without features interpolated, clipped) and write the checked submission CSV, with a sidecar
    CSV.json saying what it was made from. Tracks lacking a feature the run needs are refused unless
    `allow_missing` (then the sidecar lists them). An ensemble run predicts with its members combined."""
    from train.results.coverage import check_coverage, write_sidecar
    from train.scoring.evaluate import postprocess
    from train.results.kinds import run_split_predictions

    loaded = run_split_predictions(
        run, split, Path(runs_dir), device, check=lambda ds: check_coverage(ds, split, allow_missing), **locations
    )
    dataset, raw, coverage = loaded.dataset, loaded.preds, loaded.checked
    dataset.close()
    preds = {
        t.name: postprocess(p, m, loaded.half_windows, loaded.cfg.smooth_edges) for t, p, m in zip(dataset.tracks, raw.va, raw.has_feature)
    }
    n_frames = {t.name: int(n) for t, n in zip(dataset.tracks, dataset.n_frames)}
    sample = None
    if split == "test":
        data = loaded.cfg.data
        manifest = load_manifest(Path(data.data_root), data.videos and Path(data.videos), data.labels and Path(data.labels), ("test",))
        sample = manifest.submission_file
        order = [t for t in manifest.test_order if t in n_frames]
        missing = [t for t in manifest.test_order if t not in n_frames]
        if missing:
            raise SubmissionError(f"{len(missing)} test track(s) have no video, cannot predict: {', '.join(missing[:5])}")
    else:
        order = [t.name for t in dataset.tracks]
    expected = sample_locations(sample) if sample is not None else expected_locations(order, n_frames)
    path = Path(out) if out is not None else loaded.run.predictions / f"{split}.csv"
    write_submission(path, expected, preds)
    rows = validate_submission(path, expected)
    write_sidecar(path, coverage, run=str(loaded.run.path), rows=rows, checked_against=str(sample) if sample else None)
    log.info("wrote %s: %d rows for %d tracks%s", path, rows, len(order), f", checked against {sample}" if sample else "")
    return path
