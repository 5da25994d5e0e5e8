"""dcmmoe experts and gate; raav reliability gating and the audio bottleneck's fallback."""

from __future__ import annotations

import pytest
import torch

from test_heads_util import SMALL, make_batch
from train.heads import build_head

torch.set_num_threads(1)
TRI = {"face": 8, "qwen": 6, "wavlm": 10}


@pytest.mark.parametrize("dims", [{"clip": 8, "ast": 6}, TRI])
def test_dcmmoe_has_one_expert_per_ordered_pair(dims):
    head = build_head("dcmmoe", dims, SMALL["dcmmoe"])
    M = len(dims)
    assert len(head.experts) == M * (M - 1) == len(set(head.expert_pairs))
    assert all(q != k for q, k in head.expert_pairs)
    f, m, pad = make_batch(dims, [7, 5], 7)
    gate = head(f, m, pad).extras["gate"]
    assert gate.shape == (2, 7, M * (M - 1))


def test_dcmmoe_gate_is_a_distribution_that_follows_the_input():
    torch.manual_seed(0)
    head = build_head("dcmmoe", TRI, SMALL["dcmmoe"]).eval()
    f, m, pad = make_batch(TRI, [9, 9], 9)
    with torch.no_grad():
        g1 = head(f, m, pad).extras["gate"]
        f2 = dict(f, face=f["face"] + torch.randn_like(f["face"]))
        g2 = head(f2, m, pad).extras["gate"]
    torch.testing.assert_close(g1.sum(-1), torch.ones(2, 9))
    assert (g1 - g2).abs().max() > 1e-4


def test_dcmmoe_gate_ignores_experts_without_query_or_keys():
    torch.manual_seed(0)
    head = build_head("dcmmoe", TRI, SMALL["dcmmoe"]).eval()
    f, m, pad = make_batch(TRI, [8, 8], 8)
    m["wavlm"][:] = False
    m["face"][0, :3] = False
    with torch.no_grad():
        gate = head(f, m, pad).extras["gate"]
    pairs = head.expert_pairs
    for e, (q, k) in enumerate(pairs):
        if "wavlm" in (q, k):
            assert gate[..., e].abs().max() == 0
    face_q = [e for e, (q, _) in enumerate(pairs) if q == "face"]
    assert gate[0, :3, face_q].abs().max() == 0
    torch.testing.assert_close(gate.sum(-1), torch.ones(2, 8))


def _raav(dims, **cfg):
    torch.manual_seed(0)
    return build_head("raav", dims, {**SMALL["raav"], **cfg}).eval()


def test_raav_stream_weights_renormalise_over_valid_streams():
    head = _raav(TRI, priors={"face": 0.85, "qwen": 0.15})
    assert head.visual == ["face", "qwen"] and head.audio == ["wavlm"]
    f, m, pad = make_batch(TRI, [10, 10], 10)
    m["qwen"][0, :4] = False
    m["face"][1, 5:] = False
    m["qwen"][1, 8:] = False
    with torch.no_grad():
        out = head(f, m, pad)
    w, z = out.extras["stream_weights"], out.extras["z_vis"]
    assert torch.all(w[0, :4] == torch.tensor([1.0, 0.0]))
    assert torch.all(w[1, 5:8] == torch.tensor([0.0, 1.0]))
    assert torch.all(w[1, 8:] == 0) and torch.all(z[1, 8:] == 0)  # no valid stream: zeroed frame
    both = torch.ones(2, 10, dtype=torch.bool)
    both[0, :4] = False
    both[1, 5:] = False
    torch.testing.assert_close(w.sum(-1)[both], torch.ones(int(both.sum())))
    assert torch.isfinite(out.va).all()


def test_raav_priors_shift_weights_and_unknown_prior_names_raise():
    f, m, pad = make_batch(TRI, [6], 6)
    with torch.no_grad():
        w_eq = _raav(TRI)(f, m, pad).extras["stream_weights"]
        w_face = _raav(TRI, priors={"face": 0.99, "qwen": 0.01})(f, m, pad).extras["stream_weights"]
    assert (w_face[..., 0] > w_eq[..., 0]).all()
    with pytest.raises(ValueError, match="not visual"):
        _raav(TRI, priors={"wavlm": 0.5})


def test_raav_frames_without_valid_audio_keep_the_visual_sequence():
    head = _raav(TRI)
    f, m, pad = make_batch(TRI, [10, 10], 10)
    m_part = {k: v.clone() for k, v in m.items()}
    m_part["wavlm"][0, 3:7] = False
    m_none = {k: v.clone() for k, v in m.items()}
    m_none["wavlm"][:] = False
    with torch.no_grad():
        part, none = head(f, m_part, pad), head(f, m_none, pad)
        other_audio = head(dict(f, wavlm=torch.randn_like(f["wavlm"])), m_none, pad)
    torch.testing.assert_close(none.extras["z0"], none.extras["z_vis"])
    torch.testing.assert_close(part.extras["z0"][0, 3:7], none.extras["z0"][0, 3:7])
    assert (part.extras["z0"][0, :3] - none.extras["z0"][0, :3]).abs().max() > 1e-4
    torch.testing.assert_close(other_audio.va, none.va)  # invalid audio is never read

    row_head = _raav(TRI, audio_fallback="row")
    with torch.no_grad():
        row = row_head(f, m_part, pad)
    assert (row.extras["z0"][0, 3:7] - row.extras["z_vis"][0, 3:7]).abs().max() > 1e-4


def test_raav_reliability_from_mask_or_feature():
    dims = {**TRI, "audio_reliability": 3}
    head = _raav(dims)
    assert "audio_reliability" not in head.visual + head.audio
    f, m, pad = make_batch(dims, [10, 10], 10)
    reliable = torch.ones(2, 10, dtype=torch.bool)
    reliable[1, 2:6] = False
    f["audio_reliability"][..., -1] = reliable.float()
    m_flag = {k: v for k, v in m.items() if k != "audio_reliability"}
    f_plain = {k: v for k, v in f.items() if k != "audio_reliability"}
    with torch.no_grad():
        by_feature = head(f, m, pad)
        by_mask = head(f_plain, {**m_flag, "audio_reliability": reliable}, pad)
        unflagged = head(f_plain, m_flag, pad)
    torch.testing.assert_close(by_feature.va, by_mask.va)
    torch.testing.assert_close(by_feature.extras["audio_reliable"], reliable)
    torch.testing.assert_close(by_feature.extras["z0"][1, 2:6], by_feature.extras["z_vis"][1, 2:6])
    assert (unflagged.va - by_mask.va).abs().max() > 1e-5
