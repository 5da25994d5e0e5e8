"""Each RAS recipe value that follows RAS's public code is pinned here to its value and to the file of RAS's
repository (SMIL-SPCRAS/CVPRW-26) that the recipe's comment cites for it. A value changed in the recipe, or a
comment that no longer names its source, fails."""

from __future__ import annotations

import re

import pytest

from recipes.loader import CONFIGS_DIR
from train.runs.recipe import build_train_config

FACE = "src_visual_dynamic_model/config_best.toml"
FACE_MODEL = "src_visual_dynamic_model/model.py"
FACE_LOSS = "src_visual_dynamic_model/losses.py"
FACE_TRAIN = "src_visual_dynamic_model/train.py"
BEH = "src_behavior_model/configs/text_va.toml"
BEH_MODEL = "src_behavior_model/src/models/transformer_model.py"
BEH_TRAIN = "src_behavior_model/src/trainers/transformer_trainer.py"
BEH_LOSS = "src_behavior_model/src/core/losses_metrics.py"
SER = "src_audio_and_fusion/src/audio/models/wavlm_s2s_model.py"
AUDIO_DATA = "src_audio_and_fusion/src/audio/data/abaw_va_dataset.py"

# (recipe, key as written in the file, its TrainConfig place, value, the RAS file the comment cites)
PINS = [
    ("ras/face.yaml", "window", ("data", "window"), 400, FACE),
    ("ras/face.yaml", "stride", ("data", "stride"), 150, FACE),
    ("ras/face.yaml", "hidden", ("head", "hidden"), 256, FACE),
    ("ras/face.yaml", "layers", ("head", "layers"), 5, FACE),
    ("ras/face.yaml", "heads", ("head", "heads"), 8, FACE),
    ("ras/face.yaml", "block", ("head", "block"), "ras", FACE_MODEL),
    ("ras/face.yaml", "ffn_mult", ("head", "ffn_mult"), 1, FACE_MODEL),
    ("ras/face.yaml", "dropout", ("head", "dropout"), 0.1, FACE),
    ("ras/face.yaml", "regressor", ("head", "regressor"), "mlp", FACE),
    ("ras/face.yaml", "lr", ("lr",), 1e-4, FACE),
    ("ras/face.yaml", "weight_decay", ("weight_decay",), 0.01, FACE),
    ("ras/face.yaml", "epochs", ("epochs",), 100, FACE),
    ("ras/face.yaml", "scheduler", ("scheduler",), "plateau", FACE_TRAIN),
    ("ras/face.yaml", "plateau_patience", ("plateau_patience",), 5, FACE),
    ("ras/face.yaml", "plateau_factor", ("plateau_factor",), 0.1, FACE),
    ("ras/face.yaml", "early_stop", ("early_stop",), 15, FACE),
    ("ras/face.yaml", "grad_clip", ("grad_clip",), 0.0, FACE_TRAIN),
    ("ras/face.yaml", "ccc_over", ("ccc_over",), "window", FACE_LOSS),
    ("ras/face.yaml", "ccc_min_frames", ("ccc_min_frames",), 1, FACE_LOSS),
    ("ras/face.yaml", "require_input", ("require_input",), ["grada"], FACE_TRAIN),
    ("ras/behaviour.yaml", "window", ("data", "window"), 16, BEH),
    ("ras/behaviour.yaml", "stride", ("data", "stride"), 8, BEH),
    ("ras/behaviour.yaml", "hidden", ("head", "hidden"), 256, BEH),
    ("ras/behaviour.yaml", "layers", ("head", "layers"), 12, BEH),
    ("ras/behaviour.yaml", "d_state", ("head", "d_state"), 8, BEH),
    ("ras/behaviour.yaml", "d_conv", ("head", "d_conv"), 5, BEH),
    ("ras/behaviour.yaml", "expand", ("head", "expand"), 1, BEH_MODEL),
    ("ras/behaviour.yaml", "direction", ("head", "direction"), "causal", BEH_MODEL),
    ("ras/behaviour.yaml", "block", ("head", "block"), "ras", BEH_MODEL),
    ("ras/behaviour.yaml", "dropout", ("head", "dropout"), 0.2, BEH),
    ("ras/behaviour.yaml", "regressor", ("head", "regressor"), "mlp", BEH_MODEL),
    ("ras/behaviour.yaml", "regressor_hidden", ("head", "regressor_hidden"), 512, BEH),
    ("ras/behaviour.yaml", "lr", ("lr",), 3e-4, BEH),
    ("ras/behaviour.yaml", "weight_decay", ("weight_decay",), 1e-3, BEH),
    ("ras/behaviour.yaml", "batch_size", ("batch_size",), 8, BEH),
    ("ras/behaviour.yaml", "epochs", ("epochs",), 100, BEH),
    ("ras/behaviour.yaml", "scheduler", ("scheduler",), "none", BEH_TRAIN),
    ("ras/behaviour.yaml", "early_stop", ("early_stop",), 12, BEH),
    ("ras/behaviour.yaml", "grad_clip", ("grad_clip",), 0.0, BEH_TRAIN),
    ("ras/behaviour.yaml", "ccc_over", ("ccc_over",), "batch", BEH_TRAIN),
    ("ras/behaviour.yaml", "ccc_min_frames", ("ccc_min_frames",), 0, BEH_LOSS),
    ("ras/audio.yaml", "window_rows", ("head", "window_rows"), 200, AUDIO_DATA),
    ("ras/audio-wavlm-top4.yaml", "window_rows", ("head", "window_rows"), 200, AUDIO_DATA),
    ("ras/audio-wavlm-top4.yaml", "checkpoint", ("head", "window_encoder_options", "checkpoint"), "wavlm_ser", SER),
]


def _value(cfg, place):
    obj = cfg
    for part in place:
        obj = obj[part] if isinstance(obj, dict) else getattr(obj, part)
    return obj


def _comment(rel: str, key: str, section: str) -> str:
    """The comment of `key` inside `section` (a top-level block) of a recipe file, continuation lines included."""
    lines = (CONFIGS_DIR / rel).read_text(encoding="utf-8").splitlines()
    in_section, found = False, []
    for line in lines:
        if re.match(r"^\S", line):
            in_section = line.startswith(f"{section}:")
            if found:
                break
            continue
        if in_section and re.match(rf"^\s+{key}:", line):
            found.append(line.partition("#")[2])
        elif found and re.match(r"^\s+#", line):
            found.append(line.partition("#")[2])
        elif found:
            break
    return " ".join(found)


SECTIONS = {"window": "data", "stride": "data", "lr": "optim", "weight_decay": "optim", "batch_size": "optim",
            "epochs": "optim", "scheduler": "optim", "plateau_patience": "optim", "plateau_factor": "optim",
            "early_stop": "optim", "grad_clip": "optim", "ccc_over": "loss", "ccc_min_frames": "loss",
            "require_input": "loss"}


@pytest.mark.parametrize("rel, key, place, value, source", PINS, ids=[f"{p[0]}:{p[1]}" for p in PINS])
def test_recipe_value_is_rass_code_value_and_cites_its_file(rel, key, place, value, source):
    cfg = build_train_config([CONFIGS_DIR / rel])
    got = _value(cfg, place)
    assert got == pytest.approx(value) if isinstance(value, float) else got == value
    comment = _comment(rel, key, SECTIONS.get(key, "head"))
    assert "RAS code" in comment and source in comment, f"{rel} {key}: comment {comment!r} does not cite {source}"


def test_paper_values_stay_beside_the_code_values_where_they_differ():
    text = (CONFIGS_DIR / "ras/behaviour.yaml").read_text(encoding="utf-8")
    for key, paper in (("lr", "paper: AdamW 1e-4"), ("epochs", "paper: 50")):
        assert paper in _comment("ras/behaviour.yaml", key, "optim"), text
    assert "paper text: H = 16" in _comment("ras/face.yaml", "heads", "head")


@pytest.mark.parametrize("rel", ["ras/fusion-raav.yaml", "ras/fusion-dcmmoe.yaml"])
def test_fusion_smoothing_is_rass(rel):
    """RAS smooths the fused predictions with a moving average whose ends repeat the edge value, kernels
    7 / 13 on val and 9 / 11 on test (half-windows 3, 6, 4, 5), all in the grid chosen on validation."""
    cfg = build_train_config([CONFIGS_DIR / rel])
    assert cfg.smooth_edges == "repeat" and {3, 4, 5, 6} <= set(cfg.smooth_grid)
    assert "multimodal_framewise_v2_callback.py" in _comment(rel, "smooth_edges", "eval")
