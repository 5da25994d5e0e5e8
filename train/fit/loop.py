"""The training loop: AdamW, ReduceLROnPlateau on validation P, early stopping, gradient clipping,
seeds, bf16 autocast on CUDA, a checkpoint after every epoch that carries all RNG state (so a resumed
run ends with the same metrics as an uninterrupted one), and a run folder with everything to read,
compare and reuse the run. Imports nothing from `extract/`."""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console

from cache.console import make_console
from cache.checks import check_no_overlap, dataset_dirs, require_dataset
from cache.location import as_location
from cache.manifest import Track, load_manifest
from train.runs.checkpoint import load_checkpoint, rng_state, save_checkpoint, seed_everything, set_rng_state
from train.config import TrainConfig
from train.data.sources import FeatureSource, open_features
from train.data.dataset import TrackDataset
from train.data.build import build_dataset
from train.runs.lock import run_lock
from train.data.views import views_dir_for
from train.scoring.evaluate import EvalResult, evaluate_predictions, input_features, predict_split, score, postprocess
from train.fit.finetune import backbone_feature, parameter_groups, save_backbone
from train.fit.model import build_model
from train.fit.progress import EpochProgress, ProgressSettings
from cache.prefetch import Prefetcher
from train.runs.folder import RunDir
from train.runs.tracking import MetricsWriter
from train.runs.weights import load_weights, save_weights, weights_file
from train.data.standardize import Standardizer
from train.runs.standardization import run_standardizer
from train.data.tensors import autocast, resolve_device, to_tensors

log = logging.getLogger(__name__)

EpochHook = Callable[[int, dict[str, Any]], None]


class RunExists(FileExistsError):
    """A run folder with a checkpoint exists and resuming was not asked for."""


@dataclass
class TrainResult:
    run: RunDir
    best_epoch: int
    best_P: float
    epochs_run: int
    eval: EvalResult


def run_name(cfg: TrainConfig) -> str:
    """cfg.name, else HEAD-FEATURES-DIGEST of the settings (train/runs/recipe.py default_run_name)."""
    from train.runs.recipe import default_run_name

    return cfg.name or default_run_name(cfg)


# a resumed run may change anything but the model it trains (its checkpoint must still load)
FIXED_ON_RESUME = ("model", "data.features", "data.level", "head.", "finetune.")


def open_split(
    cfg: TrainConfig,
    split: str,
    sources: dict[str, FeatureSource],
    fps: dict[str, float] | None = None,
    standardizer: Standardizer | None = None,
    training: bool = False,
) -> TrackDataset:
    """The dataset of one split of the manifest, with the run's windowing, cache and standardization
    (`training`: the batches the loop trains on, which a fine-tuned backbone may subsample)."""
    data = cfg.data
    splits = (split,)
    manifest = load_manifest(Path(data.data_root), data.videos and Path(data.videos), data.labels and Path(data.labels), splits)
    tracks = manifest.split(split)
    if split == "train" and data.holdout:
        held = set(data.holdout)
        tracks = [t for t in tracks if t.name not in held]
    if not tracks:
        raise ValueError(f"split '{split}' has no tracks under {data.data_root}")
    return tracks_dataset(cfg, tracks, sources, fps, standardizer, training, views=True)


def tracks_dataset(
    cfg: TrainConfig,
    tracks: Sequence[Track],
    sources: dict[str, FeatureSource],
    fps: dict[str, float] | None = None,
    standardizer: Standardizer | None = None,
    training: bool = False,
    views: bool = False,
) -> TrackDataset:
    """A dataset over any tracks (a split's, or bare videos') as the run reads them: a fine-tuned run's
    backbone input, else the aligned features (`views`: from the split's aligned views on disk)."""
    data = cfg.data
    if cfg.finetune and data.level != "frame":
        raise ValueError(f"--finetune trains at frame level, not level '{data.level}' (the window-level audio model "
                         "trains WavLM's top with --head window_encoder=wavlm_top)")
    if cfg.finetune:  # the backbone's feature is read as its input, not aligned (train/fit/finetune.py)
        from train.fit.finetune import build_finetune_dataset

        return build_finetune_dataset(cfg, tracks, sources, fps, training, standardizer)
    return build_dataset(
        tracks, sources, data.window, data.stride, fps=fps, cache_mb=data.cache_mb, align_workers=data.align_workers,
        views_dir=views_dir_for(data, tracks, sources) if views else None,
        standardizer=standardizer, level=data.level, window_filter=data.window_filter,
    )


def _resolve_run(cfg: TrainConfig, resume: bool) -> tuple[TrainConfig, RunDir, dict[str, Any] | None]:
    run = RunDir(Path(cfg.runs_dir) / run_name(cfg))
    if not run.last.is_file():
        return cfg, run, None
    if not resume:
        raise RunExists(f"run folder {run.path} already holds a checkpoint: pass --resume to continue it, or another --name")
    from train.runs.recipe import WHERE_NOT_WHAT, changed_keys

    stored = TrainConfig.load(run.config)
    changes = changed_keys(stored, cfg, WHERE_NOT_WHAT)
    fixed = [k for k, _, _ in changes if k.startswith(FIXED_ON_RESUME) or k in FIXED_ON_RESUME]
    if fixed:
        raise ValueError(f"run {run.path.name} cannot resume with another {', '.join(fixed)} (its checkpoint is of "
                         f"the stored model): train a new run, e.g. with another --name")
    if changes:
        said = ", ".join(f"{k} {_short(a)} -> {_short(b)}" for k, a, b in changes)
        log.warning("resuming %s with changed settings: %s", run.path.name, said)
    cfg.name = stored.name or run.path.name
    return cfg, run, load_checkpoint(run.last)


def _short(value: Any) -> str:
    text = json.dumps(value, default=str) if not isinstance(value, str) else value
    return text if len(text) <= 60 else text[:57] + "..."


def train(
    cfg: TrainConfig,
    resume: bool = False,
    on_epoch_end: EpochHook | None = None,
    console: Console | None = None,
    fps: dict[str, float] | None = None,
    progress: ProgressSettings | None = None,
) -> TrainResult:
    """Train cfg.model on cfg.data.features; write and return the run. `on_epoch_end(epoch, row)` is
    called after each epoch's checkpoint is written (an exception there interrupts the run). `progress`:
    a bar on a terminal console, plain lines every N steps / M seconds otherwise."""
    console = console or make_console(stderr=True)
    where = (Path(cfg.data.data_root), cfg.data.videos and Path(cfg.data.videos), cfg.data.labels and Path(cfg.data.labels))
    require_dataset(*where)
    check_no_overlap(dataset_dirs(*where)[1])
    with run_lock(Path(cfg.runs_dir) / run_name(cfg)):  # one process per run folder, released even on SIGKILL
        return _train(cfg, resume, on_epoch_end, console, fps, progress)


def _train(
    cfg: TrainConfig, resume: bool, on_epoch_end: EpochHook | None, console: Console, fps,
    progress: ProgressSettings | None = None,
) -> TrainResult:
    cfg, run, state = _resolve_run(cfg, resume)
    sources = open_features(as_location(cfg.data.cache_dir), cfg.data.features, cfg.data.nearest_fill)
    if state is not None:
        run.check_fingerprints(sources)
    device = resolve_device(cfg.device)
    train_ds = open_split(cfg, "train", sources, fps, training=True)
    try:
        val_ds = open_split(cfg, "val", sources, fps)
    except BaseException:
        train_ds.close()
        raise
    seed_everything(cfg.seed)
    try:  # the model too (a backbone refusing its cache, a top deeper than the model) before any folder
        model, has_regions = build_model(cfg, sources)
    except BaseException:
        train_ds.close()
        val_ds.close()
        raise
    run.make()  # only once the data and the model are known to be usable: a refused run leaves no folder behind
    cfg.name = run.path.name
    from train.runs.provenance import write_provenance  # config.yaml and provenance.json

    write_provenance(run.path, cfg)
    run.write_features(sources)
    log.info(
        "run %s: %d train tracks (%d windows), %d val tracks, features %s, device %s",
        run.path, len(train_ds.tracks), len(train_ds), len(val_ds.tracks), train_ds.feature_dims, device,
    )
    model.to(device)
    # the model's input streams are standardized (a mask-only feature such as audio reliability keeps its
    # values); set before the first track is aligned
    inputs = {n: sources[n] for n in input_features(model, list(sources)) if n != backbone_feature(model)}
    train_ds.standardizer = val_ds.standardizer = run_standardizer(run, cfg, inputs, train_ds.tracks, state is not None)
    from train.fit.losses import VALossConfig

    loss_cfg = VALossConfig(
        ccc_weights=tuple(cfg.loss_weights), regression=cfg.regression, regression_weight=cfg.regression_weight,
        region_lambda=cfg.lambda_region if has_regions else 0.0, region_sigma=cfg.region_sigma,
        ccc_over=cfg.ccc_over, ccc_min_frames=cfg.ccc_min_frames,
    )
    optimizer = torch.optim.AdamW(parameter_groups(model, cfg), lr=cfg.lr, weight_decay=cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
        optimizer, mode="max", patience=cfg.plateau_patience, factor=cfg.plateau_factor
    )
    # epochs are numbered from 1 everywhere (metrics.jsonl, console, TensorBoard, eval_val.json, report.md);
    # loop["epoch"] counts the epochs done, loop["best_epoch"] is the best one's number (0: none yet)
    loop = {"epoch": 0, "best_P": -math.inf, "best_epoch": 0, "since_best": 0, "numbered_from": 1, "global_step": 0}
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        loop = numbered_from_one({"global_step": 0, **state["loop"]})  # checkpoints before per-step curves lack the step count
        set_rng_state(state["rng"])
        run.truncate_metrics(loop["epoch"])
        log.info("resuming %s after epoch %d (best raw val P %.4f at epoch %d)", run.path.name, loop["epoch"], loop["best_P"], loop["best_epoch"])
    elif run.metrics.exists():
        run.metrics.unlink()

    tracker = MetricsWriter(run.path, purge_step=loop["global_step"] + 1 if state is not None else None,
                            mlflow=_mlflow_tracker(cfg, run, state is not None))

    def on_step(loss: float) -> None:
        loop["global_step"] += 1
        tracker.log_step(loss, loop["global_step"])

    try:
        while loop["epoch"] < cfg.epochs and loop["since_best"] < cfg.early_stop:
            epoch = loop["epoch"]  # epochs done before this one: this is epoch `epoch + 1`
            row = _train_epoch(cfg, model, optimizer, loss_cfg, train_ds, device, epoch, console, progress, on_step)
            preds = predict_split(model, val_ds, device, cfg.batch_size, cfg.data.prefetch_batches)
            val = score(val_ds, [postprocess(p, m) for p, m in zip(preds.va, preds.has_feature)])
            if cfg.scheduler == "plateau":  # "none": the lr stays as set (the scheduler object is kept for checkpoints)
                scheduler.step(val["P"])
            improved = val["P"] > loop["best_P"]
            loop.update(epoch=epoch + 1)
            if improved:
                loop.update(best_P=val["P"], best_epoch=epoch + 1, since_best=0)
            else:
                loop["since_best"] += 1
            row.update({f"val_{k}": v for k, v in val.items()}, best=improved)
            run.append_metrics(row)
            tracker.log(row, step=loop["global_step"], epochs_done=epoch + 1)
            ckpt = _checkpoint(cfg, model, optimizer, scheduler, loop, train_ds.feature_dims)
            if improved:
                save_checkpoint(run.best, ckpt)
                save_weights(weights_file(run.path, "best"), model, _weights_metadata(run, epoch + 1))
            save_checkpoint(run.last, ckpt)
            save_weights(weights_file(run.path, "last"), model, _weights_metadata(run, epoch + 1))
            console.print(
                f"epoch {epoch + 1}/{cfg.epochs}  loss {row['train_loss']:.4f}  val CCC_V {val['ccc_v']:.4f}  "
                f"CCC_A {val['ccc_a']:.4f}  P raw {val['P']:.4f}{'  *' if improved else ''}  lr {row['lr']:.1e}  "
                f"data wait {100 * row['data_wait_share']:.1f}%"
            )
            if on_epoch_end is not None:
                on_epoch_end(epoch + 1, row)
        if loop["since_best"] >= cfg.early_stop:
            log.info("early stop: no better raw validation P for %d epochs", cfg.early_stop)
        train_ds.close()
        result = _final_evaluation(cfg, run, model, val_ds, device, loop)
        tracker.log_final(cfg.to_dict(), final_metrics(result), loop["global_step"])
        return result
    finally:
        tracker.close()
        train_ds.close()
        val_ds.close()


def _train_epoch(
    cfg: TrainConfig,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    loss_cfg: Any,
    dataset: TrackDataset,
    device: torch.device,
    epoch: int,
    console: Console,
    settings: ProgressSettings | None = None,
    on_step: Callable[[float], None] | None = None,
) -> dict[str, Any]:
    from train.fit.losses import input_mask, va_loss

    model.train()
    order = dataset.epoch_order(np.random.default_rng([cfg.seed, epoch]), cfg.data.block_tracks)
    if cfg.max_steps_per_epoch:
        order = order[: cfg.max_steps_per_epoch * cfg.batch_size]
    n_steps = math.ceil(len(order) / cfg.batch_size)
    sums: dict[str, float] = {}
    steps = 0
    start = time.perf_counter()
    loader = Prefetcher(dataset.batches(order, cfg.batch_size), depth=cfg.data.prefetch_batches)
    try:
        with EpochProgress(console, epoch, cfg.epochs, n_steps, settings) as progress:
            for batch in loader:
                tb = to_tensors(batch, device)
                if not bool(batch.label_mask.any()):
                    progress.step(sums["total"] / steps if steps else None)
                    continue
                with autocast(device):
                    out = model(tb.features, tb.masks, tb.pad)
                loss_mask = input_mask(tb.label_mask, tb.masks, cfg.require_input)
                loss, parts = va_loss(out, tb.labels, loss_mask, loss_cfg)
                if not torch.isfinite(loss):
                    raise FloatingPointError(
                        f"non-finite loss at epoch {epoch + 1}, step {steps + 1} ({ {k: float(v) for k, v in parts.items()} })"
                    )
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if cfg.grad_clip and cfg.grad_clip > 0:
                    torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
                optimizer.step()
                steps += 1
                if on_step is not None:
                    on_step(float(loss.detach()))
                for k, v in parts.items():
                    sums[k] = sums.get(k, 0.0) + float(v)
                progress.step(sums["total"] / steps)
    finally:
        loader.close()
    elapsed = time.perf_counter() - start
    row: dict[str, Any] = {
        "epoch": epoch + 1,  # numbered from 1
        "steps": steps,
        "train_loss": sums.get("total", float("nan")) / max(steps, 1),
        "lr": optimizer.param_groups[0]["lr"],
        "epoch_s": round(elapsed, 3),
        "data_wait_share": loader.wait_s / elapsed if elapsed > 0 else 0.0,
    }
    for k, v in sums.items():
        if k != "total":
            row[f"train_loss_{k}"] = v / max(steps, 1)  # a loss (1 - CCC for ccc), not a score
    return row


def numbered_from_one(loop: dict[str, Any]) -> dict[str, Any]:
    """A checkpoint's loop state with the best epoch numbered from 1 (checkpoints written before
    `numbered_from` counted it from 0, -1 for none)."""
    if loop.get("numbered_from") != 1:
        loop = {**loop, "best_epoch": int(loop.get("best_epoch", -1)) + 1, "numbered_from": 1}
    return loop


def _mlflow_tracker(cfg: TrainConfig, run: RunDir, resume: bool):
    if cfg.tracking != "mlflow":
        return None
    from train.runs.mlflow_tracker import MlflowTracker

    return MlflowTracker(run.path, cfg.to_dict(), cfg.tracking_uri, resume)


def final_metrics(result: TrainResult) -> dict[str, float]:
    """The numbers a tracker keeps of a finished run: validation P, CCC_V, CCC_A smoothed and raw."""
    out = {f"{k}_smoothed": float(v) for k, v in result.eval.smoothed.items() if k in ("P", "ccc_v", "ccc_a")}
    out.update({f"{k}_raw": float(v) for k, v in result.eval.raw.items() if k in ("P", "ccc_v", "ccc_a")})
    return {**out, "best_epoch": float(result.best_epoch), "epochs_run": float(result.epochs_run)}


def _checkpoint(cfg, model, optimizer, scheduler, loop, feature_dims) -> dict[str, Any]:
    return {
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "loop": dict(loop),
        "rng": rng_state(),
        "config": cfg.to_dict(),
        "feature_dims": dict(feature_dims),
    }


def _weights_metadata(run: RunDir, epoch: int) -> dict[str, str]:
    return {"run": run.path.name, "epoch": str(epoch), "config": run.config.name}


def _final_evaluation(
    cfg: TrainConfig, run: RunDir, model: torch.nn.Module, val_ds: TrackDataset, device: torch.device, loop: dict
) -> TrainResult:
    from train.scoring.report import write_report

    if weights_file(run.path, "best").is_file():
        load_weights(model, weights_file(run.path, "best"), device)
    save_backbone(model, run.path)  # fine-tuned runs: RUN/backbone, loadable by extraction
    preds = predict_split(model, val_ds, device, cfg.batch_size, cfg.data.prefetch_batches)
    result = evaluate_predictions(val_ds, preds, grid=cfg.smooth_grid, edges=cfg.smooth_edges)
    run.write_json(run.eval_file("val"), {**result.to_dict(), "best_epoch": loop["best_epoch"]})
    write_report(run, cfg, result, val_ds, preds)
    return TrainResult(run=run, best_epoch=loop["best_epoch"], best_P=loop["best_P"], epochs_run=loop["epoch"], eval=result)
