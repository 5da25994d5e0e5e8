"""Backbone tops trained from the cache (issue 13): face_crops and wavlm_hidden stores, equivalence of the
split models with the full ones, fine-tuned runs end to end (evaluate, predict, export, saved backbone
reused by extraction), bad input refused with one line. Tiny models, 3 s sample videos."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
torch.set_num_threads(1)

from typer.testing import CliRunner  # noqa: E402

from cache.sample_data import SampleConfig, write_sample_dataset  # noqa: E402
from cache.store import FeatureStore, store_path  # noqa: E402
from extract.runner import RunOptions  # noqa: E402
from extract.backends import run_extraction  # noqa: E402
from train.config import TrainConfig  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
FEATURES = ["faces", "clip", "face_crops", "wavlm", "wavlm_hidden"]
HIDDEN = {"top_layers": 2, "dtype": "float32"}  # the tiny WavLM has 2 layers; float32 for exact checks
LOSSLESS = {"codec": "lossless"}  # exact equivalence checks; the default codec (jpeg:95) has its own test


@pytest.fixture(scope="module")
def ws(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("finetune")
    write_sample_dataset(root / "data", SampleConfig.short(("video20", "video2", "video7", "video33"), 3.0))
    for split in ("train", "val", "test"):
        summary = run_extraction(RunOptions(
            split=split, features=FEATURES, data_root=root / "data", cache_dir=root / "cache",
            models_dir=root / "models", profile="tiny", device="cpu", progress=False, batch_size=16,
            configs={"wavlm_hidden": HIDDEN, "face_crops": LOSSLESS},
        ))
        assert summary.ok, summary.failed
    return root


def _store(ws: Path, name: str, cache: str = "cache") -> FeatureStore:
    return FeatureStore.open(store_path(ws / cache, name))


def _ref(ws: Path, family: str) -> str:
    from extract.models import resolve_model_ref

    return resolve_model_ref(family, "tiny", ws / "models")


# ---- stores -------------------------------------------------------------------------------------------
def test_face_crops_store_records_its_model_and_size(ws):
    store = _store(ws, "face_crops")
    _, spec = store.get_extra("input_spec")
    assert spec["model"] == "affcache-tiny-clip" and spec["image_size"] == 224
    g = store.read("video20")
    assert g.values.dtype == np.uint8 and g.values.shape[1:] == (224, 224, 3)
    assert len(g.values) == len(_store(ws, "clip").read("video20").values) and g.valid.all()
    assert g.values[g.valid].std() > 10  # real crops, not black rows
    arr = store._root["video20"]["values"]
    assert arr.chunks[0] == 32 and "zstd" in str(arr.compressors) and "bitshuffle" in str(arr.compressors)
    assert store.meta.config["codec"] == "lossless" and g.attrs["codec"] == "lossless"


def test_jpeg_crops_are_smaller_close_to_lossless_and_read_by_rows(ws):
    """The default codec (jpeg:95): its own fingerprint, rows of JPEG bytes, decoded close to the pixels."""
    from cache.crops import CropReader

    summary = run_extraction(RunOptions(
        split="train", features=["faces", "face_crops"], data_root=ws / "data", cache_dir=ws / "cache-jpeg",
        models_dir=ws / "models", profile="tiny", device="cpu", progress=False, batch_size=16,
        only_videos=["video20"],
    ))
    assert summary.ok, summary.failed
    jpeg, lossless = _store(ws, "face_crops", "cache-jpeg"), _store(ws, "face_crops")
    assert jpeg.meta.config["codec"] == "jpeg:95" and jpeg.fingerprint != lossless.fingerprint
    raw = lossless.read("video20")
    enc = jpeg.read("video20")
    assert enc.values.shape[1:] == (224 * 224 * 3 // 2 + 5,) and enc.attrs["codec"] == "jpeg:95"
    np.testing.assert_array_equal(enc.valid, raw.valid)
    payload = enc.values[:, 1:5].copy().view("<u4").ravel()
    assert (payload[enc.valid] > 1000).all() and payload[enc.valid].mean() < 0.3 * 224 * 224 * 3
    rows = np.array([0, 5, 5, 40, len(raw.valid) - 1])  # any rows, repeated, across chunks
    reader = CropReader(jpeg, workers=2)
    listings = []
    real_list = jpeg._list
    jpeg._list = lambda *a, **k: listings.append(a) or real_list(*a, **k)
    got = reader.read("video20", rows).numpy()
    for _ in range(3):
        reader.read("video20", rows[::-1])
    assert len(listings) == 1  # the unit's chunk files are listed when it is opened, not per read
    assert got.shape == (5, 224, 224, 3) and got.dtype == np.uint8
    err = (got.astype(np.float64) - raw.values[rows]) ** 2
    psnr = 10 * np.log10(255.0**2 / err.mean())
    assert psnr > 35, psnr
    np.testing.assert_array_equal(CropReader(lossless).read("video20", rows).numpy(), raw.values[rows])


def test_wavlm_hidden_rows_are_wavlm_rows(ws):
    hidden, last = _store(ws, "wavlm_hidden").read("video20"), _store(ws, "wavlm").read("video20")
    assert hidden.values.dtype == np.float32 and hidden.values.shape == last.values.shape
    np.testing.assert_array_equal(hidden.times, last.times)  # same 50 Hz frames, same stitching
    assert hidden.attrs["top_layers"] == 2 and hidden.attrs["depth"] == 2 and hidden.attrs["n_samples"] > 0


# ---- equivalence ----------------------------------------------------------------------------------------
def test_wavlm_top_layers_on_cached_states_reproduce_the_full_model(ws):
    from extract.wavlm_model import load_wavlm
    from train.heads.backbones import load_wavlm_backbone

    ref = _ref(ws, "wavlm")
    bundle = load_wavlm(ref)
    torch.manual_seed(0)
    for samples in (16000, 64000):  # the position bias is recomputed for each window length
        x = torch.randn(2, samples)
        with torch.no_grad():
            full = bundle.model(input_values=x, output_hidden_states=True)
            for stored, k in ((1, 1), (2, 2), (2, 1)):  # cache holds the input of the top `stored` layers
                top = load_wavlm_backbone(ref, k, stored).top.eval()
                out = top(full.hidden_states[-1 - stored])
                assert (out - full.last_hidden_state).abs().max().item() <= 1e-4, (samples, stored, k)


def test_wavlm_top_on_the_store_reproduces_the_full_model_on_the_audio(ws):
    """The 3 s sample audio is one window: the top layers on the wavlm_hidden rows = the whole model."""
    from extract.audio import decode_audio
    from extract.wavlm import WavlmConfig, compute_wavlm
    from extract.wavlm_model import load_wavlm
    from train.heads.backbones import load_wavlm_backbone

    ref = _ref(ws, "wavlm")
    audio = decode_audio(ws / "data" / "videos" / "video20.mp4")
    bundle = load_wavlm(ref)
    inputs = bundle.feature_extractor([audio.samples], sampling_rate=16000, return_tensors="pt")["input_values"]
    with torch.no_grad():
        full = bundle.model(input_values=inputs).last_hidden_state[0].numpy()  # the model's output
    rows = _store(ws, "wavlm_hidden").read("video20").values
    # the store's rows are the extraction's hidden_states[depth - K] of the same (single) window
    same, _, _ = compute_wavlm(bundle, audio, WavlmConfig(layers=(0,)))
    np.testing.assert_array_equal(rows, same)
    with torch.no_grad():
        out = load_wavlm_backbone(ref, 2, 2).top.eval()(torch.from_numpy(rows)[None])[0].numpy()
    assert np.abs(out - full).max() <= 1e-4


def test_clip_tower_on_cached_crops_reproduces_the_clip_store(ws):
    from train.heads.backbones import load_clip_backbone

    crops, clip = _store(ws, "face_crops").read("video20"), _store(ws, "clip").read("video20")
    for top in (1, None):
        tower = load_clip_backbone(_ref(ws, "open_clip"), top).tower.eval()
        with torch.no_grad():
            emb = tower(torch.from_numpy(np.asarray(crops.values))).numpy()
        # the clip store is float16: its rounding is the only difference
        assert np.abs(emb - clip.values.astype(np.float32)).max() <= 1e-3


# ---- fine-tuned runs ------------------------------------------------------------------------------------
def _train_args(ws: Path, name: str, features: str, spec: str, *extra: str) -> list[str]:
    return ["train", "--model", "gru", "--features", features, "--epochs", "1", "--max-steps", "2", "--window", "32",
            "--stride", "32", "--batch-size", "4", "--head", "hidden=8", "--head", "gru_hidden=8", "--name", name,
            "--finetune", spec, "--profile", "tiny", "--finetune-opt", f"models_dir={ws / 'models'}",
            "--data-root", str(ws / "data"), "--cache-dir", str(ws / "cache"), "--runs-dir", str(ws / "runs"),
            "--device", "cpu", *extra]


def test_clip_finetune_run_is_an_ordinary_run(ws):
    """Trains clip:1 (+ region guidance on the tower's own embedding) with subsampled frames from the
    cache in a fresh process that imports no extractor; then evaluate, predict, export, and extraction
    with the saved backbone."""
    args = _train_args(ws, "ft-clip", "face_crops,wavlm", "clip:1", "--finetune-opt", "frames_per_window=8",
                       "--finetune-opt", "grad_checkpointing=true", "--lambda-region", "0.2",
                       "--backbone-lr", "1e-2")
    code = (
        "import sys\nfrom pipeline import app\n"
        f"try:\n    app({args!r}, standalone_mode=False)\n"
        "finally:\n    print('EXTRACT_MODULES', sorted(m for m in sys.modules if m == 'extract' or m.startswith('extract.')))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300,
                         env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1"})
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    # the model loaders, never an extractor
    assert "EXTRACT_MODULES ['extract', 'extract.models']" in out.stdout, out.stdout[-500:]
    run = ws / "runs" / "ft-clip"
    cfg = TrainConfig.load(run / "config.yaml").to_dict()
    assert cfg["finetune"]["spec"] == "clip:1" and cfg["lr"] == 2e-4 and cfg["finetune"]["backbone_lr"] == 1e-2
    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert metrics[0]["train_loss_kl"] > 0  # the region term ran
    assert (run / "backbone" / "open_clip_model.safetensors").is_file()

    from pipeline import app

    runner = CliRunner()
    for cmd in (["evaluate", "ft-clip", "--split", "val"], ["predict", "ft-clip", "--split", "test"],
                ["export", "ft-clip", "--name", "ft_clip_gru", "--splits", "train,val"]):
        res = runner.invoke(app, [*cmd, "--runs-dir", str(ws / "runs"), "--device", "cpu"])
        assert res.exit_code == 0, (cmd, res.output)
    exported = _store(ws, "ft_clip_gru").read("video20")
    assert exported.values.shape[1] == 8 + 2 and exported.valid.any()

    # the trained tower extracts `clip` again: equal to the tower of the run on the cached crops
    summary = run_extraction(RunOptions(
        split="train", features=["faces", "clip"], data_root=ws / "data", cache_dir=ws / "cache2",
        models_dir=ws / "models", profile="tiny", device="cpu", progress=False, batch_size=16,
        model_refs={"clip": str(run / "backbone")}, only_videos=["video20"],
    ))
    assert summary.ok, summary.failed
    from train.results.restore import load_run

    loaded = load_run("ft-clip", ws / "runs", "cpu")
    crops = _store(ws, "face_crops").read("video20").values
    with torch.no_grad():
        emb = loaded.model.backbone(torch.from_numpy(np.asarray(crops))).numpy()
    again = _store(ws, "clip", "cache2").read("video20").values.astype(np.float32)
    assert np.abs(emb - again).max() <= 1e-3
    base = _store(ws, "clip").read("video20").values.astype(np.float32)
    assert np.abs(base - again).max() > 1e-3  # the tower did change


def test_wavlm_finetune_run_saves_a_loadable_backbone(ws):
    from pipeline import app

    res = CliRunner().invoke(app, _train_args(ws, "ft-wavlm", "wavlm_hidden,clip", "wavlm:1"))
    assert res.exit_code == 0, res.output
    run = ws / "runs" / "ft-wavlm"
    assert (run / "backbone" / "model.safetensors").is_file()
    from extract.wavlm_model import load_wavlm
    from train.results.restore import load_run

    bundle = load_wavlm(str(run / "backbone"))
    loaded = load_run("ft-wavlm", ws / "runs", "cpu")
    rows = torch.from_numpy(_store(ws, "wavlm_hidden").read("video20").values)[None]
    with torch.no_grad():
        full = bundle.model(input_values=torch.randn(1, 16000), output_hidden_states=True)  # loads and runs
        assert full.last_hidden_state.shape[-1] == 64
        mine = loaded.model.backbone(rows)
        layers = bundle.model.encoder.layers
        trained = loaded.model.backbone.layers[-1].state_dict()
        for key, value in layers[-1].state_dict().items():
            assert torch.equal(value, trained[key]), key
    assert mine.shape == rows.shape
    res = CliRunner().invoke(app, ["evaluate", "ft-wavlm", "--split", "val", "--runs-dir", str(ws / "runs"),
                                   "--device", "cpu"])
    assert res.exit_code == 0, res.output


# ---- bad input ----------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("features", "spec", "words"),
    [
        # deeper than the real model: an error on every profile (the tiny one fits K up to that: test_tiny_profile.py)
        ("face_crops", "clip:13", ["clip:13", "full CLIP visual tower has 12"]),
        ("face_crops", "clip:99", ["clip:99", "full CLIP visual tower has 12"]),
        ("wavlm_hidden", "wavlm:25", ["wavlm:25", "full WavLM has 24"]),
        ("wavlm", "wavlm:1", ["wavlm_hidden", "--features"]),
    ],
)
def test_bad_finetune_requests_are_one_line(ws, features, spec, words):
    from pipeline import app

    name = f"bad-{spec.replace(':', '-')}"
    res = CliRunner().invoke(app, _train_args(ws, name, features, spec))
    assert res.exit_code == 1, res.output
    line = " ".join(res.stdout.split())  # one line on stdout (logs go to stderr)
    assert line.startswith("train failed:") and all(w in line for w in words), res.output
    assert not (ws / "runs" / name).exists()  # a refused run leaves no folder for `runs` to list


def test_a_malformed_finetune_spec_is_a_usage_error(ws):
    from pipeline import app

    res = CliRunner().invoke(app, _train_args(ws, "bad-spec-two", "face_crops", "wavlm:two"))
    assert res.exit_code == 2, res.output
    text = " ".join(res.output.split())
    assert "--finetune" in text and "wavlm:two" in text and "whole number" in text, res.output


def test_crops_made_for_another_model_are_refused(ws):
    from pipeline import app

    cache = ws / "cache-other"
    shutil.copytree(ws / "cache" / "face_crops.zarr", cache / "face_crops.zarr")
    store = FeatureStore.open(store_path(cache, "face_crops"))
    store._root = __import__("zarr").open_group(str(store.path), mode="a")
    store.put_extra("input_spec", np.array([336]), {"model": "ViT-L-14-336", "image_size": 336})
    args = _train_args(ws, "bad-spec", "face_crops", "clip:1")
    args[args.index("--cache-dir") + 1] = str(cache)
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 1, res.output
    line = " ".join(res.stdout.split())  # one line on stdout (logs go to stderr)
    assert "ViT-L-14-336 at 336 px" in line and "affcache-tiny-clip at 224 px" in line, res.output


def test_wavlm_top_is_windowed_and_stitched_as_extraction(ws):
    """Over audio longer than a window, each row's output comes from the extraction window that owns it
    (top layers run on that window's rows), then is aligned onto label frames by overlap."""
    from cache.align import align_to_frames
    from cache.media import frame_times
    from extract.wavlm_model import n_frames, ownership, window_plan
    from train.config import DataConfig, TrainConfig
    from train.data.sources import open_features
    from train.fit.loop import open_split
    from train.fit.model import build_model
    from train.data.tensors import to_tensors

    summary = run_extraction(RunOptions(
        split="train", features=["wavlm_hidden"], data_root=ws / "data", cache_dir=ws / "cache-w1",
        models_dir=ws / "models", profile="tiny", device="cpu", progress=False, only_videos=["video20"],
        configs={"wavlm_hidden": {**HIDDEN, "window_s": 1.0, "hop_s": 0.5}},
    ))
    assert summary.ok
    data = DataConfig(features=["wavlm_hidden"], data_root=str(ws / "data"), cache_dir=str(ws / "cache-w1"),
                      window=40, stride=40)
    cfg = TrainConfig(model="gru", data=data, head={"hidden": 8, "gru_hidden": 8}, lambda_region=0.0,
                      finetune={"spec": "wavlm:1", "profile": "tiny", "models_dir": str(ws / "models")})
    sources = open_features(ws / "cache-w1", ["wavlm_hidden"])
    dataset = open_split(cfg, "train", sources)
    model, _ = build_model(cfg, sources)
    model.eval()
    ti = [t.name for t in dataset.tracks].index("video20")
    windows = dataset.track_windows[ti][1:3]  # two label windows in the middle of the track
    batch = dataset.collate(windows)
    tb = to_tensors(batch, torch.device("cpu"))
    assert len(tb.features["wavlm_hidden@windows"]) > 2  # several 1 s extraction windows per label window
    with torch.no_grad():
        emb = model._wavlm(tb.features).numpy()
        group = sources["wavlm_hidden"].store.read("video20")
        rows = torch.from_numpy(group.values)
        plans = window_plan(group.attrs["n_samples"], 16000, 8000)
        owner, local = ownership(plans, len(rows))
        outs = [model.backbone(rows[s0 // 320 : s0 // 320 + n_frames(s1 - s0)][None])[0] for s0, s1 in plans]
        stitched = torch.stack([outs[w][i] for w, i in zip(owner, local)]).numpy()
    targets = frame_times(int(dataset.n_frames[ti]), float(dataset.fps[ti]))
    expected, mask = align_to_frames(stitched, group.times, targets)
    for b, w in enumerate(windows):
        start, n = dataset.windows[w][1], int(batch.length[b])
        np.testing.assert_allclose(emb[b, :n], expected[start : start + n], atol=1e-5)
        assert batch.masks["wavlm_hidden"][b, :n].all() and mask[start : start + n].all()
    dataset.close()


def test_a_finetuned_run_resumes(ws):
    from pipeline import app

    args = _train_args(ws, "ft-resume", "wavlm_hidden", "wavlm:2", "--backbone-lr", "1e-4")
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    args[args.index("--epochs") + 1] = "2"
    res = CliRunner().invoke(app, [*args, "--resume"])
    assert res.exit_code == 0, res.output
    rows = [json.loads(line) for line in (ws / "runs" / "ft-resume" / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2]


def test_face_crops_subsampling_and_fill(ws):
    """frames_per_window F: every ceil(L / F)-th frame goes through the tower, the others repeat the sampled
    frame before them; --fill gives a faceless frame the nearest face of its window."""
    from train.config import DataConfig, TrainConfig
    from train.data.sources import open_features
    from train.fit.loop import open_split

    data = DataConfig(features=["face_crops"], data_root=str(ws / "data"), cache_dir=str(ws / "cache"),
                      window=32, stride=32, nearest_fill={"face_crops": 0.1})
    cfg = TrainConfig(model="gru", data=data, finetune={"spec": "clip:1", "frames_per_window": 8})
    sources = open_features(ws / "cache", ["face_crops"], data.nearest_fill)
    dataset = open_split(cfg, "train", sources, training=True)
    try:
        times, valid, attrs = dataset._rows(0)
        valid = valid.copy()
        valid[5:8] = False  # three frames without a face (0.1 s at 30 fps)
        dataset._index[0] = (times, valid, attrs)
        for _ in range(3):  # random phases
            batch = dataset.collate([dataset.track_windows[0][0]])
            index, own = batch.features["face_crops@index"][0], batch.features["face_crops@own"][0]
            assert len(batch.features["face_crops"]) == 8 and batch.features["face_crops"].dtype == np.uint8
            assert batch.masks["face_crops"][0].all()  # every frame has a (possibly filled) face
            assert not own[5:8].any() and own.sum() <= 8
            runs = np.flatnonzero(np.diff(index)) + 1  # each sampled crop serves one contiguous run of frames
            assert len(runs) == 7 and len(set(index.tolist())) == 8 and np.diff(runs).max() == 4
        dataset.training = False  # evaluation: every frame through the tower
        batch = dataset.collate([dataset.track_windows[0][0]])
        assert len(batch.features["face_crops"]) == 32
    finally:
        dataset.close()


def test_wavlm_hidden_deeper_than_the_model_is_refused_at_extraction(ws):
    from extract.runner import ExtractionError

    with pytest.raises(ExtractionError) as err:
        run_extraction(RunOptions(
            split="train", features=["wavlm_hidden"], data_root=ws / "data", cache_dir=ws / "cache-deep",
            models_dir=ws / "models", profile="tiny", device="cpu", progress=False, only_videos=["video20"],
            configs={"wavlm_hidden": {"top_layers": 5}},
        ))
    message = str(err.value)
    assert "\n" not in message and "top 5 layers" in message and "has 2 layers" in message, message


def test_a_crops_group_of_another_size_is_refused_and_verify_finds_it(ws):
    """A face_crops group whose crops are not the size the store's input_spec records (crafted): fine-tuning
    says so in one line, and `verify` reports and marks it (issue 24)."""
    from pipeline import app

    cache = ws / "cache-crafted"
    shutil.copytree(ws / "cache" / "face_crops.zarr", cache / "face_crops.zarr")
    store = FeatureStore.open(store_path(cache, "face_crops"), writable=True)
    unit = store.units()[0]
    group = store.read(unit)
    attrs = {k: v for k, v in store.unit_attrs(unit).items() if k not in ("complete", "rows", "chunks")}
    small = np.zeros((len(group.valid), 32, 32, 3), dtype=np.uint8)
    store.write(unit, small, np.asarray(group.times), np.asarray(group.valid), attrs, dtype="uint8")
    args = _train_args(ws, "crafted", "face_crops", "clip:1")
    args[args.index("--cache-dir") + 1] = str(cache)
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 1, res.output
    line = " ".join(res.stdout.split())
    from cache.crop_codec import codec_of

    expected = codec_of(store.meta.config).row_shape(224)  # (224, 224, 3) pixels, or fixed-width JPEG rows
    assert "Traceback" not in res.output and f"group '{unit}': rows of shape (32, 32, 3)" in line and str(expected) in line
    assert not (ws / "runs" / "crafted").exists()
    checked = CliRunner().invoke(app, ["verify", "face_crops", "--cache-dir", str(cache)])
    assert checked.exit_code == 1, checked.output
    assert unit in checked.output and "rows of shape (32, 32, 3)" in " ".join(checked.output.split())
    assert not FeatureStore.open(store_path(cache, "face_crops")).unit_attrs(unit)["complete"]  # marked for redoing
