"""`pipeline.py evaluate`: a run's CCC table on a labelled split, whatever kind of run it is (train/results/kinds.py)."""

from __future__ import annotations

from pathlib import Path

from train.results.coverage import check_coverage
from train.results.kinds import run_split_predictions
from train.scoring.evaluate import EvalResult, evaluate_predictions


def evaluate_run(
    run: str,
    split: str = "val",
    runs_dir: str = "artifacts/runs",
    device: str = "auto",
    allow_missing: bool = False,
    **locations,
) -> EvalResult:
    """Recompute the CCC table of a run's best checkpoint on a labelled split (smoothing as chosen on
    validation at the end of training) and write it to evaluate_<split>.json."""
    loaded = run_split_predictions(
        run, split, Path(runs_dir), device, check=lambda ds: check_coverage(ds, split, allow_missing), **locations
    )
    dataset = loaded.dataset
    try:
        if not dataset.has_labels:
            raise ValueError(f"split '{split}' has no labels to evaluate against")
        result = evaluate_predictions(dataset, loaded.preds, half_windows=loaded.half_windows, edges=loaded.cfg.smooth_edges)
        coverage = loaded.checked
        if not coverage.complete:
            result.missing = coverage.to_dict()
    finally:
        dataset.close()
    loaded.run.write_json(loaded.run.path / f"evaluate_{split}.json", result.to_dict())
    return result
