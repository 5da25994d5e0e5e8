"""CCC loss against train/scoring/metrics.py, soft region labels, region KL and its gradient path."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from test_heads_util import SMALL, make_batch
from train.heads import build_head
from train.fit.losses import (
    VALossConfig, ccc_loss, ccc_per_window, input_mask, region_centres, region_kl_loss, regression_loss, soft_region_labels, va_loss,
)
from train.scoring.metrics import ccc

torch.set_num_threads(1)


def _data(seed=0, B=3, T=40):
    g = torch.Generator().manual_seed(seed)
    true = torch.rand(B, T, 2, generator=g) * 2 - 1
    pred = 0.6 * true + 0.3 * torch.randn(B, T, 2, generator=g) + 0.1
    mask = torch.rand(B, T, generator=g) > 0.3
    true[~mask] = -5.0  # invalid label frames
    return pred, true, mask


def test_ccc_loss_matches_metrics_ccc_on_valid_frames():
    pred, true, mask = _data()
    p, t, k = pred.numpy(), true.numpy(), mask.numpy()
    cv, ca = ccc(p[..., 0], t[..., 0], k), ccc(p[..., 1], t[..., 1], k)
    assert ccc_loss(pred, true, mask).item() == pytest.approx(1 - (cv + ca) / 2, abs=1e-5)
    assert ccc_loss(pred, true, mask, (1.0, 0.0)).item() == pytest.approx(1 - cv, abs=1e-5)
    assert ccc_loss(pred, true, mask, (0.3, 0.7)).item() == pytest.approx(0.3 * (1 - cv) + 0.7 * (1 - ca), abs=1e-5)


def test_ccc_loss_is_safe_with_few_frames():
    pred, true, mask = _data()
    pred.requires_grad_(True)
    for keep in (0, 1, 2):
        m = torch.zeros_like(mask)
        m.view(-1)[:keep] = True
        loss = ccc_loss(pred, true, m)
        (g,) = torch.autograd.grad(loss, pred)
        assert torch.isfinite(loss) and torch.isfinite(g).all()
    const = torch.zeros(1, 5, 2)
    assert ccc_loss(const, const, torch.ones(1, 5, dtype=torch.bool)).item() == pytest.approx(1.0)


def test_regression_terms():
    pred, true, mask = _data()
    e = (pred - true)[mask]
    assert regression_loss(pred, true, mask, "mae").item() == pytest.approx(e.abs().mean().item(), rel=1e-5)
    assert regression_loss(pred, true, mask, "mse").item() == pytest.approx((e**2).mean().item(), rel=1e-5)
    with pytest.raises(ValueError):
        regression_loss(pred, true, mask, "huber")


def test_soft_labels_sum_to_one_and_peak_at_nearest_centre():
    centres = region_centres()
    assert centres.shape == (9, 2)
    assert sorted(set(centres[:, 0].tolist())) == pytest.approx([-0.66, 0.0, 0.66])
    va = torch.rand(500, 2) * 2 - 1
    soft = soft_region_labels(va, centres, sigma=0.45)
    torch.testing.assert_close(soft.sum(-1), torch.ones(500))
    nearest = torch.cdist(va, centres).argmin(-1)
    assert torch.equal(soft.argmax(-1), nearest)
    d2 = ((va[:1, None] - centres) ** 2).sum(-1)
    ref = torch.exp(-d2 / (2 * 0.45**2))
    torch.testing.assert_close(soft[:1], ref / ref.sum())


def test_region_kl_is_zero_at_the_soft_labels_and_ignores_invalid_frames():
    _, true, mask = _data()
    logits = torch.log(soft_region_labels(torch.where(mask[..., None], true, 0)))
    assert region_kl_loss(logits, true, mask).item() == pytest.approx(0.0, abs=1e-6)
    assert region_kl_loss(torch.zeros_like(logits), true, mask).item() > 0.1
    noisy = logits.clone()
    noisy[~mask] = 50 * torch.randn_like(noisy[~mask])
    assert region_kl_loss(noisy, true, mask).item() == pytest.approx(0.0, abs=1e-6)
    assert region_kl_loss(logits, true, torch.zeros_like(mask)).item() == 0.0


def _grads(head, lam, f, m, pad, true, mask):
    head.zero_grad(set_to_none=True)
    total, parts = va_loss(head(f, m, pad), true, mask, VALossConfig(region_lambda=lam))
    total.backward()
    return {n: None if p.grad is None else p.grad.clone() for n, p in head.named_parameters()}, parts


@pytest.mark.parametrize("name", ["crossattn", "raav"])
def test_kl_term_changes_gradients_of_trainable_parameters(name):
    torch.manual_seed(0)
    dims = {"clip": 8, "ast": 6}
    protos = np.random.default_rng(1).normal(size=(9, 16))
    head = build_head(name, dims, {**SMALL[name], "region_prototypes": protos})
    f, m, pad = make_batch(dims, [12, 9], 12)
    true = torch.rand(2, 12, 2) * 2 - 1
    g0, parts0 = _grads(head, 0.0, f, m, pad, true, pad)
    g2, parts2 = _grads(head, 0.2, f, m, pad, true, pad)
    assert "kl" not in parts0 and parts2["kl"] > 0
    assert parts2["total"] == pytest.approx((parts2["ccc"] + 0.2 * parts2["kl"]).item(), rel=1e-5)
    for n in ("region.proj.weight", "region.proj.bias"):
        assert g0[n] is None or g0[n].abs().max() == 0
        assert g2[n].abs().max() > 0
    shared = [n for n in g0 if not n.startswith(("region.", "va_head.")) and g0[n] is not None]
    assert shared and any((g2[n] - g0[n]).abs().max() > 1e-7 for n in shared)
    assert head.region.prototypes.requires_grad is False


def test_va_loss_parts_and_config():
    pred, true, mask = _data()
    from train.heads import HeadOutput

    out = HeadOutput(va=pred.tanh(), hidden=torch.zeros(3, 40, 4))
    total, parts = va_loss(out, true, mask, VALossConfig(regression="mae", regression_weight=0.5))
    assert set(parts) == {"ccc", "mae", "fallback", "total"}  # no region logits -> no KL
    assert parts["fallback"].item() == 0.0
    assert total.item() == pytest.approx((parts["ccc"] + 0.5 * parts["mae"]).item(), rel=1e-6)
    with pytest.raises(ValueError, match="unknown"):
        VALossConfig.from_dict({"lambda": 0.2})
    assert VALossConfig.from_dict({"ccc_weights": [0.7, 0.3]}).ccc_weights == (0.7, 0.3)


def _out(va):
    from train.heads import HeadOutput

    return HeadOutput(va=va, hidden=torch.zeros(*va.shape[:2], 4))


def test_per_window_ccc_is_the_mean_of_each_windows_ccc_by_hand():
    # window 0: pred = true exactly (CCC 1); window 1: pred = -true for a zero-mean true (CCC -1)
    t0 = torch.tensor([[-1.0, 0.5], [0.0, -0.5], [1.0, 0.0], [0.0, 0.0]])
    t1 = torch.tensor([[0.5, 1.0], [-0.5, -1.0], [0.5, 1.0], [-0.5, -1.0]])
    true = torch.stack([t0, t1])
    pred = torch.stack([t0, -t1])
    mask = torch.ones(2, 4, dtype=torch.bool)
    np.testing.assert_allclose(ccc_per_window(pred, true, mask).numpy(), [[1, 1], [-1, -1]], atol=1e-6)
    total, parts = va_loss(_out(pred), true, mask, VALossConfig(ccc_over="window"))
    assert total.item() == pytest.approx(((1 - 1) + (1 - (-1))) / 2, abs=1e-6)  # mean of 0 and 2
    # pooled over the batch the same frames score otherwise: CCC of the 8 frames concatenated
    p, t = pred.reshape(-1, 2).numpy(), true.reshape(-1, 2).numpy()
    pooled = 1 - (ccc(p[:, 0], t[:, 0]) + ccc(p[:, 1], t[:, 1])) / 2
    assert va_loss(_out(pred), true, mask)[0].item() == pytest.approx(pooled, abs=1e-6)
    assert pooled != pytest.approx(1.0, abs=1e-3)
    # a window with fewer than ccc_min_frames valid frames is left out of the mean (window 1 has 2)
    m2 = mask.clone()
    m2[1, 2:] = False
    assert va_loss(_out(pred), true, m2, VALossConfig(ccc_over="window"))[0].item() == pytest.approx(0.0, abs=1e-6)


def test_loss_falls_back_to_mse_below_four_valid_frames():
    true = torch.tensor([[[0.5, -0.5], [0.1, 0.2], [0.3, 0.3], [0.0, 0.0], [0.9, 0.9]]])
    pred = torch.tensor([[[0.0, 0.0], [0.3, 0.0], [0.3, 0.3], [1.0, 1.0], [0.2, 0.2]]], requires_grad=True)
    three = torch.tensor([[True, True, True, False, False]])
    total, parts = va_loss(_out(pred), true, three)
    # RAS (ccc_mse_loss.py): nn.MSELoss over the valid frames, both dimensions: (0.25+0.25+0.04+0.04+0+0)/6
    assert total.item() == pytest.approx(0.58 / 6, abs=1e-6)
    assert parts["fallback"].item() == 1.0
    (g,) = torch.autograd.grad(total, pred)
    assert torch.isfinite(g).all() and g[0, 3:].abs().sum() == 0
    four = torch.tensor([[True, True, True, True, False]])
    total4, parts4 = va_loss(_out(pred), true, four)
    assert parts4["fallback"].item() == 0.0 and total4.item() == pytest.approx(ccc_loss(pred, true, four).item(), abs=1e-6)
    # the threshold is the recipe's; a regression kind named in the recipe is the fallback's kind
    assert va_loss(_out(pred), true, three, VALossConfig(ccc_min_frames=3))[1]["fallback"].item() == 0.0
    mae = va_loss(_out(pred), true, three, VALossConfig(regression="mae", regression_weight=0.01))[0]
    assert mae.item() == pytest.approx((0.5 + 0.5 + 0.2 + 0.2) / 6, abs=1e-6)
    with pytest.raises(ValueError, match="ccc_over"):
        VALossConfig(ccc_over="track")


def test_required_input_leaves_faceless_frames_out_of_the_loss_by_hand():
    # 5 labelled frames; the face feature is missing on frames 3 and 4, where the prediction is far off
    true = torch.tensor([[[0.5, -0.5], [-0.5, 0.5], [0.0, 0.0], [0.9, 0.9], [-0.9, -0.9]]])
    pred = torch.tensor([[[0.5, -0.5], [-0.5, 0.5], [0.0, 0.0], [-1.0, -1.0], [1.0, 1.0]]], requires_grad=True)
    labelled = torch.ones(1, 5, dtype=torch.bool)
    face = torch.tensor([[True, True, True, False, False]])
    mask = input_mask(labelled, {"grada": face, "wavlm": torch.zeros(1, 5, dtype=torch.bool)}, ["grada"])
    assert mask.tolist() == [[True, True, True, False, False]]
    assert input_mask(labelled, {"grada": face}, []).tolist() == [[True] * 5]  # default: every labelled frame
    cfg = VALossConfig(ccc_over="window", ccc_min_frames=1, regression="mse", regression_weight=1.0)
    total, parts = va_loss(_out(pred), true, mask, cfg)
    # frames 0-2 are predicted exactly: CCC 1 and MSE 0, so the loss is 0 and frames 3-4 get no gradient
    assert total.item() == pytest.approx(0.0, abs=1e-6)
    (g,) = torch.autograd.grad(total, pred)
    assert g[0, 3:].abs().sum() == 0
    # over all labelled frames the same prediction scores: V true (.5,-.5,0,.9,-.9) vs pred (.5,-.5,0,-1,1):
    # means 0 and 0, var_t 0.424, var_p 0.5, cov (0.25+0.25-1.8)/5 = -0.26 → CCC -0.52/0.924; A the same
    c = -0.52 / 0.924
    mse = (1.9**2 * 2) / 5  # per dimension, mean over the 5 frames
    assert va_loss(_out(pred), true, labelled, cfg)[0].item() == pytest.approx((1 - c) + mse, abs=1e-5)
    with pytest.raises(ValueError, match="loss.require_input names 'clip'"):
        input_mask(labelled, {"grada": face}, ["clip"])


def test_required_input_must_be_a_feature_of_the_run():
    from train.config import DataConfig, TrainConfig

    assert TrainConfig(model="gru", data=DataConfig(features=["grada"]), require_input=["grada"]).require_input == ["grada"]
    with pytest.raises(ValueError, match=r"loss.require_input names \['clip'\]"):
        TrainConfig(model="gru", data=DataConfig(features=["grada"]), require_input=["clip"])
