"""The segment kernels at a temperature below 1 (γ_s = 0.3): entropies against the direct formula
H = -Σ p log p with p = softmax(γ·w), and sampled frequencies against softmax(γ·w) by a chi-square test (the
existing tests use γ = 0, 1, 2, 3 and 1000, where a kernel that skipped the multiply for γ < 1 would pass)."""
import math

import numpy as np
import torch

from lightning_temporal.sampling.table import ScoreTable
from tests.stats import chi2_pvalue

GAMMA = 0.3


def _table(reps: int) -> ScoreTable:
    w_a = torch.tensor([0.0, 4.0, -3.0, 6.0, 1.5, 0.0, 5.0, -6.0])  # two lengths: the ragged path too
    w_b = torch.tensor([6.0, -3.0, 0.0, 1.0, 3.0])
    table = ScoreTable([8, 5] * reps, clip_len=2)
    table.values.copy_(torch.cat([w_a, w_b]).repeat(reps))
    return table


def test_entropy_below_temperature_one():
    table = _table(3)
    ent = table.entropy(GAMMA)
    for v in range(6):
        p = torch.softmax(GAMMA * table[v].double(), 0)
        assert math.isclose(float(ent[v]), float(-(p * p.log()).sum()), rel_tol=1e-5)
        torch.testing.assert_close(table.probabilities(v, GAMMA), p.float())
    equal = ScoreTable([8] * 3, clip_len=2)  # equal lengths: the 2-D path
    equal.values.copy_(table[0].repeat(3))
    torch.testing.assert_close(equal.entropy(GAMMA), ent[0].expand(3))


def test_sampling_below_temperature_one():
    reps = 20000
    table = _table(reps)
    s = table.sample(GAMMA, torch.Generator().manual_seed(7)).numpy()
    for v, draws in ((0, s[0::2]), (1, s[1::2])):
        probs = torch.softmax(GAMMA * table[v].double(), 0).numpy()
        assert chi2_pvalue(draws, probs) > 1e-3
        assert chi2_pvalue(draws, torch.softmax(table[v].double(), 0).numpy()) < 1e-6  # not softmax(w)
    assert np.all(s >= 0)
