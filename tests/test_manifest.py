from pathlib import Path

import numpy as np
import pytest

from cache.manifest import (
    LabelFileError,
    load_manifest,
    parse_label_file,
    read_test_tracks,
    track_side,
    video_stem,
)
from cache.media import MediaError, probe_video
from cache.sample_data import write_av_file


def write_labels(path: Path, rows: list[str], header: str = "valence,arousal") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join([header, *rows]) + "\n")
    return path


def tiny_video(path: Path, n_frames: int, fps: float, audio: bool = True) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    frames = np.full((n_frames, 32, 32, 3), 128, dtype=np.uint8)
    sound = np.zeros(int(n_frames / fps * 16000), dtype=np.float32) if audio else None
    write_av_file(path, frames, fps, sound)
    return path


def test_header_must_be_exact(tmp_path):
    bad = write_labels(tmp_path / "a.txt", ["0.1,0.2"], header="Valence,Arousal")
    with pytest.raises(LabelFileError, match=r"a\.txt:1: header must be exactly"):
        parse_label_file(bad)


def test_invalid_frames_compared_as_floats(tmp_path):
    path = write_labels(tmp_path / "a.txt", ["-5,-5", "-5.0,-5.000", "-5.2e-18,0.3", "0.5,-0.25"])
    labels = parse_label_file(path)
    assert labels.valid.tolist() == [False, False, True, True]
    assert labels.values[2, 0] == pytest.approx(-5.2e-18)
    assert labels.values[3].tolist() == [0.5, -0.25]


@pytest.mark.parametrize(
    "row, reason",
    [("0.1,abc", "non-numeric"), ("-5,0.2", "lone -5"), ("0.3,-5", "lone -5"), ("1.5,0.1", r"outside \[-1, 1\]"),
     ("0.1", "expected 2"), ("nan,0.1", "non-finite")],
)
def test_malformed_rows_name_file_and_line(tmp_path, row, reason):
    path = write_labels(tmp_path / "bad.txt", ["0.1,0.1", "0.2,0.2", row])
    with pytest.raises(LabelFileError, match=rf"bad\.txt:4: .*{reason}"):
        parse_label_file(path)


def test_side_suffixes_stripped_only_at_the_end():
    assert video_stem("video59_right") == "video59"
    assert video_stem("video10_left") == "video10"
    assert video_stem("video7-3") == "video7-3"
    assert video_stem("video_4") == "video_4"
    assert video_stem("left_right_video") == "left_right_video"
    assert track_side("video59_right") == "right" and track_side("video59") is None


def test_fps_from_container_not_name(tmp_path):
    info = probe_video(tiny_video(tmp_path / "12-30-640x360.mp4", 50, 25))
    assert info.fps == pytest.approx(25)
    assert info.n_frames == 50
    assert info.has_audio
    assert not probe_video(tiny_video(tmp_path / "silent.avi", 30, 30, audio=False)).has_audio


def test_unreadable_video_one_line_error(tmp_path):
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    with pytest.raises(MediaError, match=r"empty\.mp4: empty file"):
        probe_video(empty)
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"\x00garbage" * 100)
    with pytest.raises(MediaError, match=r"junk\.mp4: cannot open"):
        probe_video(junk)


@pytest.fixture
def dataset(tmp_path):
    root = tmp_path / "aw2"
    vids, ann = root / "videos", root / "annotations"
    train = ann / "VA_Estimation_Challenge" / "Train_Set"
    val = ann / "VA_Estimation_Challenge" / "Validation_Set"
    tiny_video(vids / "video59.mp4", 6, 30)
    tiny_video(vids / "sub" / "video7-3.avi", 5, 25)
    tiny_video(vids / "video7.mp4", 4, 30)
    tiny_video(vids / "video_4.mp4", 4, 30)
    tiny_video(vids / "t1.mp4", 3, 30)
    write_labels(train / "video59.txt", ["0.1,0.2"] * 6)
    write_labels(train / "video59_right.txt", ["-5,-5", "0.1,0.1", "0.2,0.2", "0.3,0.3", "0.4,0.4", "0.5,0.5"])
    write_labels(train / "video7-3.txt", ["0,0"] * 5)
    write_labels(train / "video_4.txt", ["0,0"] * 4)
    write_labels(train / "broken.txt", ["0,0", "-5,0.1"])
    write_labels(train / "orphan.txt", ["0,0"])
    write_labels(val / "video7.txt", ["0.5,0.5"] * 4 + ["-5,-5"])
    (ann / "test_set_names.txt").write_text("t1\n")
    return root


def test_manifest_loads_split_and_reports_bad_files(dataset):
    m = load_manifest(dataset)
    names = {t.name: t for t in m.tracks}
    assert sorted(t.name for t in m.split("train")) == ["video59", "video59_right", "video7-3", "video_4"]
    assert names["video59"].video == names["video59_right"].video  # asymmetric pair, one video
    assert names["video59_right"].side == "right"
    assert names["video7-3"].video.name == "video7-3.avi"  # found recursively, suffix kept
    assert names["video_4"].video.name == "video_4.mp4"
    assert names["video7"].split == "val" and names["video7"].labels.valid.sum() == 4
    assert [t.name for t in m.split("test")] == ["t1"]
    assert len(m.videos("train")["video59"]) == 2
    assert len(m.errors) == 2
    assert any("broken.txt:3" in e and "lone -5" in e for e in m.errors)
    assert any(e.startswith("orphan: no video") for e in m.errors)


def test_test_tracks_from_sample_submission(tmp_path):
    (tmp_path / "sample_submission.txt").write_text(
        "image_location,valence,arousal\nb/00001.jpg,0,0\nb/00002.jpg,0,0\na/00001.jpg,0,0\n"
    )
    (tmp_path / "test_names.txt").write_text("a\nb\n")
    order, counts, path = read_test_tracks(tmp_path)
    assert order == ["b", "a"] and counts == {"b": 2, "a": 1}
    assert path.name == "sample_submission.txt"
