"""Deterministic synthetic dataset in the Aff-Wild2 layout.

Every video shows one or two copies of a real face photo (scikit-image's astronaut) whose expression is
driven by a smooth valence-arousal trace through geometric warps (valence lifts or drops the mouth
corners; arousal raises the brows, widens the mouth opening and enlarges head motion). The person
"speaks" in stretches: the mouth opens at a syllable rate and a voice-like harmonic signal with the same
syllable envelope plays in the audio. The generator writes videos, label files, the test names list, the
sample submission and per-video ground truth, so later stages can be tested and trained offline.
"""

from __future__ import annotations

import json
import math
import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from fractions import Fraction
from itertools import chain
from pathlib import Path
from typing import Iterable, Iterator

import av
import cv2
import numpy as np

from cache.manifest import CHALLENGE_DIR, LABEL_HEADER, SPLIT_DIRS, SUBMISSION_HEADER

TRAIN, VAL, TEST = "train", "val", "test"
GROUND_TRUTH_INDEX = "ground_truth/tracks.json"  # written last: its presence means the dataset is complete
TEST_LABELS_DIR = "ground_truth/Test_Set"  # the test tracks' labels, challenge format (`evaluate --split test --labels`)
SUBMISSION_NAME = "CVPR_10th_ABAW_VA_test_set_sample.txt"
TEST_NAMES_NAME = "test_set_names.txt"
INVALID = -5

# Astronaut photo (512x512): square crop around the face, and face-mesh landmarks measured on it with
# MediaPipe (pixels in the full photo). Indices: 78/308 inner mouth corners, 13/14 inner lip centres,
# 152 chin, 105/334 brows.
_CROP_X0, _CROP_Y0, _CROP_SIDE = 120.0, 23.0, 210.0
_MOUTH_LEFT = (204.7, 140.2)
_MOUTH_RIGHT = (243.0, 142.6)
_LIP_TOP = (223.5, 142.7)
_LIP_BOTTOM = (223.1, 149.6)
_CHIN = (221.3, 175.5)
_BROWS = ((198.0, 86.7), (255.0, 89.8))
_FACE_BOX = (178.0, 62.0, 272.0, 176.0)  # x0, y0, x1, y1: mesh extent, forehead to chin
_FACE_CENTER = (225.0, 120.0)

# MP3 in AVI has no edit list: the decoder's output starts this many samples late (LAME encoder delay
# 576 + decoder delay 529), so the writer drops them up front to keep audio and video in sync.
_MP3_DELAY = 1105
_CODECS = {".mp4": ("libx264", "aac"), ".mkv": ("libx264", "aac"), ".avi": ("mpeg4", "libmp3lame")}


# --------------------------------------------------------------------------------------------------
# Writing media
# --------------------------------------------------------------------------------------------------


def write_av_file(
    path: Path,
    frames: Iterable[np.ndarray] | np.ndarray,
    fps: float,
    audio: np.ndarray | None = None,
    sample_rate: int = 16000,
) -> None:
    """Write an .mp4 (h264 + aac) or .avi (mpeg4 + mp3) from RGB uint8 frames (H, W, 3) and optional mono
    float audio in [-1,1]. Streams frames (an iterator must work, memory bounded).

    H and W must be even (4:2:0 chroma); .mkv (h264 + aac) works too. Audio is interleaved with the video
    as it goes; audio longer than the video is written in full, shorter audio simply ends early. MP3's
    decoder delay is compensated, so decoded audio lines up with the video in both containers (the
    first ~70 ms of an .avi's audio are lost to it).
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in _CODECS:
        raise ValueError(f"unsupported container {suffix!r}; use one of {sorted(_CODECS)}")
    video_codec, audio_codec = _CODECS[suffix]
    frame_iter = iter(frames)
    try:
        first = next(frame_iter)
    except StopIteration:
        raise ValueError("write_av_file needs at least one frame") from None
    height, width = _check_frame(first).shape[:2]
    if height % 2 or width % 2:
        raise ValueError(f"frame size {width}x{height} must be even")
    rate = Fraction(fps).limit_denominator(1001)
    samples = _prepare_audio(audio, suffix)
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as container:
        vstream = _add_video_stream(container, video_codec, rate, width, height)
        astream = None
        if samples is not None:
            astream = container.add_stream(audio_codec, rate=sample_rate, layout="mono")
            astream.bit_rate = 64000
        written = 0
        for index, frame in enumerate(chain([first], frame_iter)):
            _encode_video(container, vstream, _check_frame(frame, (height, width)), index, rate)
            until = min(len(samples), round((index + 1) / rate * sample_rate)) if astream is not None else 0
            if until - written >= sample_rate:  # interleave audio in one-second pieces
                written = _encode_audio(container, astream, samples, written, until, sample_rate)
        for packet in vstream.encode():
            container.mux(packet)
        if astream is not None:
            _encode_audio(container, astream, samples, written, len(samples), sample_rate)
            for packet in astream.encode():
                container.mux(packet)


def _check_frame(frame: np.ndarray, shape: tuple[int, int] | None = None) -> np.ndarray:
    frame = np.asarray(frame)
    if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
        raise ValueError(f"frames must be uint8 (H, W, 3), got {frame.dtype} {frame.shape}")
    if shape is not None and frame.shape[:2] != shape:
        raise ValueError(f"frame size changed from {shape} to {frame.shape[:2]}")
    return frame


def _prepare_audio(audio: np.ndarray | None, suffix: str) -> np.ndarray | None:
    if audio is None:
        return None
    samples = np.clip(np.asarray(audio, dtype=np.float32).reshape(-1), -1.0, 1.0)
    if suffix == ".avi":
        samples = samples[_MP3_DELAY:]
    return np.ascontiguousarray(samples)


def _add_video_stream(container, codec: str, rate: Fraction, width: int, height: int):
    stream = container.add_stream(codec, rate=rate)
    stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
    if codec == "libx264":
        # One thread keeps the bitstream byte-identical from run to run.
        stream.options = {"crf": "18", "preset": "superfast", "threads": "1"}
    else:
        stream.bit_rate = 3_000_000
        stream.options = {"threads": "1"}
    return stream


def _encode_video(container, stream, frame: np.ndarray, index: int, rate: Fraction) -> None:
    video_frame = av.VideoFrame.from_ndarray(frame, format="rgb24")
    video_frame.pts = index
    video_frame.time_base = 1 / rate
    for packet in stream.encode(video_frame):
        container.mux(packet)


def _encode_audio(container, stream, samples: np.ndarray, start: int, stop: int, sample_rate: int) -> int:
    if stop <= start:
        return start
    audio_frame = av.AudioFrame.from_ndarray(samples[None, start:stop], format="flt", layout="mono")
    audio_frame.sample_rate = sample_rate
    audio_frame.pts = start
    audio_frame.time_base = Fraction(1, sample_rate)
    for packet in stream.encode(audio_frame):
        container.mux(packet)
    return stop


# --------------------------------------------------------------------------------------------------
# Rendering faces
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class HeadPose:
    """Rigid head motion of a face tile: translation in pixels and rotation in degrees."""

    dx: float = 0.0
    dy: float = 0.0
    angle: float = 0.0


def _tile_point(point: tuple[float, float], size: int) -> np.ndarray:
    scale = size / _CROP_SIDE
    return np.array([(point[0] - _CROP_X0) * scale, (point[1] - _CROP_Y0) * scale], dtype=np.float64)


def base_face_tile(size: int = 256) -> np.ndarray:
    """The neutral face: the astronaut photo cropped to the face, resized to (size, size, 3) uint8."""
    from skimage import data  # imported here: only rendering needs scikit-image

    photo = data.astronaut()
    x0, y0, side = int(_CROP_X0), int(_CROP_Y0), int(_CROP_SIDE)
    crop = photo[y0 : y0 + side, x0 : x0 + side]
    return cv2.resize(crop, (size, size), interpolation=cv2.INTER_AREA)


def _gaussian(gx: np.ndarray, gy: np.ndarray, center: np.ndarray, sx: float, sy: float) -> np.ndarray:
    return np.exp(-0.5 * (((gx - center[0]) / sx) ** 2 + ((gy - center[1]) / sy) ** 2))


def _forward_points(points: np.ndarray, dx: np.ndarray, dy: np.ndarray, steps: int = 6) -> np.ndarray:
    """Where source points land under the backward map p -> p - d(p): solve p = s + d(p) by iteration."""
    out = points.astype(np.float32).copy()
    src = points.astype(np.float32)
    for _ in range(steps):
        px = cv2.remap(dx, out[:, :1], out[:, 1:], cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)[:, 0]
        py = cv2.remap(dy, out[:, :1], out[:, 1:], cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)[:, 0]
        out = src + np.stack([px, py], 1)
    return out


@dataclass(frozen=True)
class _Landmarks:
    mouth_left: np.ndarray
    mouth_right: np.ndarray
    lip_top: np.ndarray
    lip_bottom: np.ndarray
    chin: np.ndarray
    brows: tuple[np.ndarray, np.ndarray]
    center: np.ndarray
    box: np.ndarray  # x0, y0, x1, y1

    @classmethod
    def for_size(cls, size: int) -> "_Landmarks":
        box0, box1 = _tile_point(_FACE_BOX[:2], size), _tile_point(_FACE_BOX[2:], size)
        return cls(
            mouth_left=_tile_point(_MOUTH_LEFT, size),
            mouth_right=_tile_point(_MOUTH_RIGHT, size),
            lip_top=_tile_point(_LIP_TOP, size),
            lip_bottom=_tile_point(_LIP_BOTTOM, size),
            chin=_tile_point(_CHIN, size),
            brows=(_tile_point(_BROWS[0], size), _tile_point(_BROWS[1], size)),
            center=_tile_point(_FACE_CENTER, size),
            box=np.concatenate([box0, box1]),
        )


class _Jaw:
    """Jaw opening as an analytic map on photo coordinates.

    Per column x, source rows below the inner lower lip b(x) move down by drop*w(x) (fading below the
    chin), rows above a(x) stay, and [a(x), b(x)] is stretched linearly. a(x) is the inner upper lip
    inside the mouth and rises outside it, so the cheeks stretch smoothly instead of tearing. The column
    profiles are tabulated at 1/4 pixel, and only a box around the mouth and chin is ever touched.
    """

    _STEP = 0.25

    def __init__(self, marks: _Landmarks, size: int, max_drop: float):
        left, right = marks.mouth_left, marks.mouth_right
        cx, half = float(marks.lip_bottom[0]), 0.5 * float(right[0] - left[0])
        self.chin_y, self.fade_scale = float(marks.chin[1]), 0.09 * size
        self._xs0 = -float(size)
        xs = np.arange(self._xs0, 2.0 * size, self._STEP)
        inside, off = np.clip(xs, left[0], right[0]), np.abs(xs - cx)
        self._top = np.polyval(np.polyfit(*zip(left, marks.lip_top, right), 2), inside).astype(np.float32)
        self._bottom = np.polyval(np.polyfit(*zip(left, marks.lip_bottom, right), 2), inside).astype(np.float32)
        self._rise = (1.2 * np.maximum(off - 0.6 * half, 0) / half).astype(np.float32)
        self._weight = np.exp(-0.5 * (off / (0.6 * half)) ** 2).astype(np.float32)
        # Output box that can change (margin for the smile warp that is applied on top).
        reach = 0.6 * half * 4.0 + 0.1 * size
        rows = (float(marks.lip_top[1]) - 2.5 * max_drop - 0.1 * size, self.chin_y + 3.5 * self.fade_scale)
        self.rows = slice(max(int(rows[0]), 0), min(int(rows[1]) + 1, size))
        self.cols = slice(max(int(cx - reach), 0), min(int(cx + reach) + 1, size))
        self.left_x, self.right_x = float(left[0]), float(right[0])

    def _profile(self, x: np.ndarray, drop: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per point: ramp start a, inner lower lip b, drop amount."""
        idx = np.clip(np.rint((x - self._xs0) / self._STEP).astype(np.int32), 0, len(self._top) - 1)
        return self._top[idx] - drop * self._rise[idx], self._bottom[idx], drop * self._weight[idx]

    def _fade(self, y: np.ndarray) -> np.ndarray:
        below_chin = np.maximum(y - self.chin_y, 0) / self.fade_scale
        return np.exp(-(below_chin**2))

    def forward_y(self, x: np.ndarray, y: np.ndarray, drop: float) -> np.ndarray:
        """Where photo points (x, y) go when the jaw opens."""
        a, b, amount = self._profile(x, drop)
        ramp = np.clip((y - a) / np.maximum(b - a, 1e-3), 0, 1)
        return y + amount * np.where(y > b, self._fade(y), ramp)

    def source_y(self, x: np.ndarray, y: np.ndarray, drop: float) -> np.ndarray:
        """Inverse of forward_y: the photo row that lands on (x, y)."""
        a, b, amount = self._profile(x, drop)
        gap = np.maximum(b - a, 1e-3)
        stretched = a + (y - a) * gap / (gap + amount)
        below = y - amount
        for _ in range(2):  # fixed point of s = y - amount * fade(s); the fade is slow
            below = y - amount * self._fade(below)
        return np.where(y < a, y, np.where(y <= b + amount, stretched, below)).astype(np.float32)

    def open(self, map_x: np.ndarray, map_y: np.ndarray, drop: float) -> None:
        """Compose a backward map (in place) with the jaw opening."""
        box = (self.rows, self.cols)
        map_y[box] = self.source_y(map_x[box], map_y[box], drop)

    def gap_outline(self, drop: float, n: int = 11) -> tuple[np.ndarray, np.ndarray]:
        """Upper and lower inner-lip curves (n points each, left to right) after the jaw opens."""
        xs = np.linspace(self.left_x, self.right_x, n)
        top, bottom, _ = self._profile(xs, 0.0)
        upper = np.stack([xs, self.forward_y(xs, top, drop)], 1)
        lower = np.stack([xs, self.forward_y(xs, bottom + 1e-3, drop)], 1)
        return upper, lower


class FaceRenderer:
    """Renders the face tile for given expression parameters.

    The photo is warped in two steps, both as backward maps for cv2.remap: first the jaw drops (an
    analytic map: below the inner lower lip everything moves down, the gap between the lips is
    stretched and then painted dark), then smooth displacement bumps move the mouth corners (valence)
    and brows (arousal); a rigid head motion comes last. Strengths are in tile-size units and were tuned
    until MediaPipe's face mesh follows them.
    """

    smile_lift = 0.055  # mouth-corner rise at valence +1 (drop at -1)
    smile_dip = 0.045  # lip-centre drop at valence +1 (rise at -1): mouth curvature
    smile_widen = 0.02  # extra mouth width at valence +1
    jaw_drop = 0.085  # lower lip/jaw drop at full opening
    brow_lift = 0.03  # brow rise at arousal +1
    photo_valence = 0.3  # the photo already smiles: this valence leaves the mouth as photographed
    smile_sigma = 0.055

    def __init__(self, size: int = 256, flip: bool = False, tint: tuple[float, float, float] = (1.0, 1.0, 1.0)):
        self.size = size
        self.flip = flip
        tile = base_face_tile(size).astype(np.float32) * np.asarray(tint, dtype=np.float32)
        self.base = np.clip(tile, 0, 255).astype(np.uint8)
        self.marks = _Landmarks.for_size(size)
        self._gx, self._gy = np.meshgrid(np.arange(size, dtype=np.float32), np.arange(size, dtype=np.float32))
        self._fields = self._basis_fields()
        self._jaw = _Jaw(self.marks, size, self.jaw_drop * size)

    def _basis_fields(self) -> dict[str, np.ndarray]:
        """Unit backward displacement fields d (output p samples p - d(p)): features move by about d."""
        size, m, gx, gy = self.size, self.marks, self._gx, self._gy
        sigma = self.smile_sigma * size
        left = _gaussian(gx, gy, m.mouth_left, sigma, sigma)
        right = _gaussian(gx, gy, m.mouth_right, sigma, sigma)
        centre = _gaussian(gx, gy, 0.5 * (m.lip_top + m.lip_bottom), 0.035 * size, 0.05 * size)
        brows = sum(_gaussian(gx, gy, b, 0.09 * size, 0.045 * size) for b in m.brows)
        return {
            "smile_y": ((centre * self.smile_dip - (left + right) * self.smile_lift) * size).astype(np.float32),
            "widen_x": ((right - left) * self.smile_widen * size).astype(np.float32),
            "brow_y": (-brows * self.brow_lift * size).astype(np.float32),
        }

    def render(self, valence: float, arousal: float, mouth_open: float, pose: HeadPose = HeadPose()) -> np.ndarray:
        """RGB uint8 (size, size, 3) face for valence, arousal in [-1, 1] and mouth opening in [0, 1]."""
        f = self._fields
        valence, arousal = float(valence), float(arousal)  # numpy scalars would promote the maps to float64
        drop = float(np.clip(mouth_open, 0.0, 1.0)) * self.jaw_drop * self.size
        dx = max(valence, 0.0) * f["widen_x"]
        dy = (valence - self.photo_valence) * f["smile_y"] + arousal * f["brow_y"]
        map_x, map_y = self._gx - dx, self._gy - dy
        if drop > 0:
            self._jaw.open(map_x, map_y, drop)
        image = cv2.remap(self.base, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT101)
        if drop > 0:
            self._paint_cavity(image, dx, dy, drop)
        image = self._apply_pose(image, pose)
        return cv2.flip(image, 1) if self.flip else image

    def _paint_cavity(self, image: np.ndarray, dx: np.ndarray, dy: np.ndarray, drop: float) -> None:
        """Darken the stretched gap between the inner lips (in place)."""
        upper, lower = self._jaw.gap_outline(drop)
        outline = _forward_points(np.concatenate([upper, lower[::-1]]), dx, dy)
        x0, y0 = np.floor(outline.min(0)).astype(int) - 2
        x1, y1 = np.ceil(outline.max(0)).astype(int) + 3
        x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, self.size), min(y1, self.size)
        mask = np.zeros((y1 - y0, x1 - x0), dtype=np.uint8)
        polygon = np.round((outline - (x0, y0)) * 16).astype(np.int32)
        cv2.fillPoly(mask, [polygon], 255, lineType=cv2.LINE_AA, shift=4)
        # A barely open mouth is a dark line, not a black hole.
        alpha = (mask.astype(np.float32) * (min(1.0, 0.25 + drop / 6.0) / 255.0))[..., None]
        cavity = np.array([45, 14, 18], dtype=np.float32)
        roi = image[y0:y1, x0:x1].astype(np.float32)
        image[y0:y1, x0:x1] = (roi * (1 - alpha) + cavity * alpha).astype(np.uint8)

    def _apply_pose(self, image: np.ndarray, pose: HeadPose) -> np.ndarray:
        if pose.dx == 0 and pose.dy == 0 and pose.angle == 0:
            return image
        matrix = cv2.getRotationMatrix2D(tuple(float(c) for c in self.marks.center), pose.angle, 1.0)
        matrix[:, 2] += (pose.dx, pose.dy)
        return cv2.warpAffine(
            image, matrix, (self.size, self.size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT101
        )

    def face_center(self, pose: HeadPose = HeadPose()) -> np.ndarray:
        """Pixel (x, y) of the face centre in the rendered tile."""
        x, y = self.marks.center + (pose.dx, pose.dy)
        return np.array([self.size - 1 - x if self.flip else x, y])

    def face_box(self, pose: HeadPose = HeadPose()) -> np.ndarray:
        """Approximate face box (x0, y0, x1, y1) in the rendered tile (rotation ignored)."""
        x0, y0, x1, y1 = self.marks.box + (pose.dx, pose.dy, pose.dx, pose.dy)
        if self.flip:
            x0, x1 = self.size - 1 - x1, self.size - 1 - x0
        return np.array([x0, y0, x1, y1])


def render_face(
    valence: float,
    arousal: float,
    mouth_open: float,
    t: float = 0.0,
    size: int = 256,
    flip: bool = False,
) -> np.ndarray:
    """One face frame: expression from valence/arousal/mouth opening, head motion at time t (seconds)
    scaled by arousal. For many frames build a FaceRenderer once instead."""
    renderer = FaceRenderer(size, flip=flip)
    motion = _HeadMotion.random(np.random.default_rng(0))
    return renderer.render(valence, arousal, float(mouth_open), motion.pose(t, arousal, size))


def no_face_frames(n_frames: int, height: int = 256, width: int = 256, seed: int = 0) -> Iterator[np.ndarray]:
    """Frames without a face: a slow pan over scikit-image's coffee photo (RGB uint8)."""
    from skimage import data

    photo = data.coffee()  # (400, 600, 3)
    scale = max(height / photo.shape[0], width / photo.shape[1]) * 1.3
    photo = cv2.resize(photo, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    rng = np.random.default_rng(seed)
    span_y, span_x = photo.shape[0] - height, photo.shape[1] - width
    phase = rng.uniform(0, 2 * np.pi, 2)
    for k in range(n_frames):
        y = int(span_y * (0.5 + 0.5 * math.sin(0.02 * k + phase[0])))
        x = int(span_x * (0.5 + 0.5 * math.sin(0.03 * k + phase[1])))
        yield np.ascontiguousarray(photo[y : y + height, x : x + width])


# --------------------------------------------------------------------------------------------------
# Time courses: VA traces, speech turns, mouth, head motion, voice
# --------------------------------------------------------------------------------------------------


def smooth_trace(rng: np.random.Generator, times: np.ndarray, std: float = 0.45) -> np.ndarray:
    """A slow random trace in (-1, 1): a sum of sinusoids (0.02-0.25 Hz), spread about `std`."""
    freqs = np.exp(rng.uniform(math.log(0.02), math.log(0.25), 6))
    phases = rng.uniform(0, 2 * np.pi, 6)
    weights = rng.uniform(0.5, 1.0, 6) / np.sqrt(freqs)
    raw = (weights[:, None] * np.sin(2 * np.pi * freqs[:, None] * times[None] + phases[:, None])).sum(0)
    raw = (raw - raw.mean()) / max(raw.std(), 1e-9)
    offset = rng.uniform(-0.2, 0.2)
    return np.round(0.97 * np.tanh((offset + std * raw) / 0.97), 4) + 0.0  # + 0.0 turns -0.0 into 0.0


@dataclass(frozen=True)
class Turn:
    """A speech stretch of one face: [start, end) seconds, syllable rate in Hz."""

    face: int
    start: float
    end: float
    rate: float


def speech_turns(rng: np.random.Generator, duration: float, n_faces: int) -> list[Turn]:
    """Alternating speech and silence; with two faces the speakers take turns."""
    turns: list[Turn] = []
    t = rng.uniform(0.3, 1.2)
    face = 0
    while t < duration - 0.8:
        end = min(t + rng.uniform(1.5, 3.5), duration - 0.2)
        turns.append(Turn(face, t, end, rng.uniform(3.0, 5.0)))
        face = (face + 1) % n_faces
        t = end + rng.uniform(0.8, 2.2)
    return turns


def _syllable_envelope(times: np.ndarray, turn: Turn) -> np.ndarray:
    """sin^2 syllables starting closed at the turn's start; zero outside the turn."""
    local = times - turn.start
    inside = (local >= 0) & (times < turn.end)
    return np.where(inside, np.sin(np.pi * turn.rate * local) ** 2, 0.0)


def mouth_course(
    turns: list[Turn], face: int, times: np.ndarray, arousal: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per frame: speaking flag, mouth opening in [0, 1] (wider with arousal) and open flag."""
    speaking = np.zeros(len(times), dtype=bool)
    envelope = np.zeros(len(times))
    for turn in (t for t in turns if t.face == face):
        speaking |= (times >= turn.start) & (times < turn.end)
        envelope += _syllable_envelope(times, turn)
    opening = envelope * (0.65 + 0.35 * (arousal + 1) / 2)
    return speaking, opening, speaking & (opening > 0.25)


@dataclass(frozen=True)
class _HeadMotion:
    freqs: np.ndarray  # (3, 2) Hz for dx, dy, angle
    phases: np.ndarray  # (3, 2)

    @classmethod
    def random(cls, rng: np.random.Generator) -> "_HeadMotion":
        return cls(rng.uniform(0.15, 0.9, (3, 2)), rng.uniform(0, 2 * np.pi, (3, 2)))

    def pose(self, t: float, arousal: float, size: int) -> HeadPose:
        unit = 0.5 * np.sin(2 * np.pi * self.freqs * t + self.phases).sum(1)
        level = (arousal + 1) / 2
        shift = size * (0.006 + 0.03 * level)
        angle = unit[2] * (0.5 + 5 * level)
        return HeadPose(dx=float(unit[0] * shift), dy=float(unit[1] * shift * 0.6), angle=float(angle))


def voice(
    rng: np.random.Generator,
    turns: list[Turn],
    f0s: list[float],
    arousal: np.ndarray,
    fps: float,
    n_samples: int,
    sample_rate: int,
) -> np.ndarray:
    """Voice-like audio: a formant-shaped harmonic stack per turn with the syllable envelope, louder and
    higher with arousal; a very low noise floor elsewhere."""
    times = np.arange(n_samples) / sample_rate
    audio = rng.normal(0.0, 0.001, n_samples)
    for turn in turns:
        lo, hi = int(turn.start * sample_rate), min(int(math.ceil(turn.end * sample_rate)), n_samples)
        if hi <= lo:
            continue
        t = times[lo:hi]
        a_face = arousal[turn.face]
        a = np.interp(t, (np.arange(len(a_face)) + 0.5) / fps, a_face)
        level = (a + 1) / 2
        f0 = f0s[turn.face] * (1 + 0.25 * a) * (1 + 0.04 * np.sin(2 * np.pi * 0.7 * (t - turn.start)))
        phase = 2 * np.pi * np.cumsum(f0) / sample_rate
        ramp = np.clip(np.minimum(t - turn.start, turn.end - t) / 0.03, 0, 1)
        envelope = ramp * (0.15 + 0.85 * _syllable_envelope(t, turn)) * (0.12 + 0.2 * level)
        audio[lo:hi] += envelope * _harmonics(phase, f0)
    return np.clip(audio, -1, 1).astype(np.float32)


_FORMANTS = ((700.0, 250.0, 1.0), (1200.0, 300.0, 0.7), (2600.0, 400.0, 0.4))  # Hz, bandwidth, weight


def _harmonics(phase: np.ndarray, f0: np.ndarray) -> np.ndarray:
    """Sum of harmonics with a vowel-like spectral envelope (formants near 700, 1200, 2600 Hz)."""
    out = np.zeros_like(phase)
    for k in range(1, 40):
        freq = k * f0
        if freq.min() > 3800:
            break
        formants = sum(w * np.exp(-(((freq - f) / bw) ** 2)) for f, bw, w in _FORMANTS)
        gain = (0.3 + formants) / k * np.clip((3800 - freq) / 400, 0, 1)
        out += gain * np.sin(k * phase)
    return out / 1.2


# --------------------------------------------------------------------------------------------------
# The dataset
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class VideoSpec:
    """One video of the sample set and its quirks."""

    stem: str
    split: str
    fps: float
    ext: str = ".mp4"
    subdir: str = ""
    n_faces: int = 1
    has_audio: bool = True
    flip: bool = False
    # (face, start as a fraction of the video, length in frames): a -5,-5 stretch in that face's label file
    invalid_runs: tuple[tuple[int, float, int], ...] = ()
    extra_label_line: bool = False

    def tracks(self) -> list[str]:
        if self.n_faces == 1:
            return [self.stem]
        return [f"{self.stem}_left", f"{self.stem}_right"]


SAMPLE_VIDEOS: tuple[VideoSpec, ...] = (
    VideoSpec("5-60-1920x1080", TRAIN, 30.0),
    VideoSpec("video20", TRAIN, 30.0, flip=True),
    VideoSpec("video48", TRAIN, 30.0, n_faces=2, invalid_runs=((1, 0.55, 40),)),
    VideoSpec("118-30-640x480", TRAIN, 30.0, invalid_runs=((0, 0.4, 30),)),
    VideoSpec("video7-3", TRAIN, 25.0, ext=".avi", flip=True),
    VideoSpec("video2", TRAIN, 25.0, subdir="batch2", extra_label_line=True),
    VideoSpec("12-30-640x360", VAL, 25.0),  # the name says 30 fps; the container says 25
    VideoSpec("video55", VAL, 30.0, subdir="batch2", has_audio=False, flip=True),
    VideoSpec("video7", VAL, 30.0, invalid_runs=((0, 0.0, 20),)),  # unlabelled start, as often in Aff-Wild2
    VideoSpec("video33", TEST, 30.0, subdir="batch2", flip=True),
    VideoSpec("82-25-854x480", TEST, 25.0),
)


@dataclass(frozen=True)
class SampleConfig:
    """What write_sample_dataset generates. Durations are drawn per video in [min_seconds, max_seconds]."""

    seed: int = 0
    size: int = 256  # face tile side in pixels (a two-person video is 2*size wide)
    min_seconds: float = 10.0
    max_seconds: float = 20.0
    sample_rate: int = 16000
    videos: tuple[VideoSpec, ...] = SAMPLE_VIDEOS
    workers: int = 2  # videos written in parallel (spawned processes); 1 writes in this process

    @classmethod
    def short(cls, stems: tuple[str, ...], seconds: float, workers: int = 1) -> "SampleConfig":
        """A few of the sample's videos, each `seconds` long (for tests and benchmarks)."""
        videos = tuple(v for v in SAMPLE_VIDEOS if v.stem in stems)
        missing = set(stems) - {v.stem for v in videos}
        if missing:
            raise ValueError(f"not sample videos: {sorted(missing)}")
        return cls(min_seconds=seconds, max_seconds=seconds, videos=videos, workers=workers)


@dataclass
class VideoSummary:
    stem: str
    path: Path
    split: str
    fps: float
    n_frames: int
    n_faces: int
    has_audio: bool
    tracks: list[str]
    label_lines: dict[str, int]  # track -> label rows written (0 for test tracks)


@dataclass
class SampleSummary:
    root: Path
    splits: dict[str, list[str]]  # split -> track names
    videos: dict[str, VideoSummary]  # stem -> summary
    label_dir: Path
    ground_truth_dir: Path
    test_names: Path
    sample_submission: Path

    def track_frames(self) -> dict[str, int]:
        """Track -> number of video frames."""
        return {t: v.n_frames for v in self.videos.values() for t in v.tracks}

    def __str__(self) -> str:
        counts = ", ".join(f"{split} {len(tracks)}" for split, tracks in self.splits.items())
        frames = sum(v.n_frames for v in self.videos.values())
        return f"{len(self.videos)} videos, {frames} frames; tracks: {counts}"


@dataclass
class _VideoTruth:
    fps: float
    valence: np.ndarray  # (n_faces, n_frames + 1): one extra frame for a label file that overruns
    arousal: np.ndarray
    mouth_open: np.ndarray
    opening: np.ndarray
    speaking: np.ndarray
    poses: list[list[HeadPose]]
    turns: list[Turn]
    f0s: list[float]
    renderers: list[FaceRenderer] = field(repr=False)

    @property
    def n_frames(self) -> int:
        return self.mouth_open.shape[1]


def _plan_video(spec: VideoSpec, index: int, config: SampleConfig) -> _VideoTruth:
    rng = np.random.default_rng([config.seed, index])
    duration = rng.uniform(config.min_seconds, config.max_seconds)
    n_frames = max(int(round(duration * spec.fps)), 2)
    times = (np.arange(n_frames + 1) + 0.5) / spec.fps
    valence = np.stack([smooth_trace(rng, times) for _ in range(spec.n_faces)])
    arousal = np.stack([smooth_trace(rng, times, std=0.4) for _ in range(spec.n_faces)])
    turns = speech_turns(rng, n_frames / spec.fps, spec.n_faces)
    courses = [mouth_course(turns, f, times[:n_frames], arousal[f, :n_frames]) for f in range(spec.n_faces)]
    speaking, opening, mouth_open = (np.stack(c) for c in zip(*courses))
    renderers, poses, f0s = [], [], []
    for face in range(spec.n_faces):
        tint = tuple(rng.uniform(0.85, 1.15, 3))
        flip = spec.flip if spec.n_faces == 1 else face == 1  # two people face each other
        renderers.append(FaceRenderer(config.size, flip=flip, tint=tint))
        motion = _HeadMotion.random(rng)
        poses.append([motion.pose(t, a, config.size) for t, a in zip(times[:n_frames], arousal[face])])
        f0s.append(float(rng.uniform(120, 220)))
    return _VideoTruth(spec.fps, valence, arousal, mouth_open, opening, speaking, poses, turns, f0s, renderers)


def _frames(truth: _VideoTruth) -> Iterator[np.ndarray]:
    for k in range(truth.n_frames):
        tiles = [
            r.render(truth.valence[f, k], truth.arousal[f, k], truth.opening[f, k], truth.poses[f][k])
            for f, r in enumerate(truth.renderers)
        ]
        yield tiles[0] if len(tiles) == 1 else np.concatenate(tiles, axis=1)


def _label_valid(spec: VideoSpec, n_frames: int) -> np.ndarray:
    """(n_faces, n_frames + 1) False where the label file says -5,-5 (runs capped at a quarter video)."""
    valid = np.ones((spec.n_faces, n_frames + 1), dtype=bool)
    for face, start, length in spec.invalid_runs:
        first = int(start * n_frames)
        valid[face, first : first + min(length, n_frames // 4)] = False
    return valid


def _format_value(value: float) -> str:
    return repr(float(value))


def _label_text(valence: np.ndarray, arousal: np.ndarray, valid: np.ndarray) -> str:
    rows = [LABEL_HEADER]
    for v, a, ok in zip(valence, arousal, valid):
        rows.append(f"{_format_value(v)},{_format_value(a)}" if ok else f"{INVALID},{INVALID}")
    return "\n".join(rows) + "\n"


def _ground_truth(
    spec: VideoSpec, truth: _VideoTruth, valid: np.ndarray, sample_rate: int
) -> dict[str, np.ndarray]:
    n, size = truth.n_frames, truth.renderers[0].size
    centers = np.zeros((spec.n_faces, n, 2), dtype=np.float32)
    boxes = np.zeros((spec.n_faces, n, 4), dtype=np.float32)
    for f, renderer in enumerate(truth.renderers):
        offset = np.array([f * size, 0.0])
        centers[f] = [renderer.face_center(p) + offset for p in truth.poses[f]]
        boxes[f] = [renderer.face_box(p) + np.tile(offset, 2) for p in truth.poses[f]]
    return {
        "fps": np.float64(truth.fps),
        "n_frames": np.int64(n),
        "width": np.int64(size * spec.n_faces),
        "height": np.int64(size),
        "tracks": np.array(spec.tracks()),
        "face_centers": centers,
        "face_boxes": boxes,
        "mouth_open": truth.mouth_open,
        "mouth_opening": truth.opening.astype(np.float32),
        "speaking": truth.speaking,
        "speech": truth.speaking.any(0) if spec.has_audio else np.zeros(n, dtype=bool),
        "has_audio": np.bool_(spec.has_audio),
        "sample_rate": np.int64(sample_rate),
        "valence": truth.valence[:, :n],
        "arousal": truth.arousal[:, :n],
        "label_valid": valid[:, :n],
        "speech_turns": np.array([(t.face, t.start, t.end, t.rate) for t in truth.turns]).reshape(-1, 4),
    }


def write_sample_dataset(out: Path = Path("artifacts/sample"), config: SampleConfig = SampleConfig()) -> SampleSummary:
    """Writes the dataset under out/ and returns a summary (tracks per split, frame counts, paths)."""
    out = Path(out)
    label_dir = out / "annotations" / CHALLENGE_DIR
    truth_dir = out / "ground_truth"
    for directory in [label_dir / d for d in SPLIT_DIRS.values()] + [truth_dir]:
        directory.mkdir(parents=True, exist_ok=True)
    jobs = [(out, spec, index, config) for index, spec in enumerate(config.videos)]
    videos = {summary.stem: summary for summary in _run_jobs(jobs, config.workers)}
    track_map = {
        track: {"video": spec.stem, "face": face, "split": spec.split}
        for spec in config.videos
        for face, track in enumerate(spec.tracks())
    }
    splits = {s: [t for v in videos.values() if v.split == s for t in v.tracks] for s in (TRAIN, VAL, TEST)}
    test_names, submission = _write_test_lists(out / "annotations", splits[TEST], videos)
    (out / GROUND_TRUTH_INDEX).write_text(json.dumps(track_map, indent=1, sort_keys=True) + "\n")
    return SampleSummary(out, splits, videos, label_dir, truth_dir, test_names, submission)


def _run_jobs(jobs: list[tuple[Path, VideoSpec, int, SampleConfig]], workers: int) -> list[VideoSummary]:
    if workers <= 1 or len(jobs) <= 1:
        return [_write_video(*job) for job in jobs]
    # spawn, not fork: the caller may already run threads (MediaPipe, torch) that fork would break.
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
        return list(pool.map(_write_video, *zip(*jobs)))


def _write_video(out: Path, spec: VideoSpec, index: int, config: SampleConfig) -> VideoSummary:
    truth = _plan_video(spec, index, config)
    n = truth.n_frames
    valid = _label_valid(spec, n)
    audio = None
    if spec.has_audio:
        n_samples = int(round(n / spec.fps * config.sample_rate))
        rng = np.random.default_rng([config.seed, index, 2])
        audio = voice(rng, truth.turns, truth.f0s, truth.arousal, spec.fps, n_samples, config.sample_rate)
    path = out / "videos" / spec.subdir / f"{spec.stem}{spec.ext}"
    write_av_file(path, _frames(truth), spec.fps, audio, config.sample_rate)
    label_lines: dict[str, int] = {}
    for face, track in enumerate(spec.tracks()):
        rows = n + 1 if spec.extra_label_line else n
        if spec.split in SPLIT_DIRS:
            label = out / "annotations" / CHALLENGE_DIR / SPLIT_DIRS[spec.split] / f"{track}.txt"
            label.write_text(_label_text(truth.valence[face, :rows], truth.arousal[face, :rows], valid[face, :rows]))
            label_lines[track] = rows
        else:
            label_lines[track] = 0
            test_labels = out / TEST_LABELS_DIR
            test_labels.mkdir(parents=True, exist_ok=True)
            (test_labels / f"{track}.txt").write_text(_label_text(truth.valence[face, :n], truth.arousal[face, :n], valid[face, :n]))
    truth_arrays = _ground_truth(spec, truth, valid, config.sample_rate)
    np.savez_compressed(out / "ground_truth" / f"{spec.stem}.npz", **truth_arrays)
    return VideoSummary(
        spec.stem, path, spec.split, spec.fps, n, spec.n_faces, spec.has_audio, spec.tracks(), label_lines
    )


def _write_test_lists(annotations: Path, tracks: list[str], videos: dict[str, VideoSummary]) -> tuple[Path, Path]:
    frames = {t: v.n_frames for v in videos.values() for t in v.tracks}
    names = annotations / TEST_NAMES_NAME
    names.write_text("".join(f"{t}\n" for t in tracks))
    rows = [SUBMISSION_HEADER] + [f"{t}/{k:05d}.jpg,0,0" for t in tracks for k in range(1, frames[t] + 1)]
    submission = annotations / SUBMISSION_NAME
    submission.write_text("\n".join(rows) + "\n")
    return names, submission


if __name__ == "__main__":
    import sys

    result = write_sample_dataset(Path(sys.argv[1]) if len(sys.argv) > 1 else Path("artifacts/sample"))
    for split, names in result.splits.items():
        print(split, names)
