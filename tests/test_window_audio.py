"""RAS's window-level audio model on cached 50 Hz states: block cutting and attentive statistics pooling
against a direct formula, the training-window filter against a hand-made mouth trace, and the run end to
end (CLI train, per-window export as a window store, RAAV reading one audio token per window)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from cache.media import frame_times
from cache.store import FeatureMeta, FeatureStore, store_path
from cache.audio_windows import AudioWindowRule
from extract.reliability import reliability_rows
from train.data.build import build_dataset
from train.data.sources import open_features
from train.heads import build_head
from train.heads.blockpool import AttentiveStatsPool, block_index
from train.data.synthetic import SynthConfig, SynthTrack, default_tracks, make_synthetic
from train.data.window_audio import best_match, central_spans, keep_windows, ras_window_starts

torch.set_num_threads(1)


def test_block_index_cuts_each_window_on_its_real_length():
    idx = block_index(torch.tensor([10, 4]), 10, 4)
    assert idx[0].tolist() == [0, 0, 0, 1, 1, 2, 2, 2, 3, 3]
    assert idx[1, :4].tolist() == [0, 1, 2, 3]


def test_attentive_statistics_pooling_against_the_formula():
    torch.manual_seed(0)
    pool = AttentiveStatsPool(3, attn_dim=5).eval()
    x = torch.randn(1, 10, 3)
    valid = torch.ones(1, 10, dtype=torch.bool)
    valid[0, 4] = False  # a masked position takes no weight
    block = block_index(torch.tensor([10]), 10, 2)  # blocks [0..4], [5..9]
    with torch.no_grad():
        got, has = pool(x, valid, block, 2)
    assert has.all()
    with torch.no_grad():
        scores = pool.score(x)[0, :, 0].numpy().astype(np.float64)
    xs = x[0].numpy().astype(np.float64)
    for b, rows in enumerate(([0, 1, 2, 3], [5, 6, 7, 8, 9])):
        w = np.exp(scores[rows] - scores[rows].max())
        w /= w.sum()
        mean = (w[:, None] * xs[rows]).sum(0)
        std = np.sqrt((w[:, None] * (xs[rows] - mean) ** 2).sum(0) + 1e-6)
        np.testing.assert_allclose(got[0, b, :3].numpy(), mean, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(got[0, b, 3:].numpy(), std, rtol=1e-5, atol=1e-6)


def test_a_block_with_no_valid_position_is_finite_and_flagged():
    pool = AttentiveStatsPool(3)
    valid = torch.tensor([[True, True, False, False]])
    out, has = pool(torch.randn(1, 4, 3), valid, block_index(torch.tensor([4]), 4, 2), 2)
    assert has.tolist() == [[True, False]] and torch.isfinite(out).all()


# a hand-made mouth trace at 10 fps over 8 s: open [0.5, 1.6), [2.0, 2.4), [5.0, 5.8)
FPS, SECONDS = 10.0, 8.0
WINDOWS = np.array([[0.0, 4.0], [2.0, 6.0], [4.0, 8.0]])


def _mouth_trace() -> tuple[np.ndarray, np.ndarray]:
    t = frame_times(int(FPS * SECONDS), FPS)
    start = t[:, 0] + 1e-9
    flag = ((start >= 0.5) & (start < 1.6)) | ((start >= 2.0) & (start < 2.4)) | ((start >= 5.0) & (start < 5.8))
    return flag, t


def _label_valid() -> np.ndarray:
    valid = np.ones(int(FPS * SECONDS), bool)
    valid[:30] = False  # no label in [0, 3): window [0, 4) has 1 labelled block of 4 (< 2)
    return valid


def test_window_filter_against_a_hand_made_mouth_trace():
    from cache.audio_windows import audio_windows

    flag, t = _mouth_trace()
    n = len(t)
    values, windows, valid = reliability_rows(flag, np.ones(n, bool), n, FPS, AudioWindowRule())
    np.testing.assert_allclose(windows, WINDOWS)
    matched = best_match(values[:, :2], windows, valid, WINDOWS)
    # open time: [0,4): 1.1 + 0.4 = 1.5 s; [2,6): 0.4 + 0.8 = 1.2 s; [4,8): 0.8 s (< 1.0 s)
    np.testing.assert_allclose(matched[:, 0], [1.5, 1.2, 0.8], atol=1e-6)
    np.testing.assert_allclose(matched[:, 1], 1.0)
    labels = np.zeros((n, 2))
    blocks = audio_windows(n, FPS, labels=labels, label_valid=_label_valid()).block_valid.sum(axis=1)
    assert blocks.tolist() == [1, 3, 4]
    assert keep_windows(matched[:, 0], matched[:, 1], blocks, AudioWindowRule()).tolist() == [False, True, False]
    assert keep_windows(None, None, blocks, AudioWindowRule()).tolist() == [False, True, True]  # no mouth data


def test_audio_window_grid_is_ras_grid_on_rows():
    assert ras_window_starts(400, 200, 100) == [0, 100, 200]  # the last window ends at the end
    assert ras_window_starts(450, 200, 100) == [0, 100, 200, 300]  # the last one partial [300, 450)
    assert ras_window_starts(150, 200, 100) == [0]


@pytest.fixture(scope="module")
def audio_cache(tmp_path_factory):
    """Synthetic tracks with a 50 Hz `wavlm` store, and `audio_reliability` windows from mouth traces."""
    base = tmp_path_factory.mktemp("window_audio")
    tracks = default_tracks(n_train=4, n_val=2, n_test=1, frames=(500, 800), seed=5)
    tracks.append(SynthTrack("hand", "train", FPS, int(FPS * SECONDS)))
    make_synthetic(base / "data", base / "cache", SynthConfig(tracks=tracks, noise=0.2, invalid_share=0.0, audio_dim=16))
    labels = base / "data" / "annotations" / "VA_Estimation_Challenge" / "Train_Set" / "hand.txt"
    lines = labels.read_text().splitlines()
    lines[1:31] = ["-5,-5"] * 30
    labels.write_text("\n".join(lines) + "\n")
    rel = FeatureStore.create_or_open(
        store_path(base / "cache", "audio_reliability"),
        FeatureMeta(name="audio_reliability", kind="window", unit="track", model_ref="synthetic"),
    )
    rng = np.random.default_rng(0)
    for track in tracks:
        t = frame_times(track.n_frames, track.fps)
        flag = _mouth_trace()[0] if track.name == "hand" else rng.random(len(t)) < 0.6
        values, windows, valid = reliability_rows(flag, np.ones(len(t), bool), track.n_frames, track.fps, AudioWindowRule())
        rel.write(track.name, values, windows, valid, attrs={"columns": ["open_s", "coverage", "reliable"]})
    return base, tracks


def test_dataset_filters_training_windows_only(audio_cache):
    from cache.manifest import load_manifest

    base, _ = audio_cache
    sources = open_features(base / "cache", ["wavlm", "audio_reliability"])
    tracks = load_manifest(base / "data", splits=("train",)).split("train")
    ds = build_dataset(tracks, sources, 200, 100, level="audio_window")
    try:
        ti = [t.name for t in ds.tracks].index("hand")
        np.testing.assert_allclose(ds.window_spans(ti), WINDOWS)
        assert ds.keep[ds.track_windows[ti]].tolist() == [False, True, False]
        order = ds.epoch_order(np.random.default_rng(0))
        assert set(order) == set(np.flatnonzero(ds.keep)) and len(order) < len(ds)
        assert ds.sequential_order() == list(range(len(ds)))  # evaluation: every window
        batch = ds.collate(ds.track_windows[ti][:1])
        assert batch.features["wavlm"].shape == (1, 200, 16)
    finally:
        ds.close()


def test_window_audio_run_export_and_raav_window_tokens(audio_cache):
    from pipeline import app
    from train.results.window_export import export_windows

    base, tracks = audio_cache
    common = ["--data-root", str(base / "data"), "--cache-dir", str(base / "cache"), "--runs-dir", str(base / "runs"),
              "--device", "cpu"]
    res = CliRunner().invoke(app, [
        "train", "--model", "blockpool", "--features", "wavlm,audio_reliability", "--level", "audio_window",
        "--window", "200", "--stride", "100", "--name", "audio", "--epochs", "4", "--lr", "3e-3", "--batch-size", "4",
        "--head", "hidden=32", "--head", "attn_dim=16", *common,
    ])
    assert res.exit_code == 0, res.output
    result = json.loads((base / "runs" / "audio" / "eval_val.json").read_text())
    assert result["raw"]["ccc_a"] > 0.3, result  # the synthetic audio carries arousal

    written = export_windows("audio", "audio_win", runs_dir=base / "runs", device="cpu")
    assert sum(written.values()) == len(tracks)
    store = FeatureStore.open(store_path(base / "cache", "audio_win"))
    assert store.meta.kind == "window"
    group = store.read("hand")
    assert group.values.shape == (3, 32 + 2)
    np.testing.assert_allclose(group.attrs["window_times"], WINDOWS)
    np.testing.assert_allclose(group.times, central_spans(WINDOWS))  # [0,3), [3,5), [5,8)
    np.testing.assert_allclose(group.times, [[0, 3], [3, 5], [5, 8]])
    # RAS's fusion sample: each window's 4 block tokens [block embedding, block VA], rows over the whole window
    blocks = FeatureStore.open(store_path(base / "cache", "audio_win_blocks")).read("hand")
    assert blocks.values.shape == (3, 4, 32 + 2) and blocks.attrs["row_names"] == ["block0", "block1", "block2", "block3"]
    np.testing.assert_allclose(blocks.times, WINDOWS)
    # 200 rows in 4 blocks of 50: the window's row mean is the mean of its block tokens
    np.testing.assert_allclose(blocks.values.astype(np.float32).mean(1), group.values.astype(np.float32), atol=2e-2)

    # one audio token per window in RAAV
    from cache.manifest import load_manifest

    sources = open_features(base / "cache", ["clip", "audio_win"])
    val = load_manifest(base / "data", splits=("val",)).split("val")
    ds = build_dataset(val, sources, 400, 150)
    try:
        batch = ds.collate(ds.track_windows[0][:1])
        head = build_head("raav", ds.feature_dims, {"hidden": 8, "heads": 2, "layers": 1, "audio_tokens": "windows"})
        feats = {k: torch.from_numpy(v).float() for k, v in batch.features.items()}
        masks = {k: torch.from_numpy(v) for k, v in batch.masks.items()}
        pad = torch.from_numpy(batch.pad)
        keys = head.audio_keys(feats, torch.ones_like(pad))
        n = int(batch.length[0])
        seconds = n / float(ds.fps[0])
        expected = len([s for s in ds.sources["audio_win"].read(ds.tracks[0].name).times if s[0] < seconds])
        assert int(keys[0, :n].sum()) == expected  # one key per window over these frames
        assert torch.isfinite(head(feats, masks, pad).va).all()
    finally:
        ds.close()

    # RAS's fusion sample: one RAS audio window of label frames, its 4 block tokens, one reliability mask
    from train.data.window_fusion import AudioWindowFusionDataset

    sources = open_features(base / "cache", ["clip", "audio_win_blocks", "audio_reliability"])
    assert sources["audio_win_blocks"].tokens == 4 and sources["audio_win_blocks"].dim == 32 + 2
    train = load_manifest(base / "data", splits=("train",)).split("train")
    ds = build_dataset(train, sources, 200, 100, level="audio_window")
    try:
        assert isinstance(ds, AudioWindowFusionDataset)
        ti = [t.name for t in ds.tracks].index("hand")
        ids = ds.track_windows[ti]
        assert [(ds.windows[w][1], ds.window_length(ti, ds.windows[w][1])) for w in ids] == [(0, 40), (20, 40), (40, 40)]
        batch = ds.collate(ids)
        assert batch.features["audio_win_blocks"].shape == (3, 40, 34) and batch.features["clip"].shape[:2] == (3, 40)
        assert batch.masks["audio_win_blocks"].sum(1).tolist() == [4, 4, 4]
        np.testing.assert_array_equal(batch.features["audio_win_blocks"][:, :4], blocks.values.astype(np.float32))
        # the tokens are standardized once, on the device, like every input (never in NumPy before)
        from train.data.standardize import fit_standardizer
        from train.data.tensors import to_tensors

        ds.standardizer = fit_standardizer({"audio_win_blocks": sources["audio_win_blocks"]}, train)
        stats = ds.standardizer.stats["audio_win_blocks"]
        tokens = to_tensors(ds.collate(ids), torch.device("cpu")).features["audio_win_blocks"]
        np.testing.assert_allclose(tokens[:, :4].numpy(), (blocks.values.astype(np.float64) - stats.mean) / stats.std,
                                   rtol=1e-4, atol=1e-4)
        assert (tokens[:, 4:] == 0).all()
        ds.standardizer = None
        # reliable = open >= 1.0 s (1.5, 1.2, 0.8 s open) and coverage >= 0.8: one flag per window, every frame
        assert batch.features["audio_reliability"][:, :, -1].tolist() == [[1.0] * 40, [1.0] * 40, [0.0] * 40]
        assert batch.labels.shape == (3, 40, 2) and not batch.label_mask[0, :30].any() and batch.label_mask[0, 30:].all()
        head = build_head("raav", ds.feature_dims, {"hidden": 8, "heads": 2, "layers": 1, "audio_tokens": "frames",
                                                    "audio_fallback": "row", "audio": ["audio_win_blocks"]}).eval()
        feats = {k: torch.from_numpy(v).float() for k, v in batch.features.items()}
        masks = {k: torch.from_numpy(v) for k, v in batch.masks.items()}
        out = head(feats, masks, torch.from_numpy(batch.pad))
        assert out.extras["audio_reliable"].sum(1).tolist() == [4, 4, 0]  # the 4 tokens are the keys
        assert torch.equal(out.extras["z0"][2], out.extras["z_vis"][2])  # an unreliable window keeps the visual
        assert not torch.equal(out.extras["z0"][0, 10:], out.extras["z_vis"][0, 10:])  # every frame hears the audio
    finally:
        ds.close()
    res = CliRunner().invoke(app, [
        "train", "--model", "raav", "--features", "clip,audio_win_blocks,audio_reliability", "--level", "audio_window",
        "--name", "raav_ras", "--epochs", "1", "--head", "hidden=16", "--head", "heads=2", "--head", "layers=1",
        "--head", "audio_tokens=frames", "--head", "audio_fallback=row", *common,
    ])
    assert res.exit_code == 0, res.output
    result = json.loads((base / "runs" / "raav_ras" / "eval_val.json").read_text())
    assert np.isfinite(result["raw"]["ccc_v"])
    res = CliRunner().invoke(app, [
        "train", "--model", "raav", "--features", "clip,audio_win,audio_reliability", "--name", "raav_win",
        "--epochs", "1", "--window", "64", "--stride", "32", "--head", "hidden=8", "--head", "heads=2",
        "--head", "layers=1", "--head", "audio_tokens=windows", "--head", "reliability_rule=any", *common,
    ])
    assert res.exit_code == 0, res.output


def test_a_trainable_window_encoder_plugs_in_by_name():
    """How a trainable backbone top (issue 13: WavLM's top layers over `wavlm_hidden`) joins: register a
    factory, name it in the head config; its parameters train with the head."""
    from torch import nn

    from train.heads.blockpool import WINDOW_ENCODERS, register_window_encoder

    class Top(nn.Module):
        def __init__(self, in_dim: int, width: int = 6) -> None:
            super().__init__()
            self.layer, self.out_dim = nn.Linear(in_dim, width), width

        def forward(self, x, valid):
            return self.layer(x)

    register_window_encoder("toy_top")(Top)
    try:
        head = build_head("blockpool", {"wavlm_hidden": 5}, {"hidden": 8, "window_encoder": "toy_top",
                                                              "window_encoder_options": {"width": 6}})
        x = torch.randn(2, 40, 5, requires_grad=False)
        pad = torch.ones(2, 40, dtype=torch.bool)
        out = head({"wavlm_hidden": x}, {"wavlm_hidden": pad}, pad)
        assert out.va.shape == (2, 40, 2) and out.extras["block_hidden"].shape == (2, 4, 8)
        out.va.sum().backward()
        assert head.encoder.layer.weight.grad is not None
        # rows of one block share the block's prediction (eval: no dropout)
        va = head.eval()({"wavlm_hidden": x}, {"wavlm_hidden": pad}, pad).va
        assert torch.allclose(va[0, :10], va[0, :1].expand(10, 2)) and not torch.allclose(va[0, 9], va[0, 10])
    finally:
        WINDOW_ENCODERS.pop("toy_top", None)
    with pytest.raises(ValueError, match="unknown window_encoder"):
        build_head("blockpool", {"wavlm": 5}, {"window_encoder": "nope"})


def test_wavlm_top_window_encoder_trains_the_top_layers_at_the_backbone_rate(tmp_path):
    """RAS fine-tunes WavLM's top layers per 4 s window: `window_encoder=wavlm_top` runs issue 13's WavlmTop
    over a window of `wavlm_hidden` rows; only the top layers (and the final norm) train, at backbone_lr,
    and the store's input is not standardized."""
    from extract.wavlm_model import build_tiny_wavlm
    from train.fit.finetune import backbone_feature, parameter_groups
    from train.heads.blockpool import WavlmTopEncoder

    ref = str(build_tiny_wavlm(tmp_path / "wavlm"))
    head = build_head("blockpool", {"wavlm_hidden": 64, "audio_reliability": 3}, {
        "hidden": 8, "attn_dim": 4, "window_encoder": "wavlm_top",
        "window_encoder_options": {"ref": ref, "top": 1, "stored": 2, "backbone_lr": 1e-5},
    })
    assert isinstance(head.encoder, WavlmTopEncoder) and backbone_feature(head) == "wavlm_hidden"
    groups = parameter_groups(head, type("Cfg", (), {"lr": 1e-3})())
    assert [(g["name"], g["lr"]) for g in groups] == [("head", 1e-3), ("backbone", 1e-5)]
    frozen, trained = head.encoder.top.layers
    assert not any(p.requires_grad for p in frozen.parameters()) and all(p.requires_grad for p in trained.parameters())
    x = torch.randn(2, 50, 64)
    pad = torch.ones(2, 50, dtype=torch.bool)
    out = head({"wavlm_hidden": x}, {"wavlm_hidden": pad}, pad)
    out.va.square().mean().backward()
    assert next(trained.parameters()).grad is not None and next(frozen.parameters()).grad is None
    assert out.va.shape == (2, 50, 2)


def test_window_audio_run_with_a_trainable_wavlm_top(tmp_path):
    import json as _json

    from extract.wavlm_model import build_tiny_wavlm
    from pipeline import app

    ref = str(build_tiny_wavlm(tmp_path / "wavlm"))
    tracks = default_tracks(n_train=2, n_val=1, n_test=0, frames=(300, 400), seed=6)
    make_synthetic(tmp_path / "data", tmp_path / "cache", SynthConfig(tracks=tracks, audio="wavlm_hidden", audio_dim=64))
    options = _json.dumps({"ref": ref, "top": 1, "stored": 2})
    res = CliRunner().invoke(app, [
        "train", "--model", "blockpool", "--features", "wavlm_hidden", "--level", "audio_window", "--window", "200",
        "--stride", "100", "--name", "top", "--epochs", "1", "--head", "hidden=8", "--head", "attn_dim=4",
        "--head", "window_encoder=wavlm_top", "--head", f"window_encoder_options={options}",
        "--data-root", str(tmp_path / "data"), "--cache-dir", str(tmp_path / "cache"), "--runs-dir", str(tmp_path / "runs"),
        "--device", "cpu",
    ])
    assert res.exit_code == 0, res.output
    run = tmp_path / "runs" / "top"
    assert (run / "checkpoints" / "best.pt").is_file()
    std = run / "standardization.json"
    assert not std.is_file() or "wavlm_hidden" not in _json.loads(std.read_text())  # a backbone's input: raw


def test_blocks_cover_the_same_second_in_a_partial_window_as_the_block_targets():
    # window 8 rows, 4 blocks of 2 rows; the second row is a partial window of 5 real rows
    idx = block_index(torch.tensor([8, 5]), 8, 4, window_rows=8)
    assert idx[0].tolist() == [0, 0, 1, 1, 2, 2, 3, 3]
    assert idx[1, :5].tolist() == [0, 0, 1, 1, 2]  # RAS pads to the full window: block 3 lies past the end
    assert block_index(torch.tensor([5]), 5, 4)[0].tolist() == [0, 0, 1, 2, 3]  # window_rows 0: its own length
    # a 6.5 s track: RAS's last window [4, 6.5) holds 2.5 s; at 50 rows per second its 125 rows fall in blocks
    # 0, 1, 2 by the second they cover, the blocks cache/audio_windows gives a label target (block 3: none)
    from cache.audio_windows import audio_windows

    fps = 10.0
    wins = audio_windows(65, fps, labels=np.zeros((65, 2)), label_valid=np.ones(65, bool))
    np.testing.assert_allclose(wins.times[-1], [4.0, 6.5])
    assert wins.block_valid[-1].tolist() == [True, True, True, False]
    rows = 125
    block = block_index(torch.tensor([rows]), rows, 4, window_rows=200)[0].numpy()
    np.testing.assert_array_equal(block, np.floor(np.arange(rows) / 50.0).astype(int))  # row r covers second r/50
    assert sorted(set(block.tolist())) == np.flatnonzero(wins.block_valid[-1]).tolist()


def test_blockpool_flags_blocks_past_a_partial_windows_end_and_fills_the_runs_window():
    head = build_head("blockpool", {"wavlm": 3}, {"hidden": 4, "audio": ["wavlm"], "window_rows": 8})
    pad = torch.tensor([[True] * 8, [True] * 5 + [False] * 3])
    out = head({"wavlm": torch.randn(2, 8, 3)}, {"wavlm": pad.clone()}, pad)
    assert out.extras["block_valid"].tolist() == [[True] * 4, [True, True, True, False]]
    own = build_head("blockpool", {"wavlm": 3}, {"hidden": 4, "audio": ["wavlm"], "window_rows": 0})
    assert own({"wavlm": torch.randn(2, 8, 3)}, {"wavlm": pad.clone()}, pad).extras["block_valid"].all()
    from train.config import DataConfig, TrainConfig
    from train.fit.model import head_options, keep_saved_block_cut

    data = DataConfig(features=["wavlm"], level="audio_window", window=200, stride=100)
    assert head_options(TrainConfig(model="blockpool", data=data), {})[0]["window_rows"] == 200
    assert head_options(TrainConfig(model="blockpool", data=data, head={"window_rows": 0}), {})[0]["window_rows"] == 0
    assert "window_rows" not in head_options(TrainConfig(model="gru", data=data), {})[0]
    # a run saved before the option keeps its own-length cut when reloaded; a new run's saved None is the window
    old, new = TrainConfig(model="blockpool", data=data), TrainConfig(model="blockpool", data=data, head={"window_rows": None})
    keep_saved_block_cut(old)
    keep_saved_block_cut(new)
    assert head_options(old, {})[0]["window_rows"] == 0 and head_options(new, {})[0]["window_rows"] == 200


def test_wavlm_top_masks_padding_so_a_partial_window_does_not_depend_on_its_batch(tmp_path):
    from extract.wavlm_model import build_tiny_wavlm
    from train.heads.blockpool import WavlmTopEncoder

    enc = WavlmTopEncoder(64, ref=str(build_tiny_wavlm(tmp_path / "wavlm")), top=1, stored=2).eval()
    torch.manual_seed(0)
    x = torch.randn(2, 8, 64)
    valid = torch.tensor([[True] * 8, [True] * 5 + [False] * 3])
    x[1, 5:] = 0  # padding rows, as the batch carries them
    with torch.no_grad():
        batched = enc(x, valid)
        alone = enc(x[1:, :5], valid[1:, :5])
        unmasked = enc.top(x)
    torch.testing.assert_close(batched[1, :5], alone[0], rtol=1e-4, atol=1e-5)
    assert not torch.allclose(unmasked[1, :5], alone[0], rtol=1e-4, atol=1e-5)  # without the mask they differ
