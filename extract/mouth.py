"""`mouth` and `landmarks`: one MediaPipe face-mesh pass on each face crop, two features.

mouth      values (N, 2): mouth-opening ratio (inner-lip gap / inner mouth width) and a smoothed open flag
           (hysteresis on thresholds relative to the track's closed-mouth baseline, closed gaps
           <= `fill_closed_s` filled, open blips <= `drop_open_s` removed).
landmarks  values (N, 2 * len(LANDMARK_POINTS) + len(RATIO_NAMES)): a chosen subset of mesh points around
           brows, eyes, nose, lips and jaw, centred on the eyes' midpoint, rotated to level the eyes and
           scaled by the inter-ocular distance, then expression ratios and head-pose proxies.
Frames without a face box or where the mesh finds no face are invalid (values 0).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cache.audio_windows import fill_gaps_drop_blips
from extract.base import CropBatch, CropExtractor, UnitResult, VideoContext, crop_faces, register

log = logging.getLogger(__name__)

# MediaPipe face-mesh (468) indices. Eyes: 33/133 (one eye's corners), 362/263 (the other's).
LANDMARK_POINTS: tuple[int, ...] = (
    70, 63, 105, 66, 107, 336, 296, 334, 293, 300,  # brows
    33, 160, 158, 133, 153, 144, 362, 385, 387, 263, 373, 380,  # eyes
    168, 6, 1, 98, 327,  # nose
    61, 40, 37, 0, 267, 270, 291, 321, 314, 17, 84, 91,  # outer lips
    78, 82, 13, 312, 308, 317, 14, 87,  # inner lips
    10, 234, 454, 172, 397, 136, 365, 152,  # forehead, cheeks, jaw, chin
)
RATIO_NAMES: tuple[str, ...] = (
    "mouth_open", "mouth_width", "corner_lift", "brow_raise_a", "brow_raise_b", "eye_open_a", "eye_open_b",
    "roll", "yaw", "pitch", "jaw_drop", "upper_lip_nose",
)


@dataclass
class MeshConfig:
    crop_size: int = 256
    crop_margin: float = 0.25
    min_detection_confidence: float = 0.3
    refine_landmarks: bool = False


def mesh_model_files() -> list[Path]:
    import mediapipe

    root = Path(mediapipe.__file__).parent / "modules"
    return [root / "face_landmark" / "face_landmark.tflite", root / "face_detection" / "face_detection_short_range.tflite"]


class FaceMesh:
    """mediapipe.solutions.face_mesh in static-image mode (results do not depend on earlier frames)."""

    def __init__(self, config: MeshConfig):
        import mediapipe as mp

        self.config = config
        self._mesh = mp.solutions.face_mesh.FaceMesh(
            static_image_mode=True, max_num_faces=1, refine_landmarks=config.refine_landmarks,
            min_detection_confidence=config.min_detection_confidence,
        )

    def __call__(self, batch: CropBatch) -> tuple[np.ndarray, np.ndarray]:
        """Landmarks (B, 468, 3) in crop pixels (z scaled like x) and found (B,)."""
        size = self.config.crop_size
        crops = crop_faces(batch.frames, batch.boxes, size, self.config.crop_margin)
        points = np.zeros((len(crops), 468, 3), dtype=np.float32)
        found = np.zeros(len(crops), dtype=bool)
        for i, (crop, ok) in enumerate(zip(crops, batch.has_box)):
            if not ok:
                continue
            result = self._mesh.process(crop)
            if not result.multi_face_landmarks:
                continue
            lm = result.multi_face_landmarks[0].landmark
            points[i] = np.array([(p.x, p.y, p.z) for p in lm[:468]], dtype=np.float32) * size
            found[i] = True
        return points, found

    def close(self) -> None:
        self._mesh.close()


def shared_mesh(batch: CropBatch, mesh: FaceMesh) -> tuple[np.ndarray, np.ndarray]:
    """The face-mesh pass of a crop batch, computed once for every extractor that asks (same config)."""
    c = mesh.config
    key = f"face_mesh:{c.crop_size}:{c.crop_margin}:{c.min_detection_confidence}:{c.refine_landmarks}"
    return batch.memo(key, lambda: mesh(batch))


def mouth_ratio(points: np.ndarray) -> np.ndarray:
    """Inner-lip gap (13-14) over inner mouth width (78-308), per frame."""
    gap = np.linalg.norm(points[:, 13, :2] - points[:, 14, :2], axis=1)
    width = np.linalg.norm(points[:, 78, :2] - points[:, 308, :2], axis=1)
    return gap / np.maximum(width, 1e-6)


def smooth_open_flag(
    ratio: np.ndarray, valid: np.ndarray, fps: float, on: float, off: float, fill_closed_s: float, drop_open_s: float
) -> np.ndarray:
    """Hysteresis (open above `on`, closed below `off`), then fill short closed gaps between open runs,
    then drop short open blips. Invalid frames count as closed."""
    flag = np.zeros(len(ratio), dtype=bool)
    state = False
    for i, (r, ok) in enumerate(zip(ratio, valid)):
        if not ok:
            state = False
        elif state and r < off:
            state = False
        elif not state and r > on:
            state = True
        flag[i] = state
    return fill_gaps_drop_blips(flag, fill_closed_s * fps + 1e-9, drop_open_s * fps + 1e-9)


@dataclass
class MouthConfig:
    mesh: MeshConfig = field(default_factory=MeshConfig)
    # adaptive: open above max(open_on_min, baseline + open_on), closed below max(open_off_min, baseline +
    # open_off), baseline = a low percentile of the track's ratios; fixed: open_on / open_off themselves
    threshold_mode: str = "adaptive"
    baseline_percentile: float = 10.0
    open_on: float = 0.10
    open_off: float = 0.06
    open_on_min: float = 0.28
    open_off_min: float = 0.23
    fill_closed_s: float = 0.15
    drop_open_s: float = 0.20


@dataclass
class LandmarksConfig:
    mesh: MeshConfig = field(default_factory=MeshConfig)


class _MeshExtractor(CropExtractor):
    family = None
    requires = ("faces",)

    def __init__(self, config: Any | None = None, profile: str = "full", model_ref: str | None = None, **kw: Any):
        super().__init__(config, profile, model_ref, **kw)
        self._mesh: FaceMesh | None = None

    def default_model_ref(self) -> str:
        return "mediapipe:face_mesh"

    def weights_digest(self) -> str:
        from extract.models import _hash_file
        import hashlib

        h = hashlib.sha256()
        for path in mesh_model_files():
            _hash_file(path, h)
        return h.hexdigest()[:16]

    def load(self, device: str = "cpu") -> None:
        super().load(device)
        self._mesh = FaceMesh(self.config.mesh)

    def begin(self, video: VideoContext) -> dict[str, Any]:
        return {"video": video, "rows": {t: [] for t in video.tracks}}

    def close(self) -> None:
        if self._mesh is not None:
            self._mesh.close()
            self._mesh = None


@register
class MouthExtractor(_MeshExtractor):
    name = "mouth"
    Config = MouthConfig
    version = "1"

    def process_crops(self, state: dict[str, Any], batch: CropBatch) -> None:
        points, found = shared_mesh(batch, self._mesh)
        ratio = np.where(found, mouth_ratio(points), 0.0)
        state["rows"][batch.track].append((batch.indices.copy(), batch.times.copy(), ratio, found))

    def end(self, state: dict[str, Any]) -> dict[str, UnitResult]:
        video: VideoContext = state["video"]
        cfg: MouthConfig = self.config
        out = {}
        for track, rows in state["rows"].items():
            times = np.concatenate([r[1] for r in rows]) if rows else np.zeros((0, 2))
            ratio = np.concatenate([r[2] for r in rows]) if rows else np.zeros(0)
            valid = np.concatenate([r[3] for r in rows]) if rows else np.zeros(0, dtype=bool)
            base = float(np.percentile(ratio[valid], cfg.baseline_percentile)) if valid.any() else 0.0
            if cfg.threshold_mode == "adaptive":
                on, off = max(cfg.open_on_min, base + cfg.open_on), max(cfg.open_off_min, base + cfg.open_off)
            else:
                on, off = cfg.open_on, cfg.open_off
            flag = smooth_open_flag(ratio, valid, video.fps, on, off, cfg.fill_closed_s, cfg.drop_open_s)
            values = np.stack([ratio, flag.astype(np.float32)], axis=1).astype(np.float32)
            attrs = {"columns": ["opening_ratio", "open"], "baseline": base, "threshold_on": on, "threshold_off": off}
            out[track] = UnitResult(values, times, valid, attrs)
        return out


def landmark_vector(points: np.ndarray) -> np.ndarray:
    """(B, 468, 3) crop-pixel landmarks -> (B, 2 * len(LANDMARK_POINTS) + len(RATIO_NAMES)) geometry."""
    xy = points[:, :, :2].astype(np.float64)
    eye_a = (xy[:, 33] + xy[:, 133]) / 2
    eye_b = (xy[:, 362] + xy[:, 263]) / 2
    mid = (eye_a + eye_b) / 2
    d = eye_b - eye_a
    iod = np.maximum(np.linalg.norm(d, axis=1), 1e-6)
    roll = np.arctan2(d[:, 1], d[:, 0])
    c, s = np.cos(-roll), np.sin(-roll)
    rot = np.stack([np.stack([c, -s], 1), np.stack([s, c], 1)], 1)  # (B, 2, 2)
    aligned = np.einsum("bij,bnj->bni", rot, xy - mid[:, None]) / iod[:, None, None]

    def p(i: int) -> np.ndarray:
        return aligned[:, i]

    def dist(i: int, j: int) -> np.ndarray:
        return np.linalg.norm(p(i) - p(j), axis=1)

    lip_mid_y = (p(13)[:, 1] + p(14)[:, 1]) / 2
    mouth_mid_y = (p(0)[:, 1] + p(17)[:, 1]) / 2
    ratios = np.stack(
        [
            dist(13, 14) / np.maximum(dist(78, 308), 1e-6),
            dist(61, 291),
            lip_mid_y - (p(61)[:, 1] + p(291)[:, 1]) / 2,  # > 0 when the corners are above the lip centre
            p(159)[:, 1] - p(105)[:, 1],
            p(386)[:, 1] - p(334)[:, 1],
            dist(159, 145) / np.maximum(dist(33, 133), 1e-6),
            dist(386, 374) / np.maximum(dist(362, 263), 1e-6),
            roll,
            p(1)[:, 0],
            p(1)[:, 1] / np.maximum(mouth_mid_y, 1e-6),
            p(152)[:, 1],
            p(13)[:, 1] - p(1)[:, 1],
        ],
        axis=1,
    )
    subset = aligned[:, list(LANDMARK_POINTS)].reshape(len(points), -1)
    return np.concatenate([subset, ratios], axis=1).astype(np.float32)


@register
class LandmarksExtractor(_MeshExtractor):
    name = "landmarks"
    Config = LandmarksConfig
    version = "1"
    dim = 2 * len(LANDMARK_POINTS) + len(RATIO_NAMES)

    def process_crops(self, state: dict[str, Any], batch: CropBatch) -> None:
        points, found = shared_mesh(batch, self._mesh)
        values = np.zeros((len(points), self.dim), dtype=np.float32)
        if found.any():
            values[found] = landmark_vector(points[found])
        state["rows"][batch.track].append((batch.times.copy(), values, found))

    def end(self, state: dict[str, Any]) -> dict[str, UnitResult]:
        out = {}
        for track, rows in state["rows"].items():
            times = np.concatenate([r[0] for r in rows]) if rows else np.zeros((0, 2))
            values = np.concatenate([r[1] for r in rows]) if rows else np.zeros((0, self.dim), dtype=np.float32)
            valid = np.concatenate([r[2] for r in rows]) if rows else np.zeros(0, dtype=bool)
            attrs = {"points": list(LANDMARK_POINTS), "ratios": list(RATIO_NAMES)}
            out[track] = UnitResult(values, times, valid, attrs)
        return out
