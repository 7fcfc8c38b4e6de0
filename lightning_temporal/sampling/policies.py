"""The four clip-position policies of Temporal Stochastic Softmax (Ayral et al., supplementary §S.1-S.2).

Each keeps the contract of :class:`~lightning_temporal.sampling.policy.SamplingPolicy`:

* :class:`UniformPolicy`: uniform starts every epoch, learns nothing (the baseline);
* :class:`StochasticSoftmaxPolicy`: warm-up, exploration grid, then softmax of the learned score table, updated
  with seed Eq. S.2;
* :class:`PriorPolicy`: softmax of a clip prior computed from per-frame scores (seed Table S.4, "PSPI
  sampling"), from the first epoch, never updated;
* :class:`ReinforcePolicy`: the REINFORCE baseline of seed Fig. S.2.
"""
from __future__ import annotations

import dataclasses
from typing import NamedTuple, Optional, Sequence

import torch
from torch import Tensor

from lightning_temporal.checks import check_instance, check_int, check_number
from lightning_temporal.sampling.phases import (
    Phase,
    PhaseSchedule,
    check_epoch,
    exploration_radius,
    exploration_slot_orders,
    grid_starts,
)
from lightning_temporal.sampling.policy import SamplingPolicy, uniform_starts
from lightning_temporal.sampling.records import record_rounds
from lightning_temporal.sampling.segments import (
    IntsLike,
    Workspace,
    as_num_positions,
    segment_broadcast,
    segment_offsets,
    segment_reduce,
    shifted_logits,
    video_chunks,
)
from lightning_temporal.sampling.table import ScoreTable, check_temperature

__all__ = [
    "UniformPolicy", "StochasticSoftmaxPolicy", "PriorPolicy", "ReinforcePolicy",
    "uniform_starts", "clip_prior", "FlatFrameScores", "check_gamma_s", "check_reinforce_lr", "check_baseline_momentum",
]


def check_gamma_s(gamma_s, name: str = "gamma_s") -> float:
    """The sampling temperature as a float if it is a finite number in [0, float32's largest], else ``ValueError``
    (see :func:`~lightning_temporal.sampling.table.check_temperature`)."""
    return check_temperature(gamma_s, name)


def check_reinforce_lr(lr, name: str = "lr") -> float:
    """REINFORCE's step size alpha as a float if it is a finite number > 0, else ``ValueError``."""
    return check_number(name, lr, minimum=0, exclusive_minimum=True)


def check_baseline_momentum(momentum, name: str = "baseline_momentum") -> float:
    """REINFORCE's baseline momentum as a float if it is in [0, 1), else ``ValueError``."""
    return check_number(name, momentum, minimum=0, maximum=1, exclusive_maximum=True)


class UniformPolicy(SamplingPolicy):
    """Uniform starts every epoch; records are ignored. Every epoch is a warm-up epoch.

    Example:
        >>> import torch
        >>> p = UniformPolicy([10, 1, 4])
        >>> s = p.starts(0, torch.Generator().manual_seed(0))
        >>> bool(((s >= 0) & (s < torch.tensor([10, 1, 4]))).all())
        True

    Args:
        num_positions: N_v per video (ints >= 1), [V].
    """

    def __init__(self, num_positions: IntsLike):
        super().__init__(num_positions)

    @classmethod
    def phase_of(cls, epoch: int, schedule: Optional[PhaseSchedule] = None) -> Phase:
        check_epoch(epoch)
        return Phase.WARMUP


class StochasticSoftmaxPolicy(SamplingPolicy):
    """Temporal Stochastic Softmax: warm-up, exploration grid, softmax exploitation (seed §S.1, Eq. S.2).

    Example:
        >>> import torch
        >>> p = StochasticSoftmaxPolicy([20, 7], clip_len=4, gamma_s=1.0,
        ...                             schedule=PhaseSchedule(warmup_epochs=1, exploration_epochs=3))
        >>> g = torch.Generator().manual_seed(0)
        >>> p.phase(1).value, sorted(set(p.starts(1, g).tolist()) | set(p.starts(2, g).tolist())
        ...                              | set(p.starts(3, g).tolist())) == [0, 3, 6, 9, 19]
        ('exploration', True)
        >>> p.update(1, torch.tensor([0, 1]), torch.tensor([0, 0]), torch.tensor([1.0, 2.0]))["applied"]
        2

    Args:
        num_positions: N_v per video (ints >= 1), [V].
        clip_len: F (frames per clip) >= 1; reach of the Eq. S.2 update.
        gamma_s: sampling temperature >= 0 of the exploitation softmax (0 = uniform).
        schedule: warm-up / exploration epochs.
        seed: seeds each video's random order of exploration slots (drawn once, stored).

    ``update`` writes nothing in warm-up, the hard fill over each video's exploration radius
    (:func:`~lightning_temporal.sampling.phases.exploration_radius`) in exploration and Eq. S.2 in exploitation;
    the phase is that of the epoch whose records are applied. ``table`` holds the score estimates w.
    """

    learns = True

    def __init__(self, num_positions: IntsLike, clip_len: int, gamma_s: float = 1.0,
                 schedule: Optional[PhaseSchedule] = None, seed: int = 0):
        schedule = check_instance("schedule", schedule if schedule is not None else PhaseSchedule(), PhaseSchedule)
        gamma_s = check_gamma_s(gamma_s)
        self.seed = check_int("seed", seed)
        super().__init__(num_positions, ScoreTable(num_positions, clip_len), gamma_s, schedule)
        E = schedule.exploration_epochs
        self.slot_orders = exploration_slot_orders(self.num_videos, E, seed)  # [V, E]
        self.radius = exploration_radius(self.num_positions, E)              # [V]

    @property
    def gamma_s(self) -> float:
        return self.temperature

    @classmethod
    def phase_of(cls, epoch: int, schedule: Optional[PhaseSchedule] = None) -> Phase:
        return (schedule or PhaseSchedule()).phase(epoch)

    def _exploration_starts(self, epoch: int, v: Optional[int] = None) -> Tensor:
        rows = slice(None) if v is None else slice(v, v + 1)
        slot = self.slot_orders[rows, self.schedule.exploration_index(epoch)].to(torch.int64)
        # N_v and the slot orders were checked when the policy was built or loaded: no pass to check them again
        return grid_starts(self.last_positions[rows], slot, self.schedule.exploration_epochs)

    def _learn(self, epoch: int, vid: Tensor, st: Tensor, sc: Tensor) -> dict:
        if self.phase(epoch) is Phase.EXPLORATION:
            return self.table.fill(vid, st, sc, self.radius[vid], checked=True)
        return self.table.interpolate(vid, st, sc, checked=True)

    def hyperparameters(self) -> dict:
        return {"gamma_s": self.gamma_s, "schedule": dataclasses.asdict(self.schedule)}

    def state_dict(self) -> dict:
        return {**super().state_dict(), "slot_orders": self.slot_orders.clone(), "seed": self.seed}

    def load_state_dict(self, state: dict) -> None:
        slots = torch.as_tensor(state["slot_orders"])
        if slots.shape != self.slot_orders.shape:
            raise ValueError(f"StochasticSoftmaxPolicy.load_state_dict: slot_orders shape {tuple(slots.shape)} "
                             f"!= {tuple(self.slot_orders.shape)} (other videos or exploration epochs)")
        E = self.schedule.exploration_epochs
        if slots.numel() and (int(slots.min()) < 0 or int(slots.max()) >= E):
            raise ValueError(f"StochasticSoftmaxPolicy.load_state_dict: slot_orders hold values in "
                             f"{int(slots.min())}..{int(slots.max())}, slots must be in 0..{E - 1} (E = {E}); the "
                             "checkpoint is damaged or from another schedule")
        super().load_state_dict(state)
        self.slot_orders = slots.clone().to(self.slot_orders.dtype)
        self.seed = int(state["seed"])


class FlatFrameScores(NamedTuple):
    """All videos' frame scores in one flat tensor: ``values`` float [sum L_v], ``num_frames`` int [V].

    Lets :func:`clip_prior` / :class:`PriorPolicy` skip the per-video flattening of a list (large datasets).
    """

    values: Tensor
    num_frames: Tensor


def _flat_frame_scores(frame_scores) -> tuple[Tensor, Tensor]:
    """(float32 [sum L_v] frame scores, int64 [V] frame counts), checked: every video has a finite score per frame."""
    if isinstance(frame_scores, FlatFrameScores):
        flat = torch.as_tensor(frame_scores.values, dtype=torch.float32).reshape(-1)
        n_frames = torch.as_tensor(frame_scores.num_frames, dtype=torch.int64).reshape(-1)
        if int(n_frames.sum()) != flat.numel():
            raise ValueError(f"FlatFrameScores: num_frames sum to {int(n_frames.sum())} but values holds "
                             f"{flat.numel()} frame scores")
    else:  # one-time O(V) Python pass to flatten per-video sequences (not a per-epoch path)
        if len(frame_scores) == 0:
            raise ValueError("frame_scores must hold one 1-D sequence of frame scores per video, got none")
        parts = [torch.as_tensor(f, dtype=torch.float32).reshape(-1) for f in frame_scores]
        n_frames = torch.tensor([p.numel() for p in parts], dtype=torch.int64)
        flat = torch.cat(parts)
        del parts
    empty = (n_frames < 1).nonzero().flatten()
    if empty.numel():
        raise ValueError(f"frame_scores of video {int(empty[0])} is empty ({empty.numel()} empty video(s)): "
                         "every video needs at least one frame score")
    bad = (~torch.isfinite(flat)).nonzero().flatten()
    if bad.numel():
        foff = segment_offsets(n_frames)
        p = int(bad[0])
        v = int(torch.searchsorted(foff, torch.tensor(p), right=True)) - 1
        raise ValueError(f"frame_scores of video {v} has a non-finite value {float(flat[p])} at frame "
                         f"{p - int(foff[v])} ({bad.numel()} non-finite frame score(s) in all); fix or "
                         "drop those scores in the manifest")
    return flat, n_frames


def clip_prior(frame_scores, clip_len: int) -> tuple[Tensor, Tensor]:
    """Clip prior of prior-guided sampling (seed Table S.4): the mean of the frame scores over [t, t + F) for
    every clip position.

    Args:
        frame_scores: one 1-D sequence / tensor / array of per-frame scores per video (L_v >= 1 each), or
            a :class:`FlatFrameScores`.
        clip_len: F >= 1. For a clip taken with stride s pass its span (F - 1) * s + 1: the prior is then
            the mean over every frame the clip spans.
    Returns: ``(prior float32 [P], num_positions int64 [V])`` with N_v = max(1, L_v - F + 1); a video
    shorter than F is padded by repeating its last frame (as its clips are), so its one clip averages F
    frames, the last one repeated.

    Vectorised: one float64 cumulative sum over all frames, then window sums as differences.
    """
    F = check_int("clip_len", clip_len, minimum=1, hint="frames per clip")
    flat, n_frames = _flat_frame_scores(frame_scores)
    foff = segment_offsets(n_frames)
    num_positions = torch.clamp(n_frames - F + 1, min=1)
    poff = segment_offsets(num_positions)
    prior = torch.empty(int(poff[-1]), dtype=torch.float32)
    for v0, v1 in video_chunks(foff):
        # Window sums over this chunk's frame array at once, W[i] = sum(frames[i:i+F]) (float64 running
        # sum, F zeros appended), then drop the windows that start in a video's last L - N frames
        # (they straddle the next video): no per-position gathers.
        fa, fb = int(foff[v0]), int(foff[v1])
        csum = torch.zeros(fb - fa + F + 1, dtype=torch.float64)
        torch.cumsum(flat[fa:fb], 0, dtype=torch.float64, out=csum[1:fb - fa + 1])
        csum[fb - fa + 1:] = csum[fb - fa]
        win = csum[F:F + fb - fa] - csum[:fb - fa]            # [frames in chunk]
        drop = (n_frames[v0:v1] - num_positions[v0:v1])      # L - N per video, 0..F-1
        first_drop = foff[v0:v1] - fa + num_positions[v0:v1]
        rel = torch.arange(max(F - 1, 1))
        idx = torch.where(rel < drop[:, None], first_drop[:, None] + rel, fb - fa)  # fb - fa = sentinel
        keep = torch.ones(fb - fa + 1, dtype=torch.bool)
        keep[idx.flatten()] = False
        prior[int(poff[v0]):int(poff[v1])] = (win[keep[:-1]] / F).to(torch.float32)
    # Videos shorter than F: their one window summed the L real frames (and appended zeros / the next
    # video's frames); recompute it with the F - L missing frames repeating the last frame.
    short = (n_frames < F).nonzero().flatten()
    if short.numel():
        first = foff[short]
        rel = torch.arange(F)
        ok = rel < n_frames[short][:, None]
        vals = flat[torch.where(ok, first[:, None] + rel, first[:, None])].to(torch.float64)
        total = torch.where(ok, vals, 0.0).sum(1)
        last = flat[foff[short + 1] - 1].to(torch.float64)
        pad = (F - n_frames[short]).to(torch.float64)
        prior[poff[short]] = ((total + pad * last) / F).to(torch.float32)
    return prior, num_positions


class PriorPolicy(SamplingPolicy):
    """Prior-guided sampling (seed Table S.4): t ~ softmax(gamma_s * prior) from epoch 0; never updated.

    Every epoch is an exploitation epoch (no warm-up, no exploration); ``table`` holds the clip prior.

    Example:
        >>> import torch
        >>> p = PriorPolicy([[0, 0, 0, 9, 9, 0], [1.0]], clip_len=2, gamma_s=0.0)
        >>> p.table[0]
        tensor([0.0000, 0.0000, 4.5000, 9.0000, 4.5000])
        >>> p.num_positions.tolist()
        [5, 1]

    Args:
        frame_scores: per-video 1-D per-frame scores (e.g. PSPI), see :func:`clip_prior`.
        clip_len: F >= 1 (or the clip's span for strided clips).
        gamma_s: temperature >= 0.
    Use :meth:`from_clip_prior` to give the clip prior directly.
    """

    def __init__(self, frame_scores, clip_len: int, gamma_s: float = 1.0):
        gamma_s = check_gamma_s(gamma_s)
        values, num_positions = clip_prior(frame_scores, clip_len)
        table = ScoreTable(num_positions, clip_len)
        table.values.copy_(values)
        super().__init__(num_positions, table, gamma_s)

    @classmethod
    def from_clip_prior(cls, prior: Sequence, clip_len: int, gamma_s: float = 1.0) -> "PriorPolicy":
        """Build from a clip-level prior: one 1-D sequence of N_v finite values per video."""
        gamma_s = check_gamma_s(gamma_s)
        parts = [torch.as_tensor(p, dtype=torch.float32).reshape(-1) for p in prior]
        n = as_num_positions([p.numel() for p in parts], "clip prior lengths")
        flat = torch.cat(parts)
        bad = (~torch.isfinite(flat)).nonzero().flatten()
        if bad.numel():
            v = int(torch.searchsorted(segment_offsets(n), bad[:1], right=True)[0]) - 1
            raise ValueError(f"clip prior of video {v} has a non-finite value ({bad.numel()} in all)")
        self = cls.__new__(cls)
        table = ScoreTable(n, clip_len)
        table.values.copy_(flat)
        SamplingPolicy.__init__(self, n, table, gamma_s)
        return self

    @classmethod
    def from_context(cls, context, **init_args) -> "PriorPolicy":
        """Build from the run's :class:`~lightning_temporal.sampling.policy.PolicyContext`: the frame scores
        (``init_args["frame_scores"]`` or ``context.frame_scores()``), the clip span and γ_s, checked against the
        sampler's videos (one score sequence per video, as many clip positions). ``ValueError`` names what is
        missing or differs."""
        num_positions = context.num_positions
        scores = init_args.pop("frame_scores", None)
        if scores is None:
            if context.frame_scores is None:
                raise ValueError("mode='prior' needs per-frame scores: give the training manifest a frame_scores "
                                 "column (datamodule.train_manifest.load_frame_scores) or pass frame_scores= "
                                 "to StochasticSoftmaxCallback")
            scores = context.frame_scores()
        missing = [i for i, s in enumerate(scores) if s is None]
        if missing:
            raise ValueError(f"mode='prior': {len(missing)} training video(s) have no frame scores (first: video "
                             f"{missing[0]}); give every training video a frame_scores file or use mode='tss'")
        if len(scores) != num_positions.numel():
            raise ValueError(f"mode='prior': {len(scores)} frame-score sequences for {num_positions.numel()} "
                             "training videos; give one per video, in the manifest's order")
        init_args.setdefault("clip_len", context.span)
        init_args.setdefault("gamma_s", context.gamma_s)
        policy = cls(scores, **init_args)
        if not torch.equal(policy.num_positions, num_positions):
            bad = int((policy.num_positions != num_positions).nonzero()[0]) \
                if policy.num_positions.shape == num_positions.shape else 0
            raise ValueError(f"mode='prior': the frame scores do not match the videos' frame counts (video {bad}: "
                             "the prior has a different number of clip positions than the sampler); give one "
                             "score per decoded frame")
        return policy

    @property
    def gamma_s(self) -> float:
        return self.temperature

    @classmethod
    def phase_of(cls, epoch: int, schedule: Optional[PhaseSchedule] = None) -> Phase:
        check_epoch(epoch)
        return Phase.EXPLOITATION

    def hyperparameters(self) -> dict:
        return {"gamma_s": self.gamma_s}

    def _load_table(self, table_state: dict) -> None:
        # The prior is fixed data: a checkpoint holds it only so that a resume can check it is the same prior.
        if not torch.equal(torch.as_tensor(table_state["values"]), self.table.values):
            raise ValueError("PriorPolicy.load_state_dict: the checkpoint's clip prior differs from this "
                             "policy's (other frame scores or clip_len); build it from the same manifest")


class ReinforcePolicy(SamplingPolicy):
    """REINFORCE baseline of seed Fig. S.2: per-video logits theta (``table``), t ~ softmax(theta).

    Update for a record (v, t, f):  reward = f - b_v;  theta_v += lr * reward * (onehot(t) - pi_v),
    with pi_v = softmax(theta_v) before the update (the gradient of log pi_v(t)). The baseline b_v is
    **per video**: an exponential moving average of that video's scores, b_v <- m * b_v + (1 - m) * f,
    started at the video's first score (so a video's first record only sets its baseline). Per video
    because clip scores are target logits whose level differs a lot between videos and classes; a global
    baseline would reward "easy videos" rather than good positions.

    Example:
        >>> import torch
        >>> p = ReinforcePolicy([4], lr=1.0, baseline_momentum=0.5)
        >>> _ = p.update(0, torch.tensor([0]), torch.tensor([1]), torch.tensor([0.0]))  # sets baseline
        >>> _ = p.update(1, torch.tensor([0]), torch.tensor([1]), torch.tensor([2.0]))  # reward 2
        >>> p.table[0]
        tensor([-0.5000,  1.5000, -0.5000, -0.5000])

    Args:
        num_positions: N_v per video, [V].
        lr: alpha > 0, step size on theta.
        baseline_momentum: m in [0, 1).
        seed: accepted for a constructor signature shared with the other TSS policies; REINFORCE draws
            nothing outside the sampler's per-epoch generator, so it does not use it.
        schedule: its ``warmup_epochs`` are epochs before the first update (their records are ignored; theta stays
            0 through them, so the starts, drawn from softmax(theta) in every epoch, are uniform then). REINFORCE
            has no exploration phase: the schedule's exploration epochs do not apply. None: no warm-up.
    """

    learns = True

    def __init__(self, num_positions: IntsLike, lr: float = 1.0, baseline_momentum: float = 0.9, seed: int = 0,
                 schedule: Optional[PhaseSchedule] = None):
        self.lr = check_reinforce_lr(lr)
        self.baseline_momentum = check_baseline_momentum(baseline_momentum)
        self.seed = check_int("seed", seed)
        if schedule is not None:
            check_instance("schedule", schedule, PhaseSchedule)
        super().__init__(num_positions, ScoreTable(num_positions, 1), 1.0, schedule)  # clip_len unused
        self.baseline = torch.zeros(self.num_videos, dtype=torch.float32)
        self.seen = torch.zeros(self.num_videos, dtype=torch.bool)

    @classmethod
    def phase_of(cls, epoch: int, schedule: Optional[PhaseSchedule] = None) -> Phase:
        """Warm-up for the schedule's warm-up epochs, then exploitation."""
        warmup = schedule.warmup_epochs if schedule is not None else 0
        return Phase.WARMUP if check_epoch(epoch) < warmup else Phase.EXPLOITATION

    def starts(self, epoch: int, generator: Optional[torch.Generator] = None) -> Tensor:
        check_epoch(epoch)
        return self.table.sample(self.temperature, generator)  # the same draw in warm-up, where theta is 0

    def _learn(self, epoch: int, vid: Tensor, st: Tensor, sc: Tensor) -> dict:
        m, rounds = self.baseline_momentum, 0
        for idx in record_rounds(vid):
            rounds += 1
            v, t, f = vid[idx], st[idx], sc[idx]
            seen = self.seen[v]
            base = torch.where(seen, self.baseline[v], f)
            coef = self.lr * (f - base)                                     # reward * lr, [R]
            self.baseline[v] = torch.where(seen, m * base + (1 - m) * f, f)
            self.seen[v] = True
            if 2 * int(self.num_positions[v].sum()) >= self.table.values.numel():
                self._step_all(v, t, coef)
            else:
                self._step_few(v, t, coef)
        return {"rounds": rounds}

    def _step_all(self, v: Tensor, t: Tensor, coef: Tensor) -> None:
        """Records cover most videos (the usual epoch): one chunked pass over the whole table,
        theta_v -= coef_v * pi_v with coef = 0 for videos without a record in this round, then + coef_v at t."""
        off, theta = self.table.offsets, self.table.values
        coef_all = torch.zeros(self.num_videos, dtype=torch.float32)
        coef_all[v] = coef
        ws = Workspace(off, "x", "tmp")
        for v0, v1 in ws.chunks:
            a, b, ln, ids, x = shifted_logits(theta, off, 1.0, ws, v0, v1)
            x.exp_()
            scale = coef_all[v0:v1] / segment_reduce(x, "sum", ln, ids)      # coef_v / Z_v
            theta[a:b].sub_(x.mul_(segment_broadcast(scale, ln, ids, ws.tmp[:b - a])))
        theta.index_put_((off[v] + t,), coef, accumulate=True)              # + coef_v at t (one per video)

    def _step_few(self, v: Tensor, t: Tensor, coef: Tensor) -> None:
        """Few records: ragged expansion of just their videos' segments, in chunks (float64)."""
        off, theta, n = self.table.offsets, self.table.values, self.num_positions[v]
        for lo, hi in video_chunks(segment_offsets(n)):
            vv, tt, cc, nn = v[lo:hi], t[lo:hi], coef[lo:hi], n[lo:hi]
            rec = torch.repeat_interleave(torch.arange(nn.numel()), nn)
            seg_start = torch.cumsum(nn, 0) - nn
            flat = off[vv][rec] + (torch.arange(rec.numel()) - seg_start[rec])
            x = theta[flat].to(torch.float64)
            x = x - torch.repeat_interleave(torch.segment_reduce(x, "max", lengths=nn), nn)
            e = torch.exp(x)
            pi = e / torch.repeat_interleave(torch.segment_reduce(e, "sum", lengths=nn), nn)
            grad = -pi                                                    # d log pi(t) / d theta
            grad[seg_start + tt] += 1.0
            theta[flat] = (theta[flat].to(torch.float64) + cc[rec].to(torch.float64) * grad).to(torch.float32)

    def hyperparameters(self) -> dict:
        return {"lr": self.lr, "baseline_momentum": self.baseline_momentum}

    def state_dict(self) -> dict:
        return {**super().state_dict(), "baseline": self.baseline.clone(), "seen": self.seen.clone()}

    def load_state_dict(self, state: dict) -> None:
        base = torch.as_tensor(state["baseline"], dtype=torch.float32)
        if base.shape != self.baseline.shape:
            raise ValueError(f"ReinforcePolicy.load_state_dict: checkpoint has {base.numel()} videos, this policy "
                             f"{self.baseline.numel()}")
        super().load_state_dict(state)
        self.baseline.copy_(base)
        self.seen.copy_(torch.as_tensor(state["seen"], dtype=torch.bool))
