import numpy as np
import pytest

from cache.media import SourceStat
from cache.store import FeatureMeta, FeatureStore, FingerprintMismatch, IncompleteGroup, list_stores, store_path


def rows(n, dim=8, seed=0):
    rng = np.random.default_rng(seed)
    t = np.arange(n) / 30.0
    return rng.normal(size=(n, dim)).astype(np.float32), np.stack([t, t + 1 / 30], 1)


def test_write_read_roundtrip_and_attrs(tmp_path):
    meta = FeatureMeta("clip", kind="frame", model_ref="ViT-B-16/openai", config={"size": 224})
    store = FeatureStore.create_or_open(store_path(tmp_path, "clip"), meta)
    values, times = rows(5000)
    valid = np.arange(5000) % 7 != 0
    store.write("video1", values, times, valid, attrs={"fps": 30.0})
    again = FeatureStore.open(store_path(tmp_path, "clip"), expect_fingerprint=meta.fingerprint)
    group = again.read("video1")
    assert group.values.dtype == np.float16
    np.testing.assert_allclose(group.values, values.astype(np.float16))
    np.testing.assert_array_equal(group.times, times)
    np.testing.assert_array_equal(group.valid, valid)
    assert group.attrs["fps"] == 30.0 and group.attrs["complete"] is True and group.attrs["rows"] == 5000
    assert again.meta == meta
    assert list_stores(tmp_path) == {"clip": store_path(tmp_path, "clip")}


def test_incomplete_group_is_invisible(tmp_path):
    store = FeatureStore.create_or_open(tmp_path / "f.zarr", FeatureMeta("f"))
    values, times = rows(10)
    with pytest.raises(RuntimeError):
        with store.writer("crashed", (8,)) as w:
            w.append(values[:5], times[:5])
            raise RuntimeError("extractor died")
    store.write("ok", values, times)
    assert store.units() == ["ok"]
    assert store.units(complete_only=False) == ["crashed", "ok"]
    with pytest.raises(IncompleteGroup, match="crashed"):
        store.read("crashed")


def test_fingerprint_mismatch_refused_naming_both(tmp_path):
    path = tmp_path / "clip.zarr"
    old = FeatureMeta("clip", config={"size": 224})
    new = FeatureMeta("clip", config={"size": 336})
    FeatureStore.create_or_open(path, old).write("v", *rows(3))
    with pytest.raises(FingerprintMismatch) as err:
        FeatureStore.create_or_open(path, new)
    assert old.fingerprint in str(err.value) and new.fingerprint in str(err.value)
    with pytest.raises(FingerprintMismatch, match=new.fingerprint):
        FeatureStore.open(path, expect_fingerprint=new.fingerprint)


def test_new_store_on_mismatch_keeps_the_old_one(tmp_path):
    path = tmp_path / "clip.zarr"
    old, new = FeatureMeta("clip", version="1"), FeatureMeta("clip", version="2")
    FeatureStore.create_or_open(path, old).write("v", *rows(3))
    fresh = FeatureStore.create_or_open(path, new, on_mismatch="new")
    assert fresh.units() == []
    aside = FeatureStore.open(tmp_path / f"clip.{old.fingerprint}.zarr")
    assert aside.units() == ["v"]
    assert list(list_stores(tmp_path)) == ["clip"]


def test_stale_source_is_not_complete(tmp_path):
    video = tmp_path / "v.mp4"
    video.write_bytes(b"x" * 10)
    store = FeatureStore.create_or_open(tmp_path / "f.zarr", FeatureMeta("f"))
    from dataclasses import asdict

    store.write("v", *rows(3), attrs={"source": asdict(SourceStat.of(video))})
    assert store.is_complete("v", SourceStat.of(video))
    video.write_bytes(b"y" * 11)
    assert not store.is_complete("v", SourceStat.of(video))


def test_nan_rows_masked_not_stored(tmp_path):
    store = FeatureStore.create_or_open(tmp_path / "f.zarr", FeatureMeta("f"))
    values, times = rows(6)
    values[2, 3] = np.nan
    values[4, 0] = np.inf
    store.write("v", values, times)
    group = store.read("v")
    assert group.valid.tolist() == [True, True, False, True, False, True]
    assert np.isfinite(group.values).all()


def test_extras(tmp_path):
    store = FeatureStore.create_or_open(tmp_path / "clip.zarr", FeatureMeta("clip"))
    protos = np.eye(9, 16, dtype=np.float32)
    store.put_extra("region_prototypes", protos, {"prompts": ["a", "b"]})
    arr, attrs = FeatureStore.open(tmp_path / "clip.zarr").get_extra("region_prototypes")
    np.testing.assert_array_equal(arr, protos)
    assert attrs["prompts"] == ["a", "b"]
    assert store.units() == []


def test_printed_commands_quote_paths_with_spaces(tmp_path):
    """The damage hint and the make command are pasted into a shell: a path with spaces stays one word."""
    import shlex

    from cache.store import DamagedGroup
    from train.runs.recipe import make_command

    cache = tmp_path / "my cache; rm -rf x"
    hint = str(DamagedGroup(cache / "clip.zarr", "v1", "a chunk is missing"))
    command = hint.split("`")[1]
    assert shlex.split(command) == ["python", "pipeline.py", "verify", "clip", "--cache-dir", str(cache)]
    made = make_command("clip", "data dir", str(cache)).split(" (and")[0]
    assert shlex.split(made) == ["make", "extract", "FEATURES=clip", "SPLIT=train", "DATA=data dir", f"CACHE={cache}"]


def test_crops_of_another_size_are_refused_when_written(tmp_path):
    """A store whose input_spec records 224 px crops takes no group of 32 px crops (issue 24)."""
    import contextlib
    from types import SimpleNamespace

    from extract.base import UnitResult
    from extract.runner import Runner

    store = FeatureStore.create_or_open(store_path(tmp_path, "face_crops"), FeatureMeta("face_crops", model_ref="m"))
    store.put_extra("input_spec", np.array([224]), {"model": "m", "image_size": 224})
    ext = SimpleNamespace(units_for=lambda video: ["v1"], store_dtype="uint8", store_layout=None)
    runner = SimpleNamespace(extractors={"face_crops": ext}, stores={"face_crops": store},
                             timer=lambda key: contextlib.nullcontext())  # Runner times its writes (d8e5d2f)
    times = np.stack([np.arange(3) / 25, np.arange(1, 4) / 25], axis=1)
    small = {"v1": UnitResult(np.zeros((3, 32, 32, 3), np.uint8), times, np.ones(3, bool), {})}
    with pytest.raises(RuntimeError, match=r"face_crops: v1: rows of shape \(32, 32, 3\), but the store's input_spec makes them \(224, 224, 3\)"):
        Runner._write(runner, "face_crops", None, small, {})
    assert "v1" not in store.units()
    right = {"v1": UnitResult(np.zeros((3, 224, 224, 3), np.uint8), times, np.ones(3, bool), {})}
    Runner._write(runner, "face_crops", None, right, {})
    assert store.read("v1").values.shape == (3, 224, 224, 3)


def test_jpeg_crop_rows_fit_half_the_pixels_and_lower_quality_when_needed(caplog):
    """A JPEG row holds half a crop's pixel bytes; a crop too detailed for it at Q is stored at a lower Q."""
    import skimage.data

    from cache.crop_codec import CropCodec

    face = np.ascontiguousarray(skimage.data.astronaut()[:224, 100:324])
    noise = np.random.default_rng(0).integers(0, 256, face.shape, dtype=np.uint8)
    codec = CropCodec.parse("jpeg:100")
    rows = codec.encode(np.stack([face, noise, face]), np.array([True, True, False]))
    assert rows.shape == (3, 224 * 224 * 3 // 2 + 5) and list(rows[:, 0]) == [1, 1, 0]
    assert "stored at quality 95" in caplog.text  # noise at q100 does not fit; q95 does
    back = codec.decode(rows, 224).numpy()
    assert np.abs(back[0].astype(int) - face).mean() < 2 and not back[2].any()
    assert np.array_equal(CropCodec.parse("lossless").decode(face[None], 224).numpy()[0], face)
    with pytest.raises(ValueError, match="codec 'png:9'"):
        CropCodec.parse("png:9")
