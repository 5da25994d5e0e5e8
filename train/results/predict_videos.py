"""Predictions for a bare folder of videos (no annotations), for every run kind: a trained head, a fusion
head over exported features (the exporting run is applied to the videos first), an ensemble (its members
combined with the weights chosen on validation) and a fine-tuned run.

One CSV per video (frame, time, valence, arousal, valid; frame counts from 0, time is the frame's start in
seconds: k / fps, or the recorded presentation time of a variable-rate video, as label frames; valid is 1
where the model had any input, 0 where the value is interpolated), one plot with the spans where a
modality had no input shaded, and one summary line per video ("vtest: 0/795 frames with a face")."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from cache.frametimes import FrameClock
from cache.location import Location, as_location
from cache.manifest import Manifest, Track
from cache.media import probe_video
from cache.store import FeatureStore, store_exists, store_path
from extract.bare import bare_manifest, extract_videos, extractable
from extract.runner import RunSummary
from train.config import TrainConfig
from train.data.dataset import TrackDataset
from train.fit.loop import tracks_dataset
from train.results.export import track_embeddings
from train.results.restore import LoadedRun, chosen_half_windows, load_run
from train.runs.folder import ENSEMBLE_FILE, RunDir, is_ensemble
from train.scoring.evaluate import fill_missing, input_features, postprocess, predict_split
from train.runs.lock import refuse_running
from train.scoring.report import plot_track

if TYPE_CHECKING:  # annotations only
    import torch

log = logging.getLogger(__name__)

VIDEO_CSV_HEADER = "frame,time,valence,arousal,valid"
MODALITIES = {"visual": "face", "audio": "audio"}  # a head's input lists -> the modality's name
SAID = {"face": "a face"}  # as the summary line says it


@dataclass
class VideoPredictions:
    written: list[Path] = field(default_factory=list)  # CSVs
    plots: list[Path] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # "video: reason"
    notes: list[str] = field(default_factory=list)  # predicted, but some feature missing (masked)
    summaries: list[str] = field(default_factory=list)  # "video: 60/60 frames with a face, 0/60 with audio"


@dataclass
class TrackOutput:
    """One video's raw per-frame prediction, where any input was present, and per modality where it was."""

    va: np.ndarray  # (T, 2) raw (window-averaged, featureless frames not yet filled)
    present: np.ndarray  # (T,) bool
    modalities: dict[str, np.ndarray]  # "face" / "audio" / "input" -> (T,) bool


def write_video_csv(path: Path, va: np.ndarray, starts: np.ndarray, valid: np.ndarray | None = None) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    valid = np.ones(len(va), dtype=bool) if valid is None else np.asarray(valid, dtype=bool)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8", newline="") as handle:
        handle.write(VIDEO_CSV_HEADER + "\n")
        for k, (v, a) in enumerate(va):
            handle.write(f"{k},{starts[k]:.6f},{v:.6f},{a:.6f},{int(valid[k])}\n")
    tmp.replace(path)
    return path


def summary_line(name: str, out: TrackOutput) -> str:
    """`vtest: 0/795 frames with a face, 795/795 with audio`."""
    n = len(out.present)
    parts = [f"{int(mask.sum())}/{n}" + (" frames" if i == 0 else "") + f" with {SAID.get(label, label)}"
             for i, (label, mask) in enumerate(out.modalities.items())]
    return f"{name}: " + ", ".join(parts or [f"{int(out.present.sum())}/{n} frames with input"])


def modality_of(model: torch.nn.Module, names: list[str]) -> dict[str, list[str]]:
    """Input features per modality: a head's `visual` and `audio` lists; all inputs as "input" else."""
    groups = {MODALITIES[attr]: [n for n in names if n in (getattr(model, attr, None) or [])] for attr in MODALITIES}
    groups = {k: v for k, v in groups.items() if v}
    return groups or {"input": input_features(model, names)}


def any_of(masks: dict[str, np.ndarray], names: list[str], n: int) -> np.ndarray:
    """(n,) frames where any of `names` is present."""
    out = np.zeros(n, dtype=bool)
    for name in names:
        out |= masks.get(name, np.zeros(n, dtype=bool))
    return out


def bare_dataset(loaded: LoadedRun, tracks: list[Track]) -> TrackDataset:
    """A dataset over unlabelled tracks with the run's window settings and standardisation."""
    return tracks_dataset(loaded.cfg, tracks, loaded.sources, standardizer=loaded.standardizer)


def trained_outputs(loaded: LoadedRun, tracks: list[Track]) -> dict[str, TrackOutput]:
    dataset = bare_dataset(loaded, tracks)
    try:
        raw = predict_split(loaded.model, dataset, loaded.device, loaded.cfg.batch_size)
        groups = modality_of(loaded.model, list(loaded.sources))
        out = {}
        for ti, track in enumerate(dataset.tracks):
            n = len(raw.has_feature[ti])
            mods = {label: any_of(raw.inputs[ti], names, n) for label, names in groups.items()}
            out[track.name] = TrackOutput(raw.va[ti], np.asarray(raw.has_feature[ti], dtype=bool), mods)
        return out
    finally:
        dataset.close()


def combine_outputs(members: list[dict[str, TrackOutput]], weights_v: list[float], weights_a: list[float]) -> dict[str, TrackOutput]:
    """An ensemble's outputs: members' filled predictions weighted (V and A apart); a frame or modality has
    input where any member's has. Only videos every member predicted."""
    names = [n for n in members[0] if all(n in m for m in members[1:])]
    out = {}
    for name in names:
        outs = [m[name] for m in members]
        stack = np.stack([fill_missing(o.va, o.present) for o in outs], 0).astype(np.float64)
        va = np.stack([np.tensordot(weights_v, stack[..., 0], 1), np.tensordot(weights_a, stack[..., 1], 1)], -1)
        mods: dict[str, np.ndarray] = {}
        for o in outs:
            for label, mask in o.modalities.items():
                mods[label] = mods[label] | mask if label in mods else mask.copy()
        out[name] = TrackOutput(va.astype(np.float32), np.logical_or.reduce([o.present for o in outs]), mods)
    return out


# ---------------------------------------------------------------- features of the videos, for any run kind


@dataclass
class BareVideoPlan:
    """What `predict RUN --videos` extracts for a run, and where (the run's own store settings, same fingerprints)."""

    run: RunDir
    cfg: TrainConfig
    target: Location  # where the videos' features go
    made: list[str]  # features an extractor makes (every run the prediction needs)
    other: list[str]  # features read from `target` as they are (neither extracted nor exported by a run)
    runs_dir: Path = Path("artifacts/runs")
    exports: dict[str, str] = field(default_factory=dict)  # feature exported by a run -> that run's folder
    references: dict[str, list[str]] = field(default_factory=dict)  # reference cache -> features made like its stores


def _trained_runs(rd: RunDir) -> list[RunDir]:
    """The trained runs a run predicts with: itself, or an ensemble's members (nested ensembles unfolded)."""
    if not is_ensemble(rd):
        return [rd]
    from train.results.ensemble import EnsembleSpec

    spec = EnsembleSpec.load(rd.path / ENSEMBLE_FILE)
    return [leaf for member in spec.member_dirs(rd.path.parent) for leaf in _trained_runs(member)]


def _exporting_run(cache: Location, name: str, runs_dir: Path, near: RunDir) -> RunDir | None:
    """The run whose export the store `name` of `cache` is (its metadata names it), or None."""
    path = store_path(cache, name)
    if not store_exists(path):
        return None
    meta = FeatureStore.open(path).meta
    source = (meta.config or {}).get("run") if meta.model_ref.startswith("run:") else None
    if not source:
        return None
    for base in (Path(runs_dir), near.path.parent):
        if (base / source).is_dir():
            return RunDir.resolve(base / source, base)
    raise FileNotFoundError(f"feature {name} is exported by run {source}, which is neither under {runs_dir} nor "
                            f"beside {near.path}: pass --runs-dir")


def bare_video_plan(run: str | Path, runs_dir: Path, cache_dir: str | None) -> BareVideoPlan:
    """Features go to `cache_dir`, default `video-features` beside the runs folder. Exported features are
    planned through the run that exported them (its own features extracted too)."""
    rd = RunDir.resolve(run, runs_dir)
    refuse_running(rd.path)
    cfg = TrainConfig.load(rd.config)
    target = as_location(cache_dir) if cache_dir else rd.path.resolve().parent.parent / "video-features"
    plan = BareVideoPlan(rd, cfg, target, [], [], Path(runs_dir))
    todo = _trained_runs(rd)
    seen: set[Path] = set()
    while todo:
        leaf = todo.pop(0)
        if leaf.path.resolve() in seen:
            continue
        seen.add(leaf.path.resolve())
        leaf_cfg = TrainConfig.load(leaf.config)
        made, other = extractable(leaf_cfg.data.features)
        ref = str(leaf_cfg.data.cache_dir)
        for name in made:
            if name not in plan.made:
                plan.made.append(name)
                plan.references.setdefault(ref, []).append(name)
        for name in other:
            source = _exporting_run(as_location(leaf_cfg.data.cache_dir), name, runs_dir, leaf)
            if source is None:
                if name not in plan.other:
                    plan.other.append(name)
            elif name not in plan.exports:
                plan.exports[name] = str(source.path)
                todo.append(source)
    return plan


def extract_bare_videos(plan: BareVideoPlan, videos: Path, models_dir: Path, device: str) -> tuple[Manifest, list[RunSummary]]:
    """The plan's features of every video under `videos`, made as the runs' own stores were; then the
    exported features, by the runs that exported them (exporting runs first)."""
    summaries = []
    manifest = bare_manifest(videos)
    for reference, names in plan.references.items():
        manifest, summary = extract_videos(videos, names, plan.target, reference_cache=reference, models_dir=models_dir,
                                           device=device)
        summaries.append(summary)
    presented_frames(manifest.tracks, plan.target)
    needs = {n: [f for f in TrainConfig.load(RunDir(Path(run)).config).data.features if f in plan.exports]
             for n, run in plan.exports.items()}  # the exported features each exporting run reads (configs read once)
    written: set[str] = set()
    while len(written) < len(plan.exports):
        ready = [n for n in plan.exports if n not in written and all(f in written for f in needs[n])]
        if not ready:
            raise ValueError(f"exported features {sorted(set(plan.exports) - written)} depend on each other")
        for name in ready:
            export_for_videos(plan, name, manifest.tracks, device)
            written.add(name)
    return manifest, summaries


def export_for_videos(plan: BareVideoPlan, name: str, tracks: list[Track], device: str) -> int:
    """Feature `name` of every track, as its exporting run wrote it for the training data: the same store
    metadata (fingerprint), values from that run's model over the videos' features. Returns tracks written."""
    run = RunDir(Path(plan.exports[name]))
    # the store the fusion run was trained on names the exporting run and its training cache
    leaf_cfgs = (TrainConfig.load(leaf.config) for leaf in _trained_runs(plan.run))
    fusion_cache = next(cfg.data.cache_dir for cfg in leaf_cfgs if name in cfg.data.features)
    reference = FeatureStore.open(store_path(as_location(fusion_cache), name))
    loaded = load_run(run.path, plan.runs_dir, device, cache_dir=plan.target)
    store = FeatureStore.create_or_open(store_path(plan.target, name), reference.meta)
    todo = [t for t in tracks if not store.is_complete(t.name, check_chunks=True)
            and all(s.store.is_complete(s.group_for(t)) for s in loaded.sources.values())]
    if not todo:
        return 0
    only_va = bool(reference.meta.config.get("train_folds"))  # an out-of-fold export holds (V, A) only
    dataset = bare_dataset(loaded, todo)
    try:
        for ti, values, valid in track_embeddings(loaded.model, dataset, loaded.device, range(len(dataset.tracks)),
                                                  loaded.cfg.batch_size):
            values = values[:, -2:] if only_va else values
            store.write(dataset.tracks[ti].name, values, dataset.label_times(ti)[: len(values)], valid,
                        attrs={"fps": float(dataset.fps[ti]), "frames": len(values), "split": "videos",
                               "run": run.path.name}, dtype="auto")
    finally:
        dataset.close()
    log.info("exported %s for %d video(s) with run %s", name, len(todo), run.path.name)
    return len(todo)


# ---------------------------------------------------------------- predictions


def presented_frames(tracks: list[Track], cache_dir: Location) -> None:
    """One row per presented frame, never per frame the container only declares: an unlabelled track's
    frame count from the cache's frame-time record, where there is one."""
    clock = FrameClock.open(cache_dir)
    for track in tracks:
        if track.labels is None and not track.n_frames:
            track.n_frames = clock.presented(track.video_stem)


def _ready_tracks(loaded: LoadedRun, tracks: list[Track], allow_missing: bool, out: VideoPredictions) -> list[Track]:
    inputs = input_features(loaded.model, list(loaded.sources))
    ready = []
    for track in tracks:
        missing = [n for n, s in loaded.sources.items() if not s.store.is_complete(s.group_for(track))]
        if all(n in missing for n in inputs):
            out.skipped.append(f"{track.video}: no features {', '.join(missing)}")
            continue
        if missing and not allow_missing:
            out.skipped.append(f"{track.video}: no {', '.join(missing)} (--allow-missing masks it)")
            continue
        if missing:
            out.notes.append(f"{track.video}: no {', '.join(missing)} (masked)")
        ready.append(track)
    return ready


def run_outputs(rd: RunDir, tracks: list[Track], runs_dir: Path, cache_dir: Location, device: str,
                allow_missing: bool, out: VideoPredictions) -> dict[str, TrackOutput]:
    """Raw outputs of a run of any kind for the tracks whose features are ready (the others in `out.skipped`)."""
    if is_ensemble(rd):
        from train.results.ensemble import EnsembleSpec

        spec = EnsembleSpec.load(rd.path / ENSEMBLE_FILE)
        members = [run_outputs(m, tracks, runs_dir, cache_dir, device, allow_missing, out) for m in spec.member_dirs(rd.path.parent)]
        return combine_outputs(members, spec.weights_v, spec.weights_a)
    loaded = load_run(rd.path, runs_dir, device, cache_dir=cache_dir)
    ready = _ready_tracks(loaded, tracks, allow_missing, out)
    return trained_outputs(loaded, ready) if ready else {}


def predict_videos(run: RunDir, tracks: list[Track], runs_dir: Path, cache_dir: Location, out_dir: Path, device: str,
                   allow_missing: bool = False) -> VideoPredictions:
    """Predict every frame of every track (one per video) that has every feature the run needs; the others
    are listed in `skipped`. With allow_missing, a track that lacks some (e.g. no audio) is predicted with
    them masked, as in training, and noted; one with none of the model's inputs never is."""
    out = VideoPredictions()
    presented_frames(tracks, cache_dir)
    outputs = run_outputs(run, tracks, runs_dir, cache_dir, device, allow_missing, out)
    out.skipped = list(dict.fromkeys(out.skipped))  # an ensemble's members skip the same video once
    out.notes = list(dict.fromkeys(out.notes))
    half = chosen_half_windows(run)
    edges = TrainConfig.load(run.config).smooth_edges  # once per run, not per video
    clock = FrameClock.open(cache_dir)
    for track in tracks:
        if track.name not in outputs:
            if not any(line.startswith(f"{track.video}:") for line in out.skipped):  # left out by the dataset
                out.skipped.append(f"{track.video}: the video cannot be read")
            continue
        result = outputs[track.name]
        fps = float(probe_video(track.video).fps)
        va = postprocess(result.va, result.present, half, edges)
        starts = clock.label_times(track.video_stem, len(va), fps)[:, 0]
        out.written.append(write_video_csv(Path(out_dir) / f"{track.name}.csv", va, starts, result.present))
        plot = Path(out_dir) / f"{track.name}.png"
        plot_track(track.name, fps, va, None, None, plot, inputs=result.modalities)
        out.plots.append(plot)
        out.summaries.append(summary_line(track.name, result))
    return out


def predict_bare_videos(plan: BareVideoPlan, manifest: Manifest, runs_dir: Path, out: Path | None, device: str,
                        allow_missing: bool = False) -> tuple[Path, VideoPredictions]:
    """One CSV and one plot per video into `out` (default RUN/predictions/videos)."""
    out_dir = out or plan.run.predictions / "videos"
    return out_dir, predict_videos(plan.run, manifest.tracks, runs_dir, plan.target, out_dir, device, allow_missing)
