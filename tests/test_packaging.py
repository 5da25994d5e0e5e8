"""`pip install .` gives the packages with their dependencies declared and an `affcache` console command that
is `python pipeline.py` (checked on the built wheel: metadata, entry point, and the command itself)."""

from __future__ import annotations

import email
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SOURCES = ("pyproject.toml", "README.md", "pipeline.py", "cache", "extract", "train", "recipes")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("pkg")
    src = tmp / "src"
    src.mkdir()
    for name in SOURCES:  # build from a copy: setuptools writes build/ and *.egg-info next to the sources
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, src / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(ROOT / name, src / name)
    out = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", str(src), "-w", str(tmp / "dist")],
        capture_output=True, text=True, timeout=300,
    )
    assert out.returncode == 0, out.stderr
    (whl,) = (tmp / "dist").glob("affcache-*.whl")
    return whl


def _requirement_names(lines: list[str]) -> set[str]:
    import re

    return {re.split(r"[<>=!~;\[ ]", line, maxsplit=1)[0].lower().replace("_", "-") for line in lines}


def test_wheel_declares_the_dependencies_and_the_console_command(wheel):
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
        meta = email.message_from_string(zf.read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode())
        entry_points = zf.read(next(n for n in names if n.endswith(".dist-info/entry_points.txt"))).decode()
    requires = meta.get_all("Requires-Dist")
    plain = [r for r in requires if "extra ==" not in r]
    # every pinned requirement is declared, with a range (pins stay in requirements.txt) ...
    pinned = [l.split("#")[0].strip() for l in (ROOT / "requirements.txt").read_text().splitlines()]
    pinned = [l for l in pinned if l]
    mediapipe_deps = {"absl-py", "attrs", "flatbuffers", "sounddevice"}
    mlflow_deps = {"mlflow-skinny", "opentelemetry-proto"}  # the optional tracker, pinned in its extra
    assert _requirement_names(pinned) - {"pytest"} - mediapipe_deps - mlflow_deps <= _requirement_names(plain)
    assert _requirement_names([r for r in requires if 'extra == "mlflow"' in r]) == mlflow_deps
    assert not mlflow_deps & _requirement_names(plain)  # never required by a plain install
    assert not [r for r in plain if "==" in r], plain
    torch_req = next(r for r in plain if r.startswith("torch") and not r.startswith("torchvision"))
    assert ">=2.14" in torch_req and "<" in torch_req  # never unbounded
    assert any(r.startswith("tensorboard") and "<2.21" in r for r in plain)  # 2.21 needs protobuf>=6
    assert any(r.startswith("protobuf") and "<5" in r for r in plain)
    # ... mediapipe is not (it is installed with --no-deps); its runtime needs are an extra
    assert "mediapipe" not in _requirement_names(requires)
    extra = [r for r in requires if 'extra == "mediapipe"' in r]
    assert _requirement_names(extra) == mediapipe_deps
    # every package is in the wheel, subpackages included
    for module in ("pipeline.py", "cache/store.py", "extract/runner.py", "recipes/loader.py", "train/config.py",
                   "train/data/dataset.py", "train/heads/gru.py", "train/runs/folder.py", "train/scoring/evaluate.py",
                   "train/fit/loop.py", "train/results/kinds.py"):
        assert module in names, module
    assert "[console_scripts]" in entry_points and "affcache = pipeline:app" in entry_points


def test_affcache_command_is_python_pipeline(wheel, tmp_path):
    target = tmp_path / "site"
    out = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "--no-compile", "-q", "--target", str(target), str(wheel)],
        capture_output=True, text=True, timeout=300,
    )
    assert out.returncode == 0, out.stderr
    script = target / "bin" / "affcache"
    assert script.is_file()
    env = dict(os.environ, PYTHONPATH=str(target))
    via_entry = subprocess.run([str(script), "--help"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert via_entry.returncode == 0, via_entry.stderr
    for command in ("extract", "train", "predict", "runs", "status"):
        assert command in via_entry.stdout
    # the same commands and options as `python pipeline.py`, answered by the installed copy
    env["COLUMNS"] = "120"
    for args in (["--help"], ["train", "--help"]):
        installed = subprocess.run([str(script), *args], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
        direct = subprocess.run([sys.executable, str(ROOT / "pipeline.py"), *args], cwd=tmp_path, env=env,
                                capture_output=True, text=True, timeout=120)
        assert installed.returncode == direct.returncode == 0
        same = lambda text: " ".join(text.replace("affcache", "pipeline.py").split())  # noqa: E731
        assert same(installed.stdout) == same(direct.stdout)
    probe = subprocess.run([sys.executable, "-c", "import pipeline; print(pipeline.__file__)"], cwd=tmp_path, env=env,
                           capture_output=True, text=True, timeout=60)
    assert probe.stdout.strip().startswith(str(target))
