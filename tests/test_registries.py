"""The name registries that replaced kind checks: window levels (train/data/levels.py) and run kinds
(train/results/kinds.py)."""

from __future__ import annotations

import json

import pytest

from train.data.build import build_dataset
from train.data.dataset import TrackDataset
from train.data.levels import LEVELS, register_level
from train.data.segments import SegmentDataset
from train.data.window_audio import WindowAudioDataset
from train.results.ensemble import EnsembleRun
from train.results.kinds import open_run
from train.results.restore import TrainedRun
from train.runs.folder import ENSEMBLE_FILE, RunNotFound


def test_each_level_name_builds_its_dataset_class():
    assert LEVELS == {"frame": TrackDataset, "segment": SegmentDataset, "audio_window": WindowAudioDataset}
    with pytest.raises(ValueError, match="unknown level 'video'; known: audio_window, frame, segment"):
        build_dataset([], {}, 10, 5, level="video")


def test_a_level_name_is_registered_once():
    class Other(TrackDataset):
        level = "frame"

    with pytest.raises(ValueError, match="level 'frame' is already registered to TrackDataset"):
        register_level(Other)
    assert LEVELS["frame"] is TrackDataset


def test_a_run_folder_opens_as_the_kind_it_holds(tmp_path):
    for name in ("head", "fused"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "config.json").write_text(json.dumps({"model": "gru"}), encoding="utf-8")
    (tmp_path / "fused" / ENSEMBLE_FILE).write_text(json.dumps({"members": ["head", "head"]}), encoding="utf-8")
    trained, fused = open_run("head", tmp_path), open_run(tmp_path / "fused", tmp_path)
    assert type(trained) is TrainedRun and trained.run.path == tmp_path / "head"
    assert type(fused) is EnsembleRun and fused.run.path == tmp_path / "fused"
    with pytest.raises(RunNotFound):
        open_run("nothing", tmp_path)
