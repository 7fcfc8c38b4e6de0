"""The fixed temporal pooling baseline, the order-preserving assignment, the absolute scale of change, and the
replicate temporal padding before SGS (issue: SGS must beat a fixed stride, keep order, follow redundancy)."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lightning_temporal.models.registry import build_backbone
from lightning_temporal.models.sgs import (
    ReplicateTimeConv3d,
    SimilarityGuidedSampling,
    cumulative_change,
    fixed_weights,
    ordered_weights,
    replicate_time_padding,
)

from tests.untrained import UNTRAINED_SGS


# ------------------------------------------------------------------------------------------------------------
# fixed: a temporal average pooling to B positions
# ------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("t,b", [(32, 8), (13, 4), (16, 16), (7, 3), (6, 10)])
def test_fixed_equals_adaptive_average_pooling(t, b):
    torch.manual_seed(0)
    x = torch.randn(3, 5, t, 4, 4, dtype=torch.float64)
    layer = SimilarityGuidedSampling(5, num_bins=b, assignment="fixed").double().eval()
    out, mask = layer(x)
    n, c, _, h, w = x.shape
    # the independent computation: torch's adaptive pooling over time, every pixel a sequence
    ref = F.adaptive_avg_pool1d(x.permute(0, 1, 3, 4, 2).reshape(-1, 1, t), min(b, t))
    ref = ref.reshape(n, c, h, w, -1).permute(0, 1, 4, 2, 3)
    assert out.shape == ref.shape and mask.all() and layer.last_num_bins.tolist() == [min(b, t)] * 3
    torch.testing.assert_close(out, ref)


def test_fixed_on_blocks_pools_each_block():
    x = torch.randn(2, 4, 16, 3, 3, dtype=torch.float64)
    layer = SimilarityGuidedSampling(4, num_bins=2, assignment="fixed", block_size=8).double()
    out, mask = layer(x)
    ref = x.reshape(2, 4, 4, 4, 3, 3).mean(dim=3)  # blocks of 8 frames, 2 bins of 4 each -> 4 stretches of 4
    torch.testing.assert_close(out, ref)
    assert layer.last_num_bins.tolist() == [4, 4]


def test_fixed_has_no_embedding_and_a_backbone_with_it_runs_on_b_positions():
    layer = SimilarityGuidedSampling(8, num_bins=4, assignment="fixed")
    assert layer.embed is None and not list(layer.parameters())
    with pytest.raises(RuntimeError, match="no embedding"):
        layer.embedding(torch.randn(1, 8, 4, 2, 2))
    model = build_backbone("simple3d", 3, sgs={"assignment": "fixed", "num_bins": 8}).eval()
    x = torch.randn(2, 3, 32, 32, 32)
    with torch.no_grad():
        logits = model(x)
        # by hand: stem, res2 before its ReLU, mean over stretches of 4 frames, ReLU, res3, res4, head
        h = model.stages["res2"][1](model.stages["res2"][0](model.stages["stem"](x)))
        h = torch.relu(h.reshape(*h.shape[:2], 8, 4, *h.shape[3:]).mean(dim=3))
        ref = model.head(model.stages["res4"](model.stages["res3"](h)), torch.ones(2, 8, dtype=torch.bool))
    torch.testing.assert_close(logits, ref)
    assert model.temporal.last_num_bins.tolist() == [8, 8]


def test_fixed_weights_rows_are_adaptive_pooling_windows():
    w = fixed_weights(10, 4, torch.float64)
    # adaptive pooling windows of 10 frames into 4: [0, 3), [2, 5), [5, 8), [7, 10)
    ref = torch.zeros(4, 10, dtype=torch.float64)
    for b, (s, e) in enumerate([(0, 3), (2, 5), (5, 8), (7, 10)]):
        ref[b, s:e] = 1.0 / (e - s)
    torch.testing.assert_close(w, ref)


# ------------------------------------------------------------------------------------------------------------
# ordered: contiguous stretches of equal cumulative change, in time order
# ------------------------------------------------------------------------------------------------------------
def states_clip(lengths, levels, c=16, hw=3, seed=0):
    """A clip [1, C, T, H, W] of piecewise-constant states: `levels[i]` x a fixed random map for lengths[i] frames."""
    g = torch.Generator().manual_seed(seed)
    maps = [torch.randn(c, 1, hw, hw, generator=g) * lv for lv in levels]
    return torch.cat([m.expand(c, n, hw, hw) for m, n in zip(maps, lengths)], dim=1).unsqueeze(0)


def ordered_layer(c=16, calibrate=None, **kw):
    """An ordered SGS layer in eval mode whose BatchNorm statistics come from clips `calibrate` (default: 8
    clips of random frames), as training would set them: the embedding then has its absolute units."""
    torch.manual_seed(0)
    layer = SimilarityGuidedSampling(c, assignment="ordered", **kw).double()
    if calibrate is None:
        calibrate = torch.randn(8, c, 16, 3, 3, dtype=torch.float64)
    layer.norm.momentum = None  # running statistics = the calibration batch's
    layer.train()
    with torch.no_grad():
        layer(calibrate)
    return layer.eval()


def test_ordered_keeps_a_b_a_as_three_bins_in_time_order():
    x = states_clip([10, 12, 10], [3.0, 3.0, 3.0]).double()
    x[:, :, 22:] = x[:, :, :1]  # the third state is the first one again: A | B | A
    layer = ordered_layer(num_bins=8, calibrate=x)
    out, mask = layer(x)
    assert layer.last_num_bins.tolist() == [3]
    # each bin is its state (in time order), exactly the frames of that stretch
    for b, t in enumerate((0, 10, 22)):
        torch.testing.assert_close(out[0, :, b], x[0, :, t])
    w, _, _ = layer.weights(x)
    first = [int(torch.nonzero(row > 0)[0]) for row in w[0]]
    assert first == sorted(first)  # bins in time order
    # interpolate and released put A's two stretches in one bin (they are equally far from the clip's mean)
    for assignment in ("interpolate", "released"):
        torch.manual_seed(0)
        other = SimilarityGuidedSampling(16, num_bins=8, assignment=assignment).double().eval()
        other.load_state_dict(layer.state_dict())
        other(x)
        assert int(other.last_num_bins[0]) <= 2, assignment


def test_ordered_near_static_clip_keeps_at_most_two_bins_and_bins_grow_with_change():
    torch.manual_seed(1)
    base = torch.randn(1, 16, 1, 3, 3, dtype=torch.float64).expand(1, 16, 32, 3, 3)
    noise = torch.randn(1, 16, 32, 3, 3, dtype=torch.float64)
    layer = ordered_layer(num_bins=32)
    # frames differing by noise at 1e-3 of the signal
    layer(base + 1e-3 * base.std() * noise)
    assert int(layer.last_num_bins[0]) <= 2
    # a clip that changes more keeps more bins: a ramp between two random maps, growing amplitude
    target = torch.randn(1, 16, 1, 3, 3, dtype=torch.float64)
    ramp = torch.linspace(0, 1, 32, dtype=torch.float64).view(1, 1, 32, 1, 1)
    counts = []
    for amp in (0.0, 1e-3, 0.3, 1.0, 3.0, 10.0, 100.0):
        layer(base + amp * ramp * target)
        counts.append(int(layer.last_num_bins[0]))
    assert counts == sorted(counts) and counts[0] == 1 and counts[-1] >= 16, counts
    # interpolate (scale-free) keeps most bins for the same near-static clip: why the absolute scale exists
    torch.manual_seed(0)
    inter = SimilarityGuidedSampling(16, assignment="interpolate").double().eval()
    inter(base + 1e-3 * base.std() * noise)
    assert int(inter.last_num_bins[0]) > 16


def test_ordered_number_of_bins_follows_the_cumulative_change():
    # B_eff = min(B, 1 + floor(total / min_change)); z given directly
    z = torch.zeros(1, 9, 2, dtype=torch.float64)
    z[0, :, 0] = torch.tensor([0.0, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 1.75, 2.0]) * 1.5  # total change 3.0
    c, total = cumulative_change(z)
    torch.testing.assert_close(total, torch.tensor([[3.0]], dtype=torch.float64))
    for m, expect in ((1.0, 4), (1.4, 3), (3.5, 1), (0.1, 8)):
        w = ordered_weights(z, 8, m)
        assert int((w.amax(dim=-1) > 0).sum()) == expect, m
        torch.testing.assert_close(w.sum(dim=1), torch.ones(1, 9, dtype=torch.float64))  # a frame's weights sum to 1
    # scale-free: every bin used when the clip changes at all
    assert int((ordered_weights(z, 8, None).amax(dim=-1) > 0).sum()) == 8


def test_ordered_weights_gradcheck():
    torch.manual_seed(0)
    z = torch.randn(2, 12, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda v: ordered_weights(v, 5, 0.5), (z,))
    layer = ordered_layer(num_bins=6)
    x = torch.randn(2, 16, 12, 2, 2, dtype=torch.float64) * 3
    out, _ = layer(x)
    out.sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in layer.embed.parameters())


def test_ordered_on_blocks_merges_static_blocks_and_keeps_changes():
    layer = ordered_layer(num_bins=4, block_size=8)
    static = states_clip([32], [3.0]).double()
    out, mask = layer(static)
    assert layer.last_num_bins.tolist() == [1]
    torch.testing.assert_close(out[0, :, 0], static[0, :, 0])
    x = states_clip([12, 20], [3.0, 3.0], seed=2).double()  # A for 12 frames (blocks 0 and half of 1), then B
    out, _ = layer(x)
    # per block: A | A, B | B | B; the block edges inside a state hold no change and are merged: A, B
    assert layer.last_num_bins.tolist() == [2]
    torch.testing.assert_close(out[0, :, 0], x[0, :, 0])
    torch.testing.assert_close(out[0, :, -1], x[0, :, -1])


def test_ordered_arguments():
    with pytest.raises(ValueError, match="min_change"):
        SimilarityGuidedSampling(8, assignment="interpolate", min_change=1.0)
    with pytest.raises(ValueError, match="min_change"):
        SimilarityGuidedSampling(8, assignment="ordered", min_change=0.0)
    with pytest.raises(ValueError, match="similarity"):
        SimilarityGuidedSampling(8, assignment="ordered", similarity="magnitude")
    with pytest.raises(ValueError, match="kernel"):
        SimilarityGuidedSampling(8, assignment="fixed", kernel="dirac")
    with pytest.raises(ValueError, match="temporal_padding"):
        SimilarityGuidedSampling(8, temporal_padding="reflect")
    assert "min_change=1" in repr(SimilarityGuidedSampling(8, assignment="ordered"))


# ------------------------------------------------------------------------------------------------------------
# replicate temporal padding before SGS; a static clip through every SGS backbone is one bin
# ------------------------------------------------------------------------------------------------------------
def test_replicate_time_conv_matches_padding_by_hand():
    torch.manual_seed(0)
    conv = nn.Conv3d(3, 4, (5, 3, 3), padding=(2, 1, 1)).double()
    x = torch.randn(2, 3, 7, 6, 6, dtype=torch.float64)
    keys = list(conv.state_dict())
    ref_conv = nn.Conv3d(3, 4, (5, 3, 3), padding=(0, 1, 1)).double()
    ref_conv.load_state_dict(conv.state_dict())
    padded = torch.cat([x[:, :, :1]] * 2 + [x] + [x[:, :, -1:]] * 2, dim=2)  # edge frames repeated twice
    assert replicate_time_padding(conv) == 1 and isinstance(conv, ReplicateTimeConv3d)
    torch.testing.assert_close(conv(x), ref_conv(padded))
    assert list(conv.state_dict()) == keys and conv(x).shape == (2, 4, 7, 6, 6)


def kept(model):
    t = model.temporal
    if isinstance(t, nn.ModuleDict):
        return {k: t[k].last_num_bins.tolist() for k in t}
    return t.last_num_bins.tolist()


def sharpen_embedding(model):
    """Eval-mode embedding statistics of a trained SGS: a running variance much smaller than the random MLP's
    output, so that any difference between frames shows up as change (with random weights it would not)."""
    for m in model.modules():
        if isinstance(m, SimilarityGuidedSampling) and m.norm is not None:
            m.norm.running_var.fill_(1e-8)


BACKBONE_CLIPS = [("x3d_s", 13, 48), ("r3d18_a1", 16, 32), ("slowfast_r50", 32, 32)]


@pytest.mark.parametrize("name,t,s", BACKBONE_CLIPS, ids=[c[0] for c in BACKBONE_CLIPS])
def test_static_clip_through_an_sgs_backbone_is_one_bin(name, t, s):
    torch.manual_seed(0)
    x = torch.randn(1, 3, 1, s, s).expand(1, 3, t, s, s).contiguous()
    assignments = ["ordered", "interpolate"] if name != "slowfast_r50" else ["ordered"]
    for assignment in assignments:
        model = build_backbone(name, 5, sgs={"assignment": assignment}).eval()
        sharpen_embedding(model)
        with torch.no_grad():
            model(x)
        bins = kept(model)
        assert bins in ([1], {"slow": [1], "fast": [1]}), (assignment, bins)
        # with zero temporal padding the edge frames differ and the same clip keeps more bins
        zeros = build_backbone(name, 5, sgs={"assignment": assignment, "temporal_padding": "zeros"}).eval()
        zeros.load_state_dict(model.state_dict())
        with torch.no_grad():
            zeros(x)
        bins = kept(zeros)
        assert bins not in ([1], {"slow": [1], "fast": [1]}), (assignment, bins)


def test_replicate_padding_only_before_sgs_and_only_with_sgs():
    plain = build_backbone("r3d18_a1", 5)
    assert not any(isinstance(m, ReplicateTimeConv3d) for m in plain.modules())
    model = build_backbone("r3d18", 5, sgs={"after": "res3"})  # temporal kernel 3 in every stage
    changed = {n.split(".")[1] for n, m in model.named_modules() if isinstance(m, ReplicateTimeConv3d)}
    assert changed == {"stem", "res2", "res3"}
    attention = build_backbone("r3d18_a1", 5, attention={})
    assert not any(isinstance(m, ReplicateTimeConv3d) for m in attention.modules())
    slowfast = build_backbone("slowfast_r50", 5, sgs={})
    names = {n for n, m in slowfast.named_modules() if isinstance(m, ReplicateTimeConv3d)}
    assert "fusions.stem.conv" in names and not any(n.startswith(("fusions.res2", "fast.res3", "slow.res3"))
                                                     for n in names)


def test_fixed_pooling_gmacs_are_counted_like_sgs():
    """GMACs of simple3d with fixed pooling to 8 positions after res2 = stem + res2 on 32 frames (torch's own
    counter on the plain network) + the pooling matmul + res3, res4 and the head on 8 frames."""
    from torch.utils.flop_counter import FlopCounterMode

    from lightning_temporal.flops import count_gmacs

    def macs(fn):
        with FlopCounterMode(display=False) as fc, torch.no_grad():
            fn()
        return fc.get_total_flops() / 2e9

    torch.manual_seed(0)
    plain = build_backbone("simple3d", 4).eval()
    fixed = build_backbone("simple3d", 4, sgs={"assignment": "fixed", "num_bins": 8}).eval()
    x = torch.randn(1, 3, 32, 32, 32)
    pre = macs(lambda: plain.stages["res2"](plain.stages["stem"](x)))
    h = torch.randn(1, 32, 8, 8, 8)
    post = macs(lambda: plain.head(plain.stages["res4"](plain.stages["res3"](h))))
    pool = 8 * 32 * 32 * 8 * 8 / 1e9  # [8 x 32 weights] @ [32 frames x C*H*W = 32*8*8] (res2 output: 8x8)
    assert count_gmacs(fixed, x) == pytest.approx(pre + pool + post, rel=1e-6)


@pytest.mark.parametrize("name,frames", [("r3d18_a1", 16), ("x3d_s", 13)])
def test_untrained_backbone_keeps_one_bin_and_untrained_min_change_keeps_more(name, frames):
    # README (assignments table) and tests/untrained.py: with the default min_change an untrained backbone's
    # embedding changes too little for a second bin, even on noise; min_change=0.01 restores several bins
    torch.manual_seed(0)
    noise = torch.randn(2, 3, frames, 32, 32, generator=torch.Generator().manual_seed(5))
    default = build_backbone(name, 5, sgs={"after": "res2"}).eval()
    assert default.temporal.assignment == "ordered"
    with torch.no_grad():
        default(noise)
    assert default.temporal.last_num_bins.tolist() == [1, 1]
    torch.manual_seed(0)
    scaled = build_backbone(name, 5, sgs={"after": "res2", **UNTRAINED_SGS}).eval()
    with torch.no_grad():
        scaled(noise)
    assert (scaled.temporal.last_num_bins > 2).all()
