"""The record buffer of :class:`~lightning_temporal.callbacks.StochasticSoftmaxCallback`: this rank's clips of the
epoch in progress, how they are saved in a checkpoint, and their global-plan order.

A record is one scored clip: ``(video_idx, start, score, ordinal, predicted, margin)`` (see
:class:`~lightning_temporal.sampling.records.ClipRecords`); ``ordinal`` is the clip's item's place in this
rank's shard of the epoch's plan (extra scored positions of a video share the ordinal of its trained clip and
follow it).
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

__all__ = ["EpochRecords", "pending_state", "global_plan_order", "SCORED_FIELDS"]

#: the per-record fields of the scored records, in the order :meth:`EpochRecords.local` gives them
SCORED_FIELDS = ("video_idx", "start", "score", "ordinal", "predicted", "margin")
_DTYPES = (torch.long, torch.long, torch.float32, torch.long, torch.long, torch.float32)


def _complete(part: tuple) -> tuple:
    """A scored part with predicted / margin filled in (-1 / NaN) when it carries only the first four fields."""
    if len(part) == len(SCORED_FIELDS):
        return part
    n = part[0].shape[0]
    return tuple(part) + (torch.full((n,), -1, dtype=torch.long), torch.full((n,), float("nan")))


class EpochRecords:
    """This rank's records of the epoch in progress: every trained clip ``(video_idx, start)`` (``seen``) and the
    scored ones (``scored``, tuples of :data:`SCORED_FIELDS`)."""

    def __init__(self) -> None:
        self.reset()

    def reset(self, epoch: Optional[int] = None) -> None:
        self.seen: list = []       # (video_idx, start)
        self.scored: list = []     # SCORED_FIELDS tuples
        self.ordinal = 0           # this rank's sampler items met this epoch
        self.epoch = epoch         # the epoch these records belong to

    def add(self, vid: Tensor, start: Tensor, scored: Optional[tuple], n_skipped: int) -> Tensor:
        """Record a batch: its trained clips and, when scored, ``scored = (score, predicted, margin)``, each
        ``[n]``. Returns the ordinals given to the batch's items, int64 ``[n]``."""
        n = vid.shape[0]
        # Skipped (undecodable) items still took a place in this rank's shard: count them so the ordinals of
        # later items stay close to their plan positions (their order is what matters for determinism).
        ordinal = torch.arange(self.ordinal, self.ordinal + n, device=vid.device)
        self.ordinal += n + n_skipped
        if n:
            self.seen.append((vid, start))
            if scored is not None:
                score, predicted, margin = scored
                self.scored.append((vid, start, score, ordinal, predicted, margin))
        return ordinal

    def add_extra(self, vid: Tensor, start: Tensor, ordinal: Tensor, scored: tuple) -> None:
        """Record further scored positions (not trained) of items already added, with their items' ordinals."""
        if vid.numel():
            score, predicted, margin = scored
            self.scored.append((vid, start, score, ordinal, predicted, margin))

    def local(self) -> list:
        """9 flat CPU tensors: seen video/start, the scored :data:`SCORED_FIELDS`, [next ordinal]."""
        scored = [_complete(p) for p in self.scored]

        def cat(parts, j, dtype):
            return torch.cat([p[j].cpu().to(dtype) for p in parts]) if parts else torch.zeros(0, dtype=dtype)
        return [cat(self.seen, 0, torch.long), cat(self.seen, 1, torch.long),
                *[cat(scored, j, d) for j, d in enumerate(_DTYPES)],
                torch.tensor([self.ordinal], dtype=torch.long)]

    def take(self, pending: dict, rank: int) -> None:
        """Continue from the saved records of an unfinished epoch (:func:`pending_state`): this rank's part."""
        seen, scored = pending["seen"], pending["scored"]
        self.reset(int(pending["epoch"]))
        keep = seen["rank"] == rank
        if bool(keep.any()):
            self.seen = [(seen["video_idx"][keep], seen["start"][keep])]
        keep = scored["rank"] == rank
        if bool(keep.any()):
            self.scored = [_complete(tuple(scored[k][keep] for k in SCORED_FIELDS if k in scored))]
        self.ordinal = int(pending["next_ordinal"][rank if pending["world_size"] > 1 else 0])


def pending_state(parts: list, ranks: list, world_size: int, epoch: Optional[int]) -> dict:
    """The records of the epoch in progress as saved: ``parts`` as :meth:`EpochRecords.local` (9 tensors);
    ``next_ordinal`` int64 [world_size] is where each rank's ordinals continue; ``rank`` says whose each record
    is."""
    sv, st, *scored, nxt = parts
    return {"epoch": epoch, "world_size": world_size,
            "seen": {"video_idx": sv, "start": st, "rank": ranks[0]},
            "scored": {**dict(zip(SCORED_FIELDS, scored)), "rank": ranks[1]},
            "next_ordinal": nxt}


def global_plan_order(fields: dict, world: int) -> dict:
    """The scored records (``fields``: :data:`SCORED_FIELDS` and ``rank``, 1-D each) sorted by plan index
    ``ordinal * world + rank`` (``ClipSampler`` deals ``plan[r::world]``); stable, so the extra positions of an
    item stay after its trained clip."""
    order = torch.sort(fields["ordinal"] * world + fields["rank"], stable=True).indices
    return {k: v[order] for k, v in fields.items()}
