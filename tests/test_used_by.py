"""The commands the project is used by, on a small synthetic cache: `make train MODEL=dcmmoe` exactly as
written (the head's default recipe names its inputs), a missing store as one line with the command that
makes it, `pipeline.py ensemble` as an ordinary run folder (report, evaluate, predict), and `reproduce`
from a recipe list file, skipping what is done when run again."""

from __future__ import annotations

from train.config import TrainConfig  # noqa: E402
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from train.data.synthetic import SynthConfig, default_tracks, make_synthetic, write_reliability_store, write_segment_store

torch.set_num_threads(1)
ROOT = Path(__file__).resolve().parents[1]
FAST = ["optim.epochs=1", "optim.max_steps_per_epoch=2", "head.hidden=16", "data.window=64", "data.stride=32",
        "eval.smooth_grid=[0,2]"]


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    base = tmp_path_factory.mktemp("usedby")
    tracks = default_tracks(n_train=3, n_val=2, n_test=2, frames=(120, 160), seed=4)
    truth = make_synthetic(base / "data", base / "cache", SynthConfig(tracks=tracks))
    write_segment_store(base / "cache", "qwen3vl", tracks, truth)
    return base


def _where(base: Path) -> list[str]:
    return ["--data-root", str(base / "data"), "--cache-dir", str(base / "cache"), "--runs-dir", str(base / "runs"), "--device", "cpu"]


def test_make_train_model_dcmmoe_as_written(synth):
    """`make train MODEL=dcmmoe` (FEATURES empty): the default recipe configs/heads/dcmmoe.yaml names
    clip, wavlm, qwen3vl; TRAIN_ARGS only shortens the schedule."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    cmd = ["make", "-s", "-C", str(ROOT), "-o", ".venv/.installed", "train", "MODEL=dcmmoe", f"PY={sys.executable}",
           f"DATA={synth / 'data'}", f"CACHE={synth / 'cache'}", f"RUNS={synth / 'runs'}", "DEVICE=cpu",
           "TRAIN_ARGS=" + " ".join(["--name", "made", *FAST, "head.heads=2"])]
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    cfg = TrainConfig.load(synth / "runs" / "made" / "config.yaml").to_dict()
    assert cfg["model"] == "dcmmoe" and cfg["data"]["features"] == ["clip", "wavlm", "qwen3vl"]
    assert (synth / "runs" / "made" / "config.yaml").is_file() and (synth / "runs" / "made" / "provenance.json").is_file()


def test_a_missing_store_is_one_line_with_the_command_that_makes_it(synth):
    from pipeline import app

    res = CliRunner().invoke(app, ["train", "--model", "raav", *_where(synth), *FAST])
    assert res.exit_code == 1
    lines = [line for line in res.output.splitlines() if line.strip()]
    assert len(lines) == 1, res.output
    assert "feature 'audio_reliability' has no store" in lines[0]
    assert "make extract FEATURES=audio_reliability SPLIT=train" in lines[0]
    res = CliRunner().invoke(app, ["train", "--model", "dcmmoe", "--features", "clip,face_gru", *_where(synth)])
    assert res.exit_code == 1 and "make export RUN=<run> NAME=face_gru" in res.output


def _train(base: Path, name: str, features: str) -> None:
    from pipeline import app

    res = CliRunner().invoke(app, ["train", "--model", "gru", "--features", features, "--name", name, *_where(base),
                                   "optim.epochs=2", "head.hidden=16", "head.gru_hidden=16", "data.window=64",
                                   "data.stride=32", "eval.smooth_grid=[0,2,8]", "optim.lr=3e-3"])
    assert res.exit_code == 0, res.output


def test_ensemble_is_an_ordinary_run_folder(synth):
    from pipeline import app
    from train.results.ensemble import EnsembleSpec

    _train(synth, "face", "clip")
    _train(synth, "voice", "wavlm")
    res = CliRunner().invoke(app, ["ensemble", "face", "voice", "--name", "late", "--runs-dir", str(synth / "runs"), "--device", "cpu"])
    assert res.exit_code == 0, res.output
    run = synth / "runs" / "late"
    spec = EnsembleSpec.load(run / "ensemble.json")
    assert spec.members == ["face", "voice"] and spec.method == "weighted"
    assert abs(sum(spec.weights_v) - 1) < 1e-9 and abs(sum(spec.weights_a) - 1) < 1e-9
    # the weighted candidates include each member alone: never worse than a member on validation (raw)
    best_member = max(spec.scores[m]["P"] for m in ("face", "voice"))
    assert spec.scores["weighted"]["P"] >= best_member - 1e-9
    assert spec.scores["weighted"]["P"] >= spec.scores["mean"]["P"] - 1e-9
    assert "Late fusion of 2 runs" in (run / "report.md").read_text()
    stored = json.loads((run / "eval_val.json").read_text())
    res = CliRunner().invoke(app, ["evaluate", "late", "--runs-dir", str(synth / "runs"), "--device", "cpu"])
    assert res.exit_code == 0, res.output
    again = json.loads((run / "eval_val.json").read_text())
    assert again["smoothed"]["P"] == pytest.approx(stored["smoothed"]["P"], abs=1e-6)
    res = CliRunner().invoke(app, ["predict", "late", "--runs-dir", str(synth / "runs"), "--device", "cpu"])
    assert res.exit_code == 0, res.output
    rows = (run / "predictions" / "test.csv").read_text().splitlines()
    assert rows[0] == "image_location,valence,arousal" and len(rows) > 100
    res = CliRunner().invoke(app, ["ensemble", "face", "--name", "solo", "--runs-dir", str(synth / "runs")])
    assert res.exit_code == 1 and "at least two runs" in res.output
    res = CliRunner().invoke(app, ["export", "late", "--name", "x", "--runs-dir", str(synth / "runs"), "--device", "cpu"])
    assert res.exit_code == 1 and "ensemble" in res.output


def test_reproduce_runs_a_recipe_list_and_skips_what_is_done(synth, tmp_path, monkeypatch):
    """A small recipe list (no extraction: the synthetic stores stand in for features): two branches, the
    export of one, a fusion step over the export, late fusion, the submission; run twice."""
    from recipes import reproduce as rep

    cfgs = tmp_path / "mini"
    cfgs.mkdir()
    (cfgs / "face.yaml").write_text("model: gru\nhead: {hidden: 16}\noptim: {epochs: 2, lr: 3.0e-3}\n"
                                    "data: {features: [clip], window: 64, stride: 32}\neval: {smooth_grid: [0, 2]}\n")
    (cfgs / "fusion.yaml").write_text("model: dcmmoe\nhead: {hidden: 16, heads: 2, layers: 1}\noptim: {epochs: 2, lr: 3.0e-3}\n"
                                      "data: {features: [mini_face, wavlm], window: 64, stride: 32}\neval: {smooth_grid: [0, 2]}\n")
    (cfgs / "reproduce.yaml").write_text(
        "method: a test\nextract: {config: ras/extract.yaml, splits: []}\n"
        f"steps:\n  - {{name: face, train: {cfgs / 'face.yaml'}, export: mini_face, paper: {{P: 0.619}}}}\n"
        f"  - {{name: fusion, train: {cfgs / 'fusion.yaml'}, paper: {{P: 0.649}}}}\n"
        "ensemble: {name: late, members: [fusion, face]}\nsubmit: late\n"
    )
    opts = rep.ReproduceOptions(data_root=synth / "data", cache_dir=str(synth / "cache"), out=tmp_path / "out",
                                profile="none", device="cpu")
    from rich.console import Console

    console = Console(file=open(os.devnull, "w"))
    report = rep.reproduce(str(cfgs / "reproduce.yaml"), opts, console)
    text = report.read_text()
    assert report == tmp_path / "out" / "mini" / "report.md"
    for row in ("| face | mini-face | gru on clip | trained", "| face export | mini-face |", "| fusion | mini-fusion | dcmmoe on mini_face, wavlm | trained",
                "| late | mini-late |", "| test submission | mini-late |"):
        assert row in text, text
    assert "0.619" in text and "0.649" in text
    first = json.loads((tmp_path / "out" / "mini" / "runs" / "mini-fusion" / "eval_val.json").read_text())
    text = rep.reproduce(str(cfgs / "reproduce.yaml"), opts, console).read_text()
    assert "| face | mini-face | gru on clip | skipped (done)" in text and "| late | mini-late | weighted" in text
    assert "skipped (done)" in text.split("| late |")[1].splitlines()[0]
    assert json.loads((tmp_path / "out" / "mini" / "runs" / "mini-fusion" / "eval_val.json").read_text()) == first
    # a changed branch is trained again, and so is the fusion step reading its export
    (cfgs / "face.yaml").write_text((cfgs / "face.yaml").read_text().replace("epochs: 2", "epochs: 1"))
    text = rep.reproduce(str(cfgs / "reproduce.yaml"), opts, console).read_text()
    assert "| face | mini-face | gru on clip | trained" in text and "| fusion | mini-fusion | dcmmoe on mini_face, wavlm | trained" in text
    assert any(p.name.startswith("mini-fusion.old-") for p in (tmp_path / "out" / "mini" / "runs").iterdir())


def test_make_extract_and_make_train_on_the_sample_as_written(tmp_path):
    """`make extract SPLIT=train`, `make extract SPLIT=val` and `make train MODEL=gru` on a short built-in
    sample (two 2 s videos, tiny models): the default recipe of `gru` reads the `clip` store they make."""
    from cache.sample_data import SampleConfig, write_sample_dataset

    write_sample_dataset(tmp_path / "data", SampleConfig.short(("video20", "12-30-640x360"), 2.0))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    where = [f"PY={sys.executable}", f"DATA={tmp_path / 'data'}", f"CACHE={tmp_path / 'cache'}", f"RUNS={tmp_path / 'runs'}",
             "DEVICE=cpu", f"YOLO_CONFIG_DIR={tmp_path / 'yolo'}"]

    def make(*args: str) -> subprocess.CompletedProcess:
        done = subprocess.run(["make", "-s", "-C", str(ROOT), "-o", ".venv/.installed", *args, *where],
                              capture_output=True, text=True, env=env, timeout=900)
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
        return done

    make("extract", "SPLIT=train", f"EXTRACT_ARGS=--models-dir {tmp_path / 'models'}")
    make("extract", "SPLIT=val", f"EXTRACT_ARGS=--models-dir {tmp_path / 'models'}")
    assert (tmp_path / "cache" / "clip.zarr").is_dir()
    make("train", "MODEL=gru", "TRAIN_ARGS=" + " ".join(["--name", "sample-gru", *FAST]))
    cfg = TrainConfig.load(tmp_path / "runs" / "sample-gru" / "config.yaml").to_dict()
    assert cfg["model"] == "gru" and cfg["data"]["features"] == ["clip"]
    assert json.loads((tmp_path / "runs" / "sample-gru" / "eval_val.json").read_text())["frames"] > 0


@pytest.mark.parametrize("extra, expected", [((), "pipeline.py reproduce ras --data-root artifacts/sample --device auto"),
                                             (("PROFILE=full", "DATA=/data/aw2"), "--data-root /data/aw2 --profile full"),
                                             (("CACHE=/fast/features",), "--data-root artifacts/sample --cache-dir /fast/features --device")])
def test_make_reproduce_command_line(extra, expected):
    """`make reproduce RECIPE=ras` (the recipe's own default profile, tiny; its stores under
    artifacts/reproduce/ras/features, apart from the demo's, whose Qwen3-VL input differs), with DATA=… PROFILE=full,
    and with an explicit CACHE."""
    done = subprocess.run(["make", "-n", "-s", "-C", str(ROOT), "-o", ".venv/.installed", "reproduce", "RECIPE=ras", *extra],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert expected in " ".join(done.stdout.split()), done.stdout


def test_reproduce_exits_1_when_a_video_failed(synth, tmp_path, monkeypatch):
    """The steps go on without a video that failed extraction, and the report is written, but the command
    says the method did not run on every video: exit status 1 (issue 24)."""
    import extract.backends
    from extract.runner import RunSummary
    from pipeline import app

    cfgs = tmp_path / "mini"
    cfgs.mkdir()
    (cfgs / "face.yaml").write_text("model: gru\nhead: {hidden: 8}\noptim: {epochs: 1, max_steps_per_epoch: 2}\n"
                                    "data: {features: [clip], window: 64, stride: 32}\neval: {smooth_grid: [0]}\n")
    (cfgs / "reproduce.yaml").write_text(
        "method: a test\nextract: {config: ras/extract.yaml, splits: [train]}\n"
        f"steps:\n  - {{name: face, train: {cfgs / 'face.yaml'}}}\nsubmit: face\n"
    )
    monkeypatch.setattr(extract.backends, "run_extraction",
                        lambda opts: RunSummary(done=["a: clip"], failed=["broken.mp4: cannot decode (moov atom not found)"]))
    res = CliRunner().invoke(app, ["reproduce", str(cfgs / "reproduce.yaml"), "--data-root", str(synth / "data"),
                                   "--cache-dir", str(synth / "cache"), "--out", str(tmp_path / "out"), "--device", "cpu"])
    assert res.exit_code == 1, res.output
    report = (tmp_path / "out" / "mini" / "report.md").read_text()
    assert "broken.mp4: cannot decode" in report and "| test submission | mini-face |" in report
    assert "1 video(s) failed" in res.output and "broken.mp4" in res.output.splitlines()[-1]


def test_ensemble_mismatch_names_the_run_that_differs(tmp_path, monkeypatch):
    """Three members, the third predicting other validation tracks: the error names the third (issue 24)."""
    from types import SimpleNamespace

    import train.results.ensemble as ens

    tracks = {"a": ["v1", "v2"], "b": ["v1", "v2"], "c": ["v1", "v3"]}
    for name in tracks:
        (tmp_path / name).mkdir()
        (tmp_path / name / "config.json").write_text("{}")

    def fake_member_split(path, split, runs_dir, device, *args, **kwargs):
        ds = SimpleNamespace(tracks=[SimpleNamespace(name=t) for t in tracks[Path(path).name]], close=lambda: None)
        return ds, None, None, None

    monkeypatch.setattr(ens, "member_split", fake_member_split)
    with pytest.raises(ValueError, match=r"^run c predicts other validation tracks than a$"):
        ens.build_ensemble(["a", "b", "c"], "late", tmp_path, "mean", "cpu")
    with pytest.raises(ValueError, match=r"^run c predicts other validation tracks than b$"):
        ens.build_ensemble(["b", "c", "a"], "late", tmp_path, "mean", "cpu")


def test_an_ensemble_name_is_one_folder_name(tmp_path):
    from train.results.ensemble import build_ensemble

    with pytest.raises(ValueError, match=r"ensemble name '\.\./out' is not a single folder name"):
        build_ensemble(["a", "b"], "../out", tmp_path / "runs", "mean", "cpu")
    assert not (tmp_path / "out").exists()
