"""From the CLI to a recipe: which flags the user typed (they win over files and overrides) and where each
lands in the recipe. Flags left at their defaults are not applied, so a config file's values stand."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import click

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
