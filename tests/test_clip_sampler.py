"""ClipSampler: one global plan per epoch, identical on every (simulated) rank, disjoint covering shards."""
import pytest
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from lightning_temporal.sampling.phases import PhaseSchedule
from lightning_temporal.sampling.policies import StochasticSoftmaxPolicy, UniformPolicy
from lightning_temporal.sampling.sampler import ClipLoader, ClipSampler, clip_seeds, counter_seed, epoch_generator
from lightning_temporal.sampling.table import ScoreTable

LENGTHS = [5, 1, 12, 30, 7, 7, 2, 100, 3, 9, 44]  # 11 videos


def _splitmix64(x):
    """SplitMix64's finaliser written on Python ints (the reference for the vectorised numpy version)."""
    m = (1 << 64) - 1
    x = (x + 0x9E3779B97F4A7C15) & m
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & m
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & m
    return x ^ (x >> 31)


def _reference_seed(seed, *counters):
    h = _splitmix64(seed)
    for c in counters:
        h = _splitmix64(h ^ c)
    return h >> 1


def _rank_samplers(world, policy_factory=None, seed=5):
    out = []
    for r in range(world):
        pol = policy_factory() if policy_factory else None
        s = ClipSampler(LENGTHS, pol, seed=seed)
        s.num_replicas, s.rank = world, r  # set after construction, as the data module does
        out.append(s)
    return out


@pytest.mark.parametrize("world", [1, 2, 3, 4, 16])
def test_shards_disjoint_covering_and_identical_plan(world):
    factory = lambda: StochasticSoftmaxPolicy(LENGTHS, clip_len=3, schedule=PhaseSchedule(1, 2), seed=2)  # noqa: E731
    samplers = _rank_samplers(world, factory)
    for epoch in (0, 1, 4):
        for s in samplers:
            s.set_epoch(epoch)
        plans = [s.epoch_plan() for s in samplers]
        for v, st in plans[1:]:
            assert torch.equal(v, plans[0][0]) and torch.equal(st, plans[0][1])
        vid, st = plans[0]
        V = len(LENGTHS)
        total = -(-V // world) * world
        assert vid.numel() == total
        # the first V entries are a permutation of the videos; the padding repeats the first ones
        assert sorted(vid[:V].tolist()) == list(range(V))
        assert torch.equal(vid[V:], vid[:V].repeat(world)[:total - V])
        assert torch.equal(st[V:], st[:V].repeat(world)[:total - V])
        # shards: rank r gets plan[r::world]; together they are the plan, each plan index exactly once
        shards = [list(s) for s in samplers]
        assert all(len(sh) == len(s) == total // world for sh, s in zip(shards, samplers))
        rebuilt = [None] * total
        for r, sh in enumerate(shards):
            for k, item in enumerate(sh):
                rebuilt[k * world + r] = item
        assert [item[:2] for item in rebuilt] == list(zip(vid.tolist(), st.tolist()))
        assert all(isinstance(a, int) and isinstance(b, int) and isinstance(c, int) for a, b, c in shards[0])
        # each clip's augmentation seed is the hash of (seed, epoch, video, global plan index), whatever the world
        assert [item[2] for item in rebuilt] == [_reference_seed(5, epoch, v, i) for i, v in enumerate(vid.tolist())]
        # starts inside each video
        assert all(0 <= t < LENGTHS[v] for v, t, _ in rebuilt)


def test_plan_depends_on_seed_and_epoch_and_shuffle_flag():
    s = ClipSampler(LENGTHS, seed=1)
    a0, a1 = s.epoch_plan(0), s.epoch_plan(1)
    assert not torch.equal(a0[0], a1[0])
    assert torch.equal(s.epoch_plan(0)[0], a0[0]) and torch.equal(s.epoch_plan(0)[1], a0[1])
    assert not torch.equal(ClipSampler(LENGTHS, seed=2).epoch_plan(0)[0], a0[0])
    ordered = ClipSampler(LENGTHS, shuffle=False, seed=1)
    assert ordered.epoch_plan(3)[0].tolist() == list(range(len(LENGTHS)))
    # (seed, epoch) are mixed: seed 0 epoch 1 is not seed 1 epoch 0
    g1, g2 = epoch_generator(0, 1), epoch_generator(1, 0)
    assert not torch.equal(torch.rand(4, generator=g1), torch.rand(4, generator=g2))
    # iterating follows set_epoch
    s.set_epoch(1)
    assert [v for v, _, _ in s] == a1[0].tolist()


def test_uniform_default_start_frequencies():
    # the default policy is uniform: start frequencies of a 7-position video over many epochs are flat
    s = ClipSampler([7, 3], seed=0)
    starts = torch.stack([s.epoch_plan(e)[1][s.epoch_plan(e)[0] == 0] for e in range(3000)]).flatten()
    counts = torch.bincount(starts, minlength=7).double()
    assert ((counts - 3000 / 7).abs() < 5 * (3000 / 7) ** 0.5).all()


def test_records_in_plan_order_equal_sequential_updates():
    """Padding duplicates videos; applying the gathered records in global-plan order must equal applying
    them one by one (the callback gathers records of all ranks in plan order)."""
    world = 4
    pol = StochasticSoftmaxPolicy(LENGTHS, clip_len=3, gamma_s=1.0, schedule=PhaseSchedule(0, 1), seed=0)
    s = ClipSampler(LENGTHS, pol, seed=9, num_replicas=world)
    for epoch in range(4):
        vid, st = s.epoch_plan(epoch)
        assert vid.numel() > len(LENGTHS)  # there are duplicates
        score = torch.linspace(-1, 2, vid.numel())
        one_by_one = ScoreTable(LENGTHS, clip_len=3)
        one_by_one.load_state_dict(pol.table.state_dict())
        for k in range(vid.numel()):
            if epoch == 0:
                one_by_one.fill(vid[k:k + 1], st[k:k + 1], score[k:k + 1], pol.radius[vid[k:k + 1]])
            else:
                one_by_one.interpolate(vid[k:k + 1], st[k:k + 1], score[k:k + 1])
        counts = pol.update(epoch, vid, st, score)
        assert counts["rounds"] == 2
        torch.testing.assert_close(pol.table.values, one_by_one.values, rtol=0, atol=1e-6)


def test_is_a_distributed_sampler_and_works_in_a_dataloader():
    class Clips(Dataset):
        def __len__(self):
            return len(LENGTHS)

        def __getitem__(self, item):
            v, t, _ = item
            return torch.tensor([v, t])

    s = ClipSampler(LENGTHS, seed=0, num_replicas=2, rank=1)
    assert isinstance(s, DistributedSampler)  # Lightning's DDP keeps it and calls set_epoch
    s.set_epoch(3)
    batches = list(DataLoader(Clips(), sampler=s, batch_size=4))
    got = torch.cat(batches).tolist()
    vid, st = s.epoch_plan(3)
    assert got == [[v, t] for v, t in zip(vid[1::2].tolist(), st[1::2].tolist())]
    assert len(s) == 6 and s.total_size == 12 and s.num_samples == 6


def test_bad_arguments():
    with pytest.raises(ValueError, match="num_replicas must be an int >= 1"):
        ClipSampler(LENGTHS, num_replicas=0)
    with pytest.raises(ValueError, match=r"rank must be an int in 0..1"):
        ClipSampler(LENGTHS, num_replicas=2, rank=2)
    s = ClipSampler(LENGTHS)
    s.num_replicas, s.rank = 2, 5
    with pytest.raises(ValueError, match="rank must be an int in 0..1"):
        list(s)
    with pytest.raises(ValueError, match="policy was built for other videos"):
        ClipSampler(LENGTHS, UniformPolicy(LENGTHS[:-1]))
    with pytest.raises(ValueError, match="epoch must be an int >= 0"):
        ClipSampler(LENGTHS).set_epoch(-1)
    with pytest.raises(ValueError, match="epoch must be an int >= 0"):
        ClipSampler(LENGTHS).epoch_plan(-2)
    with pytest.raises(ValueError, match="num_positions"):
        ClipSampler([3, 0])


def test_sampler_state_dict_restores_epoch_and_seed():
    a = ClipSampler(LENGTHS, seed=4)
    a.set_epoch(7)
    b = ClipSampler(LENGTHS, seed=0)
    b.load_state_dict(a.state_dict())
    assert list(a) == list(b) and b.epoch == 7


def test_clip_seeds_are_the_counter_hash_and_tell_padding_repeats_apart():
    s = ClipSampler(LENGTHS, seed=9, num_replicas=4, rank=0)  # 11 videos, 12 plan entries: one padded repeat
    vid, _ = s.epoch_plan(2)
    seeds = clip_seeds(9, 2, vid, torch.arange(vid.numel()))
    assert seeds.tolist() == [_reference_seed(9, 2, v, i) for i, v in enumerate(vid.tolist())]
    assert counter_seed(9, 2, int(vid[3]), 3) == int(seeds[3])
    assert vid[11] == vid[0] and seeds[11] != seeds[0]  # the repeated video gets its own augmentation
    assert len(set(seeds.tolist())) == 12
    assert not set(seeds.tolist()) & set(clip_seeds(9, 3, vid, torch.arange(12)).tolist())  # another epoch


def test_start_at_resumes_the_shard_once_and_only_in_its_epoch():
    s = ClipSampler(LENGTHS, seed=1, num_replicas=2, rank=1)
    s.set_epoch(3)
    full = list(s)
    s.start_at(3, 4)
    assert s.start_position == 4 and list(s) == full[4:]
    assert list(s) == full  # applied once
    s.start_at(3, 2)
    s.set_epoch(4)  # another epoch: the position does not apply
    assert s.start_position == 0 and len(list(s)) == len(s)
    with pytest.raises(ValueError, match="position must be an int in 0..6"):
        s.start_at(3, 7)


class _Keys(Dataset):
    def __len__(self):
        return len(LENGTHS)

    def __getitem__(self, key):
        return torch.tensor(key[:2])


def test_clip_loader_state_resumes_the_rest_of_the_epoch_through_a_checkpoint_file(tmp_path):
    def loader(batch_size=3, world=2, seed=5):
        s = ClipSampler(LENGTHS, seed=seed, num_replicas=world, rank=1)
        return ClipLoader(_Keys(), batch_size=batch_size, sampler=s)

    a = loader()
    a.sampler.set_epoch(4)
    it = iter(a)
    first = next(it)
    torch.save(a.state_dict(), tmp_path / "loader.pt")
    state = torch.load(tmp_path / "loader.pt", weights_only=True)
    assert state["epoch"] == 4 and state["position"] == 3 and state["sampler"]["seed"] == 5
    b = loader()
    b.load_state_dict(state)
    rest = list(b)
    assert b.sampler.epoch == 4 and [x.tolist() for x in rest] == [x.tolist() for x in it]  # the rest, same clips
    assert torch.cat([first, *rest]).tolist() == [list(k[:2]) for k in a.sampler]  # nothing lost, nothing twice
    assert a.state_dict()["epoch"] == 5 and a.state_dict()["position"] == 0  # a finished epoch: the next one at 0
    # a mid-epoch position belongs to the shards of R ranks and to the batch size
    with pytest.raises(ValueError, match=r"middle of epoch 4 by 2 rank\(s\) with batch_size 3; this run has 2 "
                                         r"rank\(s\) with batch_size 2"):
        loader(batch_size=2).load_state_dict(state)
    with pytest.raises(ValueError, match=r"this run has 1 rank\(s\)"):
        ClipLoader(_Keys(), batch_size=3, sampler=ClipSampler(LENGTHS, seed=5)).load_state_dict(state)
    with pytest.warns(RuntimeWarning, match="ran with seed 5, this one is built with 6"):
        loader(seed=6).load_state_dict(state)
    with pytest.raises(TypeError, match="ClipLoader needs a ClipSampler"):
        ClipLoader(_Keys(), batch_size=3)
