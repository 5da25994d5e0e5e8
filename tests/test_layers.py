"""The project's modules import each other without a circle, and train/'s sub-packages stay layers
(docs/DESIGN.md, "Layers"): every import statement counts, function-level and `if TYPE_CHECKING:` ones too."""

from __future__ import annotations

import ast
from collections.abc import Iterable
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("cache", "extract", "train", "recipes")
SCRIPTS = ("pipeline.py",)

# bottom to top; a module may import its own layer and the layers below it
PROJECT_LAYERS = ("cache", "extract", "train", "recipes", "pipeline")
TRAIN_LAYERS = ("train.config", "train.data", "train.heads", "train.runs", "train.scoring", "train.fit", "train.results")
# modules that import no project module, so any layer may use them
LEAVES = ("recipes.loader",)


def project_modules(root: Path, packages: Iterable[str] = PACKAGES, scripts: Iterable[str] = SCRIPTS) -> dict[str, Path]:
    """Dotted module name -> file (a package is its `__init__.py`)."""
    mods: dict[str, Path] = {}
    for pkg in packages:
        for path in sorted((root / pkg).rglob("*.py")):
            parts = path.relative_to(root).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            mods[".".join(parts)] = path
    for script in scripts:
        if (root / script).is_file():
            mods[Path(script).stem] = root / script
    return mods


def imported_modules(name: str, path: Path, mods: dict[str, Path]) -> set[str]:
    """The project modules that module `name` imports anywhere in its file. `from pkg import x` names the
    submodule `pkg.x` when x is one, else `pkg`; `import a.b.c` is an import of `a.b.c` only (Python runs
    the parents' `__init__` too, but a package's `__init__` importing its own submodules is no circle)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                target = alias.name
                while target and target not in mods:  # `import a.b.attr` is not a thing, but be safe
                    target = target.rpartition(".")[0]
                if target:
                    found.add(target)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                parts = parts[: len(parts) - node.level + 1]
                base = ".".join(parts + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                if sub in mods:
                    found.add(sub)
                elif base in mods:
                    found.add(base)
    found.discard(name)
    return found


def import_graph(root: Path, **kwargs) -> dict[str, set[str]]:
    mods = project_modules(root, **kwargs)
    return {name: imported_modules(name, path, mods) for name, path in mods.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle as [a, b, ..., a], or None."""
    state: dict[str, int] = {}  # 1 on the stack, 2 done
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        stack.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state:
            found = visit(start)
            if found:
                return found
    return None


def layer_of(module: str, layers: Iterable[str]) -> int | None:
    for i, layer in enumerate(layers):
        if module == layer or module.startswith(layer + "."):
            return i
    return None


def upward_edges(graph: dict[str, set[str]], layers: tuple[str, ...]) -> list[str]:
    out = []
    for src, targets in sorted(graph.items()):
        own = layer_of(src, layers)
        for dst in sorted(targets):
            if dst in LEAVES:
                continue
            theirs = layer_of(dst, layers)
            if own is not None and theirs is not None and theirs > own:
                out.append(f"{src} -> {dst} ({layers[own]} imports {layers[theirs]}, a layer above)")
    return out


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    return import_graph(ROOT)


def test_no_import_circle(graph):
    cycle = find_cycle(graph)
    assert cycle is None, "import circle: " + " -> ".join(cycle)


def test_train_sub_packages_are_layers(graph):
    assert upward_edges(graph, TRAIN_LAYERS) == []
    assert all(layer_of(m, TRAIN_LAYERS) is not None for m in graph if m.startswith("train.")), \
        "a train module outside the layers: " + ", ".join(m for m in graph if m.startswith("train.") and layer_of(m, TRAIN_LAYERS) is None)


def test_packages_are_layers(graph):
    assert upward_edges(graph, PROJECT_LAYERS) == []
    for leaf in LEAVES:
        assert graph[leaf] == set(), f"{leaf} should import no project module: {sorted(graph[leaf])}"


def _write(root: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")


def test_checker_finds_a_function_level_circle(tmp_path):
    _write(tmp_path, {
        "pkg/__init__.py": "from . import low, high  # a package importing its own modules: no circle\n",
        "pkg/low.py": "def f():\n    from pkg import high  # the submodule, not pkg's __init__\n    return high\n",
        "pkg/high.py": "import pkg.low\n",
        "pkg/sub/__init__.py": "",
        "pkg/sub/leaf.py": "from ..high import x  # relative: pkg.high\n",
    })
    graph = import_graph(tmp_path, packages=("pkg",), scripts=())
    assert graph["pkg"] == {"pkg.low", "pkg.high"}
    assert graph["pkg.sub.leaf"] == {"pkg.high"}
    assert find_cycle(graph) == ["pkg.high", "pkg.low", "pkg.high"]


def test_checker_passes_a_package_whose_init_imports_its_modules(tmp_path):
    _write(tmp_path, {
        "pkg/__init__.py": "from .registry import REG\nfrom . import a  # fills REG\n",
        "pkg/registry.py": "REG = {}\n",
        "pkg/a.py": "from .registry import REG\nfrom pkg.registry import REG as R2\n",
        "top.py": "from pkg import REG\n",
    })
    graph = import_graph(tmp_path, packages=("pkg",), scripts=("top.py",))
    assert graph["top"] == {"pkg"}
    assert graph["pkg.a"] == {"pkg.registry"}
    assert find_cycle(graph) is None


def test_checker_finds_an_upward_edge(tmp_path):
    _write(tmp_path, {
        "train/__init__.py": "", "train/data/__init__.py": "", "train/fit/__init__.py": "",
        "train/fit/loop.py": "", "train/data/views.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from train.fit import loop\n",
    })
    graph = import_graph(tmp_path, packages=("train",), scripts=())
    assert upward_edges(graph, TRAIN_LAYERS) == [
        "train.data.views -> train.fit.loop (train.data imports train.fit, a layer above)"]
