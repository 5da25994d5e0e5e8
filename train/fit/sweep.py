"""Sweeps: many training runs over one cache (heads, features, learning rates, windows, seeds).

A sweep file is YAML:

    name: gru-lr                       # runs go to RUNS_DIR/<name>/<trial>
    base: heads/gru.yaml               # optional: a training recipe (configs/README.md), the trials' start
    set:                               # optional: fixed settings on top of it (dotted recipe keys)
      data.features: [clip]
      optim.epochs: 5
    grid:                              # every combination of these (dotted keys -> lists of values)
      optim.lr: [1.0e-4, 1.0e-3]
      seed: [1, 2]
    random:                            # or/and: `samples` draws from these
      samples: 4
      seed: 0                          # the draw's own seed (the same file gives the same trials)
      space:
        optim.lr: {loguniform: [1.0e-5, 1.0e-3]}
        head.hidden: [64, 128]        # a list: one of its values

Keys are those of a training recipe (`configs/README.md`), loaded and validated by the recipe loader
(`train/runs/recipe.py`): base file < `set` < the trial's values.

Every trial is an ordinary run (its folder, config, metrics, report), named after the values it sets.
A trial whose run folder holds a final evaluation is skipped; one with a checkpoint is resumed. Trials
run one after another here, or as Ray tasks (`backend="ray"`), one task per trial with its CPU/GPU
share. The views the trials read are built once, before the first trial (`train/data/views.py`).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import math
import re
import shutil
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from cache.names import UnsafeName, check_component
from train.config import TrainConfig
from train.runs.folder import RunDir
from train.runs.recipe import same_recipe

log = logging.getLogger(__name__)

SWEEP_KEYS = {"name", "base", "set", "grid", "random"}


class SweepError(ValueError):
    """A sweep file that cannot be run as written."""


@dataclass
class Trial:
    name: str
    values: dict[str, Any]  # dotted key -> value, what this trial sets beyond the sweep's common settings


@dataclass
class SweepSpec:
    name: str
    runs_dir: str  # RUNS_DIR/<name>: one folder per trial
    base: list[str] = field(default_factory=list)  # recipe files, the trials' common start
    settings: dict[str, Any] = field(default_factory=dict)  # dotted recipe keys set for every trial
    trials: list[Trial] = field(default_factory=list)


def load_sweep(path: Path, runs_dir: str | None = None) -> SweepSpec:
    """Read a sweep file, expand its trials, and check every trial's config before anything runs."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as err:
        raise SweepError(f"{path}: cannot read the sweep file ({err})") from None
    if not isinstance(raw, dict):
        raise SweepError(f"{path}: a sweep file is a mapping with keys {sorted(SWEEP_KEYS)}")
    unknown = set(raw) - SWEEP_KEYS
    if unknown:
        raise SweepError(f"{path}: unknown key(s) {sorted(unknown)}; a sweep file has {sorted(SWEEP_KEYS)}")
    name = str(raw.get("name") or path.stem)
    try:
        check_component(name, "sweep name")  # RUNS_DIR/<name>/<trial>
    except UnsafeName as err:
        raise SweepError(f"{path}: {err}") from None
    base = []
    if raw.get("base"):
        base_path = Path(raw["base"])
        beside = path.parent / base_path
        base = [str(beside if not base_path.is_absolute() and beside.is_file() else base_path)]
    settings = dict(raw.get("set") or {})
    root = Path(runs_dir) if runs_dir is not None else Path(str(settings.get("runs_dir", "artifacts/runs")))
    spec = SweepSpec(name=name, runs_dir=str(root / name), base=base, settings=settings,
                     trials=expand_trials(raw.get("grid"), raw.get("random"), path))
    for trial in spec.trials:
        trial_config(spec, trial)  # fail before the first run, not at the tenth
    return spec


def expand_trials(grid: Mapping[str, Sequence[Any]] | None, random: Mapping[str, Any] | None, where: Path | str = "sweep") -> list[Trial]:
    """The grid's combinations, then the random draws; each named after the values it sets."""
    points: list[dict[str, Any]] = []
    if grid:
        keys = list(grid)
        for key in keys:
            if not isinstance(grid[key], list) or not grid[key]:
                raise SweepError(f"{where}: grid.{key} must be a non-empty list")
        points += [dict(zip(keys, combo)) for combo in itertools.product(*(grid[k] for k in keys))]
    if random:
        samples, space = int(random.get("samples", 0)), random.get("space") or {}
        if samples < 1 or not space:
            raise SweepError(f"{where}: random needs samples >= 1 and a space")
        rng = np.random.default_rng(int(random.get("seed", 0)))
        for _ in range(samples):
            points.append({key: _draw(rng, key, dist, where) for key, dist in space.items()})
    if not points:
        points = [{}]
    trials: list[Trial] = []
    seen: dict[str, dict[str, Any]] = {}
    for values in points:
        name = trial_name(values)
        if name in seen and seen[name] != values:  # distinct values that print alike (1e-4 and 1.00001e-4)
            name = f"{name}-{_values_digest(values)}"
        if name in seen:  # the same point twice (a random draw repeating a grid point)
            continue
        seen[name] = values
        trials.append(Trial(name=name, values=values))
    return trials


def _values_digest(values: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(values, sort_keys=True, default=repr).encode()).hexdigest()[:8]


def _draw(rng: np.random.Generator, key: str, dist: Any, where: Path | str) -> Any:
    if isinstance(dist, list):
        return dist[int(rng.integers(len(dist)))]
    if isinstance(dist, dict) and len(dist) == 1:
        kind, (lo, hi) = next(iter(dist.items()))
        if kind == "uniform":
            return float(rng.uniform(lo, hi))
        if kind == "loguniform":
            return float(math.exp(rng.uniform(math.log(lo), math.log(hi))))
        if kind == "int":
            return int(rng.integers(lo, hi + 1))
    raise SweepError(f"{where}: random.space.{key} must be a list or one of uniform/loguniform/int: [low, high]")


def trial_name(values: Mapping[str, Any]) -> str:
    """Readable and unique: `lr1e-3_seed2` (long or odd values become a short hash)."""
    if not values:
        return "base"
    parts = []
    for key, value in values.items():
        short = key.split(".")[-1].replace("_", "")
        text = f"{value:.3g}" if isinstance(value, float) else (
            "+".join(map(str, value)) if isinstance(value, list) else str(value))
        parts.append(f"{short}{text}")
    name = re.sub(r"[^A-Za-z0-9_+.=-]", "-", "_".join(parts))
    if len(name) > 80:
        name = name[:60] + "-" + _values_digest(values)
    return name


def trial_config(spec: SweepSpec, trial: Trial) -> TrainConfig:
    """The trial's full training config: base recipe < the sweep's settings < the trial's values."""
    from recipes.loader import ConfigError
    from train.runs.recipe import build_train_config

    explicit = {**spec.settings, **trial.values, "name": trial.name, "runs_dir": spec.runs_dir}
    try:
        return build_train_config(spec.base, (), explicit)
    except ConfigError as err:
        raise SweepError(f"trial {trial.name}: {err}") from None


def trial_state(cfg: TrainConfig) -> str:
    """changed (the folder holds a run of another resolved config: the sweep file or its base changed),
    done (a final evaluation is written), partial (a checkpoint to resume), or new."""
    run = Path(cfg.runs_dir) / cfg.name
    folder = RunDir(run)
    if folder.has_config and not same_recipe(TrainConfig.load(folder.config), cfg):
        return "changed"
    if (run / "eval_val.json").is_file():
        return "done"
    if (run / "checkpoints" / "last.pt").is_file():
        return "partial"
    return "new"


def run_trial(cfg_dict: dict[str, Any]) -> dict[str, Any]:
    """One trial as an ordinary training run (also the body of a Ray task)."""
    from train.fit.loop import train

    cfg = TrainConfig.from_dict(cfg_dict)
    state = trial_state(cfg)
    if state == "done":
        return {"name": cfg.name, "state": "skipped", **trial_scores(Path(cfg.runs_dir) / cfg.name)}
    if state == "changed":  # never scored under the new settings: moved aside (nothing deleted), retrained
        run = Path(cfg.runs_dir) / cfg.name
        aside = run.with_name(f"{run.name}.old-{int(time.time())}")
        shutil.move(str(run), str(aside))
        log.warning("trial %s: its resolved config changed; the old run moved to %s", cfg.name, aside)
    result = train(cfg, resume=state == "partial")
    states = {"partial": "resumed", "changed": "retrained (config changed, old run moved aside)"}
    return {"name": cfg.name, "state": states.get(state, "trained"), **trial_scores(result.run.path)}


def trial_scores(run: Path) -> dict[str, float]:
    """A finished trial's validation P, smoothed (what ranks trials) and raw (its best epoch's)."""
    from train.runs.table import read_run

    row = read_run(run)
    return {"P_smoothed": row.P, "P_raw": row.P_raw}


def prepare_views(spec: SweepSpec) -> None:
    """Build the views of every feature set the trials read, once, before any trial (so Ray tasks
    and local trials only read them)."""
    from train.data.sources import open_features
    from train.fit.loop import open_split

    done: set[str] = set()
    for trial in spec.trials:
        cfg = trial_config(spec, trial)
        if not cfg.data.views:
            continue
        key = json.dumps([cfg.data.features, cfg.data.nearest_fill, cfg.data.views_dir, cfg.data.cache_dir,
                          cfg.data.data_root, cfg.data.holdout], default=str, sort_keys=True)
        if key in done:
            continue
        done.add(key)
        sources = open_features(cfg.data.cache_dir, cfg.data.features, cfg.data.nearest_fill)
        for split in ("train", "val"):
            dataset = open_split(cfg, split, sources)
            try:
                if dataset.views:
                    built = dataset.build_views()
                    if built:
                        log.info("views of %s (%s): %d tracks aligned", split, ",".join(cfg.data.features), built)
            finally:
                dataset.close()


def run_sweep(
    spec: SweepSpec,
    backend: str = "local",
    address: str | None = None,
    cpus_per_trial: float = 1.0,
    gpus_per_trial: float = 0.0,
    on_result: Callable[[dict[str, Any]], None] | None = None,
) -> list[dict[str, Any]]:
    """Run every trial (finished ones skipped); returns one result per trial, in trial order."""
    prepare_views(spec)
    configs = [trial_config(spec, t).to_dict() for t in spec.trials]
    Path(spec.runs_dir).mkdir(parents=True, exist_ok=True)
    results: list[dict[str, Any]] = []
    if backend == "local":
        for cfg in configs:
            results.append(_guarded(run_trial, cfg))
            if on_result:
                on_result(results[-1])
        return results
    if backend != "ray":
        raise SweepError(f"backend must be local or ray, got {backend!r}")
    import ray

    from extract.ray_backend import _init_ray

    started = _init_ray(address)
    try:
        task = ray.remote(num_cpus=cpus_per_trial, num_gpus=gpus_per_trial)(_guarded)
        pending = {task.remote(run_trial, cfg): i for i, cfg in enumerate(configs)}
        out: dict[int, dict[str, Any]] = {}
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            i = pending.pop(ready[0])
            out[i] = ray.get(ready[0])
            if on_result:
                on_result(out[i])
        return [out[i] for i in range(len(configs))]
    finally:
        if started:
            ray.shutdown()


def _guarded(fn: Callable[[dict[str, Any]], dict[str, Any]], cfg: dict[str, Any]) -> dict[str, Any]:
    """A failing trial is one line in the results; the sweep goes on."""
    try:
        return fn(cfg)
    except Exception as err:  # noqa: BLE001 - reported per trial, the sweep goes on
        return {"name": cfg.get("name"), "state": "failed", "error": f"{type(err).__name__}: {err}"}


def summarize(spec: SweepSpec) -> list[dict[str, Any]]:
    """Every trial's run, sorted by smoothed validation P (best first; the ranking of `runs` too), from the
    run folders. A trial without a final evaluation has P None and goes last."""
    from train.runs.table import read_run

    rows = []
    for trial in spec.trials:
        run = Path(spec.runs_dir) / trial.name
        row: dict[str, Any] = {"trial": trial.name, **trial.values, "P": None, "ccc_v": None, "ccc_a": None}
        if RunDir(run).has_config:
            got = read_run(run)
            if not math.isnan(got.P):
                row.update(P=got.P, ccc_v=got.ccc_v, ccc_a=got.ccc_a)
        rows.append(row)
    rows.sort(key=lambda r: -math.inf if r["P"] is None else -r["P"])
    return rows


def save_best(spec: SweepSpec, rows: Sequence[Mapping[str, Any]]) -> Path | None:
    """The best trial's full recipe as YAML next to the trials (`train --config` it to start from there)."""
    from recipes.loader import dump_yaml
    from train.runs.recipe import train_config_to_recipe

    best = next((r for r in rows if r["P"] is not None), None)
    if best is None:
        return None
    trial = next(t for t in spec.trials if t.name == best["trial"])
    recipe = train_config_to_recipe(trial_config(spec, trial))
    path = Path(spec.runs_dir) / "best.yaml"
    header = f"# best trial of sweep {spec.name}: {trial.name}, validation P smoothed {best['P']:.4f}\n"
    path.write_text(header + dump_yaml(recipe), encoding="utf-8")
    return path
