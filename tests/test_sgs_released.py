"""assignment="released" against a transcription of the authors' released forward, and what each assignment
does to redundant clips (static, two states, k states).

The transcription follows the released PySlowFast fork "Similarity-Guided-Sampling" step by step, in its own
layout ([N, D, T] embeddings) and its own order of operations: ``TSLayer.forward`` (adaptive average pool,
fc, BatchNorm1d over D), ``distance_functions.LP(2)`` (``pairwise_distance(mean, z)`` of the torch of that
time: ||mean - z + 1e-6|| over dim 1, i.e. over D), ``TemporalSampler.forward`` (distances * (2B / max),
``create_bins`` from 0 to the scaled max, the per-sample drop loop, ``bmm``, ``mask = output.sum(2) != 0``)
and ``LinearKernel.forward`` (max(0, 1 + 1e-7 - |d - mu|), unnormalised: every released config has
``KERNEL_TYPE: linear``).
"""
import pytest
import torch
from torch import nn

from lightning_temporal.models.registry import build_backbone
from lightning_temporal.models.sgs import (
    RELEASED_CONFIG,
    SimilarityGuidedSampling,
    compact_bins,
    interpolate_weights,
    merge_identical_bins,
)


# ------------------------------------------------------------------------------------------------------------
# Transcription of the released forward
# ------------------------------------------------------------------------------------------------------------
def released_forward(fc, bn, x, num_bins=-1):
    """x [N, C, T, H, W] -> (output [N, C, B', H, W], kept [N, B] bool, mask [N, B'], kernels [N, B, T])."""
    n, c, t, _, _ = x.shape
    feature_down = nn.functional.adaptive_avg_pool3d(x, (t, 1, 1)).view(n, c, t)
    temporal_features = feature_down.transpose(1, 2).reshape(n, t, -1)  # [N, T, C]
    fc_out = fc(temporal_features).transpose(1, 2)  # [N, D, T]
    emb = bn(fc_out)
    b = t if num_bins == -1 else num_bins
    mean = emb.mean(dim=2, keepdim=True)  # [N, D, 1]
    distances = torch.norm(mean - emb + 1e-6, p=2, dim=1)  # [N, T]: pairwise_distance(mean, emb)
    max_distances = distances.max(dim=1)[0].view(-1, 1)
    distances = distances * (2 * b / max_distances)
    max_distances = distances.max(dim=1)[0].view(-1, 1)
    steps_size = max_distances / b  # create_bins(0, max, B)
    mu_start = steps_size / 2
    bins = torch.arange(b, dtype=x.dtype).view(1, -1) * steps_size + mu_start  # [N, B]
    bins = bins.unsqueeze(2).expand(-1, -1, t)  # [N, B, T]
    dist = distances.unsqueeze(1).expand(-1, b, -1)  # [N, B, T]
    kernels = torch.clamp(1 + 1e-7 - torch.abs(dist - bins), min=0)
    active_bins = kernels.sum(dim=2)  # the drop loop, as released: nonzero bins to the front, zeros after
    kept = active_bins != 0
    dropped = kernels.clone()
    max_active = 0
    for i in range(n):
        idx = active_bins[i].nonzero().view(-1)
        front = torch.arange(idx.shape[0])
        dropped[i][front] = kernels[i][idx]
        dropped[i][front[-1] + 1:] = 0.0
        max_active = max(max_active, idx.shape[0])
    dropped = dropped[:, :max_active]
    inp = x.permute(0, 2, 1, 3, 4).flatten(start_dim=2)  # [N, T, C*H*W]
    output = torch.bmm(dropped, inp)  # [N, B', C*H*W]
    mask = output.sum(2) != 0
    output = output.view(n, max_active, *x.shape[1:2], *x.shape[3:]).transpose(1, 2)
    return output, kept, mask, kernels


def released_layer(c, seed=0, dtype=torch.float64, **kw):
    torch.manual_seed(seed)
    layer = SimilarityGuidedSampling(c, **{**RELEASED_CONFIG, **kw}).to(dtype)
    with torch.no_grad():  # non-trivial BatchNorm statistics and affine parameters
        layer.norm.running_mean.uniform_(-0.3, 0.3)
        layer.norm.running_var.uniform_(0.5, 2.0)
        layer.norm.weight.uniform_(0.5, 1.5)
        layer.norm.bias.uniform_(-0.3, 0.3)
    return layer


def batches(c=6, t=16, hw=3, dtype=torch.float64, seed=0):
    """random, static, two equal states, 10/22-like split, three states, and all of them in one batch."""
    g = torch.Generator().manual_seed(seed)
    states = torch.randn(4, c, 3, hw, hw, generator=g, dtype=dtype)
    rand = torch.randn(2, c, t, hw, hw, generator=g, dtype=dtype)
    static = states[:1, :, :1].expand(1, c, t, hw, hw).contiguous()
    two = states[1:2][:, :, torch.tensor([0] * (t // 2) + [1] * (t - t // 2))]
    split = states[2:3][:, :, torch.tensor([0] * (5 * t // 16) + [1] * (t - 5 * t // 16))]
    three = states[3:4][:, :, torch.tensor([0] * (t // 4) + [1] * (t // 2) + [2] * (t - t // 4 - t // 2))]
    mixed = torch.cat([rand[:1], static, two, split, three])
    return {"random": rand, "static": static, "two_states": two, "split": split, "three_states": three,
            "mixed": mixed}


def compare(layer, x, num_bins=None, atol=1e-5):
    out, mask = layer(x)
    with torch.no_grad():
        ref, kept, ref_mask, _ = released_forward(layer.embed, layer.norm, x, -1 if num_bins is None else num_bins)
    # same kept bins (which of the B bins survive, per sample), same padded layout, outputs within atol
    layer_kept = layer.last_num_bins.tolist()
    assert layer_kept == kept.sum(1).tolist()
    assert out.shape == ref.shape
    assert torch.equal(mask, ref_mask)
    torch.testing.assert_close(out.detach(), ref, rtol=0, atol=atol)
    return out, mask


# ------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["random", "static", "two_states", "split", "three_states", "mixed"])
def test_released_assignment_matches_transcription(name):
    layer = released_layer(6).eval()
    compare(layer, batches()[name])


def test_released_matches_transcription_with_fewer_bins_float32_and_train_mode():
    layer = released_layer(6).eval()
    x = batches()["mixed"]
    layer.num_bins = 5
    compare(layer, x, num_bins=5)
    # float32 on random clips (static clips in float32 are rounding noise in the released code itself). A
    # coordinate scaled to [0, 64] has a float32 resolution of 64 * 2**-23 = 7.6e-6, and the embedding is
    # summed in another order here, so a kernel weight can differ by a few 1e-5: outputs agree to 1e-4 of the
    # feature scale, the kept bins exactly
    layer32 = released_layer(8, seed=1, dtype=torch.float32).eval()
    x32 = torch.randn(3, 8, 32, 4, 4, generator=torch.Generator().manual_seed(0))
    compare(layer32, x32, atol=1e-4 * float(x32.abs().max()))
    # train mode: BatchNorm on batch statistics over N and T, in both
    layer.train()
    layer.num_bins = None
    compare(layer, batches(seed=3)["random"])


@torch.no_grad()
def test_released_erases_redundant_clips_and_interpolate_keeps_them():
    """The numbers of the issue: released keeps ~1e-7 x a static clip; interpolate keeps the frame."""
    x = batches(t=32)
    frame = x["static"][0, :, 0]
    rel = released_layer(6).eval()
    out, _ = rel(x["static"])
    assert rel.last_num_bins.tolist() == [1]
    # every frame sits on the upper edge of the last bin with weight 1e-7: the bin is 32 * 1e-7 x the frame
    ratio = out[0, :, 0] / frame
    torch.testing.assert_close(ratio, torch.full_like(ratio, 32 * 1e-7), rtol=1e-3, atol=0)
    # two equal halves: every frame equally far from the mean (up to the 1e-6), so again one bin in which the
    # 32 frames keep < 1 % of their weight
    out, _ = rel(x["two_states"])
    w, _, _ = rel.weights(x["two_states"])
    assert rel.last_num_bins.tolist() == [1] and float(w.max()) < 1e-2
    # a 10/22 split: the 10 minority frames are farthest from the mean and keep weight 1e-7 each
    out, _ = rel(x["split"])
    w, _, _ = rel.weights(x["split"])
    assert float(w[0, :, :10].sum()) < 1e-5 and float(w[0, :, 10:].sum(0).min()) > 0.5

    inter = released_layer(6, assignment="interpolate", distance_eps=0.0).eval()
    mean_frame = x["two_states"][0].mean(dim=1)
    out, _ = inter(x["static"])
    assert inter.last_num_bins.tolist() == [1]
    torch.testing.assert_close(out[0, :, 0], frame, rtol=1e-12, atol=1e-12)
    # two equal halves are equally far from the mean: l2_to_mean cannot tell them apart, so one bin, the mean
    out, _ = inter(x["two_states"])
    assert inter.last_num_bins.tolist() == [1]
    torch.testing.assert_close(out[0, :, 0], mean_frame, rtol=1e-12, atol=1e-12)
    # unequal parts: each state its own bin, equal to the state
    for name, k in (("split", 2), ("three_states", 3)):
        clip = x[name]
        out, _ = inter(clip)
        states = torch.unique_consecutive(clip[0].flatten(2).transpose(0, 1), dim=0)  # [k, C, HW]
        assert len(states) == k and inter.last_num_bins.tolist() == [k], name
        got = out[0].flatten(2).transpose(0, 1)  # [B', C, HW]
        err = (got.unsqueeze(1) - states.unsqueeze(0)).abs().flatten(2).amax(-1)  # [B', k]
        assert float(err.min(1).values.max()) < 1e-12, name  # every bin is one of the states ...
        assert sorted(err.argmin(1).tolist()) == list(range(k)), name  # ... and each state is one bin


def _bin_means(delta, x, num_bins):
    """interpolate_weights -> compact -> merge -> weighted means of frames x [T, F]: ([B', F], weights)."""
    w, mask, _ = compact_bins(interpolate_weights(delta, torch.ones(1, 1, 1, dtype=delta.dtype), num_bins))
    w, mask, _ = merge_identical_bins(w, mask)
    w = w[0, : int(mask.sum())]
    return (w @ x) / w.sum(-1, keepdim=True), w


def test_interpolate_well_separated_states_give_one_bin_each():
    """k states whose coordinates are at least two centre spacings apart: exactly k bins, each its state,
    wherever the states fall between centres (the two bins a state fills alone are merged)."""
    g = torch.Generator().manual_seed(5)
    for trial in range(30):
        k = 2 + trial % 5
        num_bins = (32, 16, 12)[trial % 3]
        # k coordinates on [0, B - 1] (min and max included) with gaps >= 2, in random order over 32 frames
        gaps = 2 + torch.rand(k - 1, generator=g, dtype=torch.float64) * ((num_bins - 1) / (k - 1) - 2)
        u = torch.cat([torch.zeros(1, dtype=torch.float64), gaps.cumsum(0)])
        u = u / u[-1] * (num_bins - 1)
        idx = torch.randint(0, k, (32,), generator=g)
        idx[:k] = torch.randperm(k, generator=g)
        delta = (0.3 + 2.0 * u[idx]).view(1, 32, 1)  # any affine map of u: the assignment is scale-free
        states = torch.randn(k, 5, generator=g, dtype=torch.float64)
        means, w = _bin_means(delta, states[idx], num_bins)
        assert means.shape[0] == k, (trial, u)
        err = (means.unsqueeze(1) - states.unsqueeze(0)).abs().amax(-1)  # [k, k]
        assert float(err.min(1).values.max()) < 1e-12 and sorted(err.argmin(1).tolist()) == list(range(k))


def test_interpolate_close_states_share_a_bin_as_their_weighted_mean():
    # states at u = 0, 1.5, 2.5, 4 (B = 5): bins 1 and 3 hold one state each, bin 2 is the mean of the two
    # middle states, weighted by their frame weights: 4 states, 5 bins (the bound is 2k - 2)
    u = torch.tensor([0.0, 1.5, 2.5, 4.0], dtype=torch.float64)
    idx = torch.tensor([0, 1, 1, 2, 3, 3, 3, 2])
    states = torch.randn(4, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    means, w = _bin_means(u[idx].view(1, 8, 1), states[idx], 5)
    assert means.shape[0] == 5
    torch.testing.assert_close(means[[0, 1, 3, 4]], states, rtol=0, atol=1e-12)
    # bin 2 (u in (1, 3)): the two frames of state 1 at weight 0.5 each, the two of state 2 at 0.5 each
    torch.testing.assert_close(means[2], (states[1] + states[2]) / 2, rtol=0, atol=1e-12)


@torch.no_grad()
def test_interpolate_k_states_through_the_layer():
    # k states of random lengths, in random order, through the embedding: B' <= 2k - 2 always, and every bin
    # holding frames of one state only equals that state
    g = torch.Generator().manual_seed(5)
    for trial in range(12):
        k = 2 + trial % 4
        states = torch.randn(1, 6, k, 3, 3, generator=g, dtype=torch.float64)
        idx = torch.randint(0, k, (32,), generator=g)
        idx[:k] = torch.arange(k)  # every state present
        clip = states[:, :, idx]
        for sim in ("l2_to_mean", "magnitude"):
            layer = released_layer(6, seed=trial, assignment="interpolate", distance_eps=0.0, similarity=sim,
                                   num_bins=(32, 8, 4)[trial % 3]).eval()
            out, _ = layer(clip)
            got = out[0].flatten(2).transpose(0, 1)
            ref = states[0].flatten(2).transpose(0, 1)
            err = (got.unsqueeze(1) - ref.unsqueeze(0)).abs().flatten(2).amax(-1)
            bp = int(layer.last_num_bins[0])
            assert 1 <= bp <= max(1, 2 * k - 2)
            w, _, _ = layer.weights(clip)
            for b in range(bp):
                if len(torch.unique(idx[w[0, b] > 0])) == 1:
                    assert float(err[b].min()) < 1e-12


def test_backbone_released_mode_reads_before_the_relu_and_applies_it_after():
    """r3d18_a1 with the released config equals: stem, res2 up to its last block's residual sum, the released
    transcription, ReLU, then the later stages (batch of one, so no padding)."""
    torch.manual_seed(0)
    model = build_backbone("r3d18_a1", 5, sgs={"after": "res2", **RELEASED_CONFIG}).double().eval()
    for m in model.modules():  # non-trivial residual branches and statistics
        if isinstance(m, nn.BatchNorm3d):
            with torch.no_grad():
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.5, 0.5)
    x = torch.randn(1, 3, 8, 32, 32, dtype=torch.float64)
    with torch.no_grad():
        h = model.stages["stem"](x)
        res2 = model.stages["res2"]
        h = res2[0](h)
        last = res2[1]
        y = last.relu(last.conv_a(h))
        y = last.relu(last.conv_b(y))
        pre = last.conv_c(y) + last.shortcut(h)  # before the block's final ReLU
        assert float(pre.min()) < 0  # the ReLU does matter here
        sgs = model.temporal
        out, _, _, _ = released_forward(sgs.embed, sgs.norm, pre)
        h = torch.relu(out)
        for name in ("res3", "res4", "res5"):
            h = model.stages[name](h)
        expect = model.head(h, None)
        got = model(x)
    torch.testing.assert_close(got, expect, rtol=1e-10, atol=1e-10)
    # post-activation input is a different model: the released placement is what the test pins down
    model.temporal.pre_activation = False
    with torch.no_grad():
        assert not torch.allclose(model(x), expect, rtol=1e-6, atol=1e-6)
