"""Clip-position policies: which start each video gets in an epoch, and how scored clips update them.

Every policy has the same narrow contract (CONTRACT §4), used by
:class:`~lightning_temporal.sampling.sampler.ClipSampler` and by the Lightning callback:

* ``starts(epoch, generator) -> int64 [V]``: one start per video for that epoch. All randomness comes
  from ``generator`` (the sampler seeds it from (seed, epoch)), so the same policy state gives the same
  starts, on every rank and after a resume.
* ``update(epoch, video_idx, start, score) -> dict``: apply the records of one finished epoch
  (1-D tensors, one entry per scored clip, in global-plan order). Returns counts
  (``applied``, ``nonfinite``, ``ignored``).
* ``entropy(epoch) -> float32 [V]``: entropy (nats) of each video's start distribution in that epoch
  (for logging); ``probabilities(v, epoch) -> float32 [N_v]`` for plots.
* ``state_dict()`` / ``load_state_dict()``: everything that changes during training.

Policies: :class:`UniformPolicy`, :class:`StochasticSoftmaxPolicy` (SPEC §1.2-1.3),
:class:`PriorPolicy` (SPEC §1.4), :class:`ReinforcePolicy` (SPEC §1.5).
"""
from __future__ import annotations

import math
from typing import NamedTuple, Sequence

import torch
from torch import Tensor

from lightning_temporal.sampling.phases import (
    Phase,
    PhaseSchedule,
    exploration_radius,
    exploration_slot_orders,
    exploration_starts,
)
from lightning_temporal.sampling.table import (
    IntsLike,
    ScoreTable,
    _Workspace,
    _chunk_shifted,
    _seg_bcast,
    _seg_reduce,
    _offsets,
    _video_chunks,
    as_num_positions,
    check_records,
    drop_nonfinite,
    record_rounds,
)

__all__ = [
    "UniformPolicy", "StochasticSoftmaxPolicy", "PriorPolicy", "ReinforcePolicy", "uniform_starts",
    "clip_prior", "FlatFrameScores",
]


def _check_gamma(gamma_s) -> float:
    if isinstance(gamma_s, bool) or not isinstance(gamma_s, (int, float)) or not math.isfinite(gamma_s) \
            or gamma_s < 0:
        raise ValueError(f"gamma_s must be a finite number >= 0 (0 = uniform over the table, larger = "
                         f"sharper), got {gamma_s!r}")
    return float(gamma_s)


def _check_epoch(epoch) -> int:
    if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 0:
        raise ValueError(f"epoch must be an int >= 0 (epochs count from 0), got {epoch!r}")
    return epoch


def uniform_starts(num_positions: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """t ~ Uniform{0..N_v-1} for every video: int64 [V] (one float64 uniform per video)."""
    u = torch.rand(num_positions.numel(), generator=generator, dtype=torch.float64)
    return torch.minimum((u * num_positions).to(torch.int64), num_positions - 1)


def _uniform_entropy(num_positions: Tensor) -> Tensor:
    return torch.log(num_positions.to(torch.float64)).to(torch.float32)


def _uniform_probabilities(n: int) -> Tensor:
    return torch.full((n,), 1.0 / n, dtype=torch.float32)


def _ignored(num_positions, video_idx, start, score, what) -> dict:
    vid, _, sc = check_records(num_positions, video_idx, start, score, what)
    return {"applied": 0, "nonfinite": int((~torch.isfinite(sc)).sum()), "ignored": int(vid.numel())}


def _check_video(v, num_videos) -> int:
    v = int(v)
    if not 0 <= v < num_videos:
        raise IndexError(f"video index {v} out of range 0..{num_videos - 1}")
    return v


class UniformPolicy:
    """Uniform starts every epoch; records are ignored.

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
        self.num_positions = as_num_positions(num_positions)

    @property
    def num_videos(self) -> int:
        return self.num_positions.numel()

    def phase(self, epoch: int) -> Phase:
        _check_epoch(epoch)
        return Phase.WARMUP

    def starts(self, epoch: int, generator: torch.Generator | None = None) -> Tensor:
        _check_epoch(epoch)
        return uniform_starts(self.num_positions, generator)

    def update(self, epoch: int, video_idx, start, score) -> dict:
        _check_epoch(epoch)
        return _ignored(self.num_positions, video_idx, start, score, "UniformPolicy.update")

    def entropy(self, epoch: int) -> Tensor:
        _check_epoch(epoch)
        return _uniform_entropy(self.num_positions)

    def probabilities(self, v: int, epoch: int) -> Tensor:
        v = _check_video(v, self.num_videos)
        return _uniform_probabilities(int(self.num_positions[v]))

    def state_dict(self) -> dict:
        return {"num_positions": self.num_positions.clone()}

    def load_state_dict(self, state: dict) -> None:
        if not torch.equal(torch.as_tensor(state["num_positions"]), self.num_positions):
            raise ValueError("UniformPolicy.load_state_dict: the checkpoint was made for other videos "
                             "(num_positions differ); rebuild from the same training manifest")


class StochasticSoftmaxPolicy:
    """Temporal Stochastic Softmax (SPEC §1.2-1.3): warm-up, exploration grid, softmax exploitation.

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

    ``update`` writes nothing in warm-up, the hard fill (radius of SPEC §1.2 per video) in exploration
    and Eq. S.2 in exploitation; the phase is that of the epoch whose records are applied.
    """

    def __init__(self, num_positions: IntsLike, clip_len: int, gamma_s: float = 1.0,
                 schedule: PhaseSchedule | None = None, seed: int = 0):
        self.gamma_s = _check_gamma(gamma_s)
        self.schedule = schedule if schedule is not None else PhaseSchedule()
        if not isinstance(self.schedule, PhaseSchedule):
            raise ValueError(f"schedule must be a PhaseSchedule, got {type(schedule).__name__}")
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise ValueError(f"seed must be an int, got {seed!r}")
        self.seed = seed
        self.table = ScoreTable(num_positions, clip_len)
        E = self.schedule.exploration_epochs
        self.slot_orders = exploration_slot_orders(self.table.num_videos, E, seed)  # [V, E]
        self.radius = exploration_radius(self.table.num_positions, E)              # [V]

    @property
    def num_positions(self) -> Tensor:
        return self.table.num_positions

    @property
    def num_videos(self) -> int:
        return self.table.num_videos

    def phase(self, epoch: int) -> Phase:
        return self.schedule.phase(epoch)

    def starts(self, epoch: int, generator: torch.Generator | None = None) -> Tensor:
        phase = self.phase(epoch)
        if phase is Phase.WARMUP:
            return uniform_starts(self.num_positions, generator)
        if phase is Phase.EXPLORATION:
            slot = self.slot_orders[:, self.schedule.exploration_index(epoch)].to(torch.int64)
            return exploration_starts(self.num_positions, slot, self.schedule.exploration_epochs)
        return self.table.sample(self.gamma_s, generator)

    def update(self, epoch: int, video_idx, start, score) -> dict:
        phase = self.phase(epoch)
        if phase is Phase.WARMUP:
            return _ignored(self.num_positions, video_idx, start, score, "StochasticSoftmaxPolicy.update")
        if phase is Phase.EXPLORATION:
            vid = torch.as_tensor(video_idx)
            if vid.dim() != 1:
                raise ValueError(f"StochasticSoftmaxPolicy.update: video_idx must be 1-D, got shape "
                                 f"{tuple(vid.shape)}")
            if vid.numel() and (int(vid.min()) < 0 or int(vid.max()) >= self.num_videos):
                raise ValueError(f"StochasticSoftmaxPolicy.update: video_idx must be in 0..{self.num_videos - 1}, "
                                 f"got values in {int(vid.min())}..{int(vid.max())}")
            counts = self.table.fill(video_idx, start, score, self.radius[vid.to(torch.int64)])
        else:
            counts = self.table.interpolate(video_idx, start, score)
        counts["ignored"] = 0
        return counts

    def entropy(self, epoch: int) -> Tensor:
        """Warm-up: log N_v (uniform); exploration: 0 (deterministic); exploitation: H(softmax(gamma_s w))."""
        phase = self.phase(epoch)
        if phase is Phase.WARMUP:
            return _uniform_entropy(self.num_positions)
        if phase is Phase.EXPLORATION:
            return torch.zeros(self.num_videos, dtype=torch.float32)
        return self.table.entropy(self.gamma_s)

    def probabilities(self, v: int, epoch: int) -> Tensor:
        """Video v's start distribution in that epoch: float32 [N_v]."""
        v = _check_video(v, self.num_videos)
        phase = self.phase(epoch)
        n = int(self.num_positions[v])
        if phase is Phase.WARMUP:
            return _uniform_probabilities(n)
        if phase is Phase.EXPLORATION:
            slot = self.slot_orders[v, self.schedule.exploration_index(epoch)].to(torch.int64)
            t = exploration_starts(self.num_positions[v:v + 1], slot, self.schedule.exploration_epochs)
            p = torch.zeros(n, dtype=torch.float32)
            p[t] = 1.0
            return p
        return self.table.probabilities(v, self.gamma_s)

    def state_dict(self) -> dict:
        return {
            "table": self.table.state_dict(),
            "slot_orders": self.slot_orders.clone(),
            "gamma_s": self.gamma_s,
            "schedule": self.schedule.state_dict(),
            "seed": self.seed,
        }

    def load_state_dict(self, state: dict) -> None:
        if state["schedule"] != self.schedule.state_dict():
            raise ValueError(f"StochasticSoftmaxPolicy.load_state_dict: checkpoint schedule {state['schedule']} "
                             f"!= this policy's {self.schedule.state_dict()}; build the policy with the same "
                             "warmup_epochs / exploration_epochs to resume")
        if float(state["gamma_s"]) != self.gamma_s:
            raise ValueError(f"StochasticSoftmaxPolicy.load_state_dict: checkpoint gamma_s {state['gamma_s']} "
                             f"!= this policy's {self.gamma_s}; build the policy with the same gamma_s to resume")
        slots = torch.as_tensor(state["slot_orders"])
        if slots.shape != self.slot_orders.shape:
            raise ValueError(f"StochasticSoftmaxPolicy.load_state_dict: slot_orders shape {tuple(slots.shape)} "
                             f"!= {tuple(self.slot_orders.shape)} (other videos or exploration epochs)")
        self.table.load_state_dict(state["table"])
        self.slot_orders = slots.clone().to(self.slot_orders.dtype)
        self.seed = int(state["seed"])


class FlatFrameScores(NamedTuple):
    """All videos' frame scores in one flat tensor: ``values`` float [sum L_v], ``num_frames`` int [V].

    Lets :func:`clip_prior` / :class:`PriorPolicy` skip the per-video flattening of a list (large datasets).
    """

    values: Tensor
    num_frames: Tensor


def clip_prior(frame_scores, clip_len: int) -> tuple[Tensor, Tensor]:
    """Clip prior of SPEC §1.4: mean of the frame scores over [t, t + F) for every clip position.

    Args:
        frame_scores: one 1-D sequence / tensor / array of per-frame scores per video (L_v >= 1 each), or
            a :class:`FlatFrameScores`.
        clip_len: F >= 1. For a clip taken with stride s pass its span (F - 1) * s + 1: the prior is then
            the mean over every frame the clip spans.
    Returns: ``(prior float32 [P], num_positions int64 [V])`` with N_v = max(1, L_v - F + 1); a video
    shorter than F is padded by repeating its last frame (CONTRACT §1), so its one clip averages F
    frames, the last one repeated.

    Vectorised: one float64 cumulative sum over all frames, then window sums as differences.
    """
    if isinstance(clip_len, bool) or not isinstance(clip_len, int) or clip_len < 1:
        raise ValueError(f"clip_len must be an int >= 1 (frames per clip), got {clip_len!r}")
    if not isinstance(frame_scores, FlatFrameScores) and len(frame_scores) == 0:
        raise ValueError("frame_scores must hold one 1-D sequence of frame scores per video, got none")
    F = clip_len
    if isinstance(frame_scores, FlatFrameScores):
        flat = torch.as_tensor(frame_scores.values, dtype=torch.float32).reshape(-1)
        n_frames = torch.as_tensor(frame_scores.num_frames, dtype=torch.int64).reshape(-1)
        if int(n_frames.sum()) != flat.numel():
            raise ValueError(f"FlatFrameScores: num_frames sum to {int(n_frames.sum())} but values holds "
                             f"{flat.numel()} frame scores")
    else:  # one-time O(V) Python pass to flatten per-video sequences (not a per-epoch path)
        parts = [torch.as_tensor(f, dtype=torch.float32).reshape(-1) for f in frame_scores]
        n_frames = torch.tensor([p.numel() for p in parts], dtype=torch.int64)
        flat = torch.cat(parts)
        del parts
    empty = (n_frames < 1).nonzero().flatten()
    if empty.numel():
        raise ValueError(f"frame_scores of video {int(empty[0])} is empty ({empty.numel()} empty video(s)): "
                         "every video needs at least one frame score")
    foff = _offsets(n_frames)
    bad = (~torch.isfinite(flat)).nonzero().flatten()
    if bad.numel():
        p = int(bad[0])
        v = int(torch.searchsorted(foff, torch.tensor(p), right=True)) - 1
        raise ValueError(f"frame_scores of video {v} has a non-finite value {float(flat[p])} at frame "
                         f"{p - int(foff[v])} ({bad.numel()} non-finite frame score(s) in all); fix or "
                         "drop those scores in the manifest")
    num_positions = torch.clamp(n_frames - F + 1, min=1)
    poff = _offsets(num_positions)
    prior = torch.empty(int(poff[-1]), dtype=torch.float32)
    for v0, v1 in _video_chunks(foff):
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
    # video's frames); recompute it with the F - L missing frames repeating the last frame (CONTRACT §1).
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


class PriorPolicy:
    """Prior-guided sampling (SPEC §1.4): t ~ softmax(gamma_s * prior) from epoch 0; never updated.

    Example:
        >>> import torch
        >>> p = PriorPolicy([[0, 0, 0, 9, 9, 0], [1.0]], clip_len=2, gamma_s=0.0)
        >>> p.prior[0]
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
        self.gamma_s = _check_gamma(gamma_s)
        values, num_positions = clip_prior(frame_scores, clip_len)
        self.prior = ScoreTable(num_positions, clip_len)
        self.prior.values.copy_(values)

    @classmethod
    def from_clip_prior(cls, prior: Sequence, clip_len: int, gamma_s: float = 1.0) -> "PriorPolicy":
        """Build from a clip-level prior: one 1-D sequence of N_v finite values per video."""
        gamma_s = _check_gamma(gamma_s)
        parts = [torch.as_tensor(p, dtype=torch.float32).reshape(-1) for p in prior]
        n = as_num_positions([p.numel() for p in parts], "clip prior lengths")
        flat = torch.cat(parts)
        bad = (~torch.isfinite(flat)).nonzero().flatten()
        if bad.numel():
            off = _offsets(n)
            v = int(torch.searchsorted(off, bad[:1], right=True)[0]) - 1
            raise ValueError(f"clip prior of video {v} has a non-finite value ({bad.numel()} in all)")
        self = cls.__new__(cls)
        self.gamma_s = gamma_s
        self.prior = ScoreTable(n, clip_len)
        self.prior.values.copy_(flat)
        return self

    @property
    def num_positions(self) -> Tensor:
        return self.prior.num_positions

    @property
    def num_videos(self) -> int:
        return self.prior.num_videos

    def phase(self, epoch: int) -> Phase:
        _check_epoch(epoch)
        return Phase.EXPLOITATION

    def starts(self, epoch: int, generator: torch.Generator | None = None) -> Tensor:
        _check_epoch(epoch)
        return self.prior.sample(self.gamma_s, generator)

    def update(self, epoch: int, video_idx, start, score) -> dict:
        _check_epoch(epoch)
        return _ignored(self.num_positions, video_idx, start, score, "PriorPolicy.update")

    def entropy(self, epoch: int) -> Tensor:
        _check_epoch(epoch)
        return self.prior.entropy(self.gamma_s)

    def probabilities(self, v: int, epoch: int) -> Tensor:
        v = _check_video(v, self.num_videos)
        return self.prior.probabilities(v, self.gamma_s)

    def state_dict(self) -> dict:
        # The prior is fixed data, but saving it lets a resume check that it is the same prior.
        return {"prior": self.prior.state_dict(), "gamma_s": self.gamma_s}

    def load_state_dict(self, state: dict) -> None:
        if not torch.equal(torch.as_tensor(state["prior"]["values"]), self.prior.values):
            raise ValueError("PriorPolicy.load_state_dict: the checkpoint's clip prior differs from this "
                             "policy's (other frame scores or clip_len); build it from the same manifest")
        if float(state["gamma_s"]) != self.gamma_s:
            raise ValueError(f"PriorPolicy.load_state_dict: checkpoint gamma_s {state['gamma_s']} != {self.gamma_s}")


class ReinforcePolicy:
    """REINFORCE baseline of seed Fig. S.2 (SPEC §1.5): per-video logits theta, t ~ softmax(theta).

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
        >>> p.theta[0]
        tensor([-0.5000,  1.5000, -0.5000, -0.5000])

    Args:
        num_positions: N_v per video, [V].
        lr: alpha > 0, step size on theta.
        baseline_momentum: m in [0, 1).
        seed: accepted for a constructor signature shared with the other TSS policies; REINFORCE draws
            nothing outside the sampler's per-epoch generator, so it does not use it.
    """

    def __init__(self, num_positions: IntsLike, lr: float = 1.0, baseline_momentum: float = 0.9, seed: int = 0):
        if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not math.isfinite(lr) or lr <= 0:
            raise ValueError(f"lr must be a finite number > 0, got {lr!r}")
        if isinstance(baseline_momentum, bool) or not isinstance(baseline_momentum, (int, float)) \
                or not 0 <= baseline_momentum < 1:
            raise ValueError(f"baseline_momentum must be in [0, 1), got {baseline_momentum!r}")
        self.lr = float(lr)
        self.baseline_momentum = float(baseline_momentum)
        self.seed = seed
        self.theta = ScoreTable(num_positions, 1)  # flat logits; clip_len unused
        V = self.theta.num_videos
        self.baseline = torch.zeros(V, dtype=torch.float32)
        self.seen = torch.zeros(V, dtype=torch.bool)

    @property
    def num_positions(self) -> Tensor:
        return self.theta.num_positions

    @property
    def num_videos(self) -> int:
        return self.theta.num_videos

    def phase(self, epoch: int) -> Phase:
        _check_epoch(epoch)
        return Phase.EXPLOITATION

    def starts(self, epoch: int, generator: torch.Generator | None = None) -> Tensor:
        _check_epoch(epoch)
        return self.theta.sample(1.0, generator)

    def update(self, epoch: int, video_idx, start, score) -> dict:
        _check_epoch(epoch)
        what = "ReinforcePolicy.update"
        vid, st, sc = check_records(self.num_positions, video_idx, start, score, what)
        vid, st, sc, _, nbad = drop_nonfinite(vid, st, sc, [], what)
        m, lens, off, theta = self.baseline_momentum, self.num_positions, self.theta.offsets, self.theta.values
        rounds = 0
        for idx in record_rounds(vid):
            rounds += 1
            v, t, f = vid[idx], st[idx], sc[idx]
            seen = self.seen[v]
            base = torch.where(seen, self.baseline[v], f)
            coef = self.lr * (f - base)                                     # reward * lr, [R]
            self.baseline[v] = torch.where(seen, m * base + (1 - m) * f, f)
            self.seen[v] = True
            n = lens[v]
            if 2 * int(n.sum()) >= theta.numel():
                # Records cover most videos (the usual epoch): one chunked pass over the whole table,
                # theta_v -= coef_v * pi_v with coef = 0 for videos without a record in this round.
                coef_all = torch.zeros(self.num_videos, dtype=torch.float32)
                coef_all[v] = coef
                ws = _Workspace(off, "x", "tmp")
                for v0, v1 in ws.chunks:
                    a, b, ln, ids, x = _chunk_shifted(theta, off, 1.0, ws, v0, v1)
                    x.exp_()
                    scale = coef_all[v0:v1] / _seg_reduce(x, "sum", ln, ids)      # coef_v / Z_v
                    theta[a:b].sub_(x.mul_(_seg_bcast(scale, ln, ids, ws.tmp[:b - a])))
                theta.index_put_((off[v] + t,), coef, accumulate=True)          # + coef_v at t (one per video)
                continue
            # Few records: ragged expansion of just their videos' segments, in chunks.
            for lo, hi in _video_chunks(_offsets(n)):
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
        return {"applied": int(vid.numel()), "nonfinite": nbad, "rounds": rounds, "ignored": 0}

    def entropy(self, epoch: int) -> Tensor:
        _check_epoch(epoch)
        return self.theta.entropy(1.0)

    def probabilities(self, v: int, epoch: int) -> Tensor:
        v = _check_video(v, self.num_videos)
        return self.theta.probabilities(v, 1.0)

    def state_dict(self) -> dict:
        return {"theta": self.theta.state_dict(), "baseline": self.baseline.clone(), "seen": self.seen.clone(),
                "lr": self.lr, "baseline_momentum": self.baseline_momentum}

    def load_state_dict(self, state: dict) -> None:
        for k in ("lr", "baseline_momentum"):
            if float(state[k]) != getattr(self, k):
                raise ValueError(f"ReinforcePolicy.load_state_dict: checkpoint {k} {state[k]} != {getattr(self, k)}")
        base = torch.as_tensor(state["baseline"], dtype=torch.float32)
        if base.shape != self.baseline.shape:
            raise ValueError(f"ReinforcePolicy.load_state_dict: checkpoint has {base.numel()} videos, this policy "
                             f"{self.baseline.numel()}")
        self.theta.load_state_dict(state["theta"])
        self.baseline.copy_(base)
        self.seen.copy_(torch.as_tensor(state["seen"], dtype=torch.bool))
