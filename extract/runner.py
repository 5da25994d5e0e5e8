"""The local stage-1 runner: every requested feature of every video of a split, resumable.

Per video: skip the features whose groups are complete with the same fingerprint and the same source
file (size, mtime) unless forced; decode once on a background thread (bounded queue) and feed the frame
extractors (`faces`) and, per track, batches of frames with their final face boxes to the crop extractors
(`mouth`, `landmarks`, `clip`); give audio extractors the decoded audio; then store extractors. Groups are
written through `FeatureStore` (complete last). A failing video costs one line and the run goes on.
A video whose features are all complete but whose frame-time record is not (marked incomplete by
`verify`) is decoded once more, only to write that record again; an extractor whose store has a damaged
extra is loaded, which writes its extras again (`Runner.repair_extras`).
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict, deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cache.checks import DatasetError, check_dataset, empty_split_text
from cache.location import Location
from cache.manifest import Manifest, load_manifest
from cache.media import MediaError, SourceStat, probe_video
from cache.frametimes import FRAME_TIMES_STORE
from cache.row_spec import expected_row_shape, row_shape_problem
from cache.store import (
    STANDARDIZATION_EXTRA,
    DamagedGroup,
    DamagedStore,
    FeatureStore,
    FingerprintMismatch,
    store_exists,
    store_path,
)
from extract.base import (
    DEFAULT_MODELS_DIR,
    AudioExtractor,
    CropBatch,
    CropExtractor,
    Extractor,
    FrameBatch,
    FrameExtractor,
    StoreExtractor,
    UnitResult,
    VideoContext,
    build_config,
    get_extractor,
    with_dependencies,
)
from extract.decode import DecodeReport, prefetch_chunks
from extract.models import missing_weights_line
from extract.frames import (
    invalidate_undecoded,
    labelled_frames,
    partial_line,
    record_frames,
    recorded_partial_line,
    to_container_clock,
)

log = logging.getLogger(__name__)


class ExtractionError(RuntimeError):
    """A problem with the whole run (not one video): bad feature name, store mismatch."""


@dataclass
class RunOptions:
    split: str = "train"
    features: list[str] = field(default_factory=lambda: ["faces", "mouth", "landmarks", "clip"])
    data_root: Path = Path("artifacts/sample")
    videos_dir: Path | None = None
    labels_dir: Path | None = None
    cache_dir: Location = Path("artifacts/features")  # a folder or an fsspec URL
    models_dir: Path = DEFAULT_MODELS_DIR
    profile: str = "full"
    device: str = "auto"
    force: bool = False
    model_refs: dict[str, str] = field(default_factory=dict)  # feature -> model reference override
    configs: dict[str, dict[str, Any]] = field(default_factory=dict)  # feature -> config overrides
    batch_size: int = 32  # frames per decoded chunk and crops per model batch
    prefetch: int = 2  # decoded chunks queued ahead
    decode_threads: int = 1
    torch_threads: int = 1  # torch CPU threads of a local run (more were 4-27x slower on a busy machine); 0: torch's
    on_mismatch: str = "refuse"  # refuse | new (move the old store aside)
    only_videos: list[str] | None = None  # restrict to these video stems
    progress: bool = True
    # scaling out (extract/ray_backend.py): local | ray; a shard (i, n) of the split's sorted video stems
    backend: str = "local"
    address: str | None = None  # Ray cluster address (None: start a local one; "auto": join a running one)
    shard: tuple[int, int] | None = None
    cpus_per_task: float = 1.0  # Ray resources per video task
    gpus_per_task: float | None = None  # None: from the profile and device (see ray_backend.task_resources)


@dataclass
class RunSummary:
    done: list[str] = field(default_factory=list)  # "video: feature, feature"
    skipped: list[str] = field(default_factory=list)  # videos with every feature already complete
    failed: list[str] = field(default_factory=list)  # one line each: file and reason
    partial: list[str] = field(default_factory=list)  # stored, but fewer frames decoded than declared/labelled
    frames: int = 0
    seconds: float = 0.0
    hook_seconds: dict[str, float] = field(default_factory=dict)  # time inside each extractor's hooks
    model_seconds: dict[str, float] = field(default_factory=dict)  # of which inside model forwards (those timed)
    decode_wait: float = 0.0  # time the models waited for decoded frames
    load_seconds: float = 0.0  # loading the models (and writing their extras): once per run, not per video
    write_seconds: float = 0.0  # writing the store groups (per video and feature)

    @property
    def ok(self) -> bool:
        return not self.failed and not self.partial


def resolve_device(device: str) -> str:
    if device not in ("auto", "cpu", "cuda") and not device.startswith("cuda:"):
        raise ExtractionError(f"device must be auto, cpu or cuda, got {device!r}")
    if device == "auto":
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise ExtractionError("--device cuda asked for, but torch sees no CUDA device")
    return device


@contextmanager
def model_context(device: str, allow_autocast: bool) -> Iterator[None]:
    """inference mode always; bf16 autocast on CUDA."""
    import torch

    with ExitStack() as stack:
        stack.enter_context(torch.inference_mode())
        if allow_autocast and device.startswith("cuda"):
            stack.enter_context(torch.autocast("cuda", dtype=torch.bfloat16))
        yield


def _reason(err: BaseException) -> str:
    text = str(err).strip().splitlines()[0] if str(err).strip() else ""
    text = text.split(". Available:", 1)[0]  # open_clip lists every built-in config after this
    return f"{type(err).__name__}: {text}"[:300] if not isinstance(err, MediaError) else text[:300]


class _Timer:
    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)

    @contextmanager
    def __call__(self, key: str) -> Iterator[None]:
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[key] += time.perf_counter() - t0


class Runner:
    """Builds the extractors and stores once, then processes videos one by one.

    `write_extras=False` leaves the stores' extras (e.g. CLIP's region prototypes) alone: the Ray backend
    writes them once, before any video task, so that concurrent workers never rewrite the same array."""

    def __init__(
        self,
        options: RunOptions,
        audio_decoder: Callable[[Path, int], Any] | None = None,
        write_extras: bool = True,
    ):
        self.opts = options
        self.write_extras = write_extras
        self.device = resolve_device(options.device)
        self.names = with_dependencies(list(dict.fromkeys(options.features)))
        added = [n for n in self.names if n not in options.features]
        if added:
            log.info("also running %s (required by the requested features)", ", ".join(added))
        self.extractors: dict[str, Extractor] = {}
        self.stores: dict[str, FeatureStore] = {}
        self._frame_record: tuple[FeatureStore | None, set[str]] | None = None  # opened on first use
        for name in self.names:
            cls = get_extractor(name)
            ext = cls(
                build_config(cls, options.configs.get(name)),
                profile=options.profile,
                model_ref=options.model_refs.get(name),
                models_dir=options.models_dir,
            )
            ext.dependency_fingerprints = {d: self.extractors[d].feature_meta().fingerprint for d in cls.requires}
            self.extractors[name] = ext
            path = store_path(options.cache_dir, name)
            try:
                self.stores[name] = FeatureStore.create_or_open(path, ext.feature_meta(), on_mismatch=options.on_mismatch)
            except FingerprintMismatch as err:
                raise ExtractionError(str(err)) from None
        self._loaded: set[str] = set()
        self._audio_decoder = audio_decoder
        self.timer = _Timer()

    # ---- helpers ------------------------------------------------------------------------------
    def _ensure_loaded(self, name: str) -> Extractor:
        ext = self.extractors[name]
        if name not in self._loaded:
            with self.timer("_load"):
                self._load(name, ext)
        return ext

    def _load(self, name: str, ext: Extractor) -> None:
        """Load one extractor's model (and write its extras): once per run."""
        t0 = time.perf_counter()
        try:
            ext.load(self.device)
        except Exception as err:  # a model that cannot load fails the run once, not every video
            ref = ext.public_model_ref() or "-"
            missing = missing_weights_line(name, ref, err)
            if missing:
                raise ExtractionError(missing) from err
            raise ExtractionError(f"{name}: cannot load model '{ref}' on {self.device}: {_reason(err)}; "
                                  f"give one with --model {name}=PATH") from None
        self._loaded.add(name)
        log.debug("%s: model loaded in %.1f s (%s)", name, time.perf_counter() - t0, ext.public_model_ref() or "-")
        if self.write_extras:
            store = self.stores[name]
            with model_context(self.device, ext.autocast):
                ext.write_extras(store)

    def _decode_audio(self, path: Path, sample_rate: int) -> Any:
        if self._audio_decoder is None:
            try:
                from extract.audio import decode_audio  # written with the audio extractors
            except ImportError as err:
                raise ExtractionError(f"no audio decoder (extract.audio.decode_audio): {err}") from None
            self._audio_decoder = decode_audio
        return self._audio_decoder(path, sample_rate)

    def todo(self, video: VideoContext, source: SourceStat) -> list[str]:
        """Features with a unit of this video not complete (same source), in dependency order."""
        out = []
        for name in self.names:
            ext, store = self.extractors[name], self.stores[name]
            units = ext.units_for(video)
            if self.opts.force or not all(store.is_complete(u, source, check_chunks=True) for u in units):
                out.append(name)
        decodes = any(isinstance(self.extractors[n], (FrameExtractor, CropExtractor)) for n in out)
        if not decodes and self.frame_record_damaged(video, source):
            out.append(FRAME_TIMES_STORE)  # a decode pass only to write the record again (process_video)
        return out

    def damaged_extras(self) -> list[str]:
        """The features whose store has a damaged extra of the extractor's own (statistics kept by training
        are not: train recomputes them)."""
        damaged = []
        for name in self.names:
            store = self.stores[name]
            for extra in store.extra_names():
                if extra.startswith(STANDARDIZATION_EXTRA):
                    continue
                try:
                    store.get_extra(extra)
                except DamagedGroup as err:
                    log.info("%s: %s; written again", store.path, err.problem)
                    damaged.append(name)
                    break
        return damaged

    def repair_extras(self) -> list[str]:
        """Load (which writes their extras again) the extractors whose store has a damaged extra, as `verify`
        announces. Returns the features repaired."""
        repaired = self.damaged_extras() if self.write_extras else []
        for name in repaired:
            self._ensure_loaded(name)
        return repaired

    def frame_record_damaged(self, video: VideoContext, source: SourceStat) -> bool:
        """The video has a frame-time record that is not complete for this source file (marked incomplete by
        `verify`, cut, or made from another file): the next decode of the video must write it again."""
        if self._frame_record is None:
            path = store_path(self.opts.cache_dir, FRAME_TIMES_STORE)
            try:
                store = FeatureStore.open(path) if store_exists(path) else None
                self._frame_record = (store, set(store.units(complete_only=False)) if store is not None else set())
            except DamagedStore as err:  # its root metadata: `verify` says to move it aside
                log.warning("%s: frame-time record unreadable (%s)", path, err)
                self._frame_record = (None, set())
        store, units = self._frame_record
        if store is None or video.stem not in units:
            return False
        try:
            return not store.is_complete(video.stem, source, check_chunks=True)
        except DamagedStore:
            return True

    def close(self) -> None:
        for ext in self.extractors.values():
            ext.close()

    # ---- one video ----------------------------------------------------------------------------
    def process_video(self, video: VideoContext, todo: list[str], on_frames: Callable[[int], None]) -> DecodeReport | None:
        """Extract `todo` for one video; returns what its decode saw (None when no frame was decoded)."""
        source = SourceStat.of(video.path)
        record_only = FRAME_TIMES_STORE in todo  # no feature to redo, only the frame-time record (`todo`)
        todo = [n for n in todo if n != FRAME_TIMES_STORE]
        exts = {n: self._ensure_loaded(n) for n in todo}
        audio_cache: dict[int, Any] = {}

        def load_audio(sample_rate: int = 16000) -> Any:
            if sample_rate not in audio_cache:
                audio_cache[sample_rate] = self._decode_audio(video.path, sample_rate)
            return audio_cache[sample_rate]

        video.load_audio = load_audio
        results: dict[str, dict[str, UnitResult]] = {}
        frame_exts = [n for n in todo if isinstance(exts[n], FrameExtractor)]
        crop_exts = [n for n in todo if isinstance(exts[n], CropExtractor)]
        report = frames = None
        if frame_exts or crop_exts or record_only:
            report, frames = self._frame_pass(video, exts, frame_exts, crop_exts, results, on_frames)
        else:
            on_frames(video.info.n_frames)
        base_attrs = {
            "source": asdict(source),
            "fps": video.info.fps,
            "n_frames": report.presented if report else video.info.n_frames,
            "video": video.stem,
        }
        for name in todo:  # dependency order: what a store extractor reads is written before it runs
            ext = exts[name]
            if isinstance(ext, AudioExtractor):
                with self.timer(name), model_context(self.device, ext.autocast):
                    results[name] = ext.process_audio(video, load_audio(ext.sample_rate))
            elif isinstance(ext, StoreExtractor):
                deps = {d: FeatureStore.open(self.stores[d].path) for d in ext.requires}
                with self.timer(name), model_context(self.device, ext.autocast):
                    results[name] = ext.process_stores(video, deps)
            self._write(name, video, results.get(name, {}), base_attrs)
        if frames is not None:  # after the groups: the record describes the decode they came from
            record_frames(self.opts.cache_dir, video, *frames, report)
        return report

    def _write(self, name: str, video: VideoContext, result: dict[str, UnitResult], base_attrs: dict[str, Any]) -> None:
        ext, store = self.extractors[name], self.stores[name]
        row_shape = expected_row_shape(store)  # face_crops: its input_spec (read once, not per unit)
        for unit in ext.units_for(video):
            if unit not in result:
                raise RuntimeError(f"{name} returned no result for {unit}")
            r = result[unit]
            problem = row_shape_problem(np.shape(r.values)[1:], row_shape)
            if problem:
                raise RuntimeError(f"{name}: {unit}: {problem}")
            with self.timer("_write"):
                store.write(unit, r.values, r.times, r.valid, attrs={**base_attrs, **r.attrs}, dtype=ext.store_dtype,
                            layout=ext.store_layout)

    def _frame_pass(
        self,
        video: VideoContext,
        exts: dict[str, Extractor],
        frame_exts: list[str],
        crop_exts: list[str],
        results: dict[str, dict[str, UnitResult]],
        on_frames: Callable[[int], None],
    ) -> tuple[DecodeReport, tuple[np.ndarray, np.ndarray]]:
        """Decode once and feed the frame and crop extractors; returns the decode report and every
        presented frame's (times (N, 2), decoded (N,))."""
        opts = self.opts
        fps = video.info.fps  # extractors see frame k at [k/fps, (k+1)/fps); rows are put on the container clock below
        report = DecodeReport()
        times_parts: list[np.ndarray] = []  # every presented frame's [start, end) and whether it decoded
        decoded_parts: list[np.ndarray] = []
        states = {n: exts[n].begin(video) for n in frame_exts + crop_exts}
        live_faces = "faces" in frame_exts
        stored = None
        if crop_exts and not live_faces:
            from extract.faces import StoredBoxes

            faces_store = FeatureStore.open(self.stores["faces"].path)
            stored = StoredBoxes({t: faces_store.read(t) for t in video.tracks})
        frames: dict[int, np.ndarray] = {}  # frames still needed by some track's crop queue
        queues: dict[str, deque] = {t: deque() for t in video.tracks}  # (index, box_norm) ready to crop
        width = height = None
        n = 0

        def run_crops(track: str, final: bool) -> None:
            q = queues[track]
            while len(q) >= opts.batch_size or (final and q):
                items = [q.popleft() for _ in range(min(opts.batch_size, len(q)))]
                idx = np.array([i for i, _ in items])
                boxes = np.stack([b for _, b in items]) * np.array([width, height, width, height])
                times = np.stack([idx / fps, (idx + 1) / fps], axis=1)
                batch = CropBatch(track, [frames[i] for i in idx], idx, times, boxes)
                for name in crop_exts:
                    with self.timer(name), model_context(self.device, exts[name].autocast):
                        exts[name].process_crops(states[name], batch)

        def feed_boxes(ready: dict[str, list]) -> None:
            for track, rows in ready.items():
                for r in rows:
                    queues[track].append((r.index, r.box if r.valid else np.full(4, np.nan)))
                run_crops(track, final=False)
            # release frames no queue and no pending look-ahead needs any more
            if frames:
                pending = [q[0][0] for q in queues.values() if q]
                horizon = min(pending) if pending else None
                if live_faces:
                    faces_state = states["faces"]
                    waiting = [st.pending[0] for st in faces_state.resolver.states.values() if st.pending]
                    if waiting:
                        horizon = min(waiting + ([horizon] if horizon is not None else []))
                for i in [i for i in frames if horizon is None or i < horizon]:
                    del frames[i]

        wait = time.perf_counter()
        with prefetch_chunks(video.path, opts.batch_size, opts.prefetch, opts.decode_threads, report) as chunks:
            for chunk in chunks:
                self.timer.seconds["_decode_wait"] += time.perf_counter() - wait
                height, width = chunk.frames.shape[1:3]
                idx = chunk.indices
                times_parts.append(chunk.times)
                decoded_parts.append(chunk.decoded)
                batch = FrameBatch(chunk.frames, idx, np.stack([idx / fps, (idx + 1) / fps], axis=1))
                for name in frame_exts:
                    with self.timer(name), model_context(self.device, exts[name].autocast):
                        exts[name].process_frames(states[name], batch)
                if crop_exts:
                    for k, i in enumerate(idx):
                        frames[int(i)] = chunk.frames[k]
                    ready = exts["faces"].pop_ready(states["faces"]) if live_faces else stored.take(idx)
                    feed_boxes(ready)
                n += len(idx)
                on_frames(len(idx))
                wait = time.perf_counter()
        if n == 0:
            raise MediaError(f"{video.path}: no decodable frames")
        if crop_exts:
            if live_faces:
                feed_boxes(exts["faces"].pop_ready(states["faces"], final=True))
            for track in queues:
                run_crops(track, final=True)
        frames.clear()
        all_times, decoded = np.concatenate(times_parts), np.concatenate(decoded_parts)
        for name in frame_exts + crop_exts:
            with self.timer(name):
                results[name] = exts[name].end(states[name])
            to_container_clock(results[name], all_times, fps)
            invalidate_undecoded(results[name], all_times, decoded)
        if stored is not None:
            expected = {t: len(stored._rows[t][0]) for t in video.tracks}
            if any(v != n for v in expected.values()):
                raise RuntimeError(f"stored faces have {expected} rows but {n} frames were decoded")
        return report, (all_times, decoded)


def iter_videos(manifest: Manifest, split: str, only: list[str] | None = None) -> list[tuple[str, Path, list[str]]]:
    grouped = manifest.videos(split)
    out = []
    for stem in sorted(grouped):
        if only is not None and stem not in only:
            continue
        tracks = sorted(t.name for t in grouped[stem])
        out.append((stem, grouped[stem][0].video, tracks))
    return out


def parse_shard(text: str | None) -> tuple[int, int] | None:
    """'i/n' (0 <= i < n) -> (i, n); None or '' -> None."""
    if not text:
        return None
    try:
        i, n = (int(x) for x in text.split("/"))
    except ValueError:
        raise ExtractionError(f"--shard must be i/n (e.g. 0/4), got {text!r}") from None
    if n < 1 or not 0 <= i < n:
        raise ExtractionError(f"--shard {text}: need 0 <= i < n")
    return i, n


def shard_videos(videos: list[tuple[str, Path, list[str]]], shard: tuple[int, int] | None) -> list[tuple[str, Path, list[str]]]:
    """Shard i of n: every n-th video of the split sorted by stem, from the i-th (deterministic, disjoint,
    together complete). `videos` come from `iter_videos` (already sorted by stem)."""
    if shard is None:
        return videos
    i, n = shard
    return sorted(videos, key=lambda v: v[0])[i::n]


def split_manifest(options: RunOptions) -> Manifest:
    """The manifest of the run's split (a missing or empty data root is a DatasetError)."""
    check_dataset(options.data_root, options.videos_dir, options.labels_dir)
    return load_manifest(options.data_root, options.videos_dir, options.labels_dir, splits=(options.split,))


def split_videos(options: RunOptions, manifest: Manifest | None = None) -> list[tuple[str, Path, list[str]]]:
    """The videos this run covers: the split's (or `only_videos`), less those of other shards."""
    if manifest is None:
        manifest = split_manifest(options)
    in_split = iter_videos(manifest, options.split)
    if not in_split:  # before any store is created: a wrong --data-root or --split is an error, not a no-op
        raise DatasetError(empty_split_text(manifest, options.split, options.data_root))
    videos = shard_videos(in_split, options.shard)
    if options.only_videos is not None:
        videos = [v for v in videos if v[0] in options.only_videos]
    if not videos:
        log.warning("no tracks in split %s%s", options.split, f" (shard {options.shard[0]}/{options.shard[1]})" if options.shard else "")
    return videos


def log_dtype_summary(stores: Iterable[FeatureStore]) -> None:
    """The dtypes `auto` chose, one line per store and choice: float32 (a column float16 would lose) at
    INFO, the usual float16 at DEBUG (--verbose), instead of a line per video and feature."""
    for store in stores:
        for line in store.dtype_summary():
            log.log(logging.INFO if "float32" in line else logging.DEBUG, "%s", line)


def note_partial(summary: RunSummary, line: str | None) -> None:
    if line:
        summary.partial.append(line)
        log.warning("%s", line)


def plan_videos(
    runner: Runner, videos: list[tuple[str, Path, list[str]]], summary: RunSummary,
    labelled: Mapping[str, int] | None = None,
) -> list[tuple[VideoContext, list[str]]]:
    """Probe each video and list the features it still needs; unreadable videos go to `summary.failed`,
    videos with everything complete to `summary.skipped` (and to `summary.partial` again when their
    frame-time record says they were partial: stored, but short of frames)."""
    plan: list[tuple[VideoContext, list[str]]] = []
    for index, (stem, path, tracks) in enumerate(videos):
        try:
            info = probe_video(path)
            source = SourceStat.of(path)
        except (MediaError, OSError) as err:
            summary.failed.append(f"{path}: {_reason(err)}")
            log.error("%s", summary.failed[-1])
            continue
        ctx = VideoContext(stem, path, info, tracks, index)
        try:
            todo = runner.todo(ctx, source)
        except DamagedStore as err:  # e.g. a group's zarr.json is garbage: this video fails, the run goes on
            summary.failed.append(f"{path}: {err}")
            log.error("%s", summary.failed[-1])
            continue
        if not todo:
            summary.skipped.append(stem)
            note_partial(summary, recorded_partial_line(runner.opts.cache_dir, ctx, (labelled or {}).get(stem)))
            continue
        plan.append((ctx, todo))
    return plan


def _torch_threads(n: int) -> int:
    """Set torch's CPU threads to `n` (0: leave them); returns the previous count."""
    import torch

    before = torch.get_num_threads()
    if n > 0:
        torch.set_num_threads(n)
    return before


def run_local(
    options: RunOptions,
    manifest: Manifest | None = None,
    audio_decoder: Callable[[Path, int], Any] | None = None,
) -> RunSummary:
    """The local backend of `extract.backends.run_extraction`: every video of the split in this process."""
    from extract.progress import split_progress

    t_start = time.perf_counter()
    if manifest is None:
        manifest = split_manifest(options)
    videos = split_videos(options, manifest)
    labelled = labelled_frames(manifest, options.split)
    summary = RunSummary()
    runner = Runner(options, audio_decoder)
    threads = _torch_threads(options.torch_threads)
    try:
        runner.repair_extras()
        plan = plan_videos(runner, videos, summary, labelled)
        total = sum(max(c.info.n_frames, 0) for c, _ in plan)
        with split_progress(options.split, total, enabled=options.progress, n_videos=len(videos)) as advance:
            for stem in summary.skipped:
                advance.video(stem, "skipped")
            for line in summary.failed:
                path, _, reason = line.partition(": ")
                advance.video(Path(path).stem, "failed", features=[reason])
            for ctx, todo in plan:
                before = summary.frames
                t_video = time.perf_counter()

                def on_frames(k: int) -> None:
                    summary.frames += k
                    advance(k)

                try:
                    report = runner.process_video(ctx, todo, on_frames)
                    summary.done.append(f"{ctx.stem}: {', '.join(todo)}")
                    if report is not None:
                        note_partial(summary, partial_line(ctx, report.decoded, report.declared, labelled.get(ctx.stem)))
                    else:
                        note_partial(summary, recorded_partial_line(options.cache_dir, ctx, labelled.get(ctx.stem)))
                    advance(max(ctx.info.n_frames - (summary.frames - before), 0))  # probed count may differ
                    advance.video(ctx.stem, "done", summary.frames - before, time.perf_counter() - t_video, todo, ctx.info.fps)
                except (KeyboardInterrupt, SystemExit, ExtractionError):
                    raise
                except Exception as err:
                    line = f"{ctx.path}: {_reason(err)}"
                    summary.failed.append(line)
                    log.error("%s", line)
                    log.debug("traceback", exc_info=True)
                    advance(max(ctx.info.n_frames - (summary.frames - before), 0))
                    advance.video(ctx.stem, "failed", features=[_reason(err)])
    finally:
        runner.close()
        _torch_threads(threads)  # the caller's setting again
    log_dtype_summary(runner.stores.values())
    summary.seconds = time.perf_counter() - t_start
    summary.decode_wait = runner.timer.seconds.pop("_decode_wait", 0.0)
    summary.load_seconds = runner.timer.seconds.pop("_load", 0.0)
    summary.write_seconds = runner.timer.seconds.pop("_write", 0.0)
    summary.hook_seconds = dict(runner.timer.seconds)
    summary.model_seconds = {n: e.model_seconds for n, e in runner.extractors.items() if e.model_seconds}
    return summary
