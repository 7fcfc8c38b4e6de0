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

# Temporaries are built for at most this many flat elements at a time (~1M -> ~8 MB of int64). Chunks that
# fit in cache: at 1<<24 the epoch plan took 1.5x and the hard fill 2.0x the CPU time of a minimal
# implementation of the same math (benchmarks/sampler.py, 200k videos x 285 positions); at 1<<20 0.98x / 1.16x,
# and the ragged, prior and REINFORCE paths 25-60% less.
_CHUNK_ELEMS = 1 << 20
_BLOCK = 32  # block length of the two-level prefix sum in segment_softmax_sample

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


class _Workspace:
    """Per-call buffers for chunked segment ops, reused by every chunk.

    Fresh multi-MB temporaries on every chunk cost page faults that dominate these memory-bound ops.
    """

    def __init__(self, offsets: Tensor, *names: str):
        self.chunks = list(_video_chunks(offsets))
        cap = max(int(offsets[v1] - offsets[v0]) for v0, v1 in self.chunks)
        self.cap = -(-cap // _BLOCK) * _BLOCK
        self.ids = torch.empty(self.cap, dtype=torch.int32)
        for name in names:
            setattr(self, name, torch.empty(self.cap, dtype=torch.float32))


def _seg_ids(lengths: Tensor, starts: Tensor, ids_buf: Tensor) -> Tensor | None:
    """int32 segment id of every element of a chunk (None when all segments have the same length:
    the chunk is then a 2-D [segments, length] view and needs no ids)."""
    if int(lengths.min()) == int(lengths.max()):
        return None
    ids = ids_buf[:int(lengths.sum())]
    ids.zero_()
    ids[starts[1:]] = 1  # marker at each segment start + cumulative sum = segment id
    ids.cumsum_(0)
    return ids


def _seg_reduce(x: Tensor, op: str, lengths: Tensor, ids: Tensor | None) -> Tensor:
    if ids is None:
        x2 = x.view(lengths.numel(), -1)
        return x2.amax(1) if op == "max" else x2.sum(1)
    return torch.segment_reduce(x, op, lengths=lengths)


def _seg_bcast(per_seg: Tensor, lengths: Tensor, ids: Tensor | None, out: Tensor) -> Tensor:
    """out[j] = per_seg[segment of j]."""
    if ids is None:
        out.view(lengths.numel(), -1).copy_(per_seg[:, None])
    else:
        torch.index_select(per_seg, 0, ids, out=out)
    return out


def _chunk_shifted(values: Tensor, offsets: Tensor, gamma: float, ws: _Workspace, v0: int, v1: int):
    """x = gamma * (w - segment max of w) for one chunk, in ws.x; returns (a, b, lengths, ids, x).

    gamma >= 0, so max(gamma * w) = gamma * max(w): the max is taken on the raw table (no extra pass).
    """
    a, b = int(offsets[v0]), int(offsets[v1])
    n = b - a
    lengths = offsets[v0 + 1:v1 + 1] - offsets[v0:v1]
    ids = _seg_ids(lengths, offsets[v0:v1] - a, ws.ids)
    w = values[a:b]
    x = ws.x[:n]
    if ids is None:
        w2 = w.view(lengths.numel(), -1)
        torch.sub(w2, w2.amax(1, keepdim=True), out=x.view(lengths.numel(), -1))
    else:
        torch.sub(w, _seg_bcast(torch.segment_reduce(w, "max", lengths=lengths), lengths, ids, ws.tmp[:n]), out=x)
    if gamma != 1.0:
        x.mul_(gamma)
    return a, b, lengths, ids, x


def segment_softmax(values: Tensor, offsets: Tensor, gamma: float = 1.0) -> Tensor:
    """softmax(gamma * values) within each segment [offsets[v], offsets[v+1]); float32 [P]."""
    out = torch.empty_like(values, dtype=torch.float32)
    ws = _Workspace(offsets, "x", "tmp")
    for v0, v1 in ws.chunks:
        a, b, lengths, ids, x = _chunk_shifted(values, offsets, gamma, ws, v0, v1)
        x.exp_()
        z = _seg_reduce(x, "sum", lengths, ids)
        torch.div(x, _seg_bcast(z, lengths, ids, ws.tmp[:b - a]), out=out[a:b])
    return out


def segment_softmax_entropy(values: Tensor, offsets: Tensor, gamma: float = 1.0) -> Tensor:
    """Entropy (nats) of softmax(gamma * segment) for every segment: float32 [V].

    H = log Z - sum(e * x) / Z with x = gamma * w - segment max (so Z >= 1 and nothing overflows).
    """
    V = offsets.numel() - 1
    out = torch.empty(V, dtype=torch.float32)
    ws = _Workspace(offsets, "x", "tmp")
    for v0, v1 in ws.chunks:
        a, b, lengths, ids, x = _chunk_shifted(values, offsets, gamma, ws, v0, v1)
        e = torch.exp(x, out=ws.tmp[:b - a])
        z = _seg_reduce(e, "sum", lengths, ids).to(torch.float64)
        ex = _seg_reduce(x.mul_(e), "sum", lengths, ids).to(torch.float64)
        out[v0:v1] = (torch.log(z) - ex / z).to(torch.float32)
    return out


def segment_softmax_sample(values: Tensor, offsets: Tensor, gamma: float,
                           generator: torch.Generator | None = None) -> Tensor:
    """Draw one index per segment from softmax(gamma * segment): int64 [V], each in [0, N_v).

    Inverse-CDF sampling, vectorised over videos, in chunks of about ``_CHUNK_ELEMS`` positions:

    1. x = gamma * w minus each segment's max (exp never overflows; every segment's mass is >= 1);
    2. p = exp(x) and a two-level prefix sum in float64: the masses of blocks of 32 positions and their
       cumulative sum (P / 32 values), so the prefix at position j is ``block_prefix[j // 32]`` plus a sum
       of at most 32 terms of j's block -- no full-length cumulative sum is ever written;
    3. one uniform u per video, target = prefix(segment start - 1) + u * segment mass, the block holding
       it (``searchsorted`` over block prefixes) and, inside that block only, the smallest j whose
       prefix exceeds the target. Zero-probability positions (exp underflow) can never be chosen.

    Sums over more than 32 terms are float64 (block prefixes reach ~P); sums inside a block are float32
    (<= 32 terms, each <= 1: error ~1e-6 against a segment mass >= 1), so probabilities are exact to
    ~1e-5 or better. ``generator`` is used by exactly
    one ``torch.rand(V)`` call: the result is a deterministic function of its state. ``gamma = 0`` is exactly
    uniform (no table read).
    """
    lengths_all = offsets[1:] - offsets[:-1]
    V = lengths_all.numel()
    u = torch.rand(V, generator=generator, dtype=torch.float64)
    if gamma == 0:
        return torch.minimum((u * lengths_all).to(torch.int64), lengths_all - 1)
    out = torch.empty(V, dtype=torch.int64)
    ws = _Workspace(offsets, "x", "tmp")
    cols = torch.arange(_BLOCK)
    for v0, v1 in ws.chunks:
        a, b, lengths, ids, x = _chunk_shifted(values, offsets, gamma, ws, v0, v1)
        n = b - a
        nb = -(-n // _BLOCK)
        s_loc = offsets[v0:v1] - a                         # first position of each segment, chunk-local
        e_loc = s_loc + lengths                            # exclusive end
        x.exp_()
        ws.x[n:nb * _BLOCK].zero_()                        # padding of the last block: probability 0
        xb = ws.x[:nb * _BLOCK].view(nb, _BLOCK)
        tot = xb.sum(1).to(torch.float64)                  # block masses (32 terms: float32 is enough)
        incl = torch.cumsum(tot, 0)                        # float64 prefix over blocks
        excl = incl - tot

        def prefix(j: Tensor) -> Tensor:                   # inclusive prefix of p at chunk-local positions j
            blk = j // _BLOCK
            part = torch.where(cols <= (j - blk * _BLOCK)[:, None], xb[blk], 0.0).sum(1).to(torch.float64)
            return excl[blk] + part

        before = torch.where(s_loc > 0, prefix(torch.clamp(s_loc - 1, min=0)), 0.0)
        target = before + u[v0:v1] * (prefix(e_loc - 1) - before)
        blk = torch.searchsorted(incl, target, right=True)  # first block whose prefix exceeds the target
        blk = torch.minimum(torch.maximum(blk, s_loc // _BLOCK), (e_loc - 1) // _BLOCK)
        row = torch.cumsum(xb[blk], 1)                     # in-block prefix of the chosen blocks only
        j = blk * _BLOCK + (row <= (target - excl[blk]).to(torch.float32)[:, None]).sum(1)
        # u < 1, but rounding may put the target on the segment's last prefix: clamp into the segment.
        j = torch.minimum(torch.maximum(j, s_loc), e_loc - 1)
        out[v0:v1] = j - s_loc
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
    """occurrence[k] = how many earlier records (in the given order) have the same video: int64 [R]."""
    occ = torch.zeros_like(vid)
    if vid.numel() == 0:
        return occ
    counts = torch.bincount(vid)
    if int(counts.max()) <= 1:  # the usual case: no video twice, no sort needed
        return occ
    dup = (counts[vid] > 1).nonzero().flatten()  # only the repeated videos' records (DDP padding: few)
    sub = vid[dup]
    order = torch.sort(sub, stable=True).indices
    sv = sub[order]
    pos = torch.arange(sv.numel())
    new_group = torch.ones_like(sv, dtype=torch.bool)
    new_group[1:] = sv[1:] != sv[:-1]
    group_start = torch.cummax(torch.where(new_group, pos, torch.zeros_like(pos)), 0).values
    occ_sub = torch.empty_like(sub)
    occ_sub[order] = pos - group_start
    occ[dup] = occ_sub
    return occ


def record_rounds(vid: Tensor) -> Iterator[Union[Tensor, slice]]:
    """Yield the indices of the records of each round, round 0 first (``slice(None)`` if only one round).

    Record k is in round j when it is the j-th record of its video in the given order, so within a round
    every video occurs at most once (writes of one round never collide) and applying the rounds in turn
    applies each video's records in the given order.
    """
    occ = record_occurrence(vid)
    nrounds = int(occ.max()) + 1 if occ.numel() else 0
    if nrounds == 1:
        yield slice(None)
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
                per_chunk = max(1, _CHUNK_ELEMS // width)
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
