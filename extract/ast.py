"""AST (Audio Spectrogram Transformer) embeddings per audio window.

Model: transformers `ASTFeatureExtractor` (128-bin Kaldi log-mel at 16 kHz, 10 ms frames, padded or cut
to the checkpoint's `max_length`, 1024 frames = 10.24 s) + `ASTModel`. Real weights:
`MIT/ast-finetuned-audioset-10-10-0.4593`; any local folder with the same files works the same way.

Windows (decision): one row per `hop_s` (default 1 s). With `anchor="past"` (default, as method 1) a
row stands for [t - hop, t) and the model sees the past `window_s` (default 10 s) ending at t, so the
row never looks ahead; at the start of a video the context is shorter (the extractor pads it at the
end, as AST was trained on padded AudioSet clips). With `anchor="center"` the context is centred on the
row. The row's `times` are the span it stands for (non-overlapping, tiling the audio), so aligning onto
label frames gives each frame the embedding of the window that ends just after it.
Inputs: the log-mel filterbank is computed once per video and each row's context is a slice of it (Kaldi
frames are computed frame by frame, so a slice equals the context's own filterbank when the context
starts on the 10 ms frame grid, as 1 s hops do; other contexts are computed on their own).
Embedding: `pooling="pooled"` (AST's pooler: mean of the CLS and distillation tokens after the final
norm, default) or `"mean"` (mean of the last hidden state over all tokens).
"""

from __future__ import annotations

import contextlib
import logging
import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from extract.audio import Audio
from extract.audio_extractor import ModelAudioExtractor
from extract.base import SPEED, register
from extract.models import ModelFamily, register_family

log = logging.getLogger(__name__)

AST_HUB_ID = "MIT/ast-finetuned-audioset-10-10-0.4593"
MIN_SAMPLES = 400  # one 25 ms fbank frame at 16 kHz
FRAME_HOP = 160  # 10 ms fbank hop at 16 kHz


@dataclass(frozen=True)
class AstConfig:
    window_s: float = 10.0  # context the model sees per row (at most the checkpoint's max_length)
    hop_s: float = 1.0  # one row per hop; the row's times are the hop it stands for
    anchor: str = "past"  # past: context ends at the row's end | center: context centred on the row
    pooling: str = "pooled"  # pooled | mean
    batch_size: int = field(default=8, metadata=SPEED)  # speed only: not in the fingerprint

    def __post_init__(self) -> None:
        if self.anchor not in ("past", "center"):
            raise ValueError(f"anchor must be 'past' or 'center', got {self.anchor!r}")
        if self.pooling not in ("pooled", "mean"):
            raise ValueError(f"pooling must be 'pooled' or 'mean', got {self.pooling!r}")
        if self.window_s <= 0 or self.hop_s <= 0 or self.batch_size < 1:
            raise ValueError("window_s, hop_s and batch_size must be positive")


@dataclass
class AstBundle:
    feature_extractor: object
    model: object
    ref: str

    @property
    def dim(self) -> int:
        return int(self.model.config.hidden_size)


def load_ast(ref: str | Path = AST_HUB_ID, device: str = "cpu", dtype: str | None = None) -> AstBundle:
    """Load the feature extractor and model from a hub id or local folder (real or tiny alike)."""
    import torch
    from transformers import ASTFeatureExtractor, ASTModel

    ref = str(ref)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="At least one mel filter has all zero values")
        feature_extractor = ASTFeatureExtractor.from_pretrained(ref)
    torch_dtype = getattr(torch, dtype) if dtype else None
    model = ASTModel.from_pretrained(ref, dtype=torch_dtype) if torch_dtype else ASTModel.from_pretrained(ref)
    model.eval().to(device)
    if feature_extractor.max_length != model.config.max_length:
        raise ValueError(
            f"{ref}: feature extractor max_length {feature_extractor.max_length} != model max_length "
            f"{model.config.max_length}"
        )
    return AstBundle(feature_extractor=feature_extractor, model=model, ref=ref)


def build_tiny_ast(folder: Path, seed: int = 0) -> Path:
    """Save a small randomly initialised ASTModel (+ feature extractor) to `folder` for tests and the
    tiny profile. Same classes and same 128-bin, 1024-frame input as the real checkpoint."""
    import torch
    from transformers import ASTConfig, ASTFeatureExtractor, ASTModel

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    config = ASTConfig(
        hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128,
        num_mel_bins=128, max_length=1024, frequency_stride=10, time_stride=10,
    )
    ASTModel(config).save_pretrained(folder)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="At least one mel filter has all zero values")
        ASTFeatureExtractor(num_mel_bins=128, max_length=1024, sampling_rate=16000).save_pretrained(folder)
    return folder


def ast_rows(duration: float, config: AstConfig) -> tuple[np.ndarray, np.ndarray]:
    """(rows, contexts), each (N, 2) seconds relative to the audio's first sample."""
    if duration <= 0:
        return np.zeros((0, 2)), np.zeros((0, 2))
    n = max(1, math.ceil(duration / config.hop_s - 1e-9))
    starts = np.arange(n) * config.hop_s
    rows = np.stack([starts, np.minimum(starts + config.hop_s, duration)], axis=1)
    if config.anchor == "past":
        ctx_end = rows[:, 1]
        ctx_start = np.maximum(ctx_end - config.window_s, 0.0)
    else:
        centre = rows.mean(axis=1)
        ctx_start = np.maximum(centre - config.window_s / 2, 0.0)
        ctx_end = np.minimum(centre + config.window_s / 2, duration)
    return rows, np.stack([ctx_start, ctx_end], axis=1)


class VideoFbank:
    """The feature extractor's inputs for contexts of one audio track, from one filterbank of the whole
    track (`ASTFeatureExtractor` computes it per call; here once per video)."""

    def __init__(self, fe: object, samples: np.ndarray) -> None:
        self.fe = fe
        self.samples = np.asarray(samples, dtype=np.float32)
        n = len(self.samples)
        self.frames = None
        if n >= MIN_SAMPLES and hasattr(fe, "_extract_fbank_features"):
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message="At least one mel filter has all zero values")
                total = 1 + (n - MIN_SAMPLES) // FRAME_HOP
                # the extractor's own (private) filterbank, so both paths share one implementation
                self.frames = np.asarray(fe._extract_fbank_features(self.samples, max_length=total), dtype=np.float32)

    def one(self, a: int, b: int) -> np.ndarray:
        """(max_length, bins) input of samples [a, b), as `fe([samples[a:b]])` gives it."""
        fe = self.fe
        n = b - a
        if self.frames is None or n < MIN_SAMPLES or a % FRAME_HOP:
            clip = self.samples[a:b]
            if len(clip) < MIN_SAMPLES:
                clip = np.pad(clip, (0, MIN_SAMPLES - len(clip)))
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message="At least one mel filter has all zero values")
                return np.asarray(fe([clip], sampling_rate=fe.sampling_rate)["input_values"][0], dtype=np.float32)
        first, count = a // FRAME_HOP, 1 + (n - MIN_SAMPLES) // FRAME_HOP
        out = np.zeros((fe.max_length, self.frames.shape[1]), dtype=np.float32)
        part = self.frames[first : first + min(count, fe.max_length)]
        out[: len(part)] = part
        return np.asarray(fe.normalize(out), dtype=np.float32) if fe.do_normalize else out


def compute_ast(bundle: AstBundle, audio: Audio, config: AstConfig, model_time: Any = contextlib.nullcontext
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """values (N, D) float32, times (N, 2) seconds on the video timeline, valid (N,); `model_time()` is
    entered around each model forward (the extractor's timer)."""
    import torch

    fe, model = bundle.feature_extractor, bundle.model
    if audio.sample_rate != fe.sampling_rate:
        raise ValueError(f"AST expects {fe.sampling_rate} Hz audio, got {audio.sample_rate}")
    max_seconds = fe.max_length / 100.0  # 10 ms fbank frames
    if config.window_s > max_seconds + 1e-6:
        log.warning(
            "AST window %.2f s exceeds the model's %.2f s input; the extractor cuts it", config.window_s, max_seconds
        )
    rows, contexts = ast_rows(audio.duration, config)
    sr = audio.sample_rate
    device = next(model.parameters()).device
    dtype = next(model.parameters()).dtype
    out = np.zeros((len(rows), bundle.dim), dtype=np.float32)
    fbank = VideoFbank(fe, audio.samples)
    for b0 in range(0, len(rows), config.batch_size):
        spans = contexts[b0 : b0 + config.batch_size]
        inputs = np.stack([fbank.one(int(round(c0 * sr)), int(round(c1 * sr))) for c0, c1 in spans])
        with model_time(), torch.inference_mode():
            result = model(input_values=torch.from_numpy(inputs).to(device=device, dtype=dtype))
            emb = result.pooler_output if config.pooling == "pooled" else result.last_hidden_state.mean(dim=1)
            out[b0 : b0 + len(spans)] = emb.float().cpu().numpy()
    times = rows + audio.start
    return out, times, np.ones(len(rows), dtype=bool)


# ---- registration --------------------------------------------------------------------------------
register_family(ModelFamily("ast", AST_HUB_ID, lambda folder: str(build_tiny_ast(folder)), load_ast))


@register
class AstExtractor(ModelAudioExtractor):
    """`ast`: one AST embedding per audio window (see the module docstring)."""

    name = "ast"
    Config = AstConfig
    kind = "window"
    unit = "video"
    version = "1"
    family = "ast"

    def load_bundle(self, ref: str, device: str) -> Any:
        return load_ast(ref, device=device)

    def compute(self, audio: Audio) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        values, times, valid = compute_ast(self.bundle, audio, self.config, self.model_time)
        return values, times, valid, {"context_s": self.config.window_s}
