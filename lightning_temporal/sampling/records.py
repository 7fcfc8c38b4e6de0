"""Records of scored clips: ``(video_idx, start, score)``, three 1-D tensors with one entry per clip.

A record is what travels from training back to the sampler: the callback scores each trained clip (the
model's logit for the video's label, seed Eq. S.2's f(x_t)), gathers the records of every rank in global-plan
order and hands them to ``SamplingPolicy.update``, which writes them into its table. This module checks them
(:func:`check_records`), leaves out the non-finite ones with the one warning that names them
(:func:`drop_nonfinite`), and orders repeated videos into rounds (:func:`record_rounds`) so that one call can
apply several records of a video in the given order while each round is one vectorised scatter.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Iterator, Optional, Tuple, Union

import torch
from torch import Tensor

__all__ = ["ClipRecords", "logit_summary", "check_records", "drop_nonfinite", "record_occurrence", "record_rounds"]


@dataclass
class ClipRecords:
    """The scored clips of one epoch as a policy learns from them (:meth:`SamplingPolicy.learn`).

    Attributes (1-D, one entry per record, in global-plan order, non-finite scores already left out):
        video_idx: int64 ``[R]``.
        start: int64 ``[R]``, the clip position (start frame).
        score: float32 ``[R]``, f(x_t): the logit of the video's target label on the clean clip (seed Eq. S.2).
        predicted: int64 ``[R]``, the clip's predicted class (argmax of its logits), or None when the records
            carry no logits beyond the target's (e.g. given to ``update`` by hand).
        margin: float32 ``[R]``, the target logit minus the largest other logit (> 0: the clip is classified
            right; +inf with one class), or None as ``predicted``.
    """

    video_idx: Tensor
    start: Tensor
    score: Tensor
    predicted: Optional[Tensor] = None
    margin: Optional[Tensor] = None

    def __len__(self) -> int:
        return self.video_idx.numel()

    @property
    def correct(self) -> Optional[Tensor]:
        """bool ``[R]``: the clean clip is classified right (margin > 0), or None without margins."""
        return None if self.margin is None else self.margin > 0


def logit_summary(logits: Tensor, label: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
    """What a record keeps of a clip's logits: ``(score, predicted, margin)``.

    Args: ``logits`` float ``[N, C]``, ``label`` int ``[N]`` (the videos' target classes).
    Returns: float32 ``[N]`` target logit (seed Eq. S.2's f(x_t)), int64 ``[N]`` argmax class, float32 ``[N]``
    target logit minus the largest other logit (+inf when C = 1). Vectorised; no gradient.
    """
    logits = logits.detach().float()
    label = label.view(-1, 1).to(device=logits.device, dtype=torch.int64)
    score = logits.gather(1, label).squeeze(1)
    others = logits.scatter(1, label, float("-inf")).amax(1)
    return score, logits.argmax(1), score - others


def _first_bad(bad: Tensor) -> Optional[Tuple[int, int]]:
    """(index of the first True, how many are True), or None when none is."""
    idx = bad.nonzero().flatten()
    return (int(idx[0]), idx.numel()) if idx.numel() else None


def check_records(num_positions: Tensor, video_idx, start, score, what: str):
    """Check records against the per-video position counts ``num_positions`` int64 ``[V]``.

    Returns ``(video_idx int64 [R], start int64 [R], score float32 [R])``. Raises ``ValueError`` (prefixed with
    ``what``) for shapes that differ, non-integer indices, a video index outside ``0..V-1`` or a start outside
    its video's clip positions ``0..N_v-1``, naming the first such record. Non-finite scores pass (see
    :func:`drop_nonfinite`).
    """
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
        num_videos = num_positions.numel()
        bad = _first_bad((vid < 0) | (vid >= num_videos))
        if bad:
            k, count = bad
            raise ValueError(f"{what}: video_idx must be in 0..{num_videos - 1} (the table's videos), got "
                             f"{int(vid[k])} in record {k} ({count} such record(s))")
        n = num_positions[vid]
        bad = _first_bad((st < 0) | (st >= n))
        if bad:
            k, count = bad
            raise ValueError(f"{what}: start must be in 0..{int(n[k]) - 1} (the clip positions of video "
                             f"{int(vid[k])}), got {int(st[k])} in record {k} ({count} such record(s))")
    return vid, st, sc


def drop_nonfinite(vid: Tensor, st: Tensor, sc: Tensor, what: str, *extra: Tensor):
    """Leave out the records whose score is NaN or inf, with one ``RuntimeWarning`` that counts them and names
    their videos (they are never written into a table).

    ``extra``: further per-record tensors ``[R]`` filtered the same way. Returns
    ``(vid, st, sc, extra, count)`` with ``extra`` a tuple and ``count`` the number left out.
    """
    finite = torch.isfinite(sc)
    nbad = int((~finite).sum())
    if nbad:
        videos = vid[~finite].unique().tolist()
        shown = ", ".join(map(str, videos[:10])) + (", ..." if len(videos) > 10 else "")
        warnings.warn(f"{what}: {nbad} non-finite clip score(s) (NaN/inf) were not written into the tables, from "
                      f"video(s) [{shown}]; check the model's logits (diverging loss, fp16 overflow)",
                      RuntimeWarning, stacklevel=3)
        vid, st, sc = vid[finite], st[finite], sc[finite]
        extra = tuple(e[finite] for e in extra)
    return vid, st, sc, tuple(extra), nbad


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
