"""``SamplingPolicy``: the contract every clip-position policy keeps, and the parts they share.

A policy decides which clip position (start frame) each training video is trained on in an epoch, and learns
from the scores of the clips trained. It is pure math on torch tensors: no Lightning, no I/O. Two users talk to
it, and only through this contract: :class:`~lightning_temporal.sampling.sampler.ClipSampler` (``starts``) and the
Lightning glue ``StochasticSoftmaxCallback`` (everything else).

The contract:

* ``starts(epoch, generator) -> int64 [V]``: one start per video for that epoch. All randomness comes from
  ``generator`` (the sampler seeds it from (seed, epoch)), so the same policy state gives the same starts on
  every rank and after a resume.
* ``update(epoch, video_idx, start, score) -> dict``: apply the records of one finished epoch (1-D tensors, one
  entry per scored clip, in global-plan order; see :mod:`~lightning_temporal.sampling.records`). Records are
  checked, non-finite scores are left out with one warning, and the counts ``applied``, ``nonfinite`` and
  ``ignored`` are returned. A policy that does not learn, or an epoch in warm-up, ignores them.
* ``phase(epoch) -> Phase`` and ``records_scores(epoch) -> bool``: the phase of an epoch (warm-up, exploration,
  exploitation) and whether its clips are scored at all. The phases depend on the epoch and the
  :class:`~lightning_temporal.sampling.phases.PhaseSchedule` only, never on the videos, so the class methods
  ``phase_of(epoch, schedule)`` and ``records_scores_of(epoch, schedule)`` give them before the data is known.
* ``entropy(epoch) -> float32 [V]`` (nats) and ``probabilities(v, epoch) -> float32 [N_v]``: the start
  distribution each video is drawn from in that epoch (for logs and sampling maps).
* ``table``: the one per-video table the policy draws from, a
  :class:`~lightning_temporal.sampling.table.ScoreTable` (TSS score estimates w, REINFORCE logits theta, or the
  clip prior), or None (uniform); ``temperature``: the softmax temperature applied to it.
* ``state_dict()`` / ``load_state_dict()``: everything that changes during training, as tensors and plain
  Python values (loadable with ``torch.load(..., weights_only=True)``); loading checks that the checkpoint was
  made for the same videos and hyperparameters.

A new policy subclasses :class:`SamplingPolicy`, implements :meth:`phase_of` and, if it learns, ``_learn``;
warm-up (uniform starts) and exploitation (softmax of ``table`` at ``temperature``) come written once here.
"""
from __future__ import annotations

import abc
from typing import ClassVar, Optional

import torch
from torch import Tensor

from lightning_temporal.sampling.phases import Phase, PhaseSchedule
from lightning_temporal.sampling.records import check_records, drop_nonfinite
from lightning_temporal.sampling.segments import IntsLike, as_num_positions
from lightning_temporal.sampling.table import ScoreTable

__all__ = ["SamplingPolicy", "uniform_starts"]

# The key of the table in the state of policies written by lightning_temporal 0.1.0, which named it per policy.
_LEGACY_TABLE_KEYS = ("theta", "prior")


def uniform_starts(num_positions: Tensor, generator: Optional[torch.Generator] = None) -> Tensor:
    """t ~ Uniform{0..N_v-1} for every video: int64 [V] (one float64 uniform per video)."""
    u = torch.rand(num_positions.numel(), generator=generator, dtype=torch.float64)
    return torch.minimum((u * num_positions).to(torch.int64), num_positions - 1)


class SamplingPolicy(abc.ABC):
    """Base of the clip-position policies (see the module docstring for the contract).

    Args:
        num_positions: N_v per video (ints >= 1), [V].
        table: the table the policy draws from in exploitation (None: no table).
        temperature: gamma >= 0 of softmax(gamma * table).
        schedule: the warm-up / exploration epochs (None for a policy without phases of its own).
    """

    #: whether :meth:`update` learns from scored clips (outside warm-up); False: records are ignored and the
    #: callback scores nothing
    learns: ClassVar[bool] = False

    def __init__(self, num_positions: IntsLike, table: Optional[ScoreTable] = None, temperature: float = 0.0,
                 schedule: Optional[PhaseSchedule] = None):
        self.num_positions = table.num_positions if table is not None else as_num_positions(num_positions)
        self.table = table
        self.temperature = float(temperature)
        self.schedule = schedule

    @property
    def num_videos(self) -> int:
        return self.num_positions.numel()

    # ------------------------------------------------------------------------------------------ phases
    @classmethod
    @abc.abstractmethod
    def phase_of(cls, epoch: int, schedule: Optional[PhaseSchedule]) -> Phase:
        """The phase of ``epoch`` (counted from 0) for this kind of policy built with ``schedule``."""

    @classmethod
    def records_scores_of(cls, epoch: int, schedule: Optional[PhaseSchedule]) -> bool:
        """Whether this kind of policy uses the records of ``epoch`` (the clips of other epochs need no score)."""
        return cls.learns and cls.phase_of(epoch, schedule) is not Phase.WARMUP

    def phase(self, epoch: int) -> Phase:
        """The phase of ``epoch`` (counted from 0)."""
        return self.phase_of(epoch, self.schedule)

    def records_scores(self, epoch: int) -> bool:
        """Whether :meth:`update` uses the records of ``epoch``."""
        return self.records_scores_of(epoch, self.schedule)

    # ----------------------------------------------------------------------------------------- drawing
    def starts(self, epoch: int, generator: Optional[torch.Generator] = None) -> Tensor:
        """One start per video for ``epoch``: int64 ``[V]``, drawn with ``generator`` only."""
        phase = self.phase(epoch)
        if phase is Phase.WARMUP:
            return uniform_starts(self.num_positions, generator)
        if phase is Phase.EXPLORATION:
            return self._exploration_starts(epoch)
        return self.table.sample(self.temperature, generator)

    def entropy(self, epoch: int) -> Tensor:
        """Entropy (nats) of each video's start distribution in ``epoch``: float32 ``[V]``. Warm-up: log N_v
        (uniform); exploration: 0 (one position); exploitation: H(softmax(temperature * table))."""
        phase = self.phase(epoch)
        if phase is Phase.WARMUP:
            return torch.log(self.num_positions.to(torch.float64)).to(torch.float32)
        if phase is Phase.EXPLORATION:
            return torch.zeros(self.num_videos, dtype=torch.float32)
        return self.table.entropy(self.temperature)

    def probabilities(self, v: int, epoch: int) -> Tensor:
        """Video ``v``'s start distribution in ``epoch``: float32 ``[N_v]`` (for plots)."""
        v = int(v)
        if not 0 <= v < self.num_videos:
            raise IndexError(f"video index {v} out of range 0..{self.num_videos - 1}")
        phase = self.phase(epoch)
        n = int(self.num_positions[v])
        if phase is Phase.WARMUP:
            return torch.full((n,), 1.0 / n, dtype=torch.float32)
        if phase is Phase.EXPLORATION:
            p = torch.zeros(n, dtype=torch.float32)
            p[self._exploration_starts(epoch, v)] = 1.0
            return p
        return self.table.probabilities(v, self.temperature)

    def _exploration_starts(self, epoch: int, v: Optional[int] = None) -> Tensor:
        """Starts of an exploration epoch (every video's, or video ``v``'s). A policy whose ``phase_of`` returns
        ``Phase.EXPLORATION`` defines it; reaching this base version is a broken contract, named."""
        name = type(self).__name__
        raise NotImplementedError(f"{name}.phase_of({epoch}) is EXPLORATION but {name} does not define "
                                  "_exploration_starts(epoch, v=None): define it, or never return Phase.EXPLORATION")

    # ---------------------------------------------------------------------------------------- learning
    def update(self, epoch: int, video_idx, start, score) -> dict:
        """Apply the records of the finished ``epoch``; returns ``{"applied", "nonfinite", "ignored", ...}``."""
        what = f"{type(self).__name__}.update"
        vid, st, sc = check_records(self.num_positions, video_idx, start, score, what)
        if not self.records_scores(epoch):
            return {"applied": 0, "nonfinite": int((~torch.isfinite(sc)).sum()), "ignored": int(vid.numel())}
        vid, st, sc, _, nonfinite = drop_nonfinite(vid, st, sc, f"{what}, epoch {epoch}")
        counts = self._learn(epoch, vid, st, sc)
        counts.update(applied=int(vid.numel()), nonfinite=nonfinite, ignored=0)
        return counts

    def _learn(self, epoch: int, vid: Tensor, st: Tensor, sc: Tensor) -> dict:
        """Write checked, finite records (int64 / int64 / float32 ``[R]``) into the policy; returns counts. A
        policy with ``learns = True`` defines it; reaching this base version is a broken contract, named."""
        name = type(self).__name__
        raise NotImplementedError(f"{name}.learns is True (or records_scores_of says epoch {epoch} is scored) but "
                                  f"{name} does not define _learn(epoch, vid, st, sc): define it, or set "
                                  "learns = False")

    # -------------------------------------------------------------------------------------- checkpoint
    def hyperparameters(self) -> dict:
        """The settings a checkpoint must have been made with to be loaded into this policy (plain values)."""
        return {}

    def state_dict(self) -> dict:
        state = {"num_positions": self.num_positions.clone(), **self.hyperparameters()}
        if self.table is not None:
            state["table"] = self.table.state_dict()
        return state

    def load_state_dict(self, state: dict) -> None:
        """Load a :meth:`state_dict`; ``ValueError`` when it was made for other videos or hyperparameters."""
        name = type(self).__name__
        saved_n = state.get("num_positions")
        if saved_n is not None and not torch.equal(torch.as_tensor(saved_n), self.num_positions):
            raise ValueError(f"{name}.load_state_dict: the checkpoint was made for other videos (num_positions "
                             "differ); rebuild the policy from the same training manifest")
        for key, mine in self.hyperparameters().items():
            if key in state and state[key] != mine:
                raise ValueError(f"{name}.load_state_dict: the checkpoint's {key} is {state[key]!r}, this policy's "
                                 f"{mine!r}; build the policy with the same {key} to resume")
        if self.table is not None:
            key = next((k for k in ("table",) + _LEGACY_TABLE_KEYS if k in state), "table")
            self._load_table(state[key])

    def _load_table(self, table_state: dict) -> None:
        self.table.load_state_dict(table_state)

    def __repr__(self) -> str:
        settings = ", ".join(f"{k}={v!r}" for k, v in self.hyperparameters().items())
        return f"{type(self).__name__}(videos={self.num_videos}{', ' + settings if settings else ''})"
