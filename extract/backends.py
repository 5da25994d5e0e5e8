"""Extraction of a split by the backend its options name: `local` (extract/runner.py) or `ray`
(extract/ray_backend.py, built on the runner). Both give the same summary and the same stores."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from cache.checks import warn_tiny_profile
from cache.manifest import Manifest
from extract.runner import ExtractionError, RunOptions, RunSummary, run_local


def run_extraction(
    options: RunOptions,
    manifest: Manifest | None = None,
    audio_decoder: Callable[[Path, int], Any] | None = None,
) -> RunSummary:
    """Extract the requested features for every video of a split; returns the summary (see RunSummary).

    `options.backend == "ray"` hands the run to `extract.ray_backend` (same summary, same stores)."""
    warn_tiny_profile(options.profile, options.data_root)
    if options.backend == "ray":
        from extract.ray_backend import run_extraction_ray

        return run_extraction_ray(options, manifest, audio_decoder)
    if options.backend != "local":
        raise ExtractionError(f"--backend must be local or ray, got {options.backend!r}")
    return run_local(options, manifest, audio_decoder)
