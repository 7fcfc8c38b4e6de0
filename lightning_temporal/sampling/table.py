"""Per-video clip-score tables of a whole dataset, stored flat (SPEC §1.2-1.3, seed Eq. S.2).

All videos' tables live in one float32 tensor ``values`` of length P = sum_v N_v (4 bytes per clip
position) plus int64 ``offsets`` of length V+1 (video v owns ``values[offsets[v]:offsets[v+1]]``).
Every operation here is vectorised over records / videos; the only Python loops are over fixed-size
chunks (to bound the memory of temporaries) and over "rounds" of repeated videos (see
:meth:`ScoreTable.interpolate`).

The module also holds the ragged (segment) primitives that the policies share: softmax sampling
over each video's segment and per-segment entropy.
"""
from __future__ import annotations

import warnings
from typing import Iterator, Sequence, Union

import torch
from torch import Tensor

__all__ = [
    "ScoreTable",
    "as_num_positions",
    "segment_softmax_sample",
    "segment_softmax_entropy",
    "segment_softmax",
    "check_records",
    "drop_nonfinite",
    "record_rounds",
    "record_occurrence",
]

# Temporaries are built for at most this many flat elements at a time (~16M -> ~130 MB of int64).
_CHUNK_ELEMS = 1 << 24

IntsLike = Union[Sequence[int], Tensor]


def as_num_positions(num_positions: IntsLike, name: str = "num_positions") -> Tensor:
    """Check and convert per-video position counts to a 1-D int64 tensor [V] (every N_v >= 1)."""
    n = torch.as_tensor(num_positions)
    if n.dim() != 1 or n.numel() == 0:
        raise ValueError(f"{name} must be a non-empty 1-D sequence of per-video position counts, "
                         f"got shape {tuple(n.shape)}")
    if n.is_floating_point() or n.is_complex() or n.dtype == torch.bool:
        if not (n.is_floating_point() and torch.equal(n, n.round())):
            raise ValueError(f"{name} must hold integers, got dtype {n.dtype}")
    n = n.to(torch.int64)
    bad = (n < 1).nonzero().flatten()
    if bad.numel():
        v = int(bad[0])
        raise ValueError(f"{name}[{v}] = {int(n[v])}: every video needs at least 1 clip position "
                         f"(N = max(1, L - span + 1)); {bad.numel()} video(s) are < 1")
    return n


def _offsets(lengths: Tensor) -> Tensor:
    off = torch.zeros(lengths.numel() + 1, dtype=torch.int64)
    torch.cumsum(lengths, 0, out=off[1:])
    return off


def _video_chunks(offsets: Tensor, max_elems: int | None = None) -> Iterator[tuple[int, int]]:
    """Split videos 0..V-1 into consecutive ranges [v0, v1) of about ``max_elems`` positions each.

    The loop runs over chunks (P / max_elems of them), not over videos.
    """
    max_elems = _CHUNK_ELEMS if max_elems is None else max_elems
    V = offsets.numel() - 1
    v0 = 0
    while v0 < V:
        target = offsets[v0] + max_elems
        v1 = int(torch.searchsorted(offsets, target, right=True)) - 1  # last v1 with offsets[v1] <= target
        v1 = min(max(v1, v0 + 1), V)  # a single huge video still makes progress
        yield v0, v1
        v0 = v1


def segment_softmax(values: Tensor, offsets: Tensor, gamma: float = 1.0) -> Tensor:
    """softmax(gamma * values) within each segment [offsets[v], offsets[v+1]); float32 [P]."""
    out = torch.empty_like(values, dtype=torch.float32)
    for v0, v1 in _video_chunks(offsets):
        a, b = int(offsets[v0]), int(offsets[v1])
        lengths = offsets[v0 + 1:v1 + 1] - offsets[v0:v1]
        x = values[a:b].to(torch.float32) * gamma
        mx = torch.segment_reduce(x, "max", lengths=lengths)
        e = torch.exp(x - torch.repeat_interleave(mx, lengths))
        s = torch.segment_reduce(e, "sum", lengths=lengths)
        out[a:b] = e / torch.repeat_interleave(s, lengths)
    return out


def segment_softmax_entropy(values: Tensor, offsets: Tensor, gamma: float = 1.0) -> Tensor:
    """Entropy (nats) of softmax(gamma * segment) for every segment: float32 [V]."""
    V = offsets.numel() - 1
    out = torch.empty(V, dtype=torch.float32)
    for v0, v1 in _video_chunks(offsets):
        a, b = int(offsets[v0]), int(offsets[v1])
        lengths = offsets[v0 + 1:v1 + 1] - offsets[v0:v1]
        x = values[a:b].to(torch.float64) * gamma
        x = x - torch.repeat_interleave(torch.segment_reduce(x, "max", lengths=lengths), lengths)
        e = torch.exp(x)
        z = torch.segment_reduce(e, "sum", lengths=lengths)
        # H = log Z - sum(p * x) with x shifted so that max x = 0 (Z >= 1, no overflow).
        ex = torch.segment_reduce(e * x, "sum", lengths=lengths)
        out[v0:v1] = (torch.log(z) - ex / z).to(torch.float32)
    return out


def segment_softmax_sample(values: Tensor, offsets: Tensor, gamma: float,
                           generator: torch.Generator | None = None) -> Tensor:
    """Draw one index per segment from softmax(gamma * segment): int64 [V], each in [0, N_v).

    Inverse-CDF sampling, vectorised over videos: per-segment max (so exp never overflows and every
    segment's largest weight is exactly 1), exp, a float64 cumulative sum (float32 would lose the small
    weights of late segments in a sum over millions of positions), one uniform per video and one
    ``searchsorted``. The draws use ``generator`` only through one ``torch.rand(V)`` call, so the
    result is a deterministic function of the generator state. ``gamma = 0`` is exactly uniform.
    """
    lengths_all = offsets[1:] - offsets[:-1]
    V = lengths_all.numel()
    u = torch.rand(V, generator=generator, dtype=torch.float64)
    if gamma == 0:
        return torch.minimum((u * lengths_all).to(torch.int64), lengths_all - 1)
    out = torch.empty(V, dtype=torch.int64)
    for v0, v1 in _video_chunks(offsets):
        a, b = int(offsets[v0]), int(offsets[v1])
        lengths = lengths_all[v0:v1]
        x = values[a:b] * gamma  # float32
        mx = torch.segment_reduce(x, "max", lengths=lengths)
        x -= torch.repeat_interleave(mx, lengths)
        torch.exp_(x)
        cum = torch.cumsum(x, 0, dtype=torch.float64)  # inclusive
        del x
        local_end = offsets[v0 + 1:v1 + 1] - a  # exclusive end of each segment in the chunk
        local_start = offsets[v0:v1] - a
        seg_total_end = cum[local_end - 1]
        base = torch.zeros(v1 - v0, dtype=torch.float64)
        has_prev = local_start > 0
        base[has_prev] = cum[local_start[has_prev] - 1]
        target = base + u[v0:v1] * (seg_total_end - base)
        # smallest j with cum[j] > target: zero-probability positions can never be chosen.
        j = torch.searchsorted(cum, target, right=True)
        # u < 1, but base + u * total may round up to the segment's end: clamp into the segment.
        j = torch.minimum(torch.maximum(j, local_start), local_end - 1)
        out[v0:v1] = j - local_start
    return out


def check_records(num_positions: Tensor, video_idx, start, score, what: str):
    """Validate records against per-video position counts; returns (int64 [R], int64 [R], float32 [R])."""
    num_videos = num_positions.numel()
    vid = torch.as_tensor(video_idx)
    st = torch.as_tensor(start)
    sc = torch.as_tensor(score)
    if vid.dim() != 1 or st.shape != vid.shape or sc.shape != vid.shape:
        raise ValueError(f"{what}: video_idx, start and score must be 1-D with one entry per record, "
                         f"got shapes {tuple(vid.shape)}, {tuple(st.shape)}, {tuple(sc.shape)}")
    for name, t in (("video_idx", vid), ("start", st)):
        if t.is_floating_point() or t.is_complex() or t.dtype == torch.bool:
            raise ValueError(f"{what}: {name} must be an integer tensor, got dtype {t.dtype}")
    vid = vid.to(torch.int64)
    st = st.to(torch.int64)
    sc = sc.to(torch.float32)
    if vid.numel():
        bad = ((vid < 0) | (vid >= num_videos)).nonzero().flatten()
        if bad.numel():
            k = int(bad[0])
            raise ValueError(f"{what}: record {k} has video_idx {int(vid[k])}, outside the table's "
                             f"videos 0..{num_videos - 1} ({bad.numel()} such record(s))")
        n = num_positions[vid]
        bad = ((st < 0) | (st >= n)).nonzero().flatten()
        if bad.numel():
            k = int(bad[0])
            raise ValueError(f"{what}: record {k} (video {int(vid[k])}) has start {int(st[k])}, outside "
                             f"its positions 0..{int(n[k]) - 1} ({bad.numel()} such record(s))")
    return vid, st, sc


def drop_nonfinite(vid: Tensor, st: Tensor, sc: Tensor, extra: list, what: str):
    """Remove records whose score is NaN/inf, warn naming how many and which videos; returns (..., count)."""
    finite = torch.isfinite(sc)
    nbad = int((~finite).sum())
    if nbad:
        videos = vid[~finite].unique().tolist()
        shown = ", ".join(map(str, videos[:10])) + (", ..." if len(videos) > 10 else "")
        warnings.warn(f"{what}: {nbad} non-finite score(s) (NaN/inf) not written, from video(s) "
                      f"[{shown}]; check the model's logits (loss divergence, fp16 overflow)",
                      RuntimeWarning, stacklevel=4)
        vid, st, sc = vid[finite], st[finite], sc[finite]
        extra = [e[finite] if isinstance(e, Tensor) and e.dim() == 1 else e for e in extra]
    return vid, st, sc, extra, nbad

def record_occurrence(vid: Tensor) -> Tensor:
    """occurrence[k] = how many earlier records (in the given order) have the same video."""
    if vid.numel() == 0:
        return vid.clone()
    order = torch.sort(vid, stable=True).indices
    sv = vid[order]
    pos = torch.arange(vid.numel())
    new_group = torch.ones_like(sv, dtype=torch.bool)
    new_group[1:] = sv[1:] != sv[:-1]
    group_start = torch.cummax(torch.where(new_group, pos, torch.zeros_like(pos)), 0).values
    occ = torch.empty_like(vid)
    occ[order] = pos - group_start
    return occ

def record_rounds(vid: Tensor) -> Iterator[Tensor]:
    """Yield the indices of the records of each round, round 0 first.

    Record k is in round j when it is the j-th record of its video in the given order, so within a round
    every video occurs at most once (writes of one round never collide) and applying the rounds in turn
    applies each video's records in the given order.
    """
    occ = record_occurrence(vid)
    nrounds = int(occ.max()) + 1 if occ.numel() else 0
    if nrounds <= 1:
        if nrounds == 1:
            yield torch.arange(vid.numel())
        return
    for j in range(nrounds):  # normally 1 round; loops over duplicates only, never over videos
        yield (occ == j).nonzero().flatten()


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
        if isinstance(clip_len, bool) or not isinstance(clip_len, int) or clip_len < 1:
            raise ValueError(f"clip_len must be an int >= 1 (frames per clip), got {clip_len!r}")
        self.clip_len = int(clip_len)
        self.lengths = as_num_positions(num_positions)
        self.offsets = _offsets(self.lengths)
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

    def nbytes(self) -> int:
        """Bytes held by the table's tensors (values + offsets + lengths)."""
        return sum(t.numel() * t.element_size() for t in (self.values, self.offsets, self.lengths))

    # ----------------------------------------------------------------- records
    def _check_records(self, video_idx, start, score, what: str):
        return check_records(self.lengths, video_idx, start, score, what)

    def interpolate(self, video_idx, start, score) -> dict:
        """Seed Eq. S.2 for every record (v, t, f):

        for every i with |i| < F and 0 <= t+i < N_v:  w[t+i] += ((F - |i|) / F) * (f - w[t+i]).

        Args: ``video_idx`` int [R], ``start`` int [R] (0 <= t < N_v), ``score`` float [R].
        Returns ``{"applied": records written, "nonfinite": records skipped, "rounds": rounds}``.
        """
        vid, st, sc = self._check_records(video_idx, start, score, "ScoreTable.interpolate")
        vid, st, sc, _, nbad = drop_nonfinite(vid, st, sc, [], "ScoreTable.interpolate")
        F = self.clip_len
        rel = torch.arange(-(F - 1), F, dtype=torch.int64)  # [2F-1]
        weight = (F - rel.abs()).to(torch.float32) / F       # [2F-1]
        rounds = 0
        per_chunk = max(1, _CHUNK_ELEMS // rel.numel())
        for idx in record_rounds(vid):
            rounds += 1
            # Within a round every video occurs once, so windows of different records never overlap:
            # one gather + one scatter per chunk is exact.
            for c in range(0, idx.numel(), per_chunk):
                k = idx[c:c + per_chunk]
                v, t, f = vid[k], st[k], sc[k]
                pos = t[:, None] + rel[None, :]                        # R, 2F-1
                ok = (pos >= 0) & (pos < self.lengths[v][:, None])     # R, 2F-1
                flat = (self.offsets[v][:, None] + pos)[ok]
                wgt = weight.expand_as(pos)[ok]
                fv = f[:, None].expand_as(pos)[ok]
                old = self.values[flat]
                self.values[flat] = old + wgt * (fv - old)
        return {"applied": int(vid.numel()), "nonfinite": nbad, "rounds": rounds}

    def fill(self, video_idx, start, score, radius) -> dict:
        """Hard write (exploration, SPEC §1.2): w[j] = f for every j in [t - r, t + r] ∩ [0, N_v - 1].

        Args: ``video_idx`` int [R], ``start`` int [R], ``score`` float [R], ``radius`` an int >= 0 or
        an int tensor [R] (one radius per record). Returns the same counts as :meth:`interpolate`.
        """
        vid, st, sc = self._check_records(video_idx, start, score, "ScoreTable.fill")
        rad = torch.as_tensor(radius)
        if rad.is_floating_point() or rad.is_complex() or rad.dtype == torch.bool:
            raise ValueError(f"ScoreTable.fill: radius must be an int or an int tensor, got dtype {rad.dtype}")
        rad = rad.to(torch.int64)
        if rad.dim() == 0:
            rad = rad.expand(vid.shape)
        elif rad.shape != vid.shape:
            raise ValueError(f"ScoreTable.fill: radius must be a scalar or have one entry per record "
                             f"({tuple(vid.shape)}), got shape {tuple(rad.shape)}")
        if rad.numel() and int(rad.min()) < 0:
            raise ValueError(f"ScoreTable.fill: radius must be >= 0, got {int(rad.min())}")
        vid, st, sc, (rad,), nbad = drop_nonfinite(vid, st, sc, [rad], "ScoreTable.fill")
        rounds = 0
        for idx in record_rounds(vid):
            rounds += 1
            v, t, f, r = vid[idx], st[idx], sc[idx], rad[idx]
            lo = torch.clamp(t - r, min=0)
            hi = torch.minimum(t + r, self.lengths[v] - 1)
            n = hi - lo + 1
            # Ragged expansion of the intervals (memory = positions written, whatever the radii).
            first = self.offsets[v] + lo
            rec = torch.repeat_interleave(torch.arange(v.numel()), n)
            seg_start = torch.cumsum(n, 0) - n
            flat = first[rec] + (torch.arange(rec.numel()) - seg_start[rec])
            self.values[flat] = f[rec]
        return {"applied": int(vid.numel()), "nonfinite": nbad, "rounds": rounds}

    # ------------------------------------------------------------- sampling
    def sample(self, gamma: float, generator: torch.Generator | None = None) -> Tensor:
        """One start per video from softmax(gamma * w_v): int64 [V] (see :func:`segment_softmax_sample`)."""
        return segment_softmax_sample(self.values, self.offsets, gamma, generator)

    def entropy(self, gamma: float) -> Tensor:
        """Entropy (nats) of softmax(gamma * w_v) for every video: float32 [V]."""
        return segment_softmax_entropy(self.values, self.offsets, gamma)

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
