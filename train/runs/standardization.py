"""The standardization a run trains with, recorded in its folder (`standardization.json`; the statistics
themselves: train/data/standardize.py)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from cache.manifest import Track
from train.config import TrainConfig
from train.data.sources import FeatureSource
from train.data.standardize import Standardizer, fit_standardizer
from train.runs.folder import RunDir


def run_standardizer(
    run: RunDir, cfg: TrainConfig, sources: Mapping[str, FeatureSource], train_tracks: Sequence[Track], resumed: bool
) -> Standardizer | None:
    """The statistics a run trains with, recorded in its folder: a resumed run keeps what it recorded (none
    for a run from before standardization); a new one fits them on its train tracks unless data.normalize
    is off."""
    if resumed:
        recorded = Standardizer.load(run.standardization)
        if recorded is not None:
            recorded.check(sources)
        return recorded
    run.standardization.unlink(missing_ok=True)
    if not cfg.data.normalize:
        return None
    standardizer = fit_standardizer(sources, train_tracks)
    standardizer.save(run.standardization)
    return standardizer
