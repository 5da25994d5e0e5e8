"""All runs of a runs dir in one table (`pipeline.py runs`), and the config keys two runs differ in."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from train.config import TrainConfig
from train.runs.folder import RunDir

SORT_KEYS = ("date", "name", "head", "epochs", "P", "ccc_v", "ccc_a")


@dataclass
class RunRow:
    name: str
    head: str
    features: list[str]
    epochs: int
    P: float  # validation P, smoothed (eval_val.json): the one "best" of runs, sweeps and best.yaml; NaN until the run finished
    ccc_v: float  # smoothed, as P
    ccc_a: float
    smoothing: tuple[int, int] | None  # half-windows V, A (None: not chosen yet, the run did not finish)
    date: datetime  # last write of the run's metrics (or config)
    P_raw: float = math.nan  # the best epoch's raw validation P (metrics.jsonl), also for an unfinished run

    def record(self) -> dict[str, Any]:
        """The row as plain values (`runs --format tsv|json`), P labelled smoothed or raw."""
        number = lambda x: None if math.isnan(x) else round(float(x), 6)  # noqa: E731
        return {
            "name": self.name, "head": self.head, "features": ",".join(self.features), "epochs": self.epochs,
            "val_P_smoothed": number(self.P), "val_P_raw": number(self.P_raw), "ccc_v_smoothed": number(self.ccc_v),
            "ccc_a_smoothed": number(self.ccc_a),
            "smoothing": f"V {self.smoothing[0]}, A {self.smoothing[1]}" if self.smoothing else None,
            "date": self.date.strftime("%Y-%m-%d %H:%M"),
        }


def read_run(path: Path) -> RunRow:
    run = RunDir(path)
    cfg = TrainConfig.load(run.config).to_dict()
    rows = run.read_metrics()
    P = ccc_v = ccc_a = math.nan
    smoothing = None
    if run.eval_file("val").is_file():
        result = json.loads(run.eval_file("val").read_text(encoding="utf-8"))
        s = result.get("smoothed", {})
        P, ccc_v, ccc_a = s.get("P", math.nan), s.get("ccc_v", math.nan), s.get("ccc_a", math.nan)
        smoothing = tuple(result["half_windows"]) if "half_windows" in result else None
    P_raw = max((r["val_P"] for r in rows if "val_P" in r), default=math.nan)
    stamp = run.metrics if run.metrics.is_file() else run.config
    return RunRow(
        name=path.name, head=str(cfg.get("model", "?")), features=list(cfg.get("data", {}).get("features", [])),
        epochs=len(rows), P=P, ccc_v=ccc_v, ccc_a=ccc_a, smoothing=smoothing,
        date=datetime.fromtimestamp(stamp.stat().st_mtime), P_raw=P_raw,
    )


def list_runs(runs_dir: Path, sort: str = "date") -> list[RunRow]:
    """Every run folder (a folder with config.yaml or config.json) directly under runs_dir. Numbers and dates sort
    best / newest first, names and heads alphabetically; runs without a value go last (by P: an
    unfinished run, with no smoothed P yet)."""
    if sort not in SORT_KEYS:
        raise ValueError(f"--sort must be one of {', '.join(SORT_KEYS)}, got {sort!r}")
    runs_dir = Path(runs_dir)
    if not runs_dir.is_dir():
        raise FileNotFoundError(f"no runs dir {runs_dir}")
    rows = [read_run(p) for p in sorted(runs_dir.iterdir()) if RunDir(p).has_config]
    if sort in ("name", "head"):
        return sorted(rows, key=lambda r: (getattr(r, sort), r.name))
    if sort == "date":
        return sorted(rows, key=lambda r: r.date, reverse=True)

    def key(r: RunRow) -> tuple[bool, float]:
        value = float(getattr(r, sort))
        return (math.isnan(value), -value if not math.isnan(value) else 0.0)

    return sorted(rows, key=key)


def config_diff(a: Path, b: Path, runs_dir: Path) -> list[tuple[str, Any, Any]]:
    """(key, value in A, value in B) for every resolved config key (dotted, e.g. optim.lr, defaults filled)
    that differs; name, runs dir and device are left out. A key one run lacks shows as None."""
    from train.runs.recipe import WHERE_NOT_WHAT, changed_keys

    cfgs = [TrainConfig.load(RunDir.resolve(r, runs_dir).config) for r in (a, b)]
    return changed_keys(cfgs[0], cfgs[1], WHERE_NOT_WHAT)


def best_epoch(run: RunDir) -> int | str:
    """The epoch (from 1) with the best raw validation P, from metrics.jsonl (older runs' rows renumbered)."""
    rows = [r for r in run.read_metrics() if "val_P" in r]
    return max(rows, key=lambda r: r["val_P"])["epoch"] if rows else "-"


def metrics_side_by_side(a: Path, b: Path, runs_dir: Path) -> list[tuple[str, str, str]]:
    """(metric, A, B): validation P, CCC_V, CCC_A (smoothed), raw P, epochs run and best epoch."""
    def values(run: RunDir) -> dict[str, str]:
        row = read_run(run.path)
        fmt = lambda x: "-" if isinstance(x, float) and math.isnan(x) else (f"{x:.4f}" if isinstance(x, float) else str(x))  # noqa: E731
        result = json.loads(run.eval_file("val").read_text(encoding="utf-8")) if run.eval_file("val").is_file() else {}
        return {"val P (smoothed)": fmt(row.P), "val CCC_V (smoothed)": fmt(row.ccc_v), "val CCC_A (smoothed)": fmt(row.ccc_a),
                "val P (raw)": fmt(float(result.get("raw", {}).get("P", math.nan))), "epochs run": str(row.epochs),
                "best epoch": str(best_epoch(run))}

    va, vb = (values(RunDir.resolve(r, runs_dir)) for r in (a, b))
    return [(k, va[k], vb[k]) for k in va]
