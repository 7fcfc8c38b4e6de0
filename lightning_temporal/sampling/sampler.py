"""ClipSampler: one (video_idx, start) per training video per epoch, sharded over DDP ranks.

The whole epoch's plan is computed at once (vectorised) from a generator seeded by (seed, epoch):
first a permutation of the videos, then every video's start from ``policy.starts(epoch, generator)``.
Every rank computes the same global plan (same seed, epoch and policy state: the callback keeps the
tables identical on all ranks) and takes ``plan[rank::num_replicas]``.
"""
from __future__ import annotations

from typing import Iterator

import torch
from torch import Tensor
from torch.utils.data import DistributedSampler

from lightning_temporal.sampling.policies import UniformPolicy
from lightning_temporal.sampling.table import IntsLike, as_num_positions

__all__ = ["ClipSampler", "epoch_generator"]

_MASK63 = (1 << 63) - 1


def epoch_generator(seed: int, epoch: int) -> torch.Generator:
    """A CPU generator seeded from (seed, epoch).

    The two are mixed with odd 64-bit constants so that (seed, epoch + 1) and (seed + 1, epoch) do not
    share a stream (DistributedSampler's ``seed + epoch`` would).
    """
    mixed = (int(seed) * 0x9E3779B97F4A7C15 + (int(epoch) + 1) * 0xBF58476D1CE4E5B9) & _MASK63
    return torch.Generator().manual_seed(mixed)


class ClipSampler(DistributedSampler):
    """Yields ``(video_idx, start)`` for every training video once per epoch, this rank's shard.

    Example:
        >>> s = ClipSampler([30, 5, 12], seed=0)       # uniform policy by default
        >>> s.set_epoch(0)
        >>> sorted(v for v, _ in s)
        [0, 1, 2]
        >>> s.num_replicas, s.rank = 2, 1               # e.g. set by the data module under DDP
        >>> len(s), len(list(s))
        (2, 2)

    Args:
        num_positions: N_v per video (ints >= 1), [V].
        policy: any object with ``starts(epoch, generator) -> int64 [V]`` (see ``policies``); None = uniform.
            The attribute may be replaced later (the callback installs its own policy).
        shuffle: shuffle the video order each epoch (else videos come in index order).
        seed: seeds the per-epoch generator (:func:`epoch_generator`).
        num_replicas, rank: DDP world size and this rank; may be set after construction, before iterating.

    The global plan of an epoch has ``total_size = ceil(V / num_replicas) * num_replicas`` entries: the
    permuted videos, padded by repeating the first ones (as ``DistributedSampler`` does), so a padded
    video is trained and scored twice in that epoch. Rank r takes ``plan[r::num_replicas]``. Records should
    reach ``policy.update`` in global-plan order (plan index i = k * num_replicas + r for rank r's k-th
    item): the tables apply repeated videos in the given order, so this order makes the result identical
    for any number of ranks.

    It subclasses ``DistributedSampler`` so that Lightning's DDP keeps it (it only injects its own sampler
    when the loader's sampler is not a ``DistributedSampler``) and calls its ``set_epoch``; it does not need
    an initialised process group.
    """

    def __init__(self, num_positions: IntsLike, policy=None, *, shuffle: bool = True, seed: int = 0,
                 num_replicas: int = 1, rank: int = 0):
        # DistributedSampler.__init__ is not called: it would query torch.distributed and freeze the
        # shard sizes; here they follow num_replicas / rank whenever those are set.
        self.num_positions = as_num_positions(num_positions)
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise ValueError(f"seed must be an int, got {seed!r}")
        self.seed = seed
        self.shuffle = bool(shuffle)
        self.drop_last = False
        self.epoch = 0
        self.dataset = None
        self.num_replicas = num_replicas
        self.rank = rank
        self.policy = policy if policy is not None else UniformPolicy(self.num_positions)
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
        nr, r = self.num_replicas, self.rank
        if isinstance(nr, bool) or not isinstance(nr, int) or nr < 1:
            raise ValueError(f"num_replicas must be an int >= 1 (the DDP world size), got {nr!r}")
        if isinstance(r, bool) or not isinstance(r, int) or not 0 <= r < nr:
            raise ValueError(f"rank must be an int in 0..{nr - 1} (num_replicas = {nr}), got {r!r}")
        pol_n = getattr(self.policy, "num_positions", None)
        if pol_n is not None and not torch.equal(torch.as_tensor(pol_n), self.num_positions):
            raise ValueError(f"the policy was built for other videos than the sampler: policy has "
                             f"{torch.as_tensor(pol_n).numel()} videos, sampler {self.num_videos}, or their "
                             "num_positions differ; build both from the same training manifest")

    def set_epoch(self, epoch: int) -> None:
        if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 0:
            raise ValueError(f"epoch must be an int >= 0, got {epoch!r}")
        self.epoch = epoch

    def epoch_plan(self, epoch: int | None = None) -> tuple[Tensor, Tensor]:
        """The global plan of an epoch (default: the current one): ``(video_idx, start)``, int64 [total_size]."""
        epoch = self.epoch if epoch is None else epoch
        if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 0:
            raise ValueError(f"epoch must be an int >= 0, got {epoch!r}")
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

    def __iter__(self) -> Iterator[tuple[int, int]]:
        vid, st = self.rank_plan()
        return iter(list(zip(vid.tolist(), st.tolist())))

    def __len__(self) -> int:
        return self.num_samples

    def state_dict(self) -> dict:
        return {"seed": self.seed, "epoch": self.epoch, "shuffle": self.shuffle}

    def load_state_dict(self, state: dict) -> None:
        self.seed = int(state["seed"])
        self.epoch = int(state["epoch"])
        self.shuffle = bool(state["shuffle"])
