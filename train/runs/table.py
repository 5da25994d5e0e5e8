"""All runs of a runs dir in one table (`pipeline.py runs`), and the config keys two runs differ in."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

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
    cfg = json.loads(run.config.read_text(encoding="utf-8"))
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
    """Every run folder (a folder with config.json) directly under runs_dir. Numbers and dates sort
    best / newest first, names and heads alphabetically; runs without a value go last (by P: an
    unfinished run, with no smoothed P yet)."""
    if sort not in SORT_KEYS:
        raise ValueError(f"--sort must be one of {', '.join(SORT_KEYS)}, got {sort!r}")
    runs_dir = Path(runs_dir)
    if not runs_dir.is_dir():
        raise FileNotFoundError(f"no runs dir {runs_dir}")
    rows = [read_run(p) for p in sorted(runs_dir.iterdir()) if (p / "config.json").is_file()]
    if sort in ("name", "head"):
        return sorted(rows, key=lambda r: (getattr(r, sort), r.name))
    if sort == "date":
        return sorted(rows, key=lambda r: r.date, reverse=True)

    def key(r: RunRow) -> tuple[bool, float]:
        value = float(getattr(r, sort))
        return (math.isnan(value), -value if not math.isnan(value) else 0.0)

    return sorted(rows, key=key)


def flatten(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.update(flatten(value, name + "."))
        else:
            out[name] = value
    return out


def config_diff(a: Path, b: Path, runs_dir: Path) -> list[tuple[str, Any, Any]]:
    """(key, value in A, value in B) for every config key (dotted, e.g. data.window) that differs; the run
    name itself is left out. A key one run lacks shows as None."""
    configs = [flatten(json.loads(RunDir.resolve(r, runs_dir).config.read_text(encoding="utf-8"))) for r in (a, b)]
    keys = sorted(set(configs[0]) | set(configs[1]))
    return [(k, configs[0].get(k), configs[1].get(k)) for k in keys if k != "name" and configs[0].get(k) != configs[1].get(k)]
