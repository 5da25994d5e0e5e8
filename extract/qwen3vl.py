"""Qwen3-VL behaviour embeddings per 4 s segment of a face track (method 2's "behaviour" stream).

Model: transformers `Qwen3VLForConditionalGeneration` + its processor (`Qwen3VLProcessor`: tokenizer,
`Qwen2VLImageProcessor`, `Qwen3VLVideoProcessor`). Real weights: `Qwen/Qwen3-VL-4B-Instruct` or a local
folder; on CUDA the model is loaded in bf16.

Segments: `segment_s` (4 s) every `hop_s` (2 s) over the track; a trailing segment shorter than
`min_segment_s` is dropped (unless it is the only one). Each segment is `n_frames` (16) frames sampled
uniformly (frame containing the midpoint of each of 16 equal slices: 4 fps for 4 s), cropped around
the track's face box (`crop_size` px, margin `crop_margin`); a frame without a box is the whole frame,
letterboxed. The prompt (config, part of the fingerprint) asks about facial expression, head movement,
gestures, posture and scene; the frames go in as one video with `video_metadata` (fps = frames/segment).

Stored per segment (values (N, 4, D), rows named by the group attribute `row_names`), all from the last
hidden layer (after the final norm) of the language model over the multimodal sequence:
  mm_mean  mean over every token of the sequence      mm_last  the last token (the prompt's end)
  vis_mean mean over the visual (video) tokens only   vis_last the last visual token
With `describe=True` a short greedy description per segment is generated and stored as the group
attribute `descriptions` (a list of strings, one per row).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from cache.store import FeatureMeta
from extract.base import SPEED, CropBatch, CropExtractor, UnitResult, VideoContext, crop_faces, register
from extract.models import ModelFamily, register_family

log = logging.getLogger(__name__)

QWEN3VL_HUB_ID = "Qwen/Qwen3-VL-4B-Instruct"
ROWS = ("mm_mean", "mm_last", "vis_mean", "vis_last")
DEFAULT_PROMPT = (
    "Watch this short clip of a person. Describe the emotion they show: their facial expression, "
    "head movement, gestures and body posture, and the scene around them. How pleasant or unpleasant "
    "(valence) and how calm or excited (arousal) do they seem?"
)
# Team RAS's prompt (SMIL-SPCRAS/CVPRW-26, src_behavior_description/QwenVL-3-4B_train_embeddings.py,
# PROMPT_TEMPLATE), kept verbatim: it is a model input of the method we reproduce. `prompt="ras"` selects it.
RAS_PROMPT = (
    "You are an expert in multimodal affect analysis. Carefully analyze the provided video clip containing a "
    "person\u2019s facial expressions, body posture, gestures, head movements, and the surrounding scene. "
    "Describe the person\u2019s affect in terms of valence (pleasant \u2194 unpleasant) and arousal (low \u2194 high). "
    "You may mention uncertainty or mixed/ambiguous affect when appropriate. "
    "Explain which visible cues support your valence and arousal estimates and how they evolve over time. "
    "Avoid assumptions beyond what is visually present. "
    "Write a single coherent paragraph with no line breaks, no bullets, no special formatting, no longer than 100 tokens, "
    "and always end with a period."
)
PROMPTS = {"affcache": DEFAULT_PROMPT, "ras": RAS_PROMPT}  # named prompts; any other string is the prompt itself
INPUTS = ("crops", "frames")
SPECIAL_TOKENS = (
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>",
)
# The Qwen chat format, for the tiny processor (real checkpoints bring their own template).
TINY_CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}{% for c in message['content'] %}"
    "{% if c['type'] == 'video' %}<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif c['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% else %}{{ c['text'] }}{% endif %}{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


@dataclass(frozen=True)
class Qwen3vlConfig:
    segment_s: float = 4.0
    hop_s: float = 2.0
    min_segment_s: float = 1.0
    n_frames: int = 16  # per segment (4 fps over 4 s); even: the model merges frame pairs
    crop_size: int = 224  # face crop side in pixels (a multiple of 32: patch 16 x merge 2)
    crop_margin: float = 0.25
    prompt: str = DEFAULT_PROMPT  # the text, or a name in PROMPTS ("ras": RAS's prompt), resolved to its text
    # what the model sees: "crops" (face crops, affcache's default) or "frames" (the whole frame: posture,
    # gestures, scene, as RAS feeds Qwen), resized so its longer side is `frame_size` (sides multiples of 32)
    input: str = "crops"
    frame_size: int = 448
    describe: bool = False
    max_new_tokens: int = 48
    batch_size: int = field(default=4, metadata=SPEED)  # speed only: not in the fingerprint

    def __post_init__(self) -> None:
        if self.n_frames < 2 or self.n_frames % 2:
            raise ValueError("n_frames must be even and >= 2 (Qwen3-VL merges frame pairs)")
        if self.crop_size % 32:
            raise ValueError("crop_size must be a multiple of 32")
        if self.segment_s <= 0 or self.hop_s <= 0 or self.batch_size < 1:
            raise ValueError("segment_s, hop_s and batch_size must be positive")
        if self.input not in INPUTS:
            raise ValueError(f"input must be one of {INPUTS}, got {self.input!r}")
        if self.frame_size % 32 or self.frame_size < 32:
            raise ValueError("frame_size must be a positive multiple of 32")
        if self.prompt in PROMPTS:  # the fingerprint carries the text itself
            object.__setattr__(self, "prompt", PROMPTS[self.prompt])


@dataclass
class Qwen3vlBundle:
    processor: Any
    model: Any
    ref: str

    @property
    def dim(self) -> int:
        return int(self.model.config.text_config.hidden_size)

    @property
    def video_token_id(self) -> int:
        return int(self.model.config.video_token_id)


def load_qwen3vl(ref: str | Path = QWEN3VL_HUB_ID, device: str = "cpu", dtype: str | None = None) -> Qwen3vlBundle:
    """Processor and model from a hub id or local folder (real or tiny alike); bf16 on CUDA by default."""
    import torch
    from transformers import AutoProcessor, Qwen3VLForConditionalGeneration

    ref = str(ref)
    processor = AutoProcessor.from_pretrained(ref)
    processor.tokenizer.padding_side = "left"  # generation appends at the right
    if dtype is None:
        dtype = "bfloat16" if str(device).startswith("cuda") else "float32"
    model = Qwen3VLForConditionalGeneration.from_pretrained(ref, dtype=getattr(torch, dtype))
    model.eval().to(device)
    return Qwen3vlBundle(processor=processor, model=model, ref=ref)


def build_tiny_tokenizer() -> Any:
    """A byte-level BPE tokenizer (256 byte tokens, no merges) with Qwen's special tokens, built in code."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {c: i for i, c in enumerate(pre_tokenizers.ByteLevel.alphabet())}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens(list(SPECIAL_TOKENS))
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>")


def build_tiny_qwen3vl(folder: Path, seed: int = 0) -> Path:
    """Save a 2-layer random Qwen3VLForConditionalGeneration and a matching Qwen3VLProcessor to `folder`."""
    import torch
    from transformers import (
        Qwen2VLImageProcessor, Qwen3VLConfig, Qwen3VLForConditionalGeneration, Qwen3VLProcessor, Qwen3VLVideoProcessor,
    )

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tiny_tokenizer()
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS}
    processor = Qwen3VLProcessor(
        image_processor=Qwen2VLImageProcessor(patch_size=16, merge_size=2, temporal_patch_size=2),
        tokenizer=tokenizer,
        video_processor=Qwen3VLVideoProcessor(
            patch_size=16, merge_size=2, temporal_patch_size=2,
            size={"shortest_edge": 32 * 32, "longest_edge": 16 * 256 * 256},
        ),
        chat_template=TINY_CHAT_TEMPLATE,
    )
    torch.manual_seed(seed)
    config = Qwen3VLConfig(
        text_config=dict(
            vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=2, head_dim=16, max_position_embeddings=4096,
            rope_parameters={
                "rope_type": "default", "rope_theta": 5e5, "mrope_section": [2, 3, 3], "mrope_interleaved": True,
            },
        ),
        vision_config=dict(
            depth=2, hidden_size=64, intermediate_size=128, num_heads=4, patch_size=16, spatial_merge_size=2,
            temporal_patch_size=2, out_hidden_size=64, deepstack_visual_indexes=[0], num_position_embeddings=256,
        ),
        image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"],
    )
    model = Qwen3VLForConditionalGeneration(config)
    model.generation_config.eos_token_id = ids["<|im_end|>"]
    model.generation_config.pad_token_id = ids["<|endoftext|>"]
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


# ---- segments -----------------------------------------------------------------------------------
def segment_plan(n_frames: int, fps: float, config: Qwen3vlConfig) -> tuple[np.ndarray, np.ndarray]:
    """(times (N, 2) seconds, frame indices (N, n_frames)) of the segments of a track of n_frames frames."""
    from cache.windows import sliding_windows

    duration = n_frames / fps
    times = sliding_windows(duration, config.segment_s, config.hop_s, config.min_segment_s)
    k = (np.arange(config.n_frames) + 0.5) / config.n_frames
    sample_t = times[:, :1] + k[None] * (times[:, 1:] - times[:, :1])
    index = np.clip(np.floor(sample_t * fps + 1e-9).astype(np.int64), 0, max(n_frames - 1, 0))
    return times, index


def letterbox(frame: np.ndarray, size: int) -> np.ndarray:
    """The whole frame scaled into a (size, size) square, padded with black."""
    import cv2

    h, w = frame.shape[:2]
    scale = size / max(h, w)
    nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
    out = np.zeros((size, size, 3), dtype=np.uint8)
    y0, x0 = (size - nh) // 2, (size - nw) // 2
    out[y0 : y0 + nh, x0 : x0 + nw] = cv2.resize(frame, (nw, nh), interpolation=cv2.INTER_AREA)
    return out


def frame_shape(height: int, width: int, size: int) -> tuple[int, int]:
    """(h, w) of a frame scaled so that its longer side is `size`, each side a multiple of 32 (>= 32)."""
    scale = size / max(height, width)
    return max(32, round(height * scale / 32) * 32), max(32, round(width * scale / 32) * 32)


def whole_frames(frames: list[np.ndarray], size: int) -> np.ndarray:
    """(len(frames), h, w, 3) whole frames resized by `frame_shape` (RAS's input: posture, gestures, scene)."""
    import cv2

    if not frames:
        return np.zeros((0, size, size, 3), np.uint8)
    h, w = frame_shape(*frames[0].shape[:2], size)
    return np.stack([cv2.resize(f, (w, h), interpolation=cv2.INTER_AREA) for f in frames])


def segment_images(frames: list[np.ndarray], boxes: np.ndarray, config: Qwen3vlConfig) -> np.ndarray:
    """What the model sees of these frames: face crops or whole frames, per `config.input`."""
    if config.input == "frames":
        return whole_frames(frames, config.frame_size)
    return crop_frames(frames, boxes, config)


def crop_frames(frames: list[np.ndarray], boxes: np.ndarray, config: Qwen3vlConfig) -> np.ndarray:
    """(len(frames), S, S, 3) face crops; frames without a box give the whole frame, letterboxed."""
    crops = crop_faces(frames, boxes, config.crop_size, margin=config.crop_margin)
    for i, box in enumerate(boxes):
        if not np.isfinite(box).all():
            crops[i] = letterbox(frames[i], config.crop_size)
    return crops


def _prompt_text(processor: Any, prompt: str) -> str:
    messages = [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": prompt}]}]
    text = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    # Qwen3-VL's processor writes "<t seconds><|vision_start|>...<|vision_end|>" per frame pair itself, in
    # place of the video token; the reference (qwen-vl-utils) replaces the template's whole
    # "<|vision_start|><|video_pad|><|vision_end|>", so drop the outer pair to match it.
    video = processor.video_token
    wrapped = f"{processor.vision_start_token}{video}{processor.vision_end_token}"
    return text.replace(wrapped, video)


def embed_segments(
    bundle: Qwen3vlBundle, clips: list[np.ndarray], durations: list[float], config: Qwen3vlConfig
) -> tuple[np.ndarray, list[str] | None]:
    """values (B, 4, D) float32 for B clips of (n_frames, S, S, 3) uint8, and descriptions if asked."""
    import torch
    from transformers.video_utils import VideoMetadata

    processor, model = bundle.processor, bundle.model
    text = _prompt_text(processor, config.prompt)
    metadata = [
        VideoMetadata(
            total_num_frames=len(c), fps=len(c) / max(d, 1e-3), frames_indices=list(range(len(c))),
            duration=d, width=c.shape[2], height=c.shape[1],
        )
        for c, d in zip(clips, durations)
    ]
    inputs = processor(
        text=[text] * len(clips), videos=[np.asarray(c) for c in clips], video_metadata=metadata,
        do_sample_frames=False, cap_pixels_per_frame=True, padding=True, return_tensors="pt",
    )
    device = next(model.parameters()).device
    inputs = inputs.to(device)
    if "pixel_values_videos" in inputs:
        inputs["pixel_values_videos"] = inputs["pixel_values_videos"].to(model.dtype)
    with torch.inference_mode():
        hidden = model.model(**inputs).last_hidden_state.float()  # (B, L, D): last layer, after the norm
    mask = inputs["attention_mask"].bool()
    visual = (inputs["input_ids"] == bundle.video_token_id) & mask
    positions = torch.arange(hidden.shape[1], device=hidden.device)[None].expand(hidden.shape[0], -1)

    def mean_over(sel: torch.Tensor) -> torch.Tensor:
        weights = sel.float().unsqueeze(-1)
        return (hidden * weights).sum(1) / weights.sum(1).clamp(min=1.0)

    def last_of(sel: torch.Tensor) -> torch.Tensor:
        last = torch.where(sel, positions, torch.full_like(positions, -1)).max(dim=1).values.clamp(min=0)
        return hidden[torch.arange(hidden.shape[0], device=hidden.device), last]

    values = torch.stack([mean_over(mask), last_of(mask), mean_over(visual), last_of(visual)], dim=1)
    if not bool(visual.any(dim=1).all()):
        raise RuntimeError("a segment produced no visual tokens")  # processor/config mismatch, not data
    descriptions = None
    if config.describe:
        with torch.inference_mode():
            generated = model.generate(**inputs, max_new_tokens=config.max_new_tokens, do_sample=False)
        new = generated[:, inputs["input_ids"].shape[1] :]
        descriptions = [s.strip() for s in processor.batch_decode(new, skip_special_tokens=True)]
    return values.cpu().numpy(), descriptions


# ---- registration --------------------------------------------------------------------------------
register_family(ModelFamily("qwen3vl", QWEN3VL_HUB_ID, lambda folder: str(build_tiny_qwen3vl(folder)), load_qwen3vl))


@dataclass
class _TrackSegments:
    """Segments of one track being filled as frames stream by (only pending segments hold crops)."""

    times: np.ndarray  # (N, 2)
    index: np.ndarray  # (N, n_frames) frame indices
    clips: dict[int, np.ndarray]  # segment -> (n_frames, S, S, 3) crops being filled
    filled: dict[int, np.ndarray]  # segment -> (n_frames,) bool
    values: np.ndarray  # (N, 4, D)
    valid: np.ndarray  # (N,)
    descriptions: list[str]
    ready: list[int]
    done: int = 0  # segments before this one are either embedded or ready


@register
class Qwen3vlExtractor(CropExtractor):
    """`qwen3vl`: per track and 4 s segment, mean/last embeddings of the multimodal and visual tokens."""

    name = "qwen3vl"
    Config = Qwen3vlConfig
    kind = "segment"
    unit = "track"
    version = "1"
    family = "qwen3vl"
    autocast = False  # loaded in bf16 on CUDA instead

    def load(self, device: str = "cpu") -> None:
        super().load(device)
        self.bundle = load_qwen3vl(self.model_ref, device=device)

    def feature_meta(self) -> FeatureMeta:
        """As every extractor's, but the input fields enter the fingerprint only when the model sees whole
        frames: stores extracted from face crops before the option existed keep their fingerprint."""
        meta = super().feature_meta()
        if self.config.input != "crops":
            return meta
        return replace(meta, config={k: v for k, v in meta.config.items() if k not in ("input", "frame_size")})

    def begin(self, video: VideoContext) -> dict[str, _TrackSegments]:
        times, index = segment_plan(video.info.n_frames, video.fps, self.config)
        dim = self.bundle.dim
        return {
            track: _TrackSegments(
                times=times, index=index, clips={}, filled={},
                values=np.zeros((len(times), len(ROWS), dim), np.float32), valid=np.zeros(len(times), bool),
                descriptions=[""] * len(times), ready=[],
            )
            for track in self.units_for(video)
        }

    def process_crops(self, state: dict[str, _TrackSegments], batch: CropBatch) -> None:
        seg = state[batch.track]
        if not len(batch.indices):
            return
        lo, hi = int(batch.indices[0]), int(batch.indices[-1])
        # Segments whose sample frames fall in this batch (segment frame indices increase with k).
        touched = np.flatnonzero((seg.index[:, -1] >= lo) & (seg.index[:, 0] <= hi))
        needed = sorted({int(i) for k in touched for i in seg.index[k] if lo <= i <= hi})
        if needed:
            pos = np.searchsorted(batch.indices, needed)
            pos = [p for p, i in zip(pos, needed) if p < len(batch.indices) and batch.indices[p] == i]
            crops = segment_images([batch.frames[p] for p in pos], batch.boxes[pos], self.config)
            by_index = {int(batch.indices[p]): crops[j] for j, p in enumerate(pos)}
            for k in touched:
                k = int(k)
                if k not in seg.clips:
                    if not len(crops):
                        continue
                    seg.clips[k] = np.zeros((self.config.n_frames, *crops.shape[1:]), np.uint8)
                    seg.filled[k] = np.zeros(self.config.n_frames, bool)
                for slot, i in enumerate(seg.index[k]):
                    if int(i) in by_index:
                        seg.clips[k][slot] = by_index[int(i)]
                        seg.filled[k][slot] = True
        # A segment is ready once the stream has passed its last sample frame.
        while seg.done < len(seg.times) and seg.index[seg.done, -1] <= hi:
            seg.ready.append(seg.done)
            seg.done += 1
        if len(seg.ready) >= self.config.batch_size:
            self._flush(seg)

    def _flush(self, seg: _TrackSegments) -> None:
        while seg.ready:
            batch = seg.ready[: self.config.batch_size]
            seg.ready = seg.ready[self.config.batch_size :]
            run = []
            for k in batch:
                filled = seg.filled.get(k)
                if filled is None or not filled.any():
                    log.debug("segment %d got no frames; left invalid", k)
                    seg.clips.pop(k, None)
                    seg.filled.pop(k, None)
                    continue
                if not filled.all():  # frames the decoder never delivered: repeat the nearest delivered one
                    have = np.flatnonzero(filled)
                    for slot in np.flatnonzero(~filled):
                        seg.clips[k][slot] = seg.clips[k][have[np.abs(have - slot).argmin()]]
                run.append(k)
            if not run:
                continue
            clips = [seg.clips.pop(k) for k in run]
            for k in run:
                seg.filled.pop(k, None)
            durations = [float(seg.times[k, 1] - seg.times[k, 0]) for k in run]
            values, descriptions = embed_segments(self.bundle, clips, durations, self.config)
            seg.values[run] = values
            seg.valid[run] = True
            for j, k in enumerate(run):
                if descriptions is not None:
                    seg.descriptions[k] = descriptions[j]

    def end(self, state: dict[str, _TrackSegments]) -> dict[str, UnitResult]:
        out: dict[str, UnitResult] = {}
        for track, seg in state.items():
            seg.ready.extend(range(seg.done, len(seg.times)))
            seg.done = len(seg.times)
            self._flush(seg)
            attrs: dict[str, Any] = {
                "row_names": list(ROWS), "segment_s": self.config.segment_s, "frames_per_segment": self.config.n_frames,
            }
            if self.config.describe:
                attrs["descriptions"] = seg.descriptions
            out[track] = UnitResult(seg.values, seg.times, seg.valid, attrs)
        return out

    def close(self) -> None:
        self.bundle = None
