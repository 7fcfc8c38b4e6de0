"""Grouping the clips of a batch by B' (``StagedBackbone.group_bins``) changes time, not results.

The logits with grouping equal those of the padded batch without it, in eval mode with BatchNorm statistics
randomised (so that a leak of padding would show), in float64; a hook checks that the later stages really ran
on groups smaller than the batch. SlowFast runs its padded batch (no ``group_bins``): its two pathways keep
different B' per clip and per block and are tied by the laterals.
"""
import pytest
import torch
from torch import nn

from lightning_temporal.models.backbone import StagedBackbone, plan_bin_groups
from lightning_temporal.models.registry import build_backbone
from tests.test_sgs_batch_independence import kept_bins, randomise_batchnorm
from tests.untrained import UNTRAINED_SGS


def mixed_batch(g: torch.Generator, t: int = 16, hw: int = 16) -> torch.Tensor:
    """Clips that keep different numbers of bins: two-state clips, a static clip and energy ramps."""
    states = torch.randn(2, 3, 2, hw, hw, generator=g, dtype=torch.float64)
    two = states[:, :, torch.tensor([0] * (t // 2) + [1] * (t - t // 2))]
    static = states[:1, :, :1].expand(1, 3, t, hw, hw)
    ramps = torch.randn(4, 3, t, hw, hw, generator=g, dtype=torch.float64)
    ramps = ramps * torch.rand(4, 1, t, 1, 1, generator=g, dtype=torch.float64) * 3
    return torch.cat([ramps[:2], two, static, ramps[2:]])


def logits_both_ways(model: nn.Module, clips: torch.Tensor):
    seen = []
    last = list(model.stages.values())[-1] if isinstance(model, StagedBackbone) else model.slow["res5"]
    later = [m for m in last.modules() if isinstance(m, nn.Conv3d)][-1]  # a leaf: runs in every path
    hook = later.register_forward_hook(lambda m, i, o: seen.append(i[0].shape[0]))
    with torch.no_grad():
        model.group_bins = True
        grouped = model(clips)
        bins = kept_bins(model).clone()
        model.group_bins = False
        padded = model(clips)
    hook.remove()
    return grouped, padded, bins, seen


@pytest.mark.parametrize("name", ["x3d_s", "r3d18_a1", "slowfast_r50"])
def test_grouped_logits_equal_padded_logits(name):
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(1)
    model = build_backbone(name, 5, sgs={"after": "res2", **UNTRAINED_SGS}).double().eval()
    randomise_batchnorm(model, g)
    clips = mixed_batch(g)
    grouped, padded, bins, seen = logits_both_ways(model, clips)
    assert len(set(bins.tolist())) >= 2, f"the batch should mix B' values, got {bins.tolist()}"
    scale = float(padded.abs().max())
    torch.testing.assert_close(grouped, padded, rtol=0, atol=1e-9 * scale)
    n = clips.shape[0]
    if isinstance(model, StagedBackbone):
        assert len(seen) >= 3 and seen[-1] == n and sum(seen[:-1]) == n and max(seen[:-1]) < n  # ran in groups
    else:
        assert seen == [n, n]  # SlowFast: the padded batch both times


def test_training_mode_runs_the_padded_batch():
    """BatchNorm in training mode normalises with the padded batch's statistics: no grouping there."""
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(2)
    model = build_backbone("x3d_s", 5, sgs={"after": "res2"}, dropout=0.0, depths=(1, 2, 1, 1)).double().train()
    clips = mixed_batch(g)
    seen = []
    model.stages["res4"][0].conv_a.register_forward_hook(lambda m, i, o: seen.append(i[0].shape[0]))
    model.group_bins = True
    model(clips)
    assert seen == [clips.shape[0]]
    # with the later stages' BatchNorm frozen, grouping applies and gives the same logits and gradients
    for name in ("res3", "res4", "res5", "conv5"):
        model.stages[name].eval()
    outs = []
    for group in (True, False):
        model.group_bins = group
        model.zero_grad()
        out = model(clips)
        out.square().sum().backward()
        outs.append((out.detach(), model.stages["res3"][0].conv_a[0].weight.grad.clone()))
    assert seen[-1] == clips.shape[0] and sum(seen[1:-1]) == clips.shape[0] and max(seen[1:-1]) < clips.shape[0]
    torch.testing.assert_close(outs[0][0], outs[1][0])
    torch.testing.assert_close(outs[0][1], outs[1][1])


def test_plan_bin_groups_is_the_least_cost_partition():
    counts = torch.tensor([5, 3, 3, 8, 5, 13, 12, 3])
    idx, lengths = plan_bin_groups(counts, overhead=0.0)  # one group per distinct B'
    assert lengths == [3, 5, 8, 12, 13]
    assert [sorted(i.tolist()) for i in idx] == [[1, 2, 7], [0, 4], [3], [6], [5]]
    idx, lengths = plan_bin_groups(counts, overhead=1.0)  # the lone 12 runs padded to 13: +1 position, -1 call
    assert lengths == [3, 5, 8, 13] and sorted(idx[-1].tolist()) == [5, 6]
    idx, lengths = plan_bin_groups(counts, overhead=1e9)
    assert lengths == [13] and sorted(idx[0].tolist()) == list(range(8))
    # brute force over every contiguous partition of the distinct values agrees on the cost
    values, sizes = [3, 5, 8, 12, 13], [3, 2, 1, 1, 1]
    for overhead in (0.5, 2.0, 4.0, 9.0):
        best = min(
            sum(sum(sizes[a:b]) * values[b - 1] + overhead for a, b in zip((0,) + cuts, cuts + (5,)))
            for r in range(5) for cuts in __import__("itertools").combinations(range(1, 5), r)
        )
        idx, lengths = plan_bin_groups(counts, overhead)
        assert sum(len(i) * l for i, l in zip(idx, lengths)) + overhead * len(lengths) == pytest.approx(best)
    with pytest.raises(ValueError, match="overhead"):
        plan_bin_groups(counts, overhead=-1)


def test_speed_benchmark_parts_run_on_a_tiny_model():
    """benchmarks/sgs_speed.py's parts on simple3d (no timing asserted): the variants alternate in every round,
    the grouped and padded variants give the same logits, memory and the stage profile come out positive."""
    from tests.bench import load_benchmark

    bench = load_benchmark("sgs_speed")
    g = torch.Generator().manual_seed(0)
    clips = torch.randn(4, 3, 8, 32, 32, generator=g) * torch.rand(4, 1, 8, 1, 1, generator=g)
    clips[:2] = clips[:2, :, :1]
    nets = {v: bench.build("simple3d", v, "cpu") for v in bench.VARIANTS}
    assert nets["sgs"].group_bins and not nets["sgs padded"].group_bins and nets["base"].temporal is None
    # the README's runtime table was measured with interpolate and zero padding, which the benchmark pins
    assert nets["sgs"].temporal.assignment == "interpolate" and nets["sgs"].temporal.temporal_padding == "zeros"
    with torch.no_grad():
        torch.testing.assert_close(nets["sgs"](clips), nets["sgs padded"](clips))
    times = bench.time_interleaved(nets, clips, rounds=2, device="cpu")
    assert set(times) == set(bench.VARIANTS) and all(len(t) == 2 for t in times.values())
    train, infer = (bench.peak_memory(nets["sgs"], clips, mode, "cpu") for mode in ("train", "eval"))
    assert train > infer > 0
    assert nets["sgs"].training is False  # flags restored
    prof = bench.stage_profile(nets["sgs"], clips, rounds=2)
    assert set(prof) == {"stem + res2", "SGS", "later stages", "head"} and all(v >= 0 for v in prof.values())
