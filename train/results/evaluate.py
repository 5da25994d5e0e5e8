"""`pipeline.py evaluate`: a run's CCC table on a labelled split, whatever kind of run it is (train/results/kinds.py)."""

from __future__ import annotations

import json
from pathlib import Path

from train.results.coverage import check_coverage
from cache.manifest import parse_label_file
from train.data.dataset import TrackDataset
from train.results.kinds import run_split_predictions
from train.runs.folder import RunDir
from train.results.frames_csv import write_frames_csv
from train.scoring.evaluate import EvalResult, evaluate_predictions, postprocess


def attach_labels(dataset: TrackDataset, folder: Path) -> None:
    """Ground truth for a split the manifest has none for (test): `<track>.txt` per track in `folder`, the
    challenge's label format, one line per frame of the track."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"no labels folder {folder}")
    missing = [t.name for t in dataset.tracks if not (folder / f"{t.name}.txt").is_file()]
    if missing:
        raise FileNotFoundError(f"{len(missing)} track(s) have no label file in {folder}: {', '.join(missing[:5])}")
    for ti, track in enumerate(dataset.tracks):
        labels = parse_label_file(folder / f"{track.name}.txt")
        if len(labels) != int(dataset.n_frames[ti]):
            raise ValueError(f"{folder / (track.name + '.txt')}: {len(labels)} frames, the track has {int(dataset.n_frames[ti])}")
        track.labels = labels


def evaluate_run(
    run: str,
    split: str = "val",
    runs_dir: str = "artifacts/runs",
    device: str = "auto",
    allow_missing: bool = False,
    truth: Path | None = None,
    **locations,
) -> EvalResult:
    """Recompute the CCC table of a run's best checkpoint on a labelled split (smoothing as chosen on
    validation at the end of training) and write it to eval_<split>.json (`truth`: a folder of label files
    for a split the manifest has none for, e.g. test), the per-frame predictions
    and labels to predictions/<split>.frames.csv."""
    def check(ds: TrackDataset):
        if truth is not None:
            attach_labels(ds, truth)
        return check_coverage(ds, split, allow_missing)

    loaded = run_split_predictions(run, split, Path(runs_dir), device, check=check, **locations)
    dataset = loaded.dataset
    try:
        if not dataset.has_labels:
            raise ValueError(f"split '{split}' has no labels to evaluate against: give its ground truth with --labels DIR "
                             "(<track>.txt per track; the sample's: DATA_ROOT/ground_truth/Test_Set)")
        result = evaluate_predictions(dataset, loaded.preds, half_windows=loaded.half_windows, edges=loaded.cfg.smooth_edges)
        smoothed = [postprocess(p, m, loaded.half_windows, loaded.cfg.smooth_edges) for p, m in zip(loaded.preds.va, loaded.preds.has_feature)]
        write_frames_csv(loaded.run.predictions / f"{split}.frames.csv", dataset, smoothed, loaded.preds.has_feature)
        coverage = loaded.checked
        if not coverage.complete:
            result.missing = coverage.to_dict()
    finally:
        dataset.close()
    write_eval(loaded.run, split, result)
    return result


def write_eval(run: RunDir, split: str, result: EvalResult) -> Path:
    """The split's one evaluation file, eval_<split>.json: the new table over the old one; what only training
    knows (the smoothing grid searched, the best epoch) is kept."""
    path = run.eval_file(split)
    old = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    new = result.to_dict()
    if not new.get("grid"):
        new.pop("grid")
    run.write_json(path, {**old, **new})
    return path
