"""Policies: phase behaviour, updates against element-by-element Python, sampling frequencies, resume."""
import io
import math

import numpy as np
import pytest
import torch

from lightning_temporal.sampling.phases import Phase, PhaseSchedule
from lightning_temporal.sampling.policies import (
    PriorPolicy,
    ReinforcePolicy,
    StochasticSoftmaxPolicy,
    UniformPolicy,
    FlatFrameScores,
    clip_prior,
)
from lightning_temporal.sampling.sampler import ClipSampler
from tests.stats import chi2_pvalue


def fake_score(video_idx, start):
    """Deterministic stand-in for the model's target logit: a bump per video plus a video offset."""
    v = video_idx.double()
    centre = (v * 7.0) % 23.0
    return (torch.cos((start.double() - centre) / 5.0) * 2.0 + 0.1 * (v % 5)).float()


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)




# --------------------------------------------------------------------------- stochastic softmax
def test_stochastic_softmax_phases_and_updates_match_elementwise():
    lengths = [30, 1, 4, 17, 60]
    F, E, W = 4, 3, 2
    pol = StochasticSoftmaxPolicy(lengths, clip_len=F, gamma_s=1.0,
                                  schedule=PhaseSchedule(warmup_epochs=W, exploration_epochs=E), seed=1)
    ref = [[0.0] * n for n in lengths]
    vid = torch.arange(len(lengths))
    visited = [set() for _ in lengths]
    for epoch in range(W + E + 3):
        st = pol.starts(epoch, _gen(epoch))
        assert ((st >= 0) & (st < torch.tensor(lengths))).all()
        sc = fake_score(vid, st)
        counts = pol.update(epoch, vid, st, sc)
        phase = pol.phase(epoch)
        if phase is Phase.WARMUP:
            assert counts["applied"] == 0 and counts["ignored"] == len(lengths)
        elif phase is Phase.EXPLORATION:
            for v, t, f in zip(vid.tolist(), st.tolist(), sc.tolist()):
                N = lengths[v]
                k = int(pol.slot_orders[v, epoch - W])
                assert t == math.floor((N - 1) * k / (E - 1))
                visited[v].add(k)
                r = math.ceil(max(0, N - E) / (E - 1) / 2)
                for j in range(max(0, t - r), min(N, t + r + 1)):
                    ref[v][j] = f
        else:
            for v, t, f in zip(vid.tolist(), st.tolist(), sc.tolist()):
                N = lengths[v]
                for i in range(-(F - 1), F):
                    if 0 <= t + i < N:
                        ref[v][t + i] += ((F - abs(i)) / F) * (f - ref[v][t + i])
        for v in range(len(lengths)):
            np.testing.assert_allclose(pol.table[v].numpy(), ref[v], atol=1e-5, err_msg=f"epoch {epoch} video {v}")
        if phase is Phase.WARMUP:
            assert pol.table.values.abs().sum() == 0
    assert all(s == set(range(E)) for s in visited)  # every video visited each of its slots once


def test_exploitation_frequencies_match_softmax_of_table():
    reps = 20000
    w = torch.tensor([0.0, 2.0, -1.0, 1.0, 0.5, 3.0, 0.0])
    for gamma in (0.0, 1.5):
        pol = StochasticSoftmaxPolicy([7] * reps, clip_len=2, gamma_s=gamma,
                                      schedule=PhaseSchedule(warmup_epochs=0, exploration_epochs=1))
        pol.table.values.copy_(w.repeat(reps))
        draws = pol.starts(1, _gen(11)).numpy()
        assert chi2_pvalue(draws, torch.softmax(gamma * w.double(), 0).numpy()) > 1e-3
        if gamma > 0:
            assert chi2_pvalue(draws, np.full(7, 1 / 7)) < 1e-6
        else:  # gamma_s = 0 is uniform even though the table is not flat
            assert chi2_pvalue(draws, np.full(7, 1 / 7)) > 1e-3


def test_entropy_per_phase():
    pol = StochasticSoftmaxPolicy([8, 3], clip_len=2, gamma_s=2.0,
                                  schedule=PhaseSchedule(warmup_epochs=1, exploration_epochs=2))
    torch.testing.assert_close(pol.entropy(0), torch.log(torch.tensor([8.0, 3.0])))
    assert pol.entropy(1).abs().sum() == 0
    pol.table.values.copy_(torch.arange(11, dtype=torch.float32) / 4)
    p = torch.softmax(2.0 * pol.table[0].double(), 0)
    assert math.isclose(float(pol.entropy(3)[0]), float(-(p * p.log()).sum()), rel_tol=1e-5)
    torch.testing.assert_close(pol.probabilities(0, 3), p.float())
    e1 = pol.probabilities(1, 1)
    assert e1.sum() == 1 and e1.max() == 1


def test_policy_argument_errors():
    with pytest.raises(ValueError, match="gamma_s must be a finite number >= 0"):
        StochasticSoftmaxPolicy([5], clip_len=2, gamma_s=-1.0)
    with pytest.raises(ValueError, match="gamma_s"):
        PriorPolicy([[1.0, 2.0]], clip_len=1, gamma_s=float("nan"))
    with pytest.raises(ValueError, match="clip_len must be an int >= 1"):
        StochasticSoftmaxPolicy([5], clip_len=0)
    with pytest.raises(ValueError, match="num_positions"):
        StochasticSoftmaxPolicy([5, 0], clip_len=2)
    with pytest.raises(ValueError, match="lr must be a finite number > 0"):
        ReinforcePolicy([5], lr=0.0)
    with pytest.raises(ValueError, match=r"baseline_momentum must be in \[0, 1\)"):
        ReinforcePolicy([5], baseline_momentum=1.0)
    pol = StochasticSoftmaxPolicy([5], clip_len=2)
    with pytest.raises(ValueError, match="epoch must be an int >= 0"):
        pol.starts(-1, _gen())
    with pytest.raises(ValueError, match="video_idx must be in 0..0"):
        pol.update(3, torch.tensor([1]), torch.tensor([0]), torch.tensor([1.0]))
    with pytest.raises(ValueError, match="start must be in 0..4"):
        pol.update(9, torch.tensor([0]), torch.tensor([5]), torch.tensor([1.0]))


def test_nonfinite_scores_counted_by_policies():
    pol = StochasticSoftmaxPolicy([5, 5], clip_len=2, schedule=PhaseSchedule(0, 1))
    with pytest.warns(RuntimeWarning, match="non-finite"):
        c = pol.update(1, torch.tensor([0, 1]), torch.tensor([2, 2]), torch.tensor([float("nan"), 1.0]))
    assert c["nonfinite"] == 1 and c["applied"] == 1 and torch.isfinite(pol.table.values).all()
    rp = ReinforcePolicy([5, 5])
    with pytest.warns(RuntimeWarning, match="non-finite"):
        c = rp.update(0, torch.tensor([0, 1]), torch.tensor([2, 2]), torch.tensor([1.0, float("inf")]))
    assert c["nonfinite"] == 1 and torch.isfinite(rp.table.values).all() and not bool(rp.seen[1])


def test_load_state_dict_rejects_other_configuration():
    a = StochasticSoftmaxPolicy([5, 6], clip_len=2, gamma_s=1.0, schedule=PhaseSchedule(3, 5))
    with pytest.raises(ValueError, match="schedule"):
        StochasticSoftmaxPolicy([5, 6], clip_len=2, gamma_s=1.0, schedule=PhaseSchedule(2, 5)).load_state_dict(
            a.state_dict())
    with pytest.raises(ValueError, match="other videos"):
        StochasticSoftmaxPolicy([5, 7], clip_len=2, gamma_s=1.0, schedule=PhaseSchedule(3, 5)).load_state_dict(
            a.state_dict())


# --------------------------------------------------------------------------- prior
def test_clip_prior_matches_windowed_mean():
    rng = np.random.default_rng(0)
    F = 5
    frames = [rng.normal(size=L) for L in (20, 5, 3, 1, 9)]
    prior, n = clip_prior(frames, F)
    assert n.tolist() == [16, 1, 1, 1, 5]
    flat_prior, flat_n = clip_prior(FlatFrameScores(torch.from_numpy(np.concatenate(frames)),
                                                    torch.tensor([len(x) for x in frames])), F)
    assert torch.equal(flat_prior, prior) and torch.equal(flat_n, n)
    off = 0
    for x, N in zip(frames, n.tolist()):
        padded = list(x) + [x[-1]] * max(0, F - len(x))  # short videos repeat their last frame
        ref = [sum(padded[t:t + F]) / F for t in range(N)]
        np.testing.assert_allclose(prior[off:off + N].numpy(), ref, rtol=1e-5, atol=1e-6)
        off += N


def test_clip_prior_is_chunk_independent(monkeypatch):
    import lightning_temporal.sampling.segments as segments
    rng = np.random.default_rng(1)
    frames = [rng.normal(size=L) for L in rng.integers(1, 60, size=50)]
    whole, n = clip_prior(frames, 6)
    monkeypatch.setattr(segments, "CHUNK_ELEMS", 100)
    chunked, n2 = clip_prior(frames, 6)
    assert torch.equal(n, n2)
    torch.testing.assert_close(chunked, whole)


def test_prior_policy_samples_softmax_of_prior_from_epoch_0():
    reps = 20000
    frames = [0.0, 0.0, 1.0, 3.0, 3.0, 1.0, 0.0, 0.0]
    pol = PriorPolicy([frames] * reps, clip_len=2, gamma_s=2.0)
    p = torch.softmax(2.0 * torch.tensor([0.0, 0.5, 2.0, 3.0, 2.0, 0.5, 0.0], dtype=torch.float64), 0)
    assert pol.phase(0) is Phase.EXPLOITATION
    draws = pol.starts(0, _gen(2)).numpy()
    assert chi2_pvalue(draws, p.numpy()) > 1e-3
    before = pol.table.values.clone()
    c = pol.update(0, torch.arange(3), torch.zeros(3, dtype=torch.long), torch.ones(3))
    assert c["applied"] == 0 and torch.equal(pol.table.values, before)
    q = PriorPolicy.from_clip_prior([[0.0, 0.5, 2.0, 3.0, 2.0, 0.5, 0.0]], clip_len=2, gamma_s=2.0)
    torch.testing.assert_close(q.probabilities(0, 5), p.float())


def test_prior_rejects_bad_frame_scores():
    with pytest.raises(ValueError, match="video 1 has a non-finite value nan at frame 2"):
        PriorPolicy([[1.0, 2.0], [0.0, 1.0, float("nan")]], clip_len=2)
    with pytest.raises(ValueError, match="video 0 is empty"):
        PriorPolicy([[], [1.0]], clip_len=2)


# --------------------------------------------------------------------------- reinforce
@pytest.mark.parametrize("records", [7, 1])  # 7: whole-table pass; 1: ragged pass over few videos
def test_reinforce_update_matches_elementwise(records):
    rng = np.random.default_rng(5)
    lengths = [6, 1, 9, 3]
    lr, m = 0.7, 0.8
    pol = ReinforcePolicy(lengths, lr=lr, baseline_momentum=m)
    theta = [[0.0] * n for n in lengths]
    base, seen = [0.0] * 4, [False] * 4
    for epoch in range(5):
        vid = rng.integers(0, 4, size=records)  # duplicates: applied in the given order
        st = np.array([rng.integers(0, lengths[v]) for v in vid])
        sc = rng.normal(size=records).astype(np.float32) * 3
        pol.update(epoch, torch.from_numpy(vid), torch.from_numpy(st), torch.from_numpy(sc))
        for v, t, f in zip(vid.tolist(), st.tolist(), sc.tolist()):
            b = base[v] if seen[v] else f
            reward = f - b
            base[v] = m * b + (1 - m) * f if seen[v] else f
            seen[v] = True
            z = [math.exp(x) for x in theta[v]]
            pi = [x / sum(z) for x in z]
            theta[v] = [th + lr * reward * ((1.0 if j == t else 0.0) - pi[j]) for j, th in enumerate(theta[v])]
    for v in range(4):
        np.testing.assert_allclose(pol.table[v].numpy(), theta[v], atol=1e-5)
    np.testing.assert_allclose(pol.baseline.numpy(), base, atol=1e-6)
    assert max(abs(x) for row in theta for x in row) > 0.1  # the updates were not trivially zero


def test_reinforce_samples_softmax_of_theta():
    reps = 20000
    th = torch.tensor([0.0, 1.0, -0.5, 2.0])
    pol = ReinforcePolicy([4] * reps)
    pol.table.values.copy_(th.repeat(reps))
    assert chi2_pvalue(pol.starts(0, _gen(4)).numpy(), torch.softmax(th.double(), 0).numpy()) > 1e-3


# --------------------------------------------------------------------------- resume
def _make(kind, lengths):
    if kind == "tss":
        return StochasticSoftmaxPolicy(lengths, clip_len=4, gamma_s=2.0,
                                       schedule=PhaseSchedule(warmup_epochs=2, exploration_epochs=3), seed=7)
    if kind == "reinforce":
        return ReinforcePolicy(lengths, lr=0.5, baseline_momentum=0.9)
    if kind == "prior":
        frames = [torch.sin(torch.arange(n + 3, dtype=torch.float32) / (3 + v % 4)) for v, n in enumerate(lengths)]
        return PriorPolicy(frames, clip_len=4, gamma_s=3.0)
    return UniformPolicy(lengths)


def _run(policy, lengths, epochs, num_replicas=3):
    sampler = ClipSampler(lengths, policy, seed=123, num_replicas=num_replicas, rank=0)
    plans = []
    for epoch in epochs:
        sampler.set_epoch(epoch)
        vid, st = sampler.epoch_plan()  # global plan order = the order records are gathered in
        plans.append((vid.clone(), st.clone()))
        policy.update(epoch, vid, st, fake_score(vid, st))
    return plans


@pytest.mark.parametrize("kind", ["tss", "reinforce", "prior", "uniform"])
def test_resume_gives_same_clips_and_tables(kind):
    lengths = [int(x) for x in torch.randint(1, 80, (41,), generator=_gen(0))]  # 41 videos: padded on 3 ranks
    full = _make(kind, lengths)
    plans_full = _run(full, lengths, range(12))

    first = _make(kind, lengths)
    plans_a = _run(first, lengths, range(6))
    buf = io.BytesIO()
    torch.save(first.state_dict(), buf)  # through a checkpoint file, as Lightning would
    buf.seek(0)
    resumed = _make(kind, lengths)
    resumed.load_state_dict(torch.load(buf, weights_only=True))
    plans_b = _run(resumed, lengths, range(6, 12))

    for e, ((v1, s1), (v2, s2)) in enumerate(zip(plans_full, plans_a + plans_b)):
        assert torch.equal(v1, v2) and torch.equal(s1, s2), f"epoch {e}"
    if kind == "tss":
        assert torch.equal(full.table.values, resumed.table.values)
        assert full.table.values.abs().sum() > 0
        # exploitation starts really depend on the table (not uniform): they differ from a fresh policy's
        fresh = _make(kind, lengths)
        g1, g2 = _gen(1), _gen(1)
        assert not torch.equal(full.starts(11, g1), fresh.starts(11, g2))
    if kind == "reinforce":
        assert torch.equal(full.table.values, resumed.table.values)
        assert torch.equal(full.baseline, resumed.baseline)
        assert full.table.values.abs().sum() > 0


def test_a_policy_that_breaks_the_contract_is_named():
    """A policy whose phase_of says EXPLORATION without _exploration_starts, or that learns without _learn,
    fails with an error naming it and the missing method (the base class's hooks are guards, not stubs)."""
    from lightning_temporal.sampling.policy import SamplingPolicy

    class Explores(SamplingPolicy):
        learns = True

        @classmethod
        def phase_of(cls, epoch, schedule=None):
            return Phase.EXPLORATION

    p = Explores([4, 2])
    with pytest.raises(NotImplementedError, match=r"Explores.phase_of\(0\) is EXPLORATION .* _exploration_starts"):
        p.starts(0, torch.Generator().manual_seed(0))
    with pytest.raises(NotImplementedError, match=r"Explores.phase_of\(0\) is EXPLORATION .* _exploration_starts"):
        p.probabilities(0, 0)
    with pytest.raises(NotImplementedError, match=r"Explores.learns is True .* does not define _learn"):
        p.update(0, torch.tensor([0]), torch.tensor([1]), torch.tensor([0.5]))


# ---------------------------------------------------------------------------------------- BootstrapPolicy
def _epoch_records(policy, n_right, n, start=0):
    """n records on video 0 (clip position ``start``), the first ``n_right`` classified right."""
    margin = torch.where(torch.arange(n) < n_right, 1.0, -1.0)
    return (torch.zeros(n, dtype=torch.long), torch.full((n,), start), torch.ones(n)), \
        dict(predicted=torch.zeros(n, dtype=torch.long), margin=margin)


def test_bootstrap_gate_needs_patience_epochs_above_chance_and_ignores_one_lucky_epoch():
    from lightning_temporal.sampling import BootstrapPolicy
    p = BootstrapPolicy([50], clip_len=4, num_classes=4, patience=2, z=2.0)
    # 100 records: threshold = 1/4 + 2 * sqrt(3/16 / 100) = 0.3366
    assert p.threshold(100) == pytest.approx(0.25 + 2 * (0.1875 / 100) ** 0.5)
    for epoch, right in enumerate([60, 20, 60, 30, 60, 60]):   # above, below, above, below (0.30), above, above
        args, kw = _epoch_records(p, right, 100)
        p.update(epoch, *args, **kw)
        assert p.phase(epoch).value == "warmup"   # an epoch's own phase never changes at its update
    assert p.exploit_from == 6                     # opened by epochs 4 and 5, from epoch 6
    assert [p.phase(e).value for e in (5, 6, 9)] == ["warmup", "exploitation", "exploitation"]
    state = p.state_dict()
    q = BootstrapPolicy([50], clip_len=4, num_classes=4, patience=2, z=2.0)
    q.load_state_dict(state)
    assert q.exploit_from == 6 and torch.equal(q.table.values, p.table.values)


def test_bootstrap_first_record_fills_the_video_then_eq_s2_and_the_floor_of_uniform():
    from lightning_temporal.sampling import BootstrapPolicy
    p = BootstrapPolicy([6, 3], clip_len=2, num_classes=2, epsilon=0.2, gamma_s=1.0, normalise=False)
    p.update(0, torch.tensor([0, 0]), torch.tensor([1, 4]), torch.tensor([2.0, 5.0]))
    # video 0: filled with 2 by its first record, then Eq. S.2 of both records (reach |i| < 2, weights 1/2, 1, 1/2)
    assert p.table[0].tolist() == [2.0, 2.0, 2.0, 3.5, 5.0, 3.5]
    assert p.table[1].tolist() == [0.0, 0.0, 0.0]   # video 1 not seen
    p.exploit_from = 1
    soft = torch.softmax(p.table[0].double(), 0)
    expected = 0.8 * soft + 0.2 / 6
    torch.testing.assert_close(p.probabilities(0, 1), expected.float())
    h = -(expected * expected.log()).sum()
    torch.testing.assert_close(p.entropy(1)[0], h.float())
    # the draws follow the mixture: frequencies within 4 s.e. over 4000 draws
    g = torch.Generator().manual_seed(0)
    draws = torch.stack([p.starts(1, g)[0] for _ in range(4000)])
    freq = torch.bincount(draws, minlength=6).double() / 4000
    se = (expected * (1 - expected) / 4000).sqrt()
    assert bool(((freq - expected).abs() < 4 * se + 1e-3).all()), (freq, expected)


def test_bootstrap_normalised_draws_from_each_videos_standardised_table():
    from lightning_temporal.sampling import BootstrapPolicy
    p = BootstrapPolicy([6, 3], clip_len=2, num_classes=2, epsilon=0.1, gamma_s=2.0)
    p.update(0, torch.tensor([0, 0, 1]), torch.tensor([1, 4, 0]), torch.tensor([0.02, 0.05, 0.3]))
    p.exploit_from = 1
    for v, flat in ((0, False), (1, True)):
        w = p.table[v].double()
        z = (w - w.mean()) / w.std(unbiased=False) if w.std() > 0 else w * 0   # video 1 is one value: uniform
        expected = 0.9 * torch.softmax(2.0 * z, 0) + 0.1 / w.numel()
        torch.testing.assert_close(p.probabilities(v, 1), expected.float())
        assert flat == bool(torch.allclose(expected, torch.full_like(expected, 1 / w.numel())))
    # scale-free: the same table times 100 gives the same distribution
    q = BootstrapPolicy([6, 3], clip_len=2, num_classes=2, epsilon=0.1, gamma_s=2.0)
    q.update(0, torch.tensor([0, 0, 1]), torch.tensor([1, 4, 0]), torch.tensor([2.0, 5.0, 30.0]))
    q.exploit_from = 1
    torch.testing.assert_close(q.probabilities(0, 1), p.probabilities(0, 1))
