import math

import pytest
import torch

from lightning_temporal.pooling import lengths_to_mask, softmax_temporal_pool


def formula(scores, gamma):
    """Softmax pooling written element by element in float64 Python: y_c = sum_t softmax_t(g s_.c)_t s_tc.

    scores: nested list [T][C]. Uses the shift by the max only to avoid overflow of exp (mathematically exact).
    """
    T, C = len(scores), len(scores[0])
    out = []
    for c in range(C):
        col = [float(scores[t][c]) for t in range(T)]
        m = max(col)
        w = [math.exp(gamma * (v - m)) for v in col]
        z = sum(w)
        out.append(sum(w[t] / z * col[t] for t in range(T)))
    return out


@pytest.mark.parametrize("gamma", [0.0, 0.3, 1.0, 2.0, 10.0, 50.0])
def test_matches_formula_elementwise(gamma):
    g = torch.Generator().manual_seed(int(gamma * 10))
    scores = torch.randn(3, 9, 4, generator=g) * 3  # B, T, C
    got = softmax_temporal_pool(scores.double(), gamma)
    assert got.shape == (3, 4)
    for b in range(3):
        want = torch.tensor(formula(scores[b].tolist(), gamma), dtype=torch.float64)
        torch.testing.assert_close(got[b], want, rtol=1e-12, atol=1e-12)
    # float32 agrees with the float64 formula to float32 precision
    got32 = softmax_temporal_pool(scores, gamma)
    assert got32.dtype == torch.float32
    torch.testing.assert_close(got32.double(), got, rtol=1e-5, atol=1e-5)


def test_gamma_zero_is_exactly_mean_and_large_gamma_exactly_max():
    scores = torch.randn(5, 16, 7, generator=torch.Generator().manual_seed(0)) * 4
    assert torch.equal(softmax_temporal_pool(scores, 0.0), scores.mean(-2))
    assert torch.equal(softmax_temporal_pool(scores, 0), scores.mean(-2))
    for g in (1e6, 1e9, math.inf):
        out = softmax_temporal_pool(scores, g)
        assert torch.isfinite(out).all()
        assert torch.equal(out, scores.amax(-2)), g
    # ties at the maximum: still exactly the max
    tied = torch.tensor([[2.0, -1.0], [2.0, 5.0], [0.5, 5.0]])
    assert torch.equal(softmax_temporal_pool(tied, 1e6), torch.tensor([2.0, 5.0]))


def test_large_logits_do_not_overflow():
    scores = torch.tensor([[1e30, -1e30], [3e30, 2e30], [2e30, -3e38]])
    out = softmax_temporal_pool(scores, 1e6)
    assert torch.equal(out, torch.tensor([3e30, 2e30]))
    out = softmax_temporal_pool(scores, 1e-30)  # gamma * s is O(1): a genuine soft pooling
    assert torch.isfinite(out).all()


def test_non_finite_scores():
    s = torch.tensor([[0.0, -math.inf, 1.0], [2.0, -math.inf, math.nan], [-math.inf, -math.inf, 0.0]])
    out = softmax_temporal_pool(s, 1.0)
    # class 0: the -inf clip has zero weight; the rest is the 2-clip formula
    assert out[0].item() == pytest.approx(formula([[0.0], [2.0]], 1.0)[0], rel=1e-6)
    assert out[1].item() == -math.inf  # every clip -inf
    assert math.isnan(out[2].item())  # NaN is not hidden
    mean = softmax_temporal_pool(s, 0.0)
    assert mean[0].item() == -math.inf and mean[1].item() == -math.inf and math.isnan(mean[2].item())
    assert softmax_temporal_pool(torch.tensor([[1.0], [math.inf]]), 2.0).item() == math.inf


def test_tensor_gamma_broadcasts():
    scores = torch.randn(2, 6, 3, generator=torch.Generator().manual_seed(1))
    gammas = torch.tensor([0.0, 0.5, 3.0, 1e6, math.inf])
    out = softmax_temporal_pool(scores, gammas.view(-1, 1, 1, 1))  # G, B, C
    assert out.shape == (5, 2, 3)
    for i, g in enumerate(gammas.tolist()):
        torch.testing.assert_close(out[i], softmax_temporal_pool(scores, g), rtol=0, atol=0)
    per_class = torch.tensor([0.0, 1.0, 1e6])
    out = softmax_temporal_pool(scores, per_class)
    torch.testing.assert_close(out[:, 0], scores[..., 0].mean(-1), rtol=0, atol=0)
    torch.testing.assert_close(out[:, 2], scores[..., 2].amax(-1), rtol=0, atol=0)
    torch.testing.assert_close(out[:, 1], softmax_temporal_pool(scores[..., 1:2], 1.0)[:, 0])


def test_mask_equals_pooling_each_video_alone():
    g = torch.Generator().manual_seed(2)
    lengths = [1, 4, 11, 7]
    videos = [torch.randn(n, 5, generator=g) for n in lengths]
    T = max(lengths)
    # padding holds garbage (NaN, huge values): it must not leak into the result or its gradient
    padded = torch.full((len(videos), T, 5), math.nan)
    padded[1, -1] = 1e30
    for i, v in enumerate(videos):
        padded[i, : len(v)] = v
    padded.requires_grad_(True)
    mask = lengths_to_mask(torch.tensor(lengths))
    assert mask.shape == (4, T) and mask.sum().item() == sum(lengths)
    for gamma in (0.0, 1.0, 7.5, 1e6, math.inf):
        out = softmax_temporal_pool(padded, gamma, mask=mask)
        for i, v in enumerate(videos):
            alone = softmax_temporal_pool(v, gamma)
            torch.testing.assert_close(out[i], alone, rtol=1e-6, atol=1e-6)
        (grad,) = torch.autograd.grad(out.sum(), padded)
        assert torch.isfinite(grad).all()
        assert (grad[~mask] == 0).all()
    tensor_gamma = torch.tensor([0.0, 1.0, 1e6]).view(3, 1, 1, 1)
    out = softmax_temporal_pool(padded, tensor_gamma, mask=mask)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out[1, 2], softmax_temporal_pool(videos[2], 1.0))


def test_mask_other_dim():
    # pooled dim is -3: scores [B, T, H, C], mask [B, T]
    s = torch.randn(2, 5, 3, 4, generator=torch.Generator().manual_seed(3))
    mask = lengths_to_mask(torch.tensor([5, 2]))
    out = softmax_temporal_pool(s, 2.0, dim=1, mask=mask)
    assert out.shape == (2, 3, 4)
    torch.testing.assert_close(out[1], softmax_temporal_pool(s[1, :2], 2.0, dim=0))
    torch.testing.assert_close(out[0], softmax_temporal_pool(s[0], 2.0, dim=0))


def test_gradient_matches_formula_and_is_finite_at_large_gamma():
    s = torch.randn(8, 3, generator=torch.Generator().manual_seed(4), dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x: softmax_temporal_pool(x, 1.7), (s,))
    for gamma in (1e6, 1e9):
        x = (torch.randn(4, 8, 3, generator=torch.Generator().manual_seed(5)) * 10).requires_grad_(True)
        out = softmax_temporal_pool(x, gamma)
        (grad,) = torch.autograd.grad(out.sum(), x)
        assert torch.isfinite(grad).all()
        # max pooling: gradient 1 at the arg-max clip, 0 elsewhere
        want = torch.zeros_like(x).scatter_(1, x.argmax(1, keepdim=True), 1.0)
        torch.testing.assert_close(grad, want)
    # gradient wrt a tensor gamma is finite too
    gam = torch.tensor(2.0, requires_grad=True)
    softmax_temporal_pool(torch.randn(6, 2), gam).sum().backward()
    assert torch.isfinite(gam.grad)


def test_bad_inputs_are_named():
    s = torch.randn(2, 4, 3)
    with pytest.raises(ValueError, match="gamma must be >= 0"):
        softmax_temporal_pool(s, -1.0)
    with pytest.raises(ValueError, match="gamma must be >= 0"):
        softmax_temporal_pool(s, torch.tensor([1.0, -2.0, 0.0]))
    with pytest.raises(ValueError, match="no valid position for item"):
        softmax_temporal_pool(s, 1.0, mask=torch.tensor([[True] * 4, [False] * 4]))
    with pytest.raises(ValueError, match="T=4"):
        softmax_temporal_pool(s, 1.0, mask=torch.ones(2, 3, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"mask must be \[\.\.\., T\] = \(2, 4\)"):
        softmax_temporal_pool(s, 1.0, mask=torch.ones(1, 4, dtype=torch.bool))  # would broadcast over the videos
    with pytest.raises(TypeError, match="bool"):
        softmax_temporal_pool(s, 1.0, mask=torch.ones(2, 4))
    with pytest.raises(ValueError, match="size 1 along the pooled dim"):
        softmax_temporal_pool(s, torch.ones(4, 1))
    with pytest.raises(TypeError, match="float tensor"):
        softmax_temporal_pool(torch.ones(2, 4, 3, dtype=torch.long), 1.0)


def test_pooling_gamma_that_overflows_float32_is_refused_and_1e6_is_max():
    """A float γ_p above float32's largest (1e39) was inf in the computation: 0 * inf = NaN at each maximum."""
    s = torch.tensor([[[1.0, -2.0], [3.0, 5.0], [2.0, 4.0]]])          # [B=1, T=3, C=2]
    with pytest.raises(ValueError, match=r"gamma = 1e\+39 overflows float32 \(largest 3\.403e\+38\)"):
        softmax_temporal_pool(s, 1e39)
    assert torch.equal(softmax_temporal_pool(s, 1e6), s.amax(1))      # the seed's max pooling
    assert torch.equal(softmax_temporal_pool(s.double(), 1e39), s.double().amax(1))  # representable in float64
    assert torch.equal(softmax_temporal_pool(s, float("inf")), s.amax(1))
