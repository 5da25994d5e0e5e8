"""Configuration of a training run: what data, which head, how to optimise. Plain dataclasses,
resolved once and written to the run folder as JSON."""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from cache.names import check_component

@dataclass
class DataConfig:
    """Where the data is and how tracks become windows."""

    features: list[str]
    data_root: str = "artifacts/sample"
    videos: str | None = None
    labels: str | None = None
    cache_dir: str = "artifacts/features"
    window: int = 400
    stride: int = 150
    # feature name -> nearest-fill distance in seconds (inf allowed); features not named are not filled
    nearest_fill: dict[str, float] = field(default_factory=dict)
    cache_mb: float = 1024.0  # budget of the LRU of aligned tracks
    block_tracks: int = 8  # training windows are shuffled within blocks of this many tracks
    prefetch_batches: int = 4
    align_workers: int = 2
    # aligned views (train/data/views.py): each (track, feature) aligned once and kept on disk, shared by runs;
    # off = align lazily in RAM every epoch (one-off runs, or no disk for them). views_dir default:
    # CACHE_DIR/_views for a local cache, artifacts/views for a URL cache
    views: bool = True
    views_dir: str | None = None
    # train-split tracks left out of training (out-of-fold stacking exports train one run per fold)
    holdout: list[str] = field(default_factory=list)
    # what a window's positions are (window/stride count them): "frame" label frames; "segment" the rows of
    # the first feature, a segment store such as qwen3vl:mm_last (segment targets, predictions expanded onto
    # frames by overlap averaging: train/data/segments.py; RAS 16 / 8); "audio_window" the rows of an audio store
    # (RAS 200 / 100 = 4 s / 2 s at 50 Hz; training windows filtered: train/data/window_audio.py)
    level: str = "frame"
    # audio_window training filter: fields of cache.audio_windows.AudioWindowRule (min_open_s: open seconds,
    # min_coverage: share of frames with a detected face, min_valid_blocks: labelled 1 s blocks); unnamed keys
    # take RAS's 1.0 / 0.8 / 2; {"min_open_s": 0, "min_coverage": 0, "min_valid_blocks": 0} keeps every window
    window_filter: dict[str, float] = field(default_factory=dict)
    # standardize each feature dimension with mean/std of the train split (train/data/standardize.py)
    normalize: bool = True

    def __post_init__(self) -> None:
        if not self.features:
            raise ValueError("at least one feature is needed")
        if self.window < 1 or self.stride < 1:
            raise ValueError(f"window and stride must be positive, got {self.window}/{self.stride}")
        if self.level not in ("frame", "segment", "audio_window"):
            raise ValueError(f"level must be 'frame', 'segment' or 'audio_window', got {self.level!r}")
        at_least("data.cache_mb (--cache-mb)", self.cache_mb, 0, strict=True)
        for name, seconds in self.nearest_fill.items():
            at_least(f"data.nearest_fill.{name} (--fill)", seconds, 0)


TRACKERS = ("tensorboard", "mlflow")


@dataclass
class TrainConfig:
    """Everything a run needs; `resolve()` fills defaults that depend on the data."""

    model: str
    data: DataConfig
    name: str = ""
    runs_dir: str = "artifacts/runs"
    head: dict[str, Any] = field(default_factory=dict)  # options for build_head (hidden, dropout, visual, ...)
    epochs: int = 50
    batch_size: int = 8
    lr: float = 1e-4
    weight_decay: float = 0.01
    scheduler: str = "plateau"  # "plateau": ReduceLROnPlateau on validation P; "none": constant lr
    plateau_patience: int = 5
    plateau_factor: float = 0.1
    early_stop: int = 15
    grad_clip: float = 1.0  # max gradient norm; 0 = no clipping
    loss_weights: tuple[float, float] = (0.5, 0.5)  # CCC weights of V and A
    regression: str | None = None  # None | "mae" | "mse", added to the CCC loss
    regression_weight: float = 1.0
    ccc_over: str = "batch"  # "batch": CCC pooled over the batch's valid frames; "window": per window, averaged
    ccc_min_frames: int = 4  # fewer valid frames: the loss is its regression part alone (MSE by default; RAS)
    # inputs (data.features names) a frame must have for the training loss to count it (RAS's face branch: grada);
    # empty: every labelled frame. Evaluation always scores every labelled frame
    require_input: list[str] = field(default_factory=list)
    lambda_region: float = 0.2
    region_sigma: float = 0.45  # width of the Gaussian soft region labels
    seed: int = 42
    device: str = "auto"
    max_steps_per_epoch: int | None = None
    # moving-average half-windows tried on validation (kernel 2·h+1; RAS's kernels 7, 9, 11, 13 are h 3, 4, 5, 6)
    smooth_grid: list[int] = field(default_factory=lambda: [0, 1, 2, 3, 4, 5, 6, 8, 12, 16, 25, 32, 50, 75, 100])
    # ends of the moving average: "shrink" (fewer frames near an end) or "repeat" (the edge value repeated,
    # RAS's replicate padding: src_audio_and_fusion/src/callbacks/multimodal_framewise_v2_callback.py)
    smooth_edges: str = "shrink"
    n_plot_tracks: int = 3
    # backbone top trained from the cache (train.fit.finetune.FinetuneConfig as a dict); empty: heads only
    finetune: dict[str, Any] = field(default_factory=dict)
    # experiment tracking beside the run folder's TensorBoard files: "tensorboard" (only those) | "mlflow"
    # (also an MLflow run; `pip install '.[mlflow]'`), at tracking_uri (default: a file store RUNS_DIR/mlruns)
    tracking: str = "tensorboard"
    tracking_uri: str | None = None

    def __post_init__(self) -> None:
        from cache.names import unknown

        choices = {"scheduler": ("plateau", "none"), "ccc_over": ("batch", "window"), "smooth_edges": ("shrink", "repeat")}
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {', '.join(allowed)}, got {getattr(self, name)!r}")
        if self.ccc_min_frames < 0:
            raise ValueError(f"ccc_min_frames must be >= 0, got {self.ccc_min_frames}")
        missing = sorted(set(self.require_input) - set(self.data.features))
        if missing:
            raise ValueError(f"loss.require_input names {missing}, not in data.features {self.data.features}")
        if self.tracking not in TRACKERS:
            raise ValueError(unknown("tracker", self.tracking, TRACKERS) + " (recipe key `tracking`)")
        # the checks the flags get (Typer's min=, their callbacks), for values from recipes and sweeps too
        if self.name:
            check_component(self.name, "run name")  # RUNS_DIR/<name>: never a path outside it
        at_least("optim.epochs (--epochs)", self.epochs, 1)
        at_least("optim.batch_size (--batch-size)", self.batch_size, 1)
        at_least("optim.lr (--lr)", self.lr, 0, strict=True)
        at_least("optim.weight_decay (--weight-decay)", self.weight_decay, 0)
        at_least("loss.lambda_region (--lambda-region)", self.lambda_region, 0)
        if self.max_steps_per_epoch is not None:
            at_least("optim.max_steps_per_epoch (--max-steps)", self.max_steps_per_epoch, 1)
        for w in self.loss_weights:
            at_least("loss.weights (--loss-weights)", w, 0)
        if len(self.loss_weights) == 2 and sum(self.loss_weights) == 0:
            raise ValueError("loss.weights (--loss-weights) must not both be 0")

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["data"]["nearest_fill"] = {k: _json_float(v) for k, v in self.data.nearest_fill.items()}
        return out

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> "TrainConfig":
        raw = dict(raw)
        data = dict(raw.pop("data"))
        data["nearest_fill"] = {k: float(v) for k, v in data.get("nearest_fill", {}).items()}
        known = {f.name for f in fields(DataConfig)}
        cfg_data = DataConfig(**{k: v for k, v in data.items() if k in known})
        known = {f.name for f in fields(cls)}
        kwargs = {k: v for k, v in raw.items() if k in known}
        if "loss_weights" in kwargs:
            kwargs["loss_weights"] = tuple(kwargs["loss_weights"])
        return cls(data=cfg_data, **kwargs)

    def save(self, path: Path, header: str = "") -> None:
        """`.yaml`: the grouped recipe form (a run folder's config.yaml); else flat JSON (older run folders)."""
        path = Path(path)
        if path.suffix in YAML_SUFFIXES:
            from recipes.loader import dump_yaml

            path.write_text(header + dump_yaml(to_recipe_dict(self)), encoding="utf-8")
        else:
            path.write_text(json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n", encoding="utf-8")

    @classmethod
    def load(cls, path: Path) -> "TrainConfig":
        """A run's config.yaml (grouped) or an older run's config.json (flat)."""
        path = Path(path)
        if path.suffix in YAML_SUFFIXES:
            from omegaconf import OmegaConf

            return from_recipe_dict(OmegaConf.to_container(OmegaConf.load(path), resolve=True))
        return cls.from_dict(json.loads(path.read_text(encoding="utf-8")))


YAML_SUFFIXES = (".yaml", ".yml")
# recipe group -> {recipe key: TrainConfig field}; fields not named here stay at the top level (train/runs/recipe.py)
RECIPE_GROUPS: dict[str, dict[str, str]] = {
    "optim": {
        "epochs": "epochs", "batch_size": "batch_size", "lr": "lr", "weight_decay": "weight_decay",
        "scheduler": "scheduler", "plateau_patience": "plateau_patience", "plateau_factor": "plateau_factor", "early_stop": "early_stop",
        "grad_clip": "grad_clip", "max_steps_per_epoch": "max_steps_per_epoch",
    },
    "loss": {
        "weights": "loss_weights", "regression": "regression", "regression_weight": "regression_weight",
        "lambda_region": "lambda_region", "region_sigma": "region_sigma",
        "ccc_over": "ccc_over", "ccc_min_frames": "ccc_min_frames", "require_input": "require_input",
    },
    "eval": {"smooth_grid": "smooth_grid", "smooth_edges": "smooth_edges", "n_plot_tracks": "n_plot_tracks"},
}
RECIPE_TOP_LEVEL = ("model", "name", "runs_dir", "seed", "device", "finetune", "tracking", "tracking_uri")


def to_recipe_dict(cfg: TrainConfig) -> dict[str, Any]:
    """The grouped (YAML) form of a TrainConfig, its head as given (train_config_to_recipe fills the head's defaults)."""
    flat = cfg.to_dict()
    out: dict[str, Any] = {name: flat[name] for name in RECIPE_TOP_LEVEL}
    out["data"] = flat["data"]
    out["head"] = dict(flat["head"])
    for group, keys in RECIPE_GROUPS.items():
        out[group] = {key: flat[name] for key, name in keys.items()}
    out["loss"]["weights"] = list(out["loss"]["weights"])
    return out


def from_recipe_dict(nested: dict[str, Any]) -> TrainConfig:
    """The inverse of to_recipe_dict (a key a group lacks keeps its default)."""
    flat: dict[str, Any] = {k: v for k, v in nested.items() if k not in RECIPE_GROUPS}
    for group, keys in RECIPE_GROUPS.items():
        for key, value in (nested.get(group) or {}).items():
            if key in keys:
                flat[keys[key]] = value
    flat.setdefault("data", {})
    return TrainConfig.from_dict(flat)


def at_least(name: str, value: Any, low: float, strict: bool = False) -> None:
    """ValueError (one line naming the key) unless `value` is a number >= low (> low when strict)."""
    number = isinstance(value, (int, float)) and not isinstance(value, bool) and not math.isnan(value)
    if not number or not (value > low if strict else value >= low):
        raise ValueError(f"{name} must be {'>' if strict else '>='} {low}, got {value!r}")


def _json_float(value: float) -> float | str:
    return str(value) if not math.isfinite(value) else value


def parse_fill(text: str | None) -> dict[str, float]:
    """`clip=inf,ast=0.5` -> {'clip': inf, 'ast': 0.5}; a bare name means inf."""
    out: dict[str, float] = {}
    for part in (text or "").split(","):
        part = part.strip()
        if not part:
            continue
        name, _, value = part.partition("=")
        out[name.strip()] = float(value) if value.strip() else math.inf
    return out


def parse_head_options(items: list[str] | None) -> dict[str, Any]:
    """`key=value` strings (values parsed as JSON when they parse, else kept as strings)."""
    out: dict[str, Any] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"head option must be key=value, got {item!r}")
        try:
            out[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            out[key.strip()] = value
    return out
