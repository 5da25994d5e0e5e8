"""Recipes (configs/): every file loads, builds its head and loss; each method's paper numbers are pinned by
reading the files; mistakes end with one line naming the key (and the closest valid keys or the type);
explicit flags win over overrides, which win over files; the run folder keeps the resolved config and
provenance; speed settings never enter a store's fingerprint."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from recipes.extract import build_run_options
from recipes.loader import CONFIGS_DIR, ConfigError
from train.runs.profiles import load_profile
from recipes.reproduce import load_reproduce
from train.runs.recipe import build_train_config
from train.heads import build_head
from train.fit.losses import VALossConfig, va_loss

torch.set_num_threads(1)
TRAIN_FILES = sorted(
    p for p in CONFIGS_DIR.rglob("*.yaml")
    if p.parent.name != "profiles" and not p.name.startswith("extract") and p.name != "reproduce.yaml"
)
EXTRACT_FILES = sorted(CONFIGS_DIR.rglob("extract*.yaml"))
REPRODUCE_FILES = sorted(CONFIGS_DIR.rglob("reproduce.yaml"))


def _loss_config(cfg) -> VALossConfig:
    return VALossConfig(ccc_weights=cfg.loss_weights, regression=cfg.regression, regression_weight=cfg.regression_weight,
                        region_lambda=cfg.lambda_region, region_sigma=cfg.region_sigma)


def _forward_and_loss(cfg, models_dir=None) -> float:
    dims = {name: (3 if name == "audio_reliability" else 12) for name in cfg.data.features}
    head = dict(cfg.head)
    if head.get("window_encoder") == "wavlm_top":  # a real WavLM-Large top: built here as the tiny model's
        import extract.wavlm  # noqa: F401 - registers the wavlm model family

        head["window_encoder_options"] = {**head["window_encoder_options"], "top": 2, "profile": "tiny",
                                          "models_dir": str(models_dir)}
        dims = {n: (64 if n == "wavlm_hidden" else d) for n, d in dims.items()}  # the tiny WavLM's width
    if cfg.lambda_region > 0:
        head["region_prototypes"] = torch.randn(9, 8).tolist()
    model = build_head(cfg.model, dims, head)
    B, T = 2, 16
    feats = {n: torch.randn(B, T, d) for n, d in dims.items()}
    masks = {n: torch.ones(B, T, dtype=torch.bool) for n in dims}
    pad = torch.ones(B, T, dtype=torch.bool)
    out = model(feats, masks, pad)
    assert out.va.shape == (B, T, 2)
    loss, parts = va_loss(out, torch.rand(B, T, 2) * 2 - 1, pad, _loss_config(cfg))
    loss.backward()
    return float(loss.detach())


@pytest.mark.parametrize("path", TRAIN_FILES, ids=lambda p: str(p.relative_to(CONFIGS_DIR)))
def test_every_train_config_loads_and_builds_its_head_and_loss(path, tmp_path):
    cfg = build_train_config([path])
    assert math.isfinite(_forward_and_loss(cfg, tmp_path))
    tiny = build_train_config([path, load_profile("tiny").layer("train")])
    assert tiny.head["hidden"] == 64 and tiny.model == cfg.model


@pytest.mark.parametrize("path", EXTRACT_FILES, ids=lambda p: str(p.relative_to(CONFIGS_DIR)))
def test_every_extract_config_loads_and_builds_its_extractor_configs(path):
    from extract.base import build_config, get_extractor

    opts = build_run_options([path], [], {"split": "val"})
    assert opts.split == "val" and opts.features
    for name in opts.features:
        cls = get_extractor(name)
        assert isinstance(build_config(cls, opts.configs.get(name)), cls.Config)


@pytest.mark.parametrize("path", REPRODUCE_FILES, ids=lambda p: p.parent.name)
def test_every_reproduce_list_names_loadable_steps(path):
    name, spec = load_reproduce(str(path))
    assert name == path.parent.name
    from recipes.reproduce import step_recipe

    for profile in ("tiny", "full"):
        for step in spec.steps:
            build_train_config([step_recipe(step, profile), load_profile(profile).layer("train")],
                               [*step.overrides, *step.profiles.get(profile, [])])
        for file in spec.extract.recipes(profile):
            build_run_options([file])


def _load(rel: str):
    return build_train_config([CONFIGS_DIR / rel])


def test_ras_recipe_pins_the_papers_numbers():
    face = _load("ras/face.yaml")
    assert (face.model, face.data.window, face.data.stride) == ("transformer", 400, 150)
    assert (face.head["layers"], face.head["heads"], face.head["hidden"], face.head["regressor"]) == (5, 8, 256, "mlp")
    assert (face.lr, face.weight_decay, face.batch_size, face.seed) == (1e-4, 0.01, 8, 42)
    assert (face.plateau_patience, face.plateau_factor, face.early_stop) == (5, 0.1, 15)
    assert face.data.features == ["grada"] and face.data.nearest_fill == {"grada": math.inf}
    behaviour = _load("ras/behaviour.yaml")
    assert behaviour.model == "mamba"
    assert (behaviour.head["layers"], behaviour.head["hidden"], behaviour.head["d_state"], behaviour.head["d_conv"]) == (12, 256, 8, 5)
    assert (behaviour.data.features, behaviour.data.level, behaviour.data.window, behaviour.data.stride) == (
        ["qwen3vl:mm_last"], "segment", 16, 8)
    audio = _load("ras/audio.yaml")
    assert (audio.lr, audio.loss_weights, audio.regression, audio.regression_weight) == (2e-4, (0.7, 0.3), "mse", 0.1)
    assert (audio.model, audio.data.level, audio.data.window, audio.data.stride) == ("blockpool", "audio_window", 200, 100)
    # RAS code: configs/mm_cfg_va_s2s.yaml audio_min_open_sec 1, make_audio_windows.yaml min_coverage_ratio 0.8,
    # src/audio/data/abaw_va_dataset.py ceil(s2s_steps / 2)
    assert audio.data.window_filter == {"min_open_s": 1.0, "min_coverage": 0.8, "min_valid_blocks": 2}
    assert audio.head["blocks"] == 4
    for rel in ("ras/fusion-raav.yaml", "ras/fusion-dcmmoe.yaml"):
        fusion = _load(rel)
        assert (fusion.lr, fusion.loss_weights, fusion.regression, fusion.regression_weight) == (5e-5, (0.7, 0.3), "mse", 0.01)
        assert fusion.head["hidden"] == 256 and fusion.head["heads"] == 4
    raav = _load("ras/fusion-raav.yaml")
    assert (raav.head["layers"], raav.head["latents"]) == (1, 4)
    assert raav.head["priors"] == {"ras_face": 0.85, "ras_behaviour": 0.15}
    # RAS code (src/fusion/data/abaw_mm_dataset.py): one audio window, its 4 block tokens, one mask per window
    assert (raav.data.level, raav.data.features[2], raav.head["audio"]) == ("audio_window", "ras_audio_blocks", ["ras_audio_blocks"])
    assert (raav.head["audio_tokens"], raav.head["audio_fallback"]) == ("frames", "row")
    assert raav.data.window_filter == {"min_open_s": 1.0, "min_coverage": 0.8}  # mm_cfg_va_s2s.yaml
    frames = _load("ras/fusion-raav-frames.yaml")  # today's frame-window variant, kept as an option
    assert (frames.data.level, frames.data.window, frames.head["audio_tokens"], frames.head["reliability_rule"]) == (
        "frame", 400, "windows", "any")
    ext = build_run_options([CONFIGS_DIR / "ras/extract.yaml"])
    wavlm, rel, mouth, qwen = (ext.configs[n] for n in ("wavlm", "audio_reliability", "mouth", "qwen3vl"))
    assert (wavlm.window_s, wavlm.hop_s) == (4.0, 2.0)
    # RAS code: make_s2s_windows.yaml (4 / 2 / 1 s), make_audio_windows.yaml (0.15 / 0.20 s, 0.8), mm_cfg_va_s2s.yaml (1 s)
    assert (rel.window_s, rel.hop_s, rel.min_window_s) == (4.0, 2.0, 1.0)
    assert (rel.fill_closed_s, rel.drop_open_s, rel.min_open_s, rel.min_coverage) == (0.15, 0.20, 1.0, 0.8)
    assert (mouth.fill_closed_s, mouth.drop_open_s) == (0.15, 0.20)
    assert (qwen.segment_s, qwen.n_frames) == (4.0, 16)
    from extract.qwen3vl import RAS_PROMPT

    assert (qwen.input, qwen.prompt) == ("frames", RAS_PROMPT) and "grada" in ext.features
    _, spec = load_reproduce("ras")
    paper = {s.name: s.paper.P for s in spec.steps}
    assert paper == {"face": 0.619, "audio": 0.403, "behaviour": 0.539, "fusion-dcmmoe": 0.649, "fusion-raav": 0.658}


def test_kookmin_recipe_pins_the_papers_numbers():
    cfg = _load("kookmin/clip-ast.yaml")
    assert (cfg.model, cfg.data.features) == ("crossattn", ["clip", "ast"])
    assert (cfg.lambda_region, cfg.region_sigma) == (0.2, 0.45)
    assert (cfg.head["gru_hidden"], cfg.head["heads"], cfg.head["ffn_mult"], cfg.head["hidden"], cfg.head["region_scale"]) == (256, 4, 4, 256, 10.0)
    assert _load("kookmin/clip-ast-no-guidance.yaml").lambda_region == 0.0
    ast = build_run_options([CONFIGS_DIR / "kookmin/extract.yaml"]).configs["ast"]
    assert (ast.window_s, ast.anchor) == (10.0, "past")
    _, spec = load_reproduce("kookmin")
    assert {s.name: s.paper.P for s in spec.steps} == {"no-guidance": 0.4438, "clip-ast": None, "clip-ft-ast": 0.4897}


def test_kookmin_finetuned_recipe_pins_the_papers_setting():
    """Table 1's best row: CLIP fine-tuned with soft prompt guidance at λ 0.2, from the cached face crops."""
    cfg = _load("kookmin/clip-ft-ast.yaml")
    assert (cfg.model, cfg.data.features) == ("crossattn", ["face_crops", "ast"])
    assert (cfg.lambda_region, cfg.region_sigma) == (0.2, 0.45)
    assert cfg.finetune["spec"] == "clip:all" and cfg.finetune["backbone_lr"] == 5e-6 and cfg.lr == 2e-4
    extract = build_run_options([CONFIGS_DIR / "kookmin/extract-finetune.yaml"])
    assert {"face_crops", "clip", "ast"} <= set(extract.features)
    assert (extract.configs["ast"].window_s, extract.configs["ast"].anchor) == (10.0, "past")


def test_ras_wavlm_top4_recipe_pins_the_papers_setting():
    """RAS's audio branch as the paper trains it: the top 4 WavLM-Large layers fine-tuned from `wavlm_hidden`."""
    cfg = _load("ras/audio-wavlm-top4.yaml")
    assert (cfg.model, cfg.data.features, cfg.data.level) == ("blockpool", ["wavlm_hidden", "audio_reliability"], "audio_window")
    assert (cfg.data.window, cfg.data.stride, cfg.head["blocks"]) == (200, 100, 4)
    assert cfg.head["window_encoder"] == "wavlm_top" and cfg.head["window_encoder_options"] == {"top": 4, "backbone_lr": 5e-6, "checkpoint": "wavlm_ser"}
    assert cfg.lr == 2e-4 and cfg.loss_weights == (0.7, 0.3)
    extract = build_run_options([CONFIGS_DIR / "ras/extract-wavlm-top.yaml"])
    assert extract.configs["wavlm_hidden"].top_layers == 4 and extract.configs["wavlm_hidden"].window_s == 4.0
    assert extract.configs["wavlm_hidden"].checkpoint == "wavlm_ser"  # RAS's SER checkpoint (tests/test_wavlm_ser.py)


def test_head_default_recipes_hold_the_paper_defaults():
    t = _load("heads/transformer.yaml")
    assert (t.head["layers"], t.head["heads"], t.head["regressor"], t.data.window, t.data.stride) == (5, 16, "mlp", 400, 150)
    m = _load("heads/mamba.yaml")
    assert (m.head["layers"], m.head["hidden"], m.head["d_state"], m.head["d_conv"]) == (12, 256, 8, 5)
    c = _load("heads/crossattn.yaml")
    assert (c.lambda_region, c.region_sigma, c.head["gru_hidden"], c.head["heads"]) == (0.2, 0.45, 256, 4)
    assert _load("heads/raav.yaml").head["layers"] == 1


def test_every_train_config_field_has_a_recipe_key():
    """A field added to TrainConfig must be reachable from a recipe (TOP_LEVEL or a group)."""
    from train.runs.recipe import GROUPS, TOP_LEVEL
    from train.config import TrainConfig

    mapped = set(TOP_LEVEL) | {"data", "head"} | {f for keys in GROUPS.values() for f in keys.values()}
    assert {f.name for f in dataclasses.fields(TrainConfig)} == mapped


def test_mlp_regressor_is_fc_ln_gelu_dropout_fc():
    head = build_head("transformer", {"clip": 8}, {"hidden": 16, "heads": 2, "layers": 1, "regressor": "mlp"})
    kinds = [type(m).__name__ for m in head.va_head.mlp]
    assert kinds == ["Linear", "LayerNorm", "GELU", "Dropout", "Linear"]
    with pytest.raises(ValueError, match="regressor"):
        build_head("gru", {"clip": 8}, {"regressor": "deep"})


@pytest.mark.parametrize("override, expected", [
    ("head.layerz=4", "unknown key 'head.layerz' (head transformer); closest valid keys: head.layers"),
    ("optim.lrr=1e-3", "closest valid keys: optim.lr"),
    ("data.windw=3", "closest valid keys: data.window"),
    ("optim.lr=fast", "key 'optim.lr' (head transformer): expected float, got 'fast'"),
    ("head.layers=4.5", "key 'head.layers' (head transformer): expected int"),
    ("loss.weights=[1,2,3]", "key 'loss.weights' (head transformer): expected tuple[float, float], got [1, 2, 3]"),
    ("head.heads=7", "hidden (256) must be divisible by heads (7)"),
])
def test_a_bad_key_or_value_is_one_line_naming_it(override, expected):
    with pytest.raises(ConfigError) as err:
        build_train_config([CONFIGS_DIR / "ras/face.yaml"], [override])
    assert expected in str(err.value) and "\n" not in str(err.value)


def test_extract_config_errors_name_the_key():
    with pytest.raises(ConfigError, match=r"unknown key 'configs.wavlm.layrs' \(extract\); closest valid keys: configs.wavlm.layers"):
        build_run_options([], ["configs.wavlm.layrs=[1]"])
    with pytest.raises(ConfigError, match="key 'configs.ast.window_s' .*expected float"):
        build_run_options([], ["configs.ast.window_s=long"])
    with pytest.raises(ConfigError, match="unknown feature 'configs.wavlmm'; did you mean 'wavlm'\? features: "):
        build_run_options([], ["configs.wavlmm.layers=[1]"])


def test_overrides_beat_files_and_typed_flags_beat_overrides(monkeypatch, tmp_path):
    """`train --config ras/face.yaml head.layers=4 optim.lr=5e-5 --lr 3e-4`: layers 4 (override), lr 3e-4 (flag)."""
    import train.runs.recipe
    import train.fit.loop
    from pipeline import app

    seen = {}

    def fake_train(cfg, resume=False, console=None, **_):
        seen["cfg"] = cfg
        raise SystemExit(0)

    monkeypatch.setattr(train.fit.loop, "train", fake_train)
    monkeypatch.setattr(train.runs.recipe, "check_stores", lambda cfg: None)
    res = CliRunner().invoke(app, ["train", "--config", "configs/ras/face.yaml", "head.layers=4", "optim.lr=5e-5",
                                   "--lr", "3e-4", "--runs-dir", str(tmp_path)])
    assert res.exit_code == 0, res.output
    cfg = seen["cfg"]
    assert (cfg.head["layers"], cfg.lr, cfg.head["heads"], cfg.data.window, cfg.runs_dir) == (4, 3e-4, 8, 400, str(tmp_path))
    res = CliRunner().invoke(app, ["train", "--config", "configs/ras/face.yaml", "head.layerz=4"])
    assert res.exit_code == 1
    lines = [line for line in res.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "closest valid keys: head.layers" in lines[0]


def test_extract_cli_takes_config_and_overrides(monkeypatch):
    import extract.backends
    from pipeline import app

    seen = {}

    def fake_run(opts):
        seen["opts"] = opts
        raise SystemExit(0)

    monkeypatch.setattr(extract.backends, "run_extraction", fake_run)
    res = CliRunner().invoke(app, ["extract", "--config", "configs/ras/extract.yaml", "configs.wavlm.hop_s=1.0",
                                   "--split", "val", "--batch-size", "4"])
    assert res.exit_code == 0, res.output
    opts = seen["opts"]
    assert (opts.split, opts.batch_size, opts.configs["wavlm"].hop_s, opts.configs["wavlm"].window_s) == ("val", 4, 1.0, 4.0)
    assert "qwen3vl" in opts.features


def test_speed_settings_never_enter_a_fingerprint(monkeypatch):
    from extract.base import Extractor, available, get_extractor

    monkeypatch.setattr(Extractor, "weights_digest", lambda self: "")
    speed_names = {"batch_size", "num_workers", "workers", "device", "prefetch", "threads"}
    marked = []
    for name in available():
        cls = get_extractor(name)
        for f in dataclasses.fields(cls.Config):
            if f.name in speed_names:
                assert f.metadata.get("speed"), f"{name}.{f.name} changes speed only: mark it with metadata=SPEED"
                marked.append(name)
    assert {"ast", "wavlm", "qwen3vl"} <= set(marked)
    for name in ("ast", "wavlm", "qwen3vl"):
        cls = get_extractor(name)
        base = cls(cls.Config(), model_ref="some/model").feature_meta().fingerprint
        faster = cls(dataclasses.replace(cls.Config(), batch_size=64), model_ref="some/model").feature_meta().fingerprint
        other = dataclasses.replace(cls.Config(), hop_s=cls.Config().hop_s * 2)
        assert faster == base
        assert cls(other, model_ref="some/model").feature_meta().fingerprint != base


def test_run_folder_keeps_resolved_config_and_provenance(tmp_path):
    import json

    from train.fit.loop import train
    from train.data.synthetic import SynthConfig, default_tracks, make_synthetic

    tracks = default_tracks(n_train=2, n_val=1, n_test=0, frames=(80, 100), seed=3)
    make_synthetic(tmp_path / "data", tmp_path / "cache", SynthConfig(tracks=tracks))
    cfg = build_train_config([CONFIGS_DIR / "heads/transformer.yaml"], [
        "head.hidden=16", "head.heads=2", "head.layers=1", "optim.epochs=1", "data.window=64", "data.stride=32",
        "device=cpu", "eval.smooth_grid=[0,2]", f"data.data_root={tmp_path / 'data'}", f"data.cache_dir={tmp_path / 'cache'}",
        f"runs_dir={tmp_path / 'runs'}", "name=prov",
    ])
    result = train(cfg)
    again = build_train_config([result.run.path / "config.yaml"])
    assert again.to_dict() == cfg.to_dict() | {"head": again.head}
    assert again.head["layers"] == 1 and again.head["regressor"] == "mlp"
    prov = json.loads((result.run.path / "provenance.json").read_text())
    assert set(prov["versions"]) >= {"torch", "transformers", "open_clip", "zarr", "numpy"}
    assert all(prov["versions"][k] for k in ("torch", "numpy", "zarr"))
    assert set(prov["git"]) == {"commit", "dirty"}
    assert prov["git"]["commit"] is None or len(prov["git"]["commit"]) == 40


# ---- issue 24: recipes read nothing but recipe keys; names and overrides are checked like flags ------


def test_a_recipe_cannot_read_the_environment_or_use_other_resolvers(tmp_path, monkeypatch):
    monkeypatch.setenv("AFFCACHE_SECRET", "leaked")
    for value in ("${oc.env:AFFCACHE_SECRET}", "x${oc.decode:'1'}", "${oc.env:AFFCACHE_SECRET,d}"):
        with pytest.raises(ConfigError) as err:
            build_train_config([CONFIGS_DIR / "ras/face.yaml"], [f"name={value}"])
        assert "not the interpolation of a recipe key" in str(err.value) and "\n" not in str(err.value)
        assert "leaked" not in str(err.value)
    recipe = tmp_path / "r.yaml"
    recipe.write_text("name: 'w${data.window}'\n")
    cfg = build_train_config([CONFIGS_DIR / "ras/face.yaml", recipe], ["data.window=64"])
    assert cfg.name == "w64"  # the interpolation of a recipe key still works
    recipe.write_text("name: '${data.nowhere}'\n")
    with pytest.raises(ConfigError) as err:
        build_train_config([CONFIGS_DIR / "ras/face.yaml", recipe])
    assert "key 'name'" in str(err.value) and "nowhere" in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize("name", ["x/../../somewhere", "..", ".", "a\\b", "/abs"])
def test_a_run_name_is_one_folder_name(name, tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"name: {name!r}\n")
    with pytest.raises(ConfigError, match="run name .* is not a single folder name") as err:
        build_train_config([CONFIGS_DIR / "ras/face.yaml", recipe])
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("override, flag", [
    ("optim.epochs=0", ["--epochs", "0"]),
    ("data.nearest_fill.landmarks=-3", ["--fill", "landmarks=-3"]),
    ("optim.batch_size=0", ["--batch-size", "0"]),
    ("optim.lr=-1e-3", ["--lr", "-1e-3"]),
    ("loss.weights=[0,0]", ["--loss-weights", "0,0"]),
])
def test_an_override_is_refused_where_its_flag_is(override, flag, monkeypatch, tmp_path):
    import train.fit.loop
    from pipeline import app

    monkeypatch.setattr(train.fit.loop, "train", lambda *a, **k: pytest.fail("trained"))
    common = ["train", "--config", "configs/ras/face.yaml", "--runs-dir", str(tmp_path)]
    by_flag = CliRunner().invoke(app, [*common, *flag])
    by_override = CliRunner().invoke(app, [*common, override])
    assert by_flag.exit_code == 2, by_flag.output
    assert by_override.exit_code == 2, by_override.output
    assert override.split("=")[0].rsplit(".", 1)[-1] in by_override.output and "override" in by_override.output
    assert not list(tmp_path.iterdir())


def test_every_recipe_file_is_checked_for_resolvers_and_step_names(tmp_path):
    from recipes.loader import load_file

    bad = tmp_path / "env.yaml"
    bad.write_text("tiny: {backbone_depth: {clip: '${oc.env:HOME}'}}\n")
    with pytest.raises(ConfigError, match=r"key 'tiny.backbone_depth.clip' \(.*env.yaml\): .* not the interpolation of a recipe key"):
        load_file(bad)
    steps = tmp_path / "reproduce.yaml"
    steps.write_text(f"method: m\nextract: {{config: ras/extract.yaml}}\nsteps:\n  - {{name: ../up, train: {CONFIGS_DIR / 'ras/face.yaml'}}}\nsubmit: ../up\n")
    with pytest.raises(ConfigError, match=r"step name '\.\./up' is not a single folder name"):
        load_reproduce(str(steps))


@pytest.mark.parametrize("line, words", [
    ("optim: {epochs: 0}", "optim.epochs (--epochs) must be >= 1, got 0"),
    ("data: {nearest_fill: {landmarks: -3}}", "data.nearest_fill.landmarks (--fill) must be >= 0, got -3.0"),
    ("optim: {lr: 0.0}", "optim.lr (--lr) must be > 0, got 0.0"),
    ("loss: {weights: [0, 0]}", "loss.weights (--loss-weights) must not both be 0"),
])
def test_a_recipe_file_value_gets_the_check_of_its_flag(line, words, tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(line + "\n")
    with pytest.raises(ConfigError) as err:
        build_train_config([CONFIGS_DIR / "ras/face.yaml", recipe])
    assert words in str(err.value) and "\n" not in str(err.value)


def test_dotted_flattens_a_recipe_tree_in_order_with_whole_leaves():
    from recipes.loader import dotted

    tree = {"optim": {"lr": 0.001, "epochs": 3}, "data": {"nearest_fill": {"clip": 0.5}, "features": ["clip"], "views": {}}}
    assert dotted(tree) == {"optim.lr": 0.001, "optim.epochs": 3, "data.nearest_fill.clip": 0.5,
                            "data.features": ["clip"], "data.views": {}}
    assert list(dotted(tree)) == ["optim.lr", "optim.epochs", "data.nearest_fill.clip", "data.features", "data.views"]
    kept = dotted(tree, whole=("data.nearest_fill",))
    assert kept["data.nearest_fill"] == {"clip": 0.5} and "data.nearest_fill.clip" not in kept
    assert dotted({"a": 1}, prefix="head.") == {"head.a": 1}


def test_same_recipe_ignores_where_and_device_and_compares_full_heads():
    """One comparator: same_recipe is "no changed_keys" apart from name, runs dir and device."""
    from train.config import TrainConfig
    from train.runs.recipe import changed_keys, same_recipe, with_full_head

    base = {"model": "gru", "data": {"features": ["clip"]}, "head": {"hidden": 32}}
    a = TrainConfig.from_dict(base)
    moved = TrainConfig.from_dict({**base, "name": "other", "runs_dir": "/elsewhere", "device": "cpu"})
    assert same_recipe(a, moved) and same_recipe(a, with_full_head(a))  # a head given in part = its defaults filled
    faster = TrainConfig.from_dict({**base, "lr": 0.01})
    assert not same_recipe(a, faster)
    assert changed_keys(a, faster) == [("optim.lr", 1e-4, 0.01)]
    wider = TrainConfig.from_dict({**base, "head": {"hidden": 64}})
    assert [k for k, _, _ in changed_keys(a, wider)] == ["head.hidden"] and not same_recipe(a, wider)
