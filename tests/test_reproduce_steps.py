"""`make reproduce RECIPE=… PROFILE=full` runs each paper's best rows (issue 21): RAS's audio step is the top-4
fine-tuned SER WavLM, Kookmin's steps are Table 1's rows each against its own number; the tiny profile's
stand-ins are marked in the report; `reproduce --model FEATURE=REF` reaches the extraction, and a missing
weights file is one line naming the file, the recipe key and the flag."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from recipes.reproduce import (
    ReproduceOptions, StepResult, load_reproduce, render_report, step_recipe, step_what,
)


def test_ras_full_profile_runs_the_fine_tuned_audio_step_and_tiny_a_stand_in():
    _, spec = load_reproduce("ras")
    audio = next(s for s in spec.steps if s.name == "audio")
    assert step_recipe(audio, "full") == "ras/audio-wavlm-top4.yaml"
    assert step_recipe(audio, "tiny") == "ras/audio.yaml"
    assert spec.extract.recipes("full") == ["ras/extract.yaml", "ras/extract-wavlm-top.yaml"]
    assert spec.extract.recipes("tiny") == ["ras/extract.yaml"]
    assert audio.paper.P == 0.403 and audio.export_windows
    assert step_what(audio, "full", "blockpool on wavlm_hidden") == "blockpool on wavlm_hidden"
    assert step_what(audio, "tiny", "blockpool on wavlm") == (
        "blockpool on wavlm (stand-in on profile tiny: ras/audio.yaml, not ras/audio-wavlm-top4.yaml)")


def test_kookmin_steps_are_table_rows_each_with_its_own_number():
    _, spec = load_reproduce("kookmin")
    rows = {s.name: (step_recipe(s, "full"), s.paper.P) for s in spec.steps}
    assert rows == {
        "no-guidance": ("kookmin/clip-ast-no-guidance.yaml", 0.4438),  # Table 1: CLIP frozen
        "clip-ast": ("kookmin/clip-ast.yaml", None),  # frozen with λ 0.2: no number in the paper
        "clip-ft-ast": ("kookmin/clip-ft-ast.yaml", 0.4897),  # Table 1: ours, fine-tuned, λ 0.2
    }
    frozen_guided = next(s for s in spec.steps if s.name == "clip-ast")
    assert "no number" in frozen_guided.paper.note
    ft = next(s for s in spec.steps if s.name == "clip-ft-ast")
    assert step_recipe(ft, "tiny") == "kookmin/clip-ast.yaml" and spec.submit == "clip-ft-ast"
    assert spec.extract.recipes("full") == ["kookmin/extract.yaml", "kookmin/extract-finetune.yaml"]


def test_report_rows_carry_each_steps_paper_number():
    _, spec = load_reproduce("kookmin")
    opts = ReproduceOptions(data_root=Path("d"), cache_dir="c", profile="full")
    scores = {"smoothed": {"ccc_v": 0.41, "ccc_a": 0.52, "P": 0.465}, "raw": {"P": 0.45}}
    results = [StepResult(s.name, f"kookmin-{s.name}", "crossattn", "trained", 1.0, scores, s.paper) for s in spec.steps]
    text = render_report("kookmin", spec, opts, results, 60.0, [])
    row = {line.split(" | ")[0].strip("| "): line for line in text.splitlines() if line.startswith("| ")}
    assert "| 0.465 | 0.450 | – | – | 0.444 |" in row["no-guidance"]
    assert "| 0.465 | 0.450 | – | – | – | frozen CLIP with λ 0.2: the paper gives no number" in row["clip-ast"]
    assert "| 0.465 | 0.450 | – | – | 0.490 |" in row["clip-ft-ast"]
    assert "0.536" not in row["clip-ast"] and "stand-in" in text


def _reproduce(tmp_path: Path, *args: str):
    from pipeline import app

    (tmp_path / "data").mkdir(exist_ok=True)
    return CliRunner().invoke(app, ["reproduce", "ras", "--data-root", str(tmp_path / "data"), "--out", str(tmp_path / "out"),
                                    "--device", "cpu", *args])


def test_full_profile_without_grada_weights_is_one_line_naming_key_and_flag(tmp_path):
    res = _reproduce(tmp_path, "--profile", "full")
    assert res.exit_code == 1, res.output
    line = " ".join(res.stdout.split())
    assert line.startswith("reproduce failed: grada: no weights file given and no default model for profile full")
    assert "model_refs.grada in ras/extract.yaml" in line and "reproduce --model grada=PATH" in line
    assert len(res.stdout.strip().splitlines()) == 1, res.stdout


def test_a_missing_weights_file_is_one_line_naming_file_key_and_flag(tmp_path):
    missing = tmp_path / "nowhere" / "grada_b1.safetensors"
    res = _reproduce(tmp_path, "--profile", "full", "--model", f"grada={missing}")
    assert res.exit_code == 1, res.output
    assert len(res.stdout.strip().splitlines()) == 1, res.stdout
    line = " ".join(res.stdout.split())
    assert f"{missing}: weights file of feature grada not found (given by --model grada" in line
    assert "model_refs.grada in ras/extract.yaml" in line
    res = _reproduce(tmp_path, "--profile", "full", "--model", "bogus=/x.pt")
    assert res.exit_code == 1 and "--model bogus: no extraction of recipe ras makes that feature" in " ".join(res.stdout.split())
    res = _reproduce(tmp_path, "--model", "grada")
    assert res.exit_code == 2  # not FEATURE=REF: a usage error


def test_model_flag_reaches_every_extraction(tmp_path, monkeypatch):
    """`--model grada=PATH` is model_refs.grada of each extraction the recipe runs (no extraction is run here:
    the first one is caught and the run stopped)."""
    import extract.backends

    weights = tmp_path / "grada_b1.safetensors"
    weights.write_bytes(b"not read here")
    seen = []

    class Stop(Exception):
        """Ends the reproduce run once the extraction has been reached."""

    def fake_run_extraction(run_opts):
        seen.append(run_opts)
        raise Stop

    monkeypatch.setattr(extract.backends, "run_extraction", fake_run_extraction)
    from recipes import reproduce as rep
    from rich.console import Console
    import os

    opts = ReproduceOptions(data_root=tmp_path, cache_dir=str(tmp_path / "cache"), out=tmp_path / "out", profile="full",
                            device="cpu", models={"grada": str(weights)})
    with pytest.raises(Stop):
        rep.reproduce("ras", opts, Console(file=open(os.devnull, "w")))
    assert seen[0].model_refs == {"grada": str(weights)} and seen[0].profile == "full" and "grada" in seen[0].features
