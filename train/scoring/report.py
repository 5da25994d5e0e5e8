"""The run's report: report.md with the CCC table, and PNG plots (matplotlib, Agg backend)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from train.config import TrainConfig
from train.data.dataset import TrackDataset
from train.scoring.evaluate import EvalResult, SplitPredictions, postprocess
from train.runs.folder import RunDir
from train.data.standardize import Standardizer

if TYPE_CHECKING:  # annotations only (matplotlib is imported where a plot is drawn)
    from matplotlib.axes import Axes

log = logging.getLogger(__name__)


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def ccc_table(results: dict[str, EvalResult]) -> str:
    """Markdown table: one raw and one smoothed row per split."""
    lines = ["| split | predictions | CCC_V | CCC_A | P | frames |", "|---|---|---:|---:|---:|---:|"]
    for split, r in results.items():
        hv, ha = r.half_windows
        for label, s in (("raw", r.raw), (f"smoothed (half-windows V {hv}, A {ha})", r.smoothed)):
            lines.append(f"| {split} | {label} | {s['ccc_v']:.4f} | {s['ccc_a']:.4f} | {s['P']:.4f} | {r.frames} |")
    return "\n".join(lines)


def track_title(name: str, result: EvalResult) -> str:
    """A validation plot's title: the track and its own CCC (smoothed)."""
    s = result.per_track.get(name)
    if not s or s["P"] != s["P"]:
        return name
    return f"{name}: CCC_V {s['ccc_v']:.3f}, CCC_A {s['ccc_a']:.3f}, P {s['P']:.3f} (smoothed)"


def per_track_table(result: EvalResult, split: str = "val") -> str:
    """Markdown table: CCC of each track on its own (smoothed as chosen on validation), worst P first."""
    fmt = lambda x: "-" if x != x else f"{x:.4f}"  # noqa: E731  (NaN: too few valid frames)
    lines = [f"| {split} track | CCC_V | CCC_A | P | frames |", "|---|---:|---:|---:|---:|"]
    order = sorted(result.per_track.items(), key=lambda kv: (kv[1]["P"] != kv[1]["P"], kv[1]["P"]))
    for name, s in order:
        lines.append(f"| {name} | {fmt(s['ccc_v'])} | {fmt(s['ccc_a'])} | {fmt(s['P'])} | {int(s['frames'])} |")
    return "\n".join(lines)


def plot_learning_curves(rows: Sequence[dict], path: Path) -> None:
    plt = _plt()
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.5))
    epochs = [r["epoch"] for r in rows]  # numbered from 1
    ax1.plot(epochs, [r["train_loss"] for r in rows], marker="o", label="train loss")
    ax1.set_xlabel("epoch")
    ax1.set_ylabel("loss")
    ax1.legend()
    for key, label in (("val_ccc_v", "CCC_V"), ("val_ccc_a", "CCC_A"), ("val_P", "P raw")):
        ax2.plot(epochs, [r.get(key, np.nan) for r in rows], marker="o", label=f"val {label}")
    ax2.set_xlabel("epoch")
    ax2.set_ylabel("CCC")
    ax2.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


GAP_COLORS = ("tab:gray", "tab:blue", "tab:orange", "tab:green")


def absent_spans(present: np.ndarray) -> list[tuple[int, int]]:
    """[start, end) frame spans where `present` is False."""
    absent = ~np.asarray(present, dtype=bool)
    edges = np.flatnonzero(np.diff(np.concatenate([[0], absent.astype(np.int8), [0]])))
    return [(int(a), int(b)) for a, b in zip(edges[::2], edges[1::2])]


def shade_gaps(ax: Axes, inputs: dict[str, np.ndarray], fps: float) -> int:
    """Shade on `ax` the spans where each modality had no input ("no face"); returns how many were shaded."""
    n = 0
    for (modality, present), color in zip(inputs.items(), GAP_COLORS):
        for i, (a, b) in enumerate(absent_spans(present)):
            ax.axvspan(a / fps, b / fps, color=color, alpha=0.2, lw=0, label=f"no {modality}" if i == 0 else None)
            n += 1
    return n


def plot_track(
    name: str, fps: float, pred: np.ndarray, true: np.ndarray | None, valid: np.ndarray | None, path: Path,
    inputs: dict[str, np.ndarray] | None = None,
) -> None:
    """Predicted (and, when given, true) valence and arousal over time. `inputs`: per modality, the frames
    that had input; spans without are shaded and labelled "no <modality>"."""
    plt = _plt()
    t = np.arange(len(pred)) / fps
    fig, axes = plt.subplots(2, 1, figsize=(10, 4.5), sharex=True)
    for ax in axes:
        shade_gaps(ax, inputs or {}, fps)
    for ax, c, label in zip(axes, (0, 1), ("valence", "arousal")):
        if true is not None:
            ax.plot(t, np.where(valid, true[:, c], np.nan), color="black", lw=1, label="true")
        ax.plot(t, pred[:, c], color="tab:red", lw=1, label="predicted")
        ax.set_ylim(-1.05, 1.05)
        ax.set_ylabel(label)
        ax.legend(loc="upper right")
    axes[1].set_xlabel("seconds")
    axes[0].set_title(name)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def _standardized(standardizer: Standardizer | None, name: str) -> str:
    stats = standardizer.stats.get(name) if standardizer is not None else None
    if stats is None:
        return "no"
    return f"yes ({stats.rows} train rows" + (f", {len(stats.constant)} constant dims unscaled)" if stats.constant else ")")


def write_report(
    run: RunDir, cfg: TrainConfig, result: EvalResult, val_ds: TrackDataset, preds: SplitPredictions
) -> None:
    rows = run.read_metrics()
    run.plots.mkdir(parents=True, exist_ok=True)
    plots = []
    if rows:
        plot_learning_curves(rows, run.plots / "learning_curves.png")
        plots.append(("learning curves", "plots/learning_curves.png"))
    longest = np.argsort(-val_ds.n_frames, kind="stable")[: cfg.n_plot_tracks]
    for ti in sorted(int(i) for i in longest):
        track = val_ds.tracks[ti]
        pred = postprocess(preds.va[ti], preds.has_feature[ti], result.half_windows, result.edges)
        rel = f"plots/val_{track.name}.png"
        inputs = preds.inputs[ti] if ti < len(preds.inputs) else None  # spans where a feature had no input: shaded
        plot_track(track_title(track.name, result), float(val_ds.fps[ti]), pred, track.labels.values, track.labels.valid,
                   run.path / rel, inputs=inputs)
        plots.append((f"validation track {track.name} (smoothed predictions)", rel))
    features = run.read_features()
    stats = Standardizer.load(run.standardization)
    best = max(rows, key=lambda r: r.get("val_P", -np.inf)) if rows else {}
    lines = [
        f"# Run {run.path.name}",
        "",
        f"Head `{cfg.model}` on features {', '.join(f'`{f}`' for f in cfg.data.features)}; "
        f"window {cfg.data.window}, stride {cfg.data.stride}; batch {cfg.batch_size}, lr {cfg.lr:g}, "
        f"weight decay {cfg.weight_decay:g}, λ_region {cfg.lambda_region:g}, seed {cfg.seed}.",
        "",
        f"Epochs run: {len(rows)}; best epoch {best.get('epoch', 0)} (raw validation P {best.get('val_P', float('nan')):.4f}).",
        "",
        "## CCC (best checkpoint; all valid frames of the split concatenated)",
        "",
        ccc_table({"val": result}),
        "",
        "Smoothing half-windows chosen on validation, V and A separately; predictions clipped to [-1, 1].",
        "",
        "## CCC per track (smoothed; worst first)",
        "",
        per_track_table(result),
        "",
        "## Features",
        "",
        "| feature | fingerprint | unit | dim | standardized | store |",
        "|---|---|---|---:|---|---|",
        *(f"| {n} | `{f['fingerprint']}` | {f['unit']} | {f['dim']} | {_standardized(stats, n)} | {f['store']} |"
          for n, f in features.items()),
        "",
        "## Plots",
        "",
        *(f"![{title}]({rel})\n" for title, rel in plots),
    ]
    run.report.write_text("\n".join(lines), encoding="utf-8")
