"""Per-video clip-score tables of a whole dataset, stored flat (seed Eq. S.2 of Ayral et al., supplementary).

All videos' tables live in one float32 tensor ``values`` of length P = sum_v N_v (4 bytes per clip
position) plus int64 ``offsets`` of length V+1 (video v owns ``values[offsets[v]:offsets[v+1]]``): the layout of
:mod:`lightning_temporal.sampling.segments`, whose kernels sample and measure the tables. Every operation here
is vectorised over records / videos; the only Python loops are over fixed-size chunks (to bound the memory of
temporaries) and over "rounds" of repeated videos (see :meth:`ScoreTable.interpolate`).
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

from lightning_temporal.checks import check_int, check_number
from lightning_temporal.sampling import segments
from lightning_temporal.sampling.records import check_records, drop_nonfinite, record_rounds
from lightning_temporal.sampling.segments import (
    IntsLike,
    as_num_positions,
    segment_offsets,
    segment_softmax_entropy,
    segment_softmax_sample,
)

__all__ = ["ScoreTable", "check_temperature", "check_temperature_range", "check_temperature_spread", "FLOAT32_MAX"]

#: the largest finite float32: γ · (score range) above it overflows the float32 tables
FLOAT32_MAX = float(torch.finfo(torch.float32).max)


def check_temperature(gamma, name: str = "gamma_s") -> float:
    """A sampling temperature as a float if it is a finite number in [0, 3.4e38] (float32's largest), else
    ``ValueError`` naming ``name``, the value and what is allowed. Above that, γ itself is inf in float32 and
    softmax(γ · w) is NaN at the best position."""
    g = check_number(name, gamma, minimum=0, hint="0 = uniform sampling, 1 = the seed's default")
    if g > FLOAT32_MAX:
        raise ValueError(f"{name} must be a finite number in [0, {FLOAT32_MAX:.4g}] (float32's largest: the "
                         f"tables are float32), got {gamma!r}: it overflows float32. For sampling the best clip "
                         "only, a large finite value such as 1e6 does")
    return g


def check_temperature_range(gamma: float, values: Tensor, name: str = "gamma_s") -> None:
    """``ValueError`` when γ times the spread of ``values`` (max - min) overflows float32: softmax(γ · w) would be
    computed from -inf - -inf = NaN (entropies NaN, draws from position 0). Names γ, the spread and the largest
    γ allowed for it. One pass over ``values`` (a min and a max)."""
    gamma = float(gamma)
    if gamma == 0 or values.numel() == 0:
        return
    lo, hi = torch.aminmax(values)
    check_temperature_spread(gamma, float(lo), float(hi), name)


def check_temperature_spread(gamma: float, lo: float, hi: float, name: str = "gamma_s") -> None:
    """:func:`check_temperature_range` for tables whose minimum ``lo`` and maximum ``hi`` are known (the sampling
    and entropy kernels find them chunk by chunk, so the check costs no pass of its own)."""
    gamma = float(gamma)
    spread = hi - lo
    if gamma == 0 or not math.isfinite(spread):
        return  # non-finite scores never reach a table (records.drop_nonfinite); nothing to bound here
    if gamma * spread > FLOAT32_MAX:
        raise ValueError(f"{name} = {gamma:.4g} times the score tables' spread (max - min = {spread:.4g}) overflows "
                         f"float32 ({FLOAT32_MAX:.4g}): softmax({name} * w) cannot be computed. Allowed: {name} <= "
                         f"{FLOAT32_MAX / spread:.4g} for these tables (1e6 already samples the best clip only)")


def _radius_per_record(radius, shape: torch.Size) -> Tensor:
    """``radius`` (an int or an int tensor, one entry per record) checked -> int64 ``shape``, each >= 0."""
    rad = torch.as_tensor(radius)
    if rad.is_floating_point() or rad.is_complex() or rad.dtype == torch.bool:
        raise ValueError(f"ScoreTable.fill: radius must be an int or an int tensor, got dtype {rad.dtype}")
    rad = rad.to(torch.int64)
    if rad.dim() == 0:
        rad = rad.expand(shape)
    elif rad.shape != shape:
        raise ValueError(f"ScoreTable.fill: radius must be a scalar or have one entry per record "
                         f"({tuple(shape)}), got shape {tuple(rad.shape)}")
    if rad.numel() and int(rad.min()) < 0:
        raise ValueError(f"ScoreTable.fill: radius must be >= 0, got {int(rad.min())}")
    return rad


class ScoreTable:
    """Clip-score tables w_x in R^{N_x} of all training videos, in one flat float32 tensor.

    Example:
        >>> import torch
        >>> table = ScoreTable([5, 3], clip_len=2)
        >>> table.interpolate(torch.tensor([0]), torch.tensor([2]), torch.tensor([4.0]))
        {'applied': 1, 'nonfinite': 0, 'rounds': 1}
        >>> table[0]
        tensor([0., 2., 4., 2., 0.])
        >>> _ = table.fill([1], [0], [1.0], radius=1)
        >>> table[1]
        tensor([1., 1., 0.])

    Args:
        num_positions: clip positions per video, N_v >= 1 (sequence of ints or int64 tensor [V]).
        clip_len: F, the clip length in frames (>= 1); sets the reach of Eq. S.2 (|i| < F).

    Memory: 4 bytes per clip position (``values``) + 8 bytes per video (``offsets``).

    Records (``video_idx``, ``start``, ``score``, 1-D, one entry per scored clip) are applied
    vectorised. When one call holds several records of the same video (e.g. the sampler padded its
    plan to a multiple of the number of ranks), they are applied **in the given order**: record k is
    in "round" j if it is the j-th record of its video in the call, and rounds are applied one after
    the other, each as one vectorised scatter. NaN/inf scores are never written: they are skipped,
    counted in the returned dict and reported with ``warnings.warn``.
    """

    def __init__(self, num_positions: IntsLike, clip_len: int):
        self.clip_len = check_int("clip_len", clip_len, minimum=1, hint="frames per clip")
        self.lengths = as_num_positions(num_positions)
        self.offsets = segment_offsets(self.lengths)
        self.values = torch.zeros(int(self.offsets[-1]), dtype=torch.float32)

    # ------------------------------------------------------------------ access
    @property
    def num_videos(self) -> int:
        return self.lengths.numel()

    @property
    def num_positions(self) -> Tensor:
        """N_v for every video: int64 [V]."""
        return self.lengths

    def __len__(self) -> int:
        return self.num_videos

    def __getitem__(self, v: int) -> Tensor:
        """Video v's scores: a float32 view [N_v] into the flat table (writes go through)."""
        v = int(v)
        if not 0 <= v < self.num_videos:
            raise IndexError(f"video index {v} out of range: the table holds {self.num_videos} videos "
                             f"(0..{self.num_videos - 1})")
        return self.values[int(self.offsets[v]):int(self.offsets[v + 1])]

    # ----------------------------------------------------------------- records
    def interpolate(self, video_idx, start, score, *, checked: bool = False) -> dict:
        """Seed Eq. S.2 for every record (v, t, f):

        for every i with |i| < F and 0 <= t+i < N_v:  w[t+i] += ((F - |i|) / F) * (f - w[t+i]).

        Args: ``video_idx`` int [R], ``start`` int [R] (0 <= t < N_v), ``score`` float [R]; ``checked``: the
        records come from :func:`~lightning_temporal.sampling.records.check_records` and hold finite scores only
        (``SamplingPolicy.update`` makes sure of both), so they are not checked again.
        Returns ``{"applied": records written, "nonfinite": records skipped, "rounds": rounds}``.
        """
        vid, st, sc, nbad = video_idx, start, score, 0
        if not checked:
            vid, st, sc = check_records(self.lengths, video_idx, start, score, "ScoreTable.interpolate")
            vid, st, sc, _, nbad = drop_nonfinite(vid, st, sc, "ScoreTable.interpolate")
        F = self.clip_len
        rel = torch.arange(-(F - 1), F, dtype=torch.int64)  # [2F-1]
        weight = (F - rel.abs()).to(torch.float32) / F       # [2F-1]
        rounds = 0
        per_chunk = max(1, segments.CHUNK_ELEMS // rel.numel())
        for idx in record_rounds(vid):
            rounds += 1
            v_r, t_r, f_r = vid[idx], st[idx], sc[idx]
            # Within a round every video occurs once, so windows of different records never overlap:
            # one gather + one scatter per chunk is exact, and the two groups below touch disjoint videos.
            inside = (t_r >= F - 1) & (t_r + F <= self.lengths[v_r])      # whole window inside the video
            for group, interior in ((inside.nonzero().flatten(), True), ((~inside).nonzero().flatten(), False)):
                for c in range(0, group.numel(), per_chunk):
                    k = group[c:c + per_chunk]
                    v, t, f = v_r[k], t_r[k], f_r[k]
                    if interior:
                        flat = (self.offsets[v] + t)[:, None] + rel           # R, 2F-1
                        wgt = weight.expand(k.numel(), -1)
                    else:
                        pos = t[:, None] + rel                                # R, 2F-1
                        ok = (pos >= 0) & (pos < self.lengths[v][:, None])
                        # Out-of-range entries are sent to the record's own centre with weight 1: they
                        # compute exactly the centre's new value from the same old value, so duplicate
                        # writes agree and the grid needs no boolean compaction.
                        flat = self.offsets[v][:, None] + torch.where(ok, pos, t[:, None])
                        wgt = torch.where(ok, weight, torch.ones((), dtype=torch.float32))
                    old = self.values[flat]
                    # lerp(old, f, w) = old + w * (f - old) in one fused kernel; exactly f where w = 1.
                    self.values[flat] = torch.lerp(old, f[:, None].expand_as(old), wgt)
        return {"applied": int(vid.numel()), "nonfinite": nbad, "rounds": rounds}

    def fill(self, video_idx, start, score, radius, *, checked: bool = False) -> dict:
        """Hard write (exploration phase of TSS): w[j] = f for every j in [t - r, t + r] ∩ [0, N_v - 1].

        Args: ``video_idx`` int [R], ``start`` int [R], ``score`` float [R], ``radius`` an int >= 0 or
        an int tensor [R] (one radius per record); ``checked`` as in :meth:`interpolate`. Returns the same counts
        as :meth:`interpolate`.
        """
        vid, st, sc, nbad = video_idx, start, score, 0
        if not checked:
            vid, st, sc = check_records(self.lengths, video_idx, start, score, "ScoreTable.fill")
        rad = _radius_per_record(radius, vid.shape)
        if not checked:
            vid, st, sc, (rad,), nbad = drop_nonfinite(vid, st, sc, "ScoreTable.fill", rad)
        rounds = 0
        for idx in record_rounds(vid):
            rounds += 1
            v_r, t_r, f_r, r_r = vid[idx], st[idx], sc[idx], rad[idx]
            if v_r.numel() == 0:
                continue
            rmax = int(r_r.max())
            lo = torch.clamp(t_r - r_r, min=0)
            hi = torch.minimum(t_r + r_r, self.lengths[v_r] - 1)
            n = hi - lo + 1
            width = 2 * rmax + 1
            if v_r.numel() * width <= 2 * int(n.sum()) + 1024:
                # Similar radii: a [R, 2r+1] grid; entries outside a record's window (or its video) point
                # at the record's own start and write the same value f, so duplicate writes agree.
                rel = torch.arange(-rmax, rmax + 1)
                per_chunk = max(1, segments.CHUNK_ELEMS // width)
                # Records whose full window [t - rmax, t + rmax] lies inside their video need no mask.
                inside = (r_r == rmax) & (t_r >= rmax) & (t_r + rmax < self.lengths[v_r])
                for group, interior in ((inside.nonzero().flatten(), True), ((~inside).nonzero().flatten(), False)):
                    for c in range(0, group.numel(), per_chunk):
                        k = group[c:c + per_chunk]
                        v, t, f, r = v_r[k], t_r[k], f_r[k], r_r[k]
                        if interior:
                            flat = (self.offsets[v] + t)[:, None] + rel
                        else:
                            # Entries outside a record's window (or video) point at the record's own start
                            # and write the same f, so duplicate writes agree.
                            pos = t[:, None] + rel
                            ok = (rel.abs() <= r[:, None]) & (pos >= 0) & (pos < self.lengths[v][:, None])
                            flat = self.offsets[v][:, None] + torch.where(ok, pos, t[:, None])
                        self.values[flat] = f[:, None].expand_as(flat)
            else:
                # Very different radii: ragged expansion of the intervals (memory = positions written).
                first = self.offsets[v_r] + lo
                rec = torch.repeat_interleave(torch.arange(v_r.numel()), n)
                seg_start = torch.cumsum(n, 0) - n
                flat = first[rec] + (torch.arange(rec.numel()) - seg_start[rec])
                self.values[flat] = f_r[rec]
        return {"applied": int(vid.numel()), "nonfinite": nbad, "rounds": rounds}

    # ------------------------------------------------------------- sampling
    def sample(self, gamma: float, generator: torch.Generator | None = None) -> Tensor:
        """One start per video from softmax(gamma * w_v): int64 [V] (see :func:`segment_softmax_sample`).
        ``ValueError`` when gamma times the tables' spread overflows float32 (:func:`check_temperature_range`)."""
        return segment_softmax_sample(self.values, self.offsets, gamma, generator,
                                      on_extrema=lambda lo, hi: check_temperature_spread(gamma, lo, hi))

    def entropy(self, gamma: float) -> Tensor:
        """Entropy (nats) of softmax(gamma * w_v) for every video: float32 [V]; ``ValueError`` as :meth:`sample`."""
        return segment_softmax_entropy(self.values, self.offsets, gamma,
                                       on_extrema=lambda lo, hi: check_temperature_spread(gamma, lo, hi))

    def probabilities(self, v: int, gamma: float) -> Tensor:
        """softmax(gamma * w_v) of one video: float32 [N_v] (for plots)."""
        return torch.softmax(self[v].to(torch.float64) * gamma, 0).to(torch.float32)

    # ----------------------------------------------------------- checkpoint
    def state_dict(self) -> dict:
        return {"values": self.values.clone(), "offsets": self.offsets.clone(), "clip_len": self.clip_len}

    def load_state_dict(self, state: dict) -> None:
        off = torch.as_tensor(state["offsets"])
        if not torch.equal(off, self.offsets):
            raise ValueError("ScoreTable.load_state_dict: the checkpoint's tables were built for other "
                             f"videos ({off.numel() - 1} videos, {int(off[-1])} positions) than this table "
                             f"({self.num_videos} videos, {int(self.offsets[-1])} positions); rebuild the "
                             "table from the same training manifest")
        if int(state["clip_len"]) != self.clip_len:
            raise ValueError(f"ScoreTable.load_state_dict: checkpoint clip_len {state['clip_len']} != "
                             f"{self.clip_len}")
        vals = torch.as_tensor(state["values"], dtype=torch.float32)
        if vals.shape != self.values.shape:
            raise ValueError(f"ScoreTable.load_state_dict: values shape {tuple(vals.shape)} != "
                             f"{tuple(self.values.shape)}")
        self.values.copy_(vals)

    def __repr__(self) -> str:
        return (f"ScoreTable(videos={self.num_videos}, positions={int(self.offsets[-1])}, "
                f"clip_len={self.clip_len})")
