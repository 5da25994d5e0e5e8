"""The recipes that ship in configs/ (`pipeline.py configs ls|show|cp`, as torchtune's `tune ls/cp`):
list them with their first comment line, print one resolved (every default filled in), copy one out
for editing."""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from recipes.loader import CONFIGS_DIR, ConfigError, dump_yaml, load_file, merge_layers, to_plain, validate


@dataclass
class Recipe:
    name: str  # relative to configs/ without .yaml: ras/face
    kind: str  # train | extract | reproduce | profile
    path: Path
    about: str  # the file's first comment line


def recipe_kind(data: dict[str, Any], path: Path | None = None) -> str:
    """What a recipe file configures, from its folder (profiles/) and top-level keys."""
    if path is not None and path.parent.name == "profiles":
        return "profile"
    if "steps" in data:
        return "reproduce"
    if "model" in data or "head" in data or "optim" in data:
        return "train"
    return "extract"


def list_recipes(root: Path = CONFIGS_DIR) -> list[Recipe]:
    """Every YAML recipe under configs/, sorted by name."""
    out = []
    for path in sorted(root.rglob("*.yaml")):
        text = path.read_text(encoding="utf-8")
        about = next((line.lstrip("# ").strip() for line in text.splitlines() if line.startswith("#")), "")
        data = OmegaConf.to_container(load_file(path)) or {}
        out.append(Recipe(str(path.relative_to(root).with_suffix("")), recipe_kind(dict(data), path), path, about))
    return out


def find_recipe(name: str, root: Path = CONFIGS_DIR) -> Recipe:
    """A recipe by name (ras/face, ras/face.yaml) or by path; an unknown name lists the closest ones."""
    from cache.names import unknown

    recipes = list_recipes(root)
    wanted = str(name).removesuffix(".yaml")
    for recipe in recipes:
        if recipe.name == wanted:
            return recipe
    path = Path(name)
    if path.is_file():
        data = OmegaConf.to_container(load_file(path)) or {}
        return Recipe(str(path), recipe_kind(dict(data), path), path, "")
    raise ConfigError(f"{unknown('recipe', name, [r.name for r in recipes])} (pipeline.py configs ls lists them)")


def resolved_text(recipe: Recipe) -> str:
    """The recipe as it will run, every default filled in (a training or an extraction recipe), as YAML;
    a reproduce recipe or a profile as written."""
    if recipe.kind == "train":
        from train.runs.recipe import build_train_config, resolved_recipe_yaml

        return resolved_recipe_yaml(build_train_config([recipe.path]))
    if recipe.kind == "extract":
        from recipes.extract import extract_schema

        raw = merge_layers([recipe.path])
        named = [str(n) for n in (raw.get("configs") or {}).keys()]
        plain = to_plain(validate(extract_schema(named), raw, f" ({recipe.path})"))
        return dump_yaml(json.loads(json.dumps(plain, default=str)))  # paths as text
    return recipe.path.read_text(encoding="utf-8")


def copy_recipe(recipe: Recipe, dest: Path, force: bool = False) -> Path:
    """Copy the recipe file (comments kept) to dest (a file, or a folder: dest/<file name>); an existing
    file is kept unless force."""
    dest = Path(dest)
    target = dest / recipe.path.name if dest.is_dir() else dest
    if target.exists() and not force:
        raise FileExistsError(f"{target} exists (--force replaces it)")
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(recipe.path, target)
    return target
