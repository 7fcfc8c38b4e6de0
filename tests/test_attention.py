"""DoubleAttention (A^2-Net) against the formula written position by position."""
import math

import pytest
import torch

from lightning_temporal.models.attention import DoubleAttention


def ref_double_attention(block, x):
    """Per sample, descriptor and position, with explicit softmax sums."""
    n, c, t, h, w = x.shape
    pos = [(i, j, k) for i in range(t) for j in range(h) for k in range(w)]
    wa, ba = block.conv_a.weight.flatten(1), block.conv_a.bias
    wb, bb = block.conv_b.weight.flatten(1), block.conv_b.bias
    wv, bv = block.conv_v.weight.flatten(1), block.conv_v.bias
    wo = block.conv_out.weight.flatten(1)
    bn = block.bn
    out = torch.empty_like(x)
    for s in range(n):
        feats = [x[s, :, i, j, k] for (i, j, k) in pos]
        a = [wa @ f + ba for f in feats]
        b = [wb @ f + bb for f in feats]
        v = [wv @ f + bv for f in feats]
        descriptors = []
        for d in range(block.c_n):
            den = sum(math.exp(bl[d].item()) for bl in b)
            descriptors.append(sum(math.exp(bl[d].item()) / den * al for al, bl in zip(a, b)))
        for p, (i, j, k) in enumerate(pos):
            den = sum(math.exp(v[p][d].item()) for d in range(block.c_n))
            zp = sum(math.exp(v[p][d].item()) / den * descriptors[d] for d in range(block.c_n))
            y = wo @ zp
            y = (y - bn.running_mean) / torch.sqrt(bn.running_var + bn.eps) * bn.weight + bn.bias
            out[s, :, i, j, k] = x[s, :, i, j, k] + y
    return out


def test_matches_formula():
    torch.manual_seed(0)
    block = DoubleAttention(6, c_m=3, c_n=4, zero_init=False).double().eval()
    with torch.no_grad():
        block.bn.running_mean.uniform_(-0.5, 0.5)
        block.bn.running_var.uniform_(0.5, 2.0)
    x = torch.randn(2, 6, 3, 2, 2, dtype=torch.float64)
    y, mask = block(x)
    assert mask is None
    torch.testing.assert_close(y, ref_double_attention(block, x))


def test_zero_init_is_identity_and_trains():
    torch.manual_seed(0)
    block = DoubleAttention(8)
    assert (block.c_m, block.c_n) == (2, 2)
    x = torch.randn(2, 8, 4, 3, 3, requires_grad=True)
    y, _ = block.eval()(x)
    torch.testing.assert_close(y, x)
    block.train()
    y, _ = block(x)
    (y * torch.randn_like(y)).sum().backward()
    assert block.bn.weight.grad.abs().sum() > 0  # the zero scale gets a gradient, so the block can learn


def test_attention_spans_time():
    # a change in one frame moves the output of every other frame (global descriptors over T*H*W)
    torch.manual_seed(0)
    block = DoubleAttention(4, zero_init=False).double().eval()
    x = torch.randn(1, 4, 5, 2, 2, dtype=torch.float64)
    x2 = x.clone()
    x2[:, :, 4] += 1.0
    y1, _ = block(x)
    y2, _ = block(x2)
    assert (y1[:, :, 0] - y2[:, :, 0]).abs().max() > 1e-6


@pytest.mark.parametrize("kwargs", [dict(in_channels=0), dict(in_channels=4, c_m=0), dict(in_channels=4, c_n=1.5)])
def test_bad_arguments_are_refused(kwargs):
    with pytest.raises(ValueError):
        DoubleAttention(**kwargs)
