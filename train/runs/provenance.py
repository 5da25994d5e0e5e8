"""What a run was made with: the resolved recipe (config.yaml, the grouped form of the TrainConfig) and
provenance.json (git commit and whether the tree was dirty, package versions, the command line)."""

from __future__ import annotations

import json
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

from recipes.loader import dump_yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
# distribution names of the packages whose versions change results
PACKAGES = {"torch": "torch", "transformers": "transformers", "open_clip": "open_clip_torch", "zarr": "zarr",
            "numpy": "numpy", "omegaconf": "omegaconf"}


def git_state(root: Path = REPO_ROOT) -> dict[str, Any]:
    """{'commit': sha or None, 'dirty': bool or None}; tracked files only count for dirty."""
    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return done.stdout.strip() if done.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    status = git("status", "--porcelain", "--untracked-files=no") if commit else None
    return {"commit": commit, "dirty": None if status is None else bool(status)}


def package_versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for name, dist in PACKAGES.items():
        try:
            out[name] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def provenance() -> dict[str, Any]:
    return {"git": git_state(), "versions": package_versions(), "python": sys.version.split()[0],
            "argv": list(sys.argv)}


def write_provenance(run_path: Path, cfg: Any) -> None:
    """config.yaml (the resolved recipe) and provenance.json into a run folder."""
    from train.runs.recipe import train_config_to_recipe

    run_path = Path(run_path)
    header = "# resolved recipe of this run; `pipeline.py train --config RUN/config.yaml name=NEW` trains it again\n"
    (run_path / "config.yaml").write_text(header + dump_yaml(train_config_to_recipe(cfg)), encoding="utf-8")
    (run_path / "provenance.json").write_text(json.dumps(provenance(), indent=2, sort_keys=True) + "\n", encoding="utf-8")
