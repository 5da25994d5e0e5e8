"""Export a trained head's per-frame representation as a feature store (stacking, REFERENCE method 2:
"inputs to fusion were the unimodal models' embeddings concatenated with their 2-d predictions").

    export_run("face_gru-run", "face_gru", splits=("train", "val", "test"))
    # -> <cache_dir>/face_gru.zarr, usable as `--features face_gru,wavlm,...` by any head

Store layout: unit `track`, kind `frame`, one group per track of every exported split;
`values` (T, H + 2) float16 = [HeadOutput.hidden (H), VA prediction (2)] with T the track's label
frames (test: the sample submission's frame count); windows are averaged per frame exactly as
evaluation does (`predict_split`), the VA columns are that raw window average (tanh output, before
featureless-frame filling and smoothing); `times` = label frame times (`TrackDataset.label_times`);
`valid` = frames where any of the run's input features was present. Group attributes: fps, frames,
split, run.

Metadata: model_ref `run:<run name>`, weights_digest = sha256 of the checkpoint's model weights,
config = the run's config (less locations and device), the checkpoint used and the fingerprints
of the run's input stores. So the store's fingerprint follows the run and its inputs: retraining,
another checkpoint or re-extracted inputs give another fingerprint (refused, or with
`on_mismatch="new"` the old store is moved aside), while exporting the same run again skips the
complete groups (`force=True` rewrites them).
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cache.store import FeatureMeta, FeatureStore, store_path
from train.runs.checkpoint import load_checkpoint
from train.data.dataset import TrackDataset
from train.scoring.evaluate import input_features
from train.runs.folder import RunDir
from cache.prefetch import Prefetcher
from train.data.tensors import autocast, to_tensors

log = logging.getLogger(__name__)

EXPORT_VERSION = "1"
SPLITS = ("train", "val", "test")
# run config keys that say where things are, not what the model is (left out of the fingerprint)
LOCATION_KEYS = ("runs_dir", "device")
DATA_LOCATION_KEYS = (
    "data_root", "videos", "labels", "cache_dir", "cache_mb", "prefetch_batches", "align_workers", "views", "views_dir",
)


@dataclass
class ExportReport:
    name: str
    path: Path
    fingerprint: str
    dim: int
    written: dict[str, int] = field(default_factory=dict)  # split -> groups written
    skipped: dict[str, int] = field(default_factory=dict)  # split -> complete groups left as they were
    empty_splits: list[str] = field(default_factory=list)  # asked for, but no tracks found

    def summary(self) -> str:
        parts = [f"{s}: {self.written.get(s, 0)} written, {self.skipped.get(s, 0)} skipped" for s in self.written]
        parts += [f"{s}: no tracks" for s in self.empty_splits]
        return f"{self.path} (dim {self.dim}, fingerprint {self.fingerprint}): " + "; ".join(parts)


def state_digest(state: dict[str, torch.Tensor]) -> str:
    """sha256 over a state dict (names, dtypes and raw bytes, in name order)."""
    h = hashlib.sha256()
    for key in sorted(state):
        t = state[key].detach().cpu().contiguous().reshape(-1)
        h.update(key.encode())
        h.update(str(t.dtype).encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def weights_digest(model: torch.nn.Module) -> str:
    return state_digest(model.state_dict())


def checkpoint_digest(path: Path) -> str:
    """weights_digest of the model stored in a checkpoint file (to compare an export with a run)."""
    return state_digest(load_checkpoint(path, torch.device("cpu"))["model"])


def _model_config(raw: dict[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in raw.items() if k not in LOCATION_KEYS}
    out["data"] = {k: v for k, v in raw.get("data", {}).items() if k not in DATA_LOCATION_KEYS}
    return out


def hidden_dim(model: torch.nn.Module) -> int | None:
    cfg = getattr(model, "cfg", None)
    return getattr(cfg, "hidden", None)


def video_folds(track_names: Sequence[str], folds: int) -> list[list[str]]:
    """Tracks split into `folds` groups by video (both people of a video in the same fold), deterministic."""
    from cache.manifest import video_stem

    stems = sorted({video_stem(t) for t in track_names})
    fold_of = {stem: i % folds for i, stem in enumerate(stems)}
    return [sorted(t for t in track_names if fold_of[video_stem(t)] == f) for f in range(folds)]


def train_fold_runs(run: RunDir, folds: int, overrides: dict[str, Any], device: str) -> list[tuple[list[str], Path]]:
    """For out-of-fold stacking: one run per fold of the train split, each trained with the run's config on
    the other folds (kept under RUN/folds/, resumed or skipped when already trained). Returns
    (held-out tracks, fold run folder) per fold."""
    from train.config import TrainConfig
    from train.fit.loop import open_split, train
    from train.data.sources import open_features

    base = TrainConfig.load(run.config)
    for key, value in overrides.items():
        if value is not None:
            setattr(base.data, key, str(value))
    sources = open_features(base.data.cache_dir, base.data.features, base.data.nearest_fill)
    dataset = open_split(base, "train", sources)
    names = [t.name for t in dataset.tracks]
    dataset.close()
    split = video_folds(names, folds)
    if not all(split):
        raise ValueError(f"{folds} folds need at least {folds} train videos; the train split has fewer")
    out = []
    for f, held in enumerate(split):
        cfg = TrainConfig.from_dict(base.to_dict())
        cfg.data.holdout = held
        cfg.name, cfg.runs_dir, cfg.device = f"fold{f}", str(run.path / "folds"), device
        folder = Path(cfg.runs_dir) / cfg.name
        log.info("out-of-fold export: training fold %d/%d without %d track(s)", f + 1, folds, len(held))
        train(cfg, resume=(folder / "checkpoints" / "last.pt").is_file())
        out.append((held, folder))
    return out


def export_meta(name: str, run_name: str, run_config: dict[str, Any], inputs: dict[str, str], digest: str,
                checkpoint: str, hidden: int | None, folds: int = 1) -> FeatureMeta:
    """The exported store's metadata (its fingerprint follows the run, its weights and its inputs)."""
    return FeatureMeta(
        name=name, kind="frame", unit="track", model_ref=f"run:{run_name}", weights_digest=digest,
        config={
            "run": run_name,
            "checkpoint": checkpoint,
            "run_config": _model_config(run_config),
            "input_fingerprints": dict(sorted(inputs.items())),
            "columns": {"hidden": hidden, "va": "last 2 columns: window-averaged raw prediction (valence, arousal)"},
            **({"train_folds": folds} if folds > 1 else {}),
        },
        version=f"export-{EXPORT_VERSION}",
    )


@torch.no_grad()
def track_embeddings(
    model: torch.nn.Module,
    dataset: TrackDataset,
    device: torch.device,
    track_ids: Sequence[int],
    batch_size: int = 8,
    prefetch: int = 4,
) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
    """(track index, (T, H + 2) float32 [hidden, va] averaged over overlapping windows, (T,) any input
    feature present) for each of `track_ids`, in order, yielded as soon as a track's windows are done
    (so only the tracks in flight are held in memory)."""
    was_training = model.training
    model.eval()
    inputs = input_features(model, list(dataset.sources))
    order = [w for ti in track_ids for w in dataset.track_windows[ti]]
    pending: dict[int, list[Any]] = {}  # ti -> [total, count, has_feature, windows left]
    loader = Prefetcher(dataset.batches(order, batch_size), depth=prefetch)
    try:
        for batch in loader:
            tb = to_tensors(batch, device)
            with autocast(device):
                out = model(tb.features, tb.masks, tb.pad)
            rows = torch.cat([out.hidden.float(), out.va.float()], dim=-1).cpu().numpy().astype(np.float64)
            any_feature = np.zeros_like(batch.pad)
            for name in inputs:
                any_feature |= batch.masks[name]
            for b in range(len(batch.track)):
                ti, s, n = int(batch.track[b]), int(batch.start[b]), int(batch.length[b])
                if ti not in pending:
                    T = int(dataset.n_positions[ti])
                    pending[ti] = [np.zeros((T, rows.shape[-1])), np.zeros(T), np.zeros(T, dtype=bool),
                                   len(dataset.track_windows[ti])]
                acc = pending[ti]
                acc[0][s : s + n] += rows[b, :n]
                acc[1][s : s + n] += 1
                acc[2][s : s + n] |= any_feature[b, :n]
                acc[3] -= 1
                if acc[3] == 0:
                    total, count, has, _ = pending.pop(ti)
                    yield ti, *dataset.to_frames(ti, (total / np.maximum(count, 1)[:, None]).astype(np.float32), has)
    finally:
        loader.close()
        model.train(was_training)
    if pending:  # cannot happen with whole tracks in `order`; guards against a silent partial export
        raise RuntimeError(f"export: tracks {sorted(pending)} did not receive all their windows")


def open_export_split(loaded: Any, split: str, name: str) -> Any:
    """The run's dataset of `split`, or None (with a warning) when the split has no tracks."""
    try:
        return loaded.dataset(split)
    except ValueError as err:
        if "has no tracks" not in str(err):
            raise
        log.warning("export %s: %s, skipped", name, err)
        return None


def export_run(
    run: str | Path,
    name: str,
    splits: Sequence[str] = SPLITS,
    runs_dir: Path = Path("artifacts/runs"),
    cache_dir: Path | None = None,
    data_root: Path | None = None,
    videos: Path | None = None,
    labels: Path | None = None,
    device: str = "auto",
    force: bool = False,
    on_mismatch: str = "refuse",
    checkpoint: str = "best",
    batch_size: int | None = None,
    folds: int = 1,
) -> ExportReport:
    """Write run's per-frame [hidden, VA] for every track of `splits` into <cache_dir>/<name>.zarr
    (cache_dir defaults to the run's own, where its input stores are). Complete groups of a store with
    the same fingerprint are skipped unless `force`; a store with another fingerprint is refused
    (FingerprintMismatch) unless on_mismatch='new' (moved aside).

    With `folds` > 1 the train split is exported out of fold: each train track's values come from a run
    trained (with the same config) on the other folds, so a fusion head trained on the export sees train
    inputs as good as the val/test ones, not the unimodal run's fit to its own training data. Such an
    export holds the (V, A) predictions only: the hidden spaces of the fold runs and of the run differ."""
    from train.results.restore import load_run

    loaded = load_run(run, Path(runs_dir), device, data_root=data_root, cache_dir=cache_dir, videos=videos,
                      labels=labels, checkpoint=checkpoint)
    features = loaded.cfg.data.features
    if name in features:
        raise ValueError(f"export name '{name}' is one of the run's own input features {features}: choose another")
    unknown = [s for s in splits if s not in SPLITS]
    if unknown:
        raise ValueError(f"unknown split(s) {unknown}; known: {list(SPLITS)}")
    run_config = run_config_dict(loaded.run)
    ckpt_used = "best" if checkpoint == "best" and loaded.run.best.is_file() else "last"
    fold_runs: list[tuple[list[str], Path]] = []
    if folds > 1:
        overrides = {"data_root": data_root, "cache_dir": cache_dir, "videos": videos, "labels": labels}
        fold_runs = train_fold_runs(loaded.run, folds, overrides, device)
    digest = weights_digest(loaded.model)
    for _, folder in fold_runs:
        fold = RunDir(folder)
        digest = hashlib.sha256((digest + checkpoint_digest(fold.best if fold.best.is_file() else fold.last)).encode()).hexdigest()
    meta = export_meta(
        name, loaded.run.path.name, run_config, {n: s.fingerprint for n, s in loaded.sources.items()},
        digest, ckpt_used, None if fold_runs else hidden_dim(loaded.model), folds if fold_runs else 1,
    )
    out_path = store_path(loaded.cfg.data.cache_dir, name)
    store = FeatureStore.create_or_open(out_path, meta, on_mismatch=on_mismatch)
    # hidden representations of different models live in different bases: out of fold, only the
    # predictions (same meaning whichever model made them) are exported
    hidden = None if fold_runs else hidden_dim(loaded.model)
    report = ExportReport(name=name, path=out_path, fingerprint=meta.fingerprint, dim=(hidden or 0) + 2)
    bs = batch_size or loaded.cfg.batch_size
    for split in splits:
        dataset = open_export_split(loaded, split, name)
        if dataset is None:
            report.empty_splits.append(split)
            continue
        try:
            todo = [ti for ti, t in enumerate(dataset.tracks) if force or not store.is_complete(t.name, check_chunks=True)]
            report.skipped[split] = len(dataset.tracks) - len(todo)
            report.written[split] = 0
            for model, ids in _models_for(split, loaded, fold_runs, dataset, todo, device):
                for ti, values, valid in track_embeddings(model, dataset, loaded.device, ids, bs,
                                                          loaded.cfg.data.prefetch_batches):
                    if fold_runs:
                        values = values[:, -2:]
                    track = dataset.tracks[ti]
                    fps = float(dataset.fps[ti])
                    report.dim = values.shape[1]
                    store.write(
                        track.name, values, dataset.label_times(ti)[: len(values)], valid,
                        attrs={"fps": fps, "frames": len(values), "split": split, "run": loaded.run.path.name},
                        dtype="auto",  # float16 unless a column (e.g. a nearly constant VA prediction) would lose precision
                    )
                    report.written[split] += 1
        finally:
            dataset.close()
        log.info("export %s, %s: %d written, %d skipped", name, split, report.written[split], report.skipped[split])
    return report


def _models_for(split: str, loaded: Any, fold_runs: list[tuple[list[str], Path]], dataset: TrackDataset,
                todo: list[int], device: str) -> Iterator[tuple[torch.nn.Module, list[int]]]:
    """Which model exports which tracks: the run's own, or on the train split out of fold the fold run
    that did not see them (loaded one at a time)."""
    if split != "train" or not fold_runs:
        yield loaded.model, todo
        return
    from train.results.restore import load_run

    for held, folder in fold_runs:
        ids = [ti for ti in todo if dataset.tracks[ti].name in set(held)]
        if ids:
            fold = load_run(folder, folder.parent, device, data_root=loaded.cfg.data.data_root,
                            cache_dir=loaded.cfg.data.cache_dir, videos=loaded.cfg.data.videos,
                            labels=loaded.cfg.data.labels)
            yield fold.model, ids


def run_config_dict(run: RunDir) -> dict[str, Any]:
    """The run's config as the export's fingerprint records it: a flat config.json as written (older runs,
    so their exports keep their fingerprints), else config.yaml read as a TrainConfig."""
    from train.config import TrainConfig

    return load_json(run.config) if run.config.suffix == ".json" else TrainConfig.load(run.config).to_dict()


def load_json(path: Path) -> dict[str, Any]:
    return json.loads(Path(path).read_text(encoding="utf-8"))
