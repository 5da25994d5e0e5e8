"""The Aff-Wild2 manifest: which tracks exist, their split, video file and labels.

Layout (see docs/DESIGN.md, "Aff-Wild2 facts"):
  <labels>/VA_Estimation_Challenge/{Train_Set,Validation_Set}/<track>.txt
  <videos>/**/<video>.{mp4,avi}   where <video> is <track> less a `_left`/`_right` suffix
  <labels>/ a test names list or the challenge's sample submission file
"""

from __future__ import annotations

import csv
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

LABEL_HEADER = "valence,arousal"
SUBMISSION_HEADER = "image_location,valence,arousal"
INVALID_LABEL = -5.0
SPLIT_DIRS = {"train": "Train_Set", "val": "Validation_Set"}
SPLITS = ("train", "val", "test")
SIDE_SUFFIXES = ("_left", "_right")
VIDEO_EXTENSIONS = (".mp4", ".avi")
CHALLENGE_DIR = "VA_Estimation_Challenge"


class LabelFileError(ValueError):
    """A label file that cannot be used; the message names the file and line."""

    def __init__(self, path: Path, line: int | None, reason: str):
        self.path, self.line, self.reason = Path(path), line, reason
        where = f"{path}:{line}" if line is not None else str(path)
        super().__init__(f"{where}: {reason}")


@dataclass(frozen=True)
class Labels:
    """Per-frame labels of one track: values (T, 2) as (valence, arousal) and valid (T,)."""

    values: np.ndarray
    valid: np.ndarray

    def __len__(self) -> int:
        return len(self.values)


def first_difference(expected: str, got: str) -> str:
    """Where two texts first differ, by character and code point: what makes two headers that print alike
    tell apart (a BOM, a non-breaking space, a Cyrillic letter)."""
    for i, (a, b) in enumerate(zip(expected, got)):
        if a != b:
            return f"character {i + 1} is U+{ord(b):04X} {b!r}, expected U+{ord(a):04X} {a!r}"
    if len(got) > len(expected):
        extra = got[len(expected)]
        return f"extra character {len(expected) + 1}: U+{ord(extra):04X} {extra!r}"
    return f"ends after {len(got)} of {len(expected)} characters"


def parse_label_file(path: Path) -> Labels:
    """Read one VA label file. Line k (1-based, after the header) is frame k.

    `-5,-5` marks an invalid frame; the check compares parsed floats with -5 exactly,
    so tiny values such as -5.2e-18 stay valid.
    """
    path = Path(path)
    with open(path, encoding="utf-8-sig") as handle:  # a UTF-8 BOM (Windows editors) is not part of the header
        lines = handle.read().splitlines()
    if not lines or lines[0].strip() != LABEL_HEADER:
        got = lines[0].strip() if lines else ""
        shown = f"{got[:40]!r} ({first_difference(LABEL_HEADER, got)})" if lines else "an empty file"
        raise LabelFileError(path, 1, f"header must be exactly '{LABEL_HEADER}', got {shown}")
    rows = lines[1:]
    while rows and not rows[-1].strip():  # a trailing blank line is not a frame
        rows.pop()
    values = np.empty((len(rows), 2), dtype=np.float32)
    valid = np.ones(len(rows), dtype=bool)
    for i, row in enumerate(rows):
        lineno = i + 2
        parts = row.split(",")
        if len(parts) != 2:
            raise LabelFileError(path, lineno, f"expected 2 comma-separated values, got '{row[:40]}'")
        try:
            v, a = float(parts[0]), float(parts[1])
        except ValueError:
            raise LabelFileError(path, lineno, f"non-numeric value in '{row[:40]}'") from None
        if not (math.isfinite(v) and math.isfinite(a)):
            raise LabelFileError(path, lineno, f"non-finite value in '{row[:40]}'")
        v_invalid, a_invalid = v == INVALID_LABEL, a == INVALID_LABEL
        if v_invalid != a_invalid:
            raise LabelFileError(path, lineno, "a lone -5: invalid frames must be '-5,-5'")
        if v_invalid:
            valid[i] = False
            values[i] = 0.0
            continue
        if not (-1.0 <= v <= 1.0 and -1.0 <= a <= 1.0):
            raise LabelFileError(path, lineno, f"value outside [-1, 1] in '{row[:40]}'")
        values[i] = (v, a)
    if len(rows) == 0:
        raise LabelFileError(path, None, "no frames after the header")
    return Labels(values=values, valid=valid)


def video_stem(track: str) -> str:
    """The video a track comes from: the track name less a `_left`/`_right` suffix only."""
    for suffix in SIDE_SUFFIXES:
        if track.endswith(suffix):
            return track[: -len(suffix)]
    return track


def track_side(track: str) -> str | None:
    """'left' or 'right' for a two-person track, None for a single-person one."""
    for suffix in SIDE_SUFFIXES:
        if track.endswith(suffix):
            return suffix[1:]
    return None


def find_videos(root: Path) -> dict[str, Path]:
    """Map video stem to file for every .mp4/.avi anywhere under root."""
    found: dict[str, Path] = {}
    root = Path(root)
    if not root.is_dir():
        return found
    for path in sorted(root.rglob("*")):
        if path.suffix.lower() not in VIDEO_EXTENSIONS or not path.is_file():
            continue
        if path.stem in found:
            log.warning("two videos named %s: using %s, ignoring %s", path.stem, found[path.stem], path)
            continue
        found[path.stem] = path
    return found


@dataclass
class Track:
    """One labelled face track: a video, an optional side, and (for train/val) its labels."""

    name: str
    split: str
    video: Path
    label_path: Path | None = None
    labels: Labels | None = None
    n_frames: int | None = None  # label frames (train/val) or submission rows (test)
    # the video's unit name when it is not the name less `_left`/`_right` (a bare video is its own unit:
    # `x_left.mp4` is the video x_left, not the left face of x.mp4)
    unit: str | None = None

    @property
    def video_stem(self) -> str:
        return self.unit if self.unit is not None else video_stem(self.name)

    @property
    def side(self) -> str | None:
        return None if self.unit is not None else track_side(self.name)


@dataclass
class Manifest:
    tracks: list[Track] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)  # every problem, one line each
    test_order: list[str] = field(default_factory=list)
    submission_file: Path | None = None
    # the same problems by kind: labelled tracks whose video is not found (their labels are read, so
    # `status` can still count them; `video` is where it was looked for), and unusable label files
    no_video: list[Track] = field(default_factory=list)
    label_errors: list[str] = field(default_factory=list)
    videos_dir: Path | None = None

    def split(self, name: str) -> list[Track]:
        return [t for t in self.tracks if t.split == name]

    def track(self, name: str) -> Track:
        for t in self.tracks:
            if t.name == name:
                return t
        raise KeyError(name)

    def videos(self, split: str | None = None) -> dict[str, list[Track]]:
        """Tracks grouped by their video stem (both tracks of a two-person video together)."""
        grouped: dict[str, list[Track]] = {}
        for t in self.tracks if split is None else self.split(split):
            grouped.setdefault(t.video_stem, []).append(t)
        return grouped


def read_test_tracks(labels_root: Path) -> tuple[list[str], dict[str, int], Path | None]:
    """Test track names (in order) and, when a sample submission file is present, their row counts.

    Looks directly under labels_root for the sample submission (first line is the submission
    header) or else a names list (a file with 'test' in its name, one track per line).
    """
    labels_root = Path(labels_root)
    candidates = sorted(p for p in labels_root.glob("*") if p.is_file() and p.suffix in (".txt", ".csv"))
    for path in candidates:
        with open(path, encoding="utf-8-sig") as handle:
            first = handle.readline().strip()
        if first == SUBMISSION_HEADER:
            order: list[str] = []
            counts: dict[str, int] = {}
            with open(path, encoding="utf-8-sig") as handle:
                reader = csv.reader(handle)
                next(reader)
                for row in reader:
                    if not row:
                        continue
                    track = row[0].rsplit("/", 1)[0]
                    if track not in counts:
                        order.append(track)
                        counts[track] = 0
                    counts[track] += 1
            return order, counts, path
    for path in candidates:
        if "test" in path.name.lower():
            names = [line.strip() for line in path.read_text(encoding="utf-8-sig").splitlines() if line.strip()]
            return names, {}, None
    return [], {}, None


def load_manifest(
    data_root: Path,
    videos_dir: Path | None = None,
    labels_dir: Path | None = None,
    splits: tuple[str, ...] = SPLITS,
) -> Manifest:
    """Build the manifest. Malformed label files and tracks without a video are reported
    in `Manifest.errors` (one line each, naming the file) and left out; the rest loads."""
    data_root = Path(data_root)
    videos_dir = Path(videos_dir) if videos_dir else data_root / "videos"
    labels_dir = Path(labels_dir) if labels_dir else data_root / "annotations"
    videos = find_videos(videos_dir)
    manifest = Manifest(videos_dir=videos_dir)

    def add(name: str, split: str, **kwargs) -> None:
        stem = video_stem(name)
        if stem not in videos:
            manifest.errors.append(f"{name}: no video '{stem}.mp4' or '{stem}.avi' under {videos_dir}")
            manifest.no_video.append(Track(name=name, split=split, video=videos_dir / f"{stem}.mp4", **kwargs))
            return
        manifest.tracks.append(Track(name=name, split=split, video=videos[stem], **kwargs))

    for split in splits:
        if split == "test":
            continue
        split_dir = labels_dir / CHALLENGE_DIR / SPLIT_DIRS[split]
        if not split_dir.is_dir():
            continue
        for path in sorted(split_dir.glob("*.txt")):
            try:
                labels = parse_label_file(path)
            except (LabelFileError, UnicodeDecodeError) as err:
                manifest.label_errors.append(str(err) if isinstance(err, LabelFileError) else f"{path}: {err}")
                manifest.errors.append(manifest.label_errors[-1])
                continue
            add(path.stem, split, label_path=path, labels=labels, n_frames=len(labels))
    if "test" in splits:
        order, counts, submission = read_test_tracks(labels_dir)
        manifest.test_order = order
        manifest.submission_file = submission
        for name in order:
            add(name, "test", n_frames=counts.get(name))
    for err in manifest.label_errors:
        log.error(err)
    if manifest.no_video:  # one line, however many (a label release without its videos has hundreds)
        names = [t.name for t in manifest.no_video]
        log.error(
            "%d track(s) have no video under %s%s: %s%s", len(names), videos_dir,
            "" if videos_dir.is_dir() else " (no such folder)", ", ".join(names[:5]), ", …" if len(names) > 5 else "",
        )
    return manifest
