"""Qwen behaviour input: full frames (RAS) or face crops, RAS's prompt by name, both in the fingerprint;
stores made before the option keep their fingerprint; the frame hooks stream whole frames."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
torch.set_num_threads(1)

from cache.media import VideoInfo  # noqa: E402
from cache.store import FeatureMeta  # noqa: E402
from extract.base import CropBatch, VideoContext, identity_dict  # noqa: E402
from extract.qwen3vl import (  # noqa: E402
    RAS_PROMPT, ROWS, Qwen3vlConfig, Qwen3vlExtractor, build_tiny_qwen3vl, frame_shape, segment_images,
)


@pytest.fixture(scope="module")
def tiny_ref(tmp_path_factory) -> str:
    return str(build_tiny_qwen3vl(tmp_path_factory.mktemp("qwen3vl")))


def _fingerprint(cfg: Qwen3vlConfig, ref: str) -> str:
    return Qwen3vlExtractor(cfg, model_ref=ref).feature_meta().fingerprint


def test_input_and_prompt_are_in_the_fingerprint(tiny_ref):
    crops = Qwen3vlConfig(crop_size=64)
    frames = Qwen3vlConfig(crop_size=64, input="frames")
    ras = Qwen3vlConfig(crop_size=64, prompt="ras")
    assert ras.prompt == RAS_PROMPT and "valence (pleasant" in ras.prompt
    prints = {_fingerprint(c, tiny_ref) for c in (crops, frames, ras, Qwen3vlConfig(crop_size=64, input="frames", frame_size=224))}
    assert len(prints) == 4
    meta = Qwen3vlExtractor(ras, model_ref=tiny_ref).feature_meta()
    assert meta.config["prompt"] == RAS_PROMPT  # the text, not the name


def test_face_crop_stores_keep_their_old_fingerprint(tiny_ref):
    """A store extracted before the input option (config without input/frame_size) still matches."""
    cfg = Qwen3vlConfig(crop_size=64)
    ext = Qwen3vlExtractor(cfg, model_ref=tiny_ref)
    old = {k: v for k, v in identity_dict(cfg).items() if k not in ("input", "frame_size")}
    before = FeatureMeta(name="qwen3vl", kind="segment", unit="track", model_ref=ext.public_model_ref(),
                         weights_digest=ext.weights_digest(), config=old, version=ext.version)
    assert ext.feature_meta().fingerprint == before.fingerprint


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match="input must be one of"):
        Qwen3vlConfig(input="faces")
    with pytest.raises(ValueError, match="frame_size"):
        Qwen3vlConfig(frame_size=100)


def test_frames_input_sees_the_whole_frame():
    assert frame_shape(360, 640, 448) == (256, 448)
    rng = np.random.default_rng(0)
    frames = list(rng.integers(0, 255, (3, 360, 640, 3), dtype=np.uint8))
    boxes = np.array([[10.0, 10.0, 50.0, 60.0]] * 3)
    whole = segment_images(frames, boxes, Qwen3vlConfig(input="frames", frame_size=448))
    assert whole.shape == (3, 256, 448, 3)
    # the whole frame, not the box: the mean colour matches the frame's
    assert abs(float(whole[0].mean()) - float(frames[0].mean())) < 2.0
    crops = segment_images(frames, boxes, Qwen3vlConfig(crop_size=64))
    assert crops.shape == (3, 64, 64, 3)


def test_frame_hooks_stream_segments(tiny_ref):
    fps, n = 10.0, 57
    info = VideoInfo(path=None, fps=fps, n_frames=n, duration=n / fps, width=96, height=64, has_audio=True)
    video = VideoContext("vid", None, info, ["vid"])
    cfg = Qwen3vlConfig(batch_size=2, input="frames", frame_size=64, prompt="ras")
    ext = Qwen3vlExtractor(cfg, model_ref=tiny_ref)
    ext.load("cpu")
    state = ext.begin(video)
    frames = np.random.default_rng(1).integers(0, 255, (n, 64, 96, 3), dtype=np.uint8)
    for start in range(0, n, 16):
        idx = np.arange(start, min(start + 16, n))
        boxes = np.full((len(idx), 4), np.nan)  # no face at all: the frames are used whole anyway
        ext.process_crops(state, CropBatch("vid", list(frames[idx]), idx, np.stack([idx / fps, (idx + 1) / fps], 1), boxes))
    out = ext.end(state)["vid"]
    assert out.values.shape == (2, len(ROWS), 64) and out.valid.all() and np.isfinite(out.values).all()
