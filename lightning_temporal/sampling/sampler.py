"""ClipSampler: one (video_idx, start) per training video per epoch, sharded over DDP ranks; ClipLoader: the
DataLoader that remembers where in the epoch's plan it is, so a mid-epoch checkpoint resumes there.

The whole epoch's plan is computed at once (vectorised) from a generator seeded by (seed, epoch):
first a permutation of the videos, then every video's start from ``policy.starts(epoch, generator)``.
Every rank computes the same global plan (same seed, epoch and policy state: the callback keeps the
tables identical on all ranks) and takes ``plan[rank::num_replicas]``.

Randomness is counter-based: every draw is a function of where it is used, never of the global RNG, the
number of DataLoader workers or ranks, or a restart. The plan comes from (seed, epoch); each clip of the plan
carries its own augmentation seed, a function of (seed, epoch, video_idx, plan index)
(:func:`clip_seeds`), which the dataset turns into the generator of that clip's crop and flip.
"""
from __future__ import annotations

import warnings
from typing import Iterator, Optional, Sequence

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, DistributedSampler

from lightning_temporal.checks import check_instance, check_int
from lightning_temporal.sampling.phases import check_epoch
from lightning_temporal.sampling.policies import UniformPolicy
from lightning_temporal.sampling.policy import SamplingPolicy
from lightning_temporal.sampling.segments import IntsLike, as_num_positions

__all__ = ["ClipSampler", "ClipLoader", "epoch_generator", "clip_seeds", "counter_seed"]

_MASK63 = (1 << 63) - 1
_MASK64 = (1 << 64) - 1


def epoch_generator(seed: int, epoch: int) -> torch.Generator:
    """A CPU generator seeded from (seed, epoch).

    The two are mixed with odd 64-bit constants so that (seed, epoch + 1) and (seed + 1, epoch) do not
    share a stream (DistributedSampler's ``seed + epoch`` would).
    """
    mixed = (int(seed) * 0x9E3779B97F4A7C15 + (int(epoch) + 1) * 0xBF58476D1CE4E5B9) & _MASK63
    return torch.Generator().manual_seed(mixed)


def _splitmix64(x: np.ndarray) -> np.ndarray:
    """SplitMix64's finaliser (Steele et al. 2014) on uint64 arrays; numpy's unsigned arithmetic wraps mod 2^64."""
    x = x + np.uint64(0x9E3779B97F4A7C15)
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def _mix(seed: int, counters: Sequence[np.ndarray]) -> np.ndarray:
    """Hash of ``seed`` and the uint64 arrays ``counters`` (broadcast together), chained through SplitMix64."""
    with np.errstate(over="ignore"):
        h = _splitmix64(np.full(np.broadcast_shapes(*(c.shape for c in counters)), int(seed) & _MASK64,
                                dtype=np.uint64))
        for c in counters:
            h = _splitmix64(h ^ c.astype(np.uint64))
    return h >> np.uint64(1)  # 63 bits: a valid int64 and a valid torch seed


def counter_seed(seed: int, *counters: int) -> int:
    """A seed in [0, 2^63) that is a hash of ``seed`` and the integers ``counters`` (e.g. epoch, batch, rank):
    randomness as a function of where it is used, the same after a restart."""
    return int(_mix(seed, [np.asarray(int(c) & _MASK64, dtype=np.uint64) for c in counters]))


def clip_seeds(seed: int, epoch: int, video_idx: Tensor, plan_index: Tensor) -> Tensor:
    """The augmentation seed of each clip of a plan: int64 ``[n]`` in [0, 2^63), a hash of
    (seed, epoch, video_idx, plan index), vectorised; equal to :func:`counter_seed` of the same numbers.

    The plan index (the clip's place in the epoch's global plan) tells apart the two draws of a video that DDP
    padding repeats in one epoch; because it is the *global* index, a clip gets the same seed on any rank and for
    any number of ranks, workers or restarts.
    """
    counters = [np.asarray(int(epoch), dtype=np.uint64), video_idx.numpy().astype(np.uint64),
                plan_index.numpy().astype(np.uint64)]
    return torch.from_numpy(_mix(seed, counters).astype(np.int64))


class ClipSampler(DistributedSampler):
    """Yields ``(video_idx, start, clip_seed)`` for every training video once per epoch, this rank's shard.

    Example:
        >>> s = ClipSampler([30, 5, 12], seed=0)       # uniform policy by default
        >>> s.set_epoch(0)
        >>> sorted(v for v, _, _ in s)
        [0, 1, 2]
        >>> s.num_replicas, s.rank = 2, 1               # e.g. set by the data module under DDP
        >>> len(s), len(list(s))
        (2, 2)

    Args:
        num_positions: N_v per video (ints >= 1), [V].
        policy: a :class:`~lightning_temporal.sampling.policy.SamplingPolicy` (its ``starts(epoch, generator)``
            draws each epoch's starts); None = uniform. The attribute may be replaced later (the callback installs
            its own policy).
        shuffle: shuffle the video order each epoch (else videos come in index order).
        seed: seeds the per-epoch generator (:func:`epoch_generator`).
        num_replicas, rank: DDP world size and this rank; may be set after construction, before iterating.

    The global plan of an epoch has ``total_size = ceil(V / num_replicas) * num_replicas`` entries: the
    permuted videos, padded by repeating the first ones (as ``DistributedSampler`` does), so a padded
    video is trained and scored twice in that epoch. Rank r takes ``plan[r::num_replicas]``. Records should
    reach ``policy.update`` in global-plan order (plan index i = k * num_replicas + r for rank r's k-th
    item): the tables apply repeated videos in the given order, so this order makes the result identical
    for any number of ranks.

    ``clip_seed`` (:func:`clip_seeds`) seeds the clip's augmentation (``ClipDataset`` makes its generator from
    it). :meth:`start_at` makes the next iteration of an epoch begin at a position of the shard (a mid-epoch
    resume; :class:`ClipLoader` calls it from a checkpoint).

    It subclasses ``DistributedSampler`` so that Lightning's DDP keeps it (it only injects its own sampler
    when the loader's sampler is not a ``DistributedSampler``) and calls its ``set_epoch``; it does not need
    an initialised process group.
    """

    def __init__(self, num_positions: IntsLike, policy=None, *, shuffle: bool = True, seed: int = 0,
                 num_replicas: int = 1, rank: int = 0):
        # DistributedSampler.__init__ is not called: it would query torch.distributed and freeze the
        # shard sizes; here they follow num_replicas / rank whenever those are set.
        self.num_positions = as_num_positions(num_positions)
        self.seed = check_int("seed", seed)
        self.shuffle = bool(shuffle)
        self.drop_last = False
        self.epoch = 0
        self.dataset = None
        self.num_replicas = num_replicas
        self.rank = rank
        self.policy = policy if policy is not None else UniformPolicy(self.num_positions)
        self._resume_at: Optional[tuple[int, int]] = None  # (epoch, shard position) of the next iteration
        self._check()

    # DistributedSampler reads these as attributes; here they follow num_replicas.
    @property
    def num_samples(self) -> int:
        return -(-self.num_videos // self.num_replicas)

    @property
    def total_size(self) -> int:
        return self.num_samples * self.num_replicas

    @property
    def num_videos(self) -> int:
        return self.num_positions.numel()

    def _check(self) -> None:
        """num_replicas, rank and policy are attributes that the data module or the callback set after
        construction: they are checked when a plan is drawn."""
        nr = check_int("num_replicas", self.num_replicas, minimum=1, hint="the DDP world size")
        check_int("rank", self.rank, minimum=0, maximum=nr - 1, hint=f"num_replicas = {nr}")
        check_instance("policy", self.policy, SamplingPolicy, hint="subclass lightning_temporal.sampling.SamplingPolicy")
        same = self.policy.num_positions is self.num_positions  # the usual case: no pass over the videos
        if not same and not torch.equal(self.policy.num_positions, self.num_positions):
            raise ValueError(f"the policy was built for other videos than the sampler: policy has "
                             f"{self.policy.num_videos} videos, sampler {self.num_videos}, or their "
                             "num_positions differ; build both from the same training manifest")

    def set_epoch(self, epoch: int) -> None:
        self.epoch = check_epoch(epoch)

    def epoch_plan(self, epoch: int | None = None) -> tuple[Tensor, Tensor]:
        """The global plan of an epoch (default: the current one): ``(video_idx, start)``, int64 [total_size]."""
        epoch = check_epoch(self.epoch if epoch is None else epoch)
        self._check()
        g = epoch_generator(self.seed, epoch)
        order = torch.randperm(self.num_videos, generator=g) if self.shuffle else torch.arange(self.num_videos)
        starts = torch.as_tensor(self.policy.starts(epoch, g), dtype=torch.int64)
        if starts.shape != (self.num_videos,):
            raise ValueError(f"policy.starts returned shape {tuple(starts.shape)}, expected ({self.num_videos},)")
        pad = self.total_size - self.num_videos
        if pad:
            order = torch.cat([order, order.repeat(-(-pad // self.num_videos))[:pad]])
        return order, starts[order]

    def rank_plan(self, epoch: int | None = None) -> tuple[Tensor, Tensor]:
        """This rank's shard of the plan: ``plan[rank::num_replicas]``, int64 [num_samples] each."""
        vid, st = self.epoch_plan(epoch)
        return vid[self.rank::self.num_replicas], st[self.rank::self.num_replicas]

    def start_at(self, epoch: int, position: int) -> None:
        """Begin the next iteration of ``epoch`` at ``position`` of this rank's shard (the items before it were
        trained before a checkpoint). Applies once, and only if the sampler is then at that epoch."""
        position = check_int("position", position, minimum=0, maximum=self.num_samples, hint="this rank's shard")
        self._resume_at = (int(epoch), position)

    @property
    def start_position(self) -> int:
        """Where the next iteration begins in this rank's shard: 0, or the position given to :meth:`start_at`."""
        if self._resume_at is not None and self._resume_at[0] == self.epoch:
            return self._resume_at[1]
        return 0

    def __iter__(self) -> Iterator[tuple[int, int, int]]:
        vid, st = self.rank_plan()
        first = self.start_position
        self._resume_at = None
        index = torch.arange(self.rank, self.total_size, self.num_replicas)  # global plan index of each item
        seeds = clip_seeds(self.seed, self.epoch, vid, index)
        return iter(list(zip(vid[first:].tolist(), st[first:].tolist(), seeds[first:].tolist())))

    def __len__(self) -> int:
        return self.num_samples

    def state_dict(self) -> dict:
        """``seed``, ``shuffle`` and ``epoch`` (the plan; the policy's state travels with the callback)."""
        return {"seed": self.seed, "epoch": self.epoch, "shuffle": self.shuffle}

    def load_state_dict(self, state: dict) -> None:
        self.seed = int(state["seed"])
        self.epoch = int(state["epoch"])
        self.shuffle = bool(state["shuffle"])


class ClipLoader(DataLoader):
    """A ``DataLoader`` over a :class:`ClipSampler` that Lightning checkpoints and resumes mid-epoch.

    Example:
        >>> class VideoIndex(torch.utils.data.Dataset):   # a dataset item per (video_idx, start, clip_seed)
        ...     def __len__(self): return 4
        ...     def __getitem__(self, key): return key[0]
        >>> loader = ClipLoader(VideoIndex(), batch_size=2, sampler=ClipSampler([30, 5, 12, 9], seed=0))
        >>> it = iter(loader); first = next(it)
        >>> loader.state_dict()["position"]                 # two of this rank's 4 items trained
        2
        >>> resumed = ClipLoader(VideoIndex(), batch_size=2, sampler=ClipSampler([30, 5, 12, 9], seed=0))
        >>> resumed.load_state_dict(loader.state_dict())
        >>> [b.tolist() for b in resumed] == [next(it).tolist()]   # only the rest of the epoch, the same clips
        True

    Lightning saves the state of a train loader that has ``state_dict`` / ``load_state_dict`` in every
    checkpoint of ``fit`` and loads it before the resumed epoch starts; this one saves the epoch and the position
    in this rank's shard of the plan reached by the batches handed to the training loop (workers' prefetched
    batches do not count), so the resumed epoch trains exactly the clips not yet trained. Any keyword of
    ``DataLoader`` is accepted; ``sampler`` must be a :class:`ClipSampler` and ``batch_size`` an int.

    Iteration is lazy: the sampler draws the plan (and workers start) at the first ``next()``, after Lightning
    has called ``set_epoch``; a plain ``DataLoader`` with workers draws it at ``iter()``, before that.

    A checkpoint written in the middle of an epoch by R ranks resumes on R ranks only (the shards depend on R);
    one written at the end of an epoch resumes on any number.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if not isinstance(self.sampler, ClipSampler):
            raise TypeError(f"ClipLoader needs a ClipSampler as its sampler, got {type(self.sampler).__name__}")
        if self.batch_size is None:
            raise ValueError("ClipLoader needs an int batch_size (positions in the plan are counted in batches)")
        self._epoch: Optional[int] = None
        self._position = 0

    def __iter__(self):
        return self._batches()

    def _batches(self):
        sampler = self.sampler
        self._epoch, self._position = sampler.epoch, sampler.start_position
        for batch in super().__iter__():
            self._position = min(self._position + self.batch_size, len(sampler))
            yield batch

    def state_dict(self) -> dict:
        """``{"sampler", "epoch", "position", "num_replicas", "batch_size"}``: the next clip to train is item
        ``position`` of this rank's shard of ``epoch``'s plan (a finished epoch is saved as the next one at 0)."""
        sampler = self.sampler
        epoch = sampler.epoch if self._epoch is None else self._epoch
        position = self._position if self._epoch is not None else sampler.start_position
        if position >= len(sampler):
            epoch, position = epoch + 1, 0
        return {"sampler": sampler.state_dict(), "epoch": epoch, "position": position,
                "num_replicas": sampler.num_replicas, "batch_size": self.batch_size}

    def load_state_dict(self, state: dict) -> None:
        sampler = self.sampler
        saved = state["sampler"]
        if int(saved["seed"]) != sampler.seed:
            warnings.warn(f"the checkpoint's clip sampler ran with seed {saved['seed']}, this one is built with "
                          f"{sampler.seed}: the resumed run continues the checkpoint's plans (seed "
                          f"{saved['seed']})", RuntimeWarning)
        sampler.load_state_dict(saved)
        position = int(state["position"])
        if position and (state["num_replicas"] != sampler.num_replicas or state["batch_size"] != self.batch_size):
            raise ValueError(
                f"this checkpoint was written in the middle of epoch {state['epoch']} by "
                f"{state['num_replicas']} rank(s) with batch_size {state['batch_size']}; this run has "
                f"{sampler.num_replicas} rank(s) with batch_size {self.batch_size}, whose shards of the plan "
                "differ. Resume with the same number of devices and batch size, or from a checkpoint written "
                "at the end of an epoch")
        sampler.set_epoch(int(state["epoch"]))
        sampler.start_at(int(state["epoch"]), position)
        self._epoch, self._position = None, 0
