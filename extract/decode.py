"""Decode a video once, in order, in chunks (never the whole video in memory), on the container's clock.

Frame k is the k-th frame the container presents (its packets sorted by presentation timestamp); each
chunk carries its frames' [start, end) seconds from those timestamps (`cache.frametimes`: k / fps for a
constant-rate video) and which of them decoded. A frame that cannot be decoded is not dropped: it keeps
its place and its time, as a black frame with `decoded` False, and so do the frames after it that
depend on it (until the next key frame), so nothing after a damaged stretch shifts in time.

decord first; when decord cannot open or read the file, PyAV packet by packet (bad packets are
counted), logged; PyAV resumes at the time decord stopped. A file neither can read raises
`cache.media.MediaError` with a one-line reason.

Orientation: frames are upright as a player shows them, i.e. the container's rotation (display matrix)
is applied. decord 0.6 returns broken buffers for rotated videos (4 channels, wrong size), so a rotated
video is decoded with PyAV and turned with numpy; decord only ever decodes unrotated videos. Both
decoders therefore give the same orientation.

`DecodeReport` collects what the caller needs afterwards (declared / presented / decoded counts, the
rotation, which decoder ran). `prefetch_chunks` runs a decoder on a background thread ahead of the
models through a bounded queue.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from cache.frametimes import bad_starts, presented_times, repaired_starts
from cache.media import MediaError
from cache.prefetch import Prefetcher

log = logging.getLogger(__name__)

MAX_BAD_PACKETS = 1000  # unreadable packets tolerated before PyAV gives up on a file
RESUME_SLACK = 1e-3  # seconds: resuming by time, PyAV starts at the first frame at or after decord's next one


@dataclass
class Chunk:
    """Consecutive presented frames: RGB uint8 (B, H, W, 3), their 0-based indices, their [start, end)
    seconds (B, 2) and whether each decoded (black frames where not)."""

    frames: np.ndarray
    start: int
    times: np.ndarray | None = None
    decoded: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.times is None:
            raise ValueError("a Chunk needs its frame times")
        if self.decoded is None:
            self.decoded = np.ones(len(self.frames), dtype=bool)

    @property
    def indices(self) -> np.ndarray:
        return np.arange(self.start, self.start + len(self.frames))


@dataclass
class DecodeReport:
    """What one decode saw (filled while decoding)."""

    declared: int | None = None  # frames the container's index declares (None: it does not say)
    presented: int = 0  # frames delivered (decoded or not)
    decoded: int = 0
    rotation: int = 0  # degrees counter-clockwise applied to every frame
    decoders: list[str] = field(default_factory=list)  # those that delivered frames, in order
    fps: float = 0.0  # the container's average rate (as `probe_video`)
    notes: list[str] = field(default_factory=list)  # e.g. timestamps that were missing and replaced


@dataclass(frozen=True)
class _Stream:
    fps: float
    declared: int | None
    rotation: int
    width: int
    height: int


def _check_file(path: Path) -> None:
    if not path.is_file():
        raise MediaError(f"{path}: no such file")
    if path.stat().st_size == 0:
        raise MediaError(f"{path}: empty file (0 bytes)")


def _open_pyav(path: Path):
    import av

    try:
        container = av.open(str(path))
    except Exception as err:
        raise MediaError(f"{path}: cannot open ({type(err).__name__}: {err})") from None
    if not container.streams.video:
        container.close()
        raise MediaError(f"{path}: no video stream")
    return container


def _stream_facts(path: Path) -> _Stream:
    """fps (as `probe_video`), declared frame count and rotation (from the first decodable frame)."""
    with _open_pyav(path) as container:
        stream = container.streams.video[0]
        rate = stream.average_rate or stream.guessed_rate or stream.base_rate
        if not rate:
            raise MediaError(f"{path}: container gives no frame rate")
        fps = float(rate)
        declared = int(stream.frames) if stream.frames else None
        rotation = 0
        try:
            for frame in container.decode(stream):
                rotation = int(round((frame.rotation or 0) / 90.0)) * 90 % 360
                break
        except Exception:  # the first frames may be damaged; decoding proper will say so
            pass
        width, height = stream.codec_context.width, stream.codec_context.height
    if rotation in (90, 270):
        width, height = height, width
    return _Stream(fps, declared, rotation, width, height)


def _upright(frame: np.ndarray, rotation: int) -> np.ndarray:
    """Turn a decoded frame counter-clockwise by `rotation` degrees (the display matrix's angle)."""
    k = (rotation // 90) % 4
    return np.ascontiguousarray(np.rot90(frame, k)) if k else frame


def decord_chunks(
    path: Path, chunk: int = 32, threads: int = 1, fps: float = 0.0, notes: list[str] | None = None
) -> Iterator[Chunk]:
    """Frames with decord, sequentially, `chunk` at a time, with times from its frame timestamps. A missing
    (decord's "no timestamp" -3.7e17 s), negative or out-of-order timestamp is replaced from the container's
    packet timestamps (PyAV) or the frame clock (`repaired_starts`), and noted in `notes`."""
    import decord

    reader = decord.VideoReader(str(path), ctx=decord.cpu(0), num_threads=threads)
    n = len(reader)
    if n <= 0:
        raise MediaError(f"{path}: no frames")
    fps = fps or float(reader.get_avg_fps())
    starts = np.asarray(reader.get_frame_timestamp(np.arange(n)), dtype=np.float64)[:, 0]
    if bad_starts(starts).any():
        pts, tb, untimed = _demux_pts(path)
        other = pts * tb if tb and not untimed and len(pts) == n else None
        starts, note = repaired_starts(starts, fps, other)
        _note(path, f"decord: {note}", notes)
    times = presented_times(starts, fps)
    for start in range(0, n, chunk):
        stop = min(start + chunk, n)
        batch = reader.get_batch(list(range(start, stop))).asnumpy()
        yield Chunk(batch, start, times[start:stop])
    del reader


def _note(path: Path, text: str, notes: list[str] | None) -> None:
    log.warning("%s: %s", path, text)
    if notes is not None:
        notes.append(text)


def _video_packets(container, errors: list[int]) -> Iterator:
    """The first video stream's packets; one the demuxer cannot read is skipped and counted in errors[0]
    (after MAX_BAD_PACKETS of them the demuxer's error is raised)."""
    import av

    packets = container.demux(container.streams.video[0])
    while True:
        try:
            packet = next(packets)
        except (StopIteration, av.error.EOFError):
            return
        except Exception:
            errors[0] += 1
            if errors[0] > MAX_BAD_PACKETS:
                raise
            continue
        yield packet


def _demux_pts(path: Path) -> tuple[np.ndarray, float, int]:
    """Sorted presentation timestamps (stream units) of the video packets the container holds, the
    time base, and how many packets had no timestamp. Reads the file without decoding."""

    pts: list[int] = []
    untimed = 0
    with _open_pyav(path) as container:
        stream = container.streams.video[0]
        tb = float(stream.time_base) if stream.time_base else 0.0
        for packet in _video_packets(container, [0]):
            if packet.size == 0:  # the flush packet at the end
                continue
            if packet.pts is None:
                untimed += 1
            else:
                pts.append(int(packet.pts))
    return np.unique(np.asarray(pts, dtype=np.int64)), tb, untimed


def pyav_chunks(
    path: Path, chunk: int = 32, facts: _Stream | None = None, resume_at: float | None = None, resume_index: int = 0,
    notes: list[str] | None = None,
) -> Iterator[Chunk]:
    """Frames with PyAV, packet by packet, on the container's presentation timestamps.

    A packet that fails to decode is counted; its frame (and those that depend on it up to the next
    key frame, and any frame the decoder flags corrupt) comes out black with `decoded` False at its own
    time. Resuming after decord: skip the `resume_index` frames it delivered, or, when PyAV's frame list
    differs from decord's, the frames before `resume_at` seconds."""
    facts = facts or _stream_facts(path)
    pts, tb, untimed = _demux_pts(path)
    timed = bool(tb) and len(pts) > 0 and untimed == 0
    if timed:
        starts, note = repaired_starts(pts * tb, facts.fps)  # a negative pts: not a time to store
        if note:
            _note(path, f"pyav: {note}", notes)
        times = presented_times(starts, facts.fps)
        slot = {int(p): k for k, p in enumerate(pts)}
    else:  # no usable timestamps: frames in decode order at k / fps (the old behaviour)
        log.warning("%s: packets without timestamps; frame times from the frame count", path)
        times, slot = None, {}
    first = resume_index
    if times is not None and resume_at is not None and resume_index > 0:
        # decord and PyAV read the same packets, so frame `resume_index` is normally the one at `resume_at`;
        # when their frame lists differ, resume by time instead
        length = times[min(resume_index, len(times)) - 1, 1] - times[min(resume_index, len(times)) - 1, 0]
        if resume_index >= len(times) or abs(times[resume_index, 0] - resume_at) > length / 2:
            first = int(np.searchsorted(times[:, 0], resume_at - RESUME_SLACK))
    black = np.zeros((facts.height, facts.width, 3), dtype=np.uint8)
    frames: list[np.ndarray] = []
    flags: list[bool] = []
    emitted = 0  # next presented index (frames before `first` were delivered by decord: not yielded again)
    chunk_start = first
    bad = 0
    damaged = False  # a frame was lost: the following ones are suspect until a key frame

    def rows_of(k0: int, k1: int) -> np.ndarray:
        if times is not None:
            return times[k0:k1]
        k = np.arange(k0, k1, dtype=np.float64)
        return np.stack([k / facts.fps, (k + 1) / facts.fps], axis=1)

    def push(image: np.ndarray, ok: bool) -> Iterator[Chunk]:
        nonlocal emitted, chunk_start, frames, flags
        emitted += 1
        if emitted <= first:
            return
        frames.append(image)
        flags.append(ok)
        if len(frames) == chunk:
            yield Chunk(np.stack(frames), chunk_start - first, rows_of(chunk_start, emitted), np.array(flags))
            chunk_start, frames, flags = emitted, [], []

    unreadable = [0]
    with _open_pyav(path) as container:
        container.streams.video[0].thread_type = "AUTO"
        for packet in _video_packets(container, unreadable):
            try:
                decoded = packet.decode()
            except Exception:
                bad += 1
                damaged = True
                continue
            for frame in decoded:
                if timed:
                    k = slot.get(int(frame.pts)) if frame.pts is not None else None
                    if k is None or k < emitted:  # a frame the index does not present: nothing to place it at
                        continue
                    while emitted < k:  # frames the decoder never gave: lost at their own times
                        damaged = True
                        yield from push(black, False)
                if frame.key_frame and not frame.is_corrupt:
                    damaged = False
                elif frame.is_corrupt:
                    damaged = True
                if damaged or emitted < first:  # lost, or already delivered by decord (not converted)
                    yield from push(black, False)
                else:
                    yield from push(_upright(frame.to_ndarray(format="rgb24"), facts.rotation), True)
        if timed:
            while emitted < len(pts):  # trailing frames whose packets did not decode
                yield from push(black, False)
    bad += unreadable[0]
    if bad:
        log.warning("%s: PyAV could not read or decode %d packet(s); their frames are kept as invalid rows", path, bad)
    if frames:
        yield Chunk(np.stack(frames), chunk_start - first, rows_of(chunk_start, emitted), np.array(flags))


def iter_chunks(path: Path, chunk: int = 32, threads: int = 1, report: DecodeReport | None = None) -> Iterator[Chunk]:
    """All presented frames of a video in order, as `Chunk`s. decord first, PyAV as fallback (and for
    rotated videos).

    If decord fails before yielding anything, PyAV decodes the whole file; if it fails midway, PyAV
    resumes at the time of the first frame not yet delivered. Raises MediaError when no frame decodes.
    `report`, when given, is filled in as decoding goes.
    """
    path = Path(path)
    _check_file(path)
    facts = _stream_facts(path)
    report = report if report is not None else DecodeReport()
    report.declared, report.rotation, report.fps = facts.declared, facts.rotation, facts.fps
    delivered = 0
    resume_at: float | None = None

    def account(c: Chunk) -> Chunk:
        report.presented += len(c.frames)
        report.decoded += int(c.decoded.sum())
        return c

    if facts.rotation:
        log.info("%s: rotated %d° by its container; decoding with PyAV and turning the frames upright", path, facts.rotation)
    else:
        try:
            for c in decord_chunks(path, chunk, threads, facts.fps, report.notes):
                if not delivered:
                    report.decoders.append("decord")
                yield account(Chunk(c.frames, delivered, c.times, c.decoded))
                delivered += len(c.frames)
                resume_at = float(c.times[-1, 1])
            return
        except MediaError:
            if delivered:
                raise
        except Exception as err:  # decord raises DECORDError and others
            reason = str(err).strip().splitlines()[0][:160] if str(err).strip() else type(err).__name__
            log.warning("%s: decord failed after %d frames (%s); falling back to PyAV", path, delivered, reason)
    report.decoders.append("pyav")
    for c in pyav_chunks(path, chunk, facts, resume_at, delivered, report.notes):
        yield account(Chunk(c.frames, delivered + c.start, c.times, c.decoded))
    if report.decoded == 0:
        raise MediaError(f"{path}: no decodable frames")


def prefetch_chunks(
    path: Path, chunk: int = 32, depth: int = 2, threads: int = 1, report: DecodeReport | None = None
) -> Prefetcher:
    """Decode `path` on a background thread, `depth` chunks ahead of the consumer (a context manager;
    decoder errors are raised in the consumer, `close()` stops the thread)."""
    return Prefetcher(iter_chunks(path, chunk, threads, report), depth=depth, name=f"decode-{Path(path).stem}")
