"""Segment kernels: pure functions over many ragged per-video vectors stored flat (the functional side of
:class:`~lightning_temporal.sampling.table.ScoreTable`, as torchmetrics keeps ``functional/`` beside its classes).

Layout. The vectors of V videos lie end to end in one 1-D tensor ``values`` of length P = sum_v N_v; int64
``offsets`` ``[V + 1]`` mark them: video v owns ``values[offsets[v]:offsets[v + 1]]`` (its *segment*, N_v >= 1
entries). Score tables (seed Eq. S.2), REINFORCE logits and clip priors all use it.

Every function is vectorised over videos. The only Python loops are over *chunks* of consecutive videos of
about ``CHUNK_ELEMS`` positions (:func:`video_chunks`), which bound the memory of temporaries; a
:class:`Workspace` holds the buffers that every chunk reuses. Inside a chunk, segments of equal length are
handled as a 2-D ``[segments, length]`` view (no segment ids at all); ragged ones through
``torch.segment_reduce`` and an int32 segment id per element (:func:`segment_ids`).

Functions: :func:`as_num_positions` (checks per-video counts), :func:`segment_offsets`, :func:`video_chunks`,
:class:`Workspace`, :func:`segment_ids`, :func:`segment_reduce`, :func:`segment_broadcast`,
:func:`shifted_logits` (``gamma * (w - segment max)`` of one chunk), :func:`segment_softmax_entropy` and
:func:`segment_softmax_sample`.
"""
from __future__ import annotations

from typing import Callable, Iterator, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor

__all__ = [
    "CHUNK_ELEMS",
    "IntsLike",
    "as_num_positions",
    "segment_offsets",
    "video_chunks",
    "Workspace",
    "segment_ids",
    "segment_reduce",
    "segment_broadcast",
    "shifted_logits",
    "segment_softmax_entropy",
    "segment_softmax_sample",
]

#: Temporaries are built for at most this many flat elements at a time (~1M -> ~8 MB of int64). Chunks that
# fit in cache: at 1<<24 the epoch plan took 1.5x and the hard fill 2.0x the CPU time of a minimal
# implementation of the same math (benchmarks/sampler.py, 200k videos x 285 positions); at 1<<20 0.98x / 1.16x,
# and the ragged, prior and REINFORCE paths 25-60% less.
CHUNK_ELEMS = 1 << 20
_BLOCK = 32  # block length of the two-level prefix sum in segment_softmax_sample

IntsLike = Union[Sequence[int], Tensor]


def as_num_positions(num_positions: IntsLike, name: str = "num_positions") -> Tensor:
    """Check and convert per-video position counts to a 1-D int64 tensor ``[V]`` (every N_v >= 1).

    An int64 tensor is returned as it is (no copy). Raises ``ValueError`` naming the first video below 1.
    """
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


def segment_offsets(lengths: Tensor) -> Tensor:
    """int64 ``[V + 1]``: 0 followed by the cumulative sum of ``lengths`` ``[V]``."""
    off = torch.zeros(lengths.numel() + 1, dtype=torch.int64)
    torch.cumsum(lengths, 0, out=off[1:])
    return off


def video_chunks(offsets: Tensor, max_elems: Optional[int] = None) -> Iterator[Tuple[int, int]]:
    """Split videos 0..V-1 into consecutive ranges ``[v0, v1)`` of about ``max_elems`` positions each
    (default ``CHUNK_ELEMS``); a video longer than that is a chunk of its own.

    The loop runs over chunks (P / max_elems of them), not over videos.
    """
    max_elems = CHUNK_ELEMS if max_elems is None else max_elems
    V = offsets.numel() - 1
    v0 = 0
    while v0 < V:
        target = offsets[v0] + max_elems
        v1 = int(torch.searchsorted(offsets, target, right=True)) - 1  # last v1 with offsets[v1] <= target
        v1 = min(max(v1, v0 + 1), V)  # a single huge video still makes progress
        yield v0, v1
        v0 = v1


class Workspace:
    """Buffers reused by every chunk of one call over a table (``chunks``: the :func:`video_chunks` of it).

    ``ids`` int32 and one float32 buffer per name in ``names``, each as long as the largest chunk rounded up
    to whole blocks of ``_BLOCK``. Fresh multi-MB temporaries on every chunk cost page faults that dominate
    these memory-bound ops.
    """

    def __init__(self, offsets: Tensor, *names: str):
        self.chunks = list(video_chunks(offsets))
        cap = max(int(offsets[v1] - offsets[v0]) for v0, v1 in self.chunks)
        self.cap = -(-cap // _BLOCK) * _BLOCK
        self.ids = torch.empty(self.cap, dtype=torch.int32)
        for name in names:
            setattr(self, name, torch.empty(self.cap, dtype=torch.float32))


def segment_ids(lengths: Tensor, starts: Tensor, ids_buf: Tensor) -> Optional[Tensor]:
    """int32 segment id of every element of a chunk whose segments have ``lengths`` and chunk-local ``starts``,
    written into ``ids_buf``; None when all segments have the same length (the chunk is then a 2-D
    ``[segments, length]`` view and needs no ids)."""
    if int(lengths.min()) == int(lengths.max()):
        return None
    ids = ids_buf[:int(lengths.sum())]
    ids.zero_()
    ids[starts[1:]] = 1  # marker at each segment start + cumulative sum = segment id
    ids.cumsum_(0)
    return ids


def segment_reduce(x: Tensor, op: str, lengths: Tensor, ids: Optional[Tensor]) -> Tensor:
    """``op`` ("max" or "sum") of each segment of the chunk ``x``: ``[segments]``."""
    if ids is None:
        x2 = x.view(lengths.numel(), -1)
        return x2.amax(1) if op == "max" else x2.sum(1)
    return torch.segment_reduce(x, op, lengths=lengths)


def segment_broadcast(per_seg: Tensor, lengths: Tensor, ids: Optional[Tensor], out: Tensor) -> Tensor:
    """``out[j] = per_seg[segment of j]`` for every element j of the chunk; returns ``out``."""
    if ids is None:
        out.view(lengths.numel(), -1).copy_(per_seg[:, None])
    else:
        torch.index_select(per_seg, 0, ids, out=out)
    return out


def shifted_logits(values: Tensor, offsets: Tensor, gamma: float, ws: Workspace, v0: int, v1: int,
                   extrema: Optional[list] = None):
    """``x = gamma * (w - segment max of w)`` for the chunk of videos ``[v0, v1)``, written into ``ws.x``.

    Returns ``(a, b, lengths, ids, x)``: the chunk's flat range ``[a, b)``, its segment lengths, its segment
    ids (see :func:`segment_ids`) and ``x`` ``[b - a]``. ``gamma >= 0``, so max(gamma * w) = gamma * max(w): the
    max is taken on the raw table (no extra pass). ``ws`` needs the buffers ``x`` and ``tmp``. With
    ``extrema`` (a list), the chunk's minimum and maximum of ``w`` are appended to it as 0-d tensors (the
    maximum from the segment maxima, the minimum from one more read of the chunk while it is in cache).
    """
    a, b = int(offsets[v0]), int(offsets[v1])
    n = b - a
    lengths = offsets[v0 + 1:v1 + 1] - offsets[v0:v1]
    ids = segment_ids(lengths, offsets[v0:v1] - a, ws.ids)
    w = values[a:b]
    x = ws.x[:n]
    if ids is None:
        w2 = w.view(lengths.numel(), -1)
        top = w2.amax(1, keepdim=True)
        torch.sub(w2, top, out=x.view(lengths.numel(), -1))
    else:
        top = torch.segment_reduce(w, "max", lengths=lengths)
        torch.sub(w, segment_broadcast(top, lengths, ids, ws.tmp[:n]), out=x)
    if extrema is not None:
        extrema += [w.amin(), top.amax()]  # NaN propagates through both, as through torch.aminmax
    if gamma != 1.0:
        x.mul_(gamma)
    return a, b, lengths, ids, x


def _report_extrema(extrema: list, on_extrema: Optional[Callable[[float, float], None]]) -> None:
    """Call ``on_extrema(min, max)`` with the table's extrema gathered chunk by chunk (NaN if any value is)."""
    if on_extrema is not None and extrema:
        both = torch.stack(extrema).view(-1, 2)
        lo, hi = both[:, 0].amin(), both[:, 1].amax()
        on_extrema(float(lo), float(hi))


def segment_softmax_entropy(values: Tensor, offsets: Tensor, gamma: float = 1.0, *,
                            on_extrema: Optional[Callable[[float, float], None]] = None) -> Tensor:
    """Entropy (nats) of softmax(gamma * segment) for every segment: float32 ``[V]``.

    H = log Z - sum(e * x) / Z with x = gamma * w - segment max (so Z >= 1 and nothing overflows).
    ``on_extrema(min, max)``: called with the minimum and maximum of ``values`` (found chunk by chunk, no
    extra pass over the table) before the entropies are returned, e.g. to refuse a gamma that overflows.
    """
    V = offsets.numel() - 1
    out = torch.empty(V, dtype=torch.float32)
    ws = Workspace(offsets, "x", "tmp")
    extrema: Optional[list] = [] if on_extrema is not None else None
    for v0, v1 in ws.chunks:
        a, b, lengths, ids, x = shifted_logits(values, offsets, gamma, ws, v0, v1, extrema)
        e = torch.exp(x, out=ws.tmp[:b - a])
        z = segment_reduce(e, "sum", lengths, ids).to(torch.float64)
        ex = segment_reduce(x.mul_(e), "sum", lengths, ids).to(torch.float64)
        out[v0:v1] = (torch.log(z) - ex / z).to(torch.float32)
    _report_extrema(extrema, on_extrema)
    return out


def segment_softmax_sample(values: Tensor, offsets: Tensor, gamma: float,
                           generator: Optional[torch.Generator] = None, *,
                           on_extrema: Optional[Callable[[float, float], None]] = None) -> Tensor:
    """Draw one index per segment from softmax(gamma * segment): int64 ``[V]``, each in ``[0, N_v)``.

    Inverse-CDF sampling, vectorised over videos, in chunks of about ``CHUNK_ELEMS`` positions:

    1. x = gamma * w minus each segment's max (exp never overflows; every segment's mass is >= 1);
    2. p = exp(x) and a two-level prefix sum in float64: the masses of blocks of 32 positions and their
       cumulative sum (P / 32 values), so the prefix at position j is ``block_prefix[j // 32]`` plus a sum
       of at most 32 terms of j's block -- no full-length cumulative sum is ever written;
    3. one uniform u per video, target = prefix(segment start - 1) + u * segment mass, the block holding
       it (``searchsorted`` over block prefixes) and, inside that block only, the smallest j whose
       prefix exceeds the target. Zero-probability positions (exp underflow) can never be chosen.

    Sums over more than 32 terms are float64 (block prefixes reach ~P); sums inside a block are float32
    (<= 32 terms, each <= 1: error ~1e-6 against a segment mass >= 1), so probabilities are exact to
    ~1e-5 or better. ``generator`` is used by exactly one ``torch.rand(V)`` call: the result is a
    deterministic function of its state. ``gamma = 0`` is exactly uniform (no table read, ``on_extrema`` not
    called).

    ``on_extrema(min, max)``: called with the minimum and maximum of ``values``, gathered while each chunk is
    in cache (no extra pass over the table), after the draws and before they are returned; it may raise (the
    draws are then discarded; the generator has advanced).
    """
    lengths_all = offsets[1:] - offsets[:-1]
    V = lengths_all.numel()
    u = torch.rand(V, generator=generator, dtype=torch.float64)
    if gamma == 0:
        return torch.minimum((u * lengths_all).to(torch.int64), lengths_all - 1)
    out = torch.empty(V, dtype=torch.int64)
    ws = Workspace(offsets, "x", "tmp")
    cols = torch.arange(_BLOCK)
    extrema: Optional[list] = [] if on_extrema is not None else None
    for v0, v1 in ws.chunks:
        a, b, lengths, ids, x = shifted_logits(values, offsets, gamma, ws, v0, v1, extrema)
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

        # segments are contiguous: the prefix before segment k is the inclusive prefix at the end of segment k - 1
        # (the chunk's first segment starts at 0), so one prefix() call serves both ends
        end = prefix(e_loc - 1)
        before = torch.cat([end.new_zeros(1), end[:-1]])
        target = before + u[v0:v1] * (end - before)
        blk = torch.searchsorted(incl, target, right=True)  # first block whose prefix exceeds the target
        blk = torch.minimum(torch.maximum(blk, s_loc // _BLOCK), (e_loc - 1) // _BLOCK)
        row = torch.cumsum(xb[blk], 1)                     # in-block prefix of the chosen blocks only
        j = blk * _BLOCK + (row <= (target - excl[blk]).to(torch.float32)[:, None]).sum(1)
        # u < 1, but rounding may put the target on the segment's last prefix: clamp into the segment.
        j = torch.minimum(torch.maximum(j, s_loc), e_loc - 1)
        out[v0:v1] = j - s_loc
    _report_extrema(extrema, on_extrema)
    return out
