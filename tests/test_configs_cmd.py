"""`pipeline.py configs ls|show|cp`: the recipes in configs/ listed, one printed resolved, one copied out and
used as the user would (torchtune's `tune ls` / `tune cp`)."""

from __future__ import annotations

import json
from pathlib import Path

import yaml
from typer.testing import CliRunner

from pipeline import app

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def test_ls_lists_every_recipe_with_its_kind():
    res = CliRunner().invoke(app, ["configs", "ls", "--format", "json"])
    assert res.exit_code == 0, res.output
    records = {r["name"]: r for r in json.loads(res.output)}
    assert set(records) == {str(p.relative_to(CONFIGS).with_suffix("")) for p in CONFIGS.rglob("*.yaml")}
    assert records["ras/face"]["kind"] == "train" and records["ras/extract"]["kind"] == "extract"
    assert records["ras/reproduce"]["kind"] == "reproduce" and records["profiles/tiny"]["kind"] == "profile"
    assert records["ras/face"]["about"].startswith("Team RAS, face branch")
    table = CliRunner().invoke(app, ["configs", "ls"])
    assert table.exit_code == 0 and sum("│ heads/" in l for l in table.output.splitlines()) == len(list((CONFIGS / "heads").glob("*.yaml")))


def test_show_prints_the_recipe_with_its_defaults():
    res = CliRunner().invoke(app, ["configs", "show", "ras/face"])
    assert res.exit_code == 0, res.output
    body = yaml.safe_load(res.output.split("\n", 1)[1])
    written = yaml.safe_load((CONFIGS / "ras" / "face.yaml").read_text())
    assert body["model"] == written["model"] == "transformer" and body["seed"] == 42
    assert body["data"]["features"] == written["data"]["features"]
    assert body["optim"]["lr"] == written["optim"]["lr"]
    assert "plateau_patience" in body["optim"] and "weight_decay" in body["optim"]  # defaults the file leaves out
    extract = CliRunner().invoke(app, ["configs", "show", "ras/extract.yaml"])
    assert extract.exit_code == 0 and yaml.safe_load(extract.output.split("\n", 1)[1])["batch_size"] == 32
    typo = CliRunner().invoke(app, ["configs", "show", "ras/fase"])
    assert typo.exit_code == 1 and "did you mean 'ras/face'?" in typo.output


def test_cp_copies_a_recipe_that_train_then_reads(tmp_path):
    res = CliRunner().invoke(app, ["configs", "cp", "heads/gru", str(tmp_path)])
    assert res.exit_code == 0, res.output
    copy = tmp_path / "gru.yaml"
    assert copy.read_text() == (CONFIGS / "heads" / "gru.yaml").read_text()  # comments kept
    assert f"train --config {copy}" in res.output.replace("\n", "")
    again = CliRunner().invoke(app, ["configs", "cp", "heads/gru", str(copy)])
    assert again.exit_code == 1 and "--force" in again.output
    copy.write_text(copy.read_text() + "\noptim: {lr: 0.005}\n")
    shown = CliRunner().invoke(app, ["configs", "show", str(copy)])
    assert shown.exit_code == 0 and yaml.safe_load(shown.output.split("\n", 1)[1])["optim"]["lr"] == 0.005
