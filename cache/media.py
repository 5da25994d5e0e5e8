"""Facts about a media file read from its container (fps is never taken from the file name)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np


class MediaError(RuntimeError):
    """A video that cannot be opened or has no usable video stream; the message names the file."""


@dataclass(frozen=True)
class VideoInfo:
    path: Path
    fps: float
    n_frames: int
    duration: float
    width: int
    height: int
    has_audio: bool


@dataclass(frozen=True)
class SourceStat:
    """Identity of a source file as stored with each feature group, to tell when a cache is stale:
    its name, size and mtime. The path is kept as information only, so a dataset copied or moved
    elsewhere (names, sizes and mtimes kept) is recognised."""

    path: str
    size: int
    mtime: float

    @classmethod
    def of(cls, path: Path) -> "SourceStat":
        st = os.stat(path)
        return cls(path=str(Path(path).resolve()), size=st.st_size, mtime=round(st.st_mtime, 3))

    def same_file(self, stored: dict | None) -> bool:
        """`stored` (a group's `source` attribute) names a file of this name, size and mtime."""
        if not isinstance(stored, dict) or "path" not in stored:
            return False
        same_name = Path(str(stored["path"])).name == Path(self.path).name
        return same_name and stored.get("size") == self.size and stored.get("mtime") == self.mtime


def probe_video(path: Path) -> VideoInfo:
    """Read fps, frame count, size and whether an audio stream exists, with PyAV."""
    import av

    path = Path(path)
    if not path.is_file():
        raise MediaError(f"{path}: no such file")
    if path.stat().st_size == 0:
        raise MediaError(f"{path}: empty file (0 bytes)")
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise MediaError(f"{path}: no video stream")
            stream = container.streams.video[0]
            rate = stream.average_rate or stream.guessed_rate or stream.base_rate
            if not rate:
                raise MediaError(f"{path}: container gives no frame rate")
            fps = float(rate)
            if stream.duration is not None and stream.time_base is not None:
                duration = float(stream.duration * stream.time_base)
            elif container.duration is not None:
                duration = container.duration / 1_000_000
            else:
                duration = 0.0
            n_frames = int(stream.frames) if stream.frames else int(round(duration * fps))
            return VideoInfo(
                path=path,
                fps=fps,
                n_frames=n_frames,
                duration=duration if duration > 0 else n_frames / fps,
                width=stream.codec_context.width,
                height=stream.codec_context.height,
                has_audio=bool(container.streams.audio),
            )
    except MediaError:
        raise
    except Exception as err:  # PyAV raises many error types for broken files
        raise MediaError(f"{path}: cannot open ({type(err).__name__}: {err})") from None


def frame_times(n_frames: int, fps: float) -> np.ndarray:
    """[start, end) seconds of frames 0..n_frames-1 at a constant rate."""
    k = np.arange(n_frames, dtype=np.float64)
    return np.stack([k / fps, (k + 1) / fps], axis=1)
