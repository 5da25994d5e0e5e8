"""Weights as safetensors next to config.json; evaluate/predict/export never unpickle; --resume loads the
.pt with weights_only=True; a pickled checkpoint that runs code is refused; old run folders still load."""

from __future__ import annotations

import json
import pickle
import random
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from train.runs.checkpoint import CheckpointError, load_checkpoint
from train.config import DataConfig, TrainConfig
from train.results.evaluate import evaluate_run
from train.fit.loop import train
from train.results.restore import load_run
from train.data.synthetic import SynthConfig, default_tracks, make_synthetic
from train.runs.weights import read_metadata

torch.set_num_threads(1)
RAN = []


def _cfg(base: Path, name: str, epochs: int = 2) -> TrainConfig:
    data = DataConfig(features=["clip", "wavlm"], data_root=str(base / "data"), cache_dir=str(base / "cache"), window=48, stride=48)
    return TrainConfig(model="gru", data=data, name=name, runs_dir=str(base / "runs"), head={"hidden": 8}, epochs=epochs,
                       lr=3e-3, batch_size=4, device="cpu", smooth_grid=[0, 2], max_steps_per_epoch=5)


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    base = tmp_path_factory.mktemp("weights")
    make_synthetic(base / "data", base / "cache", SynthConfig(tracks=default_tracks(3, 2, 1, (150, 200), seed=4)))
    train(_cfg(base, "run"))
    return base


@pytest.fixture
def no_torch_load(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("torch.load called")

    monkeypatch.setattr(torch, "load", refuse)


def test_weights_are_safetensors_next_to_config(base):
    run = base / "runs" / "run"
    from safetensors.torch import load_file

    best, last = load_file(run / "model.safetensors"), load_file(run / "model_last.safetensors")
    ckpt = load_checkpoint(run / "checkpoints" / "best.pt")
    assert set(best) == set(ckpt["model"])
    for key, value in ckpt["model"].items():
        assert torch.equal(best[key], value), key
    assert set(last) == set(best)
    assert read_metadata(run / "model.safetensors")["config"] == "config.yaml"
    assert TrainConfig.load(run / "config.yaml").model == "gru"


def test_evaluate_predict_export_never_unpickle(base, no_torch_load, monkeypatch):
    from train.results.export import export_run
    from train.results.predict import predict_run

    monkeypatch.setattr(pickle, "load", lambda *a, **k: pytest.fail("pickle.load"))
    monkeypatch.setattr(pickle, "loads", lambda *a, **k: pytest.fail("pickle.loads"))
    stored = json.loads((base / "runs" / "run" / "eval_val.json").read_text())
    result = evaluate_run("run", "val", str(base / "runs"), "cpu")
    assert result.smoothed["P"] == pytest.approx(stored["smoothed"]["P"], abs=1e-6)
    assert predict_run("run", "test", str(base / "runs"), "cpu").is_file()
    report = export_run("run", "run_export", ["val"], runs_dir=base / "runs", device="cpu")
    assert report.written["val"] == 2


def test_resume_loads_with_weights_only(base, monkeypatch):
    real = torch.load
    calls = []

    def spy(*args, **kwargs):
        calls.append(kwargs.get("weights_only"))
        return real(*args, **kwargs)

    monkeypatch.setattr(torch, "load", spy)
    result = train(_cfg(base, "run", epochs=3), resume=True)
    assert calls and all(c is True for c in calls)
    assert result.epochs_run == 3


class _Payload:
    def __reduce__(self):
        return (RAN.append, ("code ran",))


def test_a_checkpoint_that_runs_code_is_refused(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"model": {}, "payload": _Payload()}, path)
    with pytest.raises(CheckpointError, match="evil.pt cannot be read"):
        load_checkpoint(path)
    assert RAN == []


def test_old_run_folder_loads_and_resumes(base, tmp_path):
    old = tmp_path / "runs" / "old"
    shutil.copytree(base / "runs" / "run", old)
    for name in ("model.safetensors", "model_last.safetensors"):
        (old / name).unlink()
    for name in ("best.pt", "last.pt"):  # as written before: numpy/python RNG states pickled as such
        state = load_checkpoint(old / "checkpoints" / name)
        state["rng"] = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
        torch.save(state, old / "checkpoints" / name)
    loaded = load_run(old, tmp_path / "runs", "cpu")
    reference = load_run("run", base / "runs", "cpu")
    ref_state = load_checkpoint(base / "runs" / "run" / "checkpoints" / "best.pt")["model"]
    for key, value in loaded.model.state_dict().items():
        assert torch.equal(value, ref_state[key]), key
    assert reference.half_windows == loaded.half_windows
    cfg = _cfg(base, "old", epochs=4)
    cfg.runs_dir = str(tmp_path / "runs")
    assert train(cfg, resume=True).epochs_run == 4
    assert (old / "model_last.safetensors").is_file()
