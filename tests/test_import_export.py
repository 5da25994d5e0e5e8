"""Bring your own features: import npz / npy / csv / hdf5 into a feature store, export to HDF5 and back."""

import json
from pathlib import Path

import h5py
import numpy as np
import pytest
import zarr
from typer.testing import CliRunner

from cache.exporters import export_store
from cache.importers import ImportConfig, SourceError, import_features
from cache.manifest import load_manifest
from cache.sample_data import write_av_file
from cache.store import FeatureMeta, FeatureStore, FingerprintMismatch, store_path
from pipeline import app

FPS_A, FRAMES_A = 25, 20  # vidA.mp4: one track, vidA
FPS_B, FRAMES_B = 30, 24  # vidB.avi: two tracks, vidB_left and vidB_right
runner = CliRunner()


def _write_labels(path: Path, n: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("valence,arousal\n" + "".join("0.1,0.2\n" for _ in range(n)))


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("data")
    frames = lambda n: np.zeros((n, 16, 16, 3), dtype=np.uint8)  # noqa: E731
    write_av_file(root / "videos" / "vidA.mp4", frames(FRAMES_A), FPS_A)
    write_av_file(root / "videos" / "sub" / "vidB.avi", frames(FRAMES_B), FPS_B)
    sets = root / "annotations" / "VA_Estimation_Challenge"
    _write_labels(sets / "Train_Set" / "vidA.txt", FRAMES_A)
    _write_labels(sets / "Train_Set" / "vidB_left.txt", FRAMES_B)
    _write_labels(sets / "Validation_Set" / "vidB_right.txt", FRAMES_B)
    return root


@pytest.fixture(scope="module")
def manifest(data_root):
    m = load_manifest(data_root)
    assert not m.errors and len(m.tracks) == 3
    return m


def feats(n: int, dim: int = 4, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, dim)).astype(np.float32)


def frame_starts(n: int, fps: float, first: int = 0) -> np.ndarray:
    return np.arange(first, n) / fps


def run_import(source, name, cache, manifest, **kwargs):
    fmt = kwargs.pop("fmt")
    return import_features(source, name, cache, ImportConfig(fmt=fmt, **kwargs), manifest)


def test_npz_frames_use_each_videos_fps_and_missing_frames_are_invalid(tmp_path, manifest):
    src = tmp_path / "src"
    src.mkdir()
    frames_a = np.array([k for k in range(FRAMES_A) if k not in (5, 6)])
    np.savez(src / "vidA.npz", frames=frames_a, features=feats(len(frames_a)))
    np.savez(src / "vidB_left.npz", frames=np.arange(10, 20), features=feats(10, seed=1))

    report = run_import(src, "face", tmp_path / "cache", manifest, fmt="npz")
    assert report.ok and sorted(report.imported) == ["vidA", "vidB_left"]

    store = FeatureStore.open(store_path(tmp_path / "cache", "face"))
    a = store.read("vidA")
    assert len(a.values) == FRAMES_A and a.values.dtype == np.float16
    np.testing.assert_allclose(a.times[:, 0], frame_starts(FRAMES_A, FPS_A))
    np.testing.assert_allclose(a.times[:, 1], frame_starts(FRAMES_A + 1, FPS_A)[1:])
    assert np.flatnonzero(~a.valid).tolist() == [5, 6]
    np.testing.assert_array_equal(a.values[a.valid], feats(len(frames_a)).astype(np.float16))
    assert a.attrs["fps"] == FPS_A and a.attrs["missing_rows"] == 2 and a.attrs["tracks"] == ["vidA"]

    b = store.read("vidB_left")  # covers the whole video: frames 0..9 and 20..23 are invalid
    assert len(b.values) == FRAMES_B
    np.testing.assert_allclose(b.times[:, 0], frame_starts(FRAMES_B, FPS_B))
    assert np.flatnonzero(b.valid).tolist() == list(range(10, 20))

    files = store.meta.config["files"]
    assert [Path(f["path"]).name for f in files] == ["vidA.npz", "vidB_left.npz"]
    assert all(len(f["sha256"]) == 64 and f["size"] > 0 for f in files)


def test_frame_index_base_one_and_source_span(tmp_path, manifest):
    src = tmp_path / "src"
    src.mkdir()
    np.savez(src / "vidA.npz", frames=np.arange(5, 11), features=feats(6))  # frames 5..10 counted from 1
    report = run_import(src, "f", tmp_path / "cache", manifest, fmt="npz", frame_index_base=1, span="source")
    assert report.ok
    group = FeatureStore.open(store_path(tmp_path / "cache", "f")).read("vidA")
    np.testing.assert_allclose(group.times[:, 0], np.arange(4, 10) / FPS_A)  # 0-based frames 4..9
    assert group.valid.all() and group.attrs["first_frame"] == 4


def test_openface_csv_uses_success_and_confidence_and_drops_meta_columns(tmp_path, manifest):
    src = tmp_path / "src"
    src.mkdir()
    lines = ["frame, face_id, timestamp, confidence, success, AU01_r, AU12_r"]
    for frame in range(1, FRAMES_B + 1):  # OpenFace frames count from 1
        if frame == 10:
            continue  # missing frame
        success = 0 if frame == 3 else 1
        confidence = 0.3 if frame == 4 else 0.95
        lines.append(f"{frame}, 0, {(frame - 1) / 29.0:.3f}, {confidence}, {success}, {frame * 0.5}, {-frame * 0.25}")
    lines.append(f"7, 1, {6 / 29.0:.3f}, 0.6, 1, 99, 99")  # a second, less confident face on frame 7
    (src / "vidB_right.csv").write_text("\n".join(lines) + "\n")

    report = run_import(src, "openface", tmp_path / "cache", manifest, fmt="csv")
    assert report.ok, report.failed
    assert any("vidB_right.csv" in n and "1 extra row" in n for n in report.notes)
    group = FeatureStore.open(store_path(tmp_path / "cache", "openface")).read("vidB_right")
    assert group.values.shape == (FRAMES_B, 2)  # only AU01_r and AU12_r are features
    np.testing.assert_allclose(group.times[:, 0], frame_starts(FRAMES_B, FPS_B))  # real fps, not the 29 in timestamps
    assert np.flatnonzero(~group.valid).tolist() == [2, 3, 9]  # success 0, low confidence, missing (0-based)
    np.testing.assert_allclose(group.values[6], [3.5, -1.75])  # frame 7: the most confident face


def test_npy_dense_rows_and_timestamp_sidecar(tmp_path, manifest):
    src = tmp_path / "src"
    src.mkdir()
    np.save(src / "vidA.npy", feats(FRAMES_A, 3))
    np.save(src / "vidB_left.npy", feats(5, 3, seed=2))
    np.save(src / "vidB_left.times.npy", np.array([0.0, 0.5, 1.0, 1.5, 2.0]))
    np.save(src / "vidB_left.valid.npy", np.array([1, 1, 0, 1, 1], dtype=bool))

    report = run_import(src, "emb", tmp_path / "cache", manifest, fmt="npy")
    assert report.ok and sorted(report.imported) == ["vidA", "vidB_left"]
    store = FeatureStore.open(store_path(tmp_path / "cache", "emb"))
    a = store.read("vidA")
    np.testing.assert_allclose(a.times[:, 0], frame_starts(FRAMES_A, FPS_A))
    assert a.valid.all()
    b = store.read("vidB_left")
    np.testing.assert_allclose(b.times, [[0.0, 0.5], [0.5, 1.0], [1.0, 1.5], [1.5, 2.0], [2.0, 2.5]])
    assert b.valid.tolist() == [True, True, False, True, True] and b.attrs["time_base"] == "timestamps"


def test_no_fps_from_video_requires_timestamps(tmp_path, manifest):
    src = tmp_path / "src"
    src.mkdir()
    np.savez(src / "vidA.npz", frames=np.arange(4), features=feats(4))
    np.savez(src / "vidB_left.npz", frames=np.arange(4), times=np.arange(4) * 0.1, features=feats(4))
    report = run_import(src, "f", tmp_path / "cache", manifest, fmt="npz", fps_from_video=False)
    assert report.imported == ["vidB_left"]
    assert len(report.failed) == 1 and "vidA.npz" in report.failed[0] and "timestamps" in report.failed[0]
    group = FeatureStore.open(store_path(tmp_path / "cache", "f")).read("vidB_left")
    np.testing.assert_allclose(group.times[:, 0], np.arange(4) * 0.1)


def test_hdf5_datasets_and_groups(tmp_path, manifest):
    path = tmp_path / "feats.h5"
    with h5py.File(path, "w") as f:
        f["vidA"] = feats(FRAMES_A, 2)  # a dataset: row i is frame i
        g = f.create_group("vidB_left")
        g["features"], g["frames"] = feats(3, 2), np.array([0, 2, 4])
        f.create_group("val").create_group("vidB_right")["values"] = feats(FRAMES_B, 2)  # one folder level down
    report = run_import(path, "h5feat", tmp_path / "cache", manifest, fmt="hdf5")
    assert report.ok and sorted(report.imported) == ["vidA", "vidB_left", "vidB_right"]
    store = FeatureStore.open(store_path(tmp_path / "cache", "h5feat"))
    left = store.read("vidB_left")
    assert np.flatnonzero(left.valid).tolist() == [0, 2, 4]
    np.testing.assert_allclose(left.times[:, 0], frame_starts(FRAMES_B, FPS_B))
    assert store.read("vidB_right").attrs["imported_from"].endswith("feats.h5:val/vidB_right")


def test_bad_sources_are_reported_one_line_each_and_the_rest_imports(tmp_path, data_root):
    src = tmp_path / "src"
    src.mkdir()
    np.savez(src / "vidA.npz", frames=np.arange(FRAMES_A), features=feats(FRAMES_A))
    np.savez(src / "vidB_left.npz", frames=np.arange(FRAMES_B), features=feats(FRAMES_B, dim=5))  # dim changes
    np.savez(src / "vidB.npz", frames=np.arange(FRAMES_B), features=feats(FRAMES_B))  # a video with two tracks
    np.savez(src / "ghost.npz", frames=np.arange(3), features=feats(3))  # no such track
    nan_rows = feats(FRAMES_B)
    nan_rows[[1, 4]] = np.nan
    np.savez(src / "vidB_right.npz", frames=np.arange(FRAMES_B), features=nan_rows)

    cache = tmp_path / "cache"
    args = ["import-features", str(src), "--name", "face", "--format", "npz"]
    result = runner.invoke(app, [*args, "--data-root", str(data_root), "--cache-dir", str(cache)])
    assert result.exit_code == 1, result.output
    assert "imported 2, failed 3" in result.output
    failed = [line for line in result.output.splitlines() if line.strip().startswith("failed:")]
    assert len(failed) == 3
    reasons = {
        "vidB_left.npz": "dimension (5,) differs from (4,)",
        "vidB.npz": "ambiguous",
        "ghost.npz": "matches no track",
    }
    for file, reason in reasons.items():
        assert any(f"{file}:" in line and reason in line for line in failed), (file, result.output)
    assert any("vidB_right.npz" in line and "2 row(s) with NaN/inf marked invalid" in line for line in result.output.splitlines())

    store = FeatureStore.open(store_path(cache, "face"))
    assert store.units() == ["vidA", "vidB_right"]
    right = store.read("vidB_right")
    assert np.flatnonzero(~right.valid).tolist() == [1, 4] and np.isfinite(right.values).all()


def test_csv_non_numeric_and_duplicate_frames_are_reported(tmp_path, manifest):
    src = tmp_path / "src"
    src.mkdir()
    (src / "vidA.csv").write_text("frame,f1,f2\n1,0.5,0.25\n2,0.5,0.25\n")
    (src / "vidB_left.csv").write_text("frame,f1,f2\n1,0.5,0.25\n2,abc,0.25\n")
    (src / "vidB_right.csv").write_text("frame,f1,f2\n1,0.5,0.25\n1,0.5,0.25\n")
    report = run_import(src, "f", tmp_path / "cache", manifest, fmt="csv")
    assert report.imported == ["vidA"]
    assert any("vidB_left.csv: line 3, column 'f1': non-numeric value 'abc'" in f for f in report.failed)
    assert any("vidB_right.csv: frame 1 appears 2 times" in f for f in report.failed)


def test_unit_video_store_for_sources_named_by_video(tmp_path, manifest):
    src = tmp_path / "src"
    src.mkdir()
    np.savez(src / "vidB.npz", frames=np.arange(FRAMES_B), features=feats(FRAMES_B))
    np.savez(src / "vidB_left.npz", frames=np.arange(FRAMES_B), features=feats(FRAMES_B))
    report = run_import(src, "scene", tmp_path / "cache", manifest, fmt="npz", unit="video")
    assert report.imported == ["vidB"]
    assert len(report.failed) == 1 and "vidB_left.npz" in report.failed[0] and "keyed by video" in report.failed[0]
    store = FeatureStore.open(store_path(tmp_path / "cache", "scene"))
    assert store.meta.unit == "video"
    assert store.read("vidB").attrs["tracks"] == ["vidB_left", "vidB_right"]


def test_fingerprint_follows_the_source_files(tmp_path, manifest):
    src = tmp_path / "src"
    src.mkdir()
    np.savez(src / "vidA.npz", frames=np.arange(4), features=feats(4))
    first = run_import(src, "f", tmp_path / "cache", manifest, fmt="npz")
    again = run_import(src, "f", tmp_path / "cache", manifest, fmt="npz")  # same sources: same store
    assert again.fingerprint == first.fingerprint
    np.savez(src / "vidA.npz", frames=np.arange(4), features=feats(4, seed=9))
    with pytest.raises(FingerprintMismatch):
        run_import(src, "f", tmp_path / "cache", manifest, fmt="npz")
    replaced = run_import(src, "f", tmp_path / "cache", manifest, fmt="npz", replace=True)
    assert replaced.fingerprint != first.fingerprint
    assert (tmp_path / "cache" / f"f.{first.fingerprint}.zarr").is_dir()


def test_source_errors(tmp_path, manifest):
    with pytest.raises(SourceError, match="no such file"):
        run_import(tmp_path / "nothing", "f", tmp_path / "cache", manifest, fmt="npz")
    (tmp_path / "x.csv").write_text("a\n")
    with pytest.raises(SourceError, match="x.csv: not a npz file"):
        run_import(tmp_path / "x.csv", "f", tmp_path / "cache", manifest, fmt="npz")


def _synthetic_store(path: Path) -> FeatureStore:
    meta = FeatureMeta(
        "clip", kind="frame", model_ref="ViT-B-16/openai", weights_digest="abc",
        config={"size": 224, "layers": [1, 2], "norm": None, "nested": {"a": 1.5}},
    )
    store = FeatureStore.create_or_open(path, meta)
    rng = np.random.default_rng(3)
    for unit, n in (("vidA", 37), ("vidB_left", 5000), ("empty", 0)):
        bits = rng.integers(0, 2**16, size=(n, 6), dtype=np.uint16)
        bits[(bits & 0x7C00) == 0x7C00] = 0x3C00  # no inf/NaN bit patterns; subnormals stay
        values = bits.view(np.float16)
        times = np.stack([np.arange(n) / 29.97, (np.arange(n) + 1) / 29.97], axis=1)
        valid = rng.random(n) > 0.2
        attrs = {"fps": 29.97, "n_frames": n, "source": {"path": "/x.mp4", "size": 1, "mtime": 2.5}, "note": None,
                 "flag": False, "tracks": [unit], "text": "é ünïcode"}
        store.write(unit, values, times, valid, attrs)
    store.put_extra("prompts", rng.normal(size=(9, 8)).astype(np.float32), {"prompts": ["a", "b"], "model": "clip"})
    return store


def test_hdf5_export_roundtrip_is_bit_for_bit(tmp_path):
    cache = tmp_path / "cache"
    original = _synthetic_store(store_path(cache, "clip"))
    out = tmp_path / "out" / "clip.h5"
    result = runner.invoke(app, ["export-features", "clip", "--to", str(out), "--cache-dir", str(cache)])
    assert result.exit_code == 0, result.output
    assert "exported 3 unit(s) and 1 extra(s)" in result.output

    with h5py.File(out, "r") as f:  # readable without affcache
        assert sorted(f) == ["_extras", "empty", "vidA", "vidB_left"]
        assert f["vidA/values"].dtype == np.float16 and f["vidA/times"].shape == (37, 2)
        assert f.attrs["name"] == "clip" and f.attrs["fingerprint"] == original.fingerprint
        assert json.loads(f.attrs["config"])["size"] == 224 and f["vidA"].attrs["fps"] == 29.97

    args = ["import-features", str(out), "--format", "hdf5", "--name", "X", "--cache-dir", str(cache)]
    result = runner.invoke(app, [*args, "--data-root", str(tmp_path / "no-dataset-needed")])
    assert result.exit_code == 0, result.output
    assert "imported 3, failed 0" in result.output

    restored = FeatureStore.open(store_path(cache, "X"), expect_fingerprint=original.fingerprint)
    assert restored.meta == original.meta and restored.units() == original.units()
    for unit in original.units():
        a, b = original.read(unit), restored.read(unit)
        assert b.values.dtype == a.values.dtype and b.values.shape == a.values.shape
        np.testing.assert_array_equal(b.values.view(np.uint16), a.values.view(np.uint16))
        np.testing.assert_array_equal(b.times, a.times)
        np.testing.assert_array_equal(b.valid, a.valid)
        assert b.attrs == a.attrs
    assert dict(zarr.open_group(str(restored.path)).attrs) == dict(zarr.open_group(str(original.path)).attrs)
    extra_a, extra_b = original.get_extra("prompts"), restored.get_extra("prompts")
    np.testing.assert_array_equal(extra_a[0], extra_b[0])
    assert extra_a[1] == extra_b[1]


def test_imported_store_exports_and_reimports_identically(tmp_path, manifest):
    src = tmp_path / "src"
    src.mkdir()
    np.savez(src / "vidA.npz", frames=np.arange(0, FRAMES_A, 2), features=feats(FRAMES_A // 2))
    first = run_import(src, "face", tmp_path / "cache", manifest, fmt="npz")
    export_store(store_path(tmp_path / "cache", "face"), tmp_path / "face.h5")
    again = run_import(tmp_path / "face.h5", "face2", tmp_path / "cache", None, fmt="hdf5")
    assert again.ok and again.fingerprint == first.fingerprint
    a = FeatureStore.open(store_path(tmp_path / "cache", "face")).read("vidA")
    b = FeatureStore.open(store_path(tmp_path / "cache", "face2")).read("vidA")
    np.testing.assert_array_equal(a.values.view(np.uint16), b.values.view(np.uint16))
    np.testing.assert_array_equal(a.valid, b.valid)
    assert a.attrs == b.attrs


def test_nothing_imported_leaves_no_store(tmp_path, manifest):
    src = tmp_path / "src"
    src.mkdir()
    np.savez(src / "ghost.npz", frames=np.arange(3), features=feats(3))
    report = run_import(src, "f", tmp_path / "cache", manifest, fmt="npz")
    assert report.imported == [] and len(report.failed) == 1 and not report.ok
    assert not store_path(tmp_path / "cache", "f").exists()


def test_csv_empty_cell_is_nan_and_far_frames_are_refused(tmp_path, manifest):
    src = tmp_path / "src"
    src.mkdir()
    (src / "vidA.csv").write_text("frame,f1\n1,0.5\n2,\n3,0.25\n")
    (src / "vidB_left.csv").write_text("frame,f1\n1,0.5\n5000,0.5\n")
    report = run_import(src, "f", tmp_path / "cache", manifest, fmt="csv")
    assert report.imported == ["vidA"]
    assert any("vidA.csv: 1 row(s) with NaN/inf marked invalid" in n for n in report.notes)
    assert len(report.failed) == 1 and "vidB_left.csv: frame index 4999 is far past the 24 frames" in report.failed[0]
    group = FeatureStore.open(store_path(tmp_path / "cache", "f")).read("vidA")
    assert group.valid[:3].tolist() == [True, False, True] and not group.valid[3:].any()


# ---- issue 24: what enters a store from outside is checked ------------------------------------------


def _csv(path: Path, header: str, rows: list[str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(header + "\n" + "".join(r + "\n" for r in rows), encoding="utf-8")
    return path


def test_values_beyond_float32_are_invalid_rows_not_inf(tmp_path, manifest):
    rows = [f"{k},{v},1.0" for k, v in zip(range(1, FRAMES_A + 1), ["0.5"] * FRAMES_A)]
    rows[3], rows[7] = "4,1e300,1.0", "8,1e39,1.0"
    src = _csv(tmp_path / "src" / "vidA.csv", "frame,a,b", rows)
    report = run_import(src, "f", tmp_path / "cache", manifest, fmt="csv")
    assert report.imported == ["vidA"] and not report.failed
    assert any("2 row(s) with values beyond float32's range marked invalid" in n for n in report.notes)
    group = FeatureStore.open(store_path(tmp_path / "cache", "f")).read("vidA")
    assert np.isfinite(group.values).all()
    assert not group.valid[3] and not group.valid[7] and group.valid[[0, 1, 2, 4, 5, 6, 8]].all()
    assert group.values[3].tolist() == [0.0, 0.0]


def test_duplicate_and_negative_timestamps_are_refused(tmp_path, manifest):
    dup = tmp_path / "dup" / "vidA.npz"
    dup.parent.mkdir()
    np.savez(dup, features=np.array([[1.0], [2.0], [3.0]]), timestamps=np.array([0.5, 0.5, 0.5]))
    report = run_import(dup, "f", tmp_path / "cache", manifest, fmt="npz")
    assert report.imported == [] and len(report.failed) == 1
    assert "vidA.npz: timestamp 0.5 s appears 3 times" in report.failed[0]
    neg = tmp_path / "neg" / "vidA.npz"
    neg.parent.mkdir()
    np.savez(neg, features=np.ones((3, 2)), timestamps=np.array([-0.04, 0.0, 0.04]))
    report = run_import(neg, "g", tmp_path / "cache", manifest, fmt="npz")
    assert report.imported == [] and "negative timestamp -0.04 s" in report.failed[0]
    assert not store_path(tmp_path / "cache", "g").exists()


def test_no_row_and_zero_width_sources_are_failures(tmp_path, manifest):
    header_only = _csv(tmp_path / "csv" / "vidA.csv", "frame,a,b", [])
    report = run_import(header_only, "f", tmp_path / "cache", manifest, fmt="csv")
    assert report.imported == [] and "no rows" in report.failed[0]
    empty = tmp_path / "npz" / "vidA.npz"
    empty.parent.mkdir()
    np.savez(empty, features=np.zeros((0, 4)))
    report = run_import(empty, "f", tmp_path / "cache", manifest, fmt="npz")
    assert report.imported == [] and "no rows (values of shape (0, 4))" in report.failed[0]
    np.savez(empty, features=np.zeros((FRAMES_A, 0)))
    report = run_import(empty, "f", tmp_path / "cache", manifest, fmt="npz")
    assert report.imported == [] and "features of width 0" in report.failed[0]
    assert not store_path(tmp_path / "cache", "f").exists()


def test_integers_float32_cannot_hold_stay_float64_or_are_refused(tmp_path, manifest):
    src = tmp_path / "src" / "vidA.npz"
    src.parent.mkdir()
    values = np.arange(FRAMES_A, dtype=np.int64)[:, None] + 16_777_200  # up to 16,777,219
    np.savez(src, features=values)
    report = run_import(src, "f", tmp_path / "cache", manifest, fmt="npz")
    assert report.imported == ["vidA"] and any("stored as float64" in n for n in report.notes)
    group = FeatureStore.open(store_path(tmp_path / "cache", "f")).read("vidA")
    assert group.values.dtype == np.float64 and group.values[17, 0] == 16_777_217
    report = run_import(src, "g", tmp_path / "cache", manifest, fmt="npz", dtype="float32")
    assert report.imported == [] and "float32 cannot hold column 0" in report.failed[0]


def test_unsafe_unit_names_are_refused(tmp_path, manifest):
    h5 = tmp_path / "units.h5"
    with h5py.File(h5, "w") as handle:
        handle["vidA"] = feats(FRAMES_A)
        handle["vidA\\values"] = feats(FRAMES_A, seed=1)
    report = run_import(h5, "f", tmp_path / "cache", manifest, fmt="hdf5")
    assert report.imported == ["vidA"] and len(report.failed) == 1
    assert "unit name 'vidA\\\\values' is not a safe name" in report.failed[0]
    store = FeatureStore.open(store_path(tmp_path / "cache", "f"))
    assert store.units() == ["vidA"] and np.allclose(store.read("vidA").values, feats(FRAMES_A), atol=1e-2)
    with pytest.raises(ValueError, match="unit name 'a/b' is not a safe name"):
        store.write("a/b", feats(2), np.zeros((2, 2)))


@pytest.mark.parametrize("name", ["../escaped", "a.b", ".", "..", "x\\y", "a b", ""])
def test_unsafe_feature_names_are_usage_errors(tmp_path, data_root, name):
    src = tmp_path / "vidA.npz"
    np.savez(src, features=feats(FRAMES_A))
    cache = tmp_path / "cache"
    result = runner.invoke(app, ["import-features", str(src), "--name", name, "--data-root", str(data_root),
                                 "--cache-dir", str(cache)])
    assert result.exit_code == 2, result.output
    assert "not a safe name" in result.output
    assert not cache.exists() and not (tmp_path / "escaped.zarr").exists()
    with pytest.raises(ValueError, match="not a safe name"):
        store_path(cache, name)


def test_label_file_bom_is_stripped_and_header_mismatch_shows_the_difference(tmp_path):
    from cache.manifest import LabelFileError, parse_label_file

    bom = tmp_path / "bom.txt"
    bom.write_bytes(b"\xef\xbb\xbfvalence,arousal\n0.1,0.2\n-5,-5\n")
    labels = parse_label_file(bom)
    assert labels.values[0].tolist() == pytest.approx([0.1, 0.2]) and labels.valid.tolist() == [True, False]
    odd = tmp_path / "odd.txt"
    odd.write_text("valence,\u0430rousal\n0.1,0.2\n", encoding="utf-8")  # Cyrillic а
    with pytest.raises(LabelFileError, match=r"character 9 is U\+0430 'а', expected U\+0061 'a'"):
        parse_label_file(odd)
    csv_bom = tmp_path / "src" / "vidA.csv"
    csv_bom.parent.mkdir()
    csv_bom.write_bytes(b"\xef\xbb\xbfframe,a\n" + b"".join(b"%d,0.5\n" % k for k in range(1, FRAMES_A + 1)))
    from cache.importers import read_csv

    rows = read_csv(csv_bom, ImportConfig(fmt="csv"))
    assert rows.columns == ["a"] and rows.frames.tolist() == list(range(FRAMES_A))
