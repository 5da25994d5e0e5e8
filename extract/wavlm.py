"""WavLM hidden states per 20 ms frame, computed on overlapping windows and stitched without seams.

Model: transformers `WavLMModel` (+ the checkpoint's `Wav2Vec2FeatureExtractor`, applied per window).
Real weights: `microsoft/wavlm-large` or any local folder with the same files.

Frames: WavLM's convolutional front end has a 400-sample receptive field and a 320-sample stride, so a
window starting at sample s (a multiple of 320) gives frames that are exactly the global frames
s/320, s/320 + 1, ... of a full-length pass. Frame g stands for [start + 0.02·g, start + 0.02·(g+1)).

Windows: `window_s` (4 s) every `hop_s` (2 s), starts on the 320-sample grid; the last window is moved
back so that it ends at the audio's end (full length, no padding). Stitching: every global frame is taken
exactly once, from the window in which it lies most centrally (largest distance to that window's edges);
ties go to the earlier window. So the output is exactly 50 frames per second with no gap or duplicate.
Layers: `layers` index `hidden_states` (0 = the transformer's input, -1 = the last layer); several are
averaged (`combine="mean"`) or concatenated (`"concat"`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from extract.audio import Audio
from extract.audio_extractor import ModelAudioExtractor
from extract.base import SPEED, register
from extract.wavlm_model import (  # noqa: F401  (re-exported: the model side lives in wavlm_model)
    RECEPTIVE,
    STRIDE,
    CHECKPOINTS,
    WAVLM_HUB_ID,
    WavlmBundle,
    build_tiny_wavlm,
    load_wavlm,
    n_frames,
    ownership,
    window_plan,
)


@dataclass(frozen=True)
class WavlmConfig:
    layers: tuple[int, ...] = (-1,)
    combine: str = "mean"  # mean | concat
    window_s: float = 4.0
    hop_s: float = 2.0
    batch_size: int = field(default=8, metadata=SPEED)  # speed only: not in the fingerprint

    def __post_init__(self) -> None:
        object.__setattr__(self, "layers", tuple(int(i) for i in self.layers))
        if not self.layers:
            raise ValueError("layers must name at least one hidden state")
        if self.combine not in ("mean", "concat"):
            raise ValueError(f"combine must be 'mean' or 'concat', got {self.combine!r}")
        if self.hop_s <= 0 or self.window_s < self.hop_s or self.batch_size < 1:
            raise ValueError("need 0 < hop_s <= window_s and batch_size >= 1")


def _select(hidden_states: tuple, config: WavlmConfig):
    import torch

    chosen = [hidden_states[i] for i in config.layers]
    if len(chosen) == 1:
        return chosen[0]
    return torch.stack(chosen).mean(dim=0) if config.combine == "mean" else torch.cat(chosen, dim=-1)


def compute_wavlm(bundle: WavlmBundle, audio: Audio, config: WavlmConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """values (F, D) float32 at 50 Hz, times (F, 2) seconds on the video timeline, valid (F,)."""
    import torch

    fe, model = bundle.feature_extractor, bundle.model
    sr = audio.sample_rate
    if sr != fe.sampling_rate:
        raise ValueError(f"WavLM expects {fe.sampling_rate} Hz audio, got {sr}")
    samples = audio.samples
    if len(samples) < RECEPTIVE:  # shorter than one frame: pad to one frame
        samples = np.pad(samples, (0, RECEPTIVE - len(samples)))
    total = n_frames(len(samples))
    plans = window_plan(len(samples), int(round(config.window_s * sr)), int(round(config.hop_s * sr)))
    owner, local = ownership(plans, total)
    needed = sorted(set(owner.tolist()))
    device = next(model.parameters()).device
    dtype = next(model.parameters()).dtype
    n_layers = model.config.num_hidden_layers + 1
    for i in config.layers:
        if not -n_layers <= i < n_layers:
            raise ValueError(f"layer {i} out of range for a model with {n_layers} hidden states")
    out = np.zeros((total, bundle.dim(config)), dtype=np.float32)
    # Windows of equal length batch together (all but possibly the first/last), so no padding is needed.
    by_length: dict[int, list[int]] = {}
    for w in needed:
        by_length.setdefault(plans[w][1] - plans[w][0], []).append(w)
    for length, members in by_length.items():
        for b0 in range(0, len(members), config.batch_size):
            batch = members[b0 : b0 + config.batch_size]
            clips = [samples[plans[w][0] : plans[w][1]] for w in batch]
            inputs = fe(clips, sampling_rate=sr, return_tensors="pt")
            with torch.inference_mode():
                result = model(
                    input_values=inputs["input_values"].to(device=device, dtype=dtype), output_hidden_states=True
                )
            feats = _select(result.hidden_states, config).float().cpu().numpy()
            for row, w in enumerate(batch):
                take = np.flatnonzero(owner == w)
                out[take] = feats[row, local[take]]
    g = np.arange(total, dtype=np.float64)
    times = np.stack([g * STRIDE / sr, (g * STRIDE + STRIDE) / sr], axis=1) + audio.start
    return out, times, np.ones(total, dtype=bool)


# ---- registration --------------------------------------------------------------------------------


@register
class WavlmExtractor(ModelAudioExtractor):
    """`wavlm`: WavLM hidden states per 20 ms frame, stitched from overlapping windows."""

    name = "wavlm"
    Config = WavlmConfig
    kind = "frame"
    unit = "video"
    version = "1"
    family = "wavlm"

    def load_bundle(self, ref: str, device: str) -> Any:
        return load_wavlm(ref, device=device)

    def compute(self, audio: Audio) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        values, times, valid = compute_wavlm(self.bundle, audio, self.config)
        return values, times, valid, {"rate_hz": audio.sample_rate / STRIDE}


@dataclass(frozen=True)
class WavlmHiddenConfig:
    top_layers: int = 4  # K: the stored state is the input of the top K transformer layers
    window_s: float = 4.0
    hop_s: float = 2.0
    batch_size: int = field(default=8, metadata=SPEED)  # speed only: not in the fingerprint
    dtype: str = "float16"  # stored dtype (float32 for exact equivalence checks)
    # the model family whose reference is used (extract/wavlm_model.py): "wavlm" (microsoft/wavlm-large) or
    # "wavlm_ser" (RAS's 3loi/SER-Odyssey-Baseline-WavLM-Multi-Attributes, `ssl_model.*` weights); --model wins
    checkpoint: str = "wavlm"

    def __post_init__(self) -> None:
        if self.checkpoint not in CHECKPOINTS:
            raise ValueError(f"checkpoint must be one of {', '.join(CHECKPOINTS)}, got {self.checkpoint!r}")
        if self.top_layers < 1:
            raise ValueError(f"top_layers must be at least 1, got {self.top_layers}")
        if self.dtype not in ("float16", "float32"):
            raise ValueError(f"dtype must be float16 or float32, got {self.dtype!r}")
        WavlmConfig(window_s=self.window_s, hop_s=self.hop_s, batch_size=self.batch_size)  # same checks


def hidden_layer_index(depth: int, top_layers: int, ref: str = "") -> int:
    """Index into `hidden_states` of the input of the top `top_layers` of a `depth`-layer model."""
    if not 1 <= top_layers <= depth:
        raise ValueError(f"top {top_layers} layers asked for, but the WavLM model {ref or ''} has {depth} layers "
                         f"(set configs.wavlm_hidden.top_layers to at most {depth})")
    return depth - top_layers


@register
class WavlmHiddenExtractor(ModelAudioExtractor):
    """`wavlm_hidden`: the input of WavLM's top K layers per 20 ms frame, windowed and stitched exactly
    as `wavlm` (so training the top K layers from it needs no audio and no lower layers). Group attrs
    give the audio's sample count (to rebuild the same window plan), the depth and K."""

    name = "wavlm_hidden"
    Config = WavlmHiddenConfig
    kind = "frame"
    unit = "video"
    version = "1"
    family = "wavlm"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.family = self.config.checkpoint  # type: ignore[misc]  (the reference's family, per config)

    @property
    def store_dtype(self) -> str:  # type: ignore[override]
        return self.config.dtype

    def load_bundle(self, ref: str, device: str) -> Any:
        bundle = load_wavlm(ref, device=device)
        hidden_layer_index(int(bundle.model.config.num_hidden_layers), self.config.top_layers, self.public_model_ref())
        return bundle

    def compute(self, audio: Audio) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        depth = int(self.bundle.model.config.num_hidden_layers)
        index = hidden_layer_index(depth, self.config.top_layers, self.public_model_ref())
        cfg = WavlmConfig(layers=(index,), window_s=self.config.window_s, hop_s=self.config.hop_s,
                          batch_size=self.config.batch_size)
        values, times, valid = compute_wavlm(self.bundle, audio, cfg)
        attrs = {"rate_hz": audio.sample_rate / STRIDE, "n_samples": max(len(audio.samples), RECEPTIVE),
                 "depth": depth, "top_layers": self.config.top_layers, "hidden_index": index}
        return values, times, valid, attrs
