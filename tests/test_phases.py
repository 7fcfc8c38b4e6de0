"""Phases, exploration grid positions and radius (TSS supplementary §S.1, "Training phases": warm-up, exploration
at uniformly spaced positions, exploitation) against the formulas written per element."""
import math

import pytest
import torch

from lightning_temporal.sampling.phases import (
    Phase,
    PhaseSchedule,
    exploration_radius,
    exploration_slot_orders,
    exploration_starts,
)
from lightning_temporal.sampling.table import ScoreTable


def test_phase_boundaries():
    s = PhaseSchedule(warmup_epochs=2, exploration_epochs=4)
    phases = [s.phase(e) for e in range(9)]
    assert phases == [Phase.WARMUP] * 2 + [Phase.EXPLORATION] * 4 + [Phase.EXPLOITATION] * 3
    assert [s.exploration_index(e) for e in range(2, 6)] == [0, 1, 2, 3]
    with pytest.raises(ValueError, match="not an exploration epoch"):
        s.exploration_index(6)
    s0 = PhaseSchedule(warmup_epochs=0, exploration_epochs=1)
    assert s0.phase(0) is Phase.EXPLORATION and s0.phase(1) is Phase.EXPLOITATION
    assert Phase.WARMUP == "warmup"  # str enum: logs as its name


@pytest.mark.parametrize("kwargs, match", [
    (dict(warmup_epochs=-1), "warmup_epochs must be an int >= 0"),
    (dict(exploration_epochs=0), "exploration_epochs must be an int >= 1"),
    (dict(exploration_epochs=2.5), "exploration_epochs must be an int >= 1"),
    (dict(warmup_epochs=True), "warmup_epochs"),
])
def test_bad_schedule_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        PhaseSchedule(**kwargs)


def test_negative_epoch_rejected():
    with pytest.raises(ValueError, match="epoch must be an int >= 0"):
        PhaseSchedule().phase(-1)


NS = list(range(1, 40)) + [57, 100, 285, 300]
ES = list(range(2, 10)) + [12]


def test_exploration_starts_and_radius_match_formula():
    n = torch.tensor(NS)
    for E in ES:
        r = exploration_radius(n, E).tolist()
        for k in range(E):
            t = exploration_starts(n, k, E).tolist()
            assert t == [math.floor((N - 1) * k / (E - 1)) for N in NS], (E, k)
        assert r == [math.ceil(max(0, N - E) / (E - 1) / 2) for N in NS], E
    # a few hand-checked values: N = 300, E = 5 -> slots 0, 74, 149, 224, 299 and r = ceil(295/8) = 37
    assert exploration_starts(torch.tensor([300] * 5), torch.arange(5), 5).tolist() == [0, 74, 149, 224, 299]
    assert exploration_radius([300], 5).tolist() == [37]
    # N < E: r = 0 and the grid has repeated positions
    assert exploration_starts(torch.tensor([3] * 5), torch.arange(5), 5).tolist() == [0, 0, 1, 1, 2]
    # N = 1: always 0
    assert exploration_starts([1], 3, 4).tolist() == [0] and exploration_radius([1], 4).tolist() == [0]


def test_one_exploration_epoch_is_the_middle_with_full_radius():
    n = torch.tensor([1, 2, 3, 10, 11, 300])
    assert exploration_starts(n, 0, 1).tolist() == [0, 0, 1, 4, 5, 149]
    assert exploration_radius(n, 1).tolist() == [0, 1, 1, 5, 5, 150]


def test_bad_slot():
    with pytest.raises(ValueError, match=r"slot must be in 0..4"):
        exploration_starts([10], 5, 5)


@pytest.mark.parametrize("E", list(range(1, 13)))
def test_exploration_fills_every_position(E):
    """Exploration writes each score over [t - r, t + r], r = ceil(max(0, N - E) / (E - 1) / 2), so that the table
    is fully initialised after exploration: check it for N = 1..300."""
    lengths = list(range(1, 301))
    V = len(lengths)
    table = ScoreTable(lengths, clip_len=16)
    table.values.fill_(float("nan"))  # sentinel: anything not written stays NaN
    n = table.num_positions
    r = exploration_radius(n, E)
    for k in range(E):
        t = exploration_starts(n, k, E)
        table.fill(torch.arange(V), t, torch.full((V,), float(k)), r)
    unwritten = (~torch.isfinite(table.values)).sum()
    assert unwritten == 0, f"E={E}: {int(unwritten)} positions never written"
    # Independent check with Python sets on a few N: union of the windows = all positions.
    for N in (1, 2, E - 1, E, E + 1, 2 * E + 3, 97, 300):
        if N < 1:
            continue
        rr = math.ceil(max(0, N - E) / (E - 1) / 2) if E > 1 else N // 2
        ts = [math.floor((N - 1) * k / (E - 1)) for k in range(E)] if E > 1 else [(N - 1) // 2]
        covered = set()
        for t in ts:
            covered |= set(range(max(0, t - rr), min(N, t + rr + 1)))
        assert covered == set(range(N)), (N, E)


def test_radius_is_not_larger_than_needed():
    # With r - 1 some position would stay unwritten for some N (r is the smallest radius that covers),
    # at least for N well above E: checks the formula is not just "large".
    E = 5
    for N in (9, 10, 30, 300):
        r = int(exploration_radius([N], E))
        ts = [math.floor((N - 1) * k / (E - 1)) for k in range(E)]
        covered = set()
        for t in ts:
            covered |= set(range(max(0, t - (r - 1)), min(N, t + r)))
        assert covered != set(range(N)), N


def test_slot_orders_are_per_video_permutations():
    o = exploration_slot_orders(1000, 5, seed=3)
    assert o.shape == (1000, 5)
    assert torch.equal(o.sort(dim=1).values, torch.arange(5).expand(1000, 5).to(o.dtype))
    # each video its own order: many distinct orders, and each slot is first for about 1/5 of videos
    assert len({tuple(row) for row in o.tolist()}) > 100
    first = torch.bincount(o[:, 0].long(), minlength=5)
    assert (first > 150).all()
    assert torch.equal(o, exploration_slot_orders(1000, 5, seed=3))
    assert not torch.equal(o, exploration_slot_orders(1000, 5, seed=4))
