"""`grada` face encoder: a timm EfficientNet + GRADA's 256-d embedding head, weights from one file.
The tiny profile builds a small model of the same class, saved and loaded back through the real loader;
the extractor runs on the sample with the tiny profile."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
torch.set_num_threads(1)

from cache.sample_data import SAMPLE_VIDEOS, SampleConfig, write_sample_dataset  # noqa: E402
from cache.store import FeatureStore, store_path  # noqa: E402
from extract.face_encoder import (  # noqa: E402
    TINY_SPEC, FaceEncoderExtractor, FaceEncoderSpec, build_face_encoder, load_face_encoder, save_face_encoder,
)
from extract.models import resolve_model_ref  # noqa: E402


def test_tiny_round_trip_through_the_real_loader(tmp_path):
    from timm.models.efficientnet import EfficientNet

    torch.manual_seed(0)
    model = build_face_encoder(TINY_SPEC).eval()
    path = save_face_encoder(model, tmp_path / "enc.safetensors")
    loaded = load_face_encoder(path)
    assert isinstance(loaded.model, EfficientNet) and loaded.spec == TINY_SPEC
    x = torch.randn(3, 3, TINY_SPEC.image_size, TINY_SPEC.image_size)
    with torch.no_grad():
        out = loaded(x)
        torch.testing.assert_close(out, model(x))
    assert out.shape == (3, 256) and float(out.abs().max()) <= 1.0  # tanh embeddings


def test_b1_is_the_real_architecture():
    model = build_face_encoder(FaceEncoderSpec())
    n = sum(p.numel() for p in model.parameters())
    assert model.model.num_features == 1280 and 6.5e6 < n < 7.0e6  # EfficientNet-B1 (6.5M) + 256-d head


def test_profiles_and_bad_files(tmp_path):
    ref = resolve_model_ref("face_encoder", "tiny", tmp_path / "models")
    assert Path(ref).is_file() and load_face_encoder(ref).spec == TINY_SPEC
    with pytest.raises(ValueError, match="give a reference"):
        resolve_model_ref("face_encoder", "full", tmp_path / "models")
    with pytest.raises(FileNotFoundError, match="--model grada="):
        load_face_encoder(tmp_path / "nope.safetensors")
    # a .pt checkpoint with GRADA's task heads besides the encoder loads (heads ignored)
    model = build_face_encoder(TINY_SPEC)
    state = {**model.state_dict(), "classifier.weight": torch.zeros(8, 256), "regression.weight": torch.zeros(2, 256)}
    torch.save({"spec": TINY_SPEC.__dict__, "state_dict": state}, tmp_path / "grada.pt")
    assert load_face_encoder(tmp_path / "grada.pt").spec == TINY_SPEC
    # weights of another architecture: one error naming the file
    torch.save({"spec": {**TINY_SPEC.__dict__, "embed_dim": 128}, "state_dict": state}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="other.pt: not a face encoder"):
        load_face_encoder(tmp_path / "other.pt")


def test_weights_are_part_of_the_fingerprint(tmp_path):
    torch.manual_seed(1)
    a = save_face_encoder(build_face_encoder(TINY_SPEC), tmp_path / "a.safetensors")
    torch.manual_seed(2)
    b = save_face_encoder(build_face_encoder(TINY_SPEC), tmp_path / "b.safetensors")
    fa = FaceEncoderExtractor(model_ref=str(a)).feature_meta().fingerprint
    fb = FaceEncoderExtractor(model_ref=str(b)).feature_meta().fingerprint
    assert fa != fb


def test_extract_on_the_sample_with_the_tiny_profile(tmp_path):
    from extract.runner import RunOptions
    from extract.backends import run_extraction

    data = tmp_path / "data"
    videos = tuple(v for v in SAMPLE_VIDEOS if v.stem == "video20")
    write_sample_dataset(data, SampleConfig(seed=0, min_seconds=2.0, max_seconds=2.0, videos=videos))
    opts = RunOptions(split="train", features=["grada"], data_root=data, cache_dir=tmp_path / "cache",
                      models_dir=tmp_path / "models", profile="tiny", device="cpu", progress=False, batch_size=16)
    summary = run_extraction(opts)
    assert summary.ok
    store = FeatureStore.open(store_path(tmp_path / "cache", "grada"))
    faces = FeatureStore.open(store_path(tmp_path / "cache", "faces")).read("video20")
    group = store.read("video20")
    assert group.values.shape == (len(faces.values), 256)
    assert group.valid.mean() > 0.8 and np.isfinite(group.values[group.valid]).all()
    assert store.meta.model_ref.startswith("tiny/face_encoder/")
