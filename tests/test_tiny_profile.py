"""The tiny profile fits its own models (issue 26): every extractor of the registry runs with `--profile tiny`,
a recipe written for the real models included (configs/ras/extract-wavlm-top.yaml asks for WavLM-Large's top 4
layers); every `--finetune` spec the README shows trains with `--profile tiny`; the values the profile states
are the tiny models' own; a top that does not fit the full model is still an error. Two 3 s sample videos."""

from __future__ import annotations

from pathlib import Path

from train.config import TrainConfig  # noqa: E402
import pytest

torch = pytest.importorskip("torch")
torch.set_num_threads(1)

from typer.testing import CliRunner  # noqa: E402

from cache.sample_data import SampleConfig, write_sample_dataset  # noqa: E402
from cache.store import FeatureStore, store_path  # noqa: E402
from recipes.loader import CONFIGS_DIR, ConfigError  # noqa: E402
from train.runs.profiles import load_profile  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
VIDEOS = {"train": "video20", "val": "video7"}  # one labelled video per split, both with audio and a face


def _all_features() -> list[str]:
    import extract.runner  # noqa: F401  (registers every extractor)
    from extract.base import available

    return sorted(available())


def _readme_finetune_commands() -> list[list[str]]:
    """The `pipeline.py train ... --finetune SPEC ...` commands of the README, as argument lists (after `pipeline.py`)."""
    text = (ROOT / "README.md").read_text(encoding="utf-8").replace("\\\n", " ")
    commands = []
    for line in text.splitlines():
        if "pipeline.py train" in line and "--finetune" in line:
            args = line.split("pipeline.py", 1)[1].split("#", 1)[0].split()
            commands.append(args)
    return commands


@pytest.fixture(scope="module")
def ws(tmp_path_factory) -> Path:
    """The two videos and every extractor's store for train and val, made through the CLI with the tiny profile."""
    from pipeline import app

    root = tmp_path_factory.mktemp("tiny_profile")
    write_sample_dataset(root / "data", SampleConfig.short(tuple(VIDEOS.values()), 3.0))
    for split in VIDEOS:
        res = CliRunner().invoke(app, [
            "extract", "--config", "ras/extract-wavlm-top.yaml", "--split", split, "--features", ",".join(_all_features()),
            "--profile", "tiny", "--data-root", str(root / "data"), "--cache-dir", str(root / "cache"),
            "--models-dir", str(root / "models"), "--device", "cpu", "--batch-size", "16",
        ])
        assert res.exit_code == 0, res.output
    return root


def _store(ws: Path, name: str) -> FeatureStore:
    return FeatureStore.open(store_path(ws / "cache", name))


def test_the_profiles_values_are_the_tiny_models_own():
    from extract.models import TINY_CLIP_CONFIG
    from extract.wavlm_model import TINY_WAVLM_CONFIG

    tiny, full = load_profile("tiny"), load_profile("full")
    assert tiny.backbone_depth == {"clip": TINY_CLIP_CONFIG["vision_cfg"]["layers"], "wavlm": TINY_WAVLM_CONFIG["num_hidden_layers"]}
    assert tiny.extract["configs"]["wavlm_hidden"]["top_layers"] == TINY_WAVLM_CONFIG["num_hidden_layers"]
    assert full.backbone_depth == {"clip": 12, "wavlm": 24}  # ViT-B-16, WavLM-Large
    assert (full.train, full.extract) == ({}, {})  # the papers' values, as the recipes write them


def test_profile_lies_between_config_files_and_overrides():
    from recipes.extract import build_run_options

    recipe = "ras/extract-wavlm-top.yaml"  # the paper's top 4
    assert build_run_options([recipe], [], {"profile": "full"}).configs["wavlm_hidden"].top_layers == 4
    assert build_run_options([recipe], [], {"profile": "tiny"}).configs["wavlm_hidden"].top_layers == 2
    assert build_run_options([recipe], [], defaults={"profile": "tiny"}).configs["wavlm_hidden"].top_layers == 2
    typed = build_run_options([recipe], ["configs.wavlm_hidden.top_layers=1"], {"profile": "tiny"})
    assert typed.configs["wavlm_hidden"].top_layers == 1  # key=value wins over the profile


def test_a_top_deeper_than_the_full_model_is_an_error_on_every_profile(caplog):
    from train.runs.recipe import build_train_config

    def spec(profile: str, k: str, **more) -> str:
        cfg = build_train_config([], [], {"model": "gru", "data.features": ["wavlm_hidden"],
                                          "finetune": {"spec": k, "profile": profile, **more}})
        return cfg.finetune["spec"]

    assert spec("full", "wavlm:4") == "wavlm:4" and spec("full", "clip:3") == "clip:3"
    with caplog.at_level("WARNING"):
        assert spec("tiny", "wavlm:4") == "wavlm:2" and spec("tiny", "clip:all") == "clip:all"
    assert "trains the top 2 layers, all of the tiny WavLM's" in caplog.text and "tiny.yaml" in caplog.text
    assert spec("tiny", "wavlm:1") == "wavlm:1" and spec("tiny", "clip:12") == "clip:2"
    assert spec("tiny", "wavlm:4", ref="/some/model") == "wavlm:4"  # a model of one's own: checked when it loads
    for profile in ("full", "tiny"):
        with pytest.raises(ConfigError, match="wavlm:25 asks for the top 25 layers, but the full WavLM has 24"):
            spec(profile, "wavlm:25")
        with pytest.raises(ConfigError, match="clip:13 asks for the top 13 blocks, but the full CLIP visual tower has 12"):
            spec(profile, "clip:13")
    audio = build_train_config([CONFIGS_DIR / "ras/audio-wavlm-top4.yaml"], ["head.window_encoder_options.profile=tiny"])
    assert audio.head["window_encoder_options"]["top"] == 2
    assert build_train_config([CONFIGS_DIR / "ras/audio-wavlm-top4.yaml"]).head["window_encoder_options"]["top"] == 4


def test_every_extractor_runs_with_the_tiny_profile(ws):
    from extract.face_encoder import TINY_SPEC
    from extract.models import TINY_CLIP_CONFIG
    from extract.wavlm_model import TINY_WAVLM_CONFIG, n_frames

    frames, audio_rows = 90, n_frames(3 * 16000)  # 3 s at 30 fps; 50 Hz audio frames of 3 s
    wavlm = TINY_WAVLM_CONFIG["hidden_size"]
    expected = {  # feature: (rows per video, shape of a row)
        "faces": (frames, (5,)), "landmarks": (frames, (122,)), "mouth": (frames, (2,)),
        "clip": (frames, (TINY_CLIP_CONFIG["embed_dim"],)), "face_crops": (frames, (224 * 224 * 3 // 2 + 5,)),  # jpeg:95 rows
        "grada": (frames, (TINY_SPEC.embed_dim,)),
        "wavlm": (audio_rows, (wavlm,)), "wavlm_hidden": (audio_rows, (wavlm,)),
        "ast": (3, (64,)),  # one row per second (hop 1 s); the tiny AST's width
        "qwen3vl": (1, (4, 64)),  # one 4 s segment over 3 s; 4 rows of the tiny Qwen3-VL's width
        "audio_reliability": (1, (3,)),  # one 4 s window over 3 s
    }
    assert sorted(expected) == _all_features(), "a new extractor: add its expected shape here"
    for name, (rows, shape) in expected.items():
        store = _store(ws, name)
        assert sorted(store.units()) == sorted(VIDEOS.values()), name
        for video in VIDEOS.values():
            group = store.read(video)
            assert group.values.shape == (rows, *shape) and len(group.times) == rows, (name, group.values.shape)
    hidden = _store(ws, "wavlm_hidden")
    assert hidden.meta.config["top_layers"] == 2  # the profile's, over the recipe file's 4
    _, _, attrs = hidden.read_index(VIDEOS["train"])
    assert (attrs["depth"], attrs["top_layers"], attrs["hidden_index"]) == (2, 2, 0)
    assert len(hidden.read(VIDEOS["train"]).values) == n_frames(attrs["n_samples"])


@pytest.mark.parametrize("args", _readme_finetune_commands(), ids=lambda a: a[a.index("--finetune") + 1])
def test_every_readme_finetune_spec_trains_with_the_tiny_profile(ws, args):
    from pipeline import app

    args = [a for i, a in enumerate(args) if a != "--data-root" and (i == 0 or args[i - 1] != "--data-root")]
    name = args[args.index("--name") + 1]
    res = CliRunner().invoke(app, [
        *args, "--profile", "tiny", "--finetune-opt", f"models_dir={ws / 'models'}", "--data-root", str(ws / "data"),
        "--cache-dir", str(ws / "cache"), "--runs-dir", str(ws / "runs"), "--device", "cpu",
        "--epochs", "1", "--max-steps", "2", "--window", "32", "--stride", "32", "--batch-size", "2",
    ])
    assert res.exit_code == 0, res.output
    run = ws / "runs" / name
    assert (run / "eval_val.json").is_file() and (run / "model.safetensors").is_file()
    backbone = run / "backbone"
    assert any(backbone.glob("*.safetensors")), sorted(p.name for p in backbone.iterdir())
    spec = args[args.index("--finetune") + 1]
    family = spec.split(":")[0]
    import json

    stored = TrainConfig.load(run / "config.yaml").to_dict()["finetune"]["spec"]
    assert stored == (spec if spec.endswith(":all") else f"{family}:{min(int(spec.split(':')[1]), 2)}")


def test_ras_wavlm_top4_recipe_trains_with_the_tiny_profile(ws, caplog):
    """RAS's audio recipe (WavLM-Large's top 4 layers in its window encoder) on the tiny WavLM: top 2."""
    from pipeline import app

    res = CliRunner().invoke(app, [
        "train", "--config", "ras/audio-wavlm-top4.yaml", "head.window_encoder_options.profile=tiny",
        f"head.window_encoder_options.models_dir={ws / 'models'}", "optim.max_steps_per_epoch=2", "--epochs", "1",
        "--name", "ras-audio-top", "--data-root", str(ws / "data"), "--cache-dir", str(ws / "cache"),
        "--runs-dir", str(ws / "runs"), "--device", "cpu",
    ])
    assert res.exit_code == 0, res.output
    import json

    options = TrainConfig.load(ws / "runs" / "ras-audio-top" / "config.yaml").to_dict()["head"]["window_encoder_options"]
    assert (options["top"], options["profile"]) == (2, "tiny")


def test_a_model_of_ones_own_is_checked_against_its_own_depth(ws):
    """An explicit reference is never fitted: K deeper than that model is refused when it loads (one line)."""
    from pipeline import app

    ref = (ws / "models" / "tiny" / "wavlm").resolve()
    res = CliRunner().invoke(app, [
        "train", "--model", "gru", "--features", "wavlm_hidden", "--finetune", "wavlm:3", "--profile", "tiny",
        "--finetune-opt", f"ref={ref}", "--name", "own-ref", "--epochs", "1", "--max-steps", "1",
        "--data-root", str(ws / "data"), "--cache-dir", str(ws / "cache"), "--runs-dir", str(ws / "runs"), "--device", "cpu",
    ])
    assert res.exit_code == 1, res.output
    line = " ".join(res.stdout.split())
    assert line.startswith("train failed:") and "wavlm:3 asks for the top 3 layers" in line and "has 2" in line, res.output
