"""docs/CLI.md is the Typer app's generated reference, and is current (regenerate with `make docs`)."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_cli_reference_is_current(tmp_path):
    out = tmp_path / "CLI.md"
    subprocess.run(
        [sys.executable, "-m", "typer", "pipeline.py", "utils", "docs", "--name", "python pipeline.py",
         "--title", "affcache command reference", "--output", str(out)],
        cwd=ROOT, check=True, capture_output=True,
    )
    current = (ROOT / "docs" / "CLI.md").read_text()
    assert out.read_text() == current, "docs/CLI.md is stale: run `make docs`"
    for command in ("sample-data", "status", "extract", "train", "evaluate", "predict", "export", "demo"):
        assert f"## `python pipeline.py {command}`" in current
