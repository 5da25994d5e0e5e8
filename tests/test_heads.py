"""Contract tests every head must pass: shapes, range, missing modalities, padding, learning."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from test_heads_util import DIMS, SMALL, extend, make_batch
from train.heads import HEADS, HeadConfig, HeadOutput, build_head, register_head
from train.heads.common import split_modalities
from train.fit.losses import ccc_loss

torch.set_num_threads(1)
NAMES = sorted(SMALL)
PROTOS = np.random.default_rng(0).normal(size=(9, 8)).tolist()


def test_registry_has_every_head():
    assert set(NAMES) <= set(HEADS)


def test_unknown_head_and_unknown_option_raise_clearly():
    with pytest.raises(KeyError, match="unknown head"):
        build_head("nope", DIMS)
    with pytest.raises(ValueError, match="unknown .* option.*'layerz'"):
        build_head("transformer", DIMS, {"layerz": 3})
    with pytest.raises(ValueError, match="not among"):
        build_head("gru", DIMS, {"visual": ["face"]})


def test_register_head_rejects_a_second_class_under_a_taken_name():
    with pytest.raises(ValueError, match="already registered"):
        register_head("gru")(type("Other", (), {}))


def test_default_modality_split():
    dims = {"clip": 4, "ast": 4, "wavlm": 4, "audio_pool": 4, "qwen": 4, "audio_reliability": 2}
    visual, audio = split_modalities(dims, HeadConfig())
    assert visual == ["clip", "qwen"] and audio == ["ast", "wavlm", "audio_pool"]
    visual, audio = split_modalities(dims, HeadConfig(visual=["clip"]))
    assert visual == ["clip"] and audio == ["ast", "wavlm", "audio_pool", "qwen"]


def test_config_accepts_dataclass_and_round_trips():
    cfg = HEADS["transformer"].config_class.from_dict({"hidden": 32, "region_prototypes": np.ones((9, 4))})
    head = build_head("transformer", DIMS, cfg)
    assert head.cfg is cfg
    assert cfg.to_dict()["region_prototypes"] == np.ones((9, 4)).tolist()


@pytest.mark.parametrize("name", NAMES)
def test_shapes_range_and_region_logits(name):
    torch.manual_seed(0)
    head = build_head(name, DIMS, {**SMALL[name], "region_prototypes": PROTOS})
    f, m, pad = make_batch(DIMS, [10, 7], 10)
    out = head(f, m, pad)
    assert isinstance(out, HeadOutput)
    assert out.va.shape == (2, 10, 2) and out.hidden.shape == (2, 10, 32)
    assert out.region_logits is not None and out.region_logits.shape == (2, 10, 9)
    assert out.va.abs().max() <= 1 and torch.isfinite(out.va).all()
    assert out.region_logits.abs().max() <= 10 + 1e-4
    plain = build_head(name, DIMS, SMALL[name])
    assert plain(f, m, pad).region_logits is None


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("missing", ["clip", "ast"])
def test_finite_when_a_modality_is_missing_everywhere(name, missing):
    torch.manual_seed(0)
    head = build_head(name, DIMS, {**SMALL[name], "region_prototypes": PROTOS})
    f, m, pad = make_batch(DIMS, [9, 6], 9)
    f[missing] = torch.full_like(f[missing], float("nan"))  # values of missing frames must never be read
    m[missing] = torch.zeros_like(m[missing])
    out = head(f, m, pad)
    for t in (out.va, out.hidden, out.region_logits):
        assert torch.isfinite(t).all()
    (out.va.sum() + out.region_logits.sum()).backward()
    assert all(torch.isfinite(p.grad).all() for p in head.parameters() if p.grad is not None)


@pytest.mark.parametrize("name", NAMES)
def test_padding_invariance(name):
    torch.manual_seed(0)
    head = build_head(name, DIMS, SMALL[name]).eval()
    f, m, pad = make_batch(DIMS, [11, 8, 5], 11)
    m["ast"][1, 2:4] = False  # a missing stretch inside a row
    with torch.no_grad():
        a = head(f, m, pad)
        b = head(*extend(f, m, pad, 6))
    for row, n in enumerate([11, 8, 5]):
        torch.testing.assert_close(b.va[row, :n], a.va[row, :n], atol=2e-5, rtol=1e-4)


@pytest.mark.parametrize("name", NAMES)
def test_few_steps_reduce_loss_on_toy_problem(name):
    torch.manual_seed(0)
    head = build_head(name, DIMS, SMALL[name])
    f, m, pad = make_batch(DIMS, [16, 16, 12, 10], 16, seed=3)
    w = torch.randn(DIMS["clip"], 2, generator=torch.Generator().manual_seed(5)) * 0.5
    target = torch.tanh(f["clip"] @ w)
    opt = torch.optim.Adam(head.parameters(), lr=3e-3)
    losses = []
    for _ in range(25):
        opt.zero_grad()
        loss = ccc_loss(head(f, m, pad).va, target, pad)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.6 * losses[0], losses


def test_gru_rejects_non_trailing_padding():
    head = build_head("gru", DIMS, SMALL["gru"])
    f, m, pad = make_batch(DIMS, [6], 6)
    pad[0, 2] = False
    with pytest.raises(ValueError, match="prefix"):
        head(f, m, pad)


@pytest.mark.parametrize("name", NAMES)
def test_finite_with_an_all_padding_row(name):
    torch.manual_seed(0)
    head = build_head(name, DIMS, {**SMALL[name], "region_prototypes": PROTOS})
    f, m, pad = make_batch(DIMS, [6, 0], 6)
    out = head(f, m, pad)
    assert torch.isfinite(out.va).all() and torch.isfinite(out.region_logits).all()


def test_bigru_unpacked_on_full_windows_equals_packed_and_packs_shorter_ones():
    """Full windows run unpacked (the fast path): same outputs and gradients as packing; a batch with a
    shorter window is packed: its real frames equal the window run alone, whatever its padding holds."""
    from torch import nn

    from train.heads.common import BiGRUEncoder

    torch.manual_seed(0)
    enc = BiGRUEncoder(8, 6, 5)
    x = torch.randn(3, 12, 8, requires_grad=True)
    full = torch.full((3,), 12)
    fast = enc(x, full)
    packed = nn.utils.rnn.pack_padded_sequence(x, full, batch_first=True, enforce_sorted=False)
    ref = enc.out(nn.utils.rnn.pad_packed_sequence(enc.gru(packed)[0], batch_first=True, total_length=12)[0])
    torch.testing.assert_close(fast, ref, atol=1e-6, rtol=1e-5)
    g_fast = torch.autograd.grad(fast.square().sum(), [x, *enc.parameters()])
    g_ref = torch.autograd.grad(ref.square().sum(), [x, *enc.parameters()])
    for a, b in zip(g_fast, g_ref):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)
    lengths = torch.tensor([12, 7, 12])
    noisy = x.detach().clone()
    noisy[1, 7:] = 100.0  # padding content must not reach the real frames of a shorter window
    out = enc(noisy, lengths)
    alone = enc(x.detach()[1:2, :7], torch.tensor([7]))
    torch.testing.assert_close(out[1, :7], alone[0], atol=1e-6, rtol=1e-5)
    assert not torch.allclose(out[1, :7], fast[1, :7].detach(), atol=1e-3)  # the backward pass starts at frame 7
    torch.testing.assert_close(out[0], fast[0].detach(), atol=1e-6, rtol=1e-5)
