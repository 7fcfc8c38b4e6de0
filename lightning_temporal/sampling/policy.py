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

* ``positions_per_video`` (k >= 1) and ``extra_starts(epoch, generator) -> int64 [V, k - 1]``: a policy may ask
  for k - 1 further clip positions per video per epoch besides the trained one; the callback scores them clean,
  without gradients, and hands them to ``update`` with the trained clip's record (records of one video in the
  order: trained clip, then its extra positions in column order).
* ``learn(epoch, records)``: what ``update`` calls with the checked, finite records as
  :class:`~lightning_temporal.sampling.records.ClipRecords` (target logit, predicted class and margin of each clean
  clip); its default hands ``(video_idx, start, score)`` to ``_learn``.

Writing one. A new policy subclasses :class:`SamplingPolicy` and defines

* its phases: either the class method :meth:`phase_of` (phases known from the epoch and the schedule, as the
  built-in policies), or :meth:`phase` on the instance when the policy decides them from what it has learned
  (``phase_of`` then returns None; ``phase(epoch)`` must not change once ``epoch`` has begun: decide at
  :meth:`update`, for the epochs after it). The callback logs what ``phase`` says (``tss/phase``);
* if it learns, ``learns = True`` and ``_learn(epoch, vid, st, sc)`` or :meth:`learn`;
* how it is built: :meth:`from_context` gives its constructor what only the callback knows (the
  :class:`PolicyContext`: positions per video, clip span, schedule, seed, γ_s) for the constructor parameters
  of those names; a policy that needs more overrides it.

Warm-up (uniform starts) and exploitation (softmax of ``table`` at ``temperature``) come written once here.
"""
from __future__ import annotations

import abc
import dataclasses
import inspect
from typing import Any, Callable, ClassVar, Optional, Sequence

import torch
from torch import Tensor

from lightning_temporal.sampling.phases import Phase, PhaseSchedule
from lightning_temporal.sampling.records import ClipRecords, check_records, drop_nonfinite
from lightning_temporal.sampling.segments import IntsLike, as_num_positions
from lightning_temporal.sampling.table import ScoreTable

__all__ = ["SamplingPolicy", "PolicyContext", "uniform_starts"]

# The key of the table in the state of policies written by lightning_temporal 0.1.0, which named it per policy.
_LEGACY_TABLE_KEYS = ("theta", "prior")


def uniform_starts(num_positions: Tensor, generator: Optional[torch.Generator] = None,
                   last: Optional[Tensor] = None) -> Tensor:
    """t ~ Uniform{0..N_v-1} for every video: int64 [V] (one float64 uniform per video: min(floor(u N_v), N_v - 1)).
    ``last``: ``num_positions - 1`` if the caller keeps it (no new tensor for it)."""
    u = torch.rand(num_positions.numel(), generator=generator, dtype=torch.float64)
    t = u.mul_(num_positions).to(torch.int64)  # u * N_v in float64; no further float64 temporary
    return torch.minimum(t, num_positions - 1 if last is None else last, out=t)


@dataclasses.dataclass(frozen=True)
class PolicyContext:
    """What only the training loop knows when a policy is built (see :meth:`SamplingPolicy.from_context`).

    Attributes:
        num_positions: int64 ``[V]``, clip positions N_v of each training video (from the clip sampler).
        span: the clip's span in frames, (F - 1)·s + 1 (F for contiguous clips): the reach of Eq. S.2; None when
            the clip length is unknown.
        schedule: the warm-up / exploration epochs.
        seed: the run's sampling seed (e.g. each video's order of exploration slots).
        gamma_s: the sampling temperature γ_s given to the callback.
        frame_scores: a function returning one 1-D sequence of per-frame scores per video (read on demand: I/O),
            or None when none are known.
        num_classes: the model's number of classes C, or None when unknown.
    """

    num_positions: Tensor
    span: Optional[int]
    schedule: PhaseSchedule
    seed: int = 0
    gamma_s: float = 1.0
    frame_scores: Optional[Callable[[], Sequence]] = None
    num_classes: Optional[int] = None

    #: context field -> the constructor parameter names it fills
    PARAMETERS = {"num_positions": ("num_positions",), "span": ("clip_len", "span"), "schedule": ("schedule",),
                  "seed": ("seed",), "gamma_s": ("gamma_s",), "num_classes": ("num_classes",)}


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
    #: k >= 1: clean-scored clip positions per video per epoch (the trained clip and k - 1 from
    #: :meth:`extra_starts`); an instance may set its own
    positions_per_video: int = 1

    def __init__(self, num_positions: IntsLike, table: Optional[ScoreTable] = None, temperature: float = 0.0,
                 schedule: Optional[PhaseSchedule] = None):
        self.num_positions = table.num_positions if table is not None else as_num_positions(num_positions)
        self.table = table
        self.temperature = float(temperature)
        self.schedule = schedule

    @property
    def num_videos(self) -> int:
        return self.num_positions.numel()

    @property
    def last_positions(self) -> Tensor:
        """N_v - 1, the last clip position of every video: int64 ``[V]``, made once per ``num_positions`` tensor
        (the epoch plans read it instead of making it each epoch)."""
        cached = self.__dict__.get("_last_positions")
        if cached is None or cached[0] is not self.num_positions:
            cached = self.__dict__["_last_positions"] = (self.num_positions, self.num_positions - 1)
        return cached[1]

    # ------------------------------------------------------------------------------------------ phases
    @classmethod
    def phase_of(cls, epoch: int, schedule: Optional[PhaseSchedule]) -> Optional[Phase]:
        """The phase of ``epoch`` (counted from 0) for this kind of policy built with ``schedule``, or None when
        the policy decides its phases from what it learns (it then defines :meth:`phase`)."""
        return None

    @classmethod
    def phases_known_ahead(cls, schedule: Optional[PhaseSchedule] = None) -> bool:
        """Whether :meth:`phase_of` gives the phases before any data (False: decided from data)."""
        return cls.phase_of(0, schedule) is not None

    @classmethod
    def records_scores_of(cls, epoch: int, schedule: Optional[PhaseSchedule]) -> bool:
        """Whether this kind of policy uses the records of ``epoch`` (the clips of other epochs need no score)."""
        phase = cls.phase_of(epoch, schedule)
        return cls.learns and phase is not None and phase is not Phase.WARMUP

    def phase(self, epoch: int) -> Phase:
        """The phase of ``epoch`` (counted from 0)."""
        phase = self.phase_of(epoch, self.schedule)
        if phase is None:
            name = type(self).__name__
            raise NotImplementedError(f"{name}.phase_of returns None (phases decided from data) but {name} does not "
                                      "define phase(self, epoch): define one of the two")
        return phase

    def records_scores(self, epoch: int) -> bool:
        """Whether :meth:`update` uses the records of ``epoch`` (the callback scores that epoch's clips)."""
        if not self.phases_known_ahead(self.schedule):
            return self.learns
        return self.records_scores_of(epoch, self.schedule)

    def extra_starts(self, epoch: int, generator: Optional[torch.Generator] = None) -> Tensor:
        """The k - 1 further clip positions of each video to score clean in ``epoch`` (k =
        ``positions_per_video``): int64 ``[V, k - 1]``, drawn with ``generator`` only. Default: uniform."""
        k = int(self.positions_per_video)
        u = torch.rand(self.num_videos, max(k - 1, 0), generator=generator, dtype=torch.float64)
        n = self.num_positions[:, None]
        return torch.minimum((u * n).to(torch.int64), n - 1)

    # ----------------------------------------------------------------------------------------- drawing
    def starts(self, epoch: int, generator: Optional[torch.Generator] = None) -> Tensor:
        """One start per video for ``epoch``: int64 ``[V]``, drawn with ``generator`` only."""
        phase = self.phase(epoch)
        if phase is Phase.WARMUP:
            return uniform_starts(self.num_positions, generator, self.last_positions)
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
    def update(self, epoch: int, video_idx, start, score, *, predicted=None, margin=None) -> dict:
        """Apply the records of the finished ``epoch``; returns ``{"applied", "nonfinite", "ignored", ...}``.

        ``predicted`` int ``[R]`` / ``margin`` float ``[R]``: each clip's predicted class and target-logit margin
        (see :class:`~lightning_temporal.sampling.records.ClipRecords`), given by the callback; optional.
        """
        what = f"{type(self).__name__}.update"
        vid, st, sc = check_records(self.num_positions, video_idx, start, score, what)
        if not self.records_scores(epoch):
            return {"applied": 0, "nonfinite": int((~torch.isfinite(sc)).sum()), "ignored": int(vid.numel())}
        extra = []
        for name, x, dtype in (("predicted", predicted, torch.int64), ("margin", margin, torch.float32)):
            if x is not None:
                x = torch.as_tensor(x).to(dtype)
                if x.shape != vid.shape:
                    raise ValueError(f"{what}: {name} must have one entry per record ({tuple(vid.shape)}), got "
                                     f"shape {tuple(x.shape)}")
            extra.append(x)
        kept = [x for x in extra if x is not None]
        vid, st, sc, kept, nonfinite = drop_nonfinite(vid, st, sc, f"{what}, epoch {epoch}", *kept)
        it = iter(kept)
        pred, marg = (next(it) if x is not None else None for x in extra)
        counts = self.learn(epoch, ClipRecords(vid, st, sc, pred, marg))
        counts.update(applied=int(vid.numel()), nonfinite=nonfinite, ignored=0)
        return counts

    def learn(self, epoch: int, records: ClipRecords) -> dict:
        """Learn from the checked, finite records of ``epoch``; returns counts (a dict). Default: ``_learn`` on
        ``(video_idx, start, score)``."""
        return self._learn(epoch, records.video_idx, records.start, records.score)

    def _learn(self, epoch: int, vid: Tensor, st: Tensor, sc: Tensor) -> dict:
        """Write checked, finite records (int64 / int64 / float32 ``[R]``) into the policy; returns counts. A
        policy with ``learns = True`` defines it; reaching this base version is a broken contract, named."""
        name = type(self).__name__
        raise NotImplementedError(f"{name}.learns is True (or records_scores_of says epoch {epoch} is scored) but "
                                  f"{name} does not define _learn(epoch, vid, st, sc): define it, or set "
                                  "learns = False")

    # ------------------------------------------------------------------------------------------ building
    @classmethod
    def from_context(cls, context: PolicyContext, **init_args: Any) -> "SamplingPolicy":
        """Build the policy for a training run: ``cls(**init_args)`` with the constructor parameters named
        ``num_positions``, ``clip_len`` / ``span``, ``schedule``, ``seed``, ``gamma_s`` and ``num_classes`` filled from ``context``
        unless ``init_args`` gives them (``PolicyContext.PARAMETERS``). The callback calls it; a policy that needs
        more than these overrides it. Raises ``TypeError`` naming an init argument the constructor does not take.
        """
        params = inspect.signature(cls.__init__).parameters
        free = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
        unknown = [k for k in init_args if k not in params and not free]
        if unknown:
            allowed = [k for k in params if k != "self"]
            raise TypeError(f"{cls.__name__} takes no argument(s) {unknown}; its constructor takes {allowed}")
        kwargs = dict(init_args)
        for field, names in PolicyContext.PARAMETERS.items():
            for name in names:
                if name in params and name not in kwargs:
                    kwargs[name] = getattr(context, field)
        return cls(**kwargs)

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
