"""Export of an `audio_window` run (`export_windows`, `pipeline.py export --windows`): one row per window and
track, the mean over the window's rows of [256-d block embedding, VA], as a `window`-kind store whose rows
span the part of the timeline where the window is the most central one (train/data/window_audio.py); and,
for a head with blocks (`blockpool`), the store `NAME_blocks`: one row per window spanning the whole window,
its block tokens (blocks, 256 + 2) as rows `block0`..`block3` ([block embedding, block VA]): the audio
tokens of RAS's fusion sample (src_audio_and_fusion/src/fusion/data/abaw_mm_dataset.py: T_a = 4 tokens)."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from cache.store import FeatureStore, store_path
from train.data.tensors import autocast, to_tensors
from train.data.window_audio import WindowAudioDataset, central_spans
from train.results.export import export_meta, run_config_dict, open_export_split, weights_digest
from train.results.restore import load_run

log = logging.getLogger(__name__)


BLOCKS_SUFFIX = "_blocks"


@torch.no_grad()
def window_rows(model: torch.nn.Module, dataset: WindowAudioDataset, device: torch.device, ti: int,
                batch_size: int = 8) -> tuple[np.ndarray, np.ndarray | None]:
    """Per window of track `ti`: (W, H + 2) float32 the mean over its rows of [hidden, VA], and (W, blocks,
    H + 2) its block tokens [block embedding, block VA] (None when the head has no blocks)."""
    model.eval()
    out, blocks = [], []
    ids = dataset.track_windows[ti]
    for i in range(0, len(ids), batch_size):
        batch = dataset.collate(ids[i : i + batch_size])
        tb = to_tensors(batch, device)
        with autocast(device):
            res = model(tb.features, tb.masks, tb.pad)
        rows = torch.cat([res.hidden.float(), res.va.float()], dim=-1)
        w = tb.pad.float().unsqueeze(-1)
        out.append(((rows * w).sum(1) / w.sum(1).clamp_min(1.0)).cpu().numpy())
        if "block_hidden" in res.extras and "block_va" in res.extras:
            blocks.append(torch.cat([res.extras["block_hidden"].float(), res.extras["block_va"].float()], -1).cpu().numpy())
    means = np.concatenate(out) if out else np.zeros((0, 0), np.float32)
    return means, (np.concatenate(blocks) if blocks and len(blocks) == len(out) else None)


def export_windows(
    run: str | Path, name: str, splits: Sequence[str] = ("train", "val", "test"), runs_dir: Path = Path("artifacts/runs"),
    cache_dir: Path | None = None, data_root: Path | None = None, device: str = "auto", force: bool = False,
    on_mismatch: str = "refuse", checkpoint: str = "best",
) -> dict[str, int]:
    """Write an `audio_window` run's per-window [embedding, VA] as a window-kind store `name` (one group
    per track); returns groups written per split."""
    loaded = load_run(run, Path(runs_dir), device, data_root=data_root, cache_dir=cache_dir, checkpoint=checkpoint)
    if loaded.cfg.data.level != "audio_window":
        raise ValueError(f"run {loaded.run.path.name} is not an audio-window run (level {loaded.cfg.data.level!r})")
    if name in loaded.cfg.data.features:
        raise ValueError(f"export name '{name}' is one of the run's own input features: choose another")
    ckpt_used = "best" if checkpoint == "best" and loaded.run.best.is_file() else "last"
    hidden = getattr(loaded.model.cfg, "hidden", None)
    meta = export_meta(name, loaded.run.path.name, run_config_dict(loaded.run),
                       {n: s.fingerprint for n, s in loaded.sources.items()}, weights_digest(loaded.model), ckpt_used, hidden)
    meta = dataclasses.replace(meta, kind="window", config={**meta.config, "rows": "one per audio window (mean over its rows)"})
    store = FeatureStore.create_or_open(store_path(loaded.cfg.data.cache_dir, name), meta, on_mismatch=on_mismatch)
    n_blocks = int(getattr(loaded.model.cfg, "blocks", 0) or 0)
    block_store = None
    if n_blocks:  # RAS's fusion sample: one window, its block tokens (cache/audio_windows.py's blocks)
        block_meta = dataclasses.replace(meta, name=name + BLOCKS_SUFFIX, config={
            **meta.config, "rows": "one per audio window: its block tokens [block embedding, block VA]",
            "row_names": [f"block{i}" for i in range(n_blocks)], "tokens": n_blocks})
        block_store = FeatureStore.create_or_open(store_path(loaded.cfg.data.cache_dir, name + BLOCKS_SUFFIX),
                                                  block_meta, on_mismatch=on_mismatch)
    written: dict[str, int] = {}
    for split in splits:
        dataset = open_export_split(loaded, split, name)
        if dataset is None:
            continue
        written[split] = 0
        try:
            for ti, track in enumerate(dataset.tracks):
                done = store.is_complete(track.name) and (block_store is None or block_store.is_complete(track.name))
                if not dataset.track_windows[ti] or (done and not force):
                    continue
                spans = dataset.window_spans(ti)
                rows, blocks = window_rows(loaded.model, dataset, loaded.device, ti, loaded.cfg.batch_size)
                if block_store is not None and blocks is not None:  # rows span the whole window, as RAS's sample
                    block_store.write(track.name, blocks, spans, np.ones(len(blocks), bool), attrs={
                        "fps": float(dataset.fps[ti]), "split": split, "run": loaded.run.path.name,
                        "row_names": [f"block{i}" for i in range(blocks.shape[1])]}, dtype="auto")
                store.write(track.name, rows, central_spans(spans), np.ones(len(rows), bool), attrs={
                    "fps": float(dataset.fps[ti]), "split": split, "run": loaded.run.path.name,
                    "window_times": spans.tolist(),
                }, dtype="auto")  # float16 unless a column would lose precision (few windows: small spreads)
                written[split] += 1
        finally:
            dataset.close()
        log.info("export %s, %s: %d windowed tracks written", name, split, written[split])
    return written
