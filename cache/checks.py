"""Checks of a dataset as a whole, made before any work starts: the folders exist, no track is in two
splits, label files and videos agree on the frame count. Each kind of problem is one summary line;
its list is there for whoever asks (`status --verbose`)."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from cache.manifest import CHALLENGE_DIR, SPLIT_DIRS, Manifest, Track, read_test_tracks
from cache.media import MediaError, probe_video

log = logging.getLogger(__name__)


class DatasetError(ValueError):
    """A dataset that cannot be used as given: a missing folder, a track in two splits, an empty split."""


def dataset_dirs(data_root: Path, videos: Path | None = None, labels: Path | None = None) -> tuple[Path, Path]:
    """(videos folder, annotations folder), as load_manifest resolves them."""
    data_root = Path(data_root)
    return (Path(videos) if videos else data_root / "videos"), (Path(labels) if labels else data_root / "annotations")


def require_dataset(data_root: Path, videos: Path | None = None, labels: Path | None = None) -> None:
    """Refuse a data root (or annotations folder) that does not exist, before anything is created."""
    _, labels_dir = dataset_dirs(data_root, videos, labels)
    if labels is None and videos is None and not Path(data_root).is_dir():
        raise DatasetError(f"data root {data_root} does not exist")
    if not labels_dir.is_dir():
        raise DatasetError(f"no annotations folder at {labels_dir} (expected {CHALLENGE_DIR}/Train_Set, … below it)")


def check_dataset(data_root: Path, videos: Path | None = None, labels: Path | None = None) -> None:
    """What extract and train check before they create anything: the folders exist, no track is in two splits."""
    require_dataset(data_root, videos, labels)
    check_no_overlap(dataset_dirs(data_root, videos, labels)[1])


def empty_split_text(manifest: Manifest, split: str, data_root: Path) -> str:
    """Why a split has no track to work on, in one line."""
    unmatched = [t for t in manifest.no_video if t.split == split]
    if unmatched:
        return f"split '{split}' has no track with a video: {len(unmatched)} labelled track(s) have no video under {manifest.videos_dir}"
    return f"split '{split}' has no tracks under {data_root}"


def warn_tiny_profile(profile: str, data_root: Path) -> None:
    """The tiny profile's random small models give meaningless features: fine on the built-in sample, a
    warning anywhere else (it is never the default there)."""
    from cache.sample_data import GROUND_TRUTH_INDEX

    if profile == "tiny" and not (Path(data_root) / GROUND_TRUTH_INDEX).is_file():
        log.warning(
            "--profile tiny on %s: small randomly initialised models, meant for the built-in sample; "
            "these features carry no real information (use --profile full for real weights)", data_root,
        )


def split_overlaps(labels_dir: Path) -> dict[str, list[str]]:
    """Track names listed in more than one split (label file names and the test list; no file is parsed
    beyond the test list), with the splits they are in."""
    labels_dir = Path(labels_dir)
    seen: dict[str, list[str]] = {}
    for split, sub in SPLIT_DIRS.items():
        folder = labels_dir / CHALLENGE_DIR / sub
        for path in sorted(folder.glob("*.txt")) if folder.is_dir() else []:
            seen.setdefault(path.stem, []).append(split)
    for name in dict.fromkeys(read_test_tracks(labels_dir)[0]):
        seen.setdefault(name, []).append("test")
    return {name: splits for name, splits in seen.items() if len(splits) > 1}


def check_no_overlap(labels_dir: Path) -> None:
    """A track in two splits would be trained on and scored at once: an error naming the tracks."""
    overlaps = split_overlaps(labels_dir)
    if overlaps:
        raise DatasetError(f"{len(overlaps)} track(s) are in two splits: {overlap_text(overlaps)}")


def overlap_text(overlaps: dict[str, list[str]], limit: int = 5) -> str:
    items = [f"{name} ({', '.join(splits)})" for name, splits in list(overlaps.items())[:limit]]
    return ", ".join(items) + (", …" if len(overlaps) > limit else "")


@dataclass
class ProblemKind:
    """One kind of problem: a summary line, whether it stops extract/train, and the list."""

    summary: str
    items: list[str] = field(default_factory=list)
    error: bool = False


def frame_count_problems(tracks: list[Track]) -> tuple[list[str], list[str]]:
    """(label/frame count mismatches, unreadable videos), one line each, probing every video once."""
    mismatches: list[str] = []
    unreadable: dict[Path, str] = {}
    probed: dict[Path, int] = {}
    for track in tracks:
        if track.video in unreadable:
            continue
        if track.video not in probed:
            try:
                probed[track.video] = probe_video(track.video).n_frames
            except MediaError as err:
                unreadable[track.video] = str(err)
                continue
        if track.n_frames is not None and track.n_frames != probed[track.video]:
            what = "label lines" if track.labels is not None else "submission rows"
            mismatches.append(f"{track.name}: {track.n_frames} {what}, {probed[track.video]} frames in {track.video.name}")
    return mismatches, list(unreadable.values())


def dataset_problems(manifest: Manifest, labels_dir: Path, probe: bool = True) -> list[ProblemKind]:
    """Every kind of problem of a dataset, one entry per kind present."""
    kinds: list[ProblemKind] = []
    overlaps = split_overlaps(labels_dir)
    if overlaps:
        kinds.append(ProblemKind(
            f"{len(overlaps)} track(s) are in two splits (extract and train refuse): {overlap_text(overlaps)}",
            [f"{name}: in {', '.join(splits)}" for name, splits in overlaps.items()], error=True,
        ))
    if manifest.label_errors:
        kinds.append(ProblemKind(f"{len(manifest.label_errors)} label file(s) cannot be used (left out)", list(manifest.label_errors)))
    if manifest.no_video:
        where = manifest.videos_dir if manifest.videos_dir is not None else "the videos folder"
        missing = "" if manifest.videos_dir is None or manifest.videos_dir.is_dir() else " (no such folder)"
        kinds.append(ProblemKind(
            f"{len(manifest.no_video)} track(s) have no video under {where}{missing}",
            [f"{t.name} ({t.split}): no {t.video.stem}.mp4 or .avi" for t in manifest.no_video],
        ))
    if probe:
        mismatches, unreadable = frame_count_problems(manifest.tracks)
        if unreadable:
            kinds.append(ProblemKind(f"{len(unreadable)} video(s) cannot be read (their tracks are left out of training)", unreadable))
        if mismatches:
            kinds.append(ProblemKind(
                f"{len(mismatches)} track(s) have a label count that differs from their video's frame count "
                "(aligned by time; frames beyond the video have no features)", mismatches,
            ))
    return kinds
