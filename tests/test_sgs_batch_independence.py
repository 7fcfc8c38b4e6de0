"""A sample's logits do not depend on what it is batched with, for every SGS backbone (eval mode).

After SGS each sample is padded with zero bins up to the largest B' of the batch. With BatchNorm statistics
randomised (so that BatchNorm of a zero bin is not zero), every place where padding could leak into a real
position is exercised: temporal convs (R3D-18's second conv, X3D's depthwise conv, the bottlenecks' first
conv, SlowFast's laterals), squeeze-excitation pools, lateral concatenation, SGS blocks and the head's pool.
Run in float64, so that the only differences left are leaks, not the rounding of batched kernels.
"""
import pytest
import torch
from torch import nn

from lightning_temporal.models.registry import build_backbone


def randomise_batchnorm(model: nn.Module, g: torch.Generator) -> None:
    for m in model.modules():
        if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm3d)):
            with torch.no_grad():
                m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.5)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) * 1.5 + 0.5)
                m.weight.copy_(torch.rand(m.weight.shape, generator=g) + 0.5)
                m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.5)


def kept_bins(model: nn.Module) -> torch.Tensor:
    t = model.temporal
    if isinstance(t, nn.ModuleDict):  # SlowFast: one SGS per pathway
        return t["slow"].last_num_bins + t["fast"].last_num_bins
    return t.last_num_bins


# r3d18 (two temporal convs per block, temporal strides) is not in the seed's list but is an SGS backbone too
NAMES = ["r3d18_a1", "r3d50", "x3d_s", "x3d_m", "slowfast_r50", "r3d18"]


CASES = ([(n, "interpolate") for n in NAMES] + [("slowfast_r50", "released"), ("x3d_s", "released")]
         + [(n, "ordered") for n in ("r3d18_a1", "x3d_s", "slowfast_r50")])
# the random MLP's embedding is tiny; a small minimum change lets ordered keep several bins on these clips
OPTIONS = {"ordered": {"min_change": 1e-6}}


@pytest.mark.parametrize("name,assignment", CASES, ids=[f"{n}-{a}" for n, a in CASES])
def test_logits_do_not_depend_on_the_batch(name, assignment):
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(1)
    sgs = {"after": "res2", "assignment": assignment, **OPTIONS.get(assignment, {})}
    model = build_backbone(name, 5, sgs=sgs).double().eval()
    randomise_batchnorm(model, g)
    t, hw = 16, 16
    states = torch.randn(1, 3, 2, hw, hw, generator=g, dtype=torch.float64)
    few = states[:, :, torch.tensor([0] * (t // 2) + [1] * (t - t // 2))]  # two states: few bins
    with torch.no_grad():
        alone = model(few)
        b_alone = int(kept_bins(model)[0])
        # a batch-mate that keeps more bins: frames of very different energy
        mates = torch.randn(3, 3, t, hw, hw, generator=g, dtype=torch.float64)
        mates = mates * torch.rand(3, 1, t, 1, 1, generator=g, dtype=torch.float64) * 3
        model(mates)
        mate = mates[int(kept_bins(model).argmax())].unsqueeze(0)
        first = model(torch.cat([few, mate]))
        b_batch = kept_bins(model).tolist()
        last = model(torch.cat([mate, few]))
    assert b_batch[0] == b_alone and b_batch[1] > b_alone  # the sample really is padded in the batch
    scale = float(alone.abs().max())
    err = max(float((first[0] - alone[0]).abs().max()), float((last[1] - alone[0]).abs().max()))
    assert err <= 1e-5 * scale, f"{name}: logits moved by {err:.3g} (scale {scale:.3g})"
