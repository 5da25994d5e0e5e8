"""Whether a split is whole for a run: every track readable and with a complete group of every feature
the run reads. Predictions for a submission or a score must not quietly come from fewer inputs than the
run was trained on: a gap is an error unless the user allows it, and then it is written down."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

from train.data.dataset import TrackDataset

log = logging.getLogger(__name__)


class MissingFeatures(ValueError):
    """Tracks of a split lack a feature the run needs (or their video cannot be read)."""


@dataclass
class Coverage:
    split: str
    tracks: int
    missing: dict[str, list[str]] = field(default_factory=dict)  # feature -> tracks with no complete group
    unreadable: dict[str, str] = field(default_factory=dict)  # track -> why its video cannot be read
    allowed: bool = False  # gaps accepted with --allow-missing

    @property
    def complete(self) -> bool:
        return not self.missing and not self.unreadable

    def lines(self) -> list[str]:
        out = [
            f"{len(names)} of {self.tracks} {self.split} track(s) have no complete group of feature '{name}' "
            f"(e.g. {', '.join(names[:3])})"
            for name, names in self.missing.items()
        ]
        if self.unreadable:
            out.append(f"{len(self.unreadable)} {self.split} track(s) left out, their video cannot be read "
                       f"({', '.join(list(self.unreadable)[:3])})")
        return out

    def to_dict(self) -> dict:
        return {"split": self.split, "tracks": self.tracks, "complete": self.complete, "allow_missing": self.allowed,
                "missing": self.missing, "unreadable": self.unreadable}


def check_coverage(dataset: TrackDataset, split: str, allow_missing: bool = False) -> Coverage:
    """Refuse a split with gaps (naming how many tracks lack which feature) unless `allow_missing`;
    with it, warn and return the gaps so they can be recorded next to the result."""
    coverage = Coverage(
        split=split, tracks=len(dataset.tracks) + len(dataset.unreadable),
        missing={n: names for n, names in _gaps(dataset).items() if names},
        unreadable=dict(dataset.unreadable), allowed=allow_missing,
    )
    if coverage.complete:
        return coverage
    if not allow_missing:
        features = ",".join(coverage.missing) or "…"
        raise MissingFeatures(
            "; ".join(coverage.lines()) + f": extract them first (pipeline.py extract --split {split} "
            f"--features {features}), or pass --allow-missing to go on without them"
        )
    for line in coverage.lines():
        log.warning("--allow-missing: %s", line)
    return coverage


def write_sidecar(result_path: Path, coverage: Coverage, **extra) -> Path:
    """RESULT.json next to a result file: what it was made from and what was missing."""
    path = Path(result_path).with_name(Path(result_path).name + ".json")
    path.write_text(json.dumps({**extra, **coverage.to_dict()}, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return path


def read_sidecar(result_path: Path) -> dict:
    path = Path(result_path).with_name(Path(result_path).name + ".json")
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def gap_text(coverage: dict) -> str:
    """One line from a `Coverage` dict (`to_dict`, as recorded in a sidecar or an evaluation)."""
    parts = [f"{len(names)} track(s) without {feature}" for feature, names in coverage.get("missing", {}).items()]
    if coverage.get("unreadable"):
        parts.append(f"{len(coverage['unreadable'])} track(s) with an unreadable video left out")
    return ", ".join(parts)


def _gaps(dataset: TrackDataset) -> dict[str, list[str]]:
    """Missing groups less the expected ones: an audio feature has no group for a video without an
    audio stream (extraction logs that and moves on)."""
    from cache.media import MediaError
    from train.heads.common import is_audio_feature

    by_name = {t.name: t for t in dataset.tracks}

    def silent(name: str) -> bool:
        try:
            return not dataset.video_info(by_name[name]).has_audio
        except MediaError:
            return False

    return {
        feature: [n for n in names if not (is_audio_feature(feature) and silent(n))]
        for feature, names in dataset.missing_groups.items()
    }
