"""ScoreTable: Eq. S.2 and the hard fill against element-by-element Python, rounds, bad values, sampling."""
import math
import warnings

import numpy as np
import pytest
import torch

import lightning_temporal.sampling.segments as segments
from lightning_temporal.sampling.records import record_occurrence
from lightning_temporal.sampling.segments import segment_softmax_entropy, segment_softmax_sample
from lightning_temporal.sampling.table import ScoreTable
from tests.stats import chi2_pvalue


def _random_records(rng, lengths, R, dup=True):
    V = len(lengths)
    vid = rng.integers(0, V, size=R) if dup else rng.permutation(V)[:R]
    st = np.array([rng.integers(0, lengths[v]) for v in vid])
    sc = rng.normal(0, 3, size=R).astype(np.float32)
    return torch.from_numpy(vid), torch.from_numpy(st), torch.from_numpy(sc)


def _reference_tables(lengths):
    return [[0.0] * n for n in lengths]


def _ref_interpolate(w, vid, st, sc, F):
    # Seed Eq. S.2, one record after the other, one position after the other (float64).
    for v, t, f in zip(vid.tolist(), st.tolist(), sc.tolist()):
        N = len(w[v])
        for i in range(-(F - 1), F):
            if 0 <= t + i < N:
                w[v][t + i] = w[v][t + i] + ((F - abs(i)) / F) * (f - w[v][t + i])


def _ref_fill(w, vid, st, sc, rad):
    for v, t, f, r in zip(vid.tolist(), st.tolist(), sc.tolist(), rad):
        N = len(w[v])
        for j in range(t - r, t + r + 1):
            if 0 <= j < N:
                w[v][j] = f


def _assert_tables(table, ref, atol=1e-5):
    for v, row in enumerate(ref):
        np.testing.assert_allclose(table[v].numpy(), np.array(row), atol=atol, rtol=1e-5,
                                   err_msg=f"video {v}")


@pytest.mark.parametrize("F", [1, 2, 5, 16])
def test_interpolate_matches_elementwise_eq_s2(F):
    rng = np.random.default_rng(F)
    lengths = rng.integers(1, 40, size=25).tolist() + [1, 2, 3]
    table = ScoreTable(lengths, clip_len=F)
    ref = _reference_tables(lengths)
    for _ in range(4):  # several calls, each with duplicated videos (rounds)
        vid, st, sc = _random_records(rng, lengths, 60)
        counts = table.interpolate(vid, st, sc)
        _ref_interpolate(ref, vid, st, sc, F)
        assert counts["applied"] == 60 and counts["nonfinite"] == 0
        assert counts["rounds"] == int(record_occurrence(vid).max()) + 1
    _assert_tables(table, ref)
    # The tables really changed (a no-op implementation would not pass the comparison above).
    assert float(table.values.abs().sum()) > 1.0


def test_interpolate_center_weight_one_and_window():
    table = ScoreTable([10], clip_len=3)
    table.interpolate(torch.tensor([0]), torch.tensor([4]), torch.tensor([3.0]))
    np.testing.assert_allclose(table[0].numpy(), [0, 0, 1, 2, 3, 2, 1, 0, 0, 0], atol=1e-6)


@pytest.mark.parametrize("radius_kind", ["scalar", "similar", "one_huge"])
def test_fill_matches_elementwise(radius_kind):
    # "one_huge": one record with radius 1000 among radius-0 records takes the ragged-expansion path.
    rng = np.random.default_rng(7)
    lengths = rng.integers(1, 50, size=30).tolist()
    table = ScoreTable(lengths, clip_len=4)
    ref = _reference_tables(lengths)
    scalar_radius = radius_kind == "scalar"
    for _ in range(3):
        vid, st, sc = _random_records(rng, lengths, 50)
        if radius_kind == "similar":
            rad = rng.integers(0, 20, size=50)
        elif radius_kind == "one_huge":
            rad = np.zeros(50, dtype=np.int64)
            rad[rng.integers(0, 50)] = 1000
        else:
            rad = 3
        table.fill(vid, st, sc, rad if scalar_radius else torch.from_numpy(rad))
        _ref_fill(ref, vid, st, sc, [rad] * 50 if scalar_radius else rad.tolist())
    _assert_tables(table, ref, atol=0)


def test_duplicates_applied_in_given_order():
    # Same video three times in one call: the last fill wins, and Eq. S.2 composes in order.
    table = ScoreTable([6, 4], clip_len=2)
    table.fill([0, 1, 0, 0], [2, 0, 3, 2], [1.0, 5.0, 2.0, 3.0], radius=1)
    np.testing.assert_array_equal(table[0].numpy(), [0, 3, 3, 3, 2, 0])
    t2 = ScoreTable([6], clip_len=2)
    t2.interpolate([0, 0], [1, 1], [4.0, 0.0])
    # first: w = [2, 4, 2, 0, 0, 0]; second (f = 0): w[1] = 0, w[0] = 1, w[2] = 1
    np.testing.assert_allclose(t2[0].numpy(), [1, 0, 1, 0, 0, 0], atol=1e-6)
    occ = record_occurrence(torch.tensor([3, 1, 3, 3, 1, 0]))
    assert occ.tolist() == [0, 0, 1, 2, 1, 0]


def test_nonfinite_scores_never_written_and_reported():
    table = ScoreTable([5, 5, 5], clip_len=2)
    with pytest.warns(RuntimeWarning, match=r"2 non-finite clip score\(s\).*\[0, 2\]"):
        c = table.interpolate([0, 1, 2], [1, 1, 1], [float("nan"), 1.0, float("inf")])
    assert c == {"applied": 1, "nonfinite": 2, "rounds": 1}
    assert torch.isfinite(table.values).all()
    assert table[0].abs().sum() == 0 and table[2].abs().sum() == 0 and table[1][1] == 1.0
    with pytest.warns(RuntimeWarning, match="1 non-finite"):
        c = table.fill([2, 2], [0, 4], [float("-inf"), 7.0], radius=torch.tensor([9, 0]))
    assert c["nonfinite"] == 1 and table[2].tolist() == [0, 0, 0, 0, 7.0]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # finite scores: no warning
        table.interpolate([0], [0], [1.0])


def test_bad_records_and_arguments():
    table = ScoreTable([5, 3], clip_len=2)
    with pytest.raises(ValueError, match="one entry per record"):
        table.interpolate([0, 1], [0], [1.0, 2.0])
    with pytest.raises(ValueError, match=r"video_idx must be in 0..1 \(the table's videos\), got 2 in record 1"):
        table.interpolate([0, 2], [0, 0], [1.0, 1.0])
    with pytest.raises(ValueError, match=r"start must be in 0..2 \(the clip positions of video 1\), got 3"):
        table.fill([1], [3], [1.0], radius=0)
    with pytest.raises(ValueError, match="integer"):
        table.interpolate(torch.tensor([0.0]), [0], [1.0])
    with pytest.raises(ValueError, match="radius must be >= 0"):
        table.fill([0], [0], [1.0], radius=-1)
    with pytest.raises(ValueError, match="one entry per record"):
        table.fill([0, 1], [0, 0], [1.0, 1.0], radius=torch.tensor([1, 2, 3]))
    with pytest.raises(ValueError, match="clip_len must be an int >= 1"):
        ScoreTable([5], clip_len=0)
    with pytest.raises(ValueError, match=r"num_positions\[1\] = 0"):
        ScoreTable([5, 0], clip_len=2)
    with pytest.raises(ValueError, match="non-empty 1-D"):
        ScoreTable([], clip_len=2)
    with pytest.raises(IndexError, match="out of range"):
        table[2]
    # nothing was written by the rejected calls
    assert table.values.abs().sum() == 0


def test_getitem_is_a_view_and_memory():
    table = ScoreTable([3, 4], clip_len=2)
    table[1][2] = 5.0
    assert table.values.tolist() == [0, 0, 0, 0, 0, 5.0, 0]
    assert table.offsets.tolist() == [0, 3, 7]
    assert table.values.dtype == torch.float32 and table.values.element_size() == 4
    # 4 bytes per clip position and 8 per video (offsets): the memory the class docstring states
    assert table.offsets.dtype == torch.int64 and table.offsets.numel() == 3


def test_state_dict_roundtrip_and_mismatch():
    rng = np.random.default_rng(0)
    table = ScoreTable([7, 9, 2], clip_len=3)
    table.interpolate(*_random_records(rng, [7, 9, 2], 10))
    other = ScoreTable([7, 9, 2], clip_len=3)
    other.load_state_dict(table.state_dict())
    assert torch.equal(other.values, table.values)
    with pytest.raises(ValueError, match="other videos"):
        ScoreTable([7, 9, 3], clip_len=3).load_state_dict(table.state_dict())




@pytest.mark.parametrize("gamma", [0.0, 1.0, 3.0])
def test_sampled_frequencies_match_softmax(gamma):
    # 20000 copies of two videos of different lengths, interleaved, so segment boundaries are exercised.
    w_a = torch.tensor([0.0, 1.0, -1.0, 2.0, 0.5, 0.0, 1.5, -2.0, 0.3, 1.1, 0.0, 0.7])
    w_b = torch.tensor([2.0, -1.0, 0.0, 0.4, 1.0])
    reps = 20000
    lengths = [12, 5] * reps
    table = ScoreTable(lengths, clip_len=4)
    table.values.copy_(torch.cat([w_a, w_b]).repeat(reps))
    s = table.sample(gamma, torch.Generator().manual_seed(123)).numpy()
    for w, draws in ((w_a, s[0::2]), (w_b, s[1::2])):
        probs = torch.softmax(gamma * w.double(), 0).numpy()
        p = chi2_pvalue(draws, probs)
        assert p > 1e-3, (gamma, p)
        # a sampler that ignores gamma would fail: with gamma > 0 the frequencies are far from uniform
        if gamma >= 1:
            assert chi2_pvalue(draws, np.full(len(w), 1 / len(w))) < 1e-6


def test_sampling_large_logits_and_zero_probabilities():
    # gamma * w up to 1e4: no overflow; positions with exp underflow to 0 are never drawn.
    reps = 5000
    w = torch.tensor([0.0, 10.0, 10.0, -5.0])
    table = ScoreTable([4] * reps, clip_len=2)
    table.values.copy_(w.repeat(reps))
    s = table.sample(1000.0, torch.Generator().manual_seed(0))
    assert set(s.unique().tolist()) == {1, 2}
    assert abs(float((s == 1).double().mean()) - 0.5) < 0.03
    assert (s >= 0).all() and (s < 4).all()


def test_sampling_and_entropy_are_chunk_independent(monkeypatch):
    rng = np.random.default_rng(3)
    lengths = rng.integers(1, 30, size=400).tolist() + [1000, 3]  # video 400 is longer than a chunk
    table = ScoreTable(lengths, clip_len=4)
    table.values.copy_(torch.from_numpy(rng.normal(size=int(table.offsets[-1])).astype(np.float32)))
    big = table.sample(2.0, torch.Generator().manual_seed(5))
    ent = table.entropy(2.0)
    monkeypatch.setattr(segments, "CHUNK_ELEMS", 400)  # ~15 chunks
    assert torch.equal(table.sample(2.0, torch.Generator().manual_seed(5)), big)
    torch.testing.assert_close(segment_softmax_entropy(table.values, table.offsets, 2.0), ent)
    # entropy against the direct formula, video by video
    for v in list(range(0, 400, 37)) + [400, 401]:
        p = torch.softmax(2.0 * table[v].double(), 0)
        h = float(-(p * torch.log(p)).sum())
        assert math.isclose(float(ent[v]), h, rel_tol=1e-5, abs_tol=1e-6)
        torch.testing.assert_close(table.probabilities(v, 2.0), p.float())


def test_sampling_is_deterministic_given_the_generator():
    table = ScoreTable([10, 20, 1], clip_len=2)
    table.values.normal_(generator=torch.Generator().manual_seed(0))
    a = segment_softmax_sample(table.values, table.offsets, 1.0, torch.Generator().manual_seed(9))
    b = segment_softmax_sample(table.values, table.offsets, 1.0, torch.Generator().manual_seed(9))
    assert torch.equal(a, b) and a[2] == 0


# ------------------------------------------------------------------ temperatures that overflow float32
def test_temperature_that_overflows_float32_is_refused_not_nan():
    """γ = 1e39 is inf in float32 and γ = 1e38 times a spread of 4 overflows: both used to give NaN entropies and
    draws from position 0. They are refused, naming γ and what is allowed; 1e6 (the seed's max) still samples."""
    import pytest
    from lightning_temporal.sampling import StochasticSoftmaxPolicy
    from lightning_temporal.sampling.table import FLOAT32_MAX, check_temperature

    table = ScoreTable([5, 3], clip_len=2)
    table.values.copy_(torch.tensor([0.0, 1.0, 2.0, 3.0, 4.0, 1.0, 0.0, 0.5]))
    for g in (1e39, 1e38):
        with pytest.raises(ValueError, match=r"gamma_s = 1e\+3[89] times the score tables' spread \(max - min = 4\) "
                                             r"overflows float32.*Allowed: gamma_s <= 8\.507e\+37"):
            table.entropy(g)
        with pytest.raises(ValueError, match="overflows float32"):
            table.sample(g, torch.Generator().manual_seed(0))
    # just below the bound: finite, the maximum of each video drawn, entropy 0
    g = 0.5 * FLOAT32_MAX / 4
    assert table.sample(g, torch.Generator().manual_seed(0)).tolist() == [4, 0]
    assert torch.equal(table.entropy(g), torch.zeros(2))
    assert table.sample(1e6, torch.Generator().manual_seed(0)).tolist() == [4, 0]
    with pytest.raises(ValueError, match=r"gamma_s must be a finite number in \[0, 3\.403e\+38\].*got 1e\+39"):
        check_temperature(1e39)
    with pytest.raises(ValueError, match=r"gamma_s must be a finite number in \[0, 3\.403e\+38\]"):
        StochasticSoftmaxPolicy([5], clip_len=2, gamma_s=1e39)
