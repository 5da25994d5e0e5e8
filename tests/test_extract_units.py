"""Fast unit tests of stage 1 pieces: interface, decoding fallback, tracking, smoothing, model round trips."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
torch.set_num_threads(1)

from cache.media import MediaError  # noqa: E402
from cache.sample_data import write_av_file  # noqa: E402
from extract import decode  # noqa: E402
from extract.base import available, get_extractor, with_dependencies  # noqa: E402
from extract.faces import FacesConfig, TrackResolver  # noqa: E402
from extract.mouth import smooth_open_flag  # noqa: E402


def test_registry_and_dependencies() -> None:
    assert {"faces", "mouth", "landmarks", "clip"} <= set(available())
    assert with_dependencies(["clip", "mouth"]) == ["faces", "clip", "mouth"]
    cls = get_extractor("mouth")
    assert cls.requires == ("faces",) and cls.kind == "frame" and cls.unit == "track"
    with pytest.raises(KeyError):
        get_extractor("nope")


def test_fingerprint_covers_config_and_dependencies() -> None:
    from extract.mouth import MouthConfig, MouthExtractor

    a = MouthExtractor(profile="tiny")
    b = MouthExtractor(MouthConfig(fill_closed_s=0.3), profile="tiny")
    assert a.feature_meta().fingerprint != b.feature_meta().fingerprint
    c = MouthExtractor(profile="tiny")
    c.dependency_fingerprints = {"faces": "x"}
    assert c.feature_meta().fingerprint != a.feature_meta().fingerprint
    assert a.feature_meta().weights_digest  # digest of the face-mesh model files


def _video(path: Path, n: int = 12) -> np.ndarray:
    frames = np.stack([np.full((64, 80, 3), 10 * k, dtype=np.uint8) for k in range(n)])
    write_av_file(path, frames, 10.0)
    return frames


def test_decode_chunks_and_pyav_fallback(tmp_path: Path, monkeypatch, caplog) -> None:
    path = tmp_path / "v.avi"
    frames = _video(path)
    chunks = list(decode.iter_chunks(path, chunk=5))
    assert [len(c.frames) for c in chunks] == [5, 5, 2] and chunks[1].start == 5
    direct = np.concatenate([c.frames for c in chunks])

    def broken(*a, **k):
        raise RuntimeError("DECORDError: cannot open")
        yield  # pragma: no cover

    monkeypatch.setattr(decode, "decord_chunks", broken)
    with caplog.at_level(logging.WARNING):
        fallback = list(decode.iter_chunks(path, chunk=5))
    assert "falling back to PyAV" in caplog.text
    got = np.concatenate([c.frames for c in fallback])
    assert got.shape == direct.shape and np.abs(got.astype(int) - direct.astype(int)).mean() < 3
    assert abs(float(got[:, ..., 0].mean()) - float(frames[..., 0].mean())) < 5


def test_decode_errors_are_one_line(tmp_path: Path) -> None:
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    with pytest.raises(MediaError, match="empty file"):
        list(decode.iter_chunks(empty))
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(os.urandom(3000))
    with pytest.raises(MediaError) as info:
        with decode.prefetch_chunks(junk, 8) as chunks:
            list(chunks)
    assert "junk.mp4" in str(info.value) and "\n" not in str(info.value)


def test_track_resolver_fills_nearest_within_limit() -> None:
    cfg = FacesConfig(max_gap_s=0.2)  # 2 frames at 10 fps
    r = TrackResolver(["v"], fps=10.0, config=cfg)
    a = np.array([[0.1, 0.1, 0.3, 0.3, 0.9]])
    b = np.array([[0.12, 0.1, 0.32, 0.3, 0.8]])
    none = np.zeros((0, 5))
    seq = [a, none, none, none, none, none, b, none]
    for i, d in enumerate(seq):
        r.update(i, d)
    r.flush()
    rows = r.pop_ready()["v"]
    assert [x.index for x in rows] == list(range(8))
    valid = [x.valid for x in rows]
    assert valid == [True, True, True, False, True, True, True, True]
    np.testing.assert_allclose(rows[1].box, a[0, :4], atol=1e-6)  # nearest is the earlier one
    np.testing.assert_allclose(rows[5].box, b[0, :4], atol=1e-6)  # nearest is the later one
    assert rows[0].score > 0 and rows[1].score == 0  # filled frames carry score 0


def test_side_tracks_take_left_and_right_faces() -> None:
    r = TrackResolver(["v_left", "v_right"], fps=10.0, config=FacesConfig())
    left = [0.05, 0.2, 0.35, 0.7, 0.9]
    right = [0.6, 0.2, 0.9, 0.7, 0.9]
    r.update(0, np.array([right, left]))
    r.update(1, np.array([right]))  # one face alone goes to the side it was on
    r.flush()
    out = r.pop_ready()
    assert out["v_left"][0].box[0] == pytest.approx(0.05) and out["v_right"][0].box[0] == pytest.approx(0.6)
    assert out["v_right"][1].score > 0 and out["v_left"][1].score == 0


def test_open_flag_hysteresis_and_smoothing() -> None:
    fps = 20.0
    ratio = np.full(60, 0.1)
    ratio[10:20] = 0.5  # open 0.5 s
    ratio[22:30] = 0.5  # after a 0.1 s closed gap -> filled
    ratio[45:48] = 0.5  # a 0.15 s blip -> dropped
    ratio[30:32] = 0.2  # between thresholds right after an open run: stays open (hysteresis)
    flag = smooth_open_flag(ratio, np.ones(60, bool), fps, on=0.3, off=0.15, fill_closed_s=0.15, drop_open_s=0.2)
    assert flag[10:32].all() and not flag[:10].any() and not flag[32:].any()


def test_tiny_clip_round_trips_through_the_real_loader(tmp_path: Path) -> None:
    from extract.models import load_open_clip, resolve_model_ref, split_clip_ref

    ref = resolve_model_ref("open_clip", "tiny", tmp_path)
    name, weights = split_clip_ref(ref)
    assert Path(weights).is_file() and Path(weights).parent == (tmp_path / "tiny" / "open_clip").resolve()
    model, preprocess, tokenizer = load_open_clip(ref)
    saved = torch.load(weights, map_location="cpu")
    for key, value in model.state_dict().items():
        torch.testing.assert_close(value, saved[key])
    assert resolve_model_ref("open_clip", "tiny", tmp_path) == ref  # built once
    assert resolve_model_ref("open_clip", "full", tmp_path) == "ViT-B-16:openai"
    with torch.inference_mode():
        image = preprocess(__import__("PIL.Image", fromlist=["Image"]).fromarray(np.zeros((50, 40, 3), np.uint8)))
        assert model.encode_image(image[None]).shape == (1, 64)
        assert model.encode_text(tokenizer(["a face"])).shape == (1, 64)


def test_tiny_yolo_face_model_round_trips(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("YOLO_CONFIG_DIR", str(tmp_path / "yolo"))
    from extract.faces import FacesExtractor
    from extract.models import resolve_model_ref

    ref = resolve_model_ref("yolo_face", "tiny", tmp_path)
    ext = FacesExtractor(profile="full", model_ref=ref)
    assert ext.detector_kind == "yolo" and ext.feature_meta().weights_digest != ""
    ext.load("cpu")
    dets = ext.detect(np.zeros((2, 64, 96, 3), np.uint8))
    assert len(dets) == 2 and all(d.shape[1] == 5 for d in dets)
    assert ext._detector._model.names == {0: "face"}
    ext.close()
    assert FacesExtractor(profile="full").detector_kind == "mediapipe"  # no face weights: MediaPipe


def test_a_model_that_cannot_load_fails_the_run_once(tmp_path: Path) -> None:
    """Missing weights (e.g. no network for PROFILE=full) end the run with one line, not one failure per video."""
    from extract.base import FrameExtractor, register, unregister
    from extract.runner import ExtractionError, RunOptions
    from extract.backends import run_extraction

    loads = []

    @register
    class Unloadable(FrameExtractor):
        name = "unloadable"

        def load(self, device: str = "cpu") -> None:
            loads.append(device)
            raise OSError("weights not found: no network\nsecond line")

        def process_frames(self, state, batch) -> None:  # never reached
            raise AssertionError

        def end(self, state):
            raise AssertionError

    try:
        labels = tmp_path / "data/annotations/VA_Estimation_Challenge/Train_Set"
        labels.mkdir(parents=True)
        for stem in ("a", "b"):
            write_av_file(tmp_path / f"data/videos/{stem}.mp4", np.zeros((4, 32, 32, 3), np.uint8), 10)
            (labels / f"{stem}.txt").write_text("valence,arousal\n" + "0,0\n" * 4)
        opts = RunOptions(split="train", features=["unloadable"], data_root=tmp_path / "data",
                          cache_dir=tmp_path / "cache", profile="tiny", device="cpu", progress=False)
        with pytest.raises(ExtractionError, match=r"unloadable: cannot load model .*OSError: weights not found: no network$"):
            run_extraction(opts)
        assert loads == ["cpu"]
    finally:
        unregister("unloadable")


@pytest.mark.parametrize("size,shape", [(224, (256, 256)), (64, (90, 120))])  # square box crops; a wide one
def test_batched_clip_preprocessing_equals_the_per_crop_transform(size: int, shape: tuple[int, int]) -> None:
    """One tensor op per batch gives open_clip's per-crop PIL transform within resampling rounding."""
    import open_clip
    import skimage.data
    import torch
    from torchvision import transforms as T

    from extract.clip_input import ClipInput

    preprocess = open_clip.image_transform(size, is_train=False)
    photo = skimage.data.astronaut()
    h, w = shape
    crops = np.stack([photo[20 * i : 20 * i + h, 30 * i : 30 * i + w] for i in range(6)])
    inputs = ClipInput(preprocess, tensor_resize=True)  # the GPU's path, run here on the CPU
    assert inputs.batched
    got, ref = inputs(crops), inputs.reference(crops)
    torch.testing.assert_close(ClipInput(preprocess)(crops), ref, atol=1e-5, rtol=0)  # the CPU's path: PIL pixels
    assert got.shape == ref.shape == (6, 3, size, size) and got.dtype == torch.float32
    diff = (got - ref).abs()
    level = 1 / 255 / min(inputs.std)  # one uint8 level after normalisation
    assert diff.max() <= 4 * level and diff.mean() <= 0.25 * level, (diff.max(), diff.mean())
    assert (got - ref.flip(0)).abs().mean() > 10 * level  # crops differ: the comparison can fail
    odd = ClipInput(T.Compose([T.Grayscale(3), *preprocess.transforms]))  # a step it does not know: per crop
    assert not odd.batched
    torch.testing.assert_close(odd(crops), odd.reference(crops), atol=1e-6, rtol=0)
