"""The head registry: name -> head class (`register_head`), and `build_head`. The head modules register
themselves on import; `train.heads` imports them all."""

from __future__ import annotations

from typing import Any, Callable

from torch import nn

from .common import HeadConfig

HEADS: dict[str, type] = {}


def register_head(name: str) -> Callable[[type], type]:
    def deco(cls: type) -> type:
        if name in HEADS and HEADS[name] is not cls:
            raise ValueError(f"head {name!r} is already registered to {HEADS[name].__name__}")
        HEADS[name] = cls
        cls.name = name
        return cls

    return deco


def build_head(name: str, feature_dims: dict[str, int], config: dict[str, Any] | HeadConfig | None = None) -> nn.Module:
    """Build head `name`; `config` is a plain dict (unknown keys raise) or the head's config dataclass."""
    try:
        cls = HEADS[name]
    except KeyError:
        from cache.names import unknown

        raise KeyError(unknown("head", name, HEADS)) from None
    cfg = cls.config_class.from_dict(config)
    return cls(dict(feature_dims), cfg)
