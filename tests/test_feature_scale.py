"""Features at their true scale (issue 18): what pandas-written CSVs carry, float16 precision, and
standardization on the train split."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from cache.importers import ImportConfig, import_features
from cache.manifest import load_manifest
from cache.precision import Float16PrecisionError, float16_losses
from cache.sample_data import write_av_file
from cache.store import FeatureMeta, FeatureStore, store_path
from pipeline import app

torch.set_num_threads(1)
runner = CliRunner()
FPS, FRAMES = 25, 40


def _write_labels(path: Path, n: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("valence,arousal\n" + "".join("0.1,0.2\n" for _ in range(n)))


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("data")
    for stem in ("vidA", "vidB"):
        write_av_file(root / "videos" / f"{stem}.mp4", np.zeros((FRAMES, 16, 16, 3), np.uint8), FPS)
    sets = root / "annotations" / "VA_Estimation_Challenge"
    _write_labels(sets / "Train_Set" / "vidA.txt", FRAMES)
    _write_labels(sets / "Validation_Set" / "vidB.txt", FRAMES)
    return root


def pandas_csv(frame_numbers: np.ndarray, columns: dict[str, np.ndarray]) -> str:
    """The text `DataFrame.to_csv(path)` writes (index on): a blank-named first column holding 0..N-1,
    then the columns; the frame column is a zero-padded string, floats in repr form."""
    try:
        import pandas as pd
    except ImportError:
        pd = None
    frames = [f"{int(k):05d}" for k in frame_numbers]
    if pd is not None:
        return pd.DataFrame({"frame": frames, **columns}).to_csv()
    lines = [",".join(["", "frame", *columns])]
    for i, frame in enumerate(frames):
        cells = [repr(float(v)) if np.asarray(v).dtype.kind == "f" else str(int(v)) for v in (c[i] for c in columns.values())]
        lines.append(",".join([str(i), frame, *cells]))
    return "\n".join(lines) + "\n"


def mouth_columns(n: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {"surface_area_mouth": rng.uniform(1e-4, 1e-2, n), "mouth_open": rng.integers(0, 2, n)}


# ------------------------------------------------------------------------------------------------ columns


def test_pandas_csv_imports_the_real_columns_not_its_index(tmp_path, data_root):
    src = tmp_path / "src"
    src.mkdir()
    cols = mouth_columns(FRAMES)
    (src / "vidA.csv").write_text(pandas_csv(np.arange(1, FRAMES + 1), cols))
    assert (src / "vidA.csv").read_text().startswith(",frame,surface_area_mouth,mouth_open\n0,00001,")
    cache = tmp_path / "cache"

    report = import_features(src, "mouth", cache, ImportConfig(fmt="csv"), load_manifest(data_root))
    assert report.ok and report.imported == ["vidA"]
    assert any("index column 'Unnamed: 0'" in note and "dropped" in note for note in report.notes), report.notes

    store = FeatureStore.open(store_path(cache, "mouth"))
    group = store.read("vidA")
    assert group.values.shape == (FRAMES, 2)  # [area, flag]: no row index
    assert group.valid.all()  # frames 00001..00040 (1-based) cover frames 0..39 of the video
    np.testing.assert_allclose(group.values[:, 0], cols["surface_area_mouth"], rtol=1e-3)
    np.testing.assert_array_equal(group.values[:, 1], cols["mouth_open"])
    assert group.attrs["columns"] == ["surface_area_mouth", "mouth_open"]

    res = runner.invoke(app, ["status", "--features", "--data-root", str(data_root), "--cache-dir", str(cache)])
    assert res.exit_code == 0, res.output
    assert "surface_area_mouth, mouth_open" in res.output
    res = runner.invoke(app, ["export-features", "mouth", "--to", str(tmp_path / "mouth.h5"), "--cache-dir", str(cache)])
    assert res.exit_code == 0 and "columns surface_area_mouth, mouth_open" in res.output, res.output


def test_columns_and_drop_columns_choose_explicitly(tmp_path, data_root):
    src = tmp_path / "src"
    src.mkdir()
    cols = {"index": np.arange(FRAMES), **mouth_columns(FRAMES), "pose_deg": np.linspace(-30, 30, FRAMES)}
    text = "frame," + ",".join(cols) + "\n" + "".join(
        f"{k + 1}," + ",".join(repr(float(c[k])) for c in cols.values()) + "\n" for k in range(FRAMES)
    )
    (src / "vidA.csv").write_text(text)
    manifest = load_manifest(data_root)
    cache = tmp_path / "cache"

    picked = import_features(src, "picked", cache, ImportConfig(fmt="csv", columns=("pose_deg", "mouth_open")), manifest)
    assert picked.ok
    assert FeatureStore.open(store_path(cache, "picked")).read("vidA").attrs["columns"] == ["pose_deg", "mouth_open"]

    res = runner.invoke(app, ["import-features", str(src), "--name", "dropped", "--drop-columns", "mouth_open",
                              "--data-root", str(data_root), "--cache-dir", str(cache)])
    assert res.exit_code == 0, res.output
    assert "index column 'index'" in res.output
    assert FeatureStore.open(store_path(cache, "dropped")).read("vidA").attrs["columns"] == ["surface_area_mouth", "pose_deg"]

    wrong = import_features(src, "wrong", cache, ImportConfig(fmt="csv", columns=("area",)), manifest)
    assert len(wrong.failed) == 1 and "--columns names column(s) 'area' not in the header" in wrong.failed[0]


def test_a_column_named_like_an_index_that_is_not_one_is_kept(tmp_path, data_root):
    src = tmp_path / "src"
    src.mkdir()
    body = "".join(f"{k + 1},{(k * 7) % 5},{0.5 * k}\n" for k in range(FRAMES))
    (src / "vidA.csv").write_text("frame,index,au01\n" + body)
    report = import_features(src, "kept", tmp_path / "cache", ImportConfig(fmt="csv"), load_manifest(data_root))
    assert report.ok and any("named like an index but holds other values" in n for n in report.notes)
    assert FeatureStore.open(store_path(tmp_path / "cache", "kept")).read("vidA").attrs["columns"] == ["index", "au01"]


# ------------------------------------------------------------------------------------------------ float16


def test_float16_check_catches_offsets_and_counters_and_passes_embeddings():
    rng = np.random.default_rng(0)
    embedding = rng.normal(0, 0.03, size=(5000, 64))
    embedding[:, 0] += 0.3  # a dimension with an offset 10x its spread, as CLIP has
    assert float16_losses(embedding) == []
    mouth = np.stack([rng.uniform(1e-4, 1e-2, 5000), rng.integers(0, 2, 5000), rng.uniform(-30, 30, 5000)], axis=1)
    assert float16_losses(mouth) == []
    large = 30_000 + rng.normal(0, 5, size=(5000, 1))  # a large offset with a small signal
    assert "rounding error" in float16_losses(large, ["area_px"])[0]
    counter = np.arange(18_017, dtype=np.float64)[:, None]  # the row index of a long track
    assert "whole numbers up to 18016" in float16_losses(counter, ["Unnamed: 0"])[0]
    assert "overflow" in float16_losses(np.array([[1e5], [2e5]]))[0]


def test_large_non_integer_values_are_caught_before_float16_rounds_them(tmp_path, data_root):
    src = tmp_path / "src"
    src.mkdir()
    rng = np.random.default_rng(1)
    area = 30_000 + rng.normal(0, 5, FRAMES)  # float16 steps by 16 at 30,000
    body = "".join(f"{k + 1},{float(area[k])!r},{0.01 * k}\n" for k in range(FRAMES))
    (src / "vidA.csv").write_text("frame,area_px,au01\n" + body)
    manifest = load_manifest(data_root)

    refused = import_features(src, "f16", tmp_path / "cache", ImportConfig(fmt="csv", dtype="float16"), manifest)
    assert not refused.imported and len(refused.failed) == 1
    line = refused.failed[0]
    assert "'area_px'" in line and "au01" not in line and "--dtype float32" in line and "\n" not in line

    auto = import_features(src, "auto", tmp_path / "cache", ImportConfig(fmt="csv"), manifest)
    assert auto.ok and any("stored as float32" in n and "'area_px'" in n for n in auto.notes), auto.notes
    group = FeatureStore.open(store_path(tmp_path / "cache", "auto")).read("vidA")
    assert group.values.dtype == np.float32
    np.testing.assert_array_equal(group.values[:, 0], area.astype(np.float32))

    # the store writer (extractors, exports) applies the same check to float16 writes
    store = FeatureStore.create_or_open(store_path(tmp_path / "cache", "direct"), FeatureMeta(name="direct"))
    times = np.stack([np.arange(FRAMES), np.arange(1, FRAMES + 1)], axis=1) / FPS
    with pytest.raises(Float16PrecisionError, match="column 0 .*--dtype float32"):
        store.write("vidA", area[:, None], times)
    assert not store.is_complete("vidA")
    store.write("vidA", area[:, None], times, dtype="float32")
    assert store.is_complete("vidA")


# ------------------------------------------------------------------------------------------------ standardization

SCALE_DIMS = ("nuisance_1e4", "valence_1e-3", "arousal_1e-3", "constant")


def write_scaled_store(data: Path, cache: Path, truth: dict[str, np.ndarray], tracks) -> None:
    """A store like the issue's real CSVs: the labels carried by two dimensions of scale 1e-3 next to a
    noise dimension of scale 1e4 (and a constant one), stored float16 (the check lets it through)."""
    rng = np.random.default_rng(7)
    store = FeatureStore.create_or_open(store_path(cache, "scaled"), FeatureMeta(name="scaled", model_ref="test"))
    fps = {t.name: t.fps for t in tracks}
    for name, va in truth.items():
        n = len(va)
        values = np.stack([
            1e4 * rng.normal(size=n), 1e-3 * (va[:, 0] + 0.2 * rng.normal(size=n)),
            1e-3 * (va[:, 1] + 0.2 * rng.normal(size=n)), np.full(n, 5.0),
        ], axis=1)
        k = np.arange(n)
        store.write(name, values, np.stack([k, k + 1], axis=1) / fps[name], attrs={"columns": list(SCALE_DIMS)})


@pytest.fixture(scope="module")
def scaled(tmp_path_factory):
    from train.data.synthetic import SynthConfig, default_tracks, make_synthetic

    base = tmp_path_factory.mktemp("scaled")
    tracks = default_tracks(n_train=4, n_val=2, n_test=1, frames=(300, 360), seed=5)
    truth = make_synthetic(base / "data", base / "cache", SynthConfig(tracks=tracks, signal=False, region_prototypes=False))
    write_scaled_store(base / "data", base / "cache", truth, tracks)
    return base


def scaled_config(base: Path, normalize: bool):
    from train.config import DataConfig, TrainConfig

    data = DataConfig(features=["scaled"], data_root=str(base / "data"), cache_dir=str(base / "cache"), window=64,
                      stride=16, normalize=normalize)
    return TrainConfig(
        model="gru", data=data, name=f"norm-{normalize}", runs_dir=str(base / "runs"),
        head={"hidden": 16, "gru_hidden": 16, "dropout": 0.0}, epochs=6, early_stop=6, lr=3e-3, batch_size=8,
        device="cpu", seed=0, smooth_grid=[0], n_plot_tracks=0,
    )


@pytest.fixture(scope="module")
def scaled_runs(scaled):
    from rich.console import Console

    from train.fit.loop import train

    quiet = Console(file=open("/dev/null", "w"))  # noqa: SIM115
    return {normalize: train(scaled_config(scaled, normalize), console=quiet) for normalize in (True, False)}


def test_a_signal_of_scale_1e_3_next_to_1e4_is_learnt_only_with_standardization(scaled_runs):
    on, off = scaled_runs[True], scaled_runs[False]
    steps = sum(r["steps"] for r in on.run.read_metrics())
    print(f"standardized: val P {on.eval.raw['P']:.3f}; raw inputs: val P {off.eval.raw['P']:.3f}; {steps} steps")
    assert steps <= 400
    assert on.eval.raw["P"] > 0.8
    assert off.eval.raw["P"] < 0.3


def test_statistics_are_recorded_kept_with_the_store_and_reapplied(scaled, scaled_runs, caplog):
    from train.results.evaluate import evaluate_run
    from train.results.restore import load_run
    from train.data.standardize import EXTRA_PREFIX, Standardizer

    run = scaled_runs[True].run
    recorded = Standardizer.load(run.standardization)
    stats = recorded.stats["scaled"]
    store = FeatureStore.open(store_path(scaled / "cache", "scaled"))
    assert stats.fingerprint == store.fingerprint
    assert stats.constant == [3] and stats.std[3] == 1.0 and stats.mean[3] == 5.0  # centred, not scaled
    assert 0.8e4 < stats.std[0] < 1.2e4 and 1e-4 < stats.std[1] < 1e-3
    kept = [k for k in store._root[f"_extras"].array_keys() if k.startswith(EXTRA_PREFIX)]
    assert len(kept) == 1  # computed once per (fingerprint, train groups), kept with the store
    np.testing.assert_array_equal(store.get_extra(kept[0])[0], np.stack([stats.mean, stats.std]))
    assert "| scaled |" in run.report.read_text() and "1 constant dims unscaled" in run.report.read_text()
    assert not scaled_runs[False].run.standardization.exists()

    loaded = load_run(run.path, run.path.parent, "cpu")
    assert loaded.standardizer is not None
    np.testing.assert_array_equal(loaded.standardizer.stats["scaled"].mean, stats.mean)
    again = evaluate_run(str(run.path), "val", str(run.path.parent), "cpu")
    assert abs(again.raw["P"] - scaled_runs[True].eval.raw["P"]) < 1e-4  # same statistics applied
    ds = loaded.dataset("val")
    try:
        from train.data.tensors import to_tensors

        batch = ds.collate(ds.track_windows[0])
        assert batch.standardizer is loaded.standardizer  # the batch stays raw, its tensors are standardized
        tb = to_tensors(batch, loaded.device)
        x = tb.features["scaled"][tb.masks["scaled"]].numpy()
        assert np.abs(x[:, :3].std(axis=0) - 1).max() < 0.3 and np.abs(x[:, 3]).max() < 1e-3
        assert (tb.features["scaled"][~tb.masks["scaled"]] == 0).all()  # frames without a value stay 0
    finally:
        ds.close()


def test_old_run_folders_open_with_their_raw_inputs_and_old_column_names(scaled_runs):
    from train.results.evaluate import evaluate_run
    from train.scoring.report import plot_learning_curves
    from train.results.restore import load_run

    run = scaled_runs[False].run
    rows = [json.loads(line) for line in run.metrics.read_text().splitlines()]
    assert "train_loss_ccc" in rows[0] and "train_ccc" not in rows[0]
    # make it look like a run folder from before: old column names, no `normalize` in its config
    run.metrics.write_text("".join(
        json.dumps({("train_ccc" if k == "train_loss_ccc" else k): v for k, v in r.items()}) + "\n" for r in rows))
    config = json.loads(run.config.read_text())
    del config["data"]["normalize"]
    run.config.write_text(json.dumps(config))
    assert run.read_metrics()[0]["train_loss_ccc"] == rows[0]["train_loss_ccc"]
    assert load_run(run.path, run.path.parent, "cpu").standardizer is None  # trained on raw inputs: read raw
    again = evaluate_run(str(run.path), "val", str(run.path.parent), "cpu")
    assert abs(again.raw["P"] - scaled_runs[False].eval.raw["P"]) < 1e-4
    plot_learning_curves(run.read_metrics(), run.path / "curves.png")


def test_store_writer_auto_keeps_float16_where_it_is_safe(tmp_path):
    store = FeatureStore.create_or_open(store_path(tmp_path, "auto"), FeatureMeta(name="auto"))
    times = np.stack([np.arange(100), np.arange(1, 101)], axis=1) / FPS
    rng = np.random.default_rng(0)
    store.write("emb", rng.normal(0, 0.03, size=(100, 8)), times, dtype="auto")
    store.write("offset", 0.5 + rng.normal(0, 1e-3, size=(100, 1)), times, dtype="auto")  # e.g. a brightness
    with store.writer("empty", (3,), "auto"):
        pass
    assert store.read("emb").values.dtype == np.float16 and store.read("offset").values.dtype == np.float32
    assert store.read("empty").values.dtype == np.float16


@pytest.mark.parametrize("command", [["evaluate", "--split", "val"], ["predict", "--split", "test"], ["export", "--name", "stacked"]])
def test_a_normalized_run_without_its_statistics_is_refused(scaled_runs, tmp_path, command):
    """Its standardization.json deleted, a run trained on standardized inputs is never scored, predicted
    or exported on raw ones: one line, exit 1 (it was P 0.678 -> 0.019 with exit 0)."""
    import shutil

    runs = tmp_path / "runs"
    copy = runs / "norm-True"
    shutil.copytree(scaled_runs[True].run.path, copy)
    (copy / "standardization.json").unlink()
    res = runner.invoke(app, [command[0], "norm-True", *command[1:], "--runs-dir", str(runs), "--device", "cpu"])
    assert res.exit_code == 1, res.output
    lines = [line for line in res.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "standardization.json is missing" in lines[0] and "data.normalize true" in lines[0], res.output
    (copy / "standardization.json").write_text("{not json")  # damaged: one line too
    res = runner.invoke(app, ["evaluate", "norm-True", "--runs-dir", str(runs), "--device", "cpu"])
    assert res.exit_code == 1 and "unreadable standardization record" in res.output and "Traceback" not in res.output


def test_statistics_follow_the_content_of_their_groups(tmp_path):
    """A train group re-extracted with other rows gets new statistics (the old ones are never reused), and
    `verify` reports the kept statistics that no longer match their groups, and removes them."""
    from cache.store import DERIVED_FROM
    from train.data.sources import open_features
    from train.data.standardize import EXTRA_PREFIX, compute_stats, fit_standardizer, train_groups
    from train.data.synthetic import SynthConfig, SynthTrack, make_synthetic

    tracks = [SynthTrack("a", "train", 25.0, 200), SynthTrack("b", "train", 25.0, 300), SynthTrack("c", "val", 25.0, 100)]
    make_synthetic(tmp_path / "data", tmp_path / "cache", SynthConfig(tracks=tracks))
    train = load_manifest(tmp_path / "data", splits=("train",)).split("train")
    before = fit_standardizer(open_features(tmp_path / "cache", ["clip"]), train).stats["clip"]

    store = FeatureStore.open(store_path(tmp_path / "cache", "clip"))
    old = store.read("b")
    FeatureStore.create_or_open(store.path, store.meta).write(  # as `extract --force` with another model run
        "b", old.values.astype(np.float32) + 2.0, old.times, old.valid,
        attrs={k: v for k, v in old.attrs.items() if k not in ("complete", "rows", "chunks", "content_digest")})
    sources = open_features(tmp_path / "cache", ["clip"])
    after = fit_standardizer(sources, train).stats["clip"]
    fresh = compute_stats(sources["clip"], train_groups(sources["clip"], train))
    np.testing.assert_allclose(after.mean, fresh.mean, rtol=0, atol=1e-9)  # computed again on the new rows
    assert np.abs(after.mean - before.mean).min() > 0.5 and after.tracks != before.tracks
    kept = [n for n in FeatureStore.open(store.path).extra_names() if n.startswith(EXTRA_PREFIX)]
    assert len(kept) == 2 and all(DERIVED_FROM in FeatureStore.open(store.path).get_extra(n)[1] for n in kept)
    current = [k for k in kept if FeatureStore.open(store.path).get_extra(k)[1]["tracks"] == after.tracks]
    assert len(current) == 1

    res = runner.invoke(app, ["verify", "clip", "--cache-dir", str(tmp_path / "cache"), "--dry-run"])
    assert res.exit_code == 0, res.output
    assert "1 stale" in res.output and "group b rewritten" in res.output, res.output
    res = runner.invoke(app, ["verify", "clip", "--cache-dir", str(tmp_path / "cache")])
    assert res.exit_code == 0 and "1 stale" in res.output and "removed" in res.output, res.output
    left = [n for n in FeatureStore.open(store.path).extra_names() if n.startswith(EXTRA_PREFIX)]
    assert left == current
    res = runner.invoke(app, ["verify", "clip", "--cache-dir", str(tmp_path / "cache")])
    assert res.exit_code == 0 and "stale" not in res.output, res.output
