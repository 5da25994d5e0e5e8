"""`pipeline.py sample-data` then `pipeline.py status` prints the right counts."""

import json
import re

import numpy as np
import pytest
from typer.testing import CliRunner

from cache.manifest import load_manifest
from cache.store import FeatureMeta, FeatureStore, store_path
from pipeline import app


def test_sample_data_then_status_counts(tmp_path):
    runner = CliRunner()
    data, cache = tmp_path / "sample", tmp_path / "features"
    made = runner.invoke(app, ["sample-data", "--out", str(data), "--min-seconds", "3", "--max-seconds", "4"])
    assert made.exit_code == 0, made.output

    truth = json.loads((data / "ground_truth" / "tracks.json").read_text())
    expected = {}
    for split in ("train", "val", "test"):
        names = [t for t, info in truth.items() if info["split"] == split]
        frames = valid = 0
        for name in names:
            info = truth[name]
            gt = np.load(data / "ground_truth" / f"{info['video']}.npz")
            if split == "test":
                frames += int(gt["n_frames"])
                continue
            label_file = data / "annotations/VA_Estimation_Challenge" / (
                "Train_Set" if split == "train" else "Validation_Set") / f"{name}.txt"
            rows = label_file.read_text().splitlines()[1:]
            frames += len(rows)
            valid += sum(r != "-5,-5" for r in rows)
        expected[split] = (len(names), frames, valid)
    assert expected["train"][0] == 7 and expected["val"][0] == 3 and expected["test"][0] == 2

    # one feature store with two complete train tracks and one incomplete
    manifest = load_manifest(data)
    store = FeatureStore.create_or_open(store_path(cache, "toy"), FeatureMeta("toy"))
    for track in manifest.split("train")[:2]:
        store.write(track.name, np.zeros((3, 2)), [[0, 1], [1, 2], [2, 3]])
    with pytest.raises(RuntimeError):
        with store.writer(manifest.split("train")[2].name, (2,)) as w:
            w.append(np.zeros((1, 2)), [[0, 1]])
            raise RuntimeError("crash mid-write")

    out = runner.invoke(app, ["status", "--data-root", str(data), "--cache-dir", str(cache)])
    assert out.exit_code == 0, out.output
    lines = out.output.splitlines()
    for split, (tracks, frames, valid) in expected.items():
        line = next(l for l in lines if re.search(rf"^\W*{split}\b", l))
        numbers = [int(n) for n in re.findall(r"\d+", line)]
        assert numbers == [tracks, frames, valid if split != "test" else 0, tracks], line  # every video found
    toy = next(l for l in lines if re.search(r"^\W*toy\b", l))
    assert re.findall(r"\d+/\d+", toy) == [f"2/{expected['train'][0]}", f"0/{expected['val'][0]}", f"0/{expected['test'][0]}"]
