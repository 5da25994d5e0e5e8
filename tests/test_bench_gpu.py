"""`bench/gpu.sh` runs from any clone and its `--cpu-smoke` covers every figure's code path (issue 25)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HEADS = ("gru", "transformer", "crossattn", "mamba", "dcmmoe", "raav")


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PY", "PYTHONPATH")}
    return {**env, **extra}


def test_gpu_sh_finds_a_python_with_torch_without_py():
    found = subprocess.run(["bash", "bench/gpu.sh", "--which-python"], cwd=ROOT, env=_env(), capture_output=True,
                           text=True, check=True).stdout.strip()
    assert subprocess.run([found, "-c", "import torch"], capture_output=True).returncode == 0, found
    bad = subprocess.run(["bash", "bench/gpu.sh", "--cpu-smoke"], cwd=ROOT, env=_env(PY="/bin/false"),
                         capture_output=True, text=True)
    assert bad.returncode == 1 and "cannot import torch" in bad.stderr and len(bad.stderr.strip().splitlines()) == 1


def test_cpu_smoke_writes_every_figure(tmp_path):
    res = subprocess.run(["bash", "bench/gpu.sh", "--cpu-smoke", "--out", str(tmp_path)], cwd=ROOT,
                         env=_env(PY=sys.executable), capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    (report,) = tmp_path.glob("gpu-*-smoke.md")
    text = report.read_text()
    assert "error" not in text, text
    for figure in ("clip", "wavlm", "ast", "qwen3-vl", "lazy data", "views data",
                   *(f"head {h} train step" for h in HEADS), "finetune crops jpeg:95", "finetune crops lossless"):
        assert f"| {figure}" in text or f"{figure} " in text, figure
    rows = [line for line in text.splitlines() if line.startswith("| head ")]
    assert len(rows) == len(HEADS) and all("steps/s" in r for r in rows)
