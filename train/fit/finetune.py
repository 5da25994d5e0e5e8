"""Training with a trainable backbone top, fed from the cache (`train --finetune clip:K|clip:all|wavlm:K`).

`clip:K` trains the last K blocks of the CLIP visual tower (+ final norm and projection) on the
`face_crops` store; `wavlm:K` trains WavLM's top K layers on the `wavlm_hidden` store. The backbone's
output replaces that feature for the head (`face_crops` -> (B, L, D_clip) image embeddings per label
frame, `wavlm_hidden` -> the last hidden state stitched at 50 Hz and aligned onto label frames). Every
other feature is read and aligned as usual. So a fine-tuned run is an ordinary run: the same loop,
checkpoints, evaluation, prediction and export; its trained backbone is also saved under
`RUN/backbone/` in the extraction loaders' format (open_clip local-dir / transformers, safetensors),
so `extract --model clip=RUN/backbone` (or `wavlm=RUN/backbone`) extracts with it.

Batches (built by `BackboneDataset.collate`, keys next to the feature's own name):
- clip: `face_crops` (M, S, S, 3) uint8 crops of the frames that go through the tower,
  `face_crops@index` (B, L) row in them of each label frame's representative (-1: no face),
  `face_crops@own` (B, L) bool: the frame's own face went through the tower (the region loss uses those).
  `--fill face_crops=S`: a frame without a face takes the nearest face of its window within S seconds.
  Subsampling (`frames_per_window` F > 0, training only): a window of L frames sends every s-th frame,
  s = ceil(L / F), from a random phase, through the tower; every other frame takes the embedding of the
  sampled frame just before it (its block of s frames), so the head still sees L frames and the loss
  covers all of them, while the tower's cost is F frames per window. Evaluation uses every frame.
- wavlm: `wavlm_hidden` (B, R, D) the cached rows of the extraction windows that overlap the label
  window, `wavlm_hidden@windows` (N, 3) [item, first row, rows] of those 4 s windows,
  `wavlm_hidden@take` (B, R) position of each row's output in the concatenated window outputs (each
  row from the window that owns it in extraction, so whole-audio outputs equal the `wavlm` store),
  `wavlm_hidden@weights` (B, L, R) overlap weights of rows on label frames (the alignment as a matrix).

Learning rates: the head at `lr` (CLI default 2e-4 with --finetune), the backbone at `backbone_lr`
(5e-6), as RAS. bf16 autocast on CUDA comes from the loop; `grad_checkpointing` recomputes the
trainable blocks in the backward pass. With `clip` fine-tuned and lambda_region > 0, the region
logits are 10·cos(tower embedding, region text prototypes of this CLIP's text tower), so the soft
prompt guidance gradient reaches the tower (the paper's setting); frozen features keep the head's
trainable projection.
"""

from __future__ import annotations

import logging
import math
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from cache.crops import INPUT_SPEC_EXTRA, CropReader
from cache.manifest import Track
from cache.media import frame_times
from cache.row_spec import crop_shape, row_shape_problem
from cache.store import FeatureStore
from train.heads.backbones import STORES, BackboneMismatch, parse_spec
from train.data.dataset import Batch, TrackDataset
from train.data.sources import FeatureSource

log = logging.getLogger(__name__)

BACKBONE_DIR = "backbone"
REGION_SCALE = 10.0
STRIDE_S = 0.02  # WavLM frame hop (320 samples at 16 kHz)


@dataclass
class FinetuneConfig:
    """What `--finetune` trains and how (stored in the run's config.yaml under `finetune`)."""

    spec: str  # clip:K | clip:all | wavlm:K
    backbone_lr: float = 5e-6
    profile: str = "full"  # full: the real reference; tiny: the local tiny model
    ref: str | None = None  # explicit model reference (wins over the profile)
    models_dir: str = "artifacts/models"
    grad_checkpointing: bool = False
    frames_per_window: int = 0  # clip: frames per window through the tower in training (0 = all)
    decode_workers: int = 2  # clip: threads decoding a batch's JPEG crops (cache/crops.py)

    def __post_init__(self) -> None:
        self.family, self.top = parse_spec(self.spec)
        if self.profile not in ("full", "tiny"):
            raise ValueError(f"profile must be full or tiny, got {self.profile!r}")
        if self.frames_per_window < 0:
            raise ValueError(f"frames_per_window must be >= 0, got {self.frames_per_window}")
        if self.decode_workers < 1:
            raise ValueError(f"decode_workers must be >= 1, got {self.decode_workers}")

    @property
    def feature(self) -> str:
        return STORES[self.family]

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> "FinetuneConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(raw) - known)
        if unknown:
            raise ValueError(f"unknown finetune option(s) {unknown}; known: {sorted(known)}")
        return cls(**dict(raw))

    def model_ref(self, checkpoint: str = "wavlm") -> str:
        """The explicit reference, else the profile's model; for wavlm, of the family `checkpoint` (the one
        the wavlm_hidden store was made with: wavlm or wavlm_ser, extract/wavlm_model.py)."""
        if self.ref:
            return self.ref
        from extract.models import resolve_model_ref

        if self.family == "wavlm":
            import extract.wavlm_model  # noqa: F401  (registers the wavlm families)
        family = {"clip": "open_clip", "wavlm": checkpoint}[self.family]
        return resolve_model_ref(family, self.profile, Path(self.models_dir))


def check_crop_groups(store: FeatureStore, spec: dict[str, Any]) -> None:
    """Every complete group of a face_crops store holds crops of the size its input_spec records: a group
    of another size is refused here in one line (not a traceback inside the tower)."""
    expected = crop_shape(spec, store.meta.config)
    for unit in store.units():
        problem = row_shape_problem(store.open_arrays(unit)["values"].shape[1:], expected)
        if problem:
            raise BackboneMismatch(f"{store.path}: group '{unit}': {problem}; `python pipeline.py verify` marks it for redoing")


def finetune_config(cfg: Any) -> FinetuneConfig | None:
    raw = getattr(cfg, "finetune", None)
    return FinetuneConfig.from_dict(raw) if raw else None


# ---- data ---------------------------------------------------------------------------------------------
class BackboneDataset(TrackDataset):
    """A TrackDataset whose backbone feature is not aligned: its batches carry the backbone's inputs
    (see the module doc). Every other feature is aligned and batched by TrackDataset itself."""

    def __init__(self, tracks: Sequence[Track], sources: Mapping[str, FeatureSource], ft: FinetuneConfig,
                 training: bool = False, **kw: Any) -> None:
        name = ft.feature
        if name not in sources:
            raise ValueError(f"--finetune {ft.spec} trains on the {name} store: add {name} to --features")
        others = {n: s for n, s in sources.items() if n != name}
        super().__init__(tracks, others, **kw)
        self.ft, self.name, self.training = ft, name, training
        self.backbone_source = sources[name]
        units = set(self.backbone_source.store.units())
        missing = [t.name for t in self.tracks if self.backbone_source.group_for(t) not in units]
        if missing:
            log.warning("feature %s: %d of %d tracks have no complete group (masked), e.g. %s",
                        name, len(missing), len(self.tracks), ", ".join(missing[:3]))
        self._backbone_units = units
        # listed as a source (so predict/export count its frames as present) but aligned to nothing
        self.sources[name] = FeatureSource(name=name, store=self.backbone_source.store, dim=0)
        self._units[name] = set()
        self.stats.nonfinite[name] = self.stats.nonfinite_rows[name] = 0
        self.stats.missing_groups[name] = len(missing)
        self._index: dict[int, Any] = {}
        self._store_cfg = dict(self.backbone_source.store.meta.config)
        self._crops = CropReader(self.backbone_source.store, workers=ft.decode_workers) if ft.family == "clip" else None

    # -- per-track row index (times and validity, small) --
    def _rows(self, ti: int) -> tuple[np.ndarray, np.ndarray, dict[str, Any]] | None:
        track = self.tracks[ti]
        group = self.backbone_source.group_for(track)
        if group not in self._backbone_units:
            return None
        with self._lock:
            hit = self._index.get(ti)
        if hit is None:
            hit = self.backbone_source.store.read_index(group)
            with self._lock:
                self._index[ti] = hit
        return hit

    def collate(self, window_ids: Sequence[int]) -> Batch:
        batch = super().collate(window_ids)
        if self.ft.family == "clip":
            self._collate_crops(batch)
        else:
            self._collate_hidden(batch)
        return batch

    def _collate_crops(self, batch: Batch) -> None:
        B, L = batch.pad.shape
        index = np.full((B, L), -1, dtype=np.int64)
        own = np.zeros((B, L), dtype=bool)
        pieces: list[np.ndarray] = []
        count = 0
        for b in range(B):
            ti, start, n = int(batch.track[b]), int(batch.start[b]), int(batch.length[b])
            rows = self._rows(ti)
            if rows is None or not len(rows[0]):
                continue
            times, valid, _ = rows
            centres = frame_times(int(self.n_frames[ti]), float(self.fps[ti]))[start : start + n].mean(axis=1)
            row = np.searchsorted(times[:, 0], centres, side="right") - 1
            inside = (row >= 0) & (row < len(times))
            row = np.where(inside, row, 0)
            inside &= times[row, 1] > centres
            has = inside & valid[row]
            local = np.arange(n)
            own_face = has.copy()
            fill = self.backbone_source.fill
            if fill is not None and has.any() and not has.all():  # --fill face_crops=S: nearest face in the window
                faced = np.flatnonzero(has)
                pos = np.searchsorted(faced, local)
                left, right = faced[np.clip(pos - 1, 0, len(faced) - 1)], faced[np.clip(pos, 0, len(faced) - 1)]
                nearest = np.where(np.abs(local - left) <= np.abs(right - local), left, right)
                near = ~has & (np.abs(nearest - local) / float(self.fps[ti]) <= fill)
                row[near] = row[nearest[near]]
                has |= near
            step, phase = 1, 0
            if self.training and self.ft.frames_per_window and n > self.ft.frames_per_window:
                step = math.ceil(n / self.ft.frames_per_window)
                phase = int(np.random.randint(step))
            rep = np.clip((local - phase) // step * step + phase, 0, n - 1)  # sampled frame at/just before
            rep = np.where(local < phase, phase if phase < n else 0, rep)
            sampled = np.zeros(n, dtype=bool)
            sampled[phase::step] = True
            send = sampled & has
            if send.any():  # only the rows sent are read (their chunks) and decoded
                group = self.backbone_source.group_for(self.tracks[ti])
                piece = self._crops.encoded(group, row[send])
                problem = row_shape_problem(piece.shape[1:], self._crops.codec.row_shape(self._crops.size))
                if problem:
                    raise BackboneMismatch(f"{self.backbone_source.store.path}: group '{group}': {problem}")
                pieces.append(piece)
                slot = np.full(n, -1, dtype=np.int64)
                slot[send] = count + np.arange(int(send.sum()))
                count += int(send.sum())
                index[b, :n] = slot[rep]
                own[b, :n] = send & own_face
        # one batched decode of every crop of the batch (JPEG: torchvision, over decode_workers threads)
        encoded = np.concatenate(pieces) if pieces else np.zeros((0, *self._crops.codec.row_shape(self._crops.size)),
                                                                 dtype=np.uint8)
        batch.features[self.name] = self._crops.decode(encoded).numpy()
        batch.features[f"{self.name}@index"] = index
        batch.features[f"{self.name}@own"] = own
        batch.masks[self.name] = index >= 0

    def _collate_hidden(self, batch: Batch) -> None:
        from extract.wavlm_model import RECEPTIVE, STRIDE, n_frames, ownership, window_plan

        B, L = batch.pad.shape
        sr = 16000
        window = int(round(float(self._store_cfg.get("window_s", 4.0)) * sr))
        hop = int(round(float(self._store_cfg.get("hop_s", 2.0)) * sr))
        items: list[tuple[np.ndarray, list[tuple[int, int]], np.ndarray, np.ndarray]] = []
        for b in range(B):
            ti, start, n = int(batch.track[b]), int(batch.start[b]), int(batch.length[b])
            rows = self._rows(ti)
            if rows is None:
                items.append((np.zeros((0, 0), np.float16), [], np.zeros(0, np.int64), np.zeros((n, 0))))
                continue
            times, valid, attrs = rows
            total = len(times)
            plans = window_plan(max(int(attrs.get("n_samples", RECEPTIVE)), RECEPTIVE), window, hop)
            owner, local = ownership(plans, total)
            targets = frame_times(int(self.n_frames[ti]), float(self.fps[ti]))[start : start + n]
            lo = int(np.searchsorted(times[:, 1], targets[0, 0], side="right"))
            hi = int(np.searchsorted(times[:, 0], targets[-1, 1], side="left"))
            if hi <= lo:
                items.append((np.zeros((0, 0), np.float16), [], np.zeros(0, np.int64), np.zeros((n, 0))))
                continue
            wins = sorted(set(owner[lo:hi].tolist()))
            firsts = [plans[w][0] // STRIDE for w in wins]
            counts = [min(n_frames(plans[w][1] - plans[w][0]), total - f) for w, f in zip(wins, firsts)]
            a, z = min(firsts), max(f + c for f, c in zip(firsts, counts))
            values = np.asarray(self.backbone_source.store.read(self.backbone_source.group_for(self.tracks[ti]),
                                                                rows=slice(a, z)).values)
            subs = [(f - a, c) for f, c in zip(firsts, counts)]
            # each row's output: from the window that owns it, at its place inside that window
            take = np.full(z - a, -1, dtype=np.int64)
            pos = {w: i for i, w in enumerate(wins)}
            g = np.arange(lo, hi)
            offsets = np.cumsum([0] + counts[:-1])
            take[g - a] = offsets[[pos[int(owner[r])] for r in g]] + local[g]
            # overlap weights of rows [lo, hi) on the label frames
            rt = times[lo:hi]
            ov = np.minimum(targets[:, None, 1], rt[None, :, 1]) - np.maximum(targets[:, None, 0], rt[None, :, 0])
            ov = np.clip(ov, 0, None) * valid[lo:hi][None, :]
            weights = np.zeros((n, z - a), dtype=np.float64)
            weights[:, lo - a : hi - a] = ov
            total_w = weights.sum(axis=1, keepdims=True)
            weights = np.divide(weights, total_w, out=np.zeros_like(weights), where=total_w > 0)
            items.append((values, subs, take, weights))
        R = max((len(v) for v, *_ in items), default=0)
        D = next((v.shape[1] for v, *_ in items if len(v)), 1)
        hidden = np.zeros((B, R, D), dtype=np.float32)
        take_all = np.full((B, R), -1, dtype=np.int64)
        weights_all = np.zeros((B, L, R), dtype=np.float32)
        windows: list[tuple[int, int, int]] = []
        base = 0
        for b, (values, subs, take, weights) in enumerate(items):
            if not len(values):
                continue
            hidden[b, : len(values)] = values
            t = take.copy()
            t[t >= 0] += base
            take_all[b, : len(t)] = t
            weights_all[b, : weights.shape[0], : weights.shape[1]] = weights
            windows.extend((b, s, c) for s, c in subs)
            base += sum(c for _, c in subs)
        batch.features[self.name] = hidden
        batch.features[f"{self.name}@windows"] = np.array(windows, dtype=np.int64).reshape(-1, 3)
        batch.features[f"{self.name}@take"] = take_all
        batch.features[f"{self.name}@weights"] = weights_all
        batch.masks[self.name] = weights_all.sum(axis=2) > 0


def build_finetune_dataset(cfg: Any, tracks: Sequence[Track], sources: Mapping[str, FeatureSource],
                           fps: Mapping[str, float] | None, training: bool, standardizer: Any = None) -> BackboneDataset:
    data = cfg.data
    return BackboneDataset(tracks, sources, finetune_config(cfg), training=training, window=data.window,
                           stride=data.stride, fps=fps, cache_mb=data.cache_mb, align_workers=data.align_workers,
                           standardizer=standardizer)


# ---- model --------------------------------------------------------------------------------------------
class FinetuneModel(nn.Module):
    """A head over cached features and a trainable backbone top that computes one of them."""

    def __init__(self, head: nn.Module, backbone: nn.Module, ft: FinetuneConfig, ref: str,
                 prototypes: np.ndarray | None = None) -> None:
        super().__init__()
        self.head, self.backbone, self.ft, self.ref = head, backbone, ft, ref
        self.name = ft.feature
        self.cfg = getattr(head, "cfg", None)
        self.visual, self.audio = getattr(head, "visual", None), getattr(head, "audio", None)
        if prototypes is not None:
            self.register_buffer("prototypes", torch.nn.functional.normalize(torch.as_tensor(prototypes), dim=-1))
        else:
            self.prototypes = None

    def backbone_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.backbone.parameters() if p.requires_grad]

    def head_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.head.parameters() if p.requires_grad]

    def forward(self, features: dict[str, Tensor], masks: dict[str, Tensor], pad: Tensor):
        name = self.name
        feats = {k: v for k, v in features.items() if not k.startswith(name)}
        if self.ft.family == "clip":
            emb, own = self._clip(features)
        else:
            emb, own = self._wavlm(features), None
        feats[name] = emb
        out = self.head(feats, masks, pad)
        if self.prototypes is not None:
            z = torch.nn.functional.normalize(emb.float(), dim=-1)
            out.region_logits = REGION_SCALE * z @ self.prototypes.to(z.dtype).T
            out.extras["region_mask"] = own
        return out

    def _clip(self, features: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        crops, index, own = features[self.name], features[f"{self.name}@index"], features[f"{self.name}@own"]
        B, L = index.shape
        dim = self.backbone.out_dim
        if len(crops):
            emb = self.backbone(crops)
            rows = torch.cat([emb, emb.new_zeros(1, dim)])  # row -1 -> zeros (masked anyway)
            out = rows[torch.where(index >= 0, index, torch.full_like(index, len(emb)))]
        else:
            out = torch.zeros(B, L, dim, device=index.device)
        return out, own.bool()

    def _wavlm(self, features: dict[str, Tensor]) -> Tensor:
        hidden, windows = features[self.name], features[f"{self.name}@windows"]
        take, weights = features[f"{self.name}@take"], features[f"{self.name}@weights"]
        B, R, _ = hidden.shape
        dim = self.backbone.out_dim
        outputs: list[Tensor | None] = [None] * len(windows)
        spans = windows.tolist()
        for length in sorted({c for _, _, c in spans}):
            members = [i for i, (_, _, c) in enumerate(spans) if c == length]
            x = torch.stack([hidden[b, s : s + c] for b, s, c in (spans[i] for i in members)])
            y = self.backbone(x)
            for j, i in enumerate(members):
                outputs[i] = y[j]
        if not spans:
            return hidden.new_zeros(B, weights.shape[1], dim)
        flat = torch.cat([o for o in outputs if o is not None] + [hidden.new_zeros(1, dim)])
        stitched = flat[torch.where(take >= 0, take, torch.full_like(take, len(flat) - 1))]  # (B, R, D)
        return torch.bmm(weights.to(stitched.dtype), stitched)

    def save_backbone(self, folder: Path) -> str:
        from train.heads.backbones import save_clip_backbone, save_wavlm_backbone

        if self.ft.family == "clip":
            return save_clip_backbone(self.backbone, self.ref, folder)
        return save_wavlm_backbone(self.backbone, self.ref, folder)


def build_finetune_model(cfg: Any, sources: Mapping[str, FeatureSource], options: dict[str, Any], has_regions: bool
                         ) -> tuple[nn.Module, bool]:
    """Backbone (checked against its store) + the head over the other features and its output; `options`
    and `has_regions`: the head's options over the other features (`train.fit.model.head_options`)."""
    from train.heads.backbones import check_crops_spec, load_clip_backbone, load_wavlm_backbone
    from train.heads import build_head

    ft = finetune_config(cfg)
    name = ft.feature
    if name not in sources:
        raise ValueError(f"--finetune {ft.spec} trains on the {name} store: add {name} to --features")
    store = sources[name].store
    ref = ft.model_ref(str(store.meta.config.get("checkpoint", "wavlm")))
    prototypes = None
    if ft.family == "clip":
        bb = load_clip_backbone(ref, ft.top, ft.grad_checkpointing)
        try:
            _, spec = store.get_extra(INPUT_SPEC_EXTRA)
        except KeyError:
            raise BackboneMismatch(f"{store.path} records no input_spec: not a face_crops store") from None
        check_crops_spec(spec, bb.spec, str(store.path))
        check_crop_groups(store, spec)
        module, out_dim = bb.tower, bb.tower.out_dim
        if cfg.lambda_region > 0:
            prototypes = bb.prototypes
    else:
        stored = int(store.meta.config.get("top_layers", 0))
        bb = load_wavlm_backbone(ref, ft.top, stored, ft.grad_checkpointing)
        if store.meta.weights_digest and bb.digest != store.meta.weights_digest:
            raise BackboneMismatch(
                f"{store.path} was made by {store.meta.model_ref} (weights {store.meta.weights_digest}), but the "
                f"backbone is {ref} (weights {bb.digest}): the cached layers must come from the same model"
            )
        module, out_dim = bb.top, bb.top.out_dim
    dims = {n: s.dim for n, s in sources.items()}
    dims[name] = out_dim
    head = build_head(cfg.model, dims, options)
    model = FinetuneModel(head, module, ft, ref, prototypes)
    return model, has_regions or prototypes is not None


def parameter_groups(model: nn.Module, cfg: Any) -> list[dict[str, Any]] | Any:
    """AdamW groups: the head at cfg.lr, the backbone at its own lr; plain parameters otherwise."""
    if not isinstance(model, FinetuneModel):  # a head may train a backbone of its own (blockpool's wavlm_top)
        return model.parameter_groups(cfg.lr) if hasattr(model, "parameter_groups") else model.parameters()
    groups = [{"params": model.head_parameters(), "lr": cfg.lr, "name": "head"},
              {"params": model.backbone_parameters(), "lr": model.ft.backbone_lr, "name": "backbone"}]
    return [g for g in groups if g["params"]]


def backbone_feature(model: nn.Module) -> str | None:
    """The feature a fine-tuned model computes itself (never standardized: its store holds the backbone's
    input, and the backbone's output is what the head sees); None for other models."""
    return model.name if isinstance(model, FinetuneModel) else getattr(model, "raw_feature", None)


def save_backbone(model: nn.Module, run_path: Path) -> str | None:
    """Write a fine-tuned run's backbone to RUN/backbone (nothing for other runs)."""
    if not isinstance(model, FinetuneModel):
        return None
    folder = Path(run_path) / BACKBONE_DIR
    ref = model.save_backbone(folder)
    log.info("trained backbone saved to %s (extract with --model %s)", folder,
             shlex.quote(f"{'clip' if model.ft.family == 'clip' else 'wavlm'}={folder}"))
    return ref


__all__ = ["BackboneDataset", "FinetuneConfig", "FinetuneModel", "backbone_feature", "build_finetune_dataset",
           "build_finetune_model", "parameter_groups", "parse_spec", "save_backbone"]
