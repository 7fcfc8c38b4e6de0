"""Training phases of Temporal Stochastic Softmax and the exploration grid (Ayral et al., supplementary §S.1).

Epochs are counted from 0. With W warm-up and E exploration epochs:

* warm-up, e < W: uniform starts, no table update;
* exploration, W <= e < W + E: slot k = (each video's own permutation of 0..E-1)[e - W], start
  t = floor((N - 1) * k / (E - 1)), and the score is written hard over [t - r, t + r] with
  r = ceil(max(0, N - E) / (E - 1) / 2);
* exploitation, e >= W + E: t ~ softmax(gamma_s * w), Eq. S.2 update.

E = 1 (one exploration epoch) has no grid spacing (E - 1 = 0). We define its single slot as the
middle position t = (N - 1) // 2 with r = ceil((N - 1) / 2) = N // 2, so that, as for E >= 2, the
exploration writes every position of the table. E = 0 is rejected (the tables would start at 0
everywhere, which is not the method; use UniformPolicy for no exploration at all).

Coverage (checked by tests for N = 1..300, E = 1..12): for N >= E consecutive grid slots are at most
ceil((N-1)/(E-1)) apart and 2r >= ceil((N-1)/(E-1)) - 1, so the [t - r, t + r] windows tile 0..N-1;
for N < E the grid step (N-1)/(E-1) is < 1 so the slots alone hit every position (r = 0).
"""
from __future__ import annotations

import dataclasses
import enum
from typing import Union

import torch
from torch import Tensor

from lightning_temporal.checks import check_int
from lightning_temporal.sampling.segments import IntsLike, as_num_positions

__all__ = ["Phase", "PHASE_CODES", "PhaseSchedule", "check_epoch", "exploration_starts", "grid_starts",
           "exploration_radius", "exploration_slot_orders"]


class Phase(str, enum.Enum):
    """Phase of one epoch (a ``str`` enum, so it logs and compares as its name)."""

    WARMUP = "warmup"
    EXPLORATION = "exploration"
    EXPLOITATION = "exploitation"


#: the integer code of each phase, as logged (``tss/phase``) and kept in ``SamplingHistory.phases``
PHASE_CODES = {Phase.WARMUP: 0, Phase.EXPLORATION: 1, Phase.EXPLOITATION: 2}


def _check_epochs(exploration_epochs) -> int:
    return check_int("exploration_epochs", exploration_epochs, minimum=1,
                     hint="one grid slot per exploration epoch; the seed uses 5")


def check_epoch(epoch) -> int:
    """``epoch`` as an int if it is one >= 0 (epochs count from 0), else ``ValueError``."""
    return check_int("epoch", epoch, minimum=0, hint="epochs count from 0")


def exploration_starts(num_positions: IntsLike, slot: Union[int, Tensor], exploration_epochs: int) -> Tensor:
    """Start of grid slot k for every video: t = floor((N - 1) * k / (E - 1)); E = 1: t = (N - 1) // 2.

    Args:
        num_positions: N_v, int [V] (>= 1).
        slot: k, an int or an int tensor [V], each in 0..E-1.
        exploration_epochs: E >= 1.
    Returns: int64 [V].
    """
    E = _check_epochs(exploration_epochs)
    n = as_num_positions(num_positions)
    k = torch.as_tensor(slot, dtype=torch.int64)
    if k.numel() and (int(k.min()) < 0 or int(k.max()) >= E):
        raise ValueError(f"exploration slot must be in 0..{E - 1} (E = {E}), got values in "
                         f"{int(k.min())}..{int(k.max())}")
    k = k.expand_as(n)
    if E == 1:
        return (n - 1) // 2
    return ((n - 1) * k) // (E - 1)  # exact integer floor


def grid_starts(last: Tensor, slot: Tensor, exploration_epochs: int) -> Tensor:
    """:func:`exploration_starts` without its checks and in place, for inputs already checked (a policy's own
    N_v and slot orders, checked when it was built or loaded): ``last`` = N_v - 1 and ``slot`` int64 ``[V]``;
    ``slot`` is overwritten with the starts and returned (pass a tensor of your own)."""
    E = exploration_epochs
    if E == 1:
        return torch.floor_divide(last, 2, out=slot)
    return slot.mul_(last).floor_divide_(E - 1)  # (N - 1) * k // (E - 1): exact integer floor


def exploration_radius(num_positions: IntsLike, exploration_epochs: int) -> Tensor:
    """Hard-fill radius r = ceil(max(0, N - E) / (E - 1) / 2) for every video; E = 1: r = N // 2.

    Returns int64 [V].
    """
    E = _check_epochs(exploration_epochs)
    n = as_num_positions(num_positions)
    if E == 1:
        return n // 2  # = ceil((N - 1) / 2): the middle slot reaches both ends
    a = torch.clamp(n - E, min=0)
    d = 2 * (E - 1)
    return (a + d - 1) // d  # exact integer ceil(a / d)


def exploration_slot_orders(num_videos: int, exploration_epochs: int, seed: int) -> Tensor:
    """Each video's own random order of its E exploration slots: int16 [V, E], row v a permutation of 0..E-1.

    Drawn once from ``seed`` (independent of the sampler's per-epoch generators), vectorised.
    """
    E = _check_epochs(exploration_epochs)
    g = torch.Generator().manual_seed(int(seed))
    order = torch.argsort(torch.rand(num_videos, E, generator=g), dim=1)
    return order.to(torch.int16 if E <= torch.iinfo(torch.int16).max else torch.int64)


@dataclasses.dataclass(frozen=True)
class PhaseSchedule:
    """Which phase each epoch is in.

    Example:
        >>> s = PhaseSchedule(warmup_epochs=3, exploration_epochs=5)
        >>> [s.phase(e).value for e in (0, 2, 3, 7, 8)]
        ['warmup', 'warmup', 'exploration', 'exploration', 'exploitation']
        >>> s.exploration_index(4)
        1

    Args:
        warmup_epochs: W >= 0 epochs of uniform sampling without table updates.
        exploration_epochs: E >= 1 epochs on the deterministic grid (see module docstring for E = 1).
    """

    warmup_epochs: int = 3
    exploration_epochs: int = 5

    def __post_init__(self):
        check_int("warmup_epochs", self.warmup_epochs, minimum=0, hint="epochs of uniform sampling")
        _check_epochs(self.exploration_epochs)

    def phase(self, epoch: int) -> Phase:
        e = check_epoch(epoch)
        if e < self.warmup_epochs:
            return Phase.WARMUP
        if e < self.warmup_epochs + self.exploration_epochs:
            return Phase.EXPLORATION
        return Phase.EXPLOITATION

    def exploration_index(self, epoch: int) -> int:
        """e - W for an exploration epoch (which column of the slot orders is used)."""
        if self.phase(epoch) is not Phase.EXPLORATION:
            raise ValueError(f"epoch {epoch} is not an exploration epoch (exploration is epochs "
                             f"{self.warmup_epochs}..{self.warmup_epochs + self.exploration_epochs - 1})")
        return epoch - self.warmup_epochs
