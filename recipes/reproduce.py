"""`pipeline.py reproduce RECIPE`: a method end to end from a recipe list file (configs/<recipe>/reproduce.yaml):
features for every split, each step's run (a unimodal branch, its export for stacking, a fusion head), late
fusion, evaluation and the test submission. What is done is skipped: extraction skips complete groups, a
step whose run finished with the same config is read back, an export skips complete groups, an ensemble
newer than its members is kept. One report: <out>/<recipe>/report.md, a CCC row per step beside the paper's.

The step list is data: swapping a branch means pointing a step's `train:` at another config file. A step
may name a stand-in for a profile (`train_by_profile: {tiny: FILE}`: e.g. frozen states where the paper
fine-tunes, on the built-in sample), and the extraction more recipes (`extract.also`, per profile
`also_by_profile`); the report says which file each row ran. `--model FEATURE=REF` gives any extractor its
weights (model_refs.FEATURE of every extraction recipe); with profile `full` a feature with no default model
and no reference, or a local weights file that is not there, is one line naming the file, the recipe key and
the flag, before anything is extracted.
"""

from __future__ import annotations

import dataclasses

import json
import logging
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from omegaconf import OmegaConf

from cache.names import UnsafeName, check_component
from recipes.loader import CONFIGS_DIR, ConfigError, load_file, resolve_config_path, validate
from train.runs.profiles import load_profile

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")


@dataclass
class PaperScore:
    P: Optional[float] = None
    ccc_v: Optional[float] = None
    ccc_a: Optional[float] = None
    note: str = ""


@dataclass
class ExtractStep:
    config: str = "???"  # an extraction recipe (configs/<recipe>/extract.yaml)
    splits: list[str] = field(default_factory=lambda: list(SPLITS))
    also: list[str] = field(default_factory=list)  # more extraction recipes, run after `config`
    also_by_profile: dict[str, list[str]] = field(default_factory=dict)  # profile -> `also` for that profile

    def recipes(self, profile: str) -> list[str]:
        """The extraction recipes run with `profile`, in order."""
        return [self.config, *self.also_by_profile.get(profile, self.also)]


@dataclass
class TrainStep:
    name: str = "???"  # step name (also the run name: <recipe>-<name>)
    train: str = "???"  # a training recipe file
    overrides: list[str] = field(default_factory=list)  # key=value on top of the file (and the profile)
    profiles: dict[str, list[str]] = field(default_factory=dict)  # profile -> key=value for that profile only
    train_by_profile: dict[str, str] = field(default_factory=dict)  # profile -> a stand-in recipe file for `train`
    export: Optional[str] = None  # feature name of the run's export (stacking input of later steps)
    export_windows: bool = False  # export one row per audio window (audio_window runs: train/data/window_audio.py)
    paper: PaperScore = field(default_factory=PaperScore)


@dataclass
class EnsembleStep:
    name: str = "???"
    members: list[str] = field(default_factory=list)  # step names
    method: str = "weighted"
    paper: PaperScore = field(default_factory=PaperScore)


@dataclass
class ReproduceRecipe:
    method: str = "???"  # what is reproduced (paper)
    extract: ExtractStep = field(default_factory=ExtractStep)
    steps: list[TrainStep] = field(default_factory=list)
    ensemble: Optional[EnsembleStep] = None
    submit: str = "???"  # the step whose run writes the test submission


def load_reproduce(recipe: str) -> tuple[str, ReproduceRecipe]:
    """`ras` -> configs/ras/reproduce.yaml (or a path to such a file)."""
    path = Path(recipe)
    if not path.is_file():
        known = sorted(p.parent.name for p in CONFIGS_DIR.glob("*/reproduce.yaml"))
        if recipe not in known:
            from cache.names import unknown

            raise ConfigError(f"{unknown('recipe', recipe, known)} (configs/RECIPE/reproduce.yaml), or a recipe file")
        path = resolve_config_path(f"{recipe}/reproduce.yaml")
    name = path.parent.name if path.name == "reproduce.yaml" else path.stem
    merged = validate(OmegaConf.structured(ReproduceRecipe), load_file(path), f" ({path})")
    spec: ReproduceRecipe = OmegaConf.to_object(merged)  # type: ignore[assignment]
    names = [s.name for s in spec.steps] + ([spec.ensemble.name] if spec.ensemble else [])
    for step in names:  # each names a run folder RUNS_DIR/<recipe>-<step>
        try:
            check_component(step, "step name")
        except UnsafeName as err:
            raise ConfigError(f"{path}: {err}") from None
    if len(set(names)) != len(names):
        raise ConfigError(f"{path}: step names repeat: {names}")
    for member in spec.ensemble.members if spec.ensemble else []:
        if member not in names:
            raise ConfigError(f"{path}: ensemble member '{member}' is not a step ({', '.join(names)})")
    if spec.submit not in names:
        raise ConfigError(f"{path}: submit '{spec.submit}' is not a step ({', '.join(names)})")
    files = [spec.extract.config, *spec.extract.also, *(f for fs in spec.extract.also_by_profile.values() for f in fs)]
    files += [f for s in spec.steps for f in (s.train, *s.train_by_profile.values())]
    for file in files:
        resolve_config_path(file)  # a file that is not there is one line now, not after hours of extraction
    return name, spec


@dataclass
class StepResult:
    step: str
    run: str
    what: str
    status: str  # trained | resumed | skipped (done) | failed: ...
    seconds: float
    scores: dict[str, Any] = field(default_factory=dict)  # eval_val.json of the run
    paper: PaperScore = field(default_factory=PaperScore)


@dataclass
class ReproduceOptions:
    data_root: Path
    cache_dir: str | None  # None: OUT/RECIPE/features
    out: Path = Path("artifacts/reproduce")
    runs_dir: Path | None = None  # default <out>/<recipe>/runs
    profile: str = "tiny"
    device: str = "auto"
    models: dict[str, str] = field(default_factory=dict)  # --model FEATURE=REF: each extraction's model_refs.FEATURE


def step_recipe(step: TrainStep, profile: str) -> str:
    """The training recipe a step runs with `profile` (its stand-in for that profile, if it names one)."""
    return step.train_by_profile.get(profile, step.train)


def step_what(step: TrainStep, profile: str, what: str) -> str:
    """The report's `what` of a step, saying when a profile's stand-in ran instead of the paper's recipe."""
    used = step_recipe(step, profile)
    return what if used == step.train else f"{what} (stand-in on profile {profile}: {used}, not {step.train})"


def looks_local(ref: str) -> bool:
    """A reference that names a local file or folder (not a hub id or a tag)."""
    return ref.startswith(("/", "./", "../", "~")) or Path(ref).suffix in (".safetensors", ".pth", ".pt", ".bin", ".onnx")


def check_model_weights(run_opts: Any, recipe_file: str, given: dict[str, str]) -> None:
    """Before extracting: every feature of the extraction has a model it can load. With profile `full`, a
    feature whose family has no default model needs a reference, and a local reference must exist; else one
    line naming the file, the recipe key (`model_refs.FEATURE` of `recipe_file`) and the flag."""
    from extract.base import build_config, get_extractor, with_dependencies

    for name in with_dependencies(list(dict.fromkeys(run_opts.features))):
        ref = run_opts.model_refs.get(name)
        where = f"recipe key model_refs.{name} in {recipe_file}, or reproduce --model {name}=PATH"
        origin = f"--model {name}" if name in given else f"model_refs.{name} of {recipe_file}"
        if ref:
            parts = ref.removeprefix("wavlm_ser:").split("@") if ref.startswith("wavlm_ser:") else [ref]
            for part in parts:
                path = Path(part).expanduser()
                if looks_local(part) and not path.exists():
                    raise FileNotFoundError(f"{path}: weights file of feature {name} not found (given by {origin}; {where})")
            continue
        cls = get_extractor(name)
        ext = cls(build_config(cls, run_opts.configs.get(name)), profile=run_opts.profile, models_dir=run_opts.models_dir)
        if ext.family is not None and run_opts.profile == "full":
            from extract.models import FAMILIES

            family = FAMILIES.get(ext.family)
            if family is not None and family.full_ref is None:
                raise FileNotFoundError(f"{name}: no weights file given and no default model for profile full ({where})")


def train_step(step: TrainStep, run_name: str, opts: ReproduceOptions, runs_dir: Path, console: Any) -> StepResult:
    from train.runs.recipe import build_train_config, check_stores, same_recipe
    from train.config import TrainConfig
    from train.fit.loop import train as run_training
    from train.runs.folder import RunDir

    explicit = {"name": run_name, "runs_dir": str(runs_dir), "device": opts.device,
                "data.data_root": str(opts.data_root), "data.cache_dir": str(opts.cache_dir)}
    overrides = [*step.overrides, *step.profiles.get(opts.profile, [])]
    cfg = build_train_config([step_recipe(step, opts.profile), load_profile(opts.profile).layer("train")], overrides, explicit)
    run = RunDir(runs_dir / run_name)
    what = step_what(step, opts.profile, f"{cfg.model} on {', '.join(cfg.data.features)}")
    start = time.perf_counter()
    resume = False
    if run.config.is_file():
        same = same_recipe(TrainConfig.load(run.config), cfg) and _same_inputs(run, cfg)
        if same and run.eval_file("val").is_file():
            return StepResult(step.name, run_name, what, "skipped (done)", 0.0, _read_json(run.eval_file("val")), step.paper)
        if same and run.last.is_file():
            resume = True
        else:
            aside = run.path.with_name(f"{run.path.name}.old-{int(time.time())}")
            shutil.move(str(run.path), str(aside))
            console.print(f"{run_name}: its config or input stores changed; the old run moved to {aside}")
    check_stores(cfg)
    run_training(cfg, resume=resume, console=console)
    return StepResult(step.name, run_name, what, "resumed" if resume else "trained", time.perf_counter() - start,
                      _read_json(run.eval_file("val")), step.paper)


def _same_inputs(run: Any, cfg: Any) -> bool:
    """The stores the run was trained on are still the ones in the cache (an upstream step that was
    redone, e.g. a re-exported branch, makes its consumers train again)."""
    from cache.location import as_location
    from cache.store import FeatureStore, store_exists, store_path

    recorded = run.read_features()
    for name in cfg.data.features:
        path = store_path(as_location(cfg.data.cache_dir), name)
        if name not in recorded or not store_exists(path):
            return False
        if FeatureStore.open(path).fingerprint != recorded[name].get("fingerprint"):
            return False
    return True


def _read_json(path: Path) -> dict[str, Any]:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def reproduce(recipe: str, opts: ReproduceOptions, console: Any, failures: list[str] | None = None) -> Path:
    """Run every step of the recipe, skipping what is done; returns the report's path. A step that fails
    raises; the videos that failed extraction (the steps go on without them) are appended to `failures`,
    so the command can end with exit status 1 after writing the report."""
    from extract.progress import print_summary
    from extract.backends import run_extraction
    from recipes.extract import build_run_options
    from train.results.ensemble import build_ensemble
    from train.runs.folder import is_ensemble
    from train.results.export import export_run
    from train.results.predict import predict_run
    from train.runs.folder import RunDir

    name, spec = load_reproduce(recipe)
    out_dir = Path(opts.out) / name
    runs_dir = Path(opts.runs_dir) if opts.runs_dir else out_dir / "runs"
    if not opts.cache_dir:  # a method's extractor settings (e.g. RAS's whole-frame Qwen input) are its own
        opts = dataclasses.replace(opts, cache_dir=str(out_dir / "features"))
    out_dir.mkdir(parents=True, exist_ok=True)
    results: list[StepResult] = []
    failed_videos: list[str] = []
    t0 = time.perf_counter()

    extract_recipes = spec.extract.recipes(opts.profile)
    plans = {(split, file): build_run_options([file], [], {
        "split": split, "data_root": str(opts.data_root), "cache_dir": str(opts.cache_dir),
        "profile": opts.profile, "device": opts.device, **{f"model_refs.{k}": v for k, v in opts.models.items()},
    }) for split in spec.extract.splits for file in extract_recipes}
    made = {f for run_opts in plans.values() for f in run_opts.features}
    unused = sorted(set(opts.models) - made)
    if unused and plans:
        raise ValueError(f"--model {', '.join(unused)}: no extraction of recipe {name} makes that feature "
                         f"({', '.join(extract_recipes)} make {', '.join(sorted(made))})")
    for (split, file), run_opts in plans.items():
        check_model_weights(run_opts, file, opts.models)
    for (split, file), run_opts in plans.items():
        console.rule(f"{name}: features, {split} ({file})")
        start = time.perf_counter()
        summary = run_extraction(run_opts)
        print_summary(console, summary)
        partial = list(getattr(summary, "partial", []))
        failed_videos += [*summary.failed, *(f"partial: {line}" for line in partial)]
        if failures is not None:
            failures += [f"features {split}: {line}" for line in summary.failed]
        status = f"{len(summary.done)} done, {len(summary.skipped)} skipped, {len(summary.failed)} failed, {len(partial)} partial"
        results.append(StepResult(f"features {split}", "-", f"{', '.join(run_opts.features)} ({file})", status,
                                  time.perf_counter() - start))

    run_names = {s.name: f"{name}-{s.name}" for s in spec.steps}
    if spec.ensemble:
        run_names[spec.ensemble.name] = f"{name}-{spec.ensemble.name}"
    for step in spec.steps:
        console.rule(f"{name}: {step.name} ({step_recipe(step, opts.profile)})")
        result = train_step(step, run_names[step.name], opts, runs_dir, console)
        results.append(result)
        if step.export:
            start = time.perf_counter()
            if step.export_windows:
                from train.results.window_export import export_windows

                by_split = export_windows(result.run, step.export, SPLITS, runs_dir=runs_dir, cache_dir=opts.cache_dir,
                                          data_root=opts.data_root, device=opts.device, on_mismatch="new")
                status = f"{sum(by_split.values())} window groups written"
            else:
                report = export_run(result.run, step.export, SPLITS, runs_dir=runs_dir, cache_dir=opts.cache_dir,
                                    data_root=opts.data_root, device=opts.device, on_mismatch="new")
                status = f"{sum(report.written.values())} groups written, {sum(report.skipped.values())} skipped"
            results.append(StepResult(f"{step.name} export", result.run, f"feature store {step.export}", status,
                                      time.perf_counter() - start))

    if spec.ensemble:
        ens = spec.ensemble
        console.rule(f"{name}: late fusion {ens.name}")
        run = RunDir(runs_dir / run_names[ens.name])
        members = [run_names[m] for m in ens.members]
        newest_member = max((runs_dir / m / "eval_val.json").stat().st_mtime for m in members)
        start = time.perf_counter()
        if is_ensemble(run) and run.eval_file("val").is_file() and run.eval_file("val").stat().st_mtime > newest_member:
            status = "skipped (done)"
        else:
            build_ensemble(members, run.path.name, runs_dir, ens.method, opts.device)
            status = "combined"
        spec_file = _read_json(run.path / "ensemble.json")
        what = f"{ens.method} of " + ", ".join(
            f"{m} (V {wv:.2f}, A {wa:.2f})" for m, wv, wa in zip(ens.members, spec_file["weights_v"], spec_file["weights_a"])
        )
        results.append(StepResult(ens.name, run.path.name, what, status, time.perf_counter() - start,
                                  _read_json(run.eval_file("val")), ens.paper))

    console.rule(f"{name}: test submission")
    start = time.perf_counter()
    submission = predict_run(run_names[spec.submit], "test", str(runs_dir), opts.device,
                             data_root=opts.data_root, cache_dir=opts.cache_dir)
    results.append(StepResult("test submission", run_names[spec.submit], str(submission), "written and checked",
                              time.perf_counter() - start))
    report = out_dir / "report.md"
    report.write_text(render_report(name, spec, opts, results, time.perf_counter() - t0, failed_videos), encoding="utf-8")
    return report


def _fmt(x: Any) -> str:
    return f"{x:.3f}" if isinstance(x, (int, float)) else "–"


def render_report(name: str, spec: ReproduceRecipe, opts: ReproduceOptions, results: list[StepResult],
                  seconds: float, failed_videos: list[str]) -> str:
    lines = [
        f"# Reproduction: {name}",
        "",
        f"{spec.method}",
        "",
        f"Data {opts.data_root}, features {opts.cache_dir}, profile `{opts.profile}`, device {opts.device}; "
        f"total {seconds / 60:.1f} min (this invocation: skipped steps cost nothing).",
        "",
        "Validation CCC of each step (all valid frames concatenated; smoothing chosen on validation), beside the paper's "
        "number for that step. With the tiny profile (the built-in sample, small randomly initialised extraction models, "
        "short schedules) the numbers show that every step runs and learns; they are not comparable with the paper's. "
        "A step marked `stand-in` ran a faster recipe than the paper's row on this profile (e.g. frozen states where the "
        "paper fine-tunes); its paper number belongs to the paper's recipe.",
        "",
        "| step | run | what | status | time (s) | CCC_V | CCC_A | P | P raw | paper CCC_V | paper CCC_A | paper P | paper note |",
        "|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in results:
        s, raw, p = r.scores.get("smoothed", {}), r.scores.get("raw", {}), r.paper
        lines.append(
            f"| {r.step} | {r.run} | {r.what} | {r.status} | {r.seconds:.0f} | {_fmt(s.get('ccc_v'))} | {_fmt(s.get('ccc_a'))} | "
            f"{_fmt(s.get('P'))} | {_fmt(raw.get('P'))} | {_fmt(p.ccc_v)} | {_fmt(p.ccc_a)} | {_fmt(p.P)} | {p.note} |"
        )
    if failed_videos:
        lines += ["", "## Videos that failed extraction or are partial (stored, fewer frames than declared)", "",
                  *(f"- {line}" for line in failed_videos)]
    lines.append("")
    return "\n".join(lines)
