"""Stacking and fusion through the real loop: a unimodal `gru` run is exported as a feature store, then
`dcmmoe` and `raav` train on {exported store, audio-like store, segment store (+ audio_reliability for
raav)}, write the normal run folder and beat a constant predictor; RAAV reads audio_reliability only
as a mask; with one modality zeroed and invalid everywhere both still predict every frame."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from cache.align import align_to_frames
from cache.media import frame_times
from cache.store import FeatureStore, store_path
from train.config import DataConfig, TrainConfig
from train.scoring.evaluate import evaluate_predictions, postprocess, predict_split
from train.results.export import export_run
from train.fit.loop import train
from train.results.restore import load_run
from train.data.synthetic import (
    SynthConfig, default_tracks, make_synthetic, write_reliability_store, write_segment_store,
)
from train.data.tensors import to_tensors

torch.set_num_threads(1)
WINDOW, STRIDE = 64, 32
FUSION = ["face_gru", "wavlm", "qwen3vl"]
RAAV = [*FUSION, "audio_reliability"]
DCMMOE_HEAD = {"hidden": 16, "heads": 2, "layers": 1, "dropout": 0.1}
RAAV_HEAD = {"hidden": 16, "heads": 2, "layers": 1, "dropout": 0.1, "priors": {"face_gru": 0.85, "qwen3vl": 0.15}}


def _cfg(base: Path, model: str, features: list[str], head: dict, name: str, epochs: int = 4) -> TrainConfig:
    data = DataConfig(features=features, data_root=str(base / "data"), cache_dir=str(base / "cache"),
                      window=WINDOW, stride=STRIDE)
    return TrainConfig(model=model, data=data, name=name, runs_dir=str(base / "runs"), head=dict(head), epochs=epochs,
                       lr=3e-3, batch_size=8, device="cpu", smooth_grid=[0, 2, 8])


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    base = tmp_path_factory.mktemp("fusion")
    tracks = default_tracks(n_train=4, n_val=2, n_test=2, frames=(200, 320), seed=1)
    truth = make_synthetic(base / "data", base / "cache", SynthConfig(tracks=tracks))
    write_segment_store(base / "cache", "qwen3vl", tracks, truth)
    write_reliability_store(base / "cache", tracks)
    face = train(_cfg(base, "gru", ["clip"], {"hidden": 16, "gru_hidden": 16}, "face"))
    report = export_run("face", "face_gru", runs_dir=base / "runs", device="cpu")
    assert sum(report.written.values()) == len(tracks)
    dcmmoe = train(_cfg(base, "dcmmoe", FUSION, DCMMOE_HEAD, "dcmmoe"))
    # raav through the CLI: >= 3 stores incl. the exported one, and the reliability mask
    from pipeline import app

    res = CliRunner().invoke(app, [
        "train", "--model", "raav", "--features", ",".join(RAAV), "--name", "raav", "--epochs", "4",
        "--lr", "3e-3", "--window", str(WINDOW), "--stride", str(STRIDE),
        "--head", "hidden=16", "--head", "heads=2", "--head", "layers=1",
        "--head", 'priors={"face_gru": 0.85, "qwen3vl": 0.15}',
        "--data-root", str(base / "data"), "--cache-dir", str(base / "cache"), "--runs-dir", str(base / "runs"),
        "--device", "cpu",
    ])
    assert res.exit_code == 0, res.output
    return {"base": base, "tracks": tracks, "face": face, "dcmmoe": dcmmoe}


@pytest.mark.parametrize("run", ["dcmmoe", "raav"])
def test_fusion_runs_write_the_run_folder_and_learn(stack, run):
    path = stack["base"] / "runs" / run
    for rel in ("config.yaml", "features.json", "metrics.jsonl", "checkpoints/best.pt", "checkpoints/last.pt",
                "report.md", "eval_val.json"):
        assert (path / rel).is_file(), rel
    features = json.loads((path / "features.json").read_text())
    want = RAAV if run == "raav" else FUSION
    assert sorted(features) == sorted(want)
    assert features["face_gru"]["model_ref"] == "run:face" and features["face_gru"]["dim"] == 16 + 2
    assert features["face_gru"]["fingerprint"] == FeatureStore.open(store_path(stack["base"] / "cache", "face_gru")).fingerprint
    raw = json.loads((path / "eval_val.json").read_text())["raw"]
    print(f"{run}: val P {raw['P']:.4f} (CCC_V {raw['ccc_v']:.4f}, CCC_A {raw['ccc_a']:.4f}); "
          f"unimodal face gru {stack['face'].eval.raw['P']:.4f}")
    assert raw["P"] > 0.5  # a constant predictor scores 0
    assert len((path / "metrics.jsonl").read_text().splitlines()) == 4


def test_raav_reads_audio_reliability_only_as_a_mask(stack):
    loaded = load_run("raav", stack["base"] / "runs", "cpu")
    model = loaded.model
    assert "audio_reliability" not in model.visual + model.audio
    assert model.visual == ["face_gru", "qwen3vl"] and model.audio == ["wavlm"]
    assert not any("audio_reliability" in key for key in model.state_dict())
    ds = loaded.dataset("val")
    try:
        shares = []
        for batch in ds.batches(ds.sequential_order(), 8):
            tb = to_tensors(batch, loaded.device)
            with torch.no_grad():
                out = model(tb.features, tb.masks, tb.pad)
            # aligned last column (overlap-weighted mean of the windows over each frame) > threshold,
            # where the reliability row and the audio are present
            flag = batch.features["audio_reliability"][..., -1].astype(np.float32) > model.cfg.reliability_threshold
            expected = flag & batch.masks["audio_reliability"] & batch.masks["wavlm"] & batch.pad
            got = out.extras["audio_reliable"].numpy()
            np.testing.assert_array_equal(got, expected)
            shares.append(got[batch.pad])
        assert 0.05 < np.concatenate(shares).mean() < 0.95  # the mask really varies over frames
        # the window feature is aligned like any other (overlap-weighted mean onto the label frames)
        store = loaded.sources["audio_reliability"].store
        for ti, track in enumerate(ds.tracks):
            raw = store.read(track.name)
            want, mask = align_to_frames(raw.values, raw.times, frame_times(int(ds.n_frames[ti]), ds.fps[ti]), valid=raw.valid)
            aligned = ds.track(ti)
            assert mask.all() and aligned.masks["audio_reliability"].all()
            np.testing.assert_allclose(aligned.values["audio_reliability"], want, atol=1e-3)
        # has_feature counts input streams only, not the mask-only reliability feature
        preds = predict_split(model, ds, loaded.device, 8)
        for ti, has in enumerate(preds.has_feature):
            a = ds.track(ti)
            np.testing.assert_array_equal(has, a.masks["face_gru"] | a.masks["qwen3vl"] | a.masks["wavlm"])
    finally:
        ds.close()


def _zeroed_cache(base: Path, feature: str, dest: Path) -> Path:
    """A copy of the cache where `feature` is zero and invalid on every row (same metadata)."""
    cache = dest / "cache"
    shutil.copytree(base / "cache", cache)
    store = FeatureStore.create_or_open(store_path(cache, feature), FeatureStore.open(store_path(cache, feature)).meta)
    for unit in store.units():
        g = store.read(unit)
        store.write(unit, np.zeros_like(g.values), g.times, np.zeros(len(g.values), bool), attrs=g.attrs)
    return cache


@pytest.mark.parametrize("feature", ["face_gru", "wavlm"])
def test_fusion_heads_predict_every_frame_with_a_modality_missing(stack, feature, tmp_path):
    cache = _zeroed_cache(stack["base"], feature, tmp_path)
    for run in ("dcmmoe", "raav"):
        loaded = load_run(run, stack["base"] / "runs", "cpu", cache_dir=cache)  # fingerprints unchanged
        for split in ("val", "test"):
            ds = loaded.dataset(split)
            try:
                assert not any(ds.track(ti).masks[feature].any() for ti in range(len(ds.tracks)))
                preds = predict_split(loaded.model, ds, loaded.device, 8)
                for ti, (va, has) in enumerate(zip(preds.va, preds.has_feature)):
                    assert va.shape == (int(ds.n_frames[ti]), 2) and np.isfinite(va).all(), (run, split, ti)
                    assert np.isfinite(postprocess(va, has, loaded.half_windows)).all()
                    assert has.mean() > 0.5  # the other modalities are still there
                if split == "val":
                    result = evaluate_predictions(ds, preds, half_windows=loaded.half_windows)
                    assert np.isfinite([result.raw["P"], result.smoothed["P"]]).all()
            finally:
                ds.close()
