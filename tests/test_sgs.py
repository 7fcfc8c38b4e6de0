"""SGS layer against an independent, element-by-element reference (SPEC §2)."""
import itertools
import math

import pytest
import torch

from lightning_temporal.models.sgs import (
    KERNELS,
    SIMILARITIES,
    SimilarityGuidedSampling,
    bin_weights,
    compact_bins,
    scale_to_bins,
    similarity_coordinates,
)

EPS = 1e-7


# ------------------------------------------------------------------------------------------------------------
# Independent reference: plain Python over samples, coordinates, bins and frames.
# ------------------------------------------------------------------------------------------------------------
def ref_embedding(layer, x):
    """z [N, T, D] written out: mean over H, W; Linear, ReLU, Linear; BatchNorm with running statistics."""
    lin1, lin2, bn = layer.embed[0], layer.embed[2], layer.norm
    n, c, t = x.shape[:3]
    z = torch.empty(n, t, layer.embed_dim, dtype=x.dtype)
    for i in range(n):
        for j in range(t):
            pooled = x[i, :, j].reshape(c, -1).mean(dim=1)
            h = torch.clamp(lin1.weight @ pooled + lin1.bias, min=0)
            e = lin2.weight @ h + lin2.bias
            z[i, j] = (e - bn.running_mean) / torch.sqrt(bn.running_var + bn.eps) * bn.weight + bn.bias
    return z


def ref_coordinates(zs, similarity, coords):
    """zs: list over t of lists over d. Returns (list over t of K-tuples, list of K reference sizes)."""
    t_len, d_len = len(zs), len(zs[0])
    mean = [sum(zs[t][d] for t in range(t_len)) / t_len for d in range(d_len)]
    norm2 = lambda v: math.sqrt(sum(a * a for a in v))
    out, ref = [], []
    if similarity == "magnitude":
        out = [(norm2(v),) for v in zs]
        ref = [max(o[0] for o in out)]
    elif similarity == "l2_to_mean":
        out = [(norm2([a - m for a, m in zip(v, mean)]),) for v in zs]
        ref = [max(norm2(v) for v in zs)]
    elif similarity == "l1_to_mean":
        out = [(sum(abs(a - m) for a, m in zip(v, mean)),) for v in zs]
        ref = [max(sum(abs(a) for a in v) for v in zs)]
    elif similarity == "cosine_to_mean":
        out = [(1 - sum(a * m for a, m in zip(v, mean)) / (norm2(v) * norm2(mean)),) for v in zs]
        ref = [1.0]
    elif similarity == "spherical":
        for v in zs:
            sph = [norm2(v)]
            for k in range(d_len - 2):
                sph.append(math.atan2(norm2(v[k + 1:]), v[k]))
            sph.append(math.atan2(v[-1], v[-2]) + math.pi)
            out.append(tuple(sph[c] for c in coords))
        ref = [max(norm2(v) for v in zs) if c == 0 else 1.0 for c in coords]
    return out, ref


def ref_sgs(layer, x, num_bins=None):
    """Per sample, per bin, per frame. Returns (list of [B'_n, C, H, W] outputs, list of B'_n)."""
    z = ref_embedding(layer, x)
    n, c, t = x.shape[:3]
    b = num_bins or t
    coords = layer.coordinates or (0,)
    outputs = []
    for i in range(n):
        deltas, refs = ref_coordinates(z[i].tolist(), layer.similarity, coords)
        k_len = len(coords)
        scaled = [[0.0] * k_len for _ in range(t)]
        for k in range(k_len):
            mx = max(deltas[j][k] for j in range(t))
            if mx > 1e-9 * (1 + refs[k]):
                for j in range(t):
                    scaled[j][k] = deltas[j][k] / mx * 2 * b
        bins = []
        for multi in itertools.product(range(b), repeat=k_len):
            psi = []
            for j in range(t):
                w = 1.0
                for k in range(k_len):
                    d = abs(scaled[j][k] - (2 * multi[k] + 1))
                    if layer.kernel == "linear":
                        w *= max(0.0, 1 + EPS - d)
                    else:
                        w *= 1.0 if d <= 1 else 0.0
                psi.append(w)
            active = sum(1 for w in psi if w > 0)
            if active == 0:
                continue  # empty bin: dropped
            if layer.normalize:
                psi = [w / active for w in psi]
            o = torch.zeros_like(x[i, :, 0])
            for j in range(t):
                o += psi[j] * x[i, :, j]
            bins.append(o)
        outputs.append(torch.stack(bins))
    return outputs, [len(o) for o in outputs]


def repeated_frames(seed=0, n=3, c=6, t=8, hw=3, dtype=torch.float64):
    """Clips with repeated frames (so some bins are empty): distinct, pairs, two values."""
    g = torch.Generator().manual_seed(seed)
    base = torch.randn(n, c, t, hw, hw, generator=g, dtype=dtype)
    # frames of very different energy, so that `magnitude` (||z_t||) also spreads over several bins
    base = base * torch.empty(n, 1, t, 1, 1, dtype=dtype).uniform_(0.05, 6.0, generator=g)
    patterns = [list(range(t)), [0, 0, 1, 1, 2, 3, 3, 3][:t], [0, 0, 0, 0, 1, 1, 1, 1][:t]]
    return torch.stack([base[i][:, patterns[i % 3]] for i in range(n)])


def make_layer(c=6, seed=0, **kw):
    torch.manual_seed(seed)
    layer = SimilarityGuidedSampling(c, **kw).double().eval()
    with torch.no_grad():  # non-trivial running statistics, so the BN formula is exercised
        layer.norm.running_mean.uniform_(-0.2, 0.2)
        layer.norm.running_var.uniform_(0.5, 2.0)
        layer.norm.weight.uniform_(0.5, 1.5)
        layer.norm.bias.uniform_(-0.3, 0.3)
    return layer


def assert_matches_ref(layer, x, out, mask, num_bins=None):
    ref, counts = ref_sgs(layer, x, num_bins)
    assert layer.last_num_bins.tolist() == counts
    assert out.shape[2] == max(counts)
    for i, (r, k) in enumerate(zip(ref, counts)):
        assert mask[i].tolist() == [True] * k + [False] * (out.shape[2] - k)
        torch.testing.assert_close(out[i, :, :k].transpose(0, 1), r, rtol=1e-9, atol=1e-12)
        assert torch.all(out[i, :, k:] == 0)
    return counts


# ------------------------------------------------------------------------------------------------------------
def test_embedding_matches_formula():
    layer = make_layer()
    x = repeated_frames()
    torch.testing.assert_close(layer.embedding(x), ref_embedding(layer, x))


@pytest.mark.parametrize("normalize", [True, False])
@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("similarity", SIMILARITIES)
def test_matches_loop_reference(similarity, kernel, normalize):
    layer = make_layer(similarity=similarity, kernel=kernel, normalize=normalize)
    x = repeated_frames(seed=1)
    out, mask = layer(x)
    counts = assert_matches_ref(layer, x, out, mask)
    total_bins = 8 ** len(layer.coordinates or (0,))
    assert max(counts) > 1  # not a trivial one-bin case
    assert min(counts) >= 1 and sum(counts) < 3 * total_bins  # some bins were empty and dropped


@pytest.mark.parametrize("coords", [(2,), (0, 3), (1, 7)])
def test_spherical_coordinate_subsets_match_reference(coords):
    layer = make_layer(similarity="spherical", coordinates=coords)
    x = repeated_frames(seed=2)
    out, mask = layer(x)
    assert_matches_ref(layer, x, out, mask)


@pytest.mark.parametrize("kernel", KERNELS)
def test_spherical_radius_only_is_magnitude(kernel):
    x = repeated_frames(seed=3)
    sph = make_layer(similarity="spherical", coordinates=(0,), kernel=kernel)
    mag = make_layer(similarity="magnitude", kernel=kernel)
    o1, m1 = sph(x)
    o2, m2 = mag(x)
    assert torch.equal(m1, m2)
    torch.testing.assert_close(o1, o2, rtol=0, atol=0)


@pytest.mark.parametrize("similarity", SIMILARITIES)
@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("mode", ["eval", "train"])
def test_degenerate_input_gives_one_bin_and_finite_gradients(similarity, kernel, mode):
    torch.manual_seed(0)
    layer = SimilarityGuidedSampling(16, similarity=similarity, kernel=kernel).train(mode == "train")
    frame = torch.randn(2, 16, 1, 4, 4)
    for x in (frame.expand(2, 16, 8, 4, 4).clone(), torch.zeros(2, 16, 8, 4, 4)):
        x.requires_grad_(True)
        out, mask = layer(x)
        assert out.shape[2] == 1 and mask.all() and layer.last_num_bins.tolist() == [1, 1]
        assert torch.isfinite(out).all()
        (out * torch.randn_like(out)).sum().backward()
        assert torch.isfinite(x.grad).all()
        for name, p in layer.named_parameters():
            assert p.grad is None or torch.isfinite(p.grad).all(), name
        layer.zero_grad()


def test_dropping_differs_per_sample_and_equals_single_sample_runs():
    layer = make_layer(similarity="l2_to_mean")
    x = repeated_frames(seed=5, n=3)
    x[2] = x[2, :, :1]  # static clip: one bin
    out, mask = layer(x)
    counts = layer.last_num_bins.tolist()
    assert counts[2] == 1 and counts[0] > counts[1] > 1  # three different B'
    assert out.shape[2] == counts[0]
    for i in range(3):
        single, m = layer(x[i : i + 1])
        assert single.shape[2] == counts[i] and m.all()
        torch.testing.assert_close(out[i : i + 1, :, : counts[i]], single)
        assert torch.all(out[i, :, counts[i] :] == 0)
        assert mask[i].tolist() == [True] * counts[i] + [False] * (out.shape[2] - counts[i])


def test_kept_bins_keep_order():
    # weights of 2 samples, 5 bins, 3 frames: kept bins (any weight > 0) move to the front in order
    w = torch.zeros(2, 5, 3)
    w[0, 1, 0], w[0, 3, 1], w[0, 4, 2] = 1.0, 2.0, 3.0
    w[1, 0, 0], w[1, 0, 1], w[1, 2, 2] = 4.0, 5.0, 6.0
    cw, mask, counts = compact_bins(w)
    assert counts.tolist() == [3, 2]
    assert mask.tolist() == [[True, True, True], [True, True, False]]
    torch.testing.assert_close(cw[0], w[0, [1, 3, 4]])
    torch.testing.assert_close(cw[1], torch.stack([w[1, 0], w[1, 2], torch.zeros(3)]))


@pytest.mark.parametrize("similarity", ["l2_to_mean", "spherical"])
def test_change_num_bins_at_inference(similarity):
    layer = make_layer(similarity=similarity)
    x = repeated_frames(seed=5)
    out8, _ = layer(x)
    assert layer.num_bins is None
    layer.num_bins = 3  # the one-line change of Table A.4
    out3, mask3 = layer(x)
    assert out3.shape[2] <= 3 ** len(layer.coordinates or (0,))
    assert_matches_ref(layer, x, out3, mask3, num_bins=3)
    assert layer.set_num_bins(None) is layer
    torch.testing.assert_close(layer(x)[0], out8)
    with pytest.raises(ValueError, match="num_bins"):
        layer.num_bins = 0


def test_block_size_equals_sgs_per_block():
    layer = make_layer(similarity="l2_to_mean", block_size=4)
    x = torch.cat([repeated_frames(seed=6), repeated_frames(seed=7)], dim=2)  # T = 16, 4 blocks
    out, mask = layer(x)
    plain = make_layer(similarity="l2_to_mean")
    blocks = [plain(x[:, :, 4 * j : 4 * j + 4]) for j in range(4)]
    bmax = max(b[0].shape[2] for b in blocks)
    assert out.shape == (3, 6, 4 * bmax, 3, 3)
    for j, (o, m) in enumerate(blocks):
        k = o.shape[2]
        torch.testing.assert_close(out[:, :, j * bmax : j * bmax + k], o)
        assert torch.all(out[:, :, j * bmax + k : (j + 1) * bmax] == 0)
        assert torch.equal(mask[:, j * bmax : j * bmax + k], m)
        assert not mask[:, j * bmax + k : (j + 1) * bmax].any()
    assert layer.last_num_bins.tolist() == mask.sum(1).tolist()
    with pytest.raises(ValueError, match="block_size"):
        layer(x[:, :, :6])


def _kink_margin(layer, x):
    """Smallest distance of any scaled Delta (other than the maximum, pinned at 2B) to a kink of the
    linear kernel: bin edges (even integers) and centres (odd integers)."""
    with torch.no_grad():
        z = layer.embedding(x)
        delta, ref = similarity_coordinates(z, layer.similarity, layer.coordinates)
        s = scale_to_bins(delta, ref, x.shape[2])
        top = s == s.amax(dim=1, keepdim=True)
        dist = (s - s.round()).abs()
        gap = (delta.amax(1) - delta.masked_fill(top, -1).amax(1)).min()  # argmax must not switch
        return float(dist[~top].min()), float(gap)


@pytest.mark.parametrize(
    "similarity,normalize,fast",
    [("l2_to_mean", True, False), ("l2_to_mean", False, True), ("magnitude", True, True),
     ("l1_to_mean", True, True), ("cosine_to_mean", True, True), ("spherical", True, True)],
)
def test_gradcheck_linear_away_from_kinks(similarity, normalize, fast):
    # the default configuration gets the full Jacobian; the others the (cheaper) random-projection check
    for seed in range(200):
        layer = make_layer(c=4, seed=seed, similarity=similarity, normalize=normalize)
        g = torch.Generator().manual_seed(seed)
        x = torch.randn(2, 4, 6, 2, 1, generator=g, dtype=torch.float64)
        margin, gap = _kink_margin(layer, x)
        if margin > 1e-3 and gap > 1e-3:
            break
    else:
        pytest.fail("no input away from the kinks found in 200 seeds")

    def f(inp):
        out, _ = layer(inp)
        return out

    x.requires_grad_(True)
    assert torch.autograd.gradcheck(f, (x,), eps=1e-6, atol=1e-6, rtol=1e-4, fast_mode=fast)


@pytest.mark.parametrize("kernel", KERNELS)
def test_gradient_reaches_embedding_mlp(kernel):
    torch.manual_seed(0)
    layer = SimilarityGuidedSampling(8, kernel=kernel)
    x = torch.randn(4, 8, 8, 3, 3)
    out, _ = layer(x)
    (out * torch.randn_like(out)).sum().backward()
    for mod in (layer.embed[0], layer.embed[2]):
        assert mod.weight.grad is not None and mod.weight.grad.abs().sum() > 0


def test_dirac_straight_through_gradient():
    # d Psi[b, t] / d Delta_t = 1[|Delta_t - beta_b| <= 1] / n_b (identity inside the bin window)
    delta = torch.tensor([[[0.5], [1.7], [3.2], [6.0]]], dtype=torch.float64, requires_grad=True)
    w = bin_weights(delta, 3, "dirac", normalize=True)  # [1, 3, 4]
    g = torch.randn_like(w)
    (w * g).sum().backward()
    expected = torch.zeros(4, dtype=torch.float64)
    for b in range(3):
        inside = [abs(delta[0, t, 0].item() - (2 * b + 1)) <= 1 for t in range(4)]
        n = max(1, sum(inside))
        assert w[0, b].tolist() == [1.0 / n if i else 0.0 for i in inside]
        for t in range(4):
            if inside[t]:
                expected[t] += g[0, b, t] / n
    torch.testing.assert_close(delta.grad[0, :, 0], expected)


def test_largest_delta_keeps_its_bin():
    # the largest Delta is scaled to exactly 2B and keeps the 1e-7 weight of the last bin
    delta = torch.tensor([[[0.3], [0.9], [1.0]]], dtype=torch.float32)
    s = scale_to_bins(delta, torch.ones(1, 1, 1), 3)
    assert s[0, 2, 0].item() == 6.0
    w = bin_weights(s, 3, "linear", normalize=False)
    assert 0 < w[0, 2, 2].item() < 2e-7  # 1 + 1e-7 rounds to 1 + 2**-23 in float32


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(in_channels=0), "in_channels"),
        (dict(in_channels=4, similarity="dot"), "similarity"),
        (dict(in_channels=4, kernel="gauss"), "kernel"),
        (dict(in_channels=4, num_bins=0), "num_bins"),
        (dict(in_channels=4, block_size=0), "block_size"),
        (dict(in_channels=4, coordinates=(0,)), "spherical"),
        (dict(in_channels=4, similarity="spherical", coordinates=(0, 8)), "coordinates"),
        (dict(in_channels=4, similarity="spherical", coordinates=(0, 1, 2), num_bins=64), "bins"),
    ],
)
def test_bad_arguments_are_refused(kwargs, match):
    with pytest.raises(ValueError, match=match):
        SimilarityGuidedSampling(**kwargs)


def test_wrong_input_shape_is_refused():
    with pytest.raises(ValueError, match=r"\[N, 4, T, H, W\]"):
        SimilarityGuidedSampling(4)(torch.randn(2, 3, 8, 4, 4))
