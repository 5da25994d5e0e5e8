"""Qwen3-VL segment embeddings: tiny model round trip, segment sampling, the crop hooks."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
torch.set_num_threads(1)

from cache.media import VideoInfo  # noqa: E402
from extract.base import CropBatch, VideoContext  # noqa: E402
from extract.qwen3vl import (  # noqa: E402
    ROWS,
    Qwen3vlConfig,
    Qwen3vlExtractor,
    build_tiny_qwen3vl,
    embed_segments,
    load_qwen3vl,
    segment_plan,
)

SMALL = Qwen3vlConfig(crop_size=64, batch_size=2)


@pytest.fixture(scope="module")
def tiny_ref(tmp_path_factory) -> str:
    return str(build_tiny_qwen3vl(tmp_path_factory.mktemp("qwen3vl")))


@pytest.fixture(scope="module")
def bundle(tiny_ref):
    return load_qwen3vl(tiny_ref)


def test_tiny_round_trip_through_the_real_loader(bundle):
    from transformers import Qwen3VLForConditionalGeneration, Qwen3VLProcessor, Qwen3VLVideoProcessor

    assert isinstance(bundle.model, Qwen3VLForConditionalGeneration)
    assert isinstance(bundle.processor, Qwen3VLProcessor)
    assert isinstance(bundle.processor.video_processor, Qwen3VLVideoProcessor)
    assert bundle.model.config.text_config.num_hidden_layers == 2 and bundle.dim == 64
    assert bundle.processor.tokenizer.convert_tokens_to_ids("<|video_pad|>") == bundle.video_token_id


def test_segment_plan_samples_16_frames_at_4_fps():
    times, index = segment_plan(250, 25.0, Qwen3vlConfig())  # 10 s
    np.testing.assert_allclose(times, [[0, 4], [2, 6], [4, 8], [6, 10]])
    assert index.shape == (4, 16)
    # the frame holding the midpoint of each 0.25 s slice
    np.testing.assert_array_equal(index[0], np.floor((np.arange(16) + 0.5) * 0.25 * 25).astype(int))
    assert (np.diff(index, axis=1) > 0).all() and index.max() == 246
    short_t, short_i = segment_plan(30, 10.0, Qwen3vlConfig())  # 3 s: one shorter segment, still 16 frames
    np.testing.assert_allclose(short_t, [[0, 3]])
    assert short_i.shape == (1, 16) and short_i.max() <= 29


def test_embeddings_mm_and_visual_rows(bundle):
    rng = np.random.default_rng(0)
    clips = [rng.integers(0, 255, (16, 64, 64, 3), dtype=np.uint8) for _ in range(3)]
    values, descriptions = embed_segments(bundle, clips, [4.0, 4.0, 4.0], SMALL)
    assert values.shape == (3, 4, 64) and np.isfinite(values).all() and descriptions is None
    assert not np.allclose(values[:, 0], values[:, 2])  # whole sequence vs visual tokens only
    assert not np.allclose(values[0], values[1])  # different clips, different embeddings
    one, _ = embed_segments(bundle, clips[:1], [4.0], SMALL)  # batching does not change a segment
    np.testing.assert_allclose(one[0], values[0], atol=1e-4)
    cfg = Qwen3vlConfig(crop_size=64, describe=True, max_new_tokens=4)
    _, texts = embed_segments(bundle, clips[:2], [4.0, 4.0], cfg)
    assert isinstance(texts, list) and len(texts) == 2 and all(isinstance(t, str) for t in texts)


def test_prompt_is_part_of_the_fingerprint(tiny_ref):
    a = Qwen3vlExtractor(SMALL, profile="tiny", model_ref=tiny_ref)
    b = Qwen3vlExtractor(Qwen3vlConfig(crop_size=64, batch_size=2, prompt="How does this person feel?"), model_ref=tiny_ref)
    assert a.feature_meta().fingerprint != b.feature_meta().fingerprint
    assert a.feature_meta().config["prompt"] == SMALL.prompt


def test_crop_hooks_stream_segments(tiny_ref):
    """Drive the extractor as the runner does: per-track crop batches in order, then `end`."""
    fps, n = 10.0, 57  # 5.7 s -> segments [0,4), [2,5.7)
    info = VideoInfo(path=None, fps=fps, n_frames=n, duration=n / fps, width=96, height=64, has_audio=True)
    video = VideoContext("vid", None, info, ["vid_left", "vid_right"])
    ext = Qwen3vlExtractor(Qwen3vlConfig(crop_size=64, batch_size=1, describe=True, max_new_tokens=3), model_ref=tiny_ref)
    ext.load("cpu")
    state = ext.begin(video)
    rng = np.random.default_rng(1)
    frames = rng.integers(0, 255, (n, 64, 96, 3), dtype=np.uint8)
    box = np.array([10.0, 8.0, 40.0, 50.0])
    for track in video.tracks:
        for start in range(0, n, 16):
            idx = np.arange(start, min(start + 16, n))
            boxes = np.tile(box, (len(idx), 1))
            if track == "vid_right":
                boxes[::3] = np.nan  # no face on some frames: the whole frame is used
            batch = CropBatch(track, list(frames[idx]), idx, np.stack([idx / fps, (idx + 1) / fps], 1), boxes)
            ext.process_crops(state, batch)
    out = ext.end(state)
    assert set(out) == {"vid_left", "vid_right"}
    for track, result in out.items():
        np.testing.assert_allclose(result.times, [[0, 4], [2, 5.7]])
        assert result.values.shape == (2, len(ROWS), 64) and result.valid.all()
        assert result.attrs["row_names"] == list(ROWS) and len(result.attrs["descriptions"]) == 2
    assert not np.allclose(out["vid_left"].values, out["vid_right"].values)
