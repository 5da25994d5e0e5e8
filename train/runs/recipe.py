"""The training recipe: TrainConfig's fields grouped for YAML (`optim.lr`, `loss.weights`, ...), the head's
own config dataclass under `head`, validation in one step, and back to a TrainConfig.

    model: transformer            # head name (train/heads)
    name: ras-face                # run name (default HEAD-FEATURES-DIGEST, default_run_name)
    data:   {features: [face], window: 400, stride: 150, ...}    # DataConfig
    head:   {hidden: 256, layers: 5, heads: 16, ...}             # the head's config class
    optim:  {lr: 1e-4, batch_size: 8, epochs: 50, ...}
    loss:   {weights: [0.7, 0.3], regression: mse, regression_weight: 0.01, lambda_region: 0.2, ...}
    eval:   {smooth_grid: [0, 1, 2, ...], n_plot_tracks: 3}

The schema is made from the dataclasses' own fields and defaults (train/config.py, train/heads), so a
default lives in one place.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import typing
import shlex
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from recipes.loader import ConfigError, dotted, field_spec, merge_layers, resolve_config_path, schema_class, to_plain, validate
from train.config import RECIPE_GROUPS, RECIPE_TOP_LEVEL, DataConfig, TrainConfig, to_recipe_dict

GROUPS, TOP_LEVEL = RECIPE_GROUPS, RECIPE_TOP_LEVEL  # recipe group -> {recipe key: TrainConfig field} (train/config.py)
HEAD_ONLY_IN_CODE = ("region_prototypes",)  # filled from the clip store, never from a file

HEADS_DIR = "heads"  # configs/heads/<model>.yaml: each head's default recipe


def _renamed(spec: tuple[str, Any, dataclasses.Field], new: str) -> tuple[str, Any, dataclasses.Field]:
    return new, spec[1], spec[2]


def _head_class(model: str) -> type:
    from train.heads import HEADS

    try:
        return HEADS[model].config_class
    except KeyError:
        from cache.names import unknown

        raise ConfigError(unknown("head", model, HEADS)) from None


def head_schema_class(model: str) -> type:
    """The head's config dataclass less what only code sets (region prototypes)."""
    return schema_class(_head_class(model), HEAD_ONLY_IN_CODE)


def train_schema(model: str) -> DictConfig:
    """The structured schema of a training recipe for head `model`."""
    groups = {
        group: dataclasses.make_dataclass(
            f"{group.title()}Recipe", [_renamed(field_spec(TrainConfig, field), key) for key, field in keys.items()]
        )
        for group, keys in GROUPS.items()
    }
    specs = [field_spec(TrainConfig, name) for name in TOP_LEVEL]
    data, head = schema_class(DataConfig), head_schema_class(model)
    specs += [("data", data, dataclasses.field(default_factory=data)), ("head", head, dataclasses.field(default_factory=head))]
    specs += [(g, cls, dataclasses.field(default_factory=cls)) for g, cls in groups.items()]
    return OmegaConf.structured(dataclasses.make_dataclass("TrainRecipe", specs))


def head_recipe_path(model: str) -> Path | None:
    try:
        return resolve_config_path(f"{HEADS_DIR}/{model}.yaml")
    except ConfigError:
        return None


def load_recipe(
    files: Iterable[str | Path | DictConfig] = (), overrides: Iterable[str] = (), explicit: Mapping[str, Any] | None = None
) -> tuple[DictConfig, DictConfig]:
    """Merged and validated recipe (files < overrides < explicit dotted values), and the unvalidated merge."""
    raw = merge_layers(list(files), list(overrides), explicit)
    model = raw.get("model")
    if not model or model == "???":
        raise ConfigError("no head given: pass --model NAME or a config file with `model:`")
    where = f" (head {model})"
    return validate(train_schema(str(model)), raw, where), raw


def recipe_to_train_config(recipe: DictConfig, raw: DictConfig | None = None) -> TrainConfig:
    """A TrainConfig from a validated recipe. `head` keeps only the keys the recipe set (the head's
    dataclass fills the rest), so region prototypes are still added from the clip store."""
    plain = to_plain(recipe)
    kwargs: dict[str, Any] = {name: plain[name] for name in TOP_LEVEL}
    for group, keys in GROUPS.items():
        for key, field in keys.items():
            kwargs[field] = plain[group][key]
    kwargs["loss_weights"] = tuple(float(w) for w in kwargs["loss_weights"])
    data = dict(plain["data"])
    data["nearest_fill"] = {k: float(v) for k, v in (data.get("nearest_fill") or {}).items()}
    given_head = set((raw.get("head") or {}).keys()) if raw is not None else set(plain["head"])
    head = {k: v for k, v in plain["head"].items() if k in given_head}
    try:
        return TrainConfig(data=DataConfig(**data), head=head, **kwargs)
    except (TypeError, ValueError) as err:
        raise ConfigError(str(err)) from None


def build_train_config(
    files: Iterable[str | Path | DictConfig] = (), overrides: Iterable[str] = (), explicit: Mapping[str, Any] | None = None
) -> TrainConfig:
    from train.runs.profiles import fit_finetune, fit_window_encoder

    recipe, raw = load_recipe(files, overrides, explicit)
    cfg = recipe_to_train_config(recipe, raw)
    cfg.finetune = fit_finetune(cfg.finetune)  # a backbone top as deep as the profile's model holds
    cfg.head = fit_window_encoder(cfg.head)
    _check_head(cfg)
    return cfg


def _check_head(cfg: TrainConfig) -> None:
    """The head's own checks (e.g. hidden divisible by heads) at load time, as one line."""
    cls = _head_class(cfg.model)
    try:
        cls.from_dict(dict(cfg.head))
    except (TypeError, ValueError) as err:
        raise ConfigError(f"head {cfg.model}: {err}") from None


def train_config_to_recipe(cfg: TrainConfig, full_head: bool = True) -> dict[str, Any]:
    """The grouped (YAML) form of a TrainConfig: what the run folder keeps as config.yaml."""
    out = to_recipe_dict(cfg)
    head = dict(cfg.head)
    if full_head:
        head = _head_class(cfg.model).from_dict(head).to_dict()
    out["head"] = {k: v for k, v in head.items() if k not in HEAD_ONLY_IN_CODE}
    return out


def with_full_head(cfg: TrainConfig) -> TrainConfig:
    """A copy whose head states every option (its defaults filled), as config.yaml keeps it: two configs
    of the same recipe compare equal whether their heads were given in part or in full."""
    out = TrainConfig.from_dict(cfg.to_dict())
    try:
        head = _head_class(cfg.model).from_dict(dict(cfg.head)).to_dict()
    except ConfigError:  # not a head (an ensemble)
        return out
    out.head = {k: v for k, v in head.items() if k not in HEAD_ONLY_IN_CODE}
    return out


# where a run is written and on which device: not what it trains (same_recipe, `runs ls --diff`, resume warnings)
WHERE_NOT_WHAT = ("name", "runs_dir", "device")


def same_recipe(a: TrainConfig, b: TrainConfig) -> bool:
    """Whether two configs train the same run (name, runs dir and device aside), heads compared with their
    defaults filled (a run's config.yaml states every head key; a recipe only the ones it sets)."""
    return not changed_keys(a, b, WHERE_NOT_WHAT)


def resolved_keys(cfg: TrainConfig) -> dict[str, Any]:
    """The resolved recipe as dotted keys (optim.lr, data.window, head.hidden, ...), the head's defaults filled."""
    recipe = train_config_to_recipe(with_full_head(cfg), full_head=False)  # full_head=False never looks up a head
    return dotted(json.loads(json.dumps(recipe, default=str)))


def changed_keys(a: TrainConfig, b: TrainConfig, ignore: Iterable[str] = ()) -> list[tuple[str, Any, Any]]:
    """(dotted key, value in a, value in b) for every resolved key that differs (None where one lacks it)."""
    ka, kb = resolved_keys(a), resolved_keys(b)
    skip = set(ignore)
    return [(k, ka.get(k), kb.get(k)) for k in sorted(set(ka) | set(kb)) if k not in skip and ka.get(k) != kb.get(k)]


# what a run's name and identity do not depend on: where things are, the device, how long it trains, speed knobs
NOT_IDENTITY = (*WHERE_NOT_WHAT, "optim.epochs", "data.data_root", "data.videos", "data.labels",
                "data.cache_dir", "data.views", "data.views_dir", "data.cache_mb", "data.prefetch_batches",
                "data.align_workers")


def default_run_name(cfg: TrainConfig) -> str:
    """HEAD-FEATURES-DIGEST: the digest (6 hex) of every setting that makes the run what it is, so two
    variants get two names and the same recipe (longer or elsewhere) the same one."""
    keys = {k: v for k, v in resolved_keys(cfg).items() if k not in NOT_IDENTITY}
    digest = hashlib.sha256(json.dumps(keys, sort_keys=True, default=str).encode()).hexdigest()[:6]
    return f"{cfg.model}-{'+'.join(cfg.data.features)}-{digest}"


def resume_run_arg(resume: bool, overrides: list[str] | None) -> str:
    """RUN of `train --resume RUN`: the first override when it is no key=value, else ""."""
    return overrides[0] if resume and overrides and "=" not in overrides[0] else ""


def resume_files(
    resume: bool, files: list[str | Path], model: str, features: str, name: str, overrides: list[str],
    explicit: dict[str, Any],
) -> tuple[list[str | Path | DictConfig], list[str]]:
    """`train --resume RUN` (or `--name RUN --resume`) with no --config, --model or --features: the run's own
    config.yaml is the recipe (overrides and flags given now on top), its name and runs dir the run's.
    Otherwise the files and overrides as given."""
    given = resume_run_arg(resume, overrides)
    run = given or (name if resume else "")
    if not run or files or model or features:
        return list(files), list(overrides)
    from train.runs.folder import RunDir

    runs_dir = Path(explicit.get("runs_dir", TrainConfig.__dataclass_fields__["runs_dir"].default))
    rd = RunDir.resolve(run, runs_dir)
    explicit.update(name=rd.path.name, runs_dir=str(rd.path.parent))
    stored = TrainConfig.load(rd.config)
    try:
        recipe = train_config_to_recipe(stored)
    except ConfigError:
        recipe = to_recipe_dict(stored)
    rest = overrides[1:] if given else overrides
    return [OmegaConf.create(json.loads(json.dumps(recipe, default=str)))], list(rest)


def resolved_recipe_yaml(cfg: TrainConfig) -> str:
    """The resolved recipe as config.yaml holds it (every default filled), as YAML text (`configs show`)."""
    from recipes.loader import dump_yaml

    return dump_yaml(json.loads(json.dumps(train_config_to_recipe(cfg), default=str)))


def resolved_recipe_text(cfg: TrainConfig) -> str:
    """`train --print-config`: the resolved recipe as config.yaml will hold it, and the run's name."""
    name = cfg.name or default_run_name(cfg)
    return f"# resolved recipe; the run: {Path(cfg.runs_dir) / name}\n" + resolved_recipe_yaml(cfg)


def default_recipe_files(files: Iterable[str | Path], model: str, features: str) -> list[str | Path]:
    """The files to load: those given; with none and no --features, the head's default recipe
    configs/heads/MODEL.yaml (it names the head's inputs)."""
    files = list(files)
    if files or features:
        return files
    if not model:
        raise ConfigError("nothing to train: pass --model NAME (its default recipe names the inputs), or --config FILE")
    default = head_recipe_path(model)
    if default is None:
        _head_class(model)  # an unknown head gets its own message
        raise ConfigError(f"head '{model}' has no default recipe configs/{HEADS_DIR}/{model}.yaml: pass --features")
    return [default]


class MissingStore(FileNotFoundError):
    """A feature store a recipe needs is not in the cache."""


def make_command(feature: str, data_root: str, cache_dir: str) -> str:
    """The make command that writes a feature's store: `make extract` for an extractor's feature,
    `make export` for a stacked run's output."""
    from train.config import DataConfig

    defaults = DataConfig(features=["x"])
    where = "".join(
        f" {var}={shlex.quote(str(value))}" for var, value, default in (("DATA", data_root, defaults.data_root), ("CACHE", cache_dir, defaults.cache_dir))
        if str(value) != str(default)
    )
    try:
        from extract.base import get_extractor

        get_extractor(feature)
    except KeyError:
        return f"make export RUN=<run> NAME={feature}{where} (a trained run's per-frame output)"
    return f"make extract FEATURES={feature} SPLIT=train{where} (and SPLIT=val, SPLIT=test)"


def check_stores(cfg: TrainConfig) -> None:
    """The dataset is there and every input store exists; the first missing one ends the command with one
    line naming the feature and the command that makes it."""
    from cache.checks import require_dataset
    from cache.location import as_location
    from cache.store import store_exists, store_path

    data = cfg.data
    require_dataset(Path(data.data_root), data.videos and Path(data.videos), data.labels and Path(data.labels))
    from train.data.rows import split_feature

    for name in cfg.data.features:
        path = store_path(as_location(cfg.data.cache_dir), split_feature(name)[0])  # `store:row` reads STORE
        if not store_exists(path):
            raise MissingStore(
                f"feature '{name}' has no store at {path}; {_did_you_mean(name, cfg.data.cache_dir)}make it with: "
                f"{make_command(name, cfg.data.data_root, cfg.data.cache_dir)}"
            )


def _did_you_mean(name: str, cache_dir: str) -> str:
    """For a name that no extractor makes: "did you mean 'landmarks'? features: ...; " over the stores of the
    cache and the extractors' names (a typo), else nothing."""
    from cache.location import as_location
    from cache.names import suggest
    from cache.store import list_stores
    from extract.base import available

    if name in available():
        return ""
    try:
        stores = list(list_stores(as_location(cache_dir)))
    except OSError:
        stores = []
    return suggest(name, [*stores, *available()], "features") + "; if it is a run's output, "
