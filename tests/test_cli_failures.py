"""When the command line is right but the data or the machine is not: each case ends with one line
naming the file and exit status 1 (never a traceback), creates nothing it should not, and keeps what was
already written. Small on purpose: a synthetic dataset (tiny videos, cached features), 1-epoch GRU runs."""

from __future__ import annotations

import errno
import json
import logging
import os
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

torch = pytest.importorskip("torch")
torch.set_num_threads(1)

import pipeline  # noqa: E402
from cache.store import store_path  # noqa: E402

SET_DIRS = {"train": "Train_Set", "val": "Validation_Set"}


@pytest.fixture(scope="module")
def synth(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from train.data.synthetic import SynthConfig, default_tracks, make_synthetic

    base = tmp_path_factory.mktemp("cli_failures")
    tracks = default_tracks(n_train=4, n_val=2, n_test=2, frames=(150, 200), seed=5)
    make_synthetic(base / "data", base / "cache", SynthConfig(tracks=tracks, visual_dim=8, audio_dim=4))
    return base


def _copy_data(synth: Path, tmp_path: Path) -> Path:
    shutil.copytree(synth / "data", tmp_path / "data")
    return tmp_path / "data"


def train_args(data: Path, cache: Path, runs: Path, name: str, *extra: str) -> list[str]:
    return [
        "train", "--model", "gru", "--features", "clip,wavlm", "--epochs", "1", "--window", "64", "--stride", "32",
        "--batch-size", "8", "--head", "hidden=8", "--head", "gru_hidden=8", "--name", name, "--data-root", str(data),
        "--cache-dir", str(cache), "--runs-dir", str(runs), "--device", "cpu", *extra,
    ]


@pytest.fixture(scope="module")
def trained(synth: Path) -> Path:
    """One finished run, `base`, under synth/runs."""
    result = CliRunner().invoke(pipeline.app, train_args(synth / "data", synth / "cache", synth / "runs", "base"))
    assert result.exit_code == 0, result.output
    return synth / "runs" / "base"


def one_line(result, command: str, *words: str) -> str:
    """The run failed with exit status 1 and one line '<command> failed: …' holding every word."""
    assert result.exit_code == 1, (result.exit_code, result.output)
    assert "Traceback" not in result.output and isinstance(result.exception, SystemExit), result.output
    text = " ".join(result.output.split())  # the console may wrap the line
    assert text.count(f"{command} failed:") == 1, result.output
    line = text[text.index(f"{command} failed:"):]
    for word in words:
        assert word in line, (word, line)
    return line


# ---- damaged checkpoints, read-only folders, a full disk ------------------------------------------
def test_a_corrupt_checkpoint_on_evaluate_and_on_resume(trained: Path, tmp_path: Path) -> None:
    run = tmp_path / "runs" / "base"
    shutil.copytree(trained, run)
    (run / "model.safetensors").write_bytes(b"PK\x03\x04 not really weights" * 10)  # what evaluate loads
    runner = CliRunner()
    result = runner.invoke(pipeline.app, ["evaluate", "base", "--runs-dir", str(tmp_path / "runs"), "--device", "cpu"])
    one_line(result, "evaluate", str(run / "model.safetensors"), "cannot be read")
    last = run / "checkpoints" / "last.pt"
    last.write_bytes(last.read_bytes()[:1000])  # cut short
    synth = trained.parents[1]
    result = runner.invoke(pipeline.app, train_args(synth / "data", synth / "cache", tmp_path / "runs", "base", "--resume"))
    one_line(result, "train", str(last), "cannot be read")


def test_disk_full_while_writing_a_checkpoint(synth: Path, tmp_path: Path, monkeypatch) -> None:
    """ENOSPC on the third checkpoint write (epoch 2): one line, the epoch-1 checkpoint intact, no temp file."""
    import train.runs.checkpoint as checkpoint

    writes = []
    real_open = open

    class FullDisk:
        def __init__(self, path, mode):
            self.handle = real_open(path, mode)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.handle.close()

        def write(self, data):
            self.handle.write(bytes(data[: len(data) // 2]))
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def fake_open(path, mode="r", *args, **kwargs):
        writes.append(path)
        return FullDisk(path, mode) if len(writes) >= 3 else real_open(path, mode, *args, **kwargs)

    monkeypatch.setattr(checkpoint, "open", fake_open, raising=False)
    args = train_args(synth / "data", synth / "cache", tmp_path / "runs", "full", "--epochs", "3")
    result = CliRunner().invoke(pipeline.app, args)
    one_line(result, "train", "cannot write checkpoint", "No space left on device")
    folder = tmp_path / "runs" / "full" / "checkpoints"
    assert sorted(p.name for p in folder.iterdir()) == ["best.pt", "last.pt"]  # no half-written .tmp
    assert checkpoint.load_checkpoint(folder / "last.pt")["loop"]["epoch"] == 1


def _read_only(folder: Path, monkeypatch) -> None:
    """chmod 555; as root (where permissions are not enforced) creating anything below it fails the same way."""
    folder.mkdir(parents=True, exist_ok=True)
    folder.chmod(0o555)
    if os.geteuid() == 0:
        real_mkdir = os.mkdir

        def mkdir(path, *args, **kwargs):
            if Path(path).resolve().is_relative_to(folder.resolve()):
                raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))
            return real_mkdir(path, *args, **kwargs)

        monkeypatch.setattr(os, "mkdir", mkdir)


def test_a_read_only_runs_folder(synth: Path, tmp_path: Path, monkeypatch) -> None:
    _read_only(tmp_path / "runs", monkeypatch)
    result = CliRunner().invoke(pipeline.app, train_args(synth / "data", synth / "cache", tmp_path / "runs", "ro"))
    one_line(result, "train", "Permission denied", str(tmp_path / "runs" / "ro"))


def test_a_read_only_cache_folder(synth: Path, tmp_path: Path, monkeypatch) -> None:
    _read_only(tmp_path / "cache", monkeypatch)
    args = ["extract", "--split", "train", "--features", "faces", "--data-root", str(synth / "data"), "--cache-dir",
            str(tmp_path / "cache"), "--profile", "tiny", "--device", "cpu", "--models-dir", str(tmp_path / "models")]
    result = CliRunner().invoke(pipeline.app, args)
    one_line(result, "extract", "Permission denied", str(tmp_path / "cache"))


# ---- predict / evaluate refuse missing features --------------------------------------------------
def _without_group(synth: Path, tmp_path: Path, feature: str, unit: str) -> Path:
    cache = tmp_path / "cache"
    shutil.copytree(synth / "cache", cache)
    shutil.rmtree(Path(store_path(cache, feature)) / unit)
    return cache


def test_predict_refuses_a_track_without_a_needed_feature(synth: Path, trained: Path, tmp_path: Path) -> None:
    cache = _without_group(synth, tmp_path, "clip", "test1")
    runner = CliRunner()
    base = ["predict", "base", "--runs-dir", str(trained.parent), "--cache-dir", str(cache), "--device", "cpu"]
    out = tmp_path / "test.csv"
    refused = runner.invoke(pipeline.app, [*base, "--out", str(out)])
    one_line(refused, "predict", "1 of 2 test track(s) have no complete group of feature 'clip'", "test1", "--allow-missing")
    assert not out.exists()

    allowed = runner.invoke(pipeline.app, [*base, "--out", str(out), "--allow-missing"])
    assert allowed.exit_code == 0, allowed.output
    text = " ".join(allowed.output.split())
    assert "submission written with gaps (--allow-missing)" in text and "1 track(s) without clip" in text
    assert "written and checked" not in text
    sidecar = json.loads((tmp_path / "test.csv.json").read_text())
    assert sidecar["complete"] is False and sidecar["allow_missing"] is True
    assert sidecar["missing"] == {"clip": ["test1"]} and sidecar["rows"] > 0

    whole = runner.invoke(pipeline.app, ["predict", "base", "--runs-dir", str(trained.parent), "--device", "cpu",
                                         "--out", str(tmp_path / "whole.csv")])
    assert whole.exit_code == 0 and "submission written and checked" in whole.output, whole.output
    assert json.loads((tmp_path / "whole.csv.json").read_text())["complete"] is True


def test_evaluate_refuses_a_track_without_a_needed_feature(synth: Path, trained: Path, tmp_path: Path) -> None:
    # (an audio feature's group may be missing where the video has no audio stream: that is not a gap)
    cache = _without_group(synth, tmp_path, "clip", "val0")
    runner = CliRunner()
    base = ["evaluate", "base", "--runs-dir", str(trained.parent), "--cache-dir", str(cache), "--device", "cpu"]
    one_line(runner.invoke(pipeline.app, base), "evaluate", "1 of 2 val track(s) have no complete group of feature 'clip'")
    allowed = runner.invoke(pipeline.app, [*base, "--allow-missing"])
    assert allowed.exit_code == 0, allowed.output
    assert "scored with gaps (--allow-missing): 1 track(s) without clip" in " ".join(allowed.output.split())
    recorded = json.loads((trained / "eval_val.json").read_text())["missing"]
    assert recorded["missing"] == {"clip": ["val0"]}


def test_no_audio_group_for_a_video_without_audio_is_not_a_gap(synth: Path, trained: Path, tmp_path: Path) -> None:
    """The synthetic videos carry no audio stream: extraction could never write their wavlm group."""
    cache = _without_group(synth, tmp_path, "wavlm", "val0")
    result = CliRunner().invoke(pipeline.app, ["evaluate", "base", "--runs-dir", str(trained.parent), "--cache-dir",
                                               str(cache), "--device", "cpu"])
    assert result.exit_code == 0 and "gaps" not in result.output, result.output


# ---- a wrong data root, an empty split, a track in two splits -------------------------------------
def test_a_data_root_that_does_not_exist(tmp_path: Path) -> None:
    runner = CliRunner()
    missing = tmp_path / "nowhere"
    cache, runs = tmp_path / "cache", tmp_path / "runs"
    one_line(runner.invoke(pipeline.app, ["status", "--data-root", str(missing), "--cache-dir", str(cache)]),
             "status", f"data root {missing} does not exist")
    one_line(runner.invoke(pipeline.app, ["extract", "--data-root", str(missing), "--cache-dir", str(cache),
                                          "--profile", "tiny", "--device", "cpu"]),
             "extract", f"data root {missing} does not exist")
    one_line(runner.invoke(pipeline.app, train_args(missing, cache, runs, "x")), "train", f"data root {missing} does not exist")
    assert not cache.exists() and not runs.exists()


def test_an_empty_split_creates_no_store(synth: Path, tmp_path: Path, caplog) -> None:
    data = _copy_data(synth, tmp_path)
    shutil.rmtree(data / "annotations" / "VA_Estimation_Challenge" / "Validation_Set")
    cache = tmp_path / "cache"
    args = ["extract", "--split", "val", "--features", "faces", "--data-root", str(data), "--cache-dir", str(cache),
            "--profile", "tiny", "--device", "cpu"]
    with caplog.at_level(logging.WARNING):
        result = CliRunner().invoke(pipeline.app, args)
    one_line(result, "extract", "split 'val' has no tracks")
    assert not cache.exists()
    train = CliRunner().invoke(pipeline.app, train_args(data, synth / "cache", tmp_path / "runs", "noval"))
    one_line(train, "train", "split 'val' has no tracks")
    assert not (tmp_path / "runs" / "noval").exists()  # no run folder left behind
    # the tiny profile anywhere but on the built-in sample is said out loud
    assert any("--profile tiny on" in r.getMessage() and "no real information" in r.getMessage() for r in caplog.records)


def test_a_track_in_two_splits_is_an_error_in_status_extract_and_train(synth: Path, tmp_path: Path) -> None:
    data = _copy_data(synth, tmp_path)
    labels = data / "annotations" / "VA_Estimation_Challenge"
    shutil.copy(labels / "Train_Set" / "train2.txt", labels / "Validation_Set" / "train2.txt")
    runner = CliRunner()
    status = runner.invoke(pipeline.app, ["status", "--data-root", str(data), "--cache-dir", str(synth / "cache")])
    assert status.exit_code == 1, status.output
    assert "error: 1 track(s) are in two splits" in " ".join(status.output.split()) and "train2 (train, val)" in status.output
    cache = tmp_path / "cache"
    extract = runner.invoke(pipeline.app, ["extract", "--data-root", str(data), "--cache-dir", str(cache),
                                           "--features", "faces", "--profile", "tiny", "--device", "cpu"])
    one_line(extract, "extract", "1 track(s) are in two splits: train2 (train, val)")
    assert not cache.exists()
    train = runner.invoke(pipeline.app, train_args(data, synth / "cache", tmp_path / "runs", "dup"))
    one_line(train, "train", "1 track(s) are in two splits: train2 (train, val)")
    assert not (tmp_path / "runs").exists()


# ---- status without videos, label/frame count mismatches -----------------------------------------
def test_status_with_the_videos_missing_counts_labels_and_says_it_once(synth: Path, tmp_path: Path) -> None:
    data = _copy_data(synth, tmp_path)
    full = CliRunner().invoke(pipeline.app, ["status", "--data-root", str(data), "--cache-dir", str(tmp_path / "c")])
    assert full.exit_code == 0, full.output
    shutil.rmtree(data / "videos")
    runner = CliRunner()
    result = runner.invoke(pipeline.app, ["status", "--data-root", str(data), "--cache-dir", str(tmp_path / "c")])
    assert result.exit_code == 0, result.output

    def counts(output: str) -> dict[str, list[int]]:
        import re

        rows = {}
        for split in ("train", "val", "test"):
            line = next(l for l in output.splitlines() if re.search(rf"^\W*{split}\b", l))
            rows[split] = [int(n) for n in re.findall(r"\d+", line)]
        return rows

    before, after = counts(full.output), counts(result.output)
    for split in before:  # same tracks and frames as with the videos; none with a video
        assert after[split][:3] == before[split][:3] and before[split][3] == before[split][0] and after[split][3] == 0
    text = " ".join(result.output.split())
    assert f"8 track(s) have no video under {data / 'videos'} (no such folder)" in text  # 4 train + 2 val + 2 test
    assert "train2 (train)" not in result.output and "--verbose lists them" in text
    verbose = runner.invoke(pipeline.app, ["status", "--data-root", str(data), "--cache-dir", str(tmp_path / "c"), "--verbose"])
    assert "train2 (train): no train2.mp4 or .avi" in verbose.output and "duo_left (train): no duo.mp4" in verbose.output


def test_status_lists_label_and_frame_count_mismatches(synth: Path, tmp_path: Path) -> None:
    """The synthetic videos hold 3 frames (the labels: 150 to 200 lines), so every track differs."""
    data = _copy_data(synth, tmp_path)
    runner = CliRunner()
    result = runner.invoke(pipeline.app, ["status", "--data-root", str(data), "--cache-dir", str(tmp_path / "c")])
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert "8 track(s) have a label count that differs from their video's frame count" in text
    verbose = runner.invoke(pipeline.app, ["status", "--data-root", str(data), "--cache-dir", str(tmp_path / "c"), "-v"])
    label_lines = len((data / "annotations/VA_Estimation_Challenge/Train_Set/train2.txt").read_text().splitlines()) - 1
    assert f"train2: {label_lines} label lines, 3 frames in train2.mp4" in verbose.output


# ---- training goes on around an unreadable video --------------------------------------------------
def test_training_leaves_out_unreadable_videos_with_one_warning(synth: Path, tmp_path: Path, caplog) -> None:
    data = _copy_data(synth, tmp_path)
    for stem in ("train2", "train3"):
        (data / "videos" / f"{stem}.mp4").write_bytes(b"\x00garbage" * 64)
    with caplog.at_level(logging.WARNING, logger="train.data.dataset"):
        result = CliRunner().invoke(pipeline.app, train_args(data, synth / "cache", tmp_path / "runs", "around"))
    assert result.exit_code == 0, result.output
    warnings = [r.getMessage() for r in caplog.records if "cannot be read" in r.getMessage()]
    assert len(warnings) == 1, warnings
    assert warnings[0].startswith("2 track(s) left out, their video cannot be read: train2, train3")
    assert "train2.mp4" in warnings[0] and "train3.mp4" in warnings[0]
    assert (tmp_path / "runs" / "around" / "checkpoints" / "best.pt").is_file()
