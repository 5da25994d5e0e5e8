"""Stage 1 visual extraction end to end on a small sample dataset with the tiny profile.

One module-scoped uninterrupted run is the reference; the resume test interrupts a second run and
compares. Kept small (two short face videos, a no-face video, a corrupt and a zero-byte file).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
torch.set_num_threads(1)

from cache.sample_data import SAMPLE_VIDEOS, SampleConfig, write_av_file, write_sample_dataset  # noqa: E402
from cache.store import FeatureStore, store_path  # noqa: E402
from extract.runner import RunOptions  # noqa: E402
from extract.backends import run_extraction  # noqa: E402

FEATURES = ["faces", "mouth", "landmarks", "clip"]
GOOD = {"video20": ["video20"], "video48": ["video48_left", "video48_right"], "noface": ["noface"]}
BAD = ["corrupt", "empty"]


def _label(path: Path, n: int) -> None:
    path.write_text("valence,arousal\n" + "0.1,0.2\n" * n)


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("extract")
    os.environ.setdefault("YOLO_CONFIG_DIR", str(root / "ultralytics"))
    data = root / "data"
    videos = tuple(v for v in SAMPLE_VIDEOS if v.stem in ("video20", "video48"))
    write_sample_dataset(data, SampleConfig(seed=0, min_seconds=3.0, max_seconds=3.0, videos=videos))
    train = data / "annotations" / "VA_Estimation_Challenge" / "Train_Set"
    vid = data / "videos"
    # a video without a face: flat grey with noise
    rng = np.random.default_rng(0)
    frames = [np.clip(110 + rng.normal(0, 8, (96, 128, 3)), 0, 255).astype(np.uint8) for _ in range(15)]
    write_av_file(vid / "noface.mp4", frames, 15.0)
    _label(train / "noface.txt", 15)
    # a corrupt file (a real header followed by garbage) and a zero-byte file
    good = (vid / "video20.mp4").read_bytes()
    (vid / "corrupt.mp4").write_bytes(good[:200] + bytes(rng.integers(0, 256, 4000, dtype=np.uint8)))
    _label(train / "corrupt.txt", 20)
    (vid / "empty.mp4").write_bytes(b"")
    _label(train / "empty.txt", 20)
    return root


def _options(root: Path, cache: str, features: list[str] = FEATURES, **kw) -> RunOptions:
    return RunOptions(
        split="train", features=features, data_root=root / "data", cache_dir=root / cache,
        models_dir=root / "models", profile="tiny", device="cpu", progress=False, batch_size=16, **kw,
    )


@pytest.fixture(scope="module")
def reference(workspace: Path):
    summary = run_extraction(_options(workspace, "ref"))
    return workspace / "ref", summary


def _stores(cache: Path) -> dict[str, FeatureStore]:
    return {f: FeatureStore.open(store_path(cache, f)) for f in FEATURES}


def test_all_features_for_every_track_and_bad_files_reported(reference) -> None:
    cache, summary = reference
    stores = _stores(cache)
    for feature, store in stores.items():
        for tracks in GOOD.values():
            for t in tracks:
                assert store.is_complete(t), (feature, t)
                g = store.read(t)
                assert len(g.values) == len(g.times) == len(g.valid) > 0
    # one line per bad file, naming it; the rest of the split was extracted
    assert len(summary.failed) == 2, summary.failed
    for name, line in zip(sorted(BAD), sorted(summary.failed, key=lambda s: "corrupt" not in s)):
        assert f"{name}.mp4" in line and "\n" not in line
    assert not summary.ok
    assert {d.split(":")[0] for d in summary.done} == set(GOOD)
    # model loading (once per run) and store writes are timed apart from the extractors' hooks
    assert set(summary.hook_seconds) == set(FEATURES)
    assert summary.load_seconds > 0 and summary.write_seconds > 0
    assert summary.load_seconds + summary.write_seconds + sum(summary.hook_seconds.values()) < summary.seconds
    # no face: complete groups, every row invalid
    for store in stores.values():
        assert not store.read("noface").valid.any()
    # face video: valid nearly everywhere, times from the container fps (30)
    faces = stores["faces"].read("video20")
    assert faces.valid.mean() > 0.9
    np.testing.assert_allclose(faces.times[:3, 0], np.arange(3) / 30.0)
    assert stores["clip"].read("video20").values.shape[1] == 64  # tiny CLIP embed dim
    assert stores["landmarks"].read("video20").values.shape[1] >= 100


def test_two_person_tracks_follow_their_faces(reference, workspace: Path) -> None:
    cache, _ = reference
    faces = FeatureStore.open(store_path(cache, "faces"))
    gt = np.load(workspace / "data" / "ground_truth" / "video48.npz")
    width, height = float(gt["width"]), float(gt["height"])
    for face, track in enumerate(["video48_left", "video48_right"]):
        g = faces.read(track)
        n = min(len(g.values), gt["face_centers"].shape[1])
        centre = np.stack([(g.values[:n, 0] + g.values[:n, 2]) / 2 * width, (g.values[:n, 1] + g.values[:n, 3]) / 2 * height], 1)
        err = np.linalg.norm(centre - gt["face_centers"][face, :n], axis=1)[g.valid[:n]]
        assert g.valid.mean() > 0.9
        assert np.median(err) < 12 and (err < 25).mean() > 0.95, (track, np.median(err))
    left, right = faces.read("video48_left").values, faces.read("video48_right").values
    assert (left[:, 2] <= right[:, 0] + 0.05).mean() > 0.95  # left box lies left of the right box


def test_mouth_follows_ground_truth(reference, workspace: Path) -> None:
    cache, _ = reference
    mouth = FeatureStore.open(store_path(cache, "mouth"))
    checked = 0
    for stem, face, track in (("video20", 0, "video20"), ("video48", 0, "video48_left"), ("video48", 1, "video48_right")):
        gt = np.load(workspace / "data" / "ground_truth" / f"{stem}.npz")
        g = mouth.read(track)
        n = min(len(g.values), gt["mouth_open"].shape[1])
        flag, valid = g.values[:n, 1] > 0.5, g.valid[:n]
        truth, speaking = gt["mouth_open"][face, :n], gt["speaking"][face, :n]
        assert valid.mean() > 0.9
        assert (flag[~speaking] == 0).mean() > 0.9  # closed while silent
        if truth.sum() < 5:
            continue
        checked += 1
        agree = (flag == truth).mean()
        chance = flag.mean() * truth.mean() + (1 - flag.mean()) * (1 - truth.mean())
        assert agree > chance + 0.1, (track, agree, chance)
        assert flag[truth].mean() > 0.8  # open frames are found
        ratio = g.values[:n, 0][valid]
        assert np.corrcoef(ratio, gt["mouth_opening"][face, :n][valid])[0, 1] > 0.8
    assert checked >= 1


def test_resume_after_interruption_equals_uninterrupted(reference, workspace: Path, monkeypatch) -> None:
    cache_ref, _ = reference
    opts = _options(workspace, "resume")
    # 1) faces only for one video (the crop features will later read these stored boxes)
    first = run_extraction(_options(workspace, "resume", features=["faces"], only_videos=["video20"]))
    assert first.done == ["video20: faces"]
    # 2) a run that dies on its second video (an extractor raising mid-video)
    from extract.clip import ClipExtractor

    original = ClipExtractor.process_crops

    def boom(self, state, batch):
        if batch.track.startswith("video48"):
            raise RuntimeError("simulated crash")
        return original(self, state, batch)

    monkeypatch.setattr(ClipExtractor, "process_crops", boom)
    broken = run_extraction(opts)
    assert any("video48" in line and "simulated crash" in line for line in broken.failed)
    assert not FeatureStore.open(store_path(workspace / "resume", "clip")).is_complete("video48_left")
    monkeypatch.setattr(ClipExtractor, "process_crops", original)
    # 3) re-run: finishes the rest, skips what is complete
    again = run_extraction(opts)
    assert [d.split(":")[0] for d in again.done] == ["video48"]
    assert {"noface", "video20"} <= set(again.skipped)
    ref, new = _stores(cache_ref), _stores(workspace / "resume")
    for feature in FEATURES:
        for tracks in GOOD.values():
            for t in tracks:
                a, b = ref[feature].read(t), new[feature].read(t)
                np.testing.assert_array_equal(a.valid, b.valid)
                np.testing.assert_array_equal(a.times, b.times)
                np.testing.assert_allclose(a.values.astype(np.float32), b.values.astype(np.float32), atol=2e-3, err_msg=f"{feature}/{t}")
    # 4) a third run does nothing
    third = run_extraction(opts)
    assert not third.done and set(third.skipped) == set(GOOD)


def test_clip_region_prototypes(reference) -> None:
    cache, _ = reference
    store = FeatureStore.open(store_path(cache, "clip"))
    protos, attrs = store.get_extra("region_prototypes")
    assert protos.shape == (9, 64)
    np.testing.assert_allclose(np.linalg.norm(protos, axis=1), 1.0, atol=1e-4)
    assert len(attrs["prompts"]) == 9 and all(len(p) == 3 for p in attrs["prompts"])
    assert sorted({c[0] for c in attrs["centres"]}) == [-0.66, 0.0, 0.66]


def test_cli_extract_skips_complete_and_fails_on_bad_files(reference, workspace: Path) -> None:
    from typer.testing import CliRunner

    import pipeline

    cache, _ = reference
    shutil.copytree(workspace / "models", workspace / "cli_models", dirs_exist_ok=True)
    args = [
        "extract", "--split", "train", "--features", ",".join(FEATURES), "--data-root", str(workspace / "data"),
        "--cache-dir", str(cache), "--profile", "tiny", "--device", "cpu", "--models-dir", str(workspace / "models"),
    ]
    result = CliRunner().invoke(pipeline.app, args)
    assert result.exit_code == 1, result.output  # the corrupt and empty files still fail
    assert "3 skipped as already complete" in " ".join(result.output.split())
    assert "corrupt.mp4" in result.output and "empty.mp4" in result.output
