"""Profiles (configs/profiles/<name>.yaml): the settings that fit a profile's models.

A profile chooses the models (`full`: the real weights; `tiny`: small random models of the same classes,
extract/models.py); its file states every setting bound to those models:

    train:           laid over every train step of `reproduce` (the sample on CPU in minutes)
    extract:         laid over every extraction with this profile: after --config files, before key=value
                     overrides and typed flags (e.g. configs.wavlm_hidden.top_layers: the tiny WavLM's depth)
    backbone_depth:  {clip: N, wavlm: N} the layers of each trainable backbone

A trainable top of K layers (`--finetune clip:K|wavlm:K`, the `wavlm_top` window encoder) must fit the
full model (K deeper than it is an error on every profile); on a profile whose backbone is shallower it
trains that backbone's whole depth instead, with a note (`fit_top`). An explicit model reference (`ref`)
is never fitted: its own depth is checked when it loads.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from omegaconf import DictConfig, OmegaConf

from recipes.loader import CONFIGS_DIR, ConfigError, load_file

log = logging.getLogger(__name__)

PROFILES_DIR = CONFIGS_DIR / "profiles"
FULL = "full"
SECTIONS = ("train", "extract", "backbone_depth")
BACKBONES = {"clip": ("CLIP visual tower", "blocks"), "wavlm": ("WavLM", "layers")}  # family: (name, what its depth counts)


@dataclass(frozen=True)
class Profile:
    name: str
    train: dict[str, Any] = field(default_factory=dict)
    extract: dict[str, Any] = field(default_factory=dict)
    backbone_depth: dict[str, int] = field(default_factory=dict)

    def layer(self, section: str) -> DictConfig:
        """One section as a config layer (to merge with recipe files)."""
        return OmegaConf.create(getattr(self, section))


@lru_cache(maxsize=None)
def load_profile(name: str) -> Profile:
    """The profile's file; a profile without one lays nothing over (the extractors refuse an unknown profile)."""
    path = PROFILES_DIR / f"{name}.yaml"
    if not path.is_file():
        return Profile(name)
    raw = OmegaConf.to_container(load_file(path), resolve=True)
    unknown = sorted(set(raw) - set(SECTIONS))
    if unknown:
        raise ConfigError(f"{path}: unknown section(s) {unknown}; sections: {', '.join(SECTIONS)}")
    depth = raw.get("backbone_depth") or {}
    bad = {k: v for k, v in depth.items() if k not in BACKBONES or not isinstance(v, int) or v < 1}
    if bad:
        raise ConfigError(f"{path}: backbone_depth must give whole numbers >= 1 for {', '.join(BACKBONES)}, got {bad}")
    return Profile(name, dict(raw.get("train") or {}), dict(raw.get("extract") or {}), dict(depth))


def fit_top(family: str, top: int, profile: str, what: str = "") -> int:
    """K layers of backbone `family` for the profile's model: K deeper than the full model is an error; K
    deeper than the profile's model becomes that model's depth, with a note naming the profile file."""
    full = load_profile(FULL).backbone_depth.get(family)
    name, unit = BACKBONES.get(family, (family, "layers"))
    what = what or f"{family}:{top}"
    if full is not None and top > full:
        raise ConfigError(f"{what} asks for the top {top} {unit}, but the full {name} has {full}")
    depth = load_profile(profile).backbone_depth.get(family)
    if depth is None or top <= depth:
        return top
    log.warning("profile %s: %s trains the top %d %s, all of the %s %s's (configs/profiles/%s.yaml backbone_depth.%s)",
                profile, what, depth, unit, profile, name, profile, family)
    return depth


def fit_finetune(finetune: dict[str, Any]) -> dict[str, Any]:
    """A run's `finetune` settings with the spec's K fitted to the profile's backbone (no explicit ref)."""
    from train.heads.backbones import parse_spec

    if not finetune or finetune.get("ref") or "spec" not in finetune:
        return finetune
    family, top = parse_spec(finetune["spec"])
    if top is None:  # clip:all
        return finetune
    fitted = fit_top(family, top, str(finetune.get("profile", FULL)), f"--finetune {finetune['spec']}")
    return {**finetune, "spec": f"{family}:{fitted}"}


def fit_window_encoder(head: dict[str, Any]) -> dict[str, Any]:
    """A head's `wavlm_top` window encoder options with `top` and `stored` fitted to the profile's WavLM."""
    if head.get("window_encoder") != "wavlm_top":
        return head
    options = dict(head.get("window_encoder_options") or {})
    if options.get("ref"):
        return head
    import inspect

    from train.heads.blockpool import WINDOW_ENCODERS

    default_top = inspect.signature(WINDOW_ENCODERS["wavlm_top"]).parameters["top"].default
    profile = str(options.get("profile", FULL))
    changed = False
    for key in ("top", "stored"):
        value = options.get(key, default_top if key == "top" else None)
        if value is None:
            continue
        fitted = fit_top("wavlm", int(value), profile, f"window encoder wavlm_top {key}={value}")
        if fitted != value:
            options[key], changed = fitted, True
    return {**head, "window_encoder_options": options} if changed else head
