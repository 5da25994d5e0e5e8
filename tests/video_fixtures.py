"""Small real mp4 files for decode tests, written with PyAV: every frame carries its number.

Frame k is a grey patch of level `frame_level(k)` (read back to within 2 with h264 at qp 0) beside a
noise strip (so packets have a realistic size), with a white marker in the top-left corner (to tell the
orientation). Timestamps are set per frame, so variable frame rates are written as they are.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np

WIDTH, HEIGHT = 64, 48
PATCH = (slice(20, 28), slice(40, 48))  # rows, columns of the grey patch (unrotated)


CYCLE = 56  # frame numbers repeat every CYCLE frames (levels 16..236 in steps of 4)


def frame_level(k: int) -> int:
    return 16 + 4 * (k % CYCLE)


def frame_number(frame: np.ndarray) -> int:
    """The number (modulo CYCLE) of a decoded, unrotated frame, from its patch level."""
    level = float(frame[PATCH].mean())
    return int(round((level - 16) / 4)) % CYCLE


def make_frame(k: int, rng: np.random.Generator) -> np.ndarray:
    frame = np.full((HEIGHT, WIDTH, 3), frame_level(k), dtype=np.uint8)
    frame[:, :16] = rng.integers(0, 256, (HEIGHT, 16, 3), dtype=np.uint8)
    frame[:6, :6] = 255
    frame[:6, 16:22] = 255
    return frame


def write_mp4(
    path: Path, times_s: list[float] | np.ndarray, faststart: bool = False, rotation: int | None = None, gop: int = 10
) -> Path:
    """An h264 mp4 whose frame k is presented at times_s[k] seconds (millisecond time base)."""
    rng = np.random.default_rng(0)
    options = {"movflags": "faststart"} if faststart else {}
    with av.open(str(path), "w", options=options) as container:
        stream = container.add_stream("libx264", rate=30)
        stream.width, stream.height, stream.pix_fmt = WIDTH, HEIGHT, "yuv420p"
        stream.time_base = Fraction(1, 1000)
        stream.options = {"qp": "0", "preset": "ultrafast", "threads": "1", "g": str(gop), "bf": "0"}
        if rotation is not None:
            stream.set_display_rotation(rotation)
        for k, t in enumerate(times_s):
            frame = av.VideoFrame.from_ndarray(make_frame(k, rng), format="rgb24")
            frame.pts, frame.time_base = int(round(t * 1000)), Fraction(1, 1000)
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def packet_spans(path: Path) -> list[tuple[int, int]]:
    """(byte offset, size) of each video packet, in file order."""
    with av.open(str(path)) as container:
        return [(p.pos, p.size) for p in container.demux(container.streams.video[0]) if p.size]
