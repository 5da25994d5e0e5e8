"""Reopen a finished (or interrupted) run: its config, its feature stores (fingerprints checked), its
head with the best (or last) checkpoint, and a dataset over any split."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cache.location import as_location
from train.runs.checkpoint import load_checkpoint
from train.config import TrainConfig
from cache.manifest import Track
from train.data.sources import FeatureSource, open_features
from train.data.dataset import TrackDataset
from train.scoring.evaluate import SplitPredictions, predict_split
from train.fit.loop import open_split, tracks_dataset
from train.fit.model import build_model, keep_saved_block_cut
from train.runs.folder import RunDir, is_ensemble
from train.runs.lock import refuse_running
from train.data.standardize import Standardizer
from train.data.tensors import resolve_device
from train.runs.standardization import recorded_standardizer
from train.runs.weights import load_weights, weights_file

log = logging.getLogger(__name__)


@dataclass
class LoadedRun:
    run: RunDir
    cfg: TrainConfig
    sources: dict[str, FeatureSource]
    model: torch.nn.Module
    device: torch.device
    half_windows: tuple[int, int]  # smoothing chosen on validation ((0, 0) when not yet chosen)
    standardizer: Standardizer | None = None  # the statistics the run was trained with (None: raw values)

    def dataset(self, split: str, fps: dict[str, float] | None = None) -> TrackDataset:
        return open_split(self.cfg, split, self.sources, fps, self.standardizer)


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
    refuse_running(rd.path)
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
    standardizer = recorded_standardizer(rd)
    if standardizer is not None:
        standardizer.check(sources)
    dev = resolve_device(device)
    keep_saved_block_cut(cfg)
    model, _ = build_model(cfg, sources)
    load_run_weights(rd, model, dev, checkpoint)
    model.to(dev).eval()
    half = (0, 0)
    if rd.eval_file("val").is_file():
        half = tuple(json.loads(rd.eval_file("val").read_text(encoding="utf-8"))["half_windows"])
    return LoadedRun(run=rd, cfg=cfg, sources=sources, model=model, device=dev, half_windows=half, standardizer=standardizer)


def load_run_weights(rd: RunDir, model: torch.nn.Module, device: torch.device, checkpoint: str = "best") -> str:
    """The run's best (or last) weights into `model`, from model[_last].safetensors (no pickle); a run folder
    written before those files existed loads from its checkpoints/*.pt with torch.load(weights_only=True).
    Best falls back to last when no epoch was best yet. Returns which was loaded."""
    which = "best" if checkpoint == "best" and (weights_file(rd.path, "best").is_file() or rd.best.is_file()) else "last"
    path = weights_file(rd.path, which)
    if path.is_file():
        load_weights(model, path, device)
        return which
    legacy = rd.best if which == "best" else rd.last
    if not legacy.is_file():
        raise FileNotFoundError(f"run {rd.path} has no checkpoint yet")
    model.load_state_dict(load_checkpoint(legacy, device)["model"])
    return which


def predict_tracks(loaded: LoadedRun, tracks: list[Track]) -> dict[str, np.ndarray]:
    """Per-frame (T, 2) valence/arousal of each track, as the submission has them: windows averaged,
    featureless frames interpolated, smoothed as chosen on validation, clipped to [-1, 1]."""
    from train.scoring.evaluate import postprocess, predict_split

    dataset = tracks_dataset(loaded.cfg, tracks, loaded.sources, standardizer=loaded.standardizer)
    try:
        raw = predict_split(loaded.model, dataset, loaded.device, loaded.cfg.batch_size)
    finally:
        dataset.close()
    return {t.name: postprocess(p, m, loaded.half_windows, loaded.cfg.smooth_edges) for t, p, m in zip(dataset.tracks, raw.va, raw.has_feature)}



def chosen_half_windows(rd: RunDir) -> tuple[int, int]:
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
    checked: Any = None  # what the `check` hook returned


class TrainedRun:
    """A run folder with a trained head (a run kind, train/results/kinds.py): predictions of its best checkpoint."""

    def __init__(self, run: RunDir, runs_dir: Path = Path("artifacts/runs")):
        self.run, self.runs_dir = run, Path(runs_dir)

    def predictions(
        self, split: str, device: str = "auto", check: Callable[[TrackDataset], Any] | None = None, **locations
    ) -> RunSplit:
        """`check(dataset)` runs before predicting (e.g. the coverage check); its result is kept as `checked`."""
        loaded = load_run(self.run.path, self.runs_dir, device, **locations)
        dataset = loaded.dataset(split)
        try:
            checked = check(dataset) if check is not None else None
            preds = predict_split(loaded.model, dataset, loaded.device, loaded.cfg.batch_size)
        except BaseException:
            dataset.close()
            raise
        return RunSplit(loaded.run, loaded.cfg, dataset, preds, loaded.half_windows, checked)


