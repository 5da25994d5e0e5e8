"""Reopen a finished (or interrupted) run: its config, its feature stores (fingerprints checked), its
head with the best (or last) checkpoint, and a dataset over any split."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import torch

from cache.location import as_location
from train.checkpoint import load_checkpoint
from train.config import TrainConfig
from train.dataset import FeatureSource, TrackDataset, open_features
from train.evaluate import SplitPredictions, predict_split
from train.loop import open_split
from train.model import build_model
from train.run import RunDir
from train.tensors import resolve_device

log = logging.getLogger(__name__)


@dataclass
class LoadedRun:
    run: RunDir
    cfg: TrainConfig
    sources: dict[str, FeatureSource]
    model: torch.nn.Module
    device: torch.device
    half_windows: tuple[int, int]  # smoothing chosen on validation ((0, 0) when not yet chosen)

    def dataset(self, split: str, fps: dict[str, float] | None = None) -> TrackDataset:
        return open_split(self.cfg, split, self.sources, fps)


def load_run(
    run: str | Path,
    runs_dir: Path = Path("artifacts/runs"),
    device: str = "auto",
    data_root: Path | None = None,
    cache_dir: Path | None = None,
    videos: Path | None = None,
    labels: Path | None = None,
    checkpoint: str = "best",
) -> LoadedRun:
    """Locations default to the run's own; a store whose fingerprint changed is refused."""
    rd = RunDir.resolve(run, runs_dir)
    from train.ensemble import is_ensemble

    if is_ensemble(rd):
        raise ValueError(f"run {rd.path.name} is an ensemble of runs: it has no model of its own (evaluate and predict work on it)")
    cfg = TrainConfig.load(rd.config)
    if data_root is not None:
        cfg.data.data_root = str(data_root)
    if cache_dir is not None:
        cfg.data.cache_dir = str(cache_dir)
    if videos is not None:
        cfg.data.videos = str(videos)
    if labels is not None:
        cfg.data.labels = str(labels)
    sources = open_features(as_location(cfg.data.cache_dir), cfg.data.features, cfg.data.nearest_fill)
    rd.check_fingerprints(sources)
    dev = resolve_device(device)
    path = rd.best if checkpoint == "best" and rd.best.is_file() else rd.last
    if not path.is_file():
        raise FileNotFoundError(f"run {rd.path} has no checkpoint yet")
    model, _ = build_model(cfg, sources)
    model.load_state_dict(load_checkpoint(path, dev)["model"])
    model.to(dev).eval()
    half = (0, 0)
    if rd.eval_file("val").is_file():
        half = tuple(json.loads(rd.eval_file("val").read_text(encoding="utf-8"))["half_windows"])
    return LoadedRun(run=rd, cfg=cfg, sources=sources, model=model, device=dev, half_windows=half)


def _half_windows(rd: RunDir) -> tuple[int, int]:
    if rd.eval_file("val").is_file():
        return tuple(json.loads(rd.eval_file("val").read_text(encoding="utf-8"))["half_windows"])
    return (0, 0)


@dataclass
class RunSplit:
    """A run's raw per-frame predictions of one split, with the dataset they belong to (close it)."""

    run: RunDir
    cfg: TrainConfig
    dataset: TrackDataset
    preds: SplitPredictions
    half_windows: tuple[int, int]


def run_split_predictions(
    run: str | Path, split: str, runs_dir: Path = Path("artifacts/runs"), device: str = "auto", **locations
) -> RunSplit:
    """Predictions of a trained run (its best checkpoint) or of an ensemble run (its members combined)."""
    from train.ensemble import ensemble_predictions, is_ensemble

    rd = RunDir.resolve(run, Path(runs_dir))
    if is_ensemble(rd):
        dataset, preds = ensemble_predictions(rd, split, device, **locations)
        return RunSplit(rd, TrainConfig.load(rd.config), dataset, preds, _half_windows(rd))
    loaded = load_run(rd.path, Path(runs_dir), device, **locations)
    dataset = loaded.dataset(split)
    try:
        preds = predict_split(loaded.model, dataset, loaded.device, loaded.cfg.batch_size)
    except BaseException:
        dataset.close()
        raise
    cfg = loaded.cfg
    return RunSplit(loaded.run, cfg, dataset, preds, loaded.half_windows)
