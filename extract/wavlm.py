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
from pathlib import Path

import numpy as np

from extract.audio import Audio
from extract.audio_extractor import ModelAudioExtractor
from extract.base import SPEED, register
from extract.models import ModelFamily, register_family


WAVLM_HUB_ID = "microsoft/wavlm-large"
STRIDE = 320  # samples per frame at 16 kHz (20 ms)
RECEPTIVE = 400  # samples seen by one frame (25 ms)


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


@dataclass
class WavlmBundle:
    feature_extractor: object
    model: object
    ref: str

    def dim(self, config: WavlmConfig) -> int:
        hidden = int(self.model.config.hidden_size)
        return hidden * len(config.layers) if config.combine == "concat" else hidden


def load_wavlm(ref: str | Path = WAVLM_HUB_ID, device: str = "cpu", dtype: str | None = None) -> WavlmBundle:
    """Load the feature extractor and model from a hub id or local folder (real or tiny alike)."""
    import torch
    from transformers import AutoFeatureExtractor, WavLMModel

    ref = str(ref)
    feature_extractor = AutoFeatureExtractor.from_pretrained(ref)
    kwargs = {"dtype": getattr(torch, dtype)} if dtype else {}
    model = WavLMModel.from_pretrained(ref, **kwargs)
    model.eval().to(device)
    return WavlmBundle(feature_extractor=feature_extractor, model=model, ref=ref)


def build_tiny_wavlm(folder: Path, seed: int = 0, pos_kernel: int = 16) -> Path:
    """Save a small randomly initialised WavLMModel (+ feature extractor) to `folder`: the real classes
    and the real 400/320-sample front end with narrow layers (WavLM-Large's layer-norm variant)."""
    import torch
    from transformers import Wav2Vec2FeatureExtractor, WavLMConfig, WavLMModel

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    config = WavLMConfig(
        hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128,
        conv_dim=(32,) * 7, feat_extract_norm="layer", do_stable_layer_norm=True,
        num_conv_pos_embeddings=pos_kernel, num_conv_pos_embedding_groups=4,
    )
    WavLMModel(config).save_pretrained(folder)
    Wav2Vec2FeatureExtractor(
        feature_size=1, sampling_rate=16000, padding_value=0.0, do_normalize=True, return_attention_mask=True
    ).save_pretrained(folder)
    return folder


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
register_family(ModelFamily("wavlm", WAVLM_HUB_ID, lambda folder: str(build_tiny_wavlm(folder)), load_wavlm))


@register
class WavlmExtractor(ModelAudioExtractor):
    """`wavlm`: WavLM hidden states per 20 ms frame, stitched from overlapping windows."""

    name = "wavlm"
    Config = WavlmConfig
    kind = "frame"
    unit = "video"
    version = "1"
    family = "wavlm"

    def load_bundle(self, ref: str, device: str):
        return load_wavlm(ref, device=device)

    def compute(self, audio: Audio):
        values, times, valid = compute_wavlm(self.bundle, audio, self.config)
        return values, times, valid, {"rate_hz": audio.sample_rate / STRIDE}
