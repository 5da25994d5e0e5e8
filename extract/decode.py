"""Decode a video once, in order, in chunks (never the whole video in memory).

decord first; when decord cannot open or read the file, PyAV packet by packet (bad packets are
skipped), logged. A file neither can read raises `cache.media.MediaError` with a one-line reason.
`prefetch_chunks` runs a decoder on a background thread ahead of the models through a bounded queue.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cache.media import MediaError
from cache.prefetch import Prefetcher

log = logging.getLogger(__name__)


@dataclass
class Chunk:
    """Consecutive frames: RGB uint8 (B, H, W, 3) and their 0-based indices."""

    frames: np.ndarray
    start: int

    @property
    def indices(self) -> np.ndarray:
        return np.arange(self.start, self.start + len(self.frames))


def _check_file(path: Path) -> None:
    if not path.is_file():
        raise MediaError(f"{path}: no such file")
    if path.stat().st_size == 0:
        raise MediaError(f"{path}: empty file (0 bytes)")


def decord_chunks(path: Path, chunk: int = 32, threads: int = 1) -> Iterator[np.ndarray]:
    """Frames with decord, sequentially, `chunk` at a time."""
    import decord

    reader = decord.VideoReader(str(path), ctx=decord.cpu(0), num_threads=threads)
    n = len(reader)
    if n <= 0:
        raise MediaError(f"{path}: no frames")
    for start in range(0, n, chunk):
        batch = reader.get_batch(list(range(start, min(start + chunk, n)))).asnumpy()
        yield batch
    del reader


def pyav_chunks(path: Path, chunk: int = 32) -> Iterator[np.ndarray]:
    """Frames with PyAV, packet by packet; a packet that fails to decode is skipped (and counted)."""
    import av

    try:
        container = av.open(str(path))
    except Exception as err:
        raise MediaError(f"{path}: cannot open ({type(err).__name__}: {err})") from None
    with container:
        if not container.streams.video:
            raise MediaError(f"{path}: no video stream")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        buffer: list[np.ndarray] = []
        bad = 0
        try:
            packets = container.demux(stream)
            while True:
                try:
                    packet = next(packets)
                except StopIteration:
                    break
                except av.error.EOFError:
                    break
                except Exception:
                    bad += 1
                    if bad > 1000:
                        raise
                    continue
                try:
                    frames = packet.decode()
                except Exception:
                    bad += 1
                    continue
                for frame in frames:
                    buffer.append(frame.to_ndarray(format="rgb24"))
                    if len(buffer) == chunk:
                        yield np.stack(buffer)
                        buffer = []
        finally:
            if bad:
                log.warning("%s: PyAV skipped %d undecodable packet(s)", path, bad)
        if buffer:
            yield np.stack(buffer)


def iter_chunks(path: Path, chunk: int = 32, threads: int = 1) -> Iterator[Chunk]:
    """All frames of a video in order, as `Chunk`s. decord first, PyAV as fallback.

    If decord fails before yielding anything, PyAV decodes the whole file; if it fails midway, PyAV
    resumes after the frames already delivered. Raises MediaError when no frame can be decoded.
    """
    path = Path(path)
    _check_file(path)
    delivered = 0
    try:
        for frames in decord_chunks(path, chunk, threads):
            yield Chunk(frames, delivered)
            delivered += len(frames)
        return
    except MediaError:
        if delivered:
            raise
    except Exception as err:  # decord raises DECORDError and others
        reason = str(err).strip().splitlines()[0][:160] if str(err).strip() else type(err).__name__
        log.warning("%s: decord failed after %d frames (%s); falling back to PyAV", path, delivered, reason)
    skip = delivered
    produced = 0
    for frames in pyav_chunks(path, chunk):
        if skip:
            drop = min(skip, len(frames))
            frames, skip = frames[drop:], skip - drop
            if not len(frames):
                continue
        yield Chunk(frames, delivered + produced)
        produced += len(frames)
    if delivered + produced == 0:
        raise MediaError(f"{path}: no decodable frames")


def prefetch_chunks(path: Path, chunk: int = 32, depth: int = 2, threads: int = 1) -> Prefetcher:
    """Decode `path` on a background thread, `depth` chunks ahead of the consumer (a context manager;
    decoder errors are raised in the consumer, `close()` stops the thread)."""
    return Prefetcher(iter_chunks(path, chunk, threads), depth=depth, name=f"decode-{Path(path).stem}")
