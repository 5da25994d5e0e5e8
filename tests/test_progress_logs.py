"""Long jobs written to a log file or a pipe (Slurm, nohup, CI): `extract` prints one line per video as it
finishes, `train` a line every N steps while the epoch runs, and MediaPipe/absl C++ log lines stay out of
stderr unless --verbose."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import torch

from cache.sample_data import SampleConfig, write_sample_dataset
from cache.native_logs import is_noise
from train.data.synthetic import SynthConfig, default_tracks, make_synthetic

ROOT = Path(__file__).resolve().parents[1]
torch.set_num_threads(1)


def _env(tmp_path: Path) -> dict[str, str]:
    env = dict(os.environ, YOLO_OFFLINE="1", YOLO_CONFIG_DIR=str(tmp_path / "yolo"), OMP_NUM_THREADS="1", COLUMNS="200")
    for key in ("GLOG_minloglevel", "TF_CPP_MIN_LOG_LEVEL", "ABSL_MIN_LOG_LEVEL"):
        env.pop(key, None)
    return env


def test_train_to_a_pipe_prints_step_lines_during_the_epoch(tmp_path):
    tracks = default_tracks(n_train=3, n_val=1, n_test=0, frames=(400, 500), seed=3)
    make_synthetic(tmp_path / "data", tmp_path / "cache", SynthConfig(tracks=tracks))
    runs = tmp_path / "runs"
    cmd = [
        sys.executable, "pipeline.py", "train", "--model", "gru", "--features", "clip", "--epochs", "2",
        "--max-steps", "12", "--batch-size", "2", "--window", "32", "--stride", "32", "--log-every", "3",
        "--head", "hidden=8", "--data-root", str(tmp_path / "data"), "--cache-dir", str(tmp_path / "cache"),
        "--runs-dir", str(runs), "--name", "piped", "--device", "cpu",
    ]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=_env(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines, epochs_done_at_first_step = [], None
    for line in proc.stdout:
        lines.append(line.rstrip("\n"))
        if epochs_done_at_first_step is None and " step " in line:
            metrics = runs / "piped" / "metrics.jsonl"
            epochs_done_at_first_step = len(metrics.read_text().splitlines()) if metrics.exists() else 0
    stderr = proc.stderr.read()
    assert proc.wait(timeout=300) == 0, stderr
    steps = [l for l in lines if l.startswith("epoch ") and " step " in l]
    # steps 3, 6, 9 of each epoch (the 12th is the epoch summary's)
    assert [l.split()[3] for l in steps] == ["3/12", "6/12", "9/12"] * 2, lines
    assert all("loss " in l and "steps/s" in l and "ETA " in l for l in steps)
    assert epochs_done_at_first_step == 0  # the line came while the first epoch ran, not at exit
    summaries = [l for l in lines if l.startswith("epoch ") and "val CCC_V" in l]
    assert len(summaries) == 2
    assert lines.index(steps[2]) < lines.index(summaries[0]) < lines.index(steps[3])
    assert not any("━" in l for l in lines)  # no progress bar drawn into the log
    rows = [json.loads(l) for l in (runs / "piped" / "metrics.jsonl").read_text().splitlines()]
    assert [r["steps"] for r in rows] == [12, 12]


def test_extract_to_a_file_prints_a_line_per_video_and_no_cxx_logs(tmp_path):
    write_sample_dataset(tmp_path / "data", SampleConfig.short(("video20", "video2", "118-30-640x480"), 1.0))
    broken = next((tmp_path / "data" / "videos").rglob("118-30-640x480.mp4"))
    broken.write_bytes(b"not a video")
    cmd = [
        sys.executable, "pipeline.py", "extract", "--split", "train", "--features", "mouth",
        "--data-root", str(tmp_path / "data"), "--cache-dir", str(tmp_path / "cache"), "--profile", "tiny",
        "--models-dir", str(tmp_path / "models"), "--device", "cpu",
    ]
    with open(tmp_path / "log.txt", "w") as log, open(tmp_path / "err.txt", "w") as err:
        rc = subprocess.run(cmd, cwd=ROOT, env=_env(tmp_path), stdout=log, stderr=err, timeout=300).returncode
    out, err = (tmp_path / "log.txt").read_text(), (tmp_path / "err.txt").read_text()
    assert rc == 1, out + err  # one video failed
    per_video = [l for l in out.splitlines() if l.startswith("extract train [")]
    assert len(per_video) == 3, out
    assert per_video[0].startswith("extract train [1/3] 118-30-640x480: failed: ")
    assert per_video[1].startswith("extract train [2/3] video2: done, 25 frames at 25 fps in ")
    assert "frames/s); faces, mouth" in per_video[1]
    assert per_video[2].startswith("extract train [3/3] video20: done, 30 frames at 30 fps")
    assert "━" not in out
    assert not [l for l in err.splitlines() if is_noise(l.encode())], err
    assert "W0000" not in err and "TensorFlow Lite" not in err

    # again: the done ones skipped, one line each; --verbose lets the C++ lines through
    out = subprocess.run(cmd, cwd=ROOT, env=_env(tmp_path), capture_output=True, text=True, timeout=300).stdout
    assert "] video20: skipped (every feature already complete)" in out and "] 118-30-640x480: failed" in out
    verbose = subprocess.run([*cmd[:2], "--verbose", *cmd[2:], "--force"], cwd=ROOT, env=_env(tmp_path),
                             capture_output=True, text=True, timeout=300)
    assert any(is_noise(l.encode()) for l in verbose.stderr.splitlines()), verbose.stderr[-2000:]


def test_noise_filter_keeps_errors_and_python_lines():
    assert is_noise(b"W0000 00:00:1796002839.159519    7288 inference_feedback_manager.cc:114] Feedback manager")
    assert is_noise(b"I1130 01:02:03.000001   12 gl_context.cc:357] GL version")
    assert is_noise(b"INFO: Created TensorFlow Lite XNNPACK delegate for CPU.")
    assert not is_noise(b"E0000 00:00:1796002839.1 7288 calculator_graph.cc:1] graph failed")
    assert not is_noise(b"ERROR    video20: no decodable frames")
    assert not is_noise(b"Traceback (most recent call last):")


def test_train_lines_also_come_every_m_seconds(monkeypatch):
    import io

    from rich.console import Console

    import train.fit.progress as progress

    clock = iter([0.0, 1.0, 2.0, 70.0, 71.0, 140.0, 141.0])
    monkeypatch.setattr(progress.time, "perf_counter", lambda: next(clock))
    out = io.StringIO()
    console = Console(file=out, width=200)
    assert not console.is_terminal
    settings = progress.ProgressSettings(every_steps=1000, every_seconds=60)
    with progress.EpochProgress(console, 0, 3, 10, settings) as bar:
        for step in range(6):
            bar.step(0.5 - step / 100)
    lines = out.getvalue().splitlines()
    # steps at t=1, 2, 70, 71, 140, 141: lines when 60 s have passed since the last one
    assert [l.split()[3] for l in lines] == ["3/10", "5/10"]
    assert lines[0] == "epoch 1/3  step 3/10  loss 0.4800  0.04 steps/s  ETA 2:43"
