"""Every run kind predicts bare videos (issue 23): the demo's fusion run over an exported feature and its
clip/wavlm/qwen3vl (tiny profile), an ensemble of the two demo runs; each CSV carries a `valid` column, the
plot shades where a modality had no input and one line per video says how many frames had a face."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
torch.set_num_threads(1)

from typer.testing import CliRunner  # noqa: E402

from cache.sample_data import SampleConfig, write_av_file, write_sample_dataset  # noqa: E402
from train.results.kinds import run_split_predictions  # noqa: E402
from train.scoring.evaluate import postprocess  # noqa: E402


def _cli(*args: str):
    from pipeline import app

    return CliRunner().invoke(app, [str(a) for a in args], env={"COLUMNS": "200"})


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> Path:
    """`make demo`'s runs in miniature: demo-gru-landmarks, its export face_gru, demo-dcmmoe on
    face_gru,clip,wavlm,qwen3vl, an ensemble demo-ens of the two, and demo-ft, a gru over WavLM's top
    layer fine-tuned from wavlm_hidden (tiny profile, 2 s videos)."""
    root = tmp_path_factory.mktemp("kinds")
    art = root / "artifacts"
    write_sample_dataset(art / "sample", SampleConfig.short(("video20", "video7", "video2"), 2.0))
    where = ["--data-root", art / "sample", "--cache-dir", art / "features"]
    for split in ("train", "val"):
        res = _cli("extract", "--split", split, "--features", "landmarks,clip,wavlm,qwen3vl,wavlm_hidden", "--profile", "tiny",
                   "--models-dir", art / "models", "--device", "cpu", *where)
        assert res.exit_code == 0, res.output
    common = ["--epochs", "1", "--window", "32", "--stride", "16", "--runs-dir", art / "runs", "--device", "cpu",
              "--head", "hidden=8", *where]
    steps = [
        ("train", "--model", "gru", "--features", "landmarks", "--name", "demo-gru-landmarks", *common),
        ("export", "demo-gru-landmarks", "--name", "face_gru", "--runs-dir", art / "runs", "--device", "cpu", *where),
        ("train", "--model", "dcmmoe", "--features", "face_gru,clip,wavlm,qwen3vl", "--name", "demo-dcmmoe", *common),
        ("train", "--model", "gru", "--features", "wavlm_hidden", "--finetune", "wavlm:1", "--profile", "tiny",
         "--finetune-opt", f"models_dir={art / 'models'}", "--name", "demo-ft", *common),
        ("ensemble", "demo-gru-landmarks", "demo-dcmmoe", "--name", "demo-ens", "--runs-dir", art / "runs", "--device", "cpu"),
    ]
    for step in steps:
        res = _cli(*step)
        assert res.exit_code == 0, res.output
    clips = root / "clips"
    clips.mkdir()
    shutil.copy(art / "sample" / "videos" / "video7.mp4", clips / "interview.mp4")
    # no face: a flat grey clip (10 fps, 20 frames) with a tone
    tone = (0.2 * np.sin(np.arange(32000) * 2 * np.pi * 220 / 16000)).astype(np.float32)
    write_av_file(clips / "nobody.mp4", np.full((20, 96, 128, 3), 120, np.uint8), 10, audio=tone)
    return root


def _predict(demo: Path, run: str, out: Path):
    art = demo / "artifacts"
    return _cli("predict", run, "--runs-dir", art / "runs", "--videos", demo / "clips", "--cache-dir", demo / "video-features",
                "--out", out, "--models-dir", art / "models", "--device", "cpu")


def _rows(path: Path) -> tuple[list[str], np.ndarray]:
    with open(path, newline="") as handle:
        rows = list(csv.reader(handle))
    return rows[0], np.array(rows[1:], dtype=np.float64)


def _split_prediction(demo: Path, run: str, track: str) -> np.ndarray:
    res = run_split_predictions(run, "val", demo / "artifacts" / "runs", "cpu")
    res.dataset.close()
    ti = [t.name for t in res.dataset.tracks].index(track)
    return postprocess(res.preds.va[ti], res.preds.has_feature[ti], res.half_windows)


@pytest.mark.parametrize("run, summary, exported", [
    ("demo-dcmmoe", "interview: 60/60 frames with a face, 60/60 with audio", True),
    ("demo-ens", "interview: 60/60 frames with a face, 60/60 with audio", True),
    ("demo-ft", "interview: 60/60 frames with audio", False),
])
def test_every_run_kind_predicts_bare_videos(demo, tmp_path, run, summary, exported):
    """The user's `predict demo-dcmmoe --videos DIR` (it failed: the tiny clip could not be loaded): the videos'
    clip/wavlm/qwen3vl are made with the run's tiny models, face_gru by the run that exported it; an ensemble
    combines its members; a fine-tuned run reads its backbone's input. The values are the run's own
    predictions for the same video found through the dataset."""
    res = _predict(demo, run, tmp_path / "out")
    assert res.exit_code == 0, res.output
    assert ("face_gru (demo-gru-landmarks)" in res.output) == exported
    assert summary in res.output
    assert "2 video(s) predicted" in res.output
    header, body = _rows(tmp_path / "out" / "interview.csv")
    assert header == ["frame", "time", "valence", "arousal", "valid"]
    expected = _split_prediction(demo, run, "video7")
    assert len(body) == len(expected) == 60 and body[:, 4].all()
    np.testing.assert_allclose(body[:, 2:4], expected, atol=2e-3)


def test_a_video_without_a_face_says_so(demo, tmp_path, monkeypatch):
    """vtest.avi in the issue: no face in any frame. The summary says 0/N, every row is valid=0, and the plot
    shades the whole clip as "no face"."""
    import train.results.predict_videos as pv

    shaded = {}
    real = pv.plot_track
    monkeypatch.setattr(pv, "plot_track", lambda name, *a, inputs=None, **k: (shaded.__setitem__(name, inputs), real(name, *a, inputs=inputs, **k)))
    res = _predict(demo, "demo-gru-landmarks", tmp_path / "out")
    assert res.exit_code == 0, res.output
    assert "nobody: 0/20 frames with a face" in res.output
    assert "interview: 60/60 frames with a face" in res.output
    _, body = _rows(tmp_path / "out" / "nobody.csv")
    assert len(body) == 20 and not body[:, 4].any()
    assert set(shaded["nobody"]) == {"face"} and not shaded["nobody"]["face"].any() and shaded["interview"]["face"].all()
    assert (tmp_path / "out" / "nobody.png").stat().st_size > 5000


def test_shaded_spans_are_the_frames_without_input():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from train.scoring.report import absent_spans, shade_gaps

    present = np.array([0, 0, 1, 1, 1, 0, 1, 0], bool)
    assert absent_spans(present) == [(0, 2), (5, 6), (7, 8)]
    assert absent_spans(np.ones(4, bool)) == []
    fig, ax = plt.subplots()
    assert shade_gaps(ax, {"face": present, "audio": np.ones(8, bool)}, fps=2.0) == 3
    assert [round(p.get_x(), 3) for p in ax.patches] == [0.0, 2.5, 3.5]
    assert ax.get_legend_handles_labels()[1] == ["no face"]
    plt.close(fig)


def test_a_tiny_models_reference_is_read_as_the_tiny_profile():
    from extract.base import is_tiny_ref

    assert is_tiny_ref("affcache-tiny-clip:tiny/open_clip/open_clip_model.pt")
    assert is_tiny_ref("tiny/wavlm") and is_tiny_ref("tiny")
    assert not is_tiny_ref("ViT-L-14-336:openai") and not is_tiny_ref("microsoft/wavlm-base-plus")


def test_predict_and_evaluate_write_a_per_frame_csv_with_validity(demo):
    """`predict RUN --split val` keeps the challenge's three columns in the submission and writes
    val.frames.csv with `valid`; `evaluate` writes the same rows with the labels beside them."""
    runs = demo / "artifacts" / "runs"
    res = _cli("predict", "demo-ens", "--split", "val", "--runs-dir", runs, "--device", "cpu")
    assert res.exit_code == 0, res.output
    folder = runs / "demo-ens" / "predictions"
    with open(folder / "val.csv", newline="") as handle:
        submission = list(csv.reader(handle))
    assert submission[0] == ["image_location", "valence", "arousal"]
    with open(folder / "val.frames.csv", newline="") as handle:
        frames = list(csv.reader(handle))
    assert frames[0] == ["track", "frame", "valence", "arousal", "valid", "true_valence", "true_arousal", "labelled"]
    assert len(frames) == len(submission) == 61  # video7: 60 frames
    assert [r[1] for r in frames[1:4]] == ["0", "1", "2"] and submission[1][0] == "video7/00001.jpg"
    np.testing.assert_allclose(np.array([r[2:4] for r in frames[1:]], float), np.array([r[1:] for r in submission[1:]], float))
    raw = run_split_predictions("demo-ens", "val", runs, "cpu")
    raw.dataset.close()
    assert [int(r[4]) for r in frames[1:]] == raw.preds.has_feature[0].astype(int).tolist()
    track = raw.dataset.tracks[0]
    np.testing.assert_allclose(np.array([r[5:7] for r in frames[1:]], float), track.labels.values, atol=1e-6)

    res = _cli("evaluate", "demo-gru-landmarks", "--runs-dir", runs, "--device", "cpu")
    assert res.exit_code == 0, res.output
    with open(runs / "demo-gru-landmarks" / "predictions" / "val.frames.csv", newline="") as handle:
        evaluated = list(csv.reader(handle))
    assert evaluated[0][4] == "valid" and len(evaluated) == 61
    np.testing.assert_allclose(np.array([r[2:4] for r in evaluated[1:]], float), _split_prediction(demo, "demo-gru-landmarks", "video7"), atol=1e-6)
