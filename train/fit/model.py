"""Build the head of a run from its config and the opened feature stores."""

from __future__ import annotations

import logging
from collections.abc import Mapping

from torch import nn

from train.config import TrainConfig
from train.data.sources import FeatureSource
from train.fit.head_inputs import head_options

log = logging.getLogger(__name__)

def build_model(cfg: TrainConfig, sources: Mapping[str, FeatureSource]) -> tuple[nn.Module, bool]:
    """The head named by cfg.model over the features' flattened dims; also says whether it has
    region prototypes. Imports only train.heads (never an extractor); with cfg.finetune, the backbone's
    model loaders from extract/ (extract.models, extract.wavlm_model) too."""
    from train.heads import build_head

    if getattr(cfg, "finetune", None):  # a trainable backbone top computes one feature (train/fit/finetune.py)
        from train.fit.finetune import build_finetune_model

        return build_finetune_model(cfg, sources)
    options, has_regions = head_options(cfg, sources)
    dims = {name: s.dim for name, s in sources.items()}
    model = build_head(cfg.model, dims, options)
    return model, has_regions
