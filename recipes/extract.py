"""The extraction recipe: RunOptions' fields (extract/runner.py) plus `configs.<feature>`, each typed by
that extractor's own Config dataclass, validated in one step and turned into RunOptions.

    split: train
    features: [faces, mouth, wavlm, qwen3vl]
    profile: full
    model_refs: {wavlm: microsoft/wavlm-large}
    configs:
      wavlm: {layers: [-4, -3, -2, -1], combine: mean, window_s: 4.0, hop_s: 2.0}
      qwen3vl: {prompt: "...", n_frames: 16}
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Optional

from omegaconf import DictConfig, OmegaConf

from recipes.loader import ConfigError, merge_layers, nested, schema_class, validate


def _extractor(name: str) -> type:
    from extract.base import available, get_extractor

    try:
        return get_extractor(name)
    except KeyError:
        from cache.names import suggest

        raise ConfigError(f"unknown feature 'configs.{name}'; {suggest(name, available(), 'features')}") from None


def extract_schema(config_features: Iterable[str]) -> DictConfig:
    """RunOptions (cache_dir as a string) with a `configs` node per named feature."""
    from extract.runner import RunOptions

    names = list(dict.fromkeys(config_features))
    classes = {name: _extractor(name).Config for name in names}
    configs = dataclasses.make_dataclass(
        "ExtractorConfigs", [(n, c, dataclasses.field(default_factory=c)) for n, c in classes.items()]
    )
    base = schema_class(RunOptions, skip=("configs",), types={"cache_dir": str, "shard": Optional[tuple[int, int]]})
    specs = [(f.name, f.type, f) for f in dataclasses.fields(base)]
    specs = [(n, t, dataclasses.field(default=f.default) if f.default is not dataclasses.MISSING
              else dataclasses.field(default_factory=f.default_factory)) for n, t, f in specs]
    specs.append(("configs", configs, dataclasses.field(default_factory=configs)))
    return OmegaConf.structured(dataclasses.make_dataclass("ExtractRecipe", specs))


def build_run_options(
    files: Iterable[str | Path] = (), overrides: Iterable[str] = (), explicit: Mapping[str, Any] | None = None,
    defaults: Mapping[str, Any] | None = None,
) -> Any:
    """RunOptions from defaults < config files < the profile's `extract` settings < overrides < explicit
    values (dotted keys). The profile (`profile` of the merge, else of `defaults`, else full) lays its
    model-bound settings (configs/profiles/<profile>.yaml `extract:`, e.g. the tiny WavLM's top layers)
    over the files, so a recipe written for the real models runs on the profile's."""
    from cache.location import as_location
    from extract.runner import RunOptions
    from train.runs.profiles import load_profile

    files, overrides = list(files), list(overrides)

    def merged(*profile_layers: DictConfig) -> DictConfig:
        raw = merge_layers([*files, *profile_layers], overrides, explicit)
        return OmegaConf.merge(nested(defaults), raw) if defaults else raw

    raw = merged()
    profile = load_profile(str(raw.get("profile") or RunOptions.profile))
    if profile.extract:
        raw = merged(profile.layer("extract"))
    named = list((raw.get("configs") or {}).keys())
    for name in named:
        _extractor(str(name))
    recipe = validate(extract_schema(named), raw, " (extract)")
    try:
        obj = OmegaConf.to_object(recipe)  # builds the extractor configs (their own checks run here)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"extract config: {err}") from None
    values = {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)}
    values["configs"] = {n: getattr(obj.configs, n) for n in named}
    values["cache_dir"] = as_location(values["cache_dir"])
    if values.get("shard") is not None:
        values["shard"] = tuple(values["shard"])
    return RunOptions(**values)



def default_profile(data_root: str | Path) -> str:
    """The extraction profile when none is given: `tiny` on the built-in sample (it carries the sample's
    ground-truth index), `full` (real weights) on any other dataset."""
    from cache.sample_data import GROUND_TRUTH_INDEX

    return "tiny" if (Path(data_root) / GROUND_TRUTH_INDEX).is_file() else "full"
