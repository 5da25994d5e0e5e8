"""affcache command line: from raw videos to a cached feature store to trained VA heads.

Thin by design: each command parses options and calls the packages.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.logging import RichHandler
from rich.table import Table

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__)
console = Console()

DataRoot = Annotated[Path, typer.Option("--data-root", help="Dataset root: videos/ and annotations/ below it.")]
Videos = Annotated[Path | None, typer.Option("--videos", help="Video root (default DATA_ROOT/videos).")]
Labels = Annotated[Path | None, typer.Option("--labels", help="Annotation root (default DATA_ROOT/annotations).")]
CacheDir = Annotated[Path, typer.Option("--cache-dir", help="Where feature stores live.")]
RunsDir = Annotated[Path, typer.Option("--runs-dir", help="Where training runs live.")]
Split = Annotated[str, typer.Option("--split", help="train | val | test")]
Features = Annotated[str, typer.Option("--features", help="Comma-separated feature names.")]
Profile = Annotated[str, typer.Option("--profile", help="full (real weights) | tiny (small local models)")]
Device = Annotated[str, typer.Option("--device", help="auto | cpu | cuda")]

DEFAULT_DATA = Path("artifacts/sample")
DEFAULT_CACHE = Path("artifacts/features")
DEFAULT_RUNS = Path("artifacts/runs")


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
) -> None:
    """Write the built-in sample dataset (Aff-Wild2 layout, synthetic faces and voices)."""
    from cache.sample_data import SampleConfig, write_sample_dataset

    summary = write_sample_dataset(out, SampleConfig(seed=seed))
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
    features = sorted({f for r in rows for f in r.complete})
    table = Table(title=f"{data_root}")
    for col in ("split", "tracks", "labelled frames", "valid frames", *features):
        table.add_column(col, justify="right")
    for r in rows:
        table.add_row(
            r.split, str(r.tracks), str(r.labelled_frames), str(r.valid_frames),
            *(f"{r.complete[f]}/{r.tracks}" for f in features),
        )
    console.print(table)
    if manifest.errors:
        console.print(f"[red]{len(manifest.errors)} problem(s):[/red]")
        for err in manifest.errors:
            console.print(f"  {err}", markup=False)


if __name__ == "__main__":
    app()
