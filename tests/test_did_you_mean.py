"""A mistyped name (feature, run, recipe, head) is one line with "did you mean" and the names to choose
from, as the user typed it on the command line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cache.names import suggest, unknown
from pipeline import app


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    from train.data.synthetic import SynthConfig, default_tracks, make_synthetic

    base = tmp_path_factory.mktemp("didyoumean")
    make_synthetic(base / "data", base / "cache", SynthConfig(tracks=default_tracks(2, 1, 0, (40, 50))))
    return base


def test_the_helper_offers_the_closest_and_lists_the_choices():
    assert unknown("feature", "landmark", ["clip", "landmarks", "mouth"]) == (
        "unknown feature 'landmark'; did you mean 'landmarks'? features: clip, landmarks, mouth")
    assert suggest("zzz", ["gru", "dcmmoe"], "heads") == "heads: dcmmoe, gru"  # nothing close: only the list
    assert suggest("x", [], "runs in r") == "no runs in r"
    many = suggest("a", [f"run{i:02d}" for i in range(20)], "runs")
    assert many.endswith("… (20 in all)") and "run11" in many and "run12" not in many


def test_an_unknown_extractor_offers_the_closest():
    from extract.base import get_extractor

    with pytest.raises(KeyError) as err:
        get_extractor("landmark")
    assert err.value.args[0].startswith("unknown feature 'landmark'; did you mean 'landmarks'? features: ")
    assert "clip" in err.value.args[0]


def test_train_features_landmark(synth):
    res = CliRunner().invoke(app, ["train", "--model", "gru", "--features", "landmark", "--data-root", str(synth / "data"),
                                   "--cache-dir", str(synth / "cache"), "--runs-dir", str(synth / "runs")])
    assert res.exit_code == 1
    lines = [l for l in res.output.splitlines() if l.strip()]
    assert len(lines) == 1, res.output
    assert "feature 'landmark' has no store" in lines[0] and "did you mean 'landmarks'?" in lines[0]
    assert "features: " in lines[0] and "clip" in lines[0]  # the stores of the cache are among the choices


def test_evaluate_a_mistyped_run_names_the_runs(tmp_path):
    for name in ("demo-gru-landmarks", "demo-dcmmoe"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "config.json").write_text(json.dumps({"model": "gru"}))
    res = CliRunner().invoke(app, ["evaluate", "demo-gru-landmark", "--runs-dir", str(tmp_path), "--device", "cpu"])
    assert res.exit_code == 1
    assert "did you mean 'demo-gru-landmarks'?" in res.output
    assert f"runs in {tmp_path}: demo-dcmmoe, demo-gru-landmarks" in res.output.replace("\n", "")


def test_reproduce_rass_lists_the_recipes(tmp_path):
    res = CliRunner().invoke(app, ["reproduce", "rass", "--data-root", str(tmp_path / "data"), "--out", str(tmp_path / "out")])
    assert res.exit_code == 1
    assert "unknown recipe 'rass'; did you mean 'ras'? recipes: kookmin, ras" in res.output
    assert not (tmp_path / "out").exists()


def test_a_mistyped_head_is_a_usage_error_with_the_heads(tmp_path):
    res = CliRunner().invoke(app, ["train", "--model", "gur", "--features", "clip", "--runs-dir", str(tmp_path)])
    assert res.exit_code == 2
    assert "did you mean 'gru'?" in res.output and "dcmmoe" in res.output
