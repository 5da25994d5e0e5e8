"""True frame times, damaged and truncated videos, rotation: real mp4 files written in the test.

Every frame of these videos carries its number (tests/video_fixtures.py), so a check of "frame k is at
time t" reads the pixels of the row stored at time t.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from cache.frametimes import FrameClock, extend_times, presented_times
from cache.manifest import load_manifest
from cache.media import frame_times, probe_video
from cache.store import FeatureStore, store_path
from extract import decode
from extract.base import FrameExtractor, UnitResult, register, unregister
from tests.video_fixtures import CYCLE, PATCH, frame_number, packet_spans, write_mp4

FEATURE = "patch_level_test"


class PatchLevel(FrameExtractor):
    """A model-free frame feature: the frame's number read from its grey patch."""

    name = FEATURE
    unit = "video"
    store_dtype = "float32"

    def begin(self, video):
        return {"stem": video.stem, "values": [], "times": []}

    def process_frames(self, state, batch) -> None:
        state["values"].extend(float(f[PATCH].mean()) for f in batch.frames)
        state["times"].append(batch.times)

    def end(self, state):
        values = np.asarray(state["values"], dtype=np.float32)[:, None]
        return {state["stem"]: UnitResult(values, np.concatenate(state["times"]), np.ones(len(values), bool))}


@pytest.fixture
def patch_feature():
    register(PatchLevel)
    yield FEATURE
    unregister(FEATURE)


def _dataset(root: Path, stem: str, n_labels: int) -> Path:
    labels = root / "annotations" / "VA_Estimation_Challenge" / "Train_Set"
    labels.mkdir(parents=True, exist_ok=True)
    (labels / f"{stem}.txt").write_text("valence,arousal\n" + "0.1,0.2\n" * n_labels)
    (root / "videos").mkdir(parents=True, exist_ok=True)
    return root / "videos" / f"{stem}.mp4"


def _decode_all(path: Path, **kw) -> tuple[np.ndarray, np.ndarray, np.ndarray, decode.DecodeReport]:
    report = decode.DecodeReport()
    chunks = list(decode.iter_chunks(path, chunk=16, report=report, **kw))
    assert [c.start for c in chunks] == list(np.cumsum([0] + [len(c.frames) for c in chunks[:-1]]))
    return (
        np.concatenate([c.frames for c in chunks]),
        np.concatenate([c.times for c in chunks]),
        np.concatenate([c.decoded for c in chunks]),
        report,
    )


def _extract(root: Path, cache: Path):
    from extract.runner import RunOptions
    from extract.backends import run_extraction

    return run_extraction(RunOptions(split="train", features=[FEATURE], data_root=root, cache_dir=cache, progress=False))


def _no_decord(monkeypatch) -> None:
    def broken(*a, **k):
        raise RuntimeError("DECORDError: cannot open")
        yield  # pragma: no cover

    monkeypatch.setattr(decode, "decord_chunks", broken)


# ---- constant-rate snapping and label times ---------------------------------------------------------
def test_constant_rate_timestamps_give_exactly_k_over_fps() -> None:
    jitter = np.random.default_rng(0).uniform(-0.2, 0.2, 50) / 30  # timestamps rounded to a time base
    np.testing.assert_array_equal(presented_times(np.arange(50) / 30 + jitter, 30.0), frame_times(50, 30.0))
    vfr = np.r_[np.arange(10) / 10, 1.0 + np.arange(10) / 30]
    got = presented_times(vfr, 15.0)
    np.testing.assert_allclose(got[:, 0], vfr)
    np.testing.assert_allclose(got[:-1, 1], vfr[1:])
    assert got[-1, 1] - got[-1, 0] == pytest.approx(1 / 30)
    longer = extend_times(got, 22, 15.0)  # label frames past the last presented frame go on at its pace
    np.testing.assert_allclose(longer[20:, 0], got[-1, 1] + np.arange(2) / 30)


# ---- 1. variable frame rate ---------------------------------------------------------------------------
VFR_TIMES = np.r_[np.arange(30) / 10, 3.0 + np.arange(60) / 30]  # 3 s at 10 fps, then 2 s at 30 fps


def test_rows_move_from_frame_index_clock_to_container_clock() -> None:
    from extract.frames import invalidate_undecoded, to_container_clock

    fps = 18.0
    real = presented_times(VFR_TIMES, fps)
    frame_rows = UnitResult(np.zeros((90, 1)), frame_times(90, fps), np.ones(90, bool))
    window = UnitResult(np.zeros((2, 1)), np.array([[20, 40], [80, 100]]) / fps, np.ones(2, bool))
    results = {"frames": frame_rows, "window": window}
    to_container_clock(results, real, fps)
    np.testing.assert_allclose(frame_rows.times, real)  # frame k's row is frame k's real interval
    np.testing.assert_allclose(window.times[0], [2.0, 3.0 + 10 / 30])  # frames 20..39 at their real times
    assert window.times[1, 1] == pytest.approx(5.0 + 10 / 30)  # past the end: the last frame's pace
    decoded = np.ones(90, bool)
    decoded[35] = False
    assert invalidate_undecoded(results, real, decoded) == 2
    assert np.flatnonzero(~frame_rows.valid).tolist() == [35] and window.valid.tolist() == [False, True]
    cfr = UnitResult(np.zeros((3, 1)), frame_times(3, 30.0), np.ones(3, bool))
    to_container_clock({"x": cfr}, frame_times(3, 30.0), 30.0)
    np.testing.assert_array_equal(cfr.times, frame_times(3, 30.0))


def test_vfr_rows_and_labels_are_on_real_time(tmp_path: Path, patch_feature) -> None:
    from train.data.dataset import TrackDataset
    from train.data.sources import open_features

    root = tmp_path / "data"
    path = write_mp4(_dataset(root, "vfr", 90), VFR_TIMES)
    fps = probe_video(path).fps  # the container's average: 90 frames / 5 s = 18
    assert fps == pytest.approx(18.0, abs=0.1)

    frames, times, decoded, report = _decode_all(path)
    assert report.decoders == ["decord"] and decoded.all() and len(frames) == 90
    np.testing.assert_allclose(times[:, 0], VFR_TIMES, atol=1e-3)
    assert [frame_number(f) for f in frames] == [k % CYCLE for k in range(90)]
    pyav = list(decode.pyav_chunks(path, 16))
    np.testing.assert_allclose(np.concatenate([c.times for c in pyav]), times, atol=1e-4)  # same clock in both

    cache = tmp_path / "cache"
    summary = _extract(root, cache)
    assert summary.ok and not summary.partial, summary
    group = FeatureStore.open(store_path(cache, FEATURE)).read("vfr")
    np.testing.assert_allclose(group.times[:, 0], VFR_TIMES, atol=1e-3)
    clock = FrameClock.open(cache)
    label_times = clock.label_times("vfr", 90, fps)
    np.testing.assert_allclose(label_times[60], [4.0, 4.0 + 1 / 30], atol=1e-3)  # frame 60 is at 4 s
    assert abs(frame_times(90, fps)[60, 0] - 4.0) > 0.6  # what index / average fps would have said

    sources = open_features(cache, [FEATURE])
    ds = TrackDataset(load_manifest(root).split("train"), sources, 400, 150)
    aligned = ds.align_track(0)
    levels = aligned.values[FEATURE][:, 0].astype(np.float32)
    assert aligned.masks[FEATURE].all()
    assert [int(round((v - 16) / 4)) % CYCLE for v in levels] == [k % CYCLE for k in range(90)]  # label k = frame k
    ds.close()

    from cache.importers import ImportConfig, import_features  # frame-indexed features made elsewhere: same clock

    src = tmp_path / "npz"
    src.mkdir()
    np.savez(src / "vfr.npz", frames=np.arange(90), features=np.arange(90, dtype=np.float32)[:, None])
    report = import_features(src, "openface", cache, ImportConfig(fmt="npz"), load_manifest(root))
    assert report.imported == ["vfr"]
    np.testing.assert_allclose(FeatureStore.open(store_path(cache, "openface")).read("vfr").times, label_times)


def test_decord_failing_midway_on_a_vfr_video_resumes_at_its_time(tmp_path: Path, monkeypatch, caplog) -> None:
    path = write_mp4(tmp_path / "vfr.mp4", VFR_TIMES)
    real = decode.decord_chunks

    def two_chunks_then_fail(*a, **k):
        for i, c in enumerate(real(*a, **k)):
            if i == 2:
                raise RuntimeError("DECORDError: simulated failure")
            yield c

    monkeypatch.setattr(decode, "decord_chunks", two_chunks_then_fail)
    with caplog.at_level(logging.WARNING):
        frames, times, decoded, report = _decode_all(path)
    assert "decord failed after 32 frames" in caplog.text and report.decoders == ["decord", "pyav"]
    assert decoded.all() and len(frames) == 90  # no frame twice, none skipped
    np.testing.assert_allclose(times[:, 0], VFR_TIMES, atol=1e-3)
    assert [frame_number(f) for f in frames] == [k % CYCLE for k in range(90)]


def test_constant_rate_video_keeps_k_over_fps(tmp_path: Path, patch_feature) -> None:
    root = tmp_path / "data"
    write_mp4(_dataset(root, "cfr", 45), np.arange(45) / 30)
    cache = tmp_path / "cache"
    assert _extract(root, cache).ok
    group = FeatureStore.open(store_path(cache, FEATURE)).read("cfr")
    np.testing.assert_array_equal(group.times, frame_times(45, 30.0))  # bit for bit as before
    assert FrameClock.open(cache).recorded("cfr") is None


# ---- 2. a faststart mp4 cut short ------------------------------------------------------------------------
def test_truncated_faststart_mp4_is_partial_exit_1_rows_stored(tmp_path: Path, patch_feature) -> None:
    from typer.testing import CliRunner

    import pipeline

    root = tmp_path / "data"
    path = write_mp4(_dataset(root, "cut", 90), np.arange(90) / 30, faststart=True)
    data = path.read_bytes()
    assert data.find(b"moov") < data.find(b"mdat")  # the index is at the front
    path.write_bytes(data[: len(data) // 2])
    assert probe_video(path).n_frames == 90  # the container still declares every frame

    cache = tmp_path / "cache"
    args = ["extract", "--split", "train", "--features", FEATURE, "--data-root", str(root), "--cache-dir", str(cache)]
    result = CliRunner().invoke(pipeline.app, args)
    out = " ".join(result.output.split())
    assert result.exit_code == 1, result.output
    assert "1 partial" in out and "cut.mp4: partial:" in out and "of 90 declared, 90 labelled" in out
    store = FeatureStore.open(store_path(cache, FEATURE))
    assert store.is_complete("cut")  # stored: the frames that decoded are kept
    group = store.read("cut")
    assert 20 < group.valid.sum() < 90
    decoded = int(out.split("cut.mp4: partial: ")[1].split(" ")[0])
    assert decoded == group.valid.sum()
    k = np.flatnonzero(group.valid)
    np.testing.assert_allclose(group.times[k, 0], k / 30, atol=1e-9)
    assert [int(round((v - 16) / 4)) % CYCLE for v in group.values[k, 0]] == list(k % CYCLE)
    again = CliRunner().invoke(pipeline.app, args)  # nothing to redo, and still not taken as whole
    out = " ".join(again.output.split())
    assert again.exit_code == 1 and "1 skipped as already complete" in out and f"cut.mp4: partial: {decoded} " in out


# ---- 3. zeroed bytes in the middle -----------------------------------------------------------------------
def _zeroed(path: Path, first: int, last: int) -> None:
    spans = packet_spans(path)
    data = bytearray(path.read_bytes())
    lo, hi = spans[first][0], spans[last][0] + spans[last][1]
    data[lo:hi] = bytes(hi - lo)
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("decoder", ["decord then PyAV", "PyAV only"])
def test_zeroed_packets_become_invalid_rows_at_their_own_times(tmp_path: Path, monkeypatch, caplog, decoder) -> None:
    path = write_mp4(tmp_path / "zero.mp4", np.arange(90) / 30, gop=10)
    _zeroed(path, 30, 33)  # frames 30-33 lost; 34-39 depend on them; 40 is the next key frame
    if decoder == "PyAV only":
        _no_decord(monkeypatch)
    with caplog.at_level(logging.WARNING):
        frames, times, decoded, report = _decode_all(path)
    assert "falling back to PyAV" in caplog.text
    assert report.decoders[-1] == "pyav"  # decord fails on the damage (when depends on its read-ahead)
    assert len(frames) == 90 and report.presented == 90 and report.decoded == 80
    assert np.flatnonzero(~decoded).tolist() == list(range(30, 40))
    np.testing.assert_array_equal(times, frame_times(90, 30.0))  # nothing shifted
    good = np.flatnonzero(decoded)
    assert [frame_number(frames[k]) for k in good] == list(good % CYCLE)


def test_zeroed_packets_in_a_run_invalid_rows_and_partial(tmp_path: Path, patch_feature) -> None:
    root = tmp_path / "data"
    path = write_mp4(_dataset(root, "zero", 90), np.arange(90) / 30, gop=10)
    _zeroed(path, 30, 33)
    cache = tmp_path / "cache"
    summary = _extract(root, cache)
    assert summary.done and not summary.failed and not summary.ok
    assert summary.partial == [f"{path}: partial: 80 frames decoded of 90 declared, 90 labelled (stored; the missing "
                               "frames are invalid or absent rows)"]
    group = FeatureStore.open(store_path(cache, FEATURE)).read("zero")
    assert np.flatnonzero(~group.valid).tolist() == list(range(30, 40))
    np.testing.assert_array_equal(group.times, frame_times(90, 30.0))
    record = FeatureStore.open(store_path(cache, "frame_times")).read("zero")
    assert record.attrs["declared"] == 90 and record.attrs["decoded"] == 80 and record.attrs["constant_rate"]


# ---- 4. rotation ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("rotation", [90, -90, 180])
def test_rotation_is_applied_the_same_by_both_paths(tmp_path: Path, monkeypatch, rotation: int) -> None:
    plain = write_mp4(tmp_path / "plain.mp4", np.arange(20) / 30)
    turned = write_mp4(tmp_path / "turned.mp4", np.arange(20) / 30, rotation=rotation)
    upright, _, _, plain_report = _decode_all(plain)
    assert plain_report.decoders == ["decord"] and plain_report.rotation == 0
    _no_decord(monkeypatch)
    by_pyav, _, _, _ = _decode_all(plain)
    assert by_pyav.shape == upright.shape and np.abs(by_pyav.astype(int) - upright.astype(int)).mean() < 2
    monkeypatch.undo()

    frames, times, decoded, report = _decode_all(turned)
    assert report.rotation == rotation % 360 and report.decoders == ["pyav"] and decoded.all()
    k = (rotation // 90) % 4  # counter-clockwise quarter turns, as ffmpeg and players show it
    expected = np.stack([np.rot90(f, k) for f in upright])
    assert frames.shape == expected.shape
    assert np.abs(frames.astype(int) - expected.astype(int)).mean() < 2
    marker = {90: (slice(58, 64), slice(0, 6)), 270: (slice(0, 6), slice(42, 48)), 180: (slice(42, 48), slice(58, 64))}
    assert frames[0][marker[rotation % 360]].min() > 200  # the top-left marker where a player shows it
    np.testing.assert_array_equal(times, frame_times(20, probe_video(turned).fps))


def test_a_header_declaring_a_frame_or_two_more_is_not_partial(tmp_path: Path) -> None:
    """AVI headers count a packed or delayed frame or two more than the file holds (the sample's video7-3.avi:
    473 declared, 471 packets and frames, 471 labels); a cut or damaged video loses many more."""
    from types import SimpleNamespace

    from extract.frames import partial_line

    video = SimpleNamespace(path=tmp_path / "v.avi")
    assert partial_line(video, 471, 473, 471) is None
    assert partial_line(video, 80, 90, 90) is not None  # one damaged GOP
    assert partial_line(video, 45, 90, 90) is not None  # a cut faststart mp4
    assert partial_line(video, 471, 471, 480) is not None  # labels need more frames than decoded


def test_a_damaged_frame_time_record_is_rewritten_by_extract(tmp_path: Path, patch_feature) -> None:
    """`verify` marks a damaged frame-time record incomplete and names `extract`; extract (every feature
    complete) decodes the video again only to write the record, and the label times are the real ones again."""
    from typer.testing import CliRunner

    from cache.frametimes import FRAME_TIMES_STORE
    from pipeline import app

    root = tmp_path / "data"
    path = write_mp4(_dataset(root, "vfr", 90), VFR_TIMES)
    fps = probe_video(path).fps
    cache = tmp_path / "cache"
    assert _extract(root, cache).ok
    want = FrameClock.open(cache).label_times("vfr", 90, fps)
    feature_before = FeatureStore.open(store_path(cache, FEATURE)).unit_attrs("vfr")["content_digest"]

    record = store_path(cache, FRAME_TIMES_STORE)
    chunk = next(p for p in sorted((Path(record) / "vfr" / "times").rglob("*")) if p.is_file() and "c" in p.parts)
    chunk.write_bytes(b"\0" * len(chunk.read_bytes()))  # a damaged chunk of the record
    res = CliRunner().invoke(app, ["verify", "--cache-dir", str(cache)])
    assert res.exit_code == 1 and FRAME_TIMES_STORE in res.output and "extract" in res.output, res.output
    clock = FrameClock.open(cache)
    assert abs(clock.label_times("vfr", 90, fps)[60, 0] - want[60, 0]) > 0.5  # k / fps meanwhile: frames off

    summary = _extract(root, cache)
    assert summary.ok and summary.skipped == [] and summary.done == ["vfr: frame_times"], summary
    np.testing.assert_allclose(FrameClock.open(cache).label_times("vfr", 90, fps), want)  # the real times again
    assert FeatureStore.open(store_path(cache, FEATURE)).unit_attrs("vfr")["content_digest"] == feature_before
    res = CliRunner().invoke(app, ["verify", "--cache-dir", str(cache)])
    assert res.exit_code == 0, res.output
    assert _extract(root, cache).skipped == ["vfr"]  # whole again: nothing to do


def test_a_damaged_extra_is_written_again_by_a_plain_extract(tmp_path: Path, patch_feature) -> None:
    """`verify` names `extract` for a damaged extra; extract (every video complete, nothing forced) loads
    that extractor, which writes its extras again."""
    from typer.testing import CliRunner

    from pipeline import app

    class WithExtra(PatchLevel):
        name = FEATURE + "_extra"

        def write_extras(self, store) -> None:
            store.put_extra("prompts", np.arange(6, dtype=np.float32).reshape(2, 3), {"source": "test"})

    register(WithExtra)
    try:
        root = tmp_path / "data"
        write_mp4(_dataset(root, "vfr", 90), VFR_TIMES)
        cache = tmp_path / "cache"
        from extract.backends import run_extraction
        from extract.runner import RunOptions

        def extract():
            return run_extraction(RunOptions(split="train", features=[WithExtra.name], data_root=root, cache_dir=cache, progress=False))

        assert extract().ok
        chunk = next(p for p in (Path(store_path(cache, WithExtra.name)) / "_extras" / "prompts").rglob("*")
                     if p.is_file() and "c" in p.relative_to(Path(store_path(cache, WithExtra.name))).parts)
        chunk.unlink()
        res = CliRunner().invoke(app, ["verify", "--cache-dir", str(cache)])
        assert res.exit_code == 1 and "_extras/prompts" in res.output and "extract" in res.output, res.output
        summary = extract()
        assert summary.ok and summary.skipped == ["vfr"], summary  # no video redone
        assert FeatureStore.open(store_path(cache, WithExtra.name)).get_extra("prompts")[0].sum() == 15
        assert CliRunner().invoke(app, ["verify", "--cache-dir", str(cache)]).exit_code == 0
    finally:
        unregister(WithExtra.name)


# ---- issue 24: timestamps that are missing, negative or out of order are replaced, never stored -----
def _avi_with_b_frames(path: Path, n: int = 40, fps: int = 25) -> Path:
    """An mpeg4 AVI with B-frames (as DivX/Xvid files are): AVI keeps no presentation times, and decord
    reports its "no timestamp" value (-3.7e17 s) for the reordered frames (OpenCV's Megamind.avi: 182 of 270)."""
    import av

    rng = np.random.default_rng(0)
    from tests.video_fixtures import make_frame

    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=fps)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        stream.codec_context.max_b_frames, stream.codec_context.gop_size = 2, 12
        stream.options = {"qscale": "1"}
        for k in range(n):
            for packet in stream.encode(av.VideoFrame.from_ndarray(make_frame(k, rng), format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def test_repaired_starts_replace_missing_negative_and_out_of_order_times() -> None:
    from cache.frametimes import bad_starts, repaired_starts

    true = np.arange(12) / 25
    seen = true.copy()
    seen[[0, 3, 4]] = -3.6893487e17  # decord's "no timestamp"
    seen[7] = seen[6]  # repeated
    seen[9] = np.nan
    assert bad_starts(seen).tolist() == [k in (0, 3, 4, 7, 9) for k in range(12)]
    fixed, note = repaired_starts(seen, 25.0)
    np.testing.assert_allclose(fixed, true, atol=1e-12)
    assert note == "5 of 12 frame timestamps missing, negative or out of order: replaced (5 on the frame clock)"
    other = true + 0.001  # the other decoder's times of the same frames
    fixed, note = repaired_starts(seen, 25.0, other)
    np.testing.assert_allclose(fixed[[0, 3, 4, 7, 9]], other[[0, 3, 4, 7, 9]])
    assert "5 from the other decoder" in note and np.all(np.diff(fixed) > 0)
    assert repaired_starts(true, 25.0) == (pytest.approx(true), None)
    np.testing.assert_allclose(repaired_starts(np.full(4, -1.0), 25.0)[0], np.arange(4) / 25)


@pytest.mark.parametrize("decoder", ["decord", "pyav"])
def test_an_avi_without_timestamps_gets_increasing_times_from_the_frame_clock(tmp_path: Path, monkeypatch, decoder) -> None:
    import decord

    path = _avi_with_b_frames(tmp_path / "bframes.avi")
    reader = decord.VideoReader(str(path))
    raw = reader.get_frame_timestamp(np.arange(len(reader)))[:, 0]
    assert (raw < -1e17).sum() >= 5  # the file really has what Megamind.avi has
    del reader
    if decoder == "pyav":
        _no_decord(monkeypatch)
    frames, times, decoded, report = _decode_all(path)
    assert len(frames) == 40 and decoded.all()
    if decoder == "decord":  # never -3.7e17, never out of order: the frame clock
        np.testing.assert_allclose(times, frame_times(40, 25.0), atol=1e-9)
        assert len(report.notes) == 1 and "frame timestamps missing, negative or out of order: replaced" in report.notes[0]
    else:  # PyAV reads the packets' times (the first presented at 1/25 s, after the B-frame delay): kept
        np.testing.assert_allclose(times, frame_times(40, 25.0) + 1 / 25, atol=1e-9)
        assert not report.notes


def test_extracting_an_avi_without_timestamps_stores_no_invented_time(tmp_path: Path, patch_feature) -> None:
    root = tmp_path / "data"
    video = _dataset(root, "bframes", 40).with_suffix(".avi")
    _avi_with_b_frames(video)
    summary = _extract(root, tmp_path / "cache")
    assert summary.ok, summary.failed
    record = FeatureStore.open(store_path(tmp_path / "cache", "frame_times"))
    times = record.read("bframes").times
    np.testing.assert_allclose(times, frame_times(40, 25.0), atol=1e-6)
    attrs = record.unit_attrs("bframes")
    assert attrs["constant_rate"] and "replaced" in attrs["time_notes"][0]
    group = FeatureStore.open(store_path(tmp_path / "cache", FEATURE)).read("bframes")
    np.testing.assert_allclose(group.times, frame_times(40, 25.0), atol=1e-6)
    assert group.valid.all() and np.isfinite(group.times).all()
