"""Store integrity (issue 15), as a user meets it: chunks deleted or garbled after completion, garbage
metadata, a kill inside an overwrite, a moved dataset. Stores are made by the real extract path (tiny
profile, `faces` on two 2 s sample videos) or the store API; every case ends in one line, nothing
damaged taken as complete, and `verify` + a re-run redoing exactly the damaged groups.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import zarr
from typer.testing import CliRunner

torch = pytest.importorskip("torch")
torch.set_num_threads(1)

from cache.sample_data import SampleConfig, write_sample_dataset  # noqa: E402
from cache.store import (  # noqa: E402
    DamagedGroup,
    DamagedStore,
    FeatureMeta,
    FeatureStore,
    IncompleteGroup,
    has_checksums,
    store_path,
)
from cache.verify import verify_cache  # noqa: E402
from pipeline import app  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
FEATURE = "faces"


def _extract_args(data: Path, cache: Path, models: Path, *extra: str) -> list[str]:
    return ["extract", "--split", "train", "--features", FEATURE, "--data-root", str(data), "--cache-dir", str(cache),
            "--profile", "tiny", "--device", "cpu", "--models-dir", str(models), "--batch-size", "16", *extra]


def _invoke(*args: str):
    result = CliRunner().invoke(app, list(args))
    assert not isinstance(result.exception, Exception) or isinstance(result.exception, SystemExit), result.output
    return result


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A sample dataset (video20: one track, video48: two) and a complete `faces` cache made by `extract`."""
    root = tmp_path_factory.mktemp("integrity")
    os.environ.setdefault("YOLO_CONFIG_DIR", str(root / "ultralytics"))
    write_sample_dataset(root / "data", SampleConfig.short(("video20", "video48"), 2.0))
    result = _invoke(*_extract_args(root / "data", root / "cache", root / "models"))
    assert result.exit_code == 0, result.output
    return root


@pytest.fixture
def ws(pristine: Path, tmp_path: Path) -> Path:
    """This test's own copy of the complete cache (the dataset and models are shared, read only)."""
    shutil.copytree(pristine / "cache", tmp_path / "cache")
    for name in ("data", "models"):
        (tmp_path / name).symlink_to(pristine / name)
    return tmp_path


def _extract(ws: Path, *extra: str, data: Path | None = None):
    return _invoke(*_extract_args(data or ws / "data", ws / "cache", ws / "models", *extra))


def _store(ws: Path) -> FeatureStore:
    return FeatureStore.open(store_path(ws / "cache", FEATURE))


def _chunks(ws: Path, unit: str, array: str = "values") -> list[Path]:
    return sorted(p for p in (ws / "cache" / f"{FEATURE}.zarr" / unit / array / "c").rglob("*") if p.is_file())


def _one_line(output: str) -> str:
    lines = [line for line in output.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in output, output
    return lines[0]


# ---- what is written -----------------------------------------------------------------------------
def test_every_array_is_checksummed_and_groups_record_rows_and_chunks(pristine: Path) -> None:
    store = FeatureStore.open(store_path(pristine / "cache", FEATURE))
    assert store.units() == ["video20", "video48_left", "video48_right"]
    root = zarr.open_group(str(store.path), mode="r")
    for unit in store.units():
        attrs = store.unit_attrs(unit)
        for key in ("values", "times", "valid"):
            array = root[f"{unit}/{key}"]
            assert has_checksums(array), (unit, key)
            assert [type(c).__name__ for c in array.metadata.codecs][-2:] == ["BloscCodec", "Crc32cCodec"]
            assert array.shape[0] == attrs["rows"] > 0
            assert attrs["chunks"][key] == array.nchunks == len(_chunks(pristine, unit, key)) >= 1
    # extras too, marked complete after their data
    other = FeatureStore.create_or_open(pristine / "x" / "e.zarr", FeatureMeta("e"))
    other.put_extra("protos", np.ones((9, 4), np.float32), {"centres": [0, 1]})
    assert has_checksums(zarr.open_group(str(other.path), mode="r")["_extras/protos"])
    assert other.get_extra("protos")[1] == {"centres": [0, 1]}


def test_all_zero_chunks_are_written_so_a_missing_one_is_damage(tmp_path: Path) -> None:
    store = FeatureStore.create_or_open(tmp_path / "z.zarr", FeatureMeta("z"))
    n = 5000  # two chunks of each array; all zeros and all invalid (the fill values)
    store.write("u", np.zeros((n, 3)), np.zeros((n, 2)), np.zeros(n, bool))
    assert store.unit_attrs("u")["chunks"] == {"values": 2, "times": 2, "valid": 2}
    assert store.is_complete("u", check_chunks=True)
    (tmp_path / "z.zarr" / "u" / "valid" / "c" / "1").unlink()
    assert not store.is_complete("u", check_chunks=True)
    with pytest.raises(DamagedGroup, match="valid has 1 of 2 chunk files"):
        store.read("u")


# ---- a chunk deleted after completion ------------------------------------------------------------
def test_deleted_chunk_found_by_status_skip_check_read_and_verify(ws: Path) -> None:
    _chunks(ws, "video48_left")[0].unlink()
    before = _store(ws).read("video48_right").values

    with pytest.raises(DamagedGroup) as err:  # never zeros with valid rows
        _store(ws).read("video48_left")
    assert f"verify {FEATURE} --cache-dir {ws / 'cache'}" in str(err.value) and "video48_left" in str(err.value)

    status = _invoke("status", "--data-root", str(ws / "data"), "--cache-dir", str(ws / "cache"))
    assert status.exit_code == 1 and "Traceback" not in status.output  # it prints damage: exit 1
    assert "damaged" in status.output and "video48_left" in status.output
    assert "2/3" in status.output  # the damaged group is not counted complete

    out = ws / "x.h5"
    exported = _invoke("export-features", FEATURE, "--to", str(out), "--cache-dir", str(ws / "cache"))
    assert exported.exit_code == 1 and "video48_left" in _one_line(exported.output) and not out.exists()

    # extract notices by a listing and redoes exactly that video; the others are skipped
    redo = _extract(ws)
    assert redo.exit_code == 0, redo.output
    assert "1 video(s) done, 1 skipped" in redo.output and "done: video48: faces" in redo.output, redo.output
    store = _store(ws)
    assert store.units() == ["video20", "video48_left", "video48_right"]
    assert verify_cache(ws / "cache").ok
    np.testing.assert_array_equal(store.read("video48_right").values, before)


def test_status_counts_a_damaged_group_as_missing(ws: Path) -> None:
    _chunks(ws, "video20", "times")[0].unlink()
    from cache.manifest import load_manifest
    from cache.status import dataset_status

    damaged: list[str] = []
    rows = dataset_status(load_manifest(ws / "data"), ws / "cache", damaged)
    train = next(r for r in rows if r.split == "train")
    assert train.tracks == 3 and train.complete[FEATURE] == 2
    assert len(damaged) == 1 and "video20" in damaged[0] and "times has 0 of 1 chunk files" in damaged[0]


# ---- a chunk garbled after completion: verify, then the re-run --------------------------------------
def test_garbled_chunk_verify_dry_run_then_repair_then_extract_redoes_only_it(ws: Path) -> None:
    chunk = _chunks(ws, "video20")[0]
    chunk.write_bytes(b"\x00garbage" * 10)

    with pytest.raises(DamagedGroup, match="video20.*a chunk cannot be read"):
        _store(ws).read("video20")

    dry = _invoke("verify", "--cache-dir", str(ws / "cache"), "--dry-run")
    assert dry.exit_code == 1, dry.output
    assert "video20" in dry.output and "nothing changed (dry run)" in dry.output
    assert _store(ws).is_complete("video20")  # a dry run changes nothing

    fix = _invoke("verify", FEATURE, "--cache-dir", str(ws / "cache"))
    assert fix.exit_code == 1 and "1 damaged, 1 marked incomplete" in fix.output, fix.output
    assert "checksum" in fix.output.lower()
    assert _store(ws).units() == ["video48_left", "video48_right"]

    redo = _extract(ws)
    assert redo.exit_code == 0, redo.output
    store = _store(ws)
    assert store.units() == ["video20", "video48_left", "video48_right"]
    assert "1 video(s) done, 1 skipped" in redo.output and "done: video20: faces" in redo.output, redo.output
    clean = _invoke("verify", "--cache-dir", str(ws / "cache"))
    # the feature's 3 groups and the frame-time record of its 2 videos (frame_times.zarr, also checksummed)
    assert clean.exit_code == 0 and "5 complete group(s) in 2 store(s): 0 damaged" in clean.output
    typo = _invoke("verify", "--cache-dir", str(ws / "cahce"))
    assert typo.exit_code == 1 and "no such cache folder" in _one_line(typo.output)
    unknown = _invoke("verify", "clip", "--cache-dir", str(ws / "cache"))
    assert unknown.exit_code == 1 and "no store for clip" in _one_line(unknown.output)


# ---- a node of the wrong kind --------------------------------------------------------------------
@pytest.mark.parametrize("array", ["values", "valid"])
def test_a_group_where_an_array_belongs_is_reported_not_a_traceback(ws: Path, array: str) -> None:
    """A group node written over an array's metadata (its chunk files left in place, so a listing sees
    nothing wrong): status does not count the group complete and exits 1, verify reports and marks it, extract
    redoes it."""
    meta = ws / "cache" / f"{FEATURE}.zarr" / "video20" / array / "zarr.json"
    meta.write_text('{"zarr_format": 3, "node_type": "group", "attributes": {}}')
    status = _invoke("status", "--data-root", str(ws / "data"), "--cache-dir", str(ws / "cache"))
    assert status.exit_code == 1 and "Traceback" not in status.output, status.output
    assert f"'{array}' is a group, not an array" in status.output and "2/3" in status.output
    dry = _invoke("verify", "--cache-dir", str(ws / "cache"), "--dry-run")
    assert dry.exit_code == 1 and "Traceback" not in dry.output and "video20" in dry.output, dry.output
    fix = _invoke("verify", FEATURE, "--cache-dir", str(ws / "cache"))
    assert fix.exit_code == 1 and "1 damaged, 1 marked incomplete" in fix.output, fix.output
    assert _extract(ws).exit_code == 0
    assert _store(ws).units() == ["video20", "video48_left", "video48_right"]
    assert _invoke("verify", "--cache-dir", str(ws / "cache")).exit_code == 0


# ---- garbage metadata ----------------------------------------------------------------------------
def test_garbage_group_metadata_is_one_failure_and_the_run_goes_on(ws: Path) -> None:
    (ws / "cache" / f"{FEATURE}.zarr" / "video20" / "zarr.json").write_text("{not json")
    shutil.rmtree(ws / "cache" / f"{FEATURE}.zarr" / "video48_left")  # video48 has work to do

    status = _invoke("status", "--data-root", str(ws / "data"), "--cache-dir", str(ws / "cache"))
    assert status.exit_code == 1 and "Traceback" not in status.output
    assert "video20/zarr.json" not in status.output and "group 'video20' is damaged" in status.output

    run = _extract(ws)
    assert run.exit_code == 1, run.output
    failed = [line for line in run.output.splitlines() if "video20" in line and "damaged" in line]
    assert failed, run.output
    assert _store(ws).is_complete("video48_left")  # the rest of the run went on

    with pytest.raises(DamagedGroup, match="unreadable zarr.json"):
        _store(ws).units()
    assert _invoke("verify", "--cache-dir", str(ws / "cache")).exit_code == 1
    assert _extract(ws).exit_code == 0
    assert _store(ws).units() == ["video20", "video48_left", "video48_right"]


def test_garbage_store_metadata_is_one_line_naming_the_file(ws: Path) -> None:
    meta = ws / "cache" / f"{FEATURE}.zarr" / "zarr.json"
    meta.write_bytes(b"\xff\xfe garbage")
    status = _invoke("status", "--data-root", str(ws / "data"), "--cache-dir", str(ws / "cache"))
    assert status.exit_code == 1 and str(meta) in status.output and "Traceback" not in status.output
    run = _extract(ws)
    assert run.exit_code != 0 and str(meta) in _one_line(run.output)
    exported = _invoke("export-features", FEATURE, "--to", str(ws / "x.h5"), "--cache-dir", str(ws / "cache"))
    assert exported.exit_code == 1 and str(meta) in _one_line(exported.output)
    checked = _invoke("verify", "--cache-dir", str(ws / "cache"))
    assert checked.exit_code == 1 and "(store)" in checked.output
    with pytest.raises(DamagedStore, match="unreadable store metadata"):
        FeatureStore.open(store_path(ws / "cache", FEATURE))


def test_train_evaluate_export_on_a_damaged_store_are_one_line_each(tmp_path: Path) -> None:
    from train.data.synthetic import SynthConfig, default_tracks, make_synthetic

    tracks = default_tracks(n_train=2, n_val=1, n_test=0, frames=(120, 160), seed=1)
    make_synthetic(tmp_path / "data", tmp_path / "cache", SynthConfig(tracks=tracks, visual_dim=4, audio_dim=4))
    where = ["--data-root", str(tmp_path / "data"), "--cache-dir", str(tmp_path / "cache"), "--device", "cpu"]
    runs = ["--runs-dir", str(tmp_path / "runs")]
    train = ["train", "--model", "gru", "--features", "clip", "--epochs", "1", "--window", "32", "--stride", "32",
             "--head", "hidden=4", "--head", "gru_hidden=4", *where, *runs]
    assert _invoke(*train, "--name", "before").exit_code == 0
    val = next(t.name for t in tracks if t.split == "val")
    chunk = next(p for p in (tmp_path / "cache" / "clip.zarr" / val / "values" / "c").rglob("*") if p.is_file())
    chunk.write_bytes(chunk.read_bytes()[:-1] + bytes([chunk.read_bytes()[-1] ^ 0xFF]))  # one flipped byte
    # the aligned views of the first run were written from checksum-verified reads: a run reading them is
    # not reading the damage; without them every command reads the store and must stop at the damaged chunk
    shutil.rmtree(tmp_path / "cache" / "_views")

    for command, args in (("train", [*train, "--name", "after"]), ("evaluate", ["evaluate", "before", *runs, *where]),
                          ("export", ["export", "before", "--name", "stacked", *runs, *where])):
        result = _invoke(*args)
        assert result.exit_code == 1, (command, result.output)
        line = _one_line(result.output)
        assert f"{command} failed" in line and val in line and "verify clip --cache-dir" in line, line


# ---- legacy stores -------------------------------------------------------------------------------
def test_a_store_written_before_checksums_still_reads_and_verifies(tmp_path: Path) -> None:
    from zarr.codecs import BloscCodec

    store = FeatureStore.create_or_open(tmp_path / "old.zarr", FeatureMeta("old"))
    group = zarr.open_group(str(store.path), mode="a").create_group("u")
    for key, data in (("values", np.ones((10, 3), np.float16)), ("times", np.ones((10, 2))), ("valid", np.ones(10, bool))):
        group.create_array(key, data=data, compressors=BloscCodec(cname="lz4"))
    group.attrs.update({"rows": 10, "complete": True})  # what the writer recorded before this change
    assert store.read("u").values.shape == (10, 3) and store.is_complete("u", check_chunks=True)
    report = verify_cache(tmp_path)
    assert report.ok and report.groups == 1 and report.unchecked == 1
    shutil.rmtree(tmp_path / "old.zarr" / "u" / "times" / "c")  # shape still recorded: a read shows nothing...
    assert not store.read("u").times.any()  # ...so legacy groups cannot tell a missing chunk (documented)
    group.attrs["rows"] = 11  # but a shape that differs from the recorded rows is found
    with pytest.raises(DamagedGroup, match="do not match the 11 rows"):
        store.read("u")


# ---- a kill inside the removal of an old group -----------------------------------------------------
KILL_INSIDE_REMOVAL = """
import os, shutil, signal, sys
keep = sys.argv[1]   # "first": kill after deleting the first file; "all-but-metadata": after every other file
real_rmtree = shutil.rmtree
def rmtree_then_die(path, *args, **kwargs):
    files = sorted(p for p in __import__("pathlib").Path(path).rglob("*") if p.is_file())
    if keep == "first":
        files[0].unlink()
    else:  # the worst order: every array gone, the group's own zarr.json still there
        for p in files:
            if p.name != "zarr.json" or p.parent != __import__("pathlib").Path(path):
                p.unlink()
    os.kill(os.getpid(), signal.SIGKILL)
shutil.rmtree = rmtree_then_die
from pipeline import app
app(sys.argv[2:])
"""


@pytest.mark.parametrize("when", ["first", "all-but-metadata"])
def test_kill_inside_force_overwrite_never_leaves_a_complete_husk(ws: Path, when: str) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "YOLO_OFFLINE": "1", "PYTHONPATH": str(ROOT),
           "YOLO_CONFIG_DIR": os.environ.get("YOLO_CONFIG_DIR", str(ws / "ultralytics"))}
    args = _extract_args(ws / "data", ws / "cache", ws / "models", "--force")
    proc = subprocess.run([sys.executable, "-c", KILL_INSIDE_REMOVAL, when, *args], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stdout + proc.stderr
    store = _store(ws)
    killed = [u for u in store.units(complete_only=False) if not store.is_complete(u)]
    assert killed == ["video20"]  # the first group --force rewrote
    assert (ws / "cache" / f"{FEATURE}.zarr" / "video20" / "zarr.json").is_file()  # the husk's metadata is there...
    assert store.unit_attrs("video20")["complete"] is False  # ...but it says incomplete
    with pytest.raises(IncompleteGroup):
        store.read("video20")
    assert store.units() == ["video48_left", "video48_right"]
    redo = _extract(ws)  # the plain re-run redoes it
    assert redo.exit_code == 0 and _store(ws).units() == ["video20", "video48_left", "video48_right"]


def test_kill_while_a_store_is_moved_aside_keeps_a_whole_store(tmp_path: Path) -> None:
    """--new-store on a local disk is one rename: there is no instant with half a store at either name."""
    old = FeatureMeta("f", version="1")
    FeatureStore.create_or_open(tmp_path / "f.zarr", old).write("u", np.ones((3, 2)), np.zeros((3, 2)))
    renames = []
    real = os.replace
    try:
        os.replace = lambda a, b: (renames.append((a, b)), real(a, b))
        FeatureStore.create_or_open(tmp_path / "f.zarr", FeatureMeta("f", version="2"), on_mismatch="new")
    finally:
        os.replace = real
    assert renames[0] == (str(tmp_path / "f.zarr"), str(tmp_path / f"f.{old.fingerprint}.zarr"))
    assert FeatureStore.open(tmp_path / f"f.{old.fingerprint}.zarr").units() == ["u"]


def test_store_moved_aside_on_a_url_loses_its_metadata_before_its_arrays(monkeypatch) -> None:
    """On an fsspec URL a move is a copy and a removal: stopped inside the removal, what is left at the old
    name has no metadata (no store, no complete group), and the copy is whole."""
    import fsspec

    from cache.location import move

    base = "memory://integrity-move"
    old = FeatureMeta("f", version="1")
    FeatureStore.create_or_open(f"{base}/f.zarr", old).write("u", np.ones((3, 2)), np.zeros((3, 2)))
    fs = fsspec.filesystem("memory")

    def stopped(*args, **kwargs):
        raise KeyboardInterrupt("stopped inside the removal")

    monkeypatch.setattr(type(fs), "rm", stopped)
    with pytest.raises(KeyboardInterrupt):
        move(f"{base}/f.zarr", f"{base}/f.old.zarr")
    left = [p for p in fs.find("/integrity-move/f.zarr")]
    assert left and not any(p.endswith("zarr.json") for p in left)  # arrays may remain; no metadata does
    assert FeatureStore.open(f"{base}/f.old.zarr").read("u").values.shape == (3, 2)
    monkeypatch.undo()
    fs.rm("/integrity-move", recursive=True)


# ---- a moved dataset ------------------------------------------------------------------------------
def test_moved_dataset_is_recognised_and_a_changed_file_is_redone(ws: Path) -> None:
    moved = ws / "elsewhere" / "data"
    shutil.copytree(ws / "data", moved, symlinks=False)  # copy2: names, sizes and mtimes kept
    before = _store(ws).read("video20")
    again = _extract(ws, data=moved)
    assert again.exit_code == 0, again.output
    assert "0 video(s) done, 2 skipped as already complete" in again.output, again.output
    assert _store(ws).read("video20").attrs["source"] == before.attrs["source"]  # nothing rewritten

    video = moved / "videos" / "video20.mp4"
    os.utime(video, (video.stat().st_atime, video.stat().st_mtime + 10))  # a changed file
    redo = _extract(ws, data=moved)
    assert redo.exit_code == 0 and "1 video(s) done, 1 skipped" in redo.output, redo.output
    after = _store(ws)
    assert after.read("video20").attrs["source"]["path"] == str(video.resolve())  # the path: information only
    assert after.read("video48_left").attrs["source"]["path"] == str((ws / "data" / "videos" / "video48.mp4").resolve())


# ---- re-import after damage ----------------------------------------------------------------------
def test_reimport_redoes_exactly_the_damaged_units(ws: Path) -> None:
    src = ws / "npz"
    src.mkdir()
    for i, track in enumerate(("video20", "video48_left", "video48_right")):
        np.savez(src / f"{track}.npz", frames=np.arange(20), features=np.random.default_rng(i).normal(size=(20, 3)))
    args = ["import-features", str(src), "--name", "imp", "--data-root", str(ws / "data"), "--cache-dir", str(ws / "cache")]
    assert _invoke(*args).exit_code == 0
    store = FeatureStore.open(store_path(ws / "cache", "imp"))
    written = {u: store.read(u).values for u in store.units()}
    assert len(written) == 3

    again = _invoke(*args)  # same sources: every unit already complete
    assert again.exit_code == 0 and "imported 0, failed 0, 3 already complete" in again.output, again.output

    (ws / "cache" / "imp.zarr" / "video48_left" / "zarr.json").write_text("garbage")
    bad = _invoke(*args)
    assert bad.exit_code == 1 and "group 'video48_left' is damaged" in bad.output and "verify imp" in bad.output

    checked = _invoke("verify", "imp", "--cache-dir", str(ws / "cache"))
    assert checked.exit_code == 1 and "import-features" in checked.output  # the command that redoes it
    redo = _invoke(*args)
    assert redo.exit_code == 0 and "imported 1, failed 0, 2 already complete" in redo.output, redo.output
    store = FeatureStore.open(store_path(ws / "cache", "imp"))
    for unit, values in written.items():
        np.testing.assert_array_equal(store.read(unit).values, values)


def test_damaged_or_half_written_extras_are_refused_not_read_as_zeros(tmp_path: Path) -> None:
    store = FeatureStore.create_or_open(tmp_path / "c.zarr", FeatureMeta("c"))
    store.put_extra("protos", np.arange(12, dtype=np.float32).reshape(3, 4), {"centres": [1]})
    data, attrs = store.get_extra("protos")
    assert data.sum() == 66 and attrs == {"centres": [1]}
    chunk = next(p for p in (tmp_path / "c.zarr" / "_extras" / "protos" / "c").rglob("*") if p.is_file())
    chunk.unlink()  # a deleted chunk would read back as zeros
    with pytest.raises(DamagedGroup, match="0 of 1 chunk files"):
        store.get_extra("protos")
    report = verify_cache(tmp_path)
    assert [(d.unit, d.redo) for d in report.damaged] == [("_extras/protos", "extract (loads the extractor, which writes it again)")]
    store.put_extra("protos", np.ones((3, 4), np.float32))  # rewriting it repairs it
    assert store.get_extra("protos")[0].sum() == 12 and verify_cache(tmp_path).ok
    zarr.open_array(str(tmp_path / "c.zarr" / "_extras" / "protos"), mode="a").attrs["complete"] = False
    with pytest.raises(DamagedGroup, match="written only in part"):  # a writer stopped before the end
        store.get_extra("protos")
