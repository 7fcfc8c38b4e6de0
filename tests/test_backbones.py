"""Backbones: parameters and MACs against published figures, the build_backbone interface, SGS insertion.

MACs = torch.utils.flop_counter total / 2 (it counts 2 FLOPs per multiply-accumulate), batch 1, K = 400,
counted on meta tensors (no arithmetic runs) except where SGS must see real data.
"""
import math

import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from lightning_temporal.models.head import ClassifierHead
from lightning_temporal.models.registry import BACKBONES, build_backbone
from lightning_temporal.models.slowfast import merge_time
from lightning_temporal.pooling import softmax_temporal_pool
from tests.untrained import UNTRAINED_SGS


def gmacs(model: nn.Module, x: torch.Tensor) -> float:
    with FlopCounterMode(display=False) as fc, torch.no_grad():
        model(x)
    return fc.get_total_flops() / 2e9


def meta_stats(name: str, shape, **kwargs):
    with torch.device("meta"):
        model = build_backbone(name, 400, **kwargs).eval()
        x = torch.empty(1, 3, *shape)
    return sum(p.numel() for p in model.parameters()), gmacs(model, x)


# name, input T x H x W, published params (None: not quoted), published GMACs
PUBLISHED = [
    ("r3d18", (16, 112, 112), 33_371_472, 40.70),  # torchvision R3D-18
    ("r3d18_a1", (32, 224, 224), None, 18.06),  # seed 002 Table A.1 as written
    ("slow_r50", (8, 256, 256), 32.45e6, 54.52),  # PyTorchVideo / PySlowFast slow-only 8x8
    ("x3d_s", (13, 160, 160), 3.79e6, 1.96),  # X3D paper Table 3; params with BatchNorm
    ("x3d_m", (16, 224, 224), 3.79e6, 4.73),
    ("slowfast_r50", (32, 256, 256), 34.57e6, 65.71),  # PyTorchVideo SlowFast 8x8 R50
]


@pytest.mark.parametrize("name,shape,params,macs", PUBLISHED, ids=[p[0] for p in PUBLISHED])
def test_params_and_gmacs_match_published(name, shape, params, macs):
    p, g = meta_stats(name, shape)
    assert g == pytest.approx(macs, rel=0.02)
    if params is not None:
        assert p == pytest.approx(params, rel=0.02)


def test_x3d_variants_are_table_entries_built_by_one_builder():
    from lightning_temporal.models.x3d import X3D_VARIANTS, build_x3d

    # PySlowFast X3D-S / X3D-M: gamma_d = 2.2 -> 3, 5, 11, 7 blocks; the published figures above are measured on
    # the variant's own clip (X3D paper Table 3: 13 x 160^2 and 16 x 224^2)
    for name, shape, *_ in PUBLISHED:
        if name.startswith("x3d"):
            v = X3D_VARIANTS[name]
            assert v.depths == (3, 5, 11, 7) and (v.frames, v.crop, v.crop) == shape
            with torch.device("meta"):
                model = build_backbone(name, 7)
            assert [len(model.stages[f"res{i}"]) for i in range(2, 6)] == [3, 5, 11, 7]
    assert set(X3D_VARIANTS) <= set(BACKBONES) and {n for n in BACKBONES if n.startswith("x3d")} == set(X3D_VARIANTS)
    with torch.device("meta"):
        small = build_backbone("x3d_m", 5, depths=(1, 1, 1, 1), dropout=0.2)  # kwargs override the table
    assert [len(small.stages[f"res{i}"]) for i in range(2, 6)] == [1, 1, 1, 1] and small.head.fc.out_features == 5
    with pytest.raises(ValueError, match="unknown X3D variant 'x3d_q'; known variants: x3d_s, x3d_m"):
        build_x3d("x3d_q")


def test_r3d18_params_exact():
    # torchvision's r3d_18(num_classes=400) has exactly this many parameters
    assert meta_stats("r3d18", (16, 112, 112))[0] == 33_371_472


def _bottleneck_resnet_macs(T, H, stem_kt, stem_c, depths, widths, kts, num_classes=400, pool=True):
    """Conv/fc MACs of a bottleneck 3D ResNet written layer by layer (stride on the 3x3 conv, no temporal
    stride): independent of the module code."""
    h = math.ceil(H / 2)
    macs = 3 * stem_c * stem_kt * 49 * T * h * h
    if pool:
        h = math.ceil(h / 2)
    cin = stem_c
    for i, (d, w, kt) in enumerate(zip(depths, widths, kts)):
        for j in range(d):
            s = 2 if (i > 0 and j == 0) else 1
            h_out = math.ceil(h / s)
            macs += cin * w * kt * T * h * h  # conv_a at the input resolution
            macs += w * w * 9 * T * h_out * h_out  # conv_b, strided
            macs += w * 4 * w * T * h_out * h_out  # conv_c
            if j == 0:
                macs += cin * 4 * w * T * h_out * h_out  # projection shortcut
            cin, h = 4 * w, h_out
    return (macs + cin * num_classes) / 1e9


def test_r3d50_matches_layer_by_layer_count():
    # the seed's 3DResNet-50: temporal kernels 5 (conv1) / 3 (res2) / 1 / 1 / 3 (res5), 32 frames, no t-stride
    expect = _bottleneck_resnet_macs(32, 224, 5, 64, (3, 4, 6, 3), (64, 128, 256, 512), (3, 1, 1, 3))
    _, g = meta_stats("r3d50", (32, 224, 224))
    assert g == pytest.approx(expect, rel=1e-9)
    # the same hand count reproduces the published slow_r50 and Table A.1 figures, so it is a fair reference
    assert _bottleneck_resnet_macs(8, 256, 1, 64, (3, 4, 6, 3), (64, 128, 256, 512), (1, 1, 3, 3)) == \
        pytest.approx(54.52, rel=2e-3)
    assert _bottleneck_resnet_macs(32, 224, 5, 8, (2, 2, 2, 2), (8, 64, 128, 256), (3, 1, 1, 3)) == \
        pytest.approx(18.06, rel=2e-3)


def test_r3d50_params_differ_from_slow_r50_only_by_temporal_kernels():
    p50, _ = meta_stats("r3d50", (8, 32, 32))
    pslow, _ = meta_stats("slow_r50", (8, 32, 32))
    stem = 3 * 64 * 49 * (5 - 1)
    res2 = (64 * 64 + 2 * 256 * 64) * (3 - 1)  # conv_a kt 3 instead of 1
    res4 = (512 * 256 + 5 * 1024 * 256) * (1 - 3)  # conv_a kt 1 instead of 3
    assert p50 - pslow == stem + res2 + res4


# name, small input T x H x W, expected feature [C, T', H', W']
SMALL = [
    ("r3d18", (8, 16, 16), (512, 1, 1, 1)),
    ("r3d18_a1", (6, 32, 32), (1024, 6, 1, 1)),
    ("r3d50", (3, 32, 32), (2048, 3, 1, 1)),
    ("slow_r50", (2, 32, 32), (2048, 2, 1, 1)),
    ("x3d_s", (5, 64, 64), (432, 5, 2, 2)),
    ("x3d_m", (3, 32, 32), (432, 3, 1, 1)),
    ("slowfast_r50", (8, 32, 32), (2304, 2, 1, 1)),
    ("simple3d", (6, 32, 32), (128, 6, 4, 4)),
]


@pytest.mark.parametrize("name,shape,feat_shape", SMALL, ids=[s[0] for s in SMALL])
def test_forward_shapes_and_head_consistency(name, shape, feat_shape):
    torch.manual_seed(0)
    model = build_backbone(name, 7).eval()
    x = torch.randn(2, 3, *shape)
    with torch.no_grad():
        logits = model(x)
        feat, mask = model.forward_features(x)
        via_head = model.head(feat, mask)
        dense = model.head.forward_dense(feat)
    assert logits.shape == (2, 7)
    assert tuple(feat.shape) == (2, *feat_shape)
    assert mask is None
    torch.testing.assert_close(via_head, logits)
    assert dense.shape == (2, feat_shape[1], 7)
    assert torch.isfinite(logits).all()


def test_dense_logits_average_to_clip_logits_with_linear_head():
    # with average pooling and a linear classifier, pooling then classifying = classifying then pooling
    torch.manual_seed(0)
    model = build_backbone("r3d18_a1", 5).eval()
    with torch.no_grad():
        feat, mask = model.forward_features(torch.randn(2, 3, 8, 32, 32))
        torch.testing.assert_close(model.head.forward_dense(feat).mean(dim=1), model.head(feat, mask))


@pytest.mark.parametrize("mode, gamma", [("avg", 0.0), ("max", math.inf)])
def test_head_temporal_pool_is_softmax_pooling_with_its_empty_video_rule(mode, gamma):
    # The head's masked temporal pool and the video pooling of clip scores are one computation: the head at
    # "avg" / "max" is softmax_temporal_pool at gamma 0 / inf, on the same valid positions, with the same rule
    # for a sample without any (a ValueError, not a zero that would pass as a prediction).
    torch.manual_seed(0)
    head = ClassifierHead(4, 3, temporal_pool=mode, spatial_pool="avg").eval()
    feat = torch.randn(3, 4, 5, 2, 2)
    mask = torch.tensor([[1, 1, 0, 0, 0], [1, 1, 1, 1, 1], [1, 0, 1, 0, 0]], dtype=torch.bool)
    garbage = feat.clone()
    garbage[~mask[:, None, :, None, None].expand_as(feat)] = 1e6  # padded positions must not matter
    x = feat.mean(dim=(3, 4))  # N, C, T
    # independent reference: the mean / max of the valid positions, element by element
    ref = torch.tensor([[(sum if mode == "avg" else max)(x[n, c, t].item() for t in range(5) if mask[n, t])
                         / (int(mask[n].sum()) if mode == "avg" else 1) for c in range(4)] for n in range(3)])
    got = head(garbage, mask)
    torch.testing.assert_close(got, head.fc(ref), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(got, head.fc(softmax_temporal_pool(x.transpose(1, 2), gamma, mask=mask)),
                               rtol=0, atol=0)
    torch.testing.assert_close(head(feat), head.fc(x.mean(2) if mode == "avg" else x.amax(2)), rtol=1e-6, atol=1e-6)
    empty = mask.clone()
    empty[2] = False
    with pytest.raises(ValueError, match=r"no valid position for item\(s\) \[\[2\]\]") as from_pool:
        softmax_temporal_pool(x.transpose(1, 2), gamma, mask=empty)
    with pytest.raises(ValueError, match=r"no valid position for item\(s\) \[\[2\]\]") as from_head:
        head(feat, empty)
    assert str(from_head.value) == str(from_pool.value)


def test_head_rejects_bad_arguments():
    with pytest.raises(ValueError, match="temporal_pool"):
        ClassifierHead(8, 3, temporal_pool="median")
    with pytest.raises(ValueError, match="dropout"):
        ClassifierHead(8, 3, dropout=1.0)
    with pytest.raises(ValueError, match="mask"):
        ClassifierHead(8, 3)(torch.randn(2, 8, 4, 1, 1), torch.ones(2, 3, dtype=torch.bool))


def test_unknown_name_lists_known_backbones():
    with pytest.raises(ValueError) as err:
        build_backbone("resnet3000", 10)
    for name in BACKBONES:
        assert name in str(err.value)


def test_bad_stage_and_both_modules_rejected():
    with pytest.raises(ValueError, match="res2"):
        build_backbone("r3d18_a1", 3, sgs={"after": "res9"})
    with pytest.raises(ValueError, match="not both"):
        build_backbone("r3d18_a1", 3, sgs={}, attention={})
    with pytest.raises(ValueError, match="alpha"):
        build_backbone("slowfast_r50", 3)(torch.randn(1, 3, 10, 32, 32))


class _Spy(nn.Module):
    """A temporal module that records what it reads and hands it on unchanged, every position valid."""

    def __init__(self):
        super().__init__()
        self.seen = []

    def forward(self, x):
        self.seen.append(x.clone())
        return x, torch.ones(x.shape[0], x.shape[2], dtype=torch.bool)


@pytest.mark.parametrize("name", ["r3d18_a1", "x3d_s", "slowfast_r50"])
def test_temporal_module_reads_the_named_stage_of_each_pathway(name):
    # One insertion rule for single- and two-pathway backbones: a module inserted after stage s reads what
    # stage s gives (the stages recomputed one by one; on SlowFast the pathway's own input, before its lateral)
    # with the stage's channels; an unknown stage or the last one is refused with the same message.
    torch.manual_seed(0)
    two = name == "slowfast_r50"
    model = build_backbone(name, 3, depths=(1, 1, 1, 1)).eval()  # one block a stage: cheap
    stages, cls = list(model.stage_out), type(model).__name__

    def spies():
        return {"slow": _Spy(), "fast": _Spy()} if two else {"module": _Spy()}

    with pytest.raises(ValueError, match=rf"unknown stage 'res9'; {cls} has stages \['stem', 'res2'"):
        model.insert_temporal("res9", **spies())
    with pytest.raises(ValueError, match=f"cannot insert after the last stage '{stages[-1]}'"):
        model.insert_temporal(stages[-1], **spies())
    x = torch.randn(1, 3, 8 if two else 4, 16, 16)
    with torch.no_grad():
        ref = model(x)
    for after in stages[:-1]:
        spies_here = spies()
        model.insert_temporal(after, **spies_here)
        with torch.no_grad():
            torch.testing.assert_close(model(x), ref)  # an identity module with every position valid
        if two:
            for path, first in (("slow", x[:, :, :: model.alpha]), ("fast", x)):
                (seen,) = spies_here[path].seen
                assert seen.shape[1] == model.stage_channels(after, path)
                if after == "stem":  # no lateral has run yet: recompute the pathway's stem alone
                    with torch.no_grad():
                        torch.testing.assert_close(seen, getattr(model, path)["stem"](first))
        else:
            (seen,) = spies_here["module"].seen
            assert seen.shape[1] == model.stage_channels(after)
            h = x
            with torch.no_grad():
                for stage in stages[: stages.index(after) + 1]:
                    h = model.stages[stage](h)
            torch.testing.assert_close(seen, h)


def _static_clip(t, hw, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(1, 3, 1, hw, hw, generator=g).expand(1, 3, t, hw, hw).contiguous()


@pytest.mark.parametrize(
    "name,shape,max_ratio",
    [("r3d18_a1", (32, 32, 32), 0.6), ("x3d_s", (13, 16, 16), 0.75), ("slowfast_r50", (16, 32, 32), 0.8),
     ("simple3d", (16, 32, 32), 0.7)],
)
def test_sgs_reduces_macs_on_static_clip(name, shape, max_ratio):
    torch.manual_seed(0)
    with_sgs = build_backbone(name, 400, sgs={"after": "res2"}).eval()
    x = _static_clip(shape[0], shape[1])
    g0, g1 = meta_stats(name, shape)[1], gmacs(with_sgs, x)  # without SGS the count needs no data
    print(f"{name}: {g0:.4f} -> {g1:.4f} GMACs ({g1 / g0:.2f})")
    assert g1 < max_ratio * g0
    # random noise keeps (almost) every position: no large reduction there
    noise = torch.randn(1, 3, *shape, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        logits = with_sgs(noise)
    assert torch.isfinite(logits).all()


def test_sgs_macs_follow_kept_bins():
    # r3d18_a1 has no temporal stride, so every conv after SGS costs (B' / T) of its full-clip cost.
    torch.manual_seed(0)
    t, hw = 32, 32
    base = build_backbone("r3d18_a1", 400).eval()
    model = build_backbone("r3d18_a1", 400, sgs={}).eval()
    x = _static_clip(t, hw)
    with torch.no_grad():
        pre_x = model.stages["res2"](model.stages["stem"](x))
    pre = gmacs(nn.Sequential(base.stages["stem"], base.stages["res2"]), x)
    post = gmacs(base, x) - pre - 1024 * 400 / 1e9  # head fc runs once whatever B'
    total = gmacs(model, x)
    bprime = int(model.temporal.last_num_bins[0])
    assert 1 <= bprime < t // 2
    sgs_cost = gmacs(_Wrap(model.temporal), pre_x)
    assert total == pytest.approx(pre + sgs_cost + post * bprime / t + 1024 * 400 / 1e9, rel=1e-6)


class _Wrap(nn.Module):
    def __init__(self, m):
        super().__init__()
        self.m = m

    def forward(self, x):
        return self.m(x)[0]


def test_sgs_result_independent_of_other_samples():
    # padded bins are re-zeroed after every block: a sample's logits do not depend on the B' of the others
    torch.manual_seed(0)
    model = build_backbone("r3d18_a1", 5, sgs=UNTRAINED_SGS).eval()
    static = _static_clip(16, 32)
    noise = torch.randn(1, 3, 16, 32, 32, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        alone = model(static)
        b_alone = int(model.temporal.last_num_bins[0])
        both = model(torch.cat([static, noise]))
        b_both = model.temporal.last_num_bins.tolist()
    assert b_both[0] == b_alone and b_both[1] > b_alone  # the batch really is padded for the static clip
    torch.testing.assert_close(both[:1], alone, rtol=1e-4, atol=1e-5)


def test_mask_follows_temporal_stride_and_head_uses_it():
    torch.manual_seed(0)
    model = build_backbone("r3d18", 4, sgs=UNTRAINED_SGS).eval()  # R3D-18 halves T in res3, res4, res5
    x = torch.cat([_static_clip(32, 16), torch.randn(1, 3, 32, 16, 16)])
    with torch.no_grad():
        feat, mask = model.forward_features(x)
        bins = model.temporal.last_num_bins.tolist()
    assert mask.shape == (2, feat.shape[2])
    # B' positions after res2, halved (ceil) three times
    for n, b in enumerate(bins):
        assert int(mask[n].sum()) == math.ceil(b / 8)
    assert not mask.all()  # the static clip is padded
    assert feat.permute(0, 2, 1, 3, 4)[~mask].abs().sum() == 0  # padded positions are re-zeroed


def test_slowfast_sgs_blocks_and_lateral_padding():
    torch.manual_seed(0)
    model = build_backbone("slowfast_r50", 3, sgs={}).eval()
    assert model.temporal["slow"].block_size == 2 and model.temporal["fast"].block_size == 8
    x = torch.cat([_static_clip(16, 32), torch.randn(1, 3, 16, 32, 32)])
    with torch.no_grad():
        feat, mask = model.forward_features(x)
        logits = model.head(feat, mask)
    assert mask is not None and mask.shape == (2, feat.shape[2]) and mask.any(dim=1).all()
    assert logits.shape == (2, 3) and torch.isfinite(logits).all()


def test_merge_time_zero_pads_shorter_and_unions_masks():
    a = torch.ones(2, 3, 4, 1, 1)
    b = 2 * torch.ones(2, 5, 6, 1, 1)
    ma = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 1]], dtype=torch.bool)
    mb = torch.tensor([[1, 0, 0, 0, 0, 0], [1, 1, 1, 1, 1, 1]], dtype=torch.bool)
    out, m = merge_time(a, ma, b, mb)
    assert out.shape == (2, 8, 6, 1, 1)
    assert (out[:, :3, 4:] == 0).all() and (out[:, :3, :4] == 1).all() and (out[:, 3:] == 2).all()
    assert m.tolist() == [[True, True, False, False, False, False], [True] * 6]
    out, m = merge_time(a, None, b[:, :, :4], None)
    assert m is None and out.shape == (2, 8, 4, 1, 1)


def test_num_bins_change_on_built_model_reduces_macs():
    # seed Table A.4: fewer bins at inference on a trained model is one assignment
    torch.manual_seed(0)
    model = build_backbone("r3d18_a1", 5, sgs={"num_bins": 32, **UNTRAINED_SGS}).eval()
    x = torch.randn(1, 3, 32, 32, 32)
    g32 = gmacs(model, x)
    model.temporal.num_bins = 4
    g4 = gmacs(model, x)
    assert int(model.temporal.last_num_bins[0]) <= 4
    assert g4 < g32


@pytest.mark.parametrize("name,shape", [("x3d_s", (4, 32, 32)), ("slowfast_r50", (8, 32, 32))])
def test_attention_insertion_keeps_time_and_starts_as_identity(name, shape):
    torch.manual_seed(0)
    base = build_backbone(name, 5).eval()
    model = build_backbone(name, 5, attention={"after": "res2"}).eval()
    missing, unexpected = model.load_state_dict(base.state_dict(), strict=False)
    assert not unexpected and missing and all(k.startswith("temporal.") for k in missing)
    x = torch.randn(1, 3, *shape)
    with torch.no_grad():
        feat, mask = model.forward_features(x)
        # DoubleAttention's output BatchNorm starts at scale 0, so the block is the identity at init
        torch.testing.assert_close(model(x), base(x))
    assert mask is None and feat.shape == base.forward_features(x)[0].shape
    # attention weights features, it does not drop them: it only adds MACs (counted on meta tensors)
    assert meta_stats(name, shape, attention={})[1] > meta_stats(name, shape)[1]


def test_count_gmacs_agrees_with_flop_counter():
    from lightning_temporal.flops import count_gmacs

    torch.manual_seed(0)
    model = build_backbone("r3d18_a1", 400, sgs={})
    x = torch.cat([_static_clip(32, 32), torch.randn(1, 3, 32, 32, 32)])
    per_clip = [gmacs(model.eval(), x[i : i + 1]) for i in range(2)]
    assert count_gmacs(model, x) == pytest.approx(sum(per_clip) / 2, rel=1e-9)
    assert per_clip[0] < per_clip[1]  # the static clip keeps fewer bins


def test_training_step_reaches_sgs_embedding():
    # gradients flow from the loss through the later stages and the bin weights into SGS's embedding MLP
    torch.manual_seed(0)
    model = build_backbone("simple3d", 4, sgs={}).train()
    x = torch.randn(3, 3, 8, 16, 16)
    loss = nn.functional.cross_entropy(model(x), torch.tensor([0, 1, 2]))
    loss.backward()
    grads = [p.grad for p in model.temporal.embed.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert sum(float(g.abs().sum()) for g in grads) > 0
    assert model.stages["stem"][0].weight.grad.abs().sum() > 0
