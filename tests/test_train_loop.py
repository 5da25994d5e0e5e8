"""Training loop end to end on small synthetic stores: learns, writes the run folder, resumes to the
same metrics, evaluate recomputes the table, predict writes a valid submission, nothing from
extract/ is imported."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import zarr
from typer.testing import CliRunner

from cache.store import FeatureMeta, store_path
from train.config import DataConfig, TrainConfig
from train.fit.loop import RunExists, train
from train.results.predict import sample_locations
from train.runs.folder import FingerprintChanged
from train.data.synthetic import SynthConfig, default_tracks, make_synthetic

torch.set_num_threads(1)
ROOT = Path(__file__).resolve().parents[1]
HEAD = {"hidden": 16, "gru_hidden": 16, "heads": 2, "dropout": 0.1}


def _cfg(base: Path, name: str, epochs: int = 3, cache: Path | None = None) -> TrainConfig:
    data = DataConfig(
        features=["clip", "wavlm"], data_root=str(base / "data"), cache_dir=str(cache or base / "cache"),
        window=64, stride=32,
    )
    return TrainConfig(
        model="crossattn", data=data, name=name, runs_dir=str(base / "runs"), head=dict(HEAD), epochs=epochs,
        lr=3e-3, batch_size=8, device="cpu", smooth_grid=[0, 2, 8],
    )


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    base = tmp_path_factory.mktemp("loop")
    tracks = default_tracks(n_train=4, n_val=2, n_test=2, frames=(200, 320), seed=1)
    make_synthetic(base / "data", base / "cache", SynthConfig(tracks=tracks))
    return base


@pytest.fixture(scope="module")
def full_run(base):
    return train(_cfg(base, "full"))


def test_short_run_learns_and_writes_the_run_folder(base, full_run):
    run = full_run.run.path
    for rel in ("config.yaml", "features.json", "metrics.jsonl", "checkpoints/best.pt", "checkpoints/last.pt",
                "report.md", "eval_val.json", "plots/learning_curves.png"):
        assert (run / rel).is_file(), rel
    assert len(list((run / "plots").glob("val_*.png"))) == 2
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2, 3]  # numbered from 1, as on the console
    assert {"train_loss", "val_P", "val_ccc_v", "val_ccc_a", "lr", "data_wait_share"} <= set(rows[0])
    assert "train_loss_kl" in rows[0] and "train_kl" not in rows[0]  # region prototypes in the clip store -> KL term active
    features = json.loads((run / "features.json").read_text())
    assert set(features) == {"clip", "wavlm"} and features["wavlm"]["unit"] == "video"
    # one config layout: config.yaml (grouped), the head's defaults filled; no flat config.json beside it
    from train.runs.recipe import train_config_to_recipe

    assert not (run / "config.json").exists()
    assert train_config_to_recipe(TrainConfig.load(run / "config.yaml")) == train_config_to_recipe(_cfg(base, "full"))
    # a constant predictor scores CCC 0 on both dimensions; the head must do clearly better
    assert full_run.eval.raw["P"] > 0.3
    assert full_run.eval.smoothed["P"] >= full_run.eval.raw["P"] - 1e-9
    report = (run / "report.md").read_text()
    assert "| val | raw |" in report and "smoothed" in report and "learning_curves.png" in report
    with pytest.raises(RunExists):
        train(_cfg(base, "full"))


def test_resume_after_interruption_gives_identical_metrics(base, full_run):
    def stop_after_second(epoch, row):
        if epoch == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(_cfg(base, "resumed"), on_epoch_end=stop_after_second)
    resumed = train(_cfg(base, "resumed"), resume=True)

    def strip(path):
        rows = [json.loads(line) for line in path.read_text().splitlines()]
        return [{k: v for k, v in r.items() if k not in ("epoch_s", "data_wait_share")} for r in rows]

    assert strip(resumed.run.metrics) == strip(full_run.run.metrics)
    assert resumed.eval.raw == full_run.eval.raw and resumed.eval.smoothed == full_run.eval.smoothed


def test_resume_refuses_a_store_with_another_fingerprint(base, full_run, tmp_path):
    import shutil

    cache = tmp_path / "cache"
    shutil.copytree(base / "cache", cache)
    root = zarr.open_group(str(store_path(cache, "clip")), mode="a")
    root.attrs.update(FeatureMeta(name="clip", model_ref="another-model").to_attrs())
    old = json.loads((full_run.run.features).read_text())["clip"]["fingerprint"]
    new = FeatureMeta(name="clip", model_ref="another-model").fingerprint
    with pytest.raises(FingerprintChanged) as err:
        train(_cfg(base, "full", epochs=4, cache=cache), resume=True)
    assert old in str(err.value) and new in str(err.value)


def test_evaluate_and_predict_from_the_cli(base, full_run):
    from pipeline import app

    runner = CliRunner()
    stored = json.loads(full_run.run.eval_file("val").read_text())
    res = runner.invoke(app, ["evaluate", "full", "--split", "val", "--runs-dir", str(base / "runs"), "--device", "cpu"])
    assert res.exit_code == 0, res.output
    # one evaluation file per split: evaluate rewrites eval_val.json, keeping what only training knows
    assert not (full_run.run.path / "evaluate_val.json").exists()
    again = json.loads(full_run.run.eval_file("val").read_text())
    assert again["best_epoch"] == stored["best_epoch"] and again["grid"] == stored["grid"]
    for key in ("raw", "smoothed"):
        assert again[key] == pytest.approx(stored[key], abs=1e-9)
    assert f"{stored['raw']['P']:.4f}" in res.output

    res = runner.invoke(app, ["predict", "full", "--split", "test", "--runs-dir", str(base / "runs"), "--device", "cpu"])
    assert res.exit_code == 0, res.output
    csv_path = full_run.run.predictions / "test.csv"
    lines = csv_path.read_text().splitlines()
    sample = base / "data" / "annotations" / "CVPR_10th_ABAW_VA_test_set_sample.txt"
    assert lines[0] == "image_location,valence,arousal"
    assert [line.split(",")[0] for line in lines[1:]] == sample_locations(sample)
    values = np.array([[float(x) for x in line.split(",")[1:]] for line in lines[1:]])
    assert np.isfinite(values).all() and np.abs(values).max() <= 1 and values.std() > 0


def test_cli_train_imports_no_extractor(base, tmp_path):
    code = f"""
import sys
from pipeline import app
try:
    app(["train", "--model", "gru", "--features", "clip,wavlm", "--epochs", "1", "--max-steps", "2",
         "--window", "64", "--stride", "64", "--head", "hidden=8", "--head", "gru_hidden=8", "--name", "cli",
         "--data-root", {str(base / 'data')!r}, "--cache-dir", {str(base / 'cache')!r},
         "--runs-dir", {str(tmp_path)!r}, "--device", "cpu"], standalone_mode=False)
finally:
    print("EXTRACT_MODULES", sorted(m for m in sys.modules if m == "extract" or m.startswith("extract.")))
"""
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120,
                         env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"})
    assert out.returncode == 0, out.stdout + out.stderr
    assert "EXTRACT_MODULES []" in out.stdout
    assert (tmp_path / "cli" / "report.md").is_file()


def test_required_input_masks_the_training_loss_frames(base, monkeypatch):
    import train.fit.loop as loop_mod
    import train.fit.losses as losses_mod

    seen = []
    real_to_tensors, real_va_loss = loop_mod.to_tensors, losses_mod.va_loss

    def holed(batch, device):  # every other frame of the clip stream missing
        tb = real_to_tensors(batch, device)
        tb.masks["clip"][:, ::2] = False
        seen.append(tb)
        return tb

    def spy(out, true, mask, cfg=None):
        seen.append(mask.clone())
        return real_va_loss(out, true, mask, cfg)

    monkeypatch.setattr(loop_mod, "to_tensors", holed)
    monkeypatch.setattr(losses_mod, "va_loss", spy)
    cfg = _cfg(base, "require", epochs=1)
    cfg.require_input, cfg.max_steps_per_epoch = ["clip"], 2
    train(cfg)
    pairs = [(a, b) for a, b in zip(seen, seen[1:]) if isinstance(b, torch.Tensor) and not isinstance(a, torch.Tensor)]
    assert pairs, "the training loss was never called"
    for tb, mask in pairs:
        assert torch.equal(mask, tb.label_mask & tb.masks["clip"])
        assert not mask[:, ::2].any() and mask.any()
