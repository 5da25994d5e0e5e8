"""The standardization a run trains with, recorded in its folder (`standardization.json`; the statistics
themselves: train/data/standardize.py)."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence

from cache.manifest import Track
from train.config import TrainConfig
from train.data.sources import FeatureSource
from train.data.standardize import Standardizer, fit_standardizer
from train.runs.folder import RunDir


class MissingStandardization(ValueError):
    """A run trained with normalization has lost its `standardization.json`: its inputs cannot be rebuilt."""


def trained_normalized(run: RunDir) -> bool:
    """The run's config records that it trained with standardized inputs (`data.normalize` true); a run
    from before that setting existed trained on raw inputs."""
    try:
        config = json.loads(run.config.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    data = config.get("data") if isinstance(config, dict) else None
    return isinstance(data, dict) and data.get("normalize") is True


def recorded_standardizer(run: RunDir) -> Standardizer | None:
    """The statistics the run trained with (None: it trained on raw inputs); MissingStandardization when it
    trained with normalization and the record is gone, so that it is never scored on raw inputs."""
    recorded = Standardizer.load(run.standardization)
    if recorded is None and trained_normalized(run):
        raise MissingStandardization(
            f"{run.standardization} is missing: run {run.path.name} was trained on standardized inputs "
            "(data.normalize true) and cannot be read without its statistics (restore the file, or train again)"
        )
    return recorded


def run_standardizer(
    run: RunDir, cfg: TrainConfig, sources: Mapping[str, FeatureSource], train_tracks: Sequence[Track], resumed: bool
) -> Standardizer | None:
    """The statistics a run trains with, recorded in its folder: a resumed run keeps what it recorded (none
    for a run from before standardization); a new one fits them on its train tracks unless data.normalize
    is off."""
    if resumed:
        recorded = recorded_standardizer(run)
        if recorded is not None:
            recorded.check(sources)
        return recorded
    run.standardization.unlink(missing_ok=True)
    if not cfg.data.normalize:
        return None
    standardizer = fit_standardizer(sources, train_tracks)
    standardizer.save(run.standardization)
    return standardizer
