"""The head options that follow RAS's code (issue 21): the face transformer's post-norm block with the positional
encoding at every layer and an outer residual (`block: ras`), and the behaviour Mamba (`direction: causal`,
`block: ras`, `expand`, `regressor_hidden`), against small hand-computed cases."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from test_heads_util import make_batch
from train.heads import build_head
from train.heads.common import sinusoidal_encoding
from train.heads.transformer import RASEncoderLayer

torch.set_num_threads(1)


def _layer_norm(x: np.ndarray) -> np.ndarray:
    mu = x.mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(x.var(-1, keepdims=True) + 1e-5)


def _uniform_attention_layer(dim: int) -> RASEncoderLayer:
    """Queries and keys 0 (uniform attention over the valid keys), values and output the identity, the
    feed-forward's last layer 0: the layer is LN(LN(mean_valid(q) + q)) with q = x + PE."""
    layer = RASEncoderLayer(dim, heads=2, ffn_mult=1, dropout=0.0).eval()
    with torch.no_grad():
        w = torch.zeros(3 * dim, dim)
        w[2 * dim :] = torch.eye(dim)
        layer.attn.in_proj_weight.copy_(w)
        layer.attn.in_proj_bias.zero_()
        layer.attn.out_proj.weight.copy_(torch.eye(dim))
        layer.attn.out_proj.bias.zero_()
        layer.ff[-1].weight.zero_()
        layer.ff[-1].bias.zero_()
    return layer


def test_ras_layer_is_post_norm_with_positions_added_to_its_input():
    dim, T = 4, 5
    x = torch.randn(2, T, dim, generator=torch.Generator().manual_seed(0))
    valid = torch.tensor([[True] * 5, [True, True, True, False, False]])
    out = _uniform_attention_layer(dim)(x, key_padding_mask=~valid).detach().numpy()
    q = x.numpy() + sinusoidal_encoding(T, dim).numpy()
    for b in range(2):
        mean_valid = q[b][valid[b].numpy()].mean(0)
        expected = _layer_norm(_layer_norm(mean_valid + q[b]))
        np.testing.assert_allclose(out[b][valid[b].numpy()], expected[valid[b].numpy()], atol=1e-5)


def test_ras_block_adds_the_encoding_at_every_layer_with_an_outer_residual():
    """Two layers: x1 = x + L(x), x2 = x1 + L(x1), each L seeing its own input + PE (not the encoding once)."""
    dim, T = 4, 6
    head = build_head("transformer", {"clip": dim}, {"hidden": dim, "heads": 2, "layers": 2, "ffn_mult": 1,
                                                     "block": "ras", "dropout": 0.0}).eval()
    for i in range(2):
        head.blocks[i].load_state_dict(_uniform_attention_layer(dim).state_dict())
    f, m, pad = make_batch({"clip": dim}, [T], T)
    x0, _ = head.inputs(f, m, pad)
    x0 = x0.detach().numpy()[0]
    pe = sinusoidal_encoding(T, dim).numpy()

    def layer(x):
        q = x + pe
        return _layer_norm(_layer_norm(q.mean(0) + q))

    x1 = x0 + layer(x0)
    x2 = x1 + layer(x1)
    hidden = head(f, m, pad).hidden.detach().numpy()[0]
    np.testing.assert_allclose(hidden, x2, atol=1e-4)
    assert head.blocks[0].ff[0].out_features == dim  # ffn_mult 1: RAS's width


def test_transformer_block_options_are_checked():
    with pytest.raises(ValueError, match="block must be one of prenorm, ras"):
        build_head("transformer", {"clip": 8}, {"hidden": 8, "heads": 2, "block": "postnorm"})
    prenorm = build_head("transformer", {"clip": 8}, {"hidden": 8, "heads": 2})
    assert prenorm.encoder.layers[0].linear1.out_features == 32  # default 4x, pre-norm


@pytest.mark.parametrize("block", ["mambapy", "ras"])
def test_causal_mamba_does_not_see_the_future(block):
    opts = {"hidden": 16, "layers": 2, "d_state": 4, "d_conv": 3, "dropout": 0.0, "direction": "causal", "block": block}
    head = build_head("mamba", {"clip": 6}, opts).eval()
    f, m, pad = make_batch({"clip": 6}, [12], 12)
    before = head(f, m, pad).va.detach()
    changed = {"clip": f["clip"].clone()}
    changed["clip"][:, 7:] += 5.0  # frames 7.. change
    after = head(changed, m, pad).va.detach()
    torch.testing.assert_close(after[:, :7], before[:, :7])  # nothing earlier moves
    assert not torch.allclose(after[:, 7:], before[:, 7:])
    both = build_head("mamba", {"clip": 6}, {**opts, "direction": "bidirectional"}).eval()
    b0, b1 = both(f, m, pad).va.detach(), both(changed, m, pad).va.detach()
    assert not torch.allclose(b0[:, :7], b1[:, :7])  # the backward scan carries the future back


def test_ras_mamba_block_is_post_norm_with_expand_one_and_a_wide_regressor():
    head = build_head("mamba", {"clip": 6}, {"hidden": 16, "layers": 2, "d_state": 4, "d_conv": 3, "expand": 1,
                                             "direction": "causal", "block": "ras", "regressor": "mlp",
                                             "regressor_hidden": 24, "dropout": 0.0}).eval()
    stack = head.forward_scan
    assert head.backward_scan is None and isinstance(head.norm, torch.nn.Identity)
    assert stack.mixers[0].in_proj.out_features == 2 * 16  # expand 1: x and gate branches of width d_model
    assert head.va_head.mlp[0].out_features == 24 and head.va_head.mlp[-1].in_features == 24
    # post-norm: each block's output is a LayerNorm of (mixer(x) + x), so it has zero mean, unit variance per frame
    x = torch.randn(1, 9, 16)
    with torch.no_grad():
        y = stack.norms[0](stack.mixers[0](x) + x)
        z = stack(x)
        torch.testing.assert_close(z, stack.norms[1](stack.mixers[1](y) + y))
    torch.testing.assert_close(z.mean(-1), torch.zeros(1, 9), atol=1e-5, rtol=0)
    torch.testing.assert_close(z.var(-1, unbiased=False), torch.ones(1, 9), atol=1e-3, rtol=0)
    with pytest.raises(ValueError, match="direction must be one of bidirectional, causal"):
        build_head("mamba", {"clip": 6}, {"hidden": 16, "direction": "forward"})


def test_run_folders_written_with_bidirectional_still_build():
    from train.heads.mamba import MambaHeadConfig

    assert MambaHeadConfig.from_dict({"bidirectional": False}).direction == "causal"
    assert MambaHeadConfig.from_dict({"bidirectional": True}).direction == "bidirectional"
