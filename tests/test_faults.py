"""Fault injection: what stage 1 and stage 2 do when things go wrong, and that nothing is lost.

Every extraction case checks that the stores stay consistent (`assert_consistent`: each complete group
reads back whole, with `rows` equal to its length; each incomplete group is invisible and refused by
`read`) and that what was already written survives. Cases already covered elsewhere are listed in
`MEDIA_CASES` with the test that covers them (the table checks those tests still exist) instead of
being run twice. Small on purpose: two 2 s sample videos, the tiny profile, `faces,mouth`.
"""

from __future__ import annotations

import ast
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import zarr

torch = pytest.importorskip("torch")
torch.set_num_threads(1)

from cache.manifest import load_manifest  # noqa: E402
from cache.sample_data import SampleConfig, write_sample_dataset  # noqa: E402
from cache.store import FeatureMeta, FeatureStore, IncompleteGroup, store_path  # noqa: E402
from extract.runner import RunOptions  # noqa: E402
from extract.backends import run_extraction  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
FEATURES = ["faces", "mouth"]
TRACKS = ["video20", "video48_left", "video48_right"]
KILL_TIMEOUT = 180


def _env(root: Path) -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "YOLO_OFFLINE": "1", "YOLO_CONFIG_DIR": str(root / "ultralytics"),
            "PYTHONPATH": str(ROOT)}


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("faults")
    os.environ.setdefault("YOLO_CONFIG_DIR", str(root / "ultralytics"))
    write_sample_dataset(root / "data", SampleConfig.short(("video20", "video48"), 2.0))
    # a truncated video: a valid mp4 cut to half its bytes (its moov atom, at the end, is gone)
    good = (root / "data" / "videos" / "video20.mp4").read_bytes()
    (root / "data" / "videos" / "truncated.mp4").write_bytes(good[: len(good) // 2])
    train = root / "data" / "annotations" / "VA_Estimation_Challenge" / "Train_Set"
    (train / "truncated.txt").write_text("valence,arousal\n" + "0.1,0.2\n" * 60)
    return root


def _options(root: Path, cache: str, features: list[str] = FEATURES, **kw) -> RunOptions:
    return RunOptions(
        split="train", features=list(features), data_root=root / "data", cache_dir=root / cache,
        models_dir=root / "models", profile="tiny", device="cpu", progress=False, batch_size=16, **kw,
    )


def _cli_args(root: Path, cache: str, features: list[str] = FEATURES) -> list[str]:
    return [
        "extract", "--split", "train", "--features", ",".join(features), "--data-root", str(root / "data"),
        "--cache-dir", str(root / cache), "--profile", "tiny", "--device", "cpu", "--models-dir", str(root / "models"),
        "--batch-size", "16",
    ]


@pytest.fixture(scope="module")
def reference(workspace: Path):
    """An uninterrupted local run (also builds the tiny models, so subprocesses never race to build them)."""
    return run_extraction(_options(workspace, "ref"))


def assert_consistent(cache: Path, features: list[str] = FEATURES) -> dict[str, list[str]]:
    """Every complete group reads back whole; incomplete ones are invisible. Returns feature -> incomplete units."""
    incomplete: dict[str, list[str]] = {}
    for feature in features:
        store = FeatureStore.open(store_path(cache, feature))
        for unit in store.units(complete_only=False):
            if store.is_complete(unit):
                g = store.read(unit)
                assert len(g.values) == len(g.times) == len(g.valid) == g.attrs["rows"], (feature, unit)
                assert np.isfinite(g.values.astype(np.float32)).all() and np.isfinite(g.times).all()
            else:
                assert unit not in store.units()
                with pytest.raises(IncompleteGroup):
                    store.read(unit)
                incomplete.setdefault(feature, []).append(unit)
    return incomplete


def assert_same_stores(a: Path, b: Path, features: list[str] = FEATURES, tracks: list[str] = TRACKS) -> None:
    """Same fingerprint and units; valid and times identical; values within the resume tolerance."""
    for feature in features:
        sa, sb = FeatureStore.open(store_path(a, feature)), FeatureStore.open(store_path(b, feature))
        assert sa.fingerprint == sb.fingerprint
        assert sa.units() == sb.units() == sorted(tracks), (feature, sa.units(), sb.units())
        for unit in sa.units():
            ga, gb = sa.read(unit), sb.read(unit)
            np.testing.assert_array_equal(ga.valid, gb.valid)
            np.testing.assert_array_equal(ga.times, gb.times)
            np.testing.assert_allclose(ga.values.astype(np.float32), gb.values.astype(np.float32), atol=2e-3,
                                       err_msg=f"{feature}/{unit}")


def _wait_for(path: Path, proc: subprocess.Popen, timeout: float = KILL_TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if proc.poll() is not None:
            out = proc.stdout.read() if proc.stdout else ""
            raise AssertionError(f"the process ended (rc {proc.returncode}) before {path.name} appeared:\n{out[-3000:]}")
        if time.monotonic() > deadline:
            proc.kill()
            raise AssertionError(f"{path} did not appear in {timeout} s")
        time.sleep(0.02)


# ---- 1. a worker SIGKILLed mid-video -------------------------------------------------------------
KILL_CHILD = """
import sys, time
import torch
torch.set_num_threads(1)
from cache import store
close = store.GroupWriter.close
def stalled_close(self, attrs=None):
    # mouth/video48_left: rows appended, `complete` not yet written -> signal the parent and wait to be killed
    if self._group.path == "video48_left" and "mouth.zarr" in str(self._group.store_path):
        open(sys.argv[1], "w").close()
        time.sleep(600)
    return close(self, attrs)
store.GroupWriter.close = stalled_close
from pipeline import app
app(sys.argv[2:])
"""


def test_sigkill_mid_video_then_rerun_equals_uninterrupted(workspace: Path, reference) -> None:
    ready = workspace / "kill.ready"
    proc = subprocess.Popen(
        [sys.executable, "-c", KILL_CHILD, str(ready), *_cli_args(workspace, "killed")], cwd=ROOT, env=_env(workspace),
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        _wait_for(ready, proc)
        os.kill(proc.pid, signal.SIGKILL)
        assert proc.wait(timeout=30) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.stdout.close()
    cache = workspace / "killed"
    # what was written before the kill is there and readable; the half-written group is invisible
    assert assert_consistent(cache) == {"mouth": ["video48_left"]}
    partial = zarr.open_group(str(store_path(cache, "mouth")), mode="r")["video48_left"]
    assert partial["values"].shape[0] > 0 and not partial.attrs.get("complete")  # data present, not complete
    assert FeatureStore.open(store_path(cache, "faces")).units() == TRACKS
    assert FeatureStore.open(store_path(cache, "mouth")).units() == ["video20"]
    # re-run: redoes only what is missing (mouth of video48, from the stored faces), equal to uninterrupted
    again = run_extraction(_options(workspace, "killed"))
    assert again.done == ["video48: mouth"] and again.skipped == ["video20"]
    assert len(again.failed) == 1 and "truncated.mp4" in again.failed[0]
    assert assert_consistent(cache) == {}
    assert_same_stores(workspace / "ref", cache)


# ---- 2. two processes on disjoint shards of one store, at the same time -----------------------------
def test_concurrent_shards_write_one_store(workspace: Path, reference) -> None:
    procs = [
        subprocess.Popen([sys.executable, "pipeline.py", *_cli_args(workspace, "shards"), "--shard", f"{i}/2"],
                         cwd=ROOT, env=_env(workspace), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for i in range(2)
    ]
    outs = []
    for proc in procs:
        out, _ = proc.communicate(timeout=KILL_TIMEOUT)
        outs.append(" ".join(out.split()))
    # sorted stems: truncated, video20, video48 -> shard 0/2 = truncated + video48, shard 1/2 = video20
    assert procs[0].returncode == 1 and "1 video(s) done, 0 skipped as already complete, 1 failed" in outs[0], outs[0]
    assert "truncated.mp4" in outs[0] and "done: video48: faces, mouth" in outs[0]
    assert procs[1].returncode == 0 and "done: video20: faces, mouth" in outs[1], outs[1]
    assert assert_consistent(workspace / "shards") == {}
    assert_same_stores(workspace / "ref", workspace / "shards")


def _create_store(path: str, barrier, results) -> None:
    barrier.wait()
    try:
        FeatureStore.create_or_open(Path(path), FeatureMeta("race", config={"k": 1}))
        results.put("ok")
    except Exception as err:  # noqa: BLE001 - reported to the parent
        results.put(f"{type(err).__name__}: {err}")


def test_concurrent_creation_of_a_fresh_store(tmp_path: Path) -> None:
    """Shards starting together all create the same store: none may see a root without its fingerprint
    (found by bench/scale.py: 'store fingerprint None differs'), none may fail on the other's group."""
    import multiprocessing as mp

    ctx = mp.get_context("fork")
    for round_ in range(4):
        barrier, results = ctx.Barrier(4), ctx.Queue()
        procs = [ctx.Process(target=_create_store, args=(str(tmp_path / f"{round_}.zarr"), barrier, results)) for _ in range(4)]
        for proc in procs:
            proc.start()
        for proc in procs:
            proc.join(timeout=60)
        assert [results.get(timeout=5) for _ in procs] == ["ok"] * 4
        assert FeatureStore.open(tmp_path / f"{round_}.zarr").fingerprint == FeatureMeta("race", config={"k": 1}).fingerprint


# ---- 3. bad media: each case run here or listed with the test that covers it ---------------------
def _truncated_video(workspace: Path, reference) -> None:
    failed = [line for line in reference.failed if "truncated.mp4" in line]
    assert len(failed) == 1 and "cannot open" in failed[0] and "\n" not in failed[0], reference.failed
    assert {d.split(":")[0] for d in reference.done} == {"video20", "video48"}  # the rest of the split proceeds
    for feature in FEATURES:
        assert "truncated" not in FeatureStore.open(store_path(workspace / "ref", feature)).units(complete_only=False)
    assert assert_consistent(workspace / "ref") == {}


def _decord_cannot_read_audio(workspace: Path, reference, monkeypatch, caplog) -> None:
    decord = pytest.importorskip("decord")
    from extract.audio import decode_audio

    class Unreadable:
        def __init__(self, *a, **k):
            raise RuntimeError("src/audio/audio_reader.cc:111: Fail to send packet (unsupported codec)")

    monkeypatch.setattr(decord, "AudioReader", Unreadable)
    with caplog.at_level(logging.WARNING, logger="extract.audio"):
        audio = decode_audio(workspace / "data" / "videos" / "video20.mp4")
    assert audio.backend == "pyav" and abs(audio.duration - 2.0) < 0.05
    assert "falling back to PyAV" in caplog.text and "Fail to send packet" in caplog.text


MEDIA_CASES = {
    "truncated mp4 (half its bytes)": _truncated_video,
    "zero-byte video": [
        "tests/test_extract_pipeline.py::test_all_features_for_every_track_and_bad_files_reported",
        "tests/test_extract_units.py::test_decode_errors_are_one_line",
        "tests/test_manifest.py::test_unreadable_video_one_line_error",
    ],
    "audio codec decord cannot read (decord.AudioReader raises)": _decord_cannot_read_audio,
    "audio codec decord cannot read (fallback unit test)": [
        "tests/test_extract_audio.py::test_decord_failure_falls_back_to_pyav",
    ],
    "video with no faces": ["tests/test_extract_pipeline.py::test_all_features_for_every_track_and_bad_files_reported"],
    "video with no audio track": [
        "tests/test_extract_audio.py::test_no_audio_stream_is_none_and_logged",
        "tests/test_extract_audio_pipeline.py::test_end_to_end_every_track",
    ],
}


def _defines(node_id: str) -> bool:
    path, name = node_id.split("::")
    file = ROOT / path
    if not file.is_file():
        return False
    tree = ast.parse(file.read_text(encoding="utf-8"))
    return any(isinstance(n, ast.FunctionDef) and n.name == name for n in tree.body)


@pytest.mark.parametrize("case", list(MEDIA_CASES))
def test_bad_media(case: str, workspace: Path, reference, monkeypatch, caplog) -> None:
    how = MEDIA_CASES[case]
    if callable(how):
        how(workspace, reference, monkeypatch, caplog) if how is _decord_cannot_read_audio else how(workspace, reference)
    else:
        missing = [node for node in how if not _defines(node)]
        assert not missing, f"{case}: covered by tests that no longer exist: {missing}"


# ---- 4. malformed label files --------------------------------------------------------------------
@pytest.fixture(scope="module")
def bad_labels(workspace: Path) -> Path:
    root = workspace / "labels"
    videos, train = root / "videos", root / "annotations" / "VA_Estimation_Challenge" / "Train_Set"
    videos.mkdir(parents=True)
    train.mkdir(parents=True)
    shutil.copy(workspace / "data" / "videos" / "video20.mp4", videos / "good.mp4")
    (train / "good.txt").write_text("valence,arousal\n" + "0.1,0.2\n" * 60)
    (train / "hdr.txt").write_text("Valence,Arousal\n0.1,0.2\n")
    (train / "nonnum.txt").write_text("valence,arousal\n0.1,0.2\n0.1,abc\n")
    (train / "lone.txt").write_text("valence,arousal\n-5,0.2\n")
    return root


LABEL_ERRORS = [("hdr.txt:1:", "header must be exactly"), ("nonnum.txt:3:", "non-numeric"), ("lone.txt:2:", "lone -5")]


def _assert_label_errors(lines: list[str]) -> None:
    for where, reason in LABEL_ERRORS:
        hits = [line for line in lines if where in line]
        assert len(hits) == 1 and reason in hits[0] and "\n" not in hits[0], (where, lines)


def test_bad_label_files_one_line_each_and_the_split_proceeds(bad_labels: Path, workspace: Path, reference, caplog) -> None:
    from typer.testing import CliRunner

    import pipeline

    manifest = load_manifest(bad_labels, splits=("train",))
    assert [t.name for t in manifest.split("train")] == ["good"]
    assert len(manifest.errors) == 3
    _assert_label_errors(manifest.errors)

    runner = CliRunner()
    status = runner.invoke(pipeline.app, ["status", "--data-root", str(bad_labels), "--cache-dir", str(bad_labels / "cache")])
    assert status.exit_code == 0, status.output
    assert "3 label file(s) cannot be used" in " ".join(status.output.split())  # one line for the kind
    assert not any("hdr.txt" in line for line in status.output.splitlines())
    status = runner.invoke(pipeline.app, ["status", "--data-root", str(bad_labels), "--cache-dir", str(bad_labels / "cache"), "--verbose"])
    _assert_label_errors(status.output.splitlines())  # and one line each with --verbose

    args = ["extract", "--split", "train", "--features", "faces", "--data-root", str(bad_labels),
            "--cache-dir", str(bad_labels / "cache"), "--profile", "tiny", "--device", "cpu",
            "--models-dir", str(workspace / "models")]
    caplog.clear()
    with caplog.at_level(logging.ERROR, logger="cache.manifest"):
        result = runner.invoke(pipeline.app, args)
    assert result.exit_code == 0, result.output
    assert "1 video(s) done" in " ".join(result.output.split())
    _assert_label_errors([r.getMessage() for r in caplog.records if r.name == "cache.manifest"])
    assert FeatureStore.open(store_path(bad_labels / "cache", "faces")).units() == ["good"]


# ---- 5. a store made with another config ---------------------------------------------------------
def test_extraction_refuses_another_fingerprint_unless_new_store(workspace: Path, reference) -> None:
    from typer.testing import CliRunner

    import pipeline

    cache = workspace / "fp"
    shutil.copytree(store_path(workspace / "ref", "faces"), store_path(cache, "faces"))
    other = FeatureMeta(name="faces", model_ref="another-detector")
    zarr.open_group(str(store_path(cache, "faces")), mode="a").attrs.update(other.to_attrs())
    wanted = FeatureStore.open(store_path(workspace / "ref", "faces")).fingerprint
    runner = CliRunner()
    refused = runner.invoke(pipeline.app, _cli_args(workspace, "fp", ["faces"]))
    out = " ".join(refused.output.split())
    assert refused.exit_code == 1 and "extract failed" in out, refused.output  # the work is refused: 1 (2 = usage)
    assert other.fingerprint in out and wanted in out  # names both fingerprints
    assert FeatureStore.open(store_path(cache, "faces")).fingerprint == other.fingerprint  # untouched
    moved = runner.invoke(pipeline.app, _cli_args(workspace, "fp", ["faces"]) + ["--new-store"])
    assert moved.exit_code == 1 and "2 video(s) done" in " ".join(moved.output.split())  # truncated.mp4 fails
    aside = FeatureStore.open(cache / f"faces.{other.fingerprint}.zarr")
    assert aside.fingerprint == other.fingerprint and aside.units() == TRACKS  # the old store is kept whole
    assert_same_stores(workspace / "ref", cache, ["faces"])


# ---- 6. NaN / inf in a feature -------------------------------------------------------------------
def test_nan_and_inf_are_found_and_masked_never_trained_on(tmp_path: Path, caplog) -> None:
    from train.data.dataset import TrackDataset
    from train.data.sources import open_features
    from train.data.synthetic import SynthConfig, SynthTrack, make_synthetic

    # the writer: rows with NaN/inf are stored invalid (and zeroed), with a logged count
    # (the masking itself: tests/test_store.py::test_nan_rows_masked_not_stored)
    store = FeatureStore.create_or_open(tmp_path / "f.zarr", FeatureMeta("f"))
    values = np.ones((5, 3), np.float32)
    values[1, 0], values[3, 2] = np.nan, -np.inf
    with caplog.at_level(logging.WARNING, logger="cache.store"):
        store.write("v", values, np.stack([np.arange(5), np.arange(5) + 1], 1) / 10)
    assert "2 rows with NaN/inf" in caplog.text and "marked invalid" in caplog.text
    assert store.read("v").valid.tolist() == [True, False, True, False, True]

    # the dataset: NaN/inf that reach a store some other way (here written straight into the group's
    # array, bypassing the writer) are masked and counted, never handed to a head
    tracks = [SynthTrack("a", "train", 25.0, 100), SynthTrack("b", "val", 25.0, 60)]
    make_synthetic(tmp_path / "data", tmp_path / "cache", SynthConfig(tracks=tracks, invalid_share=0, no_face_share=0))
    group = zarr.open_group(str(store_path(tmp_path / "cache", "clip")), mode="a")["a"]
    raw = group["values"][:]
    raw[10:15] = np.nan
    raw[40, 3] = np.inf
    group["values"][:] = raw
    sources = open_features(tmp_path / "cache", ["clip", "wavlm"])
    ds = TrackDataset(load_manifest(tmp_path / "data", splits=("train",)).split("train"), sources, window=50, stride=50)
    try:
        with caplog.at_level(logging.WARNING, logger="train.data.dataset"):
            aligned = ds.align_track(0)
        mask = aligned.masks["clip"]
        assert not mask[10:15].any() and not mask[40] and mask[:10].all() and mask[15:40].all()
        assert np.isfinite(aligned.values["clip"].astype(np.float32)).all()
        assert ds.stats.nonfinite_rows["clip"] == 6
        assert "6 rows with NaN/inf" in caplog.text
        batch = ds.collate(list(range(len(ds))))
        assert np.isfinite(batch.features["clip"].astype(np.float32)).all()
        assert not batch.masks["clip"][0, 10:15].any()
    finally:
        ds.close()


# ---- 7. training SIGKILLed mid-epoch, then --resume ----------------------------------------------
@pytest.fixture(scope="module")
def synth(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from train.data.synthetic import SynthConfig, default_tracks, make_synthetic

    base = tmp_path_factory.mktemp("train_faults")
    tracks = default_tracks(n_train=4, n_val=2, n_test=1, frames=(300, 400), seed=3)
    make_synthetic(base / "data", base / "cache", SynthConfig(tracks=tracks, visual_dim=8, audio_dim=4))
    return base


def _train_args(base: Path, name: str, cache: Path | None = None, epochs: int = 3) -> list[str]:
    return [
        "train", "--model", "gru", "--features", "clip,wavlm", "--epochs", str(epochs), "--window", "64",
        "--stride", "32", "--batch-size", "4", "--head", "hidden=8", "--head", "gru_hidden=8", "--seed", "3",
        "--lr", "3e-3", "--name", name, "--data-root", str(base / "data"), "--cache-dir", str(cache or base / "cache"),
        "--runs-dir", str(base / "runs"), "--device", "cpu",
    ]


def _metrics(run: Path) -> list[dict]:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k not in ("epoch_s", "data_wait_share")} for r in rows]


def test_training_killed_mid_epoch_resumes_to_the_same_metrics(synth: Path) -> None:
    from typer.testing import CliRunner

    import pipeline

    runner = CliRunner()
    full = runner.invoke(pipeline.app, _train_args(synth, "full"))
    assert full.exit_code == 0, full.output
    run = synth / "runs" / "killed"
    proc = subprocess.Popen(
        [sys.executable, "pipeline.py", *_train_args(synth, "killed")], cwd=ROOT, env=_env(synth),
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        _wait_for(run / "metrics.jsonl", proc)  # written just before the first checkpoint
        _wait_for(run / "checkpoints" / "last.pt", proc)
        os.kill(proc.pid, signal.SIGKILL)  # in epoch 2 of 3 (or later), never after the final evaluation
        assert proc.wait(timeout=30) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.stdout.close()
    assert not (run / "eval_val.json").exists() and len(_metrics(run)) < 3
    assert torch.load(run / "checkpoints" / "last.pt", weights_only=False)["loop"]["epoch"] >= 1  # whole, loadable
    resumed = runner.invoke(pipeline.app, _train_args(synth, "killed") + ["--resume"])
    assert resumed.exit_code == 0, resumed.output
    assert _metrics(run) == _metrics(synth / "runs" / "full")
    a, b = (json.loads((synth / "runs" / n / "eval_val.json").read_text()) for n in ("full", "killed"))
    assert a["raw"] == b["raw"] and a["smoothed"] == b["smoothed"]


def test_training_refuses_a_changed_store_on_resume_only(synth: Path) -> None:
    """Resume: refused, naming both fingerprints (API level: tests/test_train_loop.py::
    test_resume_refuses_a_store_with_another_fingerprint). A fresh run just uses (and records) the store."""
    from typer.testing import CliRunner

    import pipeline
    from train.runs.folder import FingerprintChanged

    assert _defines("tests/test_train_loop.py::test_resume_refuses_a_store_with_another_fingerprint")
    cache = synth / "cache_changed"
    shutil.copytree(synth / "cache", cache)
    other = FeatureMeta(name="clip", model_ref="another-model")
    zarr.open_group(str(store_path(cache, "clip")), mode="a").attrs.update(other.to_attrs())
    runner = CliRunner()
    first = runner.invoke(pipeline.app, _train_args(synth, "fp_run", epochs=1))
    assert first.exit_code == 0, first.output
    recorded = json.loads((synth / "runs" / "fp_run" / "features.json").read_text())["clip"]["fingerprint"]
    refused = runner.invoke(pipeline.app, _train_args(synth, "fp_run", cache=cache, epochs=2) + ["--resume"])
    assert refused.exit_code == 1
    message = " ".join(refused.output.split())  # one line, however the console wraps it
    assert message.startswith("train failed:") and "Traceback" not in refused.output
    assert recorded in message and other.fingerprint in message
    with pytest.raises(FingerprintChanged):  # the library raises the typed error the CLI reports
        from train.config import TrainConfig
        from train.fit.loop import train

        cfg = TrainConfig.load(synth / "runs" / "fp_run" / "config.json")
        cfg.data.cache_dir = str(cache)
        train(cfg, resume=True)
    assert len(_metrics(synth / "runs" / "fp_run")) == 1  # nothing trained on the changed store
    fresh = runner.invoke(pipeline.app, _train_args(synth, "fp_fresh", cache=cache, epochs=1))
    assert fresh.exit_code == 0, fresh.output
    assert json.loads((synth / "runs" / "fp_fresh" / "features.json").read_text())["clip"]["fingerprint"] == other.fingerprint
