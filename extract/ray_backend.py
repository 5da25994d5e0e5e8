"""The Ray backend of stage 1: one Ray task per video, every worker writing its own groups into the
same stores (`pipeline.py extract --backend ray [--address auto] [--cpus-per-task C] [--gpus-per-task G]`).

The driver does what must happen once and in one place, then fans out:
  1. builds a `Runner` on the driver (no model is loaded there): it resolves the extractors, creates or
     validates every store (fingerprints; `--new-store` moves a mismatching store aside here, never in a
     worker), and plans the videos exactly as the local backend does (probe, skip complete, `--force`);
  2. when an extractor with store extras (CLIP's region prototypes) has work to do, runs one task that
     loads it and writes the extras, so that no two workers ever rewrite the same array;
  3. submits one task per planned video with per-task resources (`task_resources`), and collects each
     video's result as it finishes (done / failed with a one-line reason), advancing the progress bar by
     the video's frames. A worker that dies (SIGKILL, OOM) is retried once by Ray (the video's incomplete
     groups are invisible and simply redone); a second death is a failed line.
The summary and exit status are the local backend's. Each worker keeps one `Runner` per run options
(models loaded once per worker process, like the local runner). Workers write groups through
`FeatureStore` (complete-last), so what readers see is always consistent, whatever the interleaving.

Locations travel to the workers as absolute path strings: every worker must see the same files (one
machine, or a shared file system with the project importable at the same path on every node); a cache at
an fsspec URL (s3://, gs://) is passed as is and opened by each worker through zarr's fsspec store.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from cache.location import as_location, is_url
from cache.manifest import Manifest
from cache.media import probe_video
from extract.base import Extractor, VideoContext
from extract.frames import labelled_frames, partial_line, recorded_partial_line
from extract.runner import (
    ExtractionError,
    RunOptions,
    Runner,
    RunSummary,
    _reason,
    model_context,
    note_partial,
    plan_videos,
    split_manifest,
    split_videos,
)

log = logging.getLogger(__name__)

# environment a worker needs (offline hubs, tiny YOLO config dir); forwarded when joining a running cluster
FORWARD_ENV = ("YOLO_OFFLINE", "YOLO_CONFIG_DIR", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_HOME", "TORCH_HOME")
GPU_SHARE = {"full": 0.5, "tiny": 0.25}  # default GPU fraction per video task, by profile


def task_resources(options: RunOptions, cluster_gpus: float) -> dict[str, float]:
    """Ray resources of one video task: `cpus_per_task` CPUs and, unless given, a GPU share from the
    profile and device (full: half a GPU, so two videos overlap decoding and the models on one GPU;
    tiny: a quarter; device cpu: none; device auto: a share only when the cluster has GPUs)."""
    if options.cpus_per_task <= 0:
        raise ExtractionError(f"--cpus-per-task must be > 0, got {options.cpus_per_task}")
    gpus = options.gpus_per_task
    if gpus is None:
        wants_gpu = options.device.startswith("cuda") or (options.device == "auto" and cluster_gpus > 0)
        gpus = GPU_SHARE.get(options.profile, 1.0) if wants_gpu else 0.0
    if gpus < 0:
        raise ExtractionError(f"--gpus-per-task must be >= 0, got {gpus}")
    if gpus > 0 and cluster_gpus < gpus:
        raise ExtractionError(
            f"each video task asks for {gpus:g} GPU(s) but the Ray cluster has {cluster_gpus:g}"
            " (use --device cpu or --gpus-per-task 0)"
        )
    if options.device.startswith("cuda") and gpus == 0:
        raise ExtractionError("--device cuda with --gpus-per-task 0: the workers would see no GPU")
    return {"num_cpus": float(options.cpus_per_task), "num_gpus": float(gpus)}


def _portable(options: RunOptions) -> dict[str, Any]:
    """Run options as plain data: absolute path strings, the local backend inside the workers, and
    `refuse` on mismatch (the driver already moved a mismatching store aside)."""
    out = asdict(options)
    for key in ("data_root", "videos_dir", "labels_dir", "cache_dir", "models_dir"):
        if out[key] is not None and not is_url(out[key]):
            out[key] = str(Path(out[key]).resolve())
    out.update(backend="local", on_mismatch="refuse", progress=False, address=None, shard=None, only_videos=None)
    return out


def _options_from(data: dict[str, Any]) -> RunOptions:
    opts = RunOptions(**data)
    for key in ("data_root", "videos_dir", "labels_dir", "cache_dir", "models_dir"):
        value = getattr(opts, key)
        if value is not None:
            setattr(opts, key, as_location(value))
    return opts


# ---- worker side -------------------------------------------------------------------------------------
_RUNNERS: dict[str, Runner] = {}  # one per run options, per worker process (models stay loaded)


def _worker_runner(data: dict[str, Any], audio_decoder: Any) -> Runner:
    import json

    key = json.dumps(data, sort_keys=True, default=str)
    if key not in _RUNNERS:
        for old in _RUNNERS.values():  # one run at a time per worker: free the previous run's models
            old.close()
        _RUNNERS.clear()
        _RUNNERS[key] = Runner(_options_from(data), audio_decoder, write_extras=False)
    return _RUNNERS[key]


def _set_threads() -> None:
    """Torch threads = the CPUs Ray gave this task (Ray sets OMP_NUM_THREADS from num_cpus)."""
    import torch

    torch.set_num_threads(max(1, int(os.environ.get("OMP_NUM_THREADS", "1") or 1)))


def extract_video(data: dict[str, Any], stem: str, path: str, tracks: list[str], index: int, todo: list[str],
                  audio_decoder: Any = None) -> dict[str, Any]:
    """One video in a worker. Returns {stem, status: done|failed, line, frames, hook_seconds, decode_wait,
    load_seconds, write_seconds}."""
    _set_threads()
    runner = _worker_runner(data, audio_decoder)
    before = dict(runner.timer.seconds)
    frames = 0

    def on_frames(k: int) -> None:
        nonlocal frames
        frames += k

    video_path = Path(path)
    counts = None
    try:
        ctx = VideoContext(stem, video_path, probe_video(video_path), list(tracks), index)
        report = runner.process_video(ctx, list(todo), on_frames)
        status, line = "done", f"{stem}: {', '.join(todo)}"
        if report is not None:
            counts = {"decoded": report.decoded, "declared": report.declared}
    except Exception as err:  # one line, as the local backend
        status, line = "failed", f"{video_path}: {_reason(err)}"
        log.error("%s", line)
        log.debug("traceback", exc_info=True)
    spent = {k: v - before.get(k, 0.0) for k, v in runner.timer.seconds.items()}
    return {
        "stem": stem, "status": status, "line": line, "frames": frames, "counts": counts,
        "decode_wait": spent.pop("_decode_wait", 0.0), "load_seconds": spent.pop("_load", 0.0),
        "write_seconds": spent.pop("_write", 0.0), "hook_seconds": spent,
    }


def write_extras(data: dict[str, Any], names: list[str]) -> list[str]:
    """Load the named extractors once and write their store extras (runs as a single task)."""
    _set_threads()
    runner = _worker_runner(data, None)
    for name in names:
        ext = runner._ensure_loaded(name)  # loads the model (the worker's runner never writes extras itself)
        with model_context(runner.device, ext.autocast):
            ext.write_extras(runner.stores[name])
    return names


def _has_extras(ext: Extractor) -> bool:
    return type(ext).write_extras is not Extractor.write_extras


# ---- driver side ---------------------------------------------------------------------------------------
def _init_ray(address: str | None) -> bool:
    """Connect to (address) or start a local Ray cluster unless one is initialised; True if we did."""
    import ray

    if ray.is_initialized():
        return False
    kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": True}
    if address:
        env = {k: os.environ[k] for k in FORWARD_ENV if k in os.environ}
        kwargs["runtime_env"] = {"env_vars": env} if env else None
        ray.init(address=address, **kwargs)
    else:
        ray.init(**kwargs)
    return True


def run_extraction_ray(
    options: RunOptions, manifest: Manifest | None = None, audio_decoder: Any = None
) -> RunSummary:
    """The Ray backend of `extract.backends.run_extraction` (same arguments, same summary)."""
    try:
        import ray
    except ImportError as err:  # pragma: no cover
        raise ExtractionError(f"--backend ray needs the ray package: {err}") from None
    from extract.progress import split_progress

    t_start = time.perf_counter()
    if options.device not in ("auto", "cpu", "cuda") and not options.device.startswith("cuda:"):
        raise ExtractionError(f"device must be auto, cpu or cuda, got {options.device!r}")
    if manifest is None:
        manifest = split_manifest(options)
    videos = split_videos(options, manifest)
    labelled = labelled_frames(manifest, options.split)
    summary = RunSummary()
    # the driver never loads a model: build its runner for the CPU so a GPU-less head node works
    driver_opts = replace(options, device="cpu")
    runner = Runner(driver_opts, audio_decoder)  # stores created / validated (and moved aside) here
    plan = plan_videos(runner, videos, summary, labelled)
    if not plan:
        runner.repair_extras()  # nothing for the workers: a damaged extra is written here (extract/runner.py)
        summary.seconds = time.perf_counter() - t_start
        return summary
    started = _init_ray(options.address)
    try:
        resources = task_resources(options, float(ray.cluster_resources().get("GPU", 0)))
        data = _portable(options)
        remote_video = ray.remote(max_retries=1)(extract_video).options(**resources)
        needs_extras = sorted({n for _, todo in plan for n in todo
                               if n in runner.extractors and _has_extras(runner.extractors[n])}
                              | set(runner.damaged_extras()))
        if needs_extras:
            ray.get(ray.remote(max_retries=1)(write_extras).options(**resources).remote(data, needs_extras))
        pending: dict[Any, VideoContext] = {}
        for ctx, todo in plan:
            ref = remote_video.remote(data, ctx.stem, str(ctx.path), ctx.tracks, ctx.index, todo, audio_decoder)
            pending[ref] = ctx
        log.info("submitted %d video task(s) to Ray (%s per task)", len(pending), resources)
        results: dict[str, dict[str, Any]] = {}
        total = sum(max(c.info.n_frames, 0) for c, _ in plan)
        with split_progress(options.split, total, enabled=options.progress, n_videos=len(plan)) as advance:
            while pending:
                ready, _ = ray.wait(list(pending), num_returns=1)
                ctx = pending.pop(ready[0])
                try:
                    result = ray.get(ready[0])
                except Exception as err:  # the worker died (twice) or Ray failed the task
                    reason = str(err).strip().splitlines()[0][:200] if str(err).strip() else ""
                    result = {"stem": ctx.stem, "status": "failed", "frames": 0, "hook_seconds": {}, "decode_wait": 0.0,
                              "line": f"{ctx.path}: {type(err).__name__}: {reason}"}
                    log.error("%s", result["line"])
                results[ctx.stem] = result
                advance(max(ctx.info.n_frames, result["frames"]))
                detail = [result["line"].partition(": ")[2]] if result["status"] == "done" else [result["line"]]
                busy = sum(result["hook_seconds"].values()) + result["decode_wait"]  # the worker's time on this video
                advance.video(ctx.stem, result["status"], result["frames"], busy, detail, ctx.info.fps)
        for ctx, _ in plan:  # summary in the split's order, as the local backend
            result = results[ctx.stem]
            (summary.done if result["status"] == "done" else summary.failed).append(result["line"])
            if result["status"] == "done" and result.get("counts"):
                counts = result["counts"]
                note_partial(summary, partial_line(ctx, counts["decoded"], counts["declared"], labelled.get(ctx.stem)))
            elif result["status"] == "done":
                note_partial(summary, recorded_partial_line(options.cache_dir, ctx, labelled.get(ctx.stem)))
            summary.frames += result["frames"]
            summary.decode_wait += result["decode_wait"]
            summary.load_seconds += result.get("load_seconds", 0.0)
            summary.write_seconds += result.get("write_seconds", 0.0)
            for key, value in result["hook_seconds"].items():
                summary.hook_seconds[key] = summary.hook_seconds.get(key, 0.0) + value
    finally:
        runner.close()
        if started:
            ray.shutdown()
    summary.seconds = time.perf_counter() - t_start
    return summary

