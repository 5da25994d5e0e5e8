"""Checks of command-line values that need more than a type: each raises ValueError with one line that
names the option, the value and what is expected (the CLI turns it into a usage error, exit status 2)."""

from __future__ import annotations

import math
import re
import typing
from dataclasses import fields
from typing import Any

from train.config import parse_fill, parse_head_options

DEVICE_PATTERN = re.compile(r"^(auto|cpu|cuda|cuda:\d+)$")


def feature_list(text: str) -> list[str]:
    """`clip, wavlm` -> ['clip', 'wavlm']; at least one name."""
    names = [f.strip() for f in text.split(",") if f.strip()]
    if not names:
        raise ValueError(f"no feature named in {text!r}: give comma-separated names, e.g. clip,wavlm")
    return names


def model_refs(items: list[str] | None) -> dict[str, str]:
    """`FEATURE=REF` items -> {feature: ref}."""
    out: dict[str, str] = {}
    for item in items or []:
        name, sep, ref = item.partition("=")
        if not sep or not name.strip() or not ref.strip():
            raise ValueError(f"expected FEATURE=REF (e.g. clip=ViT-B-16/openai), got {item!r}")
        out[name.strip()] = ref.strip()
    return out


def loss_weights(text: str) -> tuple[float, float]:
    """`0.7,0.3` -> (0.7, 0.3): two non-negative numbers, not both zero."""
    parts = [p.strip() for p in text.split(",")]
    try:
        weights = tuple(float(p) for p in parts)
    except ValueError:
        raise ValueError(f"expected two numbers V,A (e.g. 0.5,0.5), got {text!r}") from None
    if len(weights) != 2 or not all(math.isfinite(w) and w >= 0 for w in weights) or sum(weights) == 0:
        raise ValueError(f"expected two non-negative numbers V,A, not both 0 (e.g. 0.5,0.5), got {text!r}")
    return weights  # type: ignore[return-value]


def fill(text: str, features: list[str] | None = None) -> dict[str, float]:
    """`clip=inf,ast=1` -> {'clip': inf, 'ast': 1.0}; seconds >= 0, names among `features` when given."""
    try:
        out = parse_fill(text)
    except ValueError:
        raise ValueError(f"expected FEATURE[=SECONDS],… (e.g. clip=inf,ast=1), got {text!r}") from None
    bad = [f"{k}={v}" for k, v in out.items() if not k or math.isnan(v) or v < 0]
    if bad:
        raise ValueError(f"fill distances are seconds >= 0 (or inf) for a named feature, got {', '.join(bad)}")
    if features is not None:
        unknown = sorted(set(out) - set(features))
        if unknown:
            raise ValueError(f"fill names feature(s) {unknown} that are not in --features {','.join(features)}")
    return out


def device(value: str) -> str:
    """auto | cpu | cuda | cuda:N; a CUDA device must exist."""
    if not DEVICE_PATTERN.match(value):
        raise ValueError(f"expected auto, cpu, cuda or cuda:N, got {value!r}")
    if value.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise ValueError(f"{value}: torch sees no CUDA device on this machine (use --device cpu or auto)")
        index = int(value.partition(":")[2] or 0)
        if index >= torch.cuda.device_count():
            raise ValueError(f"{value}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    return value


def head_name(model: str) -> str:
    from train.heads import HEADS

    if model not in HEADS:
        from cache.names import unknown

        raise ValueError(unknown("head", model, HEADS))
    return model


def head_options(model: str, items: list[str] | None) -> dict[str, Any]:
    """`key=value` items checked against the head's config dataclass: known keys, values of the field's
    type, and the head's own checks (e.g. hidden > 0)."""
    from train.heads import HEADS

    head_name(model)
    try:
        options = parse_head_options(items)
    except ValueError as err:
        raise ValueError(f"{err} (e.g. hidden=64)") from None
    config_class = HEADS[model].config_class
    hints = typing.get_type_hints(config_class)
    known = [f.name for f in fields(config_class)]
    for key, value in options.items():
        if key not in hints:
            raise ValueError(f"head {model!r} has no option {key!r}; options: {', '.join(known)}")
        if not _fits(value, hints[key]):
            raise ValueError(f"{key}={value!r}: head {model!r} expects {_type_name(hints[key])}")
    try:
        config_class.from_dict(dict(options))
    except (TypeError, ValueError) as err:
        raise ValueError(f"head {model!r}: {err}") from None
    return options


def _fits(value: Any, hint: Any) -> bool:
    origin = typing.get_origin(hint)
    if hint is Any:
        return True
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        return any(_fits(value, arm) for arm in typing.get_args(hint))
    if hint is type(None):
        return value is None
    if origin in (list, tuple):
        args = typing.get_args(hint)
        return isinstance(value, (list, tuple)) and (not args or all(_fits(v, args[0]) for v in value))
    if origin is dict:
        return isinstance(value, dict)
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if isinstance(hint, type):
        return isinstance(value, hint)
    return True


def _type_name(hint: Any) -> str:
    if isinstance(hint, type):
        return {"int": "an integer", "float": "a number", "bool": "true or false", "str": "a string"}.get(
            hint.__name__, hint.__name__)
    return str(hint).replace("typing.", "")


def split_list(text: str) -> list[str]:
    """`train,val` -> ['train', 'val']: known split names, at least one."""
    names = [s.strip() for s in text.split(",") if s.strip()]
    unknown = [s for s in names if s not in ("train", "val", "test")]
    if not names or unknown:
        raise ValueError(f"expected comma-separated splits among train, val, test, got {text!r}")
    return names


def positive(value: float) -> float:
    if not value > 0:
        raise ValueError(f"must be greater than 0, got {value}")
    return value
