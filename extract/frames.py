"""What the runner does with a video's presented frames after decoding: rows put on the container's
clock, rows at undecodable frames made invalid, the frame-time record kept in the cache, and the
"partial" verdict for the summary.

Frame and crop extractors work on frame indices: they see frame k at [k/fps, (k+1)/fps) (the frame-index
clock, with the container's average fps) and plan windows and segments on it. `to_container_clock` maps
their rows onto the presented frames' real times afterwards (frame k's [k/fps, (k+1)/fps) becomes
[pts_k, pts_k+1) exactly; a window spanning frames a..b spans their real times). For a constant-rate
video both clocks are the same and nothing changes.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

import numpy as np

from cache.frametimes import is_constant_rate, read_frame_record_attrs, write_frame_record
from cache.location import Location
from cache.manifest import Manifest
from cache.media import SourceStat, frame_times
from extract.base import UnitResult, VideoContext
from extract.decode import DecodeReport

log = logging.getLogger(__name__)

DECLARED_SLACK_FRAMES, DECLARED_SLACK_SHARE = 2, 0.005
LABEL_SLACK = 1  # frames: Aff-Wild2 label files are often one line longer than their video


def to_container_clock(results: Mapping[str, UnitResult], times: np.ndarray, fps: float) -> None:
    """Move rows from the frame-index clock (k / fps) onto the presented frames' `times` (N, 2)."""
    n = len(times)
    if not n or np.array_equal(times, frame_times(n, fps)):
        return
    nominal = np.arange(n + 1, dtype=np.float64) / fps
    real = np.append(times[:, 0], times[-1, 1])
    first_pace = (real[1] - real[0]) * fps  # real seconds per nominal second before frame 0 / after the end
    last_pace = (real[-1] - real[-2]) * fps

    def convert(x: np.ndarray) -> np.ndarray:
        y = np.interp(x, nominal, real)
        y = np.where(x < 0, real[0] + x * first_pace, y)
        return np.where(x > nominal[-1], real[-1] + (x - nominal[-1]) * last_pace, y)

    for result in results.values():
        if len(result.times):
            result.times = convert(result.times)


def invalidate_undecoded(results: Mapping[str, UnitResult], times: np.ndarray, decoded: np.ndarray) -> int:
    """Mark invalid every row whose [start, end) overlaps a frame that did not decode (a frame row is
    exactly its frame; a window or segment row any frame of its span). Returns the rows changed."""
    lost = times[~np.asarray(decoded, dtype=bool)]
    if not len(lost):
        return 0
    order = np.argsort(lost[:, 0], kind="stable")
    starts, ends = lost[order, 0], np.maximum.accumulate(lost[order, 1])
    changed = 0
    for result in results.values():
        if not len(result.times):
            continue
        # the last lost frame starting before a row's end reaches into the row if it ends after its start
        j = np.searchsorted(starts, result.times[:, 1], side="left") - 1
        hit = (j >= 0) & (ends[np.clip(j, 0, None)] > result.times[:, 0])
        changed += int((hit & result.valid).sum())
        result.valid = result.valid & ~hit
    return changed


def record_frames(cache_dir: Location, video: VideoContext, times: np.ndarray, decoded: np.ndarray, report: DecodeReport) -> None:
    """Keep the video's presented frame times in the cache's `frame_times` record (see cache.frametimes)."""
    attrs = {
        "declared": report.declared,
        "presented": report.presented,
        "decoded": report.decoded,
        "constant_rate": is_constant_rate(times[:, 0], video.info.fps),
        "fps": video.info.fps,
        "rotation": report.rotation,
        "decoders": list(report.decoders),
        "time_notes": list(report.notes),  # timestamps that were missing or out of order, and how they were replaced
    }
    write_frame_record(cache_dir, video.stem, times, decoded, SourceStat.of(video.path), attrs)


def labelled_frames(manifest: Manifest, split: str) -> dict[str, int]:
    """Video stem → the most label rows of any of its tracks in `split` (test: the submission's rows)."""
    out: dict[str, int] = {}
    for stem, tracks in manifest.videos(split).items():
        counts = [int(t.n_frames) for t in tracks if t.n_frames]
        if counts:
            out[stem] = max(counts)
    return out


def recorded_partial_line(cache_dir: Location, video: VideoContext, labelled: int | None) -> str | None:
    """`partial_line` from the frame-time record of an earlier run (for a video skipped as complete)."""
    attrs = read_frame_record_attrs(cache_dir, video.stem, SourceStat.of(video.path))
    if not attrs or "decoded" not in attrs:
        return None
    return partial_line(video, int(attrs["decoded"]), attrs.get("declared"), labelled)


def declared_slack(declared: int) -> int:
    """Frames a container may declare beyond what it holds without the video being damaged: AVI headers
    (packed MPEG-4 bitstreams, an encoder's delayed frame) count a frame or two more than they decode
    (the sample's `video7-3.avi`: 473 declared, 471 packets and frames). A truncated or damaged video
    loses far more (a cut faststart mp4 half its frames, one damaged GOP ~10)."""
    return max(DECLARED_SLACK_FRAMES, int(DECLARED_SLACK_SHARE * declared))


def partial_line(video: VideoContext, decoded: int, declared: int | None, labelled: int | None) -> str | None:
    """One summary line when fewer frames decoded than the container declares or the labels need
    (beyond LABEL_SLACK); None when the video is whole."""
    short_declared = declared is not None and decoded < declared - declared_slack(declared)
    short_labels = labelled is not None and decoded < labelled - LABEL_SLACK
    if not (short_declared or short_labels):
        return None
    return (
        f"{video.path}: partial: {decoded} frames decoded of {declared if declared is not None else '?'} declared, "
        f"{labelled if labelled is not None else '?'} labelled (stored; the missing frames are invalid or absent rows)"
    )
