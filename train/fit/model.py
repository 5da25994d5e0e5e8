"""Build the head of a run from its config and the opened feature stores."""

from __future__ import annotations

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


def head_options(cfg: TrainConfig, sources: Mapping[str, FeatureSource]) -> tuple[dict[str, Any], bool]:
    """Options passed to build_head, and whether region prototypes were added (they are, when the
    `clip` store carries them and lambda_region > 0)."""
    options = dict(cfg.head)
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
        return build_finetune_model(cfg, sources)
    options, has_regions = head_options(cfg, sources)
    dims = {name: s.dim for name, s in sources.items()}
    model = build_head(cfg.model, dims, options)
    return model, has_regions


def build_finetune_model(cfg: TrainConfig, sources: Mapping[str, FeatureSource]) -> tuple[nn.Module, bool]:
    """Backbone (checked against its store) + the head over the other features and its output."""
    from train.fit.finetune import FinetuneModel, finetune_config
    from train.heads import build_head
    from train.heads.backbones import BackboneMismatch, check_crops_spec, load_clip_backbone, load_wavlm_backbone

    ft = finetune_config(cfg)
    name = ft.feature
    if name not in sources:
        raise ValueError(f"--finetune {ft.spec} trains on the {name} store: add {name} to --features")
    store = sources[name].store
    ref = ft.model_ref()
    prototypes = None
    if ft.family == "clip":
        bb = load_clip_backbone(ref, ft.top, ft.grad_checkpointing)
        try:
            _, spec = store.get_extra("input_spec")
        except KeyError:
            raise BackboneMismatch(f"{store.path} records no input_spec: not a face_crops store") from None
        check_crops_spec(spec, bb.spec, str(store.path))
        module, out_dim = bb.tower, bb.tower.out_dim
        if cfg.lambda_region > 0:
            prototypes = bb.prototypes
    else:
        stored = int(store.meta.config.get("top_layers", 0))
        bb = load_wavlm_backbone(ref, ft.top, stored, ft.grad_checkpointing)
        if store.meta.weights_digest and bb.digest != store.meta.weights_digest:
            raise BackboneMismatch(
                f"{store.path} was made by {store.meta.model_ref} (weights {store.meta.weights_digest}), but the "
                f"backbone is {ref} (weights {bb.digest}): the cached layers must come from the same model"
            )
        module, out_dim = bb.top, bb.top.out_dim
    options, has_regions = head_options(cfg, {n: s for n, s in sources.items() if n != name})
    dims = {n: s.dim for n, s in sources.items()}
    dims[name] = out_dim
    head = build_head(cfg.model, dims, options)
    model = FinetuneModel(head, module, ft, ref, prototypes)
    return model, has_regions or prototypes is not None
