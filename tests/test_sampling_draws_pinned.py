"""The epoch plan's softmax draws are pinned to their arithmetic (a faster kernel must draw exactly the same starts,
or resumed runs and stored plans change), and the float32-overflow check of the temperature reads the table in the
sampling pass itself (no pass of its own) yet still sees the whole table's spread."""
from __future__ import annotations

import re

import pytest
import torch

import lightning_temporal.sampling.segments as segments
from lightning_temporal.sampling.segments import segment_offsets, segment_softmax_entropy, segment_softmax_sample
from lightning_temporal.sampling.table import ScoreTable

# (sum_i (i + 1) * draw_i, first 8 draws) of segment_softmax_sample as written before the prefix and check were
# folded into one pass; tables and uniforms below (torch's CPU generator)
PINNED = [(5414787, [33, 12, 21, 39, 35, 58, 14, 24]), (5467711, [11, 9, 22, 39, 47, 49, 11, 18]),
          (5465927, [33, 32, 9, 49, 2, 58, 14, 32]), (3737791, [43, 27, 57, 26, 51, 42, 24, 6]),
          (3871247, [15, 21, 54, 36, 55, 50, 22, 31]), (3521922, [43, 27, 16, 26, 26, 42, 24, 6])]


@pytest.mark.parametrize("chunk", [None, 1000])
def test_softmax_draws_are_the_pinned_ones(monkeypatch, chunk):
    if chunk is not None:
        monkeypatch.setattr(segments, "CHUNK_ELEMS", chunk)  # ~30 chunks: segments cut at chunk borders too
    g = torch.Generator().manual_seed(2024)
    ragged = torch.randint(1, 90, (700,), generator=g)
    equal = torch.full((500,), 61)  # the 2-D [segments, N] path
    got = []
    for lengths in (ragged, equal):
        off = segment_offsets(lengths)
        values = torch.randn(int(off[-1]), generator=g) * 3
        for gamma in (1.0, 0.3, 1e6):
            d = segment_softmax_sample(values, off, gamma, torch.Generator().manual_seed(7))
            assert ((d >= 0) & (d < lengths)).all()
            got.append((int((d * torch.arange(1, d.numel() + 1)).sum()), d[:8].tolist()))
    assert got == PINNED


def _spread_across_chunks() -> ScoreTable:
    """Every video's own spread is 1, but the table's minimum (video 0) and maximum (the last video) are 4
    apart; with small chunks they lie in different chunks."""
    table = ScoreTable([50] * 40, clip_len=2)
    table.values.copy_(torch.rand(table.values.numel(), generator=torch.Generator().manual_seed(0)))
    table.values[:50] -= 1.5
    table.values[-50:] += 1.5
    return table


@pytest.mark.parametrize("chunk", [None, 200])
def test_the_overflow_check_sees_the_whole_table_without_a_pass_of_its_own(monkeypatch, chunk):
    if chunk is not None:
        monkeypatch.setattr(segments, "CHUNK_ELEMS", chunk)
    table = _spread_across_chunks()
    lo, hi = torch.aminmax(table.values)
    spread = float(hi) - float(lo)
    assert 3.9 < spread <= 4.0

    def no_pass(*args, **kwargs):
        raise AssertionError("a separate aminmax pass over the table")

    monkeypatch.setattr(torch, "aminmax", no_pass)
    limit = 3.4028234663852886e38 / spread
    for g in (limit * 1.01, 1e38):
        with pytest.raises(ValueError, match=re.escape(f"gamma_s = {g:.4g} times the score tables' spread "
                                                       f"(max - min = {spread:.4g}) overflows float32")):
            table.sample(g, torch.Generator().manual_seed(0))
        with pytest.raises(ValueError, match="overflows float32"):
            table.entropy(g)
    # below the bound: each video's maximum (its own spread is only 1)
    best = table.values.view(40, 50).argmax(1)
    assert torch.equal(table.sample(limit * 0.99, torch.Generator().manual_seed(0)), best)
    assert torch.equal(table.entropy(limit * 0.99), torch.zeros(40))


@pytest.mark.parametrize("lengths", [[50] * 40, list(range(1, 60))])
def test_on_extrema_gets_the_tables_minimum_and_maximum(monkeypatch, lengths):
    monkeypatch.setattr(segments, "CHUNK_ELEMS", 300)
    off = segment_offsets(torch.tensor(lengths))
    values = torch.randn(int(off[-1]), generator=torch.Generator().manual_seed(1))
    for kernel in (lambda **kw: segment_softmax_sample(values, off, 2.0, torch.Generator().manual_seed(0), **kw),
                   lambda **kw: segment_softmax_entropy(values, off, 2.0, **kw)):
        seen = []
        plain = kernel()
        assert torch.equal(kernel(on_extrema=lambda lo, hi: seen.append((lo, hi))), plain)  # draws unchanged
        assert seen == [(float(values.min()), float(values.max()))]
        values[len(values) // 2] = float("nan")  # NaN propagates, as through torch.aminmax
        seen.clear()
        kernel(on_extrema=lambda lo, hi: seen.append((lo, hi)))
        assert len(seen) == 1 and all(x != x for x in seen[0])
        values[len(values) // 2] = 0.0


def test_exploration_plan_is_the_checked_grid_and_bad_slot_orders_are_refused_at_load():
    """The exploration plan skips the per-epoch checks of N_v and the slots (done when the policy is built or
    loaded): its starts are still exploration_starts' grid, and a checkpoint with slots outside 0..E-1 is refused
    when it is loaded (it can no longer fail later, at its first exploration epoch)."""
    from lightning_temporal.sampling import PhaseSchedule, StochasticSoftmaxPolicy, exploration_starts

    lengths = torch.randint(1, 300, (500,), generator=torch.Generator().manual_seed(0))
    sched = PhaseSchedule(warmup_epochs=2, exploration_epochs=5)
    policy = StochasticSoftmaxPolicy(lengths, clip_len=8, schedule=sched, seed=3)
    for epoch in range(2, 7):
        k = policy.slot_orders[:, epoch - 2].long()
        assert torch.equal(policy.starts(epoch), exploration_starts(lengths, k, 5))
    state = policy.state_dict()
    state["slot_orders"][7, 1] = 5
    fresh = StochasticSoftmaxPolicy(lengths, clip_len=8, schedule=sched, seed=3)
    with pytest.raises(ValueError, match=r"slot_orders hold values in 0\.\.5, slots must be in 0\.\.4 \(E = 5\)"):
        fresh.load_state_dict(state)


def test_warmup_plan_is_the_uniform_formula_and_last_positions_follow_num_positions():
    """Warm-up starts are min(floor(u N_v), N_v - 1) with one float64 uniform per video, N_v - 1 read from the
    policy's kept ``last_positions``, which follows a replaced ``num_positions``."""
    from lightning_temporal.sampling import PhaseSchedule, StochasticSoftmaxPolicy

    lengths = torch.randint(1, 300, (400,), generator=torch.Generator().manual_seed(1))
    policy = StochasticSoftmaxPolicy(lengths, clip_len=8, schedule=PhaseSchedule(warmup_epochs=2,
                                                                                 exploration_epochs=3))
    u = torch.rand(400, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    want = torch.minimum((u * lengths).to(torch.int64), lengths - 1)
    assert torch.equal(policy.starts(0, torch.Generator().manual_seed(4)), want)
    assert policy.last_positions is policy.last_positions  # kept, not made again
    policy.num_positions = lengths + 5
    assert torch.equal(policy.last_positions, lengths + 4)
