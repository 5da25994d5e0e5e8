"""What the README says the commands do is what they do: the demo's "hidden size 64" reaches the BiGRU
(gru_hidden), and the command reference names every command."""

from __future__ import annotations

import re
from pathlib import Path
from types import SimpleNamespace

ROOT = Path(__file__).resolve().parents[1]


def test_the_demo_trains_at_hidden_size_64_as_the_readme_says(monkeypatch, tmp_path):
    import pipeline
    import train.results.evaluate as evaluate
    from cache.sample_data import GROUND_TRUTH_INDEX
    from train.fit.options import head_options

    (tmp_path / GROUND_TRUTH_INDEX).parent.mkdir(parents=True, exist_ok=True)
    (tmp_path / GROUND_TRUTH_INDEX).write_text("")
    trained = {}
    monkeypatch.setattr(pipeline, "extract", lambda **kw: None)
    monkeypatch.setattr(pipeline, "export_cmd", lambda **kw: None)
    monkeypatch.setattr(pipeline, "predict", lambda **kw: None)
    monkeypatch.setattr(pipeline, "train", lambda **kw: trained.__setitem__(kw["model"], kw))
    score = {"ccc_v": 0.5, "ccc_a": 0.5, "P": 0.5}
    monkeypatch.setattr(evaluate, "evaluate_run", lambda *a, **kw: SimpleNamespace(smoothed=score, raw=score))
    pipeline.demo(data_root=tmp_path, cache_dir=str(tmp_path / "c"), runs_dir=tmp_path / "r", profile="tiny", device="cpu", epochs=1)

    gru = head_options("gru", trained["gru"]["head"])
    assert gru["hidden"] == 64 and gru["gru_hidden"] == 64
    assert head_options("dcmmoe", trained["dcmmoe"]["head"])["hidden"] == 64
    readme = " ".join((ROOT / "README.md").read_text().split())
    assert "hidden size 64 (`--head hidden=64`, and for the gru run `--head gru_hidden=64`" in readme


def test_the_command_reference_names_every_command():
    import pipeline

    names = {c.name or c.callback.__name__ for c in pipeline.app.registered_commands}
    names |= {g.name for g in pipeline.app.registered_groups}
    section = (ROOT / "README.md").read_text().split("## Command reference", 1)[1].split("\n## ", 1)[0]
    named = set(re.findall(r"`([a-z-]+)(?: [a-z|]+)?`", section))
    assert names <= named, sorted(names - named)
