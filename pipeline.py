"""affcache command line: from raw videos to a cached feature store to trained VA heads.

Thin by design: each command parses options and calls the packages.

Exit status, the same for every command: 0 when the work is done; 1 when the command line was fine but
the work failed or the data is wrong (a missing or damaged file, a failed or partial video, a run in
use, a full disk), said in one line that names the file; 2 when the command line itself is wrong (an
unknown option, a value out of range or of the wrong form), with Click's usage message.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, Literal

import typer
from rich.markup import escape
from rich.table import Table

import train.fit.options as checks  # light: no torch until a value needs it
from cache.console import log_handler, make_console
from cache.location import as_location
from cache.names import check_name

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__, rich_markup_mode=None)  # plain one-line usage errors
console = make_console()  # unwrapped and untruncated in a pipe or a log file (cache/console.py)

DataRoot = Annotated[Path, typer.Option("--data-root", help="Dataset root: videos/ and annotations/ below it.")]
Videos = Annotated[Path | None, typer.Option("--videos", help="Video root (default DATA_ROOT/videos).")]
Labels = Annotated[Path | None, typer.Option("--labels", help="Annotation root (default DATA_ROOT/annotations).")]
CacheDir = Annotated[str, typer.Option("--cache-dir", help="Where feature stores live: a folder or an fsspec URL (s3://…).")]
RunsDir = Annotated[Path, typer.Option("--runs-dir", help="Where training runs live.")]


def checked(parse: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """A Typer callback that checks a value with `parse` (ValueError -> a usage error, exit status 2)."""

    def callback(value: Any) -> Any:
        if value is not None:
            try:
                parse(value)
            except ValueError as err:
                raise typer.BadParameter(str(err)) from None
        return value

    return callback


def usage_check(param: str, parse: Callable[..., Any], *args: Any) -> Any:
    """`parse(*args)` inside a command: a ValueError is a usage error on `param` (exit status 2)."""
    try:
        return parse(*args)
    except ValueError as err:
        raise typer.BadParameter(str(err), param_hint=param) from None


TableFormat = Annotated[
    Literal["table", "tsv", "json"],
    typer.Option("--format", help="table (for reading) | tsv (a header line, tab-separated) | json (a list of records)."),
]
Split = Annotated[Literal["train", "val", "test"], typer.Option("--split", help="Which split.")]
Features = Annotated[
    str, typer.Option("--features", help="Comma-separated feature names.", callback=checked(checks.feature_list))
]
Profile = Annotated[Literal["full", "tiny"], typer.Option("--profile", help="full (real weights) | tiny (small random models, for the built-in sample)")]
Device = Annotated[str, typer.Option("--device", help="auto | cpu | cuda | cuda:N", callback=checked(checks.device))]

DEFAULT_DATA = Path("artifacts/sample")
DEFAULT_CACHE = "artifacts/features"
DEFAULT_RUNS = Path("artifacts/runs")


@contextmanager
def one_line_errors(command: str, hint: str = "") -> Iterator[None]:
    """A user's mistake or a failure of the work (missing store or run, unknown name, changed fingerprint,
    bad or damaged input, a run in use, a read-only folder, a full disk) ends the command with one line and
    exit status 1 instead of a traceback; bugs still show theirs. `hint` is added to fingerprint mismatches."""
    from cache.store import DamagedStore, FingerprintMismatch

    try:
        yield
    except (OSError, KeyError, ValueError, FingerprintMismatch, DamagedStore, RuntimeError) as err:
        if type(err) is RuntimeError:  # plain RuntimeErrors are not user errors
            raise
        message = err.args[0] if isinstance(err, KeyError) and err.args else err
        if isinstance(err, OSError) and err.strerror:  # "[Errno 13] Permission denied: 'x'" -> "Permission denied: x"
            message = f"{err.strerror}: {err.filename}" if err.filename else err.strerror
        extra = hint if isinstance(err, FingerprintMismatch) else ""
        console.print(f"[red]{command} failed:[/red] {escape(str(message))}{extra}", highlight=False, soft_wrap=True)
        raise typer.Exit(1) from None


@app.callback()
def main(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Debug logs, and the C++ logs of MediaPipe/absl/TF Lite.")] = False,
) -> None:
    if not verbose:
        from cache.native_logs import quiet_libraries, silence_native_logs

        silence_native_logs()  # before anything imports mediapipe
        quiet_libraries()  # hub / transformers bars and retry warnings
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(message)s",
        handlers=[log_handler()],
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
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="List every problem, not one line per kind.")] = False,
    show_features: Annotated[bool, typer.Option("--features", help="Also list each store's kind, width, dtype and column names.")] = False,
) -> None:
    """Tracks, labelled and valid frames per split (videos found or not), complete tracks per feature
    store, and one line per kind of problem (exit status 1 when extract or train would refuse the data, or
    when a store or group is damaged)."""
    from cache.status import status_report

    with one_line_errors("status"):
        rows, damaged, problems = status_report(data_root, videos, labels, cache_dir)
    splits = Table(title=f"tracks and frames in {data_root}")
    for col in ("split", "tracks", "labelled frames", "valid frames", "with video"):
        splits.add_column(col, justify="left" if col == "split" else "right")
    for r in rows:
        splits.add_row(r.split, str(r.tracks), str(r.labelled_frames), str(r.valid_frames), str(r.with_video))
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
    if show_features and features:
        _print_store_columns(cache_dir)
    for line in damaged:
        console.print(f"[red]damaged:[/red] {escape(line)}", highlight=False, soft_wrap=True)
    for kind in problems:
        label = "[red]error:[/red]" if kind.error else "[yellow]problem:[/yellow]"
        more = "" if verbose or not kind.items else " (--verbose lists them)"
        console.print(f"{label} {escape(kind.summary)}{more}", highlight=False, soft_wrap=True)
        for item in kind.items if verbose else []:
            console.print(f"  {item}", markup=False, highlight=False, soft_wrap=True)
    if damaged or any(kind.error for kind in problems):  # damage printed is damage reported
        raise typer.Exit(1)


def _print_store_columns(cache_dir: str) -> None:
    from cache.describe import describe_store
    from cache.store import FeatureStore, FingerprintMismatch, list_stores

    table = Table(title=f"feature stores in {cache_dir}")
    for col in ("feature", "kind", "unit", "dim", "dtype", "columns"):
        table.add_column(col, justify="right" if col == "dim" else "left")
    for name, path in sorted(list_stores(cache_dir).items()):
        try:
            summary = describe_store(name, FeatureStore.open(path))
        except (FingerprintMismatch, FileNotFoundError, OSError, ValueError) as err:
            table.add_row(name, "-", "-", "-", "-", escape(f"unreadable: {err}"))
            continue
        table.add_row(name, summary.kind, summary.unit, str(summary.dim or "-"), "/".join(summary.dtypes) or "-",
                      escape(summary.columns_text()))
    console.print(table)


@app.command("import-features")
def import_features_cmd(
    source: Annotated[Path, typer.Argument(help="A feature file or a folder of them (one file per track or video).")],
    name: Annotated[str, typer.Option("--name", help="Feature name: the store is CACHE_DIR/NAME.zarr.", callback=checked(check_name))],
    fmt: Annotated[Literal["npz", "npy", "csv", "hdf5"] | None, typer.Option("--format", help="npz | npy | csv | hdf5 (default: from the file extension).")] = None,
    unit: Annotated[Literal["track", "video"], typer.Option("--unit", help="track | video: one group per track, or per video (sources named by video).")] = "track",
    fps_from_video: Annotated[
        bool | None,
        typer.Option("--fps-from-video/--no-fps-from-video", help="Frame indices to times with each video's real fps (default: on when frames are given)."),
    ] = None,
    frame_index_base: Annotated[int | None, typer.Option("--frame-index-base", min=0, max=1, help="0 | 1 (default: 1 for csv/OpenFace, 0 otherwise).")] = None,
    min_confidence: Annotated[float, typer.Option("--min-confidence", help="csv: rows with a lower confidence are invalid.")] = 0.5,
    dtype: Annotated[str, typer.Option("--dtype", help="Stored dtype: auto (float16 unless a column would lose precision, then float32) | float16 | float32.")] = "auto",
    columns: Annotated[str | None, typer.Option("--columns", help="csv: exactly these feature columns, comma-separated, in order.")] = None,
    drop_columns: Annotated[str | None, typer.Option("--drop-columns", help="csv: feature columns to leave out, comma-separated.")] = None,
    replace: Annotated[bool, typer.Option("--replace", help="Move a store of this name made from other sources aside.")] = False,
    data_root: DataRoot = DEFAULT_DATA,
    videos: Videos = None,
    labels: Labels = None,
    cache_dir: CacheDir = DEFAULT_CACHE,
) -> None:
    """Import per-frame features made elsewhere (npz, npy, OpenFace csv, HDF5) into a feature store.

    Feature and unit names are letters, digits, _ and - (cache/names.py); values beyond float32 are invalid
    rows; no-row, zero-width and duplicate- or negative-timestamp sources fail."""
    from cache.importers import ImportConfig, SourceError, import_features, infer_format
    from cache.manifest import load_manifest
    from cache.store import DamagedStore, FingerprintMismatch

    try:
        cfg = ImportConfig(
            fmt=fmt or infer_format(source), unit=unit, fps_from_video=fps_from_video,
            frame_index_base=frame_index_base, min_confidence=min_confidence, dtype=dtype, replace=replace,
            columns=_names(columns) if columns is not None else None, drop_columns=_names(drop_columns),
        )
        report = import_features(source, name, cache_dir, cfg, lambda: load_manifest(data_root, videos, labels))
    except (SourceError, FingerprintMismatch, DamagedStore, ValueError, OSError) as err:
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


def _names(text: str | None) -> tuple[str, ...]:
    return tuple(n.strip() for n in (text or "").split(",") if n.strip())


@app.command("export-features")
def export_features_cmd(
    name: Annotated[str, typer.Argument(help="Feature name (CACHE_DIR/NAME.zarr).")],
    to: Annotated[Path, typer.Option("--to", help="The HDF5 file to write.")],
    cache_dir: CacheDir = DEFAULT_CACHE,
) -> None:
    """Export a feature store to one HDF5 file: a group per unit with values, times, valid and attributes."""
    from cache.exporters import export_store
    from cache.store import DamagedStore, FingerprintMismatch, store_path

    try:
        report = export_store(store_path(cache_dir, name), to)
    except (FileNotFoundError, FingerprintMismatch, DamagedStore, OSError) as err:
        console.print(f"[red]export failed:[/red] {escape(str(err))}", highlight=False, soft_wrap=True)
        raise typer.Exit(1) from None
    console.print(f"{name}: {report.summary()}", markup=False, highlight=False, soft_wrap=True)
    from cache.describe import store_columns

    names = store_columns(store_path(cache_dir, name))
    if names:
        console.print(f"{name}: columns {', '.join(names)}", markup=False, highlight=False, soft_wrap=True)


@app.command()
def verify(
    features: Annotated[str | None, typer.Argument(help="Comma-separated feature names (default: every store).")] = None,
    cache_dir: CacheDir = DEFAULT_CACHE,
    views_dir: Annotated[str | None, typer.Option("--views-dir", help="Aligned views to check too (default CACHE_DIR/_views).")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Only report; change nothing.")] = False,
) -> None:
    """Read every complete group back (checksums, shapes, chunk files, node kinds) and mark damaged ones
    incomplete, so the next extract / import-features / export redoes exactly those; check kept
    standardization statistics against their groups (stale ones removed) and every aligned view against its
    checksum (damaged ones removed, aligned again by the next train). Exit status 1 when damage is found."""
    from cache.verify import verify_cache
    from train.data.views import default_views_dir, verify_views

    names = [f.strip() for f in (features or "").split(",") if f.strip()] or None
    with one_line_errors("verify"):
        report = verify_cache(as_location(cache_dir), names, dry_run=dry_run)
        folder = Path(views_dir) if views_dir else default_views_dir(as_location(cache_dir))
        views = verify_views(folder, dry_run=dry_run)
    if report.damaged:
        table = Table(title=f"damaged groups in {cache_dir}")
        for col in ("feature", "group", "problem", "redo with"):
            table.add_column(col, overflow="fold")
        for d in report.damaged:
            table.add_row(*(escape(x) for x in (d.feature, d.unit, d.problem, d.redo)))
        console.print(table)
    action = "nothing changed (dry run)" if dry_run else f"{report.marked} marked incomplete"
    console.print(
        f"checked {report.groups} complete group(s) in {len(report.stores)} store(s): "
        f"{len(report.damaged)} damaged, {action}", markup=False, highlight=False, soft_wrap=True,
    )
    if report.unchecked:
        console.print(
            f"{report.unchecked} group(s) were written before checksums and chunk counts: decoded and shape-checked "
            "only (extract --force rewrites them with checksums)", markup=False, highlight=False, soft_wrap=True,
        )
    for d in report.stale:
        console.print(f"stale: {d.feature} {d.unit}: {d.problem}", markup=False, highlight=False, soft_wrap=True)
    if report.stale:
        done = "kept (dry run)" if dry_run else f"{report.removed} removed"
        console.print(f"{len(report.stale)} stale standardization record(s) (recomputed by the next train): {done}",
                      markup=False, highlight=False, soft_wrap=True)
    if views.checked:
        for file, problem in views.damaged:
            console.print(f"damaged view: {file}: {problem}", markup=False, highlight=False, soft_wrap=True)
        done = "nothing changed (dry run)" if dry_run else f"{views.removed} removed (the next train or align rebuilds them)"
        console.print(f"checked {views.checked} aligned view(s) in {folder}: {len(views.damaged)} damaged, {done}",
                      markup=False, highlight=False, soft_wrap=True)
    if report.damaged or views.damaged:
        raise typer.Exit(1)


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
    profile: Annotated[
        Literal["full", "tiny"],
        typer.Option("--profile", help="full (real weights) | tiny (small random models); default: tiny on the built-in sample, else full"),
    ] = "full",
    device: Device = "auto",
    force: Annotated[bool, typer.Option("--force", help="Redo groups that are already complete.")] = False,
    face_weights: Annotated[
        Path | None, typer.Option("--face-weights", help="YOLO face weights (.pt); default: MediaPipe's detector.")
    ] = None,
    model: Annotated[
        list[str] | None,
        typer.Option("--model", help="Model reference per feature: FEATURE=REF (repeatable).", callback=checked(checks.model_refs)),
    ] = None,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1, help="Frames per decoded chunk and per model batch.")] = 32,
    new_store: Annotated[bool, typer.Option("--new-store", help="On a fingerprint mismatch move the old store aside.")] = False,
    models_dir: Annotated[Path, typer.Option("--models-dir", help="Where tiny models are built.")] = Path("artifacts/models"),
    backend: Annotated[Literal["local", "ray"], typer.Option("--backend", help="local (one process) | ray (one task per video).")] = "local",
    address: Annotated[str | None, typer.Option("--address", help="Ray cluster to join (e.g. auto); default: start a local one.")] = None,
    shard: Annotated[str | None, typer.Option("--shard", help="i/n: only shard i of n of the split's videos (sorted by stem).")] = None,
    cpus_per_task: Annotated[float, typer.Option("--cpus-per-task", min=0, help="Ray: CPUs per video task.")] = 1.0,
    gpus_per_task: Annotated[float | None, typer.Option("--gpus-per-task", min=0, help="Ray: GPUs per video task (default from profile and device).")] = None,
) -> None:
    """Stage 1: extract features for every video of a split into CACHE_DIR/<feature>.zarr (resumable).

    Exit status 1 also when a video is partial: stored, but fewer frames decoded than its container
    declares or its labels need (listed with the counts)."""
    from extract.progress import print_summary
    from extract.runner import ExtractionError, parse_shard
    from extract.backends import run_extraction
    from recipes.cli import explicit_extract_values, typed_flags
    from recipes.extract import build_run_options, default_profile

    flags = typed_flags(ctx, dict(
        split=split, features=features, data_root=data_root, videos=videos, labels=labels, cache_dir=cache_dir,
        profile=profile, device=device, force=force, face_weights=face_weights, model=model, batch_size=batch_size,
        new_store=new_store, models_dir=models_dir, backend=backend, address=address, shard=shard,
        cpus_per_task=cpus_per_task, gpus_per_task=gpus_per_task,
    ))
    try:
        parse_shard(shard)
    except ExtractionError as err:
        raise typer.BadParameter(str(err), param_hint="--shard") from None
    with one_line_errors("extract"):
        explicit = explicit_extract_values(flags)
        where = explicit.get("data_root", data_root)
        opts = build_run_options(config or [], overrides or [], explicit, defaults={"profile": default_profile(where)})
        summary = run_extraction(opts)
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
    features: Annotated[str, typer.Option(
        "--features", callback=checked(lambda text: text and checks.feature_list(text)),
        help="Comma-separated feature names; without it and without --config, the head's default recipe configs/heads/MODEL.yaml.",
    )] = "",
    epochs: Annotated[int, typer.Option("--epochs", min=1)] = 50,
    lr: Annotated[float | None, typer.Option("--lr", callback=checked(checks.positive), help="Learning rate of the head (default 1e-4; 2e-4 with --finetune).")] = None,
    weight_decay: Annotated[float, typer.Option("--weight-decay", min=0)] = 0.01,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1)] = 8,
    window: Annotated[int, typer.Option("--window", min=1, help="Frames per training window.")] = 400,
    stride: Annotated[int, typer.Option("--stride", min=1, help="Frames between window starts (at most --window).")] = 150,
    level: Annotated[Literal["frame", "segment", "audio_window"], typer.Option("--level", help="Window positions: frame (label frames), segment (the first feature's segments) or audio_window (the first feature's audio rows; training windows filtered by mouth and labels).")] = "frame",
    lambda_region: Annotated[float, typer.Option("--lambda-region", min=0, help="Weight of the region KL term.")] = 0.2,
    seed: Annotated[int, typer.Option("--seed")] = 42,
    name: Annotated[str, typer.Option("--name", help="Run name (default HEAD-FEATURES-DIGEST: a digest of the settings, so each variant gets its own).")] = "",
    fill: Annotated[
        str, typer.Option("--fill", help="Nearest-fill per feature in seconds, e.g. clip=inf,ast=1.", callback=checked(checks.fill))
    ] = "",
    head: Annotated[list[str] | None, typer.Option("--head", help="Head option key=value (repeatable).")] = None,
    loss_weights: Annotated[
        str, typer.Option("--loss-weights", help="CCC weights V,A.", callback=checked(checks.loss_weights))
    ] = "0.5,0.5",
    max_steps: Annotated[int | None, typer.Option("--max-steps", min=1, help="Cap on steps per epoch.")] = None,
    cache_mb: Annotated[float, typer.Option("--cache-mb", callback=checked(checks.positive), help="RAM budget of aligned tracks (MiB).")] = 1024.0,
    resume: Annotated[bool, typer.Option("--resume", help="Continue the run from its last checkpoint; `train --resume RUN` (or --name RUN --resume) alone continues RUN from its config.yaml, overrides and flags given now applied and said.")] = False,
    print_config: Annotated[bool, typer.Option("--print-config", help="Print the resolved recipe (YAML, what config.yaml will hold) and the run's name; train nothing.")] = False,
    finetune: Annotated[str | None, typer.Option("--finetune", help="Train a backbone top from the cache: clip:K | clip:all (on face_crops) | wavlm:K (on wavlm_hidden).")] = None,
    backbone_lr: Annotated[float, typer.Option("--backbone-lr", help="With --finetune: learning rate of the backbone.")] = 5e-6,
    profile: Profile = "full",
    finetune_opt: Annotated[list[str] | None, typer.Option("--finetune-opt", help="With --finetune: key=value (ref, models_dir, grad_checkpointing, frames_per_window); repeatable.")] = None,
    log_every: Annotated[int, typer.Option("--log-every", help="Stdout not a terminal: a progress line every N steps ...")] = 50,
    log_seconds: Annotated[float, typer.Option("--log-seconds", help="... or every M seconds, whichever comes first.")] = 60.0,
    data_root: DataRoot = DEFAULT_DATA,
    videos: Videos = None,
    labels: Labels = None,
    cache_dir: CacheDir = DEFAULT_CACHE,
    runs_dir: RunsDir = DEFAULT_RUNS,
    device: Device = "auto",
) -> None:
    """Train a head on cached features (or, with --finetune, a head and a backbone top); writes RUNS_DIR/NAME.

    Settings come from recipe files (--config), then key=value overrides, then the flags typed here. An
    override gets the check of its flag (optim.epochs=0 is a usage error like --epochs 0); recipes may
    interpolate recipe keys only (${data.window}, no ${oc.env:...}); a run name is one folder name."""
    from recipes.cli import check_train_overrides, explicit_train_values, typed_flags
    from train.runs.recipe import (
        build_train_config, check_stores, default_recipe_files, resolved_recipe_text, resume_files, resume_run_arg,
    )
    from train.config import parse_head_options
    from train.fit.loop import train as run_training
    from train.fit.progress import ProgressSettings
    from train.scoring.report import ccc_table

    flags = typed_flags(ctx, dict(
        model=model, features=features, epochs=epochs, lr=lr, weight_decay=weight_decay, batch_size=batch_size,
        window=window, stride=stride, level=level, lambda_region=lambda_region, seed=seed, name=name, fill=fill,
        head=head, loss_weights=loss_weights, max_steps=max_steps, cache_mb=cache_mb, data_root=data_root,
        videos=videos, labels=labels, cache_dir=cache_dir, runs_dir=runs_dir, device=device,
    ))
    if stride > window and ("stride" in flags or "window" in flags):
        raise typer.BadParameter(f"{stride} is larger than --window {window}: frames between windows would never be seen", param_hint="--stride")
    resume_run = resume_run_arg(resume, overrides)  # `train --resume RUN`
    usage_check("OVERRIDES", check_train_overrides, overrides[1:] if resume_run else overrides)
    if model:
        usage_check("--model", checks.head_name, model)
        usage_check("--head", checks.head_options, model, head)
    if features and fill:
        usage_check("--fill", checks.fill, fill, checks.feature_list(features))
    explicit = explicit_train_values(flags)
    if finetune:
        from train.fit.finetune import FinetuneConfig

        explicit["finetune"] = usage_check("--finetune", lambda: FinetuneConfig.from_dict({
            "spec": finetune, "backbone_lr": backbone_lr, "profile": profile, **parse_head_options(finetune_opt)}).to_dict())
        if lr is None and not config:
            explicit["optim.lr"] = 2e-4
    with one_line_errors("train"):
        files, overrides = resume_files(resume, config or [], model, features, name, overrides or [], explicit)
        files = default_recipe_files(files, model, features)
        cfg = build_train_config(files, overrides, explicit)
        if print_config:
            console.print(resolved_recipe_text(cfg), markup=False, highlight=False, soft_wrap=True)
            return
        check_stores(cfg)
        progress = ProgressSettings(every_steps=log_every, every_seconds=log_seconds)
        result = run_training(cfg, resume=resume, console=console, progress=progress)
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
    allow_missing: Annotated[
        bool, typer.Option("--allow-missing", help="Go on when tracks lack a feature the run needs (recorded with the result).")
    ] = False,
    labels: Annotated[Path | None, typer.Option("--labels", help="Ground truth of a split without labels in the dataset (test): a folder of <track>.txt label files, e.g. DATA_ROOT/ground_truth/Test_Set of the sample.")] = None,
    per_track: Annotated[bool, typer.Option("--per-track", help="Also the CCC of each track on its own (smoothed), worst first.")] = False,
) -> None:
    """Recompute a run's CCC table (raw and smoothed) from its best checkpoint into RUN/eval_SPLIT.json. Refused
    when a track of the split lacks a feature the run needs, unless --allow-missing, and while the run is still training."""
    from train.results.coverage import gap_text
    from train.results.evaluate import evaluate_run
    from train.scoring.report import ccc_table, per_track_table

    with one_line_errors("evaluate"):
        result = evaluate_run(
            run, split, str(runs_dir), device, allow_missing=allow_missing, truth=labels, data_root=data_root, cache_dir=cache_dir
        )
    console.print(ccc_table({split: result}), markup=False)
    if per_track:
        console.print(per_track_table(result, split), markup=False, highlight=False)
    if result.missing:
        console.print(f"[yellow]scored with gaps (--allow-missing):[/yellow] {escape(gap_text(result.missing))}", highlight=False, soft_wrap=True)


@app.command()
def predict(
    run: Annotated[str, typer.Argument(help="Run name (under RUNS_DIR) or folder.")],
    split: Split = "test",
    out: Annotated[Path | None, typer.Option("--out", help="CSV path (default RUN/predictions/SPLIT.csv); with --videos a folder (default RUN/predictions/videos).")] = None,
    runs_dir: RunsDir = DEFAULT_RUNS,
    data_root: Annotated[Path | None, typer.Option("--data-root", help="Default: the run's own.")] = None,
    cache_dir: Annotated[str | None, typer.Option("--cache-dir", help="Default: the run's own; with --videos where their features go (default: video-features beside RUNS_DIR).")] = None,
    videos: Annotated[Path | None, typer.Option("--videos", help="A folder of videos (or one video) without annotations: extract what the run needs, one CSV + plot per video.")] = None,
    models_dir: Annotated[Path, typer.Option("--models-dir", help="With --videos: where tiny models are built.")] = Path("artifacts/models"),
    device: Device = "auto",
    allow_missing: Annotated[
        bool, typer.Option("--allow-missing", help="Go on when tracks lack a feature the run needs (recorded with the result).")
    ] = False,
) -> None:
    """Write the challenge submission CSV for a split (checked against the sample file) and CSV.json
    beside it. Refused when a track of the split lacks a feature the run needs, unless --allow-missing,
    and while the run is still training. With --videos: per-frame predictions for bare videos (no
    annotations), each file its own unit (two clip.mp4 in sub-folders a/ and b/ are a__clip and b__clip),
    one row per frame the video presents."""
    if videos is not None:
        with one_line_errors("predict"):
            predict_bare_videos(run, videos, runs_dir, out, cache_dir, models_dir, device, allow_missing)
        return
    from train.results.coverage import gap_text, read_sidecar
    from train.results.predict import predict_run

    with one_line_errors("predict"):
        path = predict_run(
            run, split, str(runs_dir), device, out=out, allow_missing=allow_missing, data_root=data_root, cache_dir=cache_dir
        )
    sidecar = read_sidecar(path)
    if sidecar and not sidecar.get("complete", True):
        console.print(f"[yellow]submission written with gaps (--allow-missing):[/yellow] {escape(str(path))}; "
                      f"{escape(gap_text(sidecar))} (recorded in {escape(path.name)}.json)", highlight=False, soft_wrap=True)
    else:
        console.print(f"submission written and checked: {path}")


@app.command()
def align(
    features: Features,
    split: Split = "train",
    fill: Annotated[str, typer.Option("--fill", help="Nearest-fill per feature in seconds, as in train.")] = "",
    views_dir: Annotated[str | None, typer.Option("--views-dir", help="Default CACHE_DIR/_views (artifacts/views for a URL cache).")] = None,
    data_root: DataRoot = DEFAULT_DATA,
    videos: Videos = None,
    labels: Labels = None,
    cache_dir: CacheDir = DEFAULT_CACHE,
) -> None:
    """Align features onto a split's label frames once and keep them on disk (aligned views) for every later run.

    Training builds missing views on first use; this does it ahead of time (e.g. before a sweep)."""
    from train.fit.split_views import build_split_views

    with one_line_errors("align"):
        report = build_split_views(
            [f.strip() for f in features.split(",") if f.strip()], split, data_root=data_root, videos=videos,
            labels=labels, cache_dir=cache_dir, fill=fill, views_dir=views_dir, console=console,
        )
    console.print(report, markup=False, highlight=False, soft_wrap=True)


@app.command("windows")
def windows_cmd(
    ctx: typer.Context = None,  # type: ignore[assignment]
    csv_out: Annotated[Path, typer.Option("--csv", help="Where to write the windows (CSV, one row each).")] = Path("windows.csv"),
    split: Split = "train",
    level: Annotated[Literal["frame", "segment", "audio_window"], typer.Option("--level", help="frame | segment | audio_window (RAS's audio windows); default: the recipe's, else frame.")] = "frame",
    recipe: Annotated[list[Path] | None, typer.Option("--recipe", help="Training recipe(s) whose data settings to list (level, window, stride, features, window_filter), e.g. configs/ras/audio.yaml.")] = None,
    window: Annotated[int, typer.Option("--window", min=1, help="Positions per window (frame/segment).")] = 400,
    stride: Annotated[int, typer.Option("--stride", min=1, help="Positions between window starts.")] = 150,
    features: Annotated[str, typer.Option("--features", help="With --level segment: the segment store windows run over (first name).")] = "",
    data_root: DataRoot = DEFAULT_DATA,
    videos: Videos = None,
    labels: Labels = None,
    cache_dir: CacheDir = DEFAULT_CACHE,
) -> None:
    """List the windows a run would train or predict on: track, start/end frame and time, open seconds,
    coverage, reliable, used for training, targets per block and overall (docs/CLI.md)."""
    from cache.manifest import load_manifest
    from recipes.cli import explicit_train_values, typed_flags
    from train.data.window_rules import window_rule
    from train.data.window_list import list_windows, write_windows_csv

    flags = typed_flags(ctx, dict(level=level, window=window, stride=stride, features=features, data_root=data_root,
                                  videos=videos, labels=labels, cache_dir=cache_dir))
    with one_line_errors("windows"):
        window_filter: dict = {}
        if recipe:
            from train.runs.recipe import build_train_config

            data = build_train_config(recipe, [], explicit_train_values(flags)).data
            level, window, stride, window_filter = data.level, data.window, data.stride, dict(data.window_filter)
            names = list(data.features)
            data_root, videos, labels, cache_dir = Path(data.data_root), data.videos, data.labels, data.cache_dir
        else:
            names = [f.strip() for f in features.split(",") if f.strip()]
        manifest = load_manifest(Path(data_root), videos and Path(videos), labels and Path(labels), (split,))
        tracks = manifest.split(split)
        if not tracks:
            raise ValueError(f"split '{split}' has no tracks under {data_root}")
        rule = window_rule(window_filter)
        rows = list_windows(tracks, level, window, stride, Path(cache_dir), rule, names[0] if names else None)
        write_windows_csv(rows, csv_out, rule.blocks)
    kept = sum(bool(r["used_for_training"]) for r in rows)
    console.print(f"{len(rows)} {level} windows of {len(tracks)} {split} tracks ({kept} used for training): {csv_out}",
                  markup=False, highlight=False, soft_wrap=True)


@app.command()
def sweep(
    config: Annotated[Path, typer.Option("--config", help="Sweep file (YAML): base recipe, fixed settings, grid and/or random space.")],
    runs_dir: RunsDir = DEFAULT_RUNS,
    backend: Annotated[Literal["local", "ray"], typer.Option("--backend", help="local (one trial after another) | ray (one task per trial).")] = "local",
    address: Annotated[str | None, typer.Option("--address", help="Ray cluster to join (e.g. auto); default: start a local one.")] = None,
    cpus_per_trial: Annotated[float, typer.Option("--cpus-per-trial", min=0, help="Ray: CPUs per trial.")] = 1.0,
    gpus_per_trial: Annotated[float, typer.Option("--gpus-per-trial", min=0, help="Ray: GPUs per trial.")] = 0.0,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="List the trials and their state; train nothing.")] = False,
    table_format: TableFormat = "table",
) -> None:
    """Run a grid or random search of training configs over one cache; finished trials are skipped, and a
    trial whose resolved config changed is retrained (its old run moved aside to TRIAL.old-TIME). Each trial
    line and the final table give the smoothed validation P (the ranking, as `runs` and best.yaml); with
    --format tsv|json only the table goes to stdout, the trial lines to stderr."""
    from train.fit.sweep import SweepError, load_sweep, run_sweep, save_best, summarize, trial_config, trial_state

    say = console if table_format == "table" else make_console(stderr=True)  # stdout: the table alone

    try:
        spec = load_sweep(config, runs_dir=str(runs_dir))
    except SweepError as err:
        console.print(f"[red]sweep failed:[/red] {escape(str(err))}", highlight=False, soft_wrap=True)
        raise typer.Exit(1) from None
    say.print(f"sweep {spec.name}: {len(spec.trials)} trials under {spec.runs_dir}")
    if dry_run:
        for trial in spec.trials:
            say.print(f"  {trial.name}: {trial_state(trial_config(spec, trial))}", markup=False)
        return

    def report(result: dict) -> None:
        if "P_smoothed" in result:
            extra = f" val P smoothed {result['P_smoothed']:.4f} (raw, best epoch {result['P_raw']:.4f})"
        else:
            extra = f" {result.get('error', '')}"
        say.print(f"  trial {result['name']}: {result['state']}{extra}", markup=False, highlight=False, soft_wrap=True)

    with one_line_errors("sweep"):
        results = run_sweep(spec, backend=backend, address=address, cpus_per_trial=cpus_per_trial,
                            gpus_per_trial=gpus_per_trial, on_result=report)
    from train.runs.table import list_runs

    sweep_dir = Path(spec.runs_dir)
    _print_runs_table(list_runs(sweep_dir, "P"), f"sweep {spec.name}: {len(spec.trials)} trials in {sweep_dir}, best smoothed validation P first", table_format)
    best = save_best(spec, summarize(spec))
    if best:
        say.print(f"best config: {best}")
    failed = [r for r in results if r["state"] == "failed"]
    if failed:
        say.print(f"[red]{len(failed)} trial(s) failed[/red]")
        raise typer.Exit(1)


def predict_bare_videos(
    run: str, videos: Path, runs_dir: Path, out: Path | None, cache_dir: str | None, models_dir: Path, device: str,
    allow_missing: bool = False,
) -> None:
    """`predict RUN --videos DIR`: extract the run's features for each video with the settings of the run's
    own stores (same fingerprints), then predict every frame (train/results/predict_videos.py)."""
    from extract.progress import print_summary
    from train.results.predict_videos import bare_video_plan, extract_bare_videos, predict_bare_videos as predict_bare

    plan = bare_video_plan(run, runs_dir, cache_dir)
    console.print(f"features of {plan.run.path.name} for {videos}: extracting {', '.join(plan.made) or 'none'} into {plan.target}", highlight=False)
    if plan.exports:
        console.print("exported by runs, made for the videos after extraction: "
                      + ", ".join(f"{n} ({Path(r).name})" for n, r in plan.exports.items()), highlight=False)
    manifest, summaries = extract_bare_videos(plan, videos, models_dir, device)
    for summary in summaries:
        print_summary(console, summary)
    if plan.other:
        console.print(f"not made by an extractor, read from {plan.target}: {', '.join(plan.other)}", highlight=False)
    out_dir, result = predict_bare(plan, manifest, runs_dir, out, device, allow_missing)
    for line in result.summaries:
        console.print(f"  {line}", markup=False, highlight=False, soft_wrap=True)
    for line in result.notes:
        console.print(f"  note: {line}", markup=False, highlight=False, soft_wrap=True)
    for line in result.skipped:
        console.print(f"  [red]not predicted:[/red] {escape(line)}", highlight=False, soft_wrap=True)
    console.print(f"{len(result.written)} video(s) predicted: one CSV (frame,time,valence,arousal,valid) and one plot each in {out_dir}",
                  highlight=False)
    if result.skipped or not all(s.ok for s in summaries):
        raise typer.Exit(1)


@app.command("runs")
def runs_cmd(
    runs_dir: RunsDir = DEFAULT_RUNS,
    sort: Annotated[str, typer.Option("--sort", help="date | name | head | epochs | P | ccc_v | ccc_a (numbers: best first).")] = "date",
    diff: Annotated[tuple[str, str] | None, typer.Option("--diff", help="Two runs (names or folders): the resolved config keys that differ (dotted, defaults filled) and their metrics side by side.")] = None,
    table_format: TableFormat = "table",
) -> None:
    """A table of every run in RUNS_DIR (head, features, epochs, validation P smoothed (the ranking; "-" until
    the run finished) and the best epoch's raw P, smoothed CCC, smoothing, date); --format tsv|json for scripts."""
    import json

    from train.runs.table import config_diff, list_runs, metrics_side_by_side

    with one_line_errors("runs"):
        if diff:
            changed = config_diff(Path(diff[0]), Path(diff[1]), runs_dir)
            metrics = metrics_side_by_side(Path(diff[0]), Path(diff[1]), runs_dir)
            if table_format != "table":
                _print_records([{"key": k, diff[0]: a, diff[1]: b} for k, a, b in [*changed, *metrics]], table_format)
                return
            table = Table(title=f"resolved config keys that differ, then metrics: {diff[0]} vs {diff[1]}")
            for col in ("key", diff[0], diff[1]):
                table.add_column(col)
            for key, a, b in changed:
                table.add_row(key, json.dumps(a), json.dumps(b))
            if not changed:
                table.add_row("(config)", "same config (name, runs dir, device aside)", "")
            for key, a, b in metrics:
                table.add_row(key, a, b)
            console.print(table)
            return
        rows = list_runs(runs_dir, sort)
    if not rows and table_format == "table":
        console.print(f"no runs in {runs_dir}")
        return
    _print_runs_table(rows, f"{len(rows)} run(s) in {runs_dir}, by {sort}", table_format)


def _print_runs_table(rows: list, title: str, table_format: str = "table") -> None:
    """Runs as a rich table (title, smoothed and raw P apart), or tab-separated / JSON records for scripts."""
    records = [r.record() for r in rows]
    if table_format != "table":
        _print_records(records, table_format)
        return
    headers = {"val_P_smoothed": "val P smoothed", "val_P_raw": "val P raw (best epoch)", "ccc_v_smoothed": "CCC_V",
               "ccc_a_smoothed": "CCC_A"}
    table = Table(title=title)
    keys = list(records[0]) if records else []
    longest = max((len(r["name"]) for r in records), default=4)
    for key in keys:  # a narrow terminal folds a name (whole, at least 40 wide), never cuts it to "lr0.0…"
        table.add_column(headers.get(key, key), justify="right" if key in headers or key == "epochs" else "left",
                         overflow="fold", min_width=min(longest, 40) if key == "name" else None)
    for rec in records:
        table.add_row(*("-" if rec[k] is None else f"{rec[k]:.4f}" if isinstance(rec[k], float) else escape(str(rec[k]))
                        for k in keys))
    console.print(table)


def _print_records(records: list[dict], table_format: str) -> None:
    """tsv: a header line, then one tab-separated line per record (empty for none); json: one list."""
    import json

    if table_format == "json":
        print(json.dumps(records, indent=1))
        return
    keys = list(records[0]) if records else []
    if keys:
        print("\t".join(keys))
    for rec in records:
        print("\t".join("" if rec[k] is None else str(rec[k]) for k in keys))


@app.command("export")
def export_cmd(
    run: Annotated[str, typer.Argument(help="Run name (under RUNS_DIR) or folder.")],
    name: Annotated[str, typer.Option("--name", help="Feature name of the export: the store is CACHE_DIR/NAME.zarr.", callback=checked(check_name))],
    splits: Annotated[
        str, typer.Option("--splits", help="Comma-separated splits to export.", callback=checked(checks.split_list))
    ] = "train,val,test",
    runs_dir: RunsDir = DEFAULT_RUNS,
    cache_dir: Annotated[str | None, typer.Option("--cache-dir", help="Where the run's inputs are read and the export is written (default: the run's own).")] = None,
    data_root: Annotated[Path | None, typer.Option("--data-root", help="Default: the run's own.")] = None,
    checkpoint: Annotated[Literal["best", "last"], typer.Option("--checkpoint", help="best | last")] = "best",
    force: Annotated[bool, typer.Option("--force", help="Rewrite groups that are already complete.")] = False,
    new_store: Annotated[bool, typer.Option("--new-store", help="If NAME exists with another fingerprint, move it aside.")] = False,
    folds: Annotated[int, typer.Option("--folds", min=1, help="Export the train split out of fold: K runs, each trained without one K-th of the train videos (1 = in-sample).")] = 1,
    windows: Annotated[bool, typer.Option("--windows", help="One row per audio window (--level audio_window runs): a window-kind store, read by raav --head audio_tokens=windows.")] = False,
    device: Device = "auto",
) -> None:
    """Export a run's per-frame representation + VA prediction as a feature store (stacking for fusion).
    Refused while the run is still training."""
    from train.results.export import export_run

    with one_line_errors("export", hint=" (--new-store moves it aside)"):
        if windows:
            from train.results.window_export import export_windows

            written = export_windows(
                run, name, [s.strip() for s in splits.split(",") if s.strip()], runs_dir=runs_dir, cache_dir=cache_dir,
                data_root=data_root, device=device, force=force, on_mismatch="new" if new_store else "refuse",
                checkpoint=checkpoint,
            )
            console.print(f"{name}: window rows written for {written} tracks per split", markup=False, highlight=False)
            return
        report = export_run(
            run, name, [s.strip() for s in splits.split(",") if s.strip()], runs_dir=runs_dir, cache_dir=cache_dir,
            data_root=data_root, device=device, force=force, on_mismatch="new" if new_store else "refuse",
            checkpoint=checkpoint, folds=folds,
        )
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
    from train.results.ensemble import build_ensemble
    from train.scoring.report import ccc_table

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
    cache_dir: Annotated[str | None, typer.Option("--cache-dir", help="Where the recipe's feature stores live (default OUT/RECIPE/features: a method's extractor settings are its own).")] = None,
    runs_dir: Annotated[Path | None, typer.Option("--runs-dir", help="Where the steps' runs live (default OUT/RECIPE/runs).")] = None,
    out: Annotated[Path, typer.Option("--out", help="Where the report goes: OUT/RECIPE/report.md.")] = Path("artifacts/reproduce"),
    profile: Profile = "tiny",
    device: Device = "auto",
    model: Annotated[
        list[str] | None,
        typer.Option("--model", help="Weights per feature for the extraction: FEATURE=REF (repeatable), e.g. grada=/path/grada_b1.safetensors.",
                     callback=checked(checks.model_refs)),
    ] = None,
) -> None:
    """A method end to end: features, each branch and its export, fusion heads, late fusion, evaluation, the
    test submission; skips what is done; one report with a CCC row per step beside the paper's. `--model`
    gives an extractor its weights (a missing weights file stops it before extracting, in one line). Exit
    status 1 when a video failed extraction (the report is still written)."""
    from cache.sample_data import GROUND_TRUTH_INDEX
    from recipes.reproduce import ReproduceOptions
    from recipes.reproduce import reproduce as run_reproduce

    if data_root == DEFAULT_DATA and not (data_root / GROUND_TRUTH_INDEX).is_file():
        sample_data(out=data_root)
    opts = ReproduceOptions(data_root=data_root, cache_dir=cache_dir, out=out, runs_dir=runs_dir, profile=profile, device=device,
                            models=checks.model_refs(model))
    failures: list[str] = []
    with one_line_errors("reproduce"):
        report = run_reproduce(recipe, opts, console, failures)
    console.print(report.read_text(encoding="utf-8"), markup=False, highlight=False, soft_wrap=True)
    console.print(f"report: {report}")
    if failures:  # the report is written, but the method did not run on every video
        console.print(f"[red]reproduce: {len(failures)} video(s) failed[/red]: {escape(failures[0])}", highlight=False, soft_wrap=True)
        raise typer.Exit(1)


# ---------------------------------------------------------------- the recipes in configs/

configs_app = typer.Typer(no_args_is_help=True, help="The recipes in configs/: list, print resolved, copy for editing.")
app.add_typer(configs_app, name="configs")


@configs_app.command("ls")
def configs_ls(table_format: TableFormat = "table") -> None:
    """List the recipes in configs/ (name, kind: train | extract | reproduce | profile, first comment line)."""
    from recipes.catalog import list_recipes

    with one_line_errors("configs ls"):
        records = [{"name": r.name, "kind": r.kind, "about": r.about} for r in list_recipes()]
    if table_format != "table":
        _print_records(records, table_format)
        return
    table = Table(title="recipes in configs/ (train --config NAME, extract --config NAME, reproduce NAME)")
    for col in ("name", "kind", "about"):
        table.add_column(col)
    for rec in records:
        table.add_row(*(escape(rec[k]) for k in ("name", "kind", "about")))
    console.print(table)


@configs_app.command("show")
def configs_show(name: Annotated[str, typer.Argument(help="A recipe name (ras/face) or file.")]) -> None:
    """Print a recipe resolved: every default filled in (train and extract recipes), as YAML."""
    from recipes.catalog import find_recipe, resolved_text

    with one_line_errors("configs show"):
        recipe = find_recipe(name)
        text = resolved_text(recipe)
    console.print(f"# {recipe.name} ({recipe.kind}, {recipe.path}), resolved", markup=False, highlight=False)
    console.print(text.rstrip("\n"), markup=False, highlight=False, soft_wrap=True)


@configs_app.command("cp")
def configs_cp(
    name: Annotated[str, typer.Argument(help="A recipe name (ras/face).")],
    dest: Annotated[Path, typer.Argument(help="A file, or a folder to copy into.")],
    force: Annotated[bool, typer.Option("--force", help="Replace an existing file.")] = False,
) -> None:
    """Copy a recipe file (comments kept) to DEST for editing; then `train --config DEST`."""
    from recipes.catalog import copy_recipe, find_recipe

    with one_line_errors("configs cp"):
        recipe = find_recipe(name)
        target = copy_recipe(recipe, dest, force)
    use = {"train": "train --config", "extract": "extract --config", "reproduce": "reproduce"}.get(recipe.kind, "--config")
    console.print(f"copied {recipe.path} to {target}; edit it, then: python pipeline.py {use} {target}", markup=False,
                  highlight=False, soft_wrap=True)


# ---------------------------------------------------------------- the whole job on the sample


DEMO_FEATURES = "faces,mouth,landmarks,clip,ast,wavlm,audio_reliability,qwen3vl"


@app.command()
def demo(
    data_root: DataRoot = DEFAULT_DATA,
    cache_dir: CacheDir = DEFAULT_CACHE,
    runs_dir: RunsDir = DEFAULT_RUNS,
    profile: Profile = "tiny",
    device: Device = "auto",
    epochs: Annotated[int, typer.Option("--epochs", min=1)] = 20,
) -> None:
    """The main job on the built-in sample: data, every feature, a unimodal and a fusion head, the submission."""
    from cache.sample_data import GROUND_TRUTH_INDEX

    if not (data_root / GROUND_TRUTH_INDEX).is_file():
        console.rule("1/5 sample dataset")
        sample_data(out=data_root)
    else:
        console.print(f"sample dataset already at {data_root}")
    for split in ("train", "val", "test"):
        console.rule(f"2/5 extract {split} ({profile} models)")
        extract(split=split, features=DEMO_FEATURES, data_root=data_root, cache_dir=cache_dir, profile=profile,
                device=device)

    # A short schedule at a higher learning rate than the paper's 1e-4: the sample is tiny.
    common = dict(epochs=epochs, lr=1e-3, window=200, stride=100, data_root=data_root, cache_dir=cache_dir,
                  runs_dir=runs_dir, device=device)
    runs = [
        ("demo-gru-landmarks", "gru", "landmarks"),
        ("demo-dcmmoe", "dcmmoe", "face_gru,clip,wavlm,qwen3vl"),
    ]
    small = {"gru": ["hidden=64", "gru_hidden=64"], "dcmmoe": ["hidden=64"]}  # hidden size 64, the BiGRU's too
    for i, (name, model, features) in enumerate(runs):
        console.rule(f"{3 + i}/5 train {model} on {features}")
        resume = (runs_dir / name / "checkpoints" / "last.pt").is_file()
        train(model=model, features=features, name=name, resume=resume, head=small[model], **common)
        if i == 0:  # stacking: the unimodal run's per-frame [hidden, VA] becomes a feature of the fusion run
            export_cmd(run=name, name="face_gru", runs_dir=runs_dir, cache_dir=cache_dir, data_root=data_root,
                       new_store=True, device=device)

    console.rule("5/5 evaluate and write the test submission")
    from train.results.evaluate import evaluate_run

    table = Table(title="validation CCC (all valid frames concatenated; smoothed as chosen on validation)")
    for col in ("run", "features", "CCC_V", "CCC_A", "P smoothed", "P raw"):
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
    console.print(f"best run: {best[0]} (validation P smoothed {best[1]:.3f}); "
                  f"submission {runs_dir / best[0] / 'predictions' / 'test.csv'}")

if __name__ == "__main__":
    app()
