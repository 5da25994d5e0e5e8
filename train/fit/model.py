"""Build the head of a run from its config and the opened feature stores."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping
from typing import Any

import numpy as np
from torch import nn

from train.config import TrainConfig
from train.data.sources import FeatureSource

log = logging.getLogger(__name__)

PROTOTYPE_FEATURE = "clip"
PROTOTYPE_EXTRA = "region_prototypes"


def region_prototypes(sources: Mapping[str, FeatureSource]) -> np.ndarray | None:
    """The (9, D_text) region prompt prototypes stored with the `clip` feature, if any."""
    source = sources.get(PROTOTYPE_FEATURE)
    if source is None:
        return None
    try:
        protos, _ = source.store.get_extra(PROTOTYPE_EXTRA)
    except KeyError:
        return None
    return np.asarray(protos, dtype=np.float32)


def _config_fields(model: str) -> set[str]:
    from train.heads import HEADS

    return {f.name for f in dataclasses.fields(HEADS[model].config_class)} if model in HEADS else set()


def keep_saved_block_cut(cfg: TrainConfig) -> None:
    """A run saved before `window_rows` existed (its head config lacks the key) cut each window's own length
    into blocks: reloaded, it keeps that cut (`window_rows: 0`), so its predictions do not change."""
    if "window_rows" not in cfg.head and "window_rows" in _config_fields(cfg.model):
        cfg.head["window_rows"] = 0


def head_options(cfg: TrainConfig, sources: Mapping[str, FeatureSource]) -> tuple[dict[str, Any], bool]:
    """Options passed to build_head, and whether region prototypes were added (they are, when the
    `clip` store carries them and lambda_region > 0)."""
    options = dict(cfg.head)
    if options.get("window_rows") is None and "window_rows" in _config_fields(cfg.model):
        options["window_rows"] = cfg.data.window  # a head cutting windows into blocks cuts the full window (blockpool)
    protos = region_prototypes(sources) if cfg.lambda_region > 0 else None
    if protos is not None and "region_prototypes" not in options:
        options["region_prototypes"] = protos
        return options, True
    return options, "region_prototypes" in options


def build_model(cfg: TrainConfig, sources: Mapping[str, FeatureSource]) -> tuple[nn.Module, bool]:
    """The head named by cfg.model over the features' flattened dims; also says whether it has
    region prototypes. Imports only train.heads (never an extractor); with cfg.finetune, the backbone's
    model loaders from extract/ (extract.models, extract.wavlm_model) too."""
    from train.heads import build_head

    if getattr(cfg, "finetune", None):  # a trainable backbone top computes one feature (train/fit/finetune.py)
        from train.fit.finetune import build_finetune_model, finetune_config

        backbone_input = finetune_config(cfg).feature
        options, has_regions = head_options(cfg, {n: s for n, s in sources.items() if n != backbone_input})
        return build_finetune_model(cfg, sources, options, has_regions)
    options, has_regions = head_options(cfg, sources)
    dims = {name: s.dim for name, s in sources.items()}
    model = build_head(cfg.model, dims, options)
    return model, has_regions
