"""SGS layer against an independent, element-by-element reference, for both assignments (released and
interpolate)."""
import itertools
import math

import pytest
import torch

from lightning_temporal.models.sgs import (
    SIMILARITY_ASSIGNMENTS,
    KERNELS,
    SIMILARITIES,
    SimilarityGuidedSampling,
    bin_weights,
    compact_bins,
    interpolate_weights,
    merge_identical_bins,
    scale_to_bins,
    similarity_coordinates,
)

EPS = 1e-7
MERGE_TOL = 1e-6


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


def ref_coordinates(zs, similarity, coords, eps=0.0):
    """zs: list over t of lists over d. Returns (list over t of K-tuples, list of K reference sizes)."""
    t_len, d_len = len(zs), len(zs[0])
    mean = [sum(zs[t][d] for t in range(t_len)) / t_len for d in range(d_len)]
    norm2 = lambda v: math.sqrt(sum(a * a for a in v))
    out, ref = [], []
    if similarity == "magnitude":
        out = [(norm2(v),) for v in zs]
        ref = [max(o[0] for o in out)]
    elif similarity == "l2_to_mean":
        out = [(norm2([m - a + eps for a, m in zip(v, mean)]),) for v in zs]
        ref = [max(norm2(v) for v in zs)]
    elif similarity == "l1_to_mean":
        out = [(sum(abs(m - a + eps) for a, m in zip(v, mean)),) for v in zs]
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


def _ref_released_psi(deltas, refs, t, b, k_len, kernel, multi):
    """Released kernel values of one bin (multi-index `multi`) for every frame: Delta * 2B / max Delta,
    centres 2b + 1, max(0, 1 + eps - |d|) or 1[|d| <= 1], product over coordinates."""
    psi = []
    for j in range(t):
        w = 1.0
        for k in range(k_len):
            mx = max(deltas[i][k] for i in range(t))
            scaled = deltas[j][k] / mx * 2 * b if mx > 1e-9 * refs[k] else 0.0
            d = abs(scaled - (2 * multi[k] + 1))
            w *= max(0.0, 1 + EPS - d) if kernel == "linear" else (1.0 if d <= 1 else 0.0)
        psi.append(w)
    return psi


def _ref_interpolate_psi(deltas, refs, t, b, k_len, multi):
    """Linear-binning weights of one bin: min / max of Delta on centres 0 / B - 1, hat function
    max(0, 1 - |u - b|) (the linear split between the two nearest centres), product over coordinates."""
    psi = []
    for j in range(t):
        w = 1.0
        for k in range(k_len):
            lo = min(deltas[i][k] for i in range(t))
            hi = max(deltas[i][k] for i in range(t))
            u = (deltas[j][k] - lo) / (hi - lo) * (b - 1) if hi - lo > 1e-9 * refs[k] else 0.0
            w *= max(0.0, 1.0 - abs(u - multi[k]))
        psi.append(w)
    return psi


def ref_sgs(layer, x, num_bins=None):
    """Per sample, per bin, per frame. Returns (list of [B'_n, C, H, W] outputs, list of B'_n)."""
    z = ref_embedding(layer, x)
    n, c, t = x.shape[:3]
    b = num_bins or t
    coords = layer.coordinates or (0,)
    k_len = len(coords)
    outputs = []
    for i in range(n):
        deltas, refs = ref_coordinates(z[i].tolist(), layer.similarity, coords, layer.distance_eps)
        rows = []
        for multi in itertools.product(range(b), repeat=k_len):
            if layer.assignment == "released":
                psi = _ref_released_psi(deltas, refs, t, b, k_len, layer.kernel, multi)
            else:
                psi = _ref_interpolate_psi(deltas, refs, t, b, k_len, multi)
            active = sum(1 for w in psi if w > 0)
            if active == 0:
                continue  # empty bin: dropped
            if layer.assignment == "released" and layer.normalize:
                psi = [w / active for w in psi]
            rows.append(psi)
        if layer.assignment == "interpolate":
            # merge bins with the same normalised weights into the first such bin; output = weighted mean
            normed = [[w / sum(r) for w in r] for r in rows]
            groups = {}
            for j in range(len(rows)):
                first = next(g for g in range(len(rows)) if max(abs(p - q) for p, q in zip(normed[g], normed[j])) <= MERGE_TOL)
                groups.setdefault(first, [0.0] * t)
                groups[first] = [a + w for a, w in zip(groups[first], rows[j])]
            rows = [[w / sum(groups[g]) for w in groups[g]] for g in sorted(groups)]
        bins = []
        for psi in rows:
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
    if kw.get("kernel", "linear") != "linear" or kw.get("normalize"):
        kw.setdefault("assignment", "released")
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


# (assignment, kernel, normalize): every released kernel variant, and interpolate
CONFIGS = [("released", k, nz) for k in KERNELS for nz in (False, True)] + [("interpolate", "linear", False)]


@pytest.mark.parametrize("assignment,kernel,normalize", CONFIGS)
@pytest.mark.parametrize("similarity", SIMILARITIES)
def test_matches_loop_reference(similarity, assignment, kernel, normalize):
    layer = make_layer(similarity=similarity, kernel=kernel, normalize=normalize, assignment=assignment)
    x = repeated_frames(seed=1)
    out, mask = layer(x)
    counts = assert_matches_ref(layer, x, out, mask)
    total_bins = 8 ** len(layer.coordinates or (0,))
    assert max(counts) > 1  # not a trivial one-bin case
    assert min(counts) >= 1 and sum(counts) < 3 * total_bins  # some bins were empty and dropped


@pytest.mark.parametrize("assignment", SIMILARITY_ASSIGNMENTS)
@pytest.mark.parametrize("coords", [(2,), (0, 3), (1, 7)])
def test_spherical_coordinate_subsets_match_reference(coords, assignment):
    layer = make_layer(similarity="spherical", coordinates=coords, assignment=assignment)
    x = repeated_frames(seed=2)
    out, mask = layer(x)
    assert_matches_ref(layer, x, out, mask)


@pytest.mark.parametrize("assignment,kernel", [("released", "linear"), ("released", "dirac"), ("interpolate", "linear")])
def test_spherical_radius_only_is_magnitude(assignment, kernel):
    x = repeated_frames(seed=3)
    sph = make_layer(similarity="spherical", coordinates=(0,), kernel=kernel, assignment=assignment)
    mag = make_layer(similarity="magnitude", kernel=kernel, assignment=assignment)
    o1, m1 = sph(x)
    o2, m2 = mag(x)
    assert torch.equal(m1, m2)
    torch.testing.assert_close(o1, o2, rtol=0, atol=0)


@pytest.mark.parametrize("similarity", SIMILARITIES)
@pytest.mark.parametrize("assignment,kernel", [("released", "linear"), ("released", "dirac"), ("interpolate", "linear")])
@pytest.mark.parametrize("mode", ["eval", "train"])
def test_degenerate_input_gives_one_bin_and_finite_gradients(similarity, assignment, kernel, mode):
    torch.manual_seed(0)
    layer = SimilarityGuidedSampling(16, similarity=similarity, kernel=kernel, assignment=assignment)
    layer.train(mode == "train")
    frame = torch.randn(2, 16, 1, 4, 4)
    for x in (frame.expand(2, 16, 8, 4, 4).clone(), torch.zeros(2, 16, 8, 4, 4)):
        x.requires_grad_(True)
        out, mask = layer(x)
        assert out.shape[2] == 1 and mask.all() and layer.last_num_bins.tolist() == [1, 1]
        assert torch.isfinite(out).all()
        if assignment == "interpolate":  # the one bin is the frame itself, not a 1e-7 trace of it
            torch.testing.assert_close(out[:, :, 0], x[:, :, 0].detach(), rtol=1e-6, atol=1e-6)
        (out * torch.randn_like(out)).sum().backward()
        assert torch.isfinite(x.grad).all()
        for name, p in layer.named_parameters():
            assert p.grad is None or torch.isfinite(p.grad).all(), name
        layer.zero_grad()


@pytest.mark.parametrize("assignment", SIMILARITY_ASSIGNMENTS)
def test_dropping_differs_per_sample_and_equals_single_sample_runs(assignment):
    layer = make_layer(similarity="l2_to_mean", assignment=assignment)
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


@pytest.mark.parametrize("assignment", SIMILARITY_ASSIGNMENTS)
@pytest.mark.parametrize("similarity", ["l2_to_mean", "spherical"])
def test_change_num_bins_at_inference(similarity, assignment):
    layer = make_layer(similarity=similarity, assignment=assignment)
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


@pytest.mark.parametrize("assignment", SIMILARITY_ASSIGNMENTS)
def test_block_size_equals_sgs_per_block(assignment):
    layer = make_layer(similarity="l2_to_mean", block_size=4, assignment=assignment)
    x = torch.cat([repeated_frames(seed=6), repeated_frames(seed=7)], dim=2)  # T = 16, 4 blocks
    out, mask = layer(x)
    plain = make_layer(similarity="l2_to_mean", assignment=assignment)
    blocks = [plain(x[:, :, 4 * j : 4 * j + 4]) for j in range(4)]
    per_block = torch.stack([m.sum(1) for _, m in blocks], dim=1)  # [N, 4] kept bins of each block
    counts = per_block.sum(1)
    assert layer.last_num_bins.tolist() == counts.tolist()
    assert out.shape == (3, 6, int(counts.max()), 3, 3)
    for i in range(3):
        # the kept bins of block 0, then of block 1, ... then zero padding (independent of the other samples)
        expect = torch.cat([o[i, :, : int(per_block[i, j])] for j, (o, _) in enumerate(blocks)], dim=1)
        k = int(counts[i])
        torch.testing.assert_close(out[i, :, :k], expect)
        assert torch.all(out[i, :, k:] == 0)
        assert mask[i].tolist() == [True] * k + [False] * (out.shape[2] - k)
    with pytest.raises(ValueError, match="block_size"):
        layer(x[:, :, :6])


def _kink_margin(layer, x):
    """Smallest distance of any scaled Delta to a kink of the weights (released: bin edges and centres, the
    maximum excepted as it is pinned at 2B; interpolate: the centres, min and max excepted), and the gap
    between the largest (and smallest) Delta and the next (argmax / argmin must not switch)."""
    with torch.no_grad():
        z = layer.embedding(x)
        delta, ref = similarity_coordinates(z, layer.similarity, layer.coordinates, layer.distance_eps)
        b = x.shape[2]
        if layer.assignment == "released":
            s = scale_to_bins(delta, ref, b)
        else:
            lo, hi = delta.amin(1, keepdim=True), delta.amax(1, keepdim=True)
            s = (delta - lo) / (hi - lo) * (b - 1)
        top = s == s.amax(dim=1, keepdim=True)
        bottom = s == s.amin(dim=1, keepdim=True)
        pinned = top | bottom if layer.assignment == "interpolate" else top
        dist = (s - s.round()).abs()
        gap_top = (delta.amax(1) - delta.masked_fill(top, -1).amax(1)).min()
        gap_bottom = (delta.masked_fill(bottom, 1e9).amin(1) - delta.amin(1)).min()
        return float(dist[~pinned].min()), float(min(gap_top, gap_bottom))


@pytest.mark.parametrize(
    "assignment,similarity,normalize,fast",
    [("released", "l2_to_mean", False, False), ("released", "l2_to_mean", True, True),
     ("released", "magnitude", False, True), ("released", "l1_to_mean", False, True),
     ("released", "cosine_to_mean", False, True), ("released", "spherical", False, True),
     ("interpolate", "l2_to_mean", False, False), ("interpolate", "magnitude", False, True),
     ("interpolate", "l1_to_mean", False, True), ("interpolate", "cosine_to_mean", False, True),
     ("interpolate", "spherical", False, True)],
)
def test_gradcheck_linear_away_from_kinks(assignment, similarity, normalize, fast):
    # each assignment's default configuration gets the full Jacobian; the others the random-projection check
    for seed in range(200):
        layer = make_layer(c=4, seed=seed, similarity=similarity, normalize=normalize, assignment=assignment)
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
    # the Jacobian is not just the linear path (I -> O at fixed weights): the weights carry a gradient too
    w, _, _ = layer.weights(x)
    assert w.requires_grad


@pytest.mark.parametrize("assignment,kernel", [("released", "linear"), ("released", "dirac"), ("interpolate", "linear")])
def test_gradient_reaches_embedding_mlp(assignment, kernel):
    torch.manual_seed(0)
    layer = SimilarityGuidedSampling(8, kernel=kernel, assignment=assignment)
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
    # released: the largest Delta is scaled to exactly 2B and keeps the 1e-7 weight of the last bin
    delta = torch.tensor([[[0.3], [0.9], [1.0]]], dtype=torch.float32)
    s = scale_to_bins(delta, torch.ones(1, 1, 1), 3)
    assert s[0, 2, 0].item() == 6.0
    w = bin_weights(s, 3, "linear", normalize=False)
    assert 0 < w[0, 2, 2].item() < 2e-7  # 1 + 1e-7 rounds to 1 + 2**-23 in float32


def test_interpolate_weights_are_the_linear_split():
    # Delta 0.2 .. 1.0 on B = 5 centres: u = (Delta - 0.2) / 0.8 * 4 = 0, 1.5, 2.25, 4
    delta = torch.tensor([[[0.2], [0.5], [0.65], [1.0]]], dtype=torch.float64)
    w = interpolate_weights(delta, torch.ones(1, 1, 1, dtype=torch.float64), 5)[0]  # [B, T]
    expect = torch.tensor([[1, 0, 0, 0], [0, 0.5, 0, 0], [0, 0.5, 0.75, 0], [0, 0, 0.25, 0], [0, 0, 0, 1]],
                          dtype=torch.float64)
    torch.testing.assert_close(w, expect, rtol=0, atol=1e-15)
    # every frame's weights sum to 1, also for random Delta and two coordinates (product of 1-D weights)
    g = torch.Generator().manual_seed(0)
    for k in (1, 2):
        d = torch.rand(6, 32, k, generator=g, dtype=torch.float64)
        for b in (1, 2, 7, 32):
            ww = interpolate_weights(d, torch.ones(6, 1, k, dtype=torch.float64), b)
            assert ww.shape == (6, b ** k, 32)
            torch.testing.assert_close(ww.sum(1), torch.ones(6, 32, dtype=torch.float64), rtol=0, atol=1e-14)
            assert (ww > 0).sum(1).max() <= 2 ** k  # at most the 2 nearest centres per coordinate


def test_merge_identical_bins():
    # bins 0 and 2 hold the same frames in the same proportions (their means are equal): they merge; bin 1
    # holds the same frames in other proportions: it stays
    w = torch.tensor([[[0.2, 0.2, 0.0], [0.5, 0.1, 0.0], [0.4, 0.4, 0.0], [0.0, 0.0, 1.0]]], dtype=torch.float64)
    mask = torch.ones(1, 4, dtype=torch.bool)
    merged, m, counts = merge_identical_bins(w, mask)
    assert counts.tolist() == [3] and m.tolist() == [[True, True, True]]
    torch.testing.assert_close(merged[0], torch.tensor([[0.6, 0.6, 0.0], [0.5, 0.1, 0.0], [0.0, 0.0, 1.0]],
                                                       dtype=torch.float64))
    # padding rows never merge into real ones
    w2 = torch.cat([w, torch.zeros(1, 2, 3, dtype=torch.float64)], dim=1)
    mask2 = torch.tensor([[True, True, True, True, False, False]])
    merged2, m2, c2 = merge_identical_bins(w2, mask2)
    assert c2.tolist() == [3] and torch.equal(merged2, merged)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(in_channels=0), "in_channels"),
        (dict(in_channels=4, similarity="dot"), "similarity"),
        (dict(in_channels=4, kernel="gauss"), "kernel"),
        (dict(in_channels=4, assignment="nearest"), "assignment"),
        (dict(in_channels=4, kernel="dirac"), "released"),  # ordered (the default) has no kernel choice
        (dict(in_channels=4, normalize=True), "released"),
        (dict(in_channels=4, distance_eps=-1.0), "distance_eps"),
        (dict(in_channels=4, num_bins=0), "num_bins"),
        (dict(in_channels=4, block_size=0), "block_size"),
        (dict(in_channels=4, coordinates=(0,), assignment="interpolate"), "spherical"),
        (dict(in_channels=4, similarity="magnitude"), "assignment='interpolate' or 'released'"),
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


def test_feature_map_figure_renders_png(tmp_path):
    import matplotlib.image

    from lightning_temporal.plots.feature_maps import plot_sgs_feature_maps

    layer = make_layer(similarity="l2_to_mean")
    x = repeated_frames(seed=5)
    out, mask = layer(x)
    k = int(layer.last_num_bins[1])
    clip = torch.rand(3, 8, 12, 12)
    fig = plot_sgs_feature_maps(x, out, mask, channels=4, frames=8, clip=clip, sample=1)
    axes = fig.get_axes()
    shown = [ax for ax in axes if ax.get_images()]
    assert len(axes) == (1 + 2 * 4) * 8  # rows: frames, 4 input channels, 4 output channels
    assert len(shown) == 8 + 4 * 8 + 4 * k  # output rows show only the sample's real bins
    # an output panel shows exactly that bin's map
    panel = axes[(1 + 4) * 8 + 0].get_images()[0].get_array()
    torch.testing.assert_close(torch.as_tensor(panel.data, dtype=torch.float32), out[1, 0, 0].float())
    path = tmp_path / "sgs.png"
    fig.savefig(path)
    with open(path, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    assert matplotlib.image.imread(path).shape[0] > 100


def test_bf16_autocast_bins_in_float32():
    torch.manual_seed(0)
    layer = SimilarityGuidedSampling(16).eval()
    x = torch.randn(2, 16, 8, 4, 4)
    x[1] = x[1, :, :1]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out, mask = layer(x)
        w, _, _ = layer.weights(x)
    assert w.dtype == torch.float32  # binning math not in bf16
    assert torch.isfinite(out.float()).all() and layer.last_num_bins[1] == 1
    assert torch.equal(mask, torch.arange(out.shape[2]) < layer.last_num_bins.unsqueeze(1))
