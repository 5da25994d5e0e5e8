"""The run folder: where each artefact of a training run lives, and the checks on reopening one.

<runs>/<name>/
  .lock                  flock held by the training process (train/runs/lock.py): one run per folder
  config.json            resolved TrainConfig
  features.json          per feature: fingerprint, unit, kind, dim, store path
  standardization.json   per feature: the train-split mean/std applied to its inputs (absent: raw inputs)
  metrics.jsonl          one JSON object per epoch
  events.out.tfevents.*  the same metrics for TensorBoard
  model.safetensors      model weights at the best validation P (what evaluate/predict/export load)
  model_last.safetensors model weights after the last finished epoch
  checkpoints/last.pt    model, optimiser, scheduler, loop and RNG state after the last finished epoch (--resume)
  checkpoints/best.pt    same, at the best validation P
  eval_<split>.json      raw and smoothed CCC table, smoothing half-windows
  report.md              the CCC table and the plots
  plots/*.png            learning curves, predicted vs true V/A for a few validation tracks
  predictions/<split>.csv, <split>.csv.json   submission and what it was made from (train/results/coverage.py)
  predictions/videos/    predict --videos: <video>.csv and <video>.png per bare video
  ensemble.json          only in an ensemble's folder: its members and weights (train/results/ensemble.py)
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from train.data.sources import FeatureSource


ENSEMBLE_FILE = "ensemble.json"


def is_ensemble(run: "RunDir") -> bool:
    """The folder holds an ensemble of runs (no model of its own), not a trained head."""
    return (run.path / ENSEMBLE_FILE).is_file()


# per-part loss columns were named like scores before; they hold losses (1 - CCC, MSE, MAE, KL)
LEGACY_COLUMNS = {f"train_{part}": f"train_loss_{part}" for part in ("ccc", "mse", "mae", "kl")}


class FingerprintChanged(RuntimeError):
    """A feature store differs from the one a run was trained on."""


class RunNotFound(FileNotFoundError):
    """No run folder of that name or path."""


class RunDir:
    def __init__(self, path: Path):
        self.path = Path(path)

    @classmethod
    def resolve(cls, run: str | Path, runs_dir: Path) -> "RunDir":
        """A run given by folder path or by name under runs_dir; it must exist."""
        for candidate in (Path(run), Path(runs_dir) / str(run)):
            if (candidate / "config.json").is_file():
                return cls(candidate)
        from cache.names import suggest

        runs = [p.name for p in Path(runs_dir).iterdir() if (p / "config.json").is_file()] if Path(runs_dir).is_dir() else []
        raise RunNotFound(f"no run '{run}' (looked for {Path(run)} and {Path(runs_dir) / str(run)}); "
                          f"{suggest(str(run), runs, f'runs in {runs_dir}')}")

    # paths
    config = property(lambda self: self.path / "config.json")
    features = property(lambda self: self.path / "features.json")
    standardization = property(lambda self: self.path / "standardization.json")
    metrics = property(lambda self: self.path / "metrics.jsonl")
    checkpoints = property(lambda self: self.path / "checkpoints")
    last = property(lambda self: self.path / "checkpoints" / "last.pt")
    best = property(lambda self: self.path / "checkpoints" / "best.pt")
    report = property(lambda self: self.path / "report.md")
    plots = property(lambda self: self.path / "plots")
    predictions = property(lambda self: self.path / "predictions")

    def eval_file(self, split: str) -> Path:
        return self.path / f"eval_{split}.json"

    def make(self) -> None:
        for sub in (self.path, self.checkpoints, self.plots, self.predictions):
            sub.mkdir(parents=True, exist_ok=True)

    # features and fingerprints
    def write_features(self, sources: Mapping[str, FeatureSource]) -> None:
        record = {
            name: {
                "fingerprint": s.fingerprint, "unit": s.unit, "kind": s.store.meta.kind, "dim": s.dim,
                "model_ref": s.store.meta.model_ref, "store": str(s.store.path),
            }
            for name, s in sources.items()
        }
        self.features.write_text(json.dumps(record, indent=2, sort_keys=True) + "\n", encoding="utf-8")

    def read_features(self) -> dict[str, dict[str, Any]]:
        return json.loads(self.features.read_text(encoding="utf-8")) if self.features.is_file() else {}

    def check_fingerprints(self, sources: Mapping[str, FeatureSource]) -> None:
        """Refuse stores whose fingerprint differs from the one this run recorded."""
        recorded = self.read_features()
        problems = []
        for name, source in sources.items():
            want = recorded.get(name, {}).get("fingerprint")
            if want is not None and want != source.fingerprint:
                problems.append(
                    f"feature '{name}': run {self.path.name} was trained on fingerprint {want}, "
                    f"but store {source.store.path} has fingerprint {source.fingerprint}"
                )
        if problems:
            raise FingerprintChanged("; ".join(problems) + " (re-extract with the old config or start a new run)")

    # metrics
    def append_metrics(self, row: Mapping[str, Any]) -> None:
        with open(self.metrics, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(dict(row), sort_keys=True) + "\n")

    def read_metrics(self) -> list[dict[str, Any]]:
        """Rows as written; columns of older runs are read under today's names (`train_ccc` -> `train_loss_ccc`)."""
        if not self.metrics.is_file():
            return []
        rows = [json.loads(line) for line in self.metrics.read_text(encoding="utf-8").splitlines() if line.strip()]
        return [{LEGACY_COLUMNS.get(k, k): v for k, v in row.items()} for row in rows]

    def truncate_metrics(self, before_epoch: int) -> None:
        """Keep only rows of epochs < before_epoch (rows written after the last checkpoint go)."""
        rows = [r for r in self.read_metrics() if r["epoch"] < before_epoch]
        self.metrics.write_text("".join(json.dumps(r, sort_keys=True) + "\n" for r in rows), encoding="utf-8")

    def write_json(self, path: Path, data: Any) -> None:
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        tmp.replace(path)
