"""Audio decoding, AST and WavLM extractors, audio reliability (unit tests on arrays and small files)."""

from __future__ import annotations

import logging

import numpy as np
import pytest

torch = pytest.importorskip("torch")
torch.set_num_threads(1)

from cache.align import align_to_frames  # noqa: E402
from cache.media import frame_times  # noqa: E402
from cache.sample_data import write_av_file  # noqa: E402
from extract import audio as audio_mod  # noqa: E402
from extract.audio import Audio, decode_audio  # noqa: E402

SR = 16000


def _clicks(duration: float, at: tuple[float, ...]) -> np.ndarray:
    """Silence with 10 ms 1 kHz bursts starting at the given seconds."""
    out = np.zeros(int(duration * SR), np.float32)
    for t in at:
        i = int(t * SR)
        out[i : i + 160] = 0.8 * np.sin(2 * np.pi * 1000 * np.arange(160) / SR)
    return out


def _first_loud(audio: Audio) -> float:
    return audio.start + np.flatnonzero(np.abs(audio.samples) > 0.3)[0] / audio.sample_rate


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    root = tmp_path_factory.mktemp("media")
    frames = np.zeros((50, 32, 32, 3), np.uint8)
    paths = {}
    for ext in (".mp4", ".avi"):
        paths[ext] = root / f"clip{ext}"
        write_av_file(paths[ext], frames, 25.0, _clicks(2.0, (0.5, 1.5)), SR)
    paths["silent"] = root / "silent.mp4"
    write_av_file(paths["silent"], frames, 25.0, None)
    return paths


@pytest.mark.parametrize("ext", [".mp4", ".avi"])
@pytest.mark.parametrize("backend", ["decord", "pyav"])
def test_decode_timing_from_stream(media, ext, backend):
    audio = decode_audio(media[ext], backend=backend)
    assert audio.sample_rate == SR and audio.samples.dtype == np.float32 and audio.backend == backend
    # AAC pads the tail (2.0 s comes back as 32,768 samples): cut to the stream's duration.
    assert abs(audio.duration - 2.0) < 0.03, audio.duration
    assert abs(_first_loud(audio) - 0.5) < 0.003
    assert abs(audio.segment(1.49, 1.6)[160:320].max() - 0.8) < 0.1  # the 1.5 s click, via segment()


def test_decord_failure_falls_back_to_pyav(media, monkeypatch, caplog):
    def broken(path, sample_rate):
        raise RuntimeError("[17:41:31] src/audio/audio_reader.cc:111: Fail to send packet")

    monkeypatch.setattr(audio_mod, "_decode_decord", broken)
    with caplog.at_level(logging.WARNING, logger="extract.audio"):
        audio = decode_audio(media[".mp4"])
    assert audio.backend == "pyav" and abs(_first_loud(audio) - 0.5) < 0.003
    assert "falling back to PyAV" in caplog.text and "Fail to send packet" in caplog.text


def test_no_audio_stream_is_none_and_logged(media, caplog):
    with caplog.at_level(logging.INFO, logger="extract.audio"):
        assert decode_audio(media["silent"]) is None
    assert "no audio stream" in caplog.text


# ---- AST -----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_ast(tmp_path_factory):
    from extract.ast import build_tiny_ast, load_ast

    return load_ast(build_tiny_ast(tmp_path_factory.mktemp("ast")))


def test_ast_tiny_round_trip_and_windows(tiny_ast):
    from transformers import ASTFeatureExtractor, ASTModel

    from extract.ast import AstConfig, ast_rows, compute_ast

    assert isinstance(tiny_ast.model, ASTModel) and isinstance(tiny_ast.feature_extractor, ASTFeatureExtractor)
    rng = np.random.default_rng(0)
    sound = Audio((0.1 * rng.standard_normal(int(3.5 * SR))).astype(np.float32), SR, start=0.25)
    values, times, valid = compute_ast(tiny_ast, sound, AstConfig(batch_size=3))
    assert values.shape == (4, tiny_ast.dim) and valid.all() and np.isfinite(values).all()
    np.testing.assert_allclose(times, [[0.25, 1.25], [1.25, 2.25], [2.25, 3.25], [3.25, 3.75]])
    # past anchor: the context ends at the row's end and reaches back at most window_s
    rows, ctx = ast_rows(25.0, AstConfig())
    np.testing.assert_allclose(ctx[:, 1], rows[:, 1])
    assert ctx[0, 0] == 0 and np.isclose(ctx[-1, 1] - ctx[-1, 0], 10.0)
    _, centred = ast_rows(25.0, AstConfig(anchor="center"))
    assert np.isclose(centred[12].mean(), rows[12].mean())
    # batching does not change the embeddings
    one, _, _ = compute_ast(tiny_ast, sound, AstConfig(batch_size=1))
    np.testing.assert_allclose(one, values, atol=1e-4)


# ---- WavLM ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_wavlm(tmp_path_factory):
    from extract.wavlm import build_tiny_wavlm, load_wavlm

    return load_wavlm(build_tiny_wavlm(tmp_path_factory.mktemp("wavlm")))


def test_wavlm_window_plan_covers_every_frame_once():
    from extract.wavlm import STRIDE, n_frames, ownership, window_plan

    for length in (8000, 64000, 64977, 9 * SR + 123, 30 * SR + 5):
        plans = window_plan(length, 4 * SR, 2 * SR)
        assert plans[0][0] == 0 and plans[-1][1] == length
        assert all(s % STRIDE == 0 for s, _ in plans)
        owner, local = ownership(plans, n_frames(length))
        counts = [n_frames(e - s) for s, e in plans]
        assert (local >= 0).all() and (local < np.array(counts)[owner]).all()
        # away from the audio's ends, every frame comes from a window's central part (>= ~1 s from its edges)
        margin = np.minimum(local, np.array(counts)[owner] - 1 - local)
        if len(margin) > 200:
            assert margin[100:-100].min() >= 49


def test_wavlm_stitching_has_no_seam(tiny_wavlm):
    from transformers import WavLMModel

    from extract.wavlm import WavlmConfig, compute_wavlm, n_frames

    assert isinstance(tiny_wavlm.model, WavLMModel)
    tiny_wavlm.feature_extractor.do_normalize = False  # per-window normalisation would differ from one pass
    rng = np.random.default_rng(1)
    x = (0.1 * rng.standard_normal(9 * SR + 123)).astype(np.float32)
    sound = Audio(x, SR, start=0.5)
    with torch.inference_mode():
        full = tiny_wavlm.model(torch.from_numpy(x)[None], output_hidden_states=True).hidden_states
    # Layer 0 (convolutional front end + positional convolution) is local: stitched == one full pass.
    values, times, valid = compute_wavlm(tiny_wavlm, sound, WavlmConfig(layers=(0,), batch_size=2))
    assert values.shape == (n_frames(len(x)), 64) and valid.all()
    np.testing.assert_allclose(values, full[0][0].numpy(), atol=1e-4)
    # 50 frames per second, contiguous, no gap or duplicate, on the video timeline.
    np.testing.assert_allclose(np.diff(times[:, 0]), 0.02, atol=1e-9)
    np.testing.assert_allclose(times[:, 1] - times[:, 0], 0.02, atol=1e-9)
    assert times[0, 0] == 0.5 and np.all(times[1:, 0] == times[:-1, 1])
    # Deeper layers attend within 4 s windows only: close to the full pass, never a seam-sized jump.
    last, _, _ = compute_wavlm(tiny_wavlm, sound, WavlmConfig(layers=(-1,)))
    ref = full[-1][0].numpy()
    assert np.abs(last - ref).max() < 0.05 * np.abs(ref).max()
    both, _, _ = compute_wavlm(tiny_wavlm, sound, WavlmConfig(layers=(0, -1), combine="concat"))
    assert both.shape[1] == 128
    np.testing.assert_allclose(both[:, :64], values, atol=1e-5)


# ---- reliability and alignment -------------------------------------------------------------------
def test_reliability_on_arrays():
    from cache.audio_windows import AudioWindowRule
    from extract.reliability import reliability_rows

    fps, n = 10.0, 100  # 10 s
    open_flag = np.zeros(n, bool)
    open_flag[20:40] = True  # 2.0 s open within [2, 4)
    seen = np.ones(n, bool)
    seen[60:75] = False  # 1.5 s without a face in [6, 7.5)
    values, wins, ok = reliability_rows(open_flag, seen, n, fps, AudioWindowRule())
    np.testing.assert_allclose(wins, [[0, 4], [2, 6], [4, 8], [6, 10]])
    np.testing.assert_allclose(values[:, 0], [2.0, 2.0, 0.0, 0.0], atol=1e-6)  # open seconds
    np.testing.assert_allclose(values[:, 1], [1.0, 1.0, 1 - 15 / 40, 1 - 15 / 40], atol=1e-6)
    np.testing.assert_array_equal(values[:, 2], [1, 1, 0, 0])
    # the same open time with too little coverage is unreliable; without audio nothing is reliable
    seen2 = seen.copy()
    seen2[5:15] = False
    v2, _, _ = reliability_rows(open_flag, seen2, n, fps, AudioWindowRule())
    assert v2[0, 2] == 0 and v2[1, 2] == 1
    v3, _, _ = reliability_rows(open_flag, seen, n, fps, AudioWindowRule(), has_audio=False)
    assert not v3[:, 2].any()


def _mouth_store(tmp_path, values, columns):
    from cache.store import FeatureMeta, FeatureStore, store_path

    store = FeatureStore.create_or_open(store_path(tmp_path, "mouth"), FeatureMeta(name="mouth", kind="frame"))
    store.write("v1", values, frame_times(len(values), 10.0), attrs={"columns": columns} if columns else {})
    return FeatureStore.open(store.path)


def test_reliability_refuses_a_mouth_store_without_an_open_flag(tmp_path):
    from extract.reliability import open_column

    area = np.column_stack([np.linspace(0.0, 0.045, 20)]).astype(np.float32)  # RAS's surface_area_mouth range
    store = _mouth_store(tmp_path / "a", area, ["surface_area_mouth"])
    with pytest.raises(ValueError, match=r"mouth\.zarr: mouth store without an open flag \(columns surface_area_mouth\)"):
        open_column(store, "v1", area)
    store = _mouth_store(tmp_path / "b", area, None)  # unnamed: a column of areas is no flag either
    with pytest.raises(ValueError, match="unnamed columns, 1 wide; column 0 holds values other than 0 and 1"):
        open_column(store, "v1", area)
    pairs = np.column_stack([area[:, 0], np.arange(20) % 2]).astype(np.float32)
    assert open_column(_mouth_store(tmp_path / "c", pairs, ["surface_area_mouth", "mouth_open"]), "v1", pairs) == 1
    assert open_column(_mouth_store(tmp_path / "d", pairs, None), "v1", pairs) == 1


def test_segment_feature_expands_onto_frames_with_overlap_averaging():
    # Three 4 s segments every 2 s (values 1, 2, 4) onto 1 s label frames.
    values = np.array([[1.0], [2.0], [4.0]])
    times = np.array([[0.0, 4.0], [2.0, 6.0], [4.0, 8.0]])
    frames = np.stack([np.arange(9.0), np.arange(9.0) + 1], 1)
    out, mask = align_to_frames(values, times, frames)
    # frames 0-1: segment 0 only; 2-3: mean(1, 2); 4-5: mean(2, 4); 6-7: segment 2; 8: nothing
    np.testing.assert_allclose(out[:8, 0], [1, 1, 1.5, 1.5, 3, 3, 4, 4])
    assert mask[:8].all() and not mask[8]
    # a frame straddling a segment edge weighs each overlap by its length
    half, _ = align_to_frames(values, times, np.array([[1.5, 2.5]]))
    np.testing.assert_allclose(half[0, 0], (1.0 * 1 + 0.5 * 2) / 1.5)  # overlaps 1.0 s and 0.5 s


def test_ast_filterbank_once_per_video_equals_the_extractor_per_row(tiny_ast):
    """The whole track's filterbank, sliced per context, equals the feature extractor on each context
    (past contexts of 10 s over 23 s, centred ones, off-grid and too-short contexts)."""
    from extract.ast import AstConfig, VideoFbank, ast_rows

    fe = tiny_ast.feature_extractor
    rng = np.random.default_rng(1)
    samples = (0.1 * rng.standard_normal(23 * SR + 77)).astype(np.float32)
    fbank = VideoFbank(fe, samples)
    assert fbank.frames is not None
    spans = [(int(round(a * SR)), int(round(b * SR))) for cfg in (AstConfig(), AstConfig(anchor="center", window_s=4))
             for a, b in ast_rows(len(samples) / SR, cfg)[1]]
    spans += [(1234, 1234 + 5 * SR), (SR, SR + 300)]  # off the 10 ms grid; shorter than one fbank frame
    for a, b in spans:
        clip = samples[a:b] if b - a >= 400 else np.pad(samples[a:b], (0, 400 - (b - a)))
        ref = fe([clip], sampling_rate=SR)["input_values"][0]
        np.testing.assert_allclose(fbank.one(a, b), ref, atol=1e-4, rtol=0, err_msg=f"{a}:{b}")
    assert np.abs(fbank.one(0, 5 * SR) - fbank.one(SR, 6 * SR)).max() > 0.1  # slices differ
