"""Per-dimension standardization of the features a head sees: (x - mean) / std.

Features come at their own scales (a mouth area of 1e-3 next to a pose in degrees, a counter, CLIP
embeddings of 0.03): without standardization the largest dimension dominates the head's input projection.

* **Statistics**: mean and std of every (flattened) dimension over the valid, finite stored rows of the
  groups the train split's tracks read (for a `--unit video` store, the train tracks' videos). They are
  computed once per (store fingerprint, train groups and their content) and kept in the store as the extra
  `standardization_<digest>` ((2, D) float64: mean, std), the digest over each group's name and
  `content_digest`: a group re-extracted with other rows gives another key, so the statistics are
  computed again, never reused stale. The extra records the groups' identities (`derived_from`), so
  `pipeline.py verify` reports and removes kept statistics whose groups have changed since. A second run
  on the same split reads them back; a store that cannot be written to (read-only, remote) only costs the
  recomputation.
* **Constant dimensions** (std within float32 round-off of the mean) are centred, not scaled (std 1), and
  reported.
* **Application**: one tensor op on each batch, on the device (`train.data.tensors.standardize_tensors`, with
  `Standardizer.affine`): the dataset's batches carry the statistics and stay raw until then, so a batch
  from the aligned views costs reads only. Frames without a value stay 0 (their mask says so). Training,
  evaluation, prediction and export all read batches through `to_tensors`, which applies it.
* **The run records what it used** (`standardization.json` in the run folder), so evaluate/predict/export
  of that run, on any data, apply the same statistics. `data.normalize: false` turns it off; a run folder
  without the file is read without standardization only when its config says it trained without it
  (normalize false, or a run from before `normalize` existed); a run trained with normalization whose file
  is gone is refused (train/runs/standardization.py).
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cache.manifest import Track
from cache.store import DERIVED_FROM, STANDARDIZATION_EXTRA, FeatureStore
from train.data.sources import FeatureSource

log = logging.getLogger(__name__)

STATS_VERSION = 2  # 2: keyed by the groups' content digests
EXTRA_PREFIX = STANDARDIZATION_EXTRA
CONSTANT_RTOL = 8 * float(np.finfo(np.float32).eps)  # std this small against |mean| is round-off
CONSTANT_ATOL = 1e-12


class StandardizationMismatch(ValueError):
    """Recorded statistics that do not fit the feature stores now opened."""


@dataclass
class FeatureStats:
    """Mean and std per dimension of one feature (std 1 on constant dimensions)."""

    mean: np.ndarray  # (D,) float64
    std: np.ndarray  # (D,) float64, > 0
    constant: list[int]  # dimensions left unscaled
    rows: int  # rows the statistics were computed over
    fingerprint: str  # of the store they were computed on
    tracks: str  # digest of the groups they were computed on

    def to_dict(self) -> dict[str, Any]:
        return {
            "mean": self.mean.tolist(), "std": self.std.tolist(), "constant": list(self.constant),
            "rows": self.rows, "fingerprint": self.fingerprint, "tracks": self.tracks, "version": STATS_VERSION,
        }

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> "FeatureStats":
        return cls(
            mean=np.asarray(raw["mean"], dtype=np.float64), std=np.asarray(raw["std"], dtype=np.float64),
            constant=[int(i) for i in raw["constant"]], rows=int(raw["rows"]), fingerprint=str(raw["fingerprint"]),
            tracks=str(raw["tracks"]),
        )


def groups_digest(groups: Sequence[str] | Mapping[str, str]) -> str:
    """Digest of group names, or of {group: content identity} (then a group rewritten with other rows
    changes it)."""
    items = sorted(f"{g}={groups[g]}" for g in groups) if isinstance(groups, Mapping) else sorted(set(groups))
    return hashlib.sha256("\n".join(items).encode()).hexdigest()[:16]


def train_groups(source: FeatureSource, tracks: Sequence[Track]) -> list[str]:
    """The store groups the tracks read (complete ones only), each once."""
    present = set(source.store.units())
    return sorted({source.group_for(t) for t in tracks} & present)


def compute_stats(source: FeatureSource, groups: Sequence[str] | Mapping[str, str]) -> FeatureStats:
    """Mean and std over the valid, finite rows of `groups` (float64 sums around a shift, one group at a time)."""
    shift = None
    total = np.zeros(source.dim)
    squares = np.zeros(source.dim)
    rows = 0
    for group in groups:
        raw = source.read(group)  # `store:row`: that row only
        flat = raw.values.reshape(len(raw.values), -1).astype(np.float64)
        keep = np.asarray(raw.valid, dtype=bool) & np.isfinite(flat).all(axis=1)
        x = flat[keep]
        if not len(x):
            continue
        if shift is None:
            shift = x.mean(axis=0)
        d = x - shift
        total += d.sum(axis=0)
        squares += (d * d).sum(axis=0)
        rows += len(x)
    if shift is None:
        raise ValueError(
            f"feature '{source.name}': no valid rows in the {len(groups)} train group(s) to standardize on "
            "(set data.normalize false to train on raw values)"
        )
    mean_d = total / rows
    mean = shift + mean_d
    std = np.sqrt(np.maximum(squares / rows - mean_d**2, 0.0))
    constant = std <= np.maximum(CONSTANT_ATOL, CONSTANT_RTOL * np.abs(mean))
    return FeatureStats(
        mean=mean, std=np.where(constant, 1.0, std), constant=np.flatnonzero(constant).tolist(), rows=rows,
        fingerprint=source.fingerprint, tracks=groups_digest(groups),
    )


def cached_stats(source: FeatureSource, tracks: Sequence[Track]) -> FeatureStats:
    """The statistics kept in the store for this (fingerprint, train groups), computed and kept when absent."""
    groups = source.store.group_identities(train_groups(source, tracks))
    key = EXTRA_PREFIX + (f"{source.row}_" if source.row is not None else "") + groups_digest(groups)  # rows differ
    try:
        array, attrs = source.store.get_extra(key)
        if (attrs.get("fingerprint") == source.fingerprint and attrs.get("version") == STATS_VERSION
                and array.shape == (2, source.dim) and attrs.get(DERIVED_FROM) == dict(groups)):
            return FeatureStats(mean=array[0], std=array[1], constant=list(attrs["constant"]), rows=int(attrs["rows"]),
                                fingerprint=source.fingerprint, tracks=attrs["tracks"])
    except Exception as err:  # noqa: BLE001 - absent (KeyError) or being rewritten by another run: recompute
        log.debug("feature %s: no usable kept statistics %s (%s)", source.name, key, err)
    stats = compute_stats(source, groups)
    attrs = {k: v for k, v in stats.to_dict().items() if k not in ("mean", "std")}
    attrs[DERIVED_FROM] = dict(groups)
    try:
        FeatureStore.create_or_open(source.store.path, source.store.meta).put_extra(
            key, np.stack([stats.mean, stats.std]), attrs
        )
    except Exception as err:  # noqa: BLE001 - a store we cannot write to only costs the recomputation
        log.info("feature %s: standardization statistics not kept in %s (%s)", source.name, source.store.path, err)
    return stats


@dataclass
class Standardizer:
    """Statistics per feature name; `apply` standardizes an aligned (T, D) array of that feature."""

    stats: dict[str, FeatureStats] = field(default_factory=dict)
    _affine: dict[tuple[str, str], Any] = field(default_factory=dict, repr=False, compare=False)

    def affine(self, name: str, device: Any) -> "tuple[Any, Any] | None":
        """(1/std, -mean/std) of a feature as float32 tensors on `device` (made once per device), or None
        for a feature the statistics do not cover."""
        stats = self.stats.get(name)
        if stats is None:
            return None
        key = (name, str(device))
        if key not in self._affine:
            import torch

            scale = 1.0 / stats.std
            self._affine[key] = (torch.as_tensor(scale, dtype=torch.float32, device=device),
                                 torch.as_tensor(-stats.mean * scale, dtype=torch.float32, device=device))
        return self._affine[key]

    def check(self, sources: Mapping[str, FeatureSource]) -> None:
        """Refuse statistics made on other stores (fingerprint) or of another width."""
        for name, source in sources.items():
            stats = self.stats.get(name)
            if stats is None:
                continue
            if stats.fingerprint != source.fingerprint or len(stats.mean) != source.dim:
                raise StandardizationMismatch(
                    f"feature '{name}': the run's standardization was computed on store fingerprint "
                    f"{stats.fingerprint} (dim {len(stats.mean)}), {source.store.path} has {source.fingerprint} (dim {source.dim})"
                )

    def to_dict(self) -> dict[str, Any]:
        return {name: stats.to_dict() for name, stats in self.stats.items()}

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> "Standardizer":
        return cls({name: FeatureStats.from_dict(s) for name, s in raw.items()})

    def save(self, path: Path) -> None:
        tmp = Path(path).with_suffix(".tmp")
        tmp.write_text(json.dumps(self.to_dict(), sort_keys=True) + "\n", encoding="utf-8")
        tmp.replace(path)

    @classmethod
    def load(cls, path: Path) -> "Standardizer | None":
        """The statistics recorded in `path`, None when there is no such file (ValueError: unreadable)."""
        path = Path(path)
        if not path.is_file():
            return None
        try:
            return cls.from_dict(json.loads(path.read_text(encoding="utf-8")))
        except (ValueError, KeyError, TypeError, AttributeError) as err:
            raise ValueError(f"{path}: unreadable standardization record ({type(err).__name__}: {err})") from None


def fit_standardizer(sources: Mapping[str, FeatureSource], train_tracks: Sequence[Track]) -> Standardizer:
    """Statistics of every feature on the train tracks; constant dimensions are reported."""
    stats = {name: cached_stats(source, train_tracks) for name, source in sources.items()}
    for name, s in stats.items():
        if s.constant:
            shown = ", ".join(map(str, s.constant[:8])) + (" …" if len(s.constant) > 8 else "")
            log.warning("feature %s: %d of %d dimension(s) constant on the train split (%s): centred, not scaled",
                        name, len(s.constant), len(s.mean), shown)
    return Standardizer(stats)


