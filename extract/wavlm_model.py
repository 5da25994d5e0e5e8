"""WavLM as a model, without the extractor: loading (hub id or local folder, real or tiny alike), the
tiny model, and the window geometry shared by extraction (`extract/wavlm.py`) and by training the top
layers from the cache (`train/heads/backbones.py`), which must cut and stitch windows the same way.

Frames: WavLM's convolutional front end has a 400-sample receptive field and a 320-sample stride, so a
window starting at sample s (a multiple of 320) gives frames that are exactly the global frames
s/320, s/320 + 1, ... of a full-length pass.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from extract.models import ModelFamily, register_family

if TYPE_CHECKING:  # annotations only: importing this module needs no torch
    import torch

WAVLM_HUB_ID = "microsoft/wavlm-large"
# RAS's audio checkpoint (src_audio_and_fusion/src/audio/models/wavlm_s2s_model.py): WavLM-Large fine-tuned
# for speech emotion on MSP-Podcast; its model.safetensors holds the WavLM weights under `ssl_model.*`
# (beside its own pooling/regression head), loaded into microsoft/wavlm-large's architecture.
WAVLM_SER_HUB_ID = "3loi/SER-Odyssey-Baseline-WavLM-Multi-Attributes"
SER_PREFIX = "wavlm_ser:"  # reference kind: wavlm_ser:SER[@BASE] (BASE: the architecture, default WAVLM_HUB_ID)
SSL_PREFIX = "ssl_model."
SER_WEIGHTS = "model.safetensors"
STRIDE = 320  # samples per frame at 16 kHz (20 ms)
RECEPTIVE = 400  # samples seen by one frame (25 ms)


@dataclass
class WavlmBundle:
    feature_extractor: object
    model: object
    ref: str

    def dim(self, config) -> int:
        """Values per frame for a `WavlmConfig` (layers, combine)."""
        hidden = int(self.model.config.hidden_size)
        return hidden * len(config.layers) if config.combine == "concat" else hidden


def load_wavlm(ref: str | Path = WAVLM_HUB_ID, device: str = "cpu", dtype: str | None = None) -> WavlmBundle:
    """Load the feature extractor and model from a hub id or local folder (real or tiny alike); a
    `wavlm_ser:SER[@BASE]` reference is BASE's architecture with SER's `ssl_model.*` weights (ser_parts)."""
    import torch
    from transformers import AutoFeatureExtractor, WavLMModel

    ref = str(ref)
    ser, base = ser_parts(ref) if ref.startswith(SER_PREFIX) else (None, ref)
    feature_extractor = AutoFeatureExtractor.from_pretrained(base)
    kwargs = {"dtype": getattr(torch, dtype)} if dtype else {}
    model = WavLMModel.from_pretrained(base, **kwargs)
    if ser is not None:
        load_ser_weights(model, ser)
    model.eval().to(device)
    return WavlmBundle(feature_extractor=feature_extractor, model=model, ref=ref)


def ser_parts(ref: str) -> tuple[str, str]:
    """`wavlm_ser:SER[@BASE]` -> (SER, BASE): SER is a hub id, a local folder holding model.safetensors or
    the file itself; BASE (default microsoft/wavlm-large) gives the architecture and the feature extractor."""
    body = ref.removeprefix(SER_PREFIX)
    ser, _, base = body.partition("@")
    if not ser:
        raise ValueError(f"model reference {ref!r}: expected wavlm_ser:SER[@BASE]")
    return ser, base or WAVLM_HUB_ID


def ser_weights_file(ser: str) -> Path:
    """The SER checkpoint's weights file: a local file, SER/model.safetensors, or the hub's copy."""
    path = Path(ser)
    if path.is_file():
        return path
    if path.is_dir():
        if not (path / SER_WEIGHTS).is_file():
            raise FileNotFoundError(f"{path / SER_WEIGHTS}: no {SER_WEIGHTS} in the SER checkpoint folder {path}")
        return path / SER_WEIGHTS
    from huggingface_hub import hf_hub_download

    return Path(hf_hub_download(repo_id=ser, filename=SER_WEIGHTS))


def load_ser_weights(model: torch.nn.Module, ser: str) -> None:
    """Copy the SER checkpoint's `ssl_model.*` tensors into a WavLMModel, prefix stripped (its own head
    is not WavLM's and is left out), as RAS's WavLMS2SModelV1 does. Every WavLM weight must be there
    (RAS loads with strict=False; a partial load here is an error naming what is missing)."""
    from safetensors.torch import load_file

    file = ser_weights_file(ser)
    state = {k[len(SSL_PREFIX):]: v for k, v in load_file(str(file)).items() if k.startswith(SSL_PREFIX)}
    if not state:
        raise ValueError(f"{file}: no '{SSL_PREFIX}*' tensors: not a WavLM SER checkpoint")
    missing, unexpected = model.load_state_dict(state, strict=False)
    # masked_spec_embed is WavLM's pre-training mask vector, unused at inference and absent from some copies
    missing = [k for k in missing if k != "masked_spec_embed"]
    if missing or unexpected:
        raise ValueError(f"{file}: the SER weights do not fit the WavLM architecture: {len(missing)} missing "
                         f"(e.g. {missing[:2]}), {len(unexpected)} unexpected (e.g. {unexpected[:2]})")


# the tiny model's size (configs/profiles/tiny.yaml states its depth for the settings bound to it)
TINY_WAVLM_CONFIG = {
    "hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 128,
    "conv_dim": (32,) * 7, "feat_extract_norm": "layer", "do_stable_layer_norm": True, "num_conv_pos_embedding_groups": 4,
}


def build_tiny_wavlm(folder: Path, seed: int = 0, pos_kernel: int = 16) -> Path:
    """Save a small randomly initialised WavLMModel (+ feature extractor) to `folder`: the real classes
    and the real 400/320-sample front end with narrow layers (WavLM-Large's layer-norm variant)."""
    import torch
    from transformers import Wav2Vec2FeatureExtractor, WavLMConfig, WavLMModel

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    config = WavLMConfig(**TINY_WAVLM_CONFIG, num_conv_pos_embeddings=pos_kernel)
    WavLMModel(config).save_pretrained(folder)
    Wav2Vec2FeatureExtractor(
        feature_size=1, sampling_rate=16000, padding_value=0.0, do_normalize=True, return_attention_mask=True
    ).save_pretrained(folder)
    return folder


def build_tiny_wavlm_ser(folder: Path, seed: int = 1) -> str:
    """A small SER checkpoint in RAS's format: FOLDER/base (a tiny WavLMModel: the architecture) and
    FOLDER/ser/model.safetensors holding other random WavLM weights under `ssl_model.*` plus head tensors
    that are not WavLM's. Returns the `wavlm_ser:SER@BASE` reference that loads it."""
    import torch
    from safetensors.torch import save_file
    from transformers import WavLMConfig, WavLMModel

    folder = Path(folder)
    base = build_tiny_wavlm(folder / "base")
    torch.manual_seed(seed)
    tuned = WavLMModel(WavLMConfig(**TINY_WAVLM_CONFIG, num_conv_pos_embeddings=16))
    state = {f"{SSL_PREFIX}{k}": v.contiguous() for k, v in tuned.state_dict().items()}
    state["pool.attn.weight"] = torch.randn(8, TINY_WAVLM_CONFIG["hidden_size"])  # RAS's checkpoint has a head too
    (folder / "ser").mkdir(parents=True, exist_ok=True)
    save_file(state, str(folder / "ser" / SER_WEIGHTS))
    return f"{SER_PREFIX}{folder / 'ser'}@{base}"


def n_frames(n_samples: int) -> int:
    """Frames WavLM's front end gives for n_samples (0 when shorter than one receptive field)."""
    return 0 if n_samples < RECEPTIVE else (n_samples - RECEPTIVE) // STRIDE + 1


def window_plan(n_samples: int, window: int, hop: int) -> list[tuple[int, int]]:
    """[start, end) sample ranges of the windows; starts on the frame grid, last one ends at n_samples."""
    window = max(RECEPTIVE, window // STRIDE * STRIDE)
    hop = max(STRIDE, hop // STRIDE * STRIDE)
    if n_samples <= window:
        return [(0, n_samples)]
    plans: list[tuple[int, int]] = []
    start = 0
    while start + window < n_samples:
        plans.append((start, start + window))
        start += hop
    last_start = (n_samples - window) // STRIDE * STRIDE
    # A full-length window ending exactly at n_samples; its frames reach the last global frame.
    if plans and last_start == plans[-1][0]:
        plans[-1] = (last_start, n_samples)  # the loop's last window, stretched by < 320 samples
    else:
        plans.append((last_start, n_samples))
    return plans


def ownership(plans: list[tuple[int, int]], total: int) -> tuple[np.ndarray, np.ndarray]:
    """For each global frame, the window it is taken from and its index inside that window."""
    owner = np.full(total, -1, dtype=np.int64)
    score = np.full(total, -np.inf)
    for w, (s0, s1) in enumerate(plans):
        first, count = s0 // STRIDE, n_frames(s1 - s0)
        g = np.arange(first, min(first + count, total))
        local = g - first
        centrality = np.minimum(local, count - 1 - local).astype(np.float64)
        better = centrality > score[g]  # strict: ties keep the earlier window
        owner[g[better]] = w
        score[g[better]] = centrality[better]
    if (owner < 0).any():
        raise RuntimeError(f"{int((owner < 0).sum())} frames covered by no window")  # a bug, never data
    local = np.arange(total) - np.array([plans[w][0] // STRIDE for w in owner], dtype=np.int64)
    return owner, local


register_family(ModelFamily("wavlm", WAVLM_HUB_ID, lambda folder: str(build_tiny_wavlm(folder)), load_wavlm))
register_family(ModelFamily("wavlm_ser", f"{SER_PREFIX}{WAVLM_SER_HUB_ID}", build_tiny_wavlm_ser, load_wavlm))
CHECKPOINTS = ("wavlm", "wavlm_ser")  # the model families a WavLM checkpoint option names
