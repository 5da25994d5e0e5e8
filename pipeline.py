"""affcache command line: from raw videos to a cached feature store to trained VA heads.

Thin by design: each command parses options and calls the packages.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.logging import RichHandler
from rich.markup import escape
from rich.table import Table

from cache.location import as_location

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__)
console = Console()

DataRoot = Annotated[Path, typer.Option("--data-root", help="Dataset root: videos/ and annotations/ below it.")]
Videos = Annotated[Path | None, typer.Option("--videos", help="Video root (default DATA_ROOT/videos).")]
Labels = Annotated[Path | None, typer.Option("--labels", help="Annotation root (default DATA_ROOT/annotations).")]
CacheDir = Annotated[str, typer.Option("--cache-dir", help="Where feature stores live: a folder or an fsspec URL (s3://…).")]
RunsDir = Annotated[Path, typer.Option("--runs-dir", help="Where training runs live.")]
Split = Annotated[str, typer.Option("--split", help="train | val | test")]
Features = Annotated[str, typer.Option("--features", help="Comma-separated feature names.")]
Profile = Annotated[str, typer.Option("--profile", help="full (real weights) | tiny (small local models)")]
Device = Annotated[str, typer.Option("--device", help="auto | cpu | cuda")]

DEFAULT_DATA = Path("artifacts/sample")
DEFAULT_CACHE = "artifacts/features"
DEFAULT_RUNS = Path("artifacts/runs")


@contextmanager
def one_line_errors(command: str) -> Iterator[None]:
    """A user's mistake (missing store or run, unknown name, changed fingerprint, bad input) ends the command
    with one line and exit status 1 instead of a traceback; bugs still show theirs."""
    from cache.store import FingerprintMismatch

    try:
        yield
    except (FileNotFoundError, FileExistsError, KeyError, ValueError, FingerprintMismatch, RuntimeError) as err:
        if type(err) is RuntimeError:  # plain RuntimeErrors are not user errors
            raise
        message = err.args[0] if isinstance(err, KeyError) and err.args else err
        console.print(f"[red]{command} failed:[/red] {escape(str(message))}", highlight=False, soft_wrap=True)
        raise typer.Exit(1) from None


@app.callback()
def main(verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(message)s",
        handlers=[RichHandler(console=Console(stderr=True), show_path=False, show_time=False)],
    )


@app.command("sample-data")
def sample_data(
    out: Annotated[Path, typer.Option("--out", help="Where to write the sample dataset.")] = DEFAULT_DATA,
    seed: Annotated[int, typer.Option("--seed")] = 0,
    min_seconds: Annotated[float, typer.Option("--min-seconds", help="Shortest video.")] = 10.0,
    max_seconds: Annotated[float, typer.Option("--max-seconds", help="Longest video.")] = 20.0,
) -> None:
    """Write the built-in sample dataset (Aff-Wild2 layout, synthetic faces and voices)."""
    from cache.sample_data import SampleConfig, write_sample_dataset

    config = SampleConfig(seed=seed, min_seconds=min_seconds, max_seconds=max_seconds)
    summary = write_sample_dataset(out, config)
    console.print(f"sample dataset written to {out} ({summary})")


@app.command()
def status(
    data_root: DataRoot = DEFAULT_DATA,
    videos: Videos = None,
    labels: Labels = None,
    cache_dir: CacheDir = DEFAULT_CACHE,
) -> None:
    """Tracks, labelled and valid frames per split, and complete tracks per feature store."""
    from cache.manifest import load_manifest
    from cache.status import dataset_status

    manifest = load_manifest(data_root, videos, labels)
    rows = dataset_status(manifest, cache_dir)
    splits = Table(title=f"tracks and frames in {data_root}")
    for col in ("split", "tracks", "labelled frames", "valid frames"):
        splits.add_column(col, justify="left" if col == "split" else "right")
    for r in rows:
        splits.add_row(r.split, str(r.tracks), str(r.labelled_frames), str(r.valid_frames))
    console.print(splits)
    features = sorted({f for r in rows for f in r.complete})
    if features:
        stores = Table(title=f"complete tracks per feature store in {cache_dir}")
        stores.add_column("feature")
        for r in rows:
            stores.add_column(r.split, justify="right")
        for f in features:
            stores.add_row(f, *(f"{r.complete[f]}/{r.tracks}" for r in rows))
        console.print(stores)
    else:
        console.print(f"no feature stores in {cache_dir}")
    if manifest.errors:
        console.print(f"[red]{len(manifest.errors)} problem(s):[/red]")
        for err in manifest.errors:
            console.print(f"  {err}", markup=False)


@app.command("import-features")
def import_features_cmd(
    source: Annotated[Path, typer.Argument(help="A feature file or a folder of them (one file per track or video).")],
    name: Annotated[str, typer.Option("--name", help="Feature name: the store is CACHE_DIR/NAME.zarr.")],
    fmt: Annotated[str | None, typer.Option("--format", help="npz | npy | csv | hdf5 (default: from the file extension).")] = None,
    unit: Annotated[str, typer.Option("--unit", help="track | video: one group per track, or per video (sources named by video).")] = "track",
    fps_from_video: Annotated[
        bool | None,
        typer.Option("--fps-from-video/--no-fps-from-video", help="Frame indices to times with each video's real fps (default: on when frames are given)."),
    ] = None,
    frame_index_base: Annotated[int | None, typer.Option("--frame-index-base", help="0 | 1 (default: 1 for csv/OpenFace, 0 otherwise).")] = None,
    min_confidence: Annotated[float, typer.Option("--min-confidence", help="csv: rows with a lower confidence are invalid.")] = 0.5,
    dtype: Annotated[str, typer.Option("--dtype", help="Stored dtype: float16 | float32.")] = "float16",
    replace: Annotated[bool, typer.Option("--replace", help="Move a store of this name made from other sources aside.")] = False,
    data_root: DataRoot = DEFAULT_DATA,
    videos: Videos = None,
    labels: Labels = None,
    cache_dir: CacheDir = DEFAULT_CACHE,
) -> None:
    """Import per-frame features made elsewhere (npz, npy, OpenFace csv, HDF5) into a feature store."""
    from cache.importers import ImportConfig, SourceError, import_features, infer_format
    from cache.manifest import load_manifest
    from cache.store import FingerprintMismatch

    try:
        cfg = ImportConfig(
            fmt=fmt or infer_format(source), unit=unit, fps_from_video=fps_from_video,
            frame_index_base=frame_index_base, min_confidence=min_confidence, dtype=dtype, replace=replace,
        )
        report = import_features(source, name, cache_dir, cfg, lambda: load_manifest(data_root, videos, labels))
    except (SourceError, FingerprintMismatch, ValueError) as err:
        hint = " (--replace moves it aside)" if isinstance(err, FingerprintMismatch) else ""
        console.print(f"[red]import failed:[/red] {escape(str(err))}{hint}", highlight=False, soft_wrap=True)
        raise typer.Exit(1) from None
    for line in report.notes:
        console.print(f"  note: {line}", markup=False, highlight=False, soft_wrap=True)
    for line in report.failed:
        console.print(f"  failed: {line}", markup=False, highlight=False, soft_wrap=True)
    style = "green" if report.ok else "red"
    summary = escape(f"{name}: {report.summary()}")
    console.print(f"[{style}]{summary}[/{style}] (fingerprint {report.fingerprint})", highlight=False, soft_wrap=True)
    if not report.ok:
        raise typer.Exit(1)


@app.command("export-features")
def export_features_cmd(
    name: Annotated[str, typer.Argument(help="Feature name (CACHE_DIR/NAME.zarr).")],
    to: Annotated[Path, typer.Option("--to", help="The HDF5 file to write.")],
    cache_dir: CacheDir = DEFAULT_CACHE,
) -> None:
    """Export a feature store to one HDF5 file: a group per unit with values, times, valid and attributes."""
    from cache.exporters import export_store
    from cache.store import FingerprintMismatch, store_path

    try:
        report = export_store(store_path(cache_dir, name), to)
    except (FileNotFoundError, FingerprintMismatch, OSError) as err:
        console.print(f"[red]export failed:[/red] {escape(str(err))}", highlight=False, soft_wrap=True)
        raise typer.Exit(1) from None
    console.print(f"{name}: {report.summary()}", markup=False, highlight=False, soft_wrap=True)


# ---------------------------------------------------------------- stage 1: extract


ConfigFiles = Annotated[
    list[Path] | None,
    typer.Option("--config", help="Recipe YAML, repeatable (later files win), e.g. configs/ras/face.yaml; see configs/README.md."),
]
Overrides = Annotated[
    list[str] | None,
    typer.Argument(help="key=value recipe overrides after the options, e.g. head.layers=4 optim.lr=5e-5 (flags typed on the command line win).", show_default=False),
]


@app.command()
def extract(
    ctx: typer.Context = None,  # type: ignore[assignment]  (None when called from Python: every argument counts as given)
    overrides: Overrides = None,
    config: ConfigFiles = None,
    split: Split = "train",
    features: Features = "faces,mouth,landmarks,clip",
    data_root: DataRoot = DEFAULT_DATA,
    videos: Videos = None,
    labels: Labels = None,
    cache_dir: CacheDir = DEFAULT_CACHE,
    profile: Profile = "full",
    device: Device = "auto",
    force: Annotated[bool, typer.Option("--force", help="Redo groups that are already complete.")] = False,
    face_weights: Annotated[
        Path | None, typer.Option("--face-weights", help="YOLO face weights (.pt); default: MediaPipe's detector.")
    ] = None,
    model: Annotated[list[str] | None, typer.Option("--model", help="Model reference per feature: FEATURE=REF (repeatable).")] = None,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Frames per decoded chunk and per model batch.")] = 32,
    new_store: Annotated[bool, typer.Option("--new-store", help="On a fingerprint mismatch move the old store aside.")] = False,
    models_dir: Annotated[Path, typer.Option("--models-dir", help="Where tiny models are built.")] = Path("artifacts/models"),
    backend: Annotated[str, typer.Option("--backend", help="local (one process) | ray (one task per video).")] = "local",
    address: Annotated[str | None, typer.Option("--address", help="Ray cluster to join (e.g. auto); default: start a local one.")] = None,
    shard: Annotated[str | None, typer.Option("--shard", help="i/n: only shard i of n of the split's videos (sorted by stem).")] = None,
    cpus_per_task: Annotated[float, typer.Option("--cpus-per-task", help="Ray: CPUs per video task.")] = 1.0,
    gpus_per_task: Annotated[float | None, typer.Option("--gpus-per-task", help="Ray: GPUs per video task (default from profile and device).")] = None,
) -> None:
    """Stage 1: extract features for every video of a split into CACHE_DIR/<feature>.zarr (resumable)."""
    from extract.progress import print_summary
    from extract.runner import ExtractionError, run_extraction
    from recipes.cli import explicit_extract_values, typed_flags
    from recipes.extract import build_run_options

    flags = typed_flags(ctx, dict(
        split=split, features=features, data_root=data_root, videos=videos, labels=labels, cache_dir=cache_dir,
        profile=profile, device=device, force=force, face_weights=face_weights, model=model, batch_size=batch_size,
        new_store=new_store, models_dir=models_dir, backend=backend, address=address, shard=shard,
        cpus_per_task=cpus_per_task, gpus_per_task=gpus_per_task,
    ))
    try:
        opts = build_run_options(config or [], overrides or [], explicit_extract_values(flags))
        summary = run_extraction(opts)
    except (ExtractionError, KeyError, ValueError, FileNotFoundError) as err:
        console.print(f"[red]extract failed:[/red] {err}", markup=True, highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None
    print_summary(console, summary)
    if not summary.ok:
        raise typer.Exit(1)


# ---------------------------------------------------------------- stage 2: train / evaluate / predict


@app.command()
def train(
    ctx: typer.Context = None,  # type: ignore[assignment]  (None when called from Python: every argument counts as given)
    overrides: Overrides = None,
    config: ConfigFiles = None,
    model: Annotated[str, typer.Option("--model", help="Head name (gru, transformer, mamba, crossattn, dcmmoe, raav); default: the config's.")] = "",
    features: Annotated[str, typer.Option("--features", help="Comma-separated feature names; without it and without --config, the head's default recipe configs/heads/MODEL.yaml.")] = "",
    epochs: Annotated[int, typer.Option("--epochs")] = 50,
    lr: Annotated[float, typer.Option("--lr")] = 1e-4,
    weight_decay: Annotated[float, typer.Option("--weight-decay")] = 0.01,
    batch_size: Annotated[int, typer.Option("--batch-size")] = 8,
    window: Annotated[int, typer.Option("--window")] = 400,
    stride: Annotated[int, typer.Option("--stride")] = 150,
    lambda_region: Annotated[float, typer.Option("--lambda-region", help="Weight of the region KL term.")] = 0.2,
    seed: Annotated[int, typer.Option("--seed")] = 42,
    name: Annotated[str, typer.Option("--name", help="Run name (default MODEL-FEATURES-sSEED).")] = "",
    fill: Annotated[str, typer.Option("--fill", help="Nearest-fill per feature in seconds, e.g. clip=inf,ast=1.")] = "",
    head: Annotated[list[str] | None, typer.Option("--head", help="Head option key=value (repeatable).")] = None,
    loss_weights: Annotated[str, typer.Option("--loss-weights", help="CCC weights V,A.")] = "0.5,0.5",
    max_steps: Annotated[int | None, typer.Option("--max-steps", help="Cap on steps per epoch.")] = None,
    cache_mb: Annotated[float, typer.Option("--cache-mb", help="RAM budget of aligned tracks (MiB).")] = 1024.0,
    resume: Annotated[bool, typer.Option("--resume", help="Continue the run from its last checkpoint.")] = False,
    data_root: DataRoot = DEFAULT_DATA,
    videos: Videos = None,
    labels: Labels = None,
    cache_dir: CacheDir = DEFAULT_CACHE,
    runs_dir: RunsDir = DEFAULT_RUNS,
    device: Device = "auto",
) -> None:
    """Train a head on cached features; writes the run folder under RUNS_DIR/NAME.

    Settings come from recipe files (--config), then key=value overrides, then the flags typed here."""
    from recipes.cli import explicit_train_values, typed_flags
    from recipes.train import build_train_config, check_stores, default_recipe_files
    from train.loop import train as run_training
    from train.report import ccc_table

    flags = typed_flags(ctx, dict(
        model=model, features=features, epochs=epochs, lr=lr, weight_decay=weight_decay, batch_size=batch_size,
        window=window, stride=stride, lambda_region=lambda_region, seed=seed, name=name, fill=fill, head=head,
        loss_weights=loss_weights, max_steps=max_steps, cache_mb=cache_mb, data_root=data_root, videos=videos,
        labels=labels, cache_dir=cache_dir, runs_dir=runs_dir, device=device,
    ))
    with one_line_errors("train"):
        files = default_recipe_files(config or [], model, features)
        cfg = build_train_config(files, overrides or [], explicit_train_values(flags))
        check_stores(cfg)
        result = run_training(cfg, resume=resume, console=console)
    console.print(ccc_table({"val": result.eval}), markup=False)
    console.print(f"run folder: {result.run.path}")


@app.command()
def evaluate(
    run: Annotated[str, typer.Argument(help="Run name (under RUNS_DIR) or folder.")],
    split: Split = "val",
    runs_dir: RunsDir = DEFAULT_RUNS,
    data_root: Annotated[Path | None, typer.Option("--data-root", help="Default: the run's own.")] = None,
    cache_dir: Annotated[str | None, typer.Option("--cache-dir", help="Default: the run's own.")] = None,
    device: Device = "auto",
) -> None:
    """Recompute a run's CCC table (raw and smoothed) from its best checkpoint."""
    from train.evaluate import evaluate_run
    from train.report import ccc_table

    with one_line_errors("evaluate"):
        result = evaluate_run(run, split, str(runs_dir), device, data_root=data_root, cache_dir=cache_dir)
    console.print(ccc_table({split: result}), markup=False)


@app.command()
def predict(
    run: Annotated[str, typer.Argument(help="Run name (under RUNS_DIR) or folder.")],
    split: Split = "test",
    out: Annotated[Path | None, typer.Option("--out", help="CSV path (default RUN/predictions/SPLIT.csv).")] = None,
    runs_dir: RunsDir = DEFAULT_RUNS,
    data_root: Annotated[Path | None, typer.Option("--data-root", help="Default: the run's own.")] = None,
    cache_dir: Annotated[str | None, typer.Option("--cache-dir", help="Default: the run's own.")] = None,
    device: Device = "auto",
) -> None:
    """Write the challenge submission CSV for a split (checked against the sample file)."""
    from train.predict import predict_run

    with one_line_errors("predict"):
        path = predict_run(run, split, str(runs_dir), device, out=out, data_root=data_root, cache_dir=cache_dir)
    console.print(f"submission written and checked: {path}")


@app.command("export")
def export_cmd(
    run: Annotated[str, typer.Argument(help="Run name (under RUNS_DIR) or folder.")],
    name: Annotated[str, typer.Option("--name", help="Feature name of the export: the store is CACHE_DIR/NAME.zarr.")],
    splits: Annotated[str, typer.Option("--splits", help="Comma-separated splits to export.")] = "train,val,test",
    runs_dir: RunsDir = DEFAULT_RUNS,
    cache_dir: Annotated[str | None, typer.Option("--cache-dir", help="Where the run's inputs are read and the export is written (default: the run's own).")] = None,
    data_root: Annotated[Path | None, typer.Option("--data-root", help="Default: the run's own.")] = None,
    checkpoint: Annotated[str, typer.Option("--checkpoint", help="best | last")] = "best",
    force: Annotated[bool, typer.Option("--force", help="Rewrite groups that are already complete.")] = False,
    new_store: Annotated[bool, typer.Option("--new-store", help="If NAME exists with another fingerprint, move it aside.")] = False,
    folds: Annotated[int, typer.Option("--folds", help="Export the train split out of fold: K runs, each trained without one K-th of the train videos (1 = in-sample).")] = 1,
    device: Device = "auto",
) -> None:
    """Export a run's per-frame representation + VA prediction as a feature store (stacking for fusion)."""
    from cache.store import FingerprintMismatch
    from train.export import export_run

    try:
        report = export_run(
            run, name, [s.strip() for s in splits.split(",") if s.strip()], runs_dir=runs_dir, cache_dir=cache_dir,
            data_root=data_root, device=device, force=force, on_mismatch="new" if new_store else "refuse",
            checkpoint=checkpoint, folds=folds,
        )
    except (FingerprintMismatch, ValueError, FileNotFoundError) as err:
        hint = " (--new-store moves it aside)" if isinstance(err, FingerprintMismatch) else ""
        console.print(f"[red]export failed:[/red] {escape(str(err))}{hint}", highlight=False, soft_wrap=True)
        raise typer.Exit(1) from None
    console.print(f"{name}: {report.summary()}", markup=False, highlight=False, soft_wrap=True)


@app.command()
def ensemble(
    runs: Annotated[list[str], typer.Argument(help="Two or more runs (names under RUNS_DIR or folders).")],
    name: Annotated[str, typer.Option("--name", help="The ensemble's run name (RUNS_DIR/NAME).")],
    method: Annotated[str, typer.Option("--method", help="weighted (V and A weights chosen on validation) | mean")] = "weighted",
    runs_dir: RunsDir = DEFAULT_RUNS,
    data_root: Annotated[Path | None, typer.Option("--data-root", help="Default: the runs' own.")] = None,
    cache_dir: Annotated[str | None, typer.Option("--cache-dir", help="Default: the runs' own.")] = None,
    device: Device = "auto",
) -> None:
    """Late fusion: combine the runs' per-frame predictions into a run folder that evaluate and predict read."""
    from train.ensemble import build_ensemble
    from train.report import ccc_table

    with one_line_errors("ensemble"):
        out, result, spec = build_ensemble(runs, name, runs_dir, method, device, data_root=data_root, cache_dir=cache_dir)
    weights = ", ".join(f"{m}: V {wv:.2f} A {wa:.2f}" for m, wv, wa in zip(spec.members, spec.weights_v, spec.weights_a))
    console.print(f"weights ({spec.method}): {weights}", markup=False, highlight=False, soft_wrap=True)
    console.print(ccc_table({"val": result}), markup=False)
    console.print(f"run folder: {out.path}")


@app.command()
def reproduce(
    recipe: Annotated[str, typer.Argument(help="ras | kookmin (configs/RECIPE/reproduce.yaml) or a recipe list file.")],
    data_root: DataRoot = DEFAULT_DATA,
    cache_dir: CacheDir = DEFAULT_CACHE,
    runs_dir: Annotated[Path | None, typer.Option("--runs-dir", help="Where the steps' runs live (default OUT/RECIPE/runs).")] = None,
    out: Annotated[Path, typer.Option("--out", help="Where the report goes: OUT/RECIPE/report.md.")] = Path("artifacts/reproduce"),
    profile: Profile = "tiny",
    device: Device = "auto",
) -> None:
    """A method end to end: features, each branch and its export, fusion heads, late fusion, evaluation, the
    test submission; skips what is done; one report with a CCC row per step beside the paper's."""
    from cache.sample_data import GROUND_TRUTH_INDEX
    from recipes.reproduce import ReproduceOptions
    from recipes.reproduce import reproduce as run_reproduce

    if data_root == DEFAULT_DATA and not (data_root / GROUND_TRUTH_INDEX).is_file():
        sample_data(out=data_root)
    opts = ReproduceOptions(data_root=data_root, cache_dir=cache_dir, out=out, runs_dir=runs_dir, profile=profile, device=device)
    with one_line_errors("reproduce"):
        report = run_reproduce(recipe, opts, console)
    console.print(report.read_text(encoding="utf-8"), markup=False, highlight=False, soft_wrap=True)
    console.print(f"report: {report}")


# ---------------------------------------------------------------- the whole job on the sample


DEMO_FEATURES = "faces,mouth,landmarks,clip,ast,wavlm,audio_reliability,qwen3vl"


@app.command()
def demo(
    data_root: DataRoot = DEFAULT_DATA,
    cache_dir: CacheDir = DEFAULT_CACHE,
    runs_dir: RunsDir = DEFAULT_RUNS,
    profile: Profile = "tiny",
    device: Device = "auto",
    epochs: Annotated[int, typer.Option("--epochs")] = 20,
) -> None:
    """The main job on the built-in sample: data, every feature, a unimodal and a fusion head, the submission."""
    from rich.rule import Rule

    from cache.sample_data import GROUND_TRUTH_INDEX

    if not (data_root / GROUND_TRUTH_INDEX).is_file():
        console.print(Rule("1/5 sample dataset"))
        sample_data(out=data_root)
    else:
        console.print(f"sample dataset already at {data_root}")
    for split in ("train", "val", "test"):
        console.print(Rule(f"2/5 extract {split} ({profile} models)"))
        extract(split=split, features=DEMO_FEATURES, data_root=data_root, cache_dir=cache_dir, profile=profile,
                device=device)

    # A short schedule at a higher learning rate than the paper's 1e-4: the sample is tiny.
    common = dict(epochs=epochs, lr=1e-3, window=200, stride=100, data_root=data_root, cache_dir=cache_dir,
                  runs_dir=runs_dir, device=device)
    runs = [
        ("demo-gru-landmarks", "gru", "landmarks"),
        ("demo-dcmmoe", "dcmmoe", "face_gru,clip,wavlm,qwen3vl"),
    ]
    for i, (name, model, features) in enumerate(runs):
        console.print(Rule(f"{3 + i}/5 train {model} on {features}"))
        resume = (runs_dir / name / "checkpoints" / "last.pt").is_file()
        train(model=model, features=features, name=name, resume=resume, head=["hidden=64"], **common)
        if i == 0:  # stacking: the unimodal run's per-frame [hidden, VA] becomes a feature of the fusion run
            export_cmd(run=name, name="face_gru", runs_dir=runs_dir, cache_dir=cache_dir, data_root=data_root,
                       new_store=True, device=device)

    console.print(Rule("5/5 evaluate and write the test submission"))
    from train.evaluate import evaluate_run

    table = Table(title="validation CCC (all valid frames concatenated; smoothed as chosen on validation)")
    for col in ("run", "features", "CCC_V", "CCC_A", "P", "P raw"):
        table.add_column(col, justify="right" if col.startswith(("CCC", "P")) else "left")
    best = None
    for name, model, features in runs:
        result = evaluate_run(name, "val", str(runs_dir), device, data_root=data_root, cache_dir=cache_dir)
        s = result.smoothed
        table.add_row(name, features, f"{s['ccc_v']:.3f}", f"{s['ccc_a']:.3f}", f"{s['P']:.3f}", f"{result.raw['P']:.3f}")
        if best is None or s["P"] > best[1]:
            best = (name, s["P"])
    predict(run=best[0], split="test", runs_dir=runs_dir, data_root=data_root, cache_dir=cache_dir, device=device)
    console.print(table)
    for name, _, _ in runs:
        console.print(f"{name}: report {runs_dir / name / 'report.md'}, plots {runs_dir / name / 'plots'}")
    console.print(f"best run: {best[0]} (validation P {best[1]:.3f}); "
                  f"submission {runs_dir / best[0] / 'predictions' / 'test.csv'}")

if __name__ == "__main__":
    app()
