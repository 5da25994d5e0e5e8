"""`faces`: face detection, tracking and the target face per label track.

Detectors: ultralytics YOLO with a face weights file (profile `full` with `--face-weights`), or the
MediaPipe face detector that ships in the mediapipe wheel (offline; default for `tiny`, and for `full`
when no face weights are given). Per frame the detections are associated to label tracks: a plain track
keeps the face that overlaps its previous box (IoU), else the largest face; `_left`/`_right` tracks take
the left/right one of the two largest faces (one face alone goes to the side whose last box is nearest).
Frames with no detection take the nearest detected box of the same track within `max_gap_s` seconds
(before or after; the earlier wins a tie) and are invalid beyond it. Boxes are resolved online with a
bounded look-ahead, so the crop extractors in the same pass use exactly the stored boxes.

Stored per track: values (N, 5) = normalised x1, y1, x2, y2 and the detection score (0 for a filled
frame), valid (N,), times from the container fps.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cache.manifest import track_side
from extract.base import FrameBatch, FrameExtractor, UnitResult, VideoContext, register

log = logging.getLogger(__name__)


@dataclass
class FacesConfig:
    detector: str = "auto"  # auto (yolo when face weights are given, else mediapipe) | yolo | mediapipe
    min_score: float = 0.5
    mediapipe_model: int = 1  # 0: short range (faces within ~2 m), 1: full range
    nms_iou: float = 0.5  # duplicate detections of one face are merged above this IoU
    yolo_imgsz: int = 640
    max_gap_s: float = 0.5  # nearest-box fill limit
    iou_match: float = 0.3  # keep following the previous face above this IoU
    min_rel_area: float = 0.15  # for two-person videos, ignore faces smaller than this x the largest


def iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of one box a (4,) against boxes b (k, 4)."""
    x1 = np.maximum(a[0], b[:, 0])
    y1 = np.maximum(a[1], b[:, 1])
    x2 = np.minimum(a[2], b[:, 2])
    y2 = np.minimum(a[3], b[:, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area = lambda z: np.clip(z[..., 2] - z[..., 0], 0, None) * np.clip(z[..., 3] - z[..., 1], 0, None)  # noqa: E731
    return inter / np.maximum(area(a) + area(b) - inter, 1e-12)


def nms(dets: np.ndarray, threshold: float) -> np.ndarray:
    """Greedy non-maximum suppression by score on (k, 5) detections."""
    order = np.argsort(-dets[:, 4], kind="stable")
    kept: list[int] = []
    for i in order:
        if not kept or iou(dets[i, :4], dets[kept, :4]).max() <= threshold:
            kept.append(int(i))
    return dets[kept]


def _area(boxes: np.ndarray) -> np.ndarray:
    return (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])


def _centre(box: np.ndarray) -> np.ndarray:
    return np.array([(box[0] + box[2]) / 2, (box[1] + box[3]) / 2])


# ---- detectors ----------------------------------------------------------------------------------------
class MediaPipeDetector:
    """mediapipe.solutions.face_detection on RGB frames; boxes normalised to [0, 1]."""

    def __init__(self, model_selection: int = 1, min_score: float = 0.5):
        import mediapipe as mp

        self._det = mp.solutions.face_detection.FaceDetection(
            model_selection=model_selection, min_detection_confidence=min_score
        )

    def __call__(self, frames: np.ndarray) -> list[np.ndarray]:
        out = []
        for frame in frames:
            result = self._det.process(np.ascontiguousarray(frame))
            rows = []
            for d in result.detections or []:
                b = d.location_data.relative_bounding_box
                rows.append([b.xmin, b.ymin, b.xmin + b.width, b.ymin + b.height, d.score[0]])
            dets = np.asarray(rows, dtype=np.float64).reshape(-1, 5)
            dets[:, :4] = np.clip(dets[:, :4], 0.0, 1.0)
            out.append(dets)
        return out

    def close(self) -> None:
        self._det.close()

    @staticmethod
    def model_file(model_selection: int) -> Path:
        import mediapipe

        name = "face_detection_full_range_sparse.tflite" if model_selection else "face_detection_short_range.tflite"
        return Path(mediapipe.__file__).parent / "modules" / "face_detection" / name


class YoloDetector:
    """An ultralytics YOLO face model (loaded through `extract.models.load_yolo`)."""

    def __init__(self, ref: str, device: str, imgsz: int = 640, min_score: float = 0.5):
        from extract.models import load_yolo

        self._model = load_yolo(ref, device)
        self._device, self._imgsz, self._conf = device, imgsz, min_score

    def __call__(self, frames: np.ndarray) -> list[np.ndarray]:
        bgr = [np.ascontiguousarray(f[..., ::-1]) for f in frames]  # ultralytics takes BGR arrays
        results = self._model.predict(
            bgr, imgsz=self._imgsz, conf=self._conf, device=self._device, verbose=False,
            half=self._device.startswith("cuda"),
        )
        out = []
        for r in results:
            boxes = r.boxes.xyxyn.float().cpu().numpy().reshape(-1, 4)
            conf = r.boxes.conf.float().cpu().numpy().reshape(-1, 1)
            out.append(np.concatenate([boxes, conf], axis=1).astype(np.float64))
        return out

    def close(self) -> None:
        self._model = None


# ---- association and gap filling ----------------------------------------------------------------------
@dataclass
class FinalBox:
    index: int
    box: np.ndarray  # normalised x1, y1, x2, y2 (NaN when invalid)
    score: float
    valid: bool


@dataclass
class _TrackState:
    side: str | None
    last_box: np.ndarray | None = None
    prev_index: int | None = None
    prev: tuple[np.ndarray, float] | None = None
    pending: deque = field(default_factory=deque)
    ready: list[FinalBox] = field(default_factory=list)


class TrackResolver:
    """Associates per-frame detections to label tracks and fills gaps with the nearest box (online)."""

    def __init__(self, tracks: list[str], fps: float, config: FacesConfig, stem: str | None = None):
        self.config = config
        self.limit = int(np.floor(config.max_gap_s * fps + 1e-9))
        # a track named as its video (`stem`) is that video's one person, whatever its name ends with
        # (a bare video x_left.mp4 is not the left face of x.mp4)
        sides = {t: track_side(t) if t != stem else None for t in tracks}
        present = {s for s in sides.values() if s}
        if present and None in sides.values():  # e.g. video59 + video59_right: the plain one is the other side
            other = "left" if present == {"right"} else "right" if present == {"left"} else None
            sides = {t: (s or other) for t, s in sides.items()}
        self.states = {t: _TrackState(side=s) for t, s in sides.items()}
        self.two_person = any(s is not None for s in sides.values())

    def _choose(self, dets: np.ndarray) -> dict[str, np.ndarray | None]:
        choice: dict[str, np.ndarray | None] = {t: None for t in self.states}
        if not len(dets):
            return choice
        dets = nms(dets, self.config.nms_iou)
        areas = _area(dets)
        if not self.two_person:
            for t, st in self.states.items():
                pick = int(np.argmax(areas))
                if st.last_box is not None:
                    overlaps = iou(st.last_box, dets[:, :4])
                    if overlaps.max() >= self.config.iou_match:
                        pick = int(np.argmax(overlaps))
                choice[t] = dets[pick]
            return choice
        keep = dets[areas >= self.config.min_rel_area * areas.max()]
        keep = keep[np.argsort(-_area(keep))][:2]
        by_side: dict[str, np.ndarray] = {}
        if len(keep) == 2:
            left, right = sorted(keep, key=lambda d: _centre(d)[0])
            by_side = {"left": left, "right": right}
        else:
            det = keep[0]
            c = _centre(det)
            dist = {
                st.side: np.linalg.norm(_centre(st.last_box) - c)
                for st in self.states.values()
                if st.side and st.last_box is not None
            }
            if dist:
                side = min(dist, key=dist.get)
                if len(dist) == 1 and dist[side] > 0.25:  # far from the only known face: the other one
                    side = "left" if c[0] < 0.5 else "right"
            else:
                side = "left" if c[0] < 0.5 else "right"
            by_side = {side: det}
        for t, st in self.states.items():
            choice[t] = by_side.get(st.side) if st.side else None
        return choice

    def update(self, index: int, dets: np.ndarray) -> None:
        for t, det in self._choose(dets).items():
            st = self.states[t]
            if det is None:
                st.pending.append(index)
                while st.pending and index - st.pending[0] > self.limit:
                    self._finalise_gap(st, st.pending.popleft(), None)
                continue
            box, score = det[:4].astype(np.float32).astype(np.float64), float(np.float32(det[4]))
            while st.pending:
                self._finalise_gap(st, st.pending.popleft(), (index, box))
            st.ready.append(FinalBox(index, box, score, True))
            st.last_box, st.prev_index, st.prev = box, index, (box, score)

    def _finalise_gap(self, st: _TrackState, j: int, nxt: tuple[int, np.ndarray] | None) -> None:
        d_prev = j - st.prev_index if st.prev_index is not None else None
        d_next = nxt[0] - j if nxt is not None else None
        options = [(d, 0, b) for d, b in ((d_prev, st.prev[0] if st.prev else None), (d_next, nxt[1] if nxt else None)) if d is not None]
        best = min(options, key=lambda o: (o[0], o[1]), default=None) if options else None
        if best is not None and best[0] <= self.limit:
            st.ready.append(FinalBox(j, best[2].copy(), 0.0, True))
        else:
            st.ready.append(FinalBox(j, np.full(4, np.nan), 0.0, False))

    def flush(self) -> None:
        for st in self.states.values():
            while st.pending:
                self._finalise_gap(st, st.pending.popleft(), None)

    def pop_ready(self) -> dict[str, list[FinalBox]]:
        out = {}
        for t, st in self.states.items():
            out[t], st.ready = st.ready, []
        return out


# ---- the extractor ----------------------------------------------------------------------------------
@dataclass
class _FacesState:
    video: VideoContext
    resolver: TrackResolver
    rows: dict[str, list[FinalBox]]


@register
class FacesExtractor(FrameExtractor):
    """Face boxes per label track. Also the box source for crop extractors in the same pass."""

    name = "faces"
    Config = FacesConfig
    kind = "frame"
    unit = "track"
    version = "1"
    store_dtype = "float32"

    def __init__(self, config: FacesConfig | None = None, profile: str = "full", model_ref: str | None = None, **kw: Any):
        super().__init__(config, profile, model_ref, **kw)
        detector = self.config.detector
        if detector == "auto":
            detector = "yolo" if model_ref else "mediapipe"
            if profile == "full" and not model_ref:
                log.info("faces: no face weights given (--face-weights); using the MediaPipe face detector")
        if detector not in ("yolo", "mediapipe"):
            raise ValueError(f"faces: unknown detector {detector!r}")
        self.detector_kind = detector
        self.family = "yolo_face" if detector == "yolo" else None
        self.config = type(self.config)(**{**self.config.__dict__, "detector": detector})
        self._detector: Any = None

    def default_model_ref(self) -> str:
        return f"mediapipe:face_detection:{self.config.mediapipe_model}"

    def weights_digest(self) -> str:
        if self.detector_kind == "mediapipe":
            from extract.models import path_digest

            return path_digest(MediaPipeDetector.model_file(self.config.mediapipe_model))
        return super().weights_digest()

    def load(self, device: str = "cpu") -> None:
        super().load(device)
        if self.detector_kind == "yolo":
            self._detector = YoloDetector(self.model_ref, device, self.config.yolo_imgsz, self.config.min_score)
        else:
            self._detector = MediaPipeDetector(self.config.mediapipe_model, self.config.min_score)

    def detect(self, frames: np.ndarray) -> list[np.ndarray]:
        """Normalised detections (k, 5) per frame: x1, y1, x2, y2, score."""
        return self._detector(frames)

    def begin(self, video: VideoContext) -> _FacesState:
        return _FacesState(video, TrackResolver(video.tracks, video.fps, self.config, video.stem), {t: [] for t in video.tracks})

    def process_frames(self, state: _FacesState, batch: FrameBatch) -> None:
        dets = batch.memo("faces.detections", lambda: self.detect(batch.frames))
        for index, d in zip(batch.indices, dets):
            state.resolver.update(int(index), d)

    def pop_ready(self, state: _FacesState, final: bool = False) -> dict[str, list[FinalBox]]:
        """Boxes that are final now (all of them when `final`); also kept for the stored result."""
        if final:
            state.resolver.flush()
        ready = state.resolver.pop_ready()
        for t, rows in ready.items():
            state.rows[t].extend(rows)
        return ready

    def end(self, state: _FacesState) -> dict[str, UnitResult]:
        self.pop_ready(state, final=True)
        fps = state.video.fps
        out = {}
        for t, rows in state.rows.items():
            n = len(rows)
            values = np.zeros((n, 5), dtype=np.float32)
            valid = np.zeros(n, dtype=bool)
            for i, r in enumerate(rows):
                if r.valid:
                    values[i, :4], values[i, 4], valid[i] = r.box, r.score, True
            idx = np.array([r.index for r in rows], dtype=np.float64)
            times = np.stack([idx / fps, (idx + 1) / fps], axis=1) if n else np.zeros((0, 2))
            detected = int((values[:, 4] > 0).sum())
            out[t] = UnitResult(values, times, valid, {"detected_frames": detected, "detector": self.detector_kind})
            if not valid.any():
                log.warning("%s: no face found for track %s (all frames invalid)", state.video.path, t)
        return out

    def close(self) -> None:
        if self._detector is not None:
            self._detector.close()
            self._detector = None


class StoredBoxes:
    """The box source when `faces` is already complete: boxes read back from the faces store."""

    def __init__(self, groups: dict[str, Any]):
        self._rows = {t: (g.values, g.valid) for t, g in groups.items()}
        self._next = 0

    def take(self, indices: Iterable[int]) -> dict[str, list[FinalBox]]:
        idx = list(indices)
        out: dict[str, list[FinalBox]] = {}
        for t, (values, valid) in self._rows.items():
            rows = []
            for i in idx:
                if i < len(values) and valid[i]:
                    rows.append(FinalBox(i, values[i, :4].astype(np.float64), float(values[i, 4]), True))
                else:
                    rows.append(FinalBox(i, np.full(4, np.nan), 0.0, False))
            out[t] = rows
        return out
