"""RAS's audio checkpoint (3loi/SER-Odyssey-Baseline-WavLM-Multi-Attributes): WavLM weights under `ssl_model.*`
in a model.safetensors beside the SER head, loaded into WavLM-Large's architecture. Tested with a small
random checkpoint of the same layout, saved to a folder and loaded back through the same code."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from safetensors.torch import load_file  # noqa: E402

from extract.wavlm_model import (  # noqa: E402
    SER_PREFIX, WAVLM_HUB_ID, WAVLM_SER_HUB_ID, build_tiny_wavlm, build_tiny_wavlm_ser, load_wavlm, ser_parts,
)

torch.set_num_threads(1)


def test_ser_reference_parts():
    assert ser_parts(f"{SER_PREFIX}{WAVLM_SER_HUB_ID}") == (WAVLM_SER_HUB_ID, WAVLM_HUB_ID)
    assert ser_parts(f"{SER_PREFIX}/x/ser@/x/base") == ("/x/ser", "/x/base")
    with pytest.raises(ValueError, match="wavlm_ser:SER"):
        ser_parts(SER_PREFIX)


def test_ser_checkpoint_loads_its_ssl_weights_into_the_base_architecture(tmp_path):
    ref = build_tiny_wavlm_ser(tmp_path / "ser-model")
    saved = load_file(str(tmp_path / "ser-model" / "ser" / "model.safetensors"))
    bundle = load_wavlm(ref)
    state = bundle.model.state_dict()
    ssl = {k.removeprefix("ssl_model."): v for k, v in saved.items() if k.startswith("ssl_model.")}
    assert set(ssl) == set(state)  # every WavLM weight, nothing of the SER head
    for key in ("encoder.layers.1.attention.q_proj.weight", "feature_extractor.conv_layers.0.conv.weight"):
        assert torch.equal(state[key], ssl[key])
    base = load_wavlm(str(tmp_path / "ser-model" / "base")).model.state_dict()
    assert not torch.equal(base["encoder.layers.1.attention.q_proj.weight"], state["encoder.layers.1.attention.q_proj.weight"])
    # the same file given directly, not its folder
    direct = load_wavlm(f"{SER_PREFIX}{tmp_path / 'ser-model' / 'ser' / 'model.safetensors'}@{tmp_path / 'ser-model' / 'base'}")
    assert torch.equal(direct.model.state_dict()["masked_spec_embed"], state["masked_spec_embed"])


def test_a_checkpoint_without_ssl_weights_is_one_line(tmp_path):
    from safetensors.torch import save_file

    base = build_tiny_wavlm(tmp_path / "base")
    (tmp_path / "bad").mkdir()
    save_file({"head.weight": torch.zeros(2, 2)}, str(tmp_path / "bad" / "model.safetensors"))
    with pytest.raises(ValueError, match="no 'ssl_model.\\*' tensors"):
        load_wavlm(f"{SER_PREFIX}{tmp_path / 'bad'}@{base}")
    with pytest.raises(FileNotFoundError, match="no model.safetensors"):
        load_wavlm(f"{SER_PREFIX}{tmp_path}@{base}")


def test_window_encoder_and_extractor_resolve_the_ser_family(tmp_path):
    """`checkpoint: wavlm_ser` names the family: the full profile's reference is RAS's hub id, the tiny
    profile's is a small SER checkpoint loaded through the same code; the extractor and the window
    encoder resolve the same reference."""
    from extract.models import FAMILIES, resolve_model_ref
    from extract.wavlm import WavlmHiddenConfig, WavlmHiddenExtractor
    from train.heads.blockpool import WavlmTopEncoder

    assert FAMILIES["wavlm_ser"].full_ref == f"{SER_PREFIX}3loi/SER-Odyssey-Baseline-WavLM-Multi-Attributes"
    ext = WavlmHiddenExtractor(WavlmHiddenConfig(top_layers=2, checkpoint="wavlm_ser"), profile="tiny", models_dir=tmp_path)
    ref = resolve_model_ref("wavlm_ser", "tiny", tmp_path)
    assert ext.model_ref == ref and ref.startswith(SER_PREFIX)
    assert WavlmHiddenExtractor(WavlmHiddenConfig(top_layers=2), profile="full").model_ref == WAVLM_HUB_ID
    enc = WavlmTopEncoder(64, top=1, stored=2, profile="tiny", models_dir=str(tmp_path), checkpoint="wavlm_ser")
    tuned = load_wavlm(ref).model.encoder.layers[1].state_dict()
    for key, value in enc.top.layers[-1].state_dict().items():
        assert torch.equal(value, tuned[key])
    with pytest.raises(ValueError, match="checkpoint must be one of wavlm, wavlm_ser"):
        WavlmHiddenConfig(checkpoint="hubert")
