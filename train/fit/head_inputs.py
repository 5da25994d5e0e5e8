"""What a head is built with besides its config: the region prompt prototypes stored with the `clip`
feature (used by the plain model builder and the fine-tuning one alike)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from train.config import TrainConfig
from train.data.sources import FeatureSource

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
