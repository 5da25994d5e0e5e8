"""The extractor interface: small registered classes, one per feature (lhotse-style).

An extractor is a class with
  - `name` (the feature and store name), a `Config` dataclass, `kind` (frame | window | segment),
    `unit` (track | video), `version`, `family` (model family resolved per profile, or None),
  - `requires`: features it needs (e.g. `mouth` needs `faces`); the runner runs or reads them first,
  - `feature_meta()` -> `cache.store.FeatureMeta` whose fingerprint covers the model reference, the
    weights digest, the config, the version and the fingerprints of the features it requires,
  - one of three input styles, chosen by subclassing:
      FrameExtractor  frames of a video streamed in batches   begin / process_frames / end
      CropExtractor   per-track face crops of those batches   begin / process_crops / end
      AudioExtractor  the video's 16 kHz mono audio           process_audio
      StoreExtractor  groups of other stores (per video)      process_stores
Batching, device and dtype are the runner's business: it calls `load(device)` once, and wraps the hooks
in `torch.inference_mode()` (and bf16 autocast on CUDA when `autocast` is True).

Results are `UnitResult`s keyed by unit name (track name for unit=track, video stem for unit=video).
"""

from __future__ import annotations

import logging
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields, is_dataclass, replace
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from cache.media import VideoInfo
from cache.names import unknown
from cache.store import FeatureMeta, FeatureStore

log = logging.getLogger(__name__)

PROFILES = ("full", "tiny")
DEFAULT_MODELS_DIR = Path("artifacts/models")
AUDIO_SAMPLE_RATE = 16000


# dataclass field metadata of settings that change how fast a feature is made, never what it holds
# (batch sizes, worker counts, devices): they stay out of the store's fingerprint
SPEED: dict[str, bool] = {"speed": True}


@dataclass
class ExtractorConfig:
    """Base for extractor configs (every field is part of the fingerprint, except fields marked
    `field(..., metadata=SPEED)`)."""


@dataclass
class UnitResult:
    """One unit's output: values (N, ...), times (N, 2) seconds [start, end), valid (N,), group attrs."""

    values: np.ndarray
    times: np.ndarray
    valid: np.ndarray
    attrs: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.times = np.asarray(self.times, dtype=np.float64).reshape(-1, 2)
        self.valid = np.asarray(self.valid, dtype=bool).reshape(-1)
        if not (len(self.values) == len(self.times) == len(self.valid)):
            raise ValueError(
                f"lengths differ: values {len(self.values)}, times {len(self.times)}, valid {len(self.valid)}"
            )


@dataclass
class VideoContext:
    """What an extractor knows about the video being processed."""

    stem: str
    path: Path
    info: VideoInfo  # fps from the container
    tracks: list[str]  # label tracks of this video in the split (e.g. video48_left, video48_right)
    index: int = 0  # position of the video in this run
    load_audio: Callable[..., Any] | None = None  # load_audio(sample_rate=16000): decoded once per video, cached

    @property
    def fps(self) -> float:
        return self.info.fps


@dataclass
class FrameBatch:
    """Consecutive decoded frames of one video: RGB uint8 (B, H, W, 3), frame indices, times (B, 2)."""

    frames: np.ndarray
    indices: np.ndarray
    times: np.ndarray
    cache: dict[str, Any] = field(default_factory=dict)  # memo shared by extractors within this batch

    def memo(self, key: str, compute: Callable[[], Any]) -> Any:
        if key not in self.cache:
            self.cache[key] = compute()
        return self.cache[key]


@dataclass
class CropBatch:
    """Frames of one track with their final face boxes (pixels x1, y1, x2, y2, float).

    `frames[i]` is the full RGB frame; `boxes[i]` is NaN where the track has no (valid) face.
    Crop with `crop_faces`. `cache` lets extractors that share a model pass (mouth + landmarks share one
    face-mesh pass) compute it once: `batch.memo(key, fn)`.
    """

    track: str
    frames: list[np.ndarray]
    indices: np.ndarray
    times: np.ndarray
    boxes: np.ndarray
    cache: dict[str, Any] = field(default_factory=dict)

    @property
    def has_box(self) -> np.ndarray:
        return np.isfinite(self.boxes).all(axis=1) if len(self.boxes) else np.zeros(0, dtype=bool)

    def memo(self, key: str, compute: Callable[[], Any]) -> Any:
        if key not in self.cache:
            self.cache[key] = compute()
        return self.cache[key]


def crop_faces(
    frames: list[np.ndarray], boxes: np.ndarray, size: int, margin: float = 0.25, square: bool = True
) -> np.ndarray:
    """Crops around pixel boxes, enlarged by `margin` on each side, square, resized to (size, size).

    Frames without a box give black crops. Pads with edge pixels where the crop leaves the frame.
    """
    import cv2

    out = np.zeros((len(frames), size, size, 3), dtype=np.uint8)
    for i, (frame, box) in enumerate(zip(frames, boxes)):
        if not np.isfinite(box).all():
            continue
        x1, y1, x2, y2 = (float(v) for v in box)
        cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
        w, h = max(x2 - x1, 2.0) * (1 + 2 * margin), max(y2 - y1, 2.0) * (1 + 2 * margin)
        if square:
            w = h = max(w, h)
        src = np.float32([[cx - w / 2, cy - h / 2], [cx + w / 2, cy - h / 2], [cx - w / 2, cy + h / 2]])
        dst = np.float32([[0, 0], [size, 0], [0, size]])
        matrix = cv2.getAffineTransform(src, dst)
        out[i] = cv2.warpAffine(frame, matrix, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    return out


def box_crops(batch: CropBatch, size: int, margin: float) -> tuple[np.ndarray, np.ndarray]:
    """(crops of the frames with a box, which frames have one), memoised on the batch so that the
    extractors that crop the same way (`clip`, `face_crops`) crop once."""

    def compute() -> tuple[np.ndarray, np.ndarray]:
        ok = batch.has_box
        frames = [f for f, k in zip(batch.frames, ok) if k]
        crops = crop_faces(frames, batch.boxes[ok], size, margin) if ok.any() else np.zeros((0, size, size, 3), np.uint8)
        return crops, ok

    return batch.memo(("box_crops", size, float(margin)), compute)


def config_dict(config: Any) -> dict[str, Any]:
    return asdict(config) if is_dataclass(config) else dict(config or {})


def identity_dict(config: Any) -> dict[str, Any]:
    """The config as it enters the fingerprint: every field but those marked with SPEED metadata
    (nested dataclasses too)."""
    if not is_dataclass(config):
        return dict(config or {})
    return {
        f.name: identity_dict(getattr(config, f.name)) if is_dataclass(getattr(config, f.name)) else config_dict(config)[f.name]
        for f in fields(config)
        if not f.metadata.get("speed")
    }


class Extractor(ABC):
    """Base of all extractors. Subclass one of the input styles below and `@register` it."""

    name: ClassVar[str] = ""
    Config: ClassVar[type] = ExtractorConfig
    kind: ClassVar[str] = "frame"  # frame | window | segment
    unit: ClassVar[str] = "track"  # track | video
    version: ClassVar[str] = "1"
    family: ClassVar[str | None] = None  # model family in extract.models, None if no model to resolve
    requires: ClassVar[tuple[str, ...]] = ()  # features that must exist first (run in the same pass or read)
    input: ClassVar[str] = ""  # frames | crops | audio | stores (set by the input-style subclasses)
    autocast: ClassVar[bool] = True  # bf16 autocast on CUDA is allowed for this extractor's hooks
    store_dtype: ClassVar[str] = "auto"  # stored dtype: auto = float16 unless a column would lose precision
    store_layout: ClassVar[Any] = None  # cache.store.StoreLayout of the values (None: the default)

    def __init__(
        self,
        config: Any | None = None,
        profile: str = "full",
        model_ref: str | None = None,
        models_dir: Path = DEFAULT_MODELS_DIR,
    ):
        if profile not in PROFILES:
            raise ValueError(f"profile must be one of {PROFILES}, got {profile!r}")
        self.config = config if config is not None else self.Config()
        self.profile = profile
        self.models_dir = Path(models_dir)
        self._model_ref_override = model_ref
        self._model_ref: str | None = None
        self.dependency_fingerprints: dict[str, str] = {}  # set by the runner before feature_meta()
        self.device = "cpu"
        self.model_seconds = 0.0  # time inside model forwards (`model_time`); the rest of a hook is host work

    @contextmanager
    def model_time(self) -> Iterator[None]:
        """Count the block as model time (bench/extract.py: host time vs model time per feature)."""
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.model_seconds += time.perf_counter() - t0

    # ---- model reference and identity ---------------------------------------------------------
    @property
    def model_ref(self) -> str:
        """The resolved model reference: `full` -> the real ref, `tiny` -> a small local model folder
        (built once). An explicit `model_ref` given to the constructor wins."""
        if self._model_ref is None:
            if self._model_ref_override:
                self._model_ref = self._model_ref_override
            elif self.family is None:
                self._model_ref = self.default_model_ref()
            else:
                from extract.models import resolve_model_ref

                self._model_ref = resolve_model_ref(self.family, self.profile, self.models_dir)
        return self._model_ref

    def default_model_ref(self) -> str:
        """Reference when `family` is None (e.g. a detector shipped in a wheel)."""
        return ""

    def weights_digest(self) -> str:
        if self.family is None or not self.model_ref:
            return ""
        from extract.models import weights_digest

        return weights_digest(self.model_ref)

    def feature_meta(self) -> FeatureMeta:
        cfg = identity_dict(self.config)
        if self.dependency_fingerprints:
            cfg = {**cfg, "inputs": dict(sorted(self.dependency_fingerprints.items()))}
        return FeatureMeta(
            name=self.name,
            kind=self.kind,
            unit=self.unit,
            model_ref=self.public_model_ref(),
            weights_digest=self.weights_digest(),
            config=cfg,
            version=self.version,
        )

    def public_model_ref(self) -> str:
        """The reference as stored in the fingerprint (tiny local folders are named relative)."""
        ref = self.model_ref
        tiny_root = str((self.models_dir / "tiny").resolve())
        return ref.replace(tiny_root, "tiny") if ref else ref

    # ---- lifecycle ------------------------------------------------------------------------------
    def load(self, device: str = "cpu") -> None:
        """Load models onto `device` (called once by the runner before the first video)."""
        self.device = device

    def write_extras(self, store: FeatureStore) -> None:
        """Store data that goes with the feature but not with a unit (e.g. prompt embeddings)."""

    def units_for(self, video: VideoContext) -> list[str]:
        return list(video.tracks) if self.unit == "track" else [video.stem]

    def close(self) -> None:
        """Release models."""


class FrameExtractor(Extractor):
    """Gets every decoded frame of a video in order, in batches."""

    input = "frames"

    def begin(self, video: VideoContext) -> Any:
        """Per-video state (returned and passed back)."""
        return {}

    @abstractmethod
    def process_frames(self, state: Any, batch: FrameBatch) -> None:
        """Consume one batch of consecutive frames."""

    @abstractmethod
    def end(self, state: Any) -> dict[str, UnitResult]:
        """The results per unit once every batch of the video was seen."""


class CropExtractor(Extractor):
    """Gets, per track, frames in order with their final face boxes (from `faces`, run or read)."""

    input = "crops"
    requires = ("faces",)

    def begin(self, video: VideoContext) -> Any:
        return {}

    @abstractmethod
    def process_crops(self, state: Any, batch: CropBatch) -> None:
        """Consume one batch of one track's frames with their face boxes."""

    @abstractmethod
    def end(self, state: Any) -> dict[str, UnitResult]:
        """The results per unit once every batch of the video was seen."""


def rows_to_results(rows_by_track: dict[str, list[tuple[np.ndarray, np.ndarray, np.ndarray]]], dim: int,
                    attrs: dict[str, Any]) -> dict[str, UnitResult]:
    """Per track, its batches' (times, values, valid) concatenated into one `UnitResult` (empty when none)."""
    out = {}
    for track, rows in rows_by_track.items():
        times = np.concatenate([r[0] for r in rows]) if rows else np.zeros((0, 2))
        values = np.concatenate([r[1] for r in rows]) if rows else np.zeros((0, dim), dtype=np.float32)
        valid = np.concatenate([r[2] for r in rows]) if rows else np.zeros(0, dtype=bool)
        out[track] = UnitResult(values, times, valid, dict(attrs))
    return out


class AudioExtractor(Extractor):
    """Gets the video's audio once, as returned by `extract.audio.decode_audio(path, sample_rate)`
    (decoded once per video and sample rate, shared by all audio extractors; None without audio)."""

    input = "audio"
    unit = "video"
    sample_rate: ClassVar[int] = AUDIO_SAMPLE_RATE

    @abstractmethod
    def process_audio(self, video: VideoContext, audio: Any) -> dict[str, UnitResult]:
        """The video's results from its decoded audio (None when it has no audio stream)."""


class StoreExtractor(Extractor):
    """Reads complete groups of the stores in `requires` (opened by the runner) for one video."""

    input = "stores"

    @abstractmethod
    def process_stores(self, video: VideoContext, stores: Mapping[str, FeatureStore]) -> dict[str, UnitResult]:
        """The video's results from the complete groups of the required stores."""


# ---- registry ------------------------------------------------------------------------------------
_REGISTRY: dict[str, type[Extractor]] = {}


def register(cls: type[Extractor]) -> type[Extractor]:
    """Class decorator: make an extractor available by its `name`."""
    if not cls.name:
        raise ValueError(f"{cls.__name__} has no name")
    if cls.kind not in ("frame", "window", "segment") or cls.unit not in ("track", "video"):
        raise ValueError(f"{cls.__name__}: bad kind/unit {cls.kind}/{cls.unit}")
    _REGISTRY[cls.name] = cls
    return cls


def unregister(name: str) -> None:
    _REGISTRY.pop(name, None)


# modules that register extractors when imported (an import that fails is logged, not fatal)
EXTRACTOR_MODULES = (
    "extract.faces", "extract.mouth", "extract.clip", "extract.face_crops", "extract.audio_features", "extract.qwen3vl",
    "extract.face_encoder",
)


def _import_builtin() -> None:
    import importlib

    for module in EXTRACTOR_MODULES:
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as err:
            if err.name != module:
                raise
            log.debug("extractor module %s not present", module)


# where a feature is defined, to import only what a run needs (others: every module above is tried)
FEATURE_MODULES = {
    "faces": "extract.faces", "mouth": "extract.mouth", "landmarks": "extract.mouth", "clip": "extract.clip",
    "face_crops": "extract.face_crops",
    "grada": "extract.face_encoder",
}


def get_extractor(name: str) -> type[Extractor]:
    if name not in _REGISTRY and name in FEATURE_MODULES:
        import importlib

        importlib.import_module(FEATURE_MODULES[name])
    if name not in _REGISTRY:
        _import_builtin()
    try:
        return _REGISTRY[name]
    except KeyError:
        raise KeyError(unknown("feature", name, available())) from None


def available() -> list[str]:
    _import_builtin()
    return sorted(_REGISTRY)


def with_dependencies(names: list[str]) -> list[str]:
    """The requested features plus what they require, dependencies first (stable order)."""
    order: list[str] = []

    def visit(name: str, stack: tuple[str, ...]) -> None:
        if name in order:
            return
        if name in stack:
            raise ValueError(f"dependency cycle: {' -> '.join(stack + (name,))}")
        for dep in get_extractor(name).requires:
            visit(dep, stack + (name,))
        order.append(name)

    for name in names:
        visit(name, ())
    return order


def build_config(cls: type[Extractor], overrides: Mapping[str, Any] | None = None) -> Any:
    """The extractor's default config with some fields replaced (unknown fields are an error). A nested
    config may be given as a dict (as read back from a store's metadata)."""
    if isinstance(overrides, cls.Config):  # a whole config (e.g. from a recipe file)
        return overrides
    cfg = cls.Config()
    if overrides:
        known = {f.name for f in fields(cfg)}
        bad = set(overrides) - known
        if bad:
            raise ValueError(f"{cls.name}: unknown config field(s) {sorted(bad)}; known {sorted(known)}")
        cfg = _with_values(cfg, overrides)
    return cfg


def _with_values(cfg: Any, values: Mapping[str, Any]) -> Any:
    changes = {}
    for key, value in values.items():
        current = getattr(cfg, key)
        changes[key] = _with_values(current, value) if is_dataclass(current) and isinstance(value, Mapping) else value
    return replace(cfg, **changes)


def is_tiny_ref(public_ref: str) -> bool:
    """Whether a stored (public) model reference names a tiny-profile model: `tiny`, `tiny/...` or a
    reference whose weights part is `tiny/...` (e.g. `affcache-tiny-clip:tiny/open_clip/...`)."""
    return any(part == "tiny" or part.startswith("tiny/") for part in public_ref.split(":"))
