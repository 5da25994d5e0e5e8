"""From the CLI to a recipe: which flags the user typed (they win over files and overrides) and where each
lands in the recipe. Flags left at their defaults are not applied, so a config file's values stand."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import math

import click
from omegaconf import OmegaConf

import train.fit.options as checks
from train.config import parse_fill, parse_head_options


def _csv(text: str) -> list[str]:
    return [part.strip() for part in str(text).split(",") if part.strip()]


# train flag -> (recipe key, conversion); `head` is special (key=value items under head.)
TRAIN_FLAGS: dict[str, tuple[str, Callable[[Any], Any]]] = {
    "model": ("model", str), "features": ("data.features", _csv), "epochs": ("optim.epochs", int),
    "lr": ("optim.lr", float), "weight_decay": ("optim.weight_decay", float), "batch_size": ("optim.batch_size", int),
    "window": ("data.window", int), "stride": ("data.stride", int), "level": ("data.level", str),
    "lambda_region": ("loss.lambda_region", float), "seed": ("seed", int), "name": ("name", str),
    "fill": ("data.nearest_fill", parse_fill), "loss_weights": ("loss.weights", lambda t: [float(w) for w in _csv(t)]),
    "max_steps": ("optim.max_steps_per_epoch", int), "cache_mb": ("data.cache_mb", float),
    "data_root": ("data.data_root", str), "videos": ("data.videos", str), "labels": ("data.labels", str),
    "cache_dir": ("data.cache_dir", str), "runs_dir": ("runs_dir", str), "device": ("device", str),
}

# extract flag -> (recipe key, conversion); face_weights and model fill model_refs, new_store on_mismatch
EXTRACT_FLAGS: dict[str, tuple[str, Callable[[Any], Any]]] = {
    "split": ("split", str), "features": ("features", _csv), "data_root": ("data_root", str),
    "videos": ("videos_dir", str), "labels": ("labels_dir", str), "cache_dir": ("cache_dir", str),
    "profile": ("profile", str), "device": ("device", str), "force": ("force", bool),
    "batch_size": ("batch_size", int), "models_dir": ("models_dir", str), "backend": ("backend", str),
    "address": ("address", str), "cpus_per_task": ("cpus_per_task", float), "gpus_per_task": ("gpus_per_task", float),
    "new_store": ("on_mismatch", lambda on: "new" if on else "refuse"),
}


def _at_least(low: float, kind: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """The check of a flag declared with Typer's `min=low`."""

    def check(value: Any) -> Any:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not kind(value) >= low:
            raise ValueError(f"expected a number{f' >= {low}' if low > -math.inf else ''}, got {value!r}")
        return kind(value)

    return check


def _fill_check(value: Any) -> Any:
    items = value.items() if isinstance(value, Mapping) else ()
    if not isinstance(value, Mapping):
        raise ValueError(f"expected FEATURE: SECONDS entries, got {value!r}")
    return checks.fill(",".join(f"{k}={v}" for k, v in items))


# recipe key -> the check its flag's value gets (Typer's min=, the flag's callback): an override of the key
# passes through the same check, so `optim.epochs=0` is the usage error `--epochs 0` is
KEY_CHECKS: dict[str, Callable[[Any], Any]] = {
    "optim.epochs": _at_least(1, int), "optim.batch_size": _at_least(1, int), "data.window": _at_least(1, int),
    "data.stride": _at_least(1, int), "optim.max_steps_per_epoch": _at_least(1, int),
    "optim.weight_decay": _at_least(0, float), "loss.lambda_region": _at_least(0, float),
    "optim.lr": lambda v: checks.positive(_at_least(-math.inf, float)(v)),
    "data.cache_mb": lambda v: checks.positive(_at_least(-math.inf, float)(v)),
    "loss.weights": lambda v: checks.loss_weights(",".join(str(w) for w in v) if isinstance(v, list) else str(v)),
    "data.nearest_fill": _fill_check,
}


def check_train_overrides(items: list[str] | None) -> None:
    """`key=value` overrides through the checks of the equivalent flags (KEY_CHECKS); a ValueError names
    the override (the CLI makes it a usage error, exit status 2)."""
    if not items:
        return
    from recipes.loader import dotted, parse_overrides

    plain = OmegaConf.to_container(parse_overrides(items), resolve=False)
    for key, value in dotted(plain, whole=("data.nearest_fill",)).items():
        check, checked = KEY_CHECKS.get(key), value
        if key.startswith("data.nearest_fill.") and key.count(".") == 2:
            check, checked = _fill_check, {key.rsplit(".", 1)[1]: value}
        if check is None or value is None or (isinstance(value, str) and "${" in value):
            continue
        try:
            check(checked)
        except (TypeError, ValueError) as err:
            raise ValueError(f"override {key}={value}: {err}") from None


def typed_flags(ctx: click.Context | None, values: Mapping[str, Any]) -> dict[str, Any]:
    """The options the user gave on the command line (all of them when called from Python, ctx None)."""
    if ctx is None:
        return {k: v for k, v in values.items() if v is not None}
    given = {}
    for name, value in values.items():
        source = ctx.get_parameter_source(name)
        if source is not None and source.name in ("COMMANDLINE", "ENVIRONMENT") and value is not None:
            given[name] = value
    return given


def explicit_train_values(flags: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, value in flags.items():
        if name == "head":
            out.update({f"head.{k}": v for k, v in parse_head_options(value).items()})
        elif name in TRAIN_FLAGS and value != "":
            key, convert = TRAIN_FLAGS[name]
            out[key] = convert(value)
    return out


def explicit_extract_values(flags: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, value in flags.items():
        if name in EXTRACT_FLAGS:
            key, convert = EXTRACT_FLAGS[name]
            out[key] = convert(value)
        elif name == "model":
            out.update({f"model_refs.{k}": v for k, v in (item.split("=", 1) for item in value)})
        elif name == "face_weights":
            out["model_refs.faces"] = str(value)
        elif name == "shard":
            from extract.runner import parse_shard

            out["shard"] = list(parse_shard(value))
    return out
