"""Late fusion of runs (RAS's final submission): per-frame predictions of several runs combined by the mean
or by weights chosen on validation (V and A apart, as RAS's predictions_fusion.py searched them), with
smoothing chosen on validation, written as an ordinary run folder that `evaluate`, `predict` and the
report understand.

    <runs>/<name>/
      config.yaml     a TrainConfig with model "ensemble" (the first member's data settings)
      ensemble.json   members (run folders), method, weights per dimension, validation scores
      eval_val.json   CCC table of the chosen combination, smoothing half-windows
      report.md       members' and the ensemble's validation CCC
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from train.config import TrainConfig
from train.data.dataset import TrackDataset
from train.scoring.evaluate import EvalResult, SplitPredictions, concat_valid, evaluate_predictions, fill_missing
from train.scoring.metrics import ccc
from train.results.kinds import register_kind, run_split_predictions
from train.results.restore import RunSplit, chosen_half_windows
from cache.names import check_component
from train.runs.folder import ENSEMBLE_FILE, RunDir, is_ensemble

log = logging.getLogger(__name__)

ENSEMBLE_MODEL = "ensemble"
METHODS = ("weighted", "mean")
PAIR_STEP = 0.05  # RAS: grid step for two members
DIRICHLET_SAMPLES = 2000  # RAS: Dirichlet samples (they drew 5000) plus the mean and each member alone


@dataclass
class EnsembleSpec:
    members: list[str]  # run folders, relative to the ensemble's parent folder when inside it
    method: str = "weighted"
    weights_v: list[float] = field(default_factory=list)
    weights_a: list[float] = field(default_factory=list)
    scores: dict[str, Any] = field(default_factory=dict)  # validation scores of members, mean, weighted

    def save(self, path: Path) -> None:
        Path(path).write_text(json.dumps(self.__dict__, indent=2, sort_keys=True) + "\n", encoding="utf-8")

    @classmethod
    def load(cls, path: Path) -> "EnsembleSpec":
        return cls(**json.loads(Path(path).read_text(encoding="utf-8")))

    def member_dirs(self, base: Path) -> list[RunDir]:
        return [RunDir.resolve(m if Path(m).is_absolute() else Path(base) / m, Path(base)) for m in self.members]


def member_split(
    member: str | Path, split: str, runs_dir: Path, device: str, check: Callable[[TrackDataset], Any] | None = None,
    **locations: Any,
) -> tuple[TrackDataset, list[np.ndarray], list[np.ndarray], Any]:
    """A member run's dataset of `split`, its per-frame predictions (featureless frames filled), the
    feature-present masks and what `check(dataset)` returned."""
    result = run_split_predictions(member, split, runs_dir, device, check, **locations)
    filled = [fill_missing(p, m) for p, m in zip(result.preds.va, result.preds.has_feature)]
    return result.dataset, filled, result.preds.has_feature, result.checked


def combine(preds: list[list[np.ndarray]], weights_v: np.ndarray, weights_a: np.ndarray) -> list[np.ndarray]:
    """Per track: Σ_m w_m · pred_m, V and A with their own weights."""
    out = []
    for per_member in zip(*preds):
        stack = np.stack(per_member, 0).astype(np.float64)  # (M, T, 2)
        v = np.tensordot(weights_v, stack[..., 0], axes=(0, 0))
        a = np.tensordot(weights_a, stack[..., 1], axes=(0, 0))
        out.append(np.stack([v, a], -1).astype(np.float32))
    return out


def candidate_weights(n: int, seed: int = 42) -> np.ndarray:
    """(K, n) weight vectors on the simplex: a 0.05 grid for two members, else Dirichlet samples; always the
    mean and each member alone."""
    if n == 1:
        return np.ones((1, 1))
    if n == 2:
        x = np.round(np.arange(0.0, 1.0 + 1e-9, PAIR_STEP), 10)
        cands = np.stack([x, 1 - x], 1)
    else:
        cands = np.random.default_rng(seed).dirichlet(np.ones(n), size=DIRICHLET_SAMPLES)
    return np.concatenate([cands, np.full((1, n), 1.0 / n), np.eye(n)], 0)


def choose_weights(member_rows: np.ndarray, true: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """V and A weights (each chosen alone, CCC over the valid frames) from (M, N, 2) member predictions."""
    cands = candidate_weights(member_rows.shape[0])
    best = []
    for d in (0, 1):
        fused = cands @ member_rows[..., d]  # (K, N)
        scores = [ccc(f, true[:, d]) for f in fused]
        best.append(cands[int(np.argmax(scores))])
    return best[0], best[1]


def build_ensemble(
    members: list[str],
    name: str,
    runs_dir: Path = Path("artifacts/runs"),
    method: str = "weighted",
    device: str = "auto",
    grid: list[int] | None = None,
    **locations: Any,
) -> tuple[RunDir, EvalResult, EnsembleSpec]:
    """Fit the combination on validation and write the ensemble's run folder."""
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if len(members) < 2:
        raise ValueError("an ensemble needs at least two runs")
    runs_dir = Path(runs_dir)
    check_component(name, "ensemble name")  # RUNS_DIR/<name>: never a path outside it
    dirs = [RunDir.resolve(m, runs_dir) for m in members]
    out = RunDir(runs_dir / name)
    if out.path.resolve() in {d.path.resolve() for d in dirs}:
        raise ValueError(f"the ensemble {name} cannot be one of its members")
    if out.config.is_file() and not is_ensemble(out):
        raise FileExistsError(f"run folder {out.path} holds a trained run: choose another --name")
    datasets, preds, present = [], [], []
    try:
        for d in dirs:
            ds, p, m, _ = member_split(d.path, "val", runs_dir, device, **locations)
            datasets.append(ds)
            preds.append(p)
            present.append(m)
        ref = datasets[0]
        names = [t.name for t in ref.tracks]
        for d, ds in zip(dirs[1:], datasets[1:]):
            if [t.name for t in ds.tracks] != names:
                raise ValueError(f"run {d.path.name} predicts other validation tracks than {dirs[0].path.name}")
        rows = np.stack([concat_valid(ref, p)[0] for p in preds], 0)
        true = concat_valid(ref, preds[0])[1]
        n = len(dirs)
        mean_w = np.full(n, 1.0 / n)
        wv, wa = (mean_w, mean_w) if method == "mean" else choose_weights(rows, true)
        scores: dict[str, Any] = {}
        for d, p in zip(dirs, preds):
            r, t = concat_valid(ref, p)
            scores[d.path.name] = _scores(r, t)
        scores["mean"] = _scores(*concat_valid(ref, combine(preds, mean_w, mean_w)))
        scores["weighted"] = _scores(*concat_valid(ref, combine(preds, wv, wa))) if method == "weighted" else None
        fused = SplitPredictions(va=combine(preds, wv, wa), has_feature=[np.logical_or.reduce(m) for m in zip(*present)])
        base_cfg = TrainConfig.load(dirs[0].config)
        result = evaluate_predictions(ref, fused, grid=grid or base_cfg.smooth_grid, edges=base_cfg.smooth_edges)
    finally:
        for ds in datasets:
            ds.close()
    out.make()
    parent = out.path.parent.resolve()
    rel = [str(d.path.resolve().relative_to(parent)) if d.path.resolve().is_relative_to(parent) else str(d.path.resolve()) for d in dirs]
    spec = EnsembleSpec(members=rel, method=method, weights_v=[float(w) for w in wv], weights_a=[float(w) for w in wa], scores=scores)
    spec.save(out.path / ENSEMBLE_FILE)
    cfg = base_cfg
    cfg.model, cfg.name, cfg.runs_dir = ENSEMBLE_MODEL, name, str(runs_dir)
    cfg.save(out.config)
    out.write_json(out.eval_file("val"), result.to_dict())
    _write_report(out, spec, result)
    return out, result, spec


def _scores(pred: np.ndarray, true: np.ndarray) -> dict[str, float]:
    v, a = ccc(pred[:, 0], true[:, 0]), ccc(pred[:, 1], true[:, 1])
    return {"ccc_v": float(v), "ccc_a": float(a), "P": float((v + a) / 2)}


def ensemble_predictions(
    run: RunDir, split: str, device: str, check: Callable[[TrackDataset], Any] | None = None, **locations: Any
) -> tuple[TrackDataset, SplitPredictions, Any]:
    """The ensemble's raw per-frame predictions of a split (its members' filled predictions combined), and
    what `check` returned on the first member's dataset (every member's dataset is checked)."""
    spec = EnsembleSpec.load(run.path / ENSEMBLE_FILE)
    dirs = spec.member_dirs(run.path.parent)
    ref: TrackDataset | None = None
    checked: Any = None
    preds, present = [], []
    for d in dirs:
        ds, p, m, c = member_split(d.path, split, run.path.parent, device, check, **locations)
        if ref is None:
            ref, checked = ds, c
        else:
            if [t.name for t in ds.tracks] != [t.name for t in ref.tracks]:
                ds.close()
                raise ValueError(f"member {d.path.name} predicts other '{split}' tracks than {dirs[0].path.name}")
            ds.close()
        preds.append(p)
        present.append(m)
    assert ref is not None
    va = combine(preds, np.asarray(spec.weights_v), np.asarray(spec.weights_a))
    return ref, SplitPredictions(va=va, has_feature=[np.logical_or.reduce(m) for m in zip(*present)]), checked


@register_kind
class EnsembleRun:
    """A run folder holding an ensemble (a run kind, train/results/kinds.py): its members' predictions combined."""

    def __init__(self, run: RunDir, runs_dir: Path = Path("artifacts/runs")):
        self.run = run

    @staticmethod
    def holds(run: RunDir) -> bool:
        return is_ensemble(run)

    def predictions(
        self, split: str, device: str = "auto", check: Callable[[TrackDataset], Any] | None = None, **locations: Any
    ) -> RunSplit:
        dataset, preds, checked = ensemble_predictions(self.run, split, device, check, **locations)
        return RunSplit(self.run, TrainConfig.load(self.run.config), dataset, preds, chosen_half_windows(self.run), checked)


def _write_report(run: RunDir, spec: EnsembleSpec, result: EvalResult) -> None:
    from train.scoring.report import ccc_table

    lines = [
        f"# Run {run.path.name} (ensemble)",
        "",
        f"Late fusion of {len(spec.members)} runs, method `{spec.method}` (weights chosen on validation, V and A apart).",
        "",
        "| member | weight V | weight A | val CCC_V | val CCC_A | val P |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for m, wv, wa in zip(spec.members, spec.weights_v, spec.weights_a):
        s = spec.scores.get(Path(m).name, {})
        lines.append(f"| {m} | {wv:.2f} | {wa:.2f} | {s.get('ccc_v', float('nan')):.4f} | {s.get('ccc_a', float('nan')):.4f} | {s.get('P', float('nan')):.4f} |")
    for label in ("mean", "weighted"):
        s = spec.scores.get(label)
        if s:
            lines.append(f"| **{label}** (raw) | | | {s['ccc_v']:.4f} | {s['ccc_a']:.4f} | {s['P']:.4f} |")
    lines += ["", "## CCC (all valid frames of the split concatenated)", "", ccc_table({"val": result}), "",
              "Smoothing half-windows chosen on validation, V and A separately; predictions clipped to [-1, 1].", ""]
    run.report.write_text("\n".join(lines), encoding="utf-8")
