"""Small collective helpers for the Lightning glue: gather per-rank record tensors of different lengths.

Only the callback (glue) imports this module; the pure sampling math never does. Collectives go through
``trainer.strategy.all_gather`` (STYLE: prefer the framework's collective over raw ``torch.distributed``), so
the same code runs on one process (no collective at all), DDP/gloo on CPU and DDP/NCCL on GPU.

Record order. Each rank holds its records in the order it met them (its local ordinal ``i``). The gathered
records are returned sorted by ``(i, rank)``, i.e. global position ``i * world_size + rank``: that is the
global-plan order of a sampler that deals one plan to the ranks round-robin, as
``torch.utils.data.DistributedSampler`` does (``plan[rank::world_size]``). Padding duplicates that such a
sampler appends at the end of the plan therefore come after their originals (``ClipSampler`` does the
same: ``plan[rank::num_replicas]``, padded by repeating the first videos).
"""
from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import Tensor

__all__ = ["gather_records"]


def _world_size(strategy: Any) -> int:
    return int(getattr(strategy, "world_size", 1) or 1)


def gather_records(strategy: Any, tensors: Sequence[Tensor]) -> tuple[list[Tensor], Tensor, Tensor]:
    """Gather 1-D-leading record tensors of this rank's (possibly different) length from every rank.

    Args:
        strategy: ``trainer.strategy`` (anything with ``world_size``, ``root_device`` and ``all_gather``).
        tensors: tensors ``[n_local, ...]`` sharing their first dimension (e.g. ``video_idx`` int64 ``[n]``,
            ``start`` int64 ``[n]``, ``score`` float32 ``[n]``). ``n_local`` may differ between ranks and be 0.

    Returns:
        ``(gathered, rank, ordinal)``: ``gathered[j]`` holds every rank's ``tensors[j]`` concatenated in
        global-plan order (see module docstring), on the CPU with its dtype kept; ``rank`` and ``ordinal`` are
        int64 ``[n_total]``: the rank each record came from and its position in that rank's list.
        Every rank returns the same tensors.
    """
    tensors = [t.detach() for t in tensors]
    if not tensors:
        raise ValueError("gather_records needs at least one tensor to gather")
    n = tensors[0].shape[0]
    for t in tensors:
        if t.shape[0] != n:
            raise ValueError(
                f"gather_records: all tensors must share their first dimension, got {[tuple(t.shape) for t in tensors]}"
            )
    world = _world_size(strategy)
    if world == 1:
        out = [t.cpu() for t in tensors]
        return out, torch.zeros(n, dtype=torch.long), torch.arange(n, dtype=torch.long)

    device = getattr(strategy, "root_device", torch.device("cpu"))
    sizes = strategy.all_gather(torch.tensor([n], dtype=torch.long, device=device)).reshape(world).cpu()
    n_max = int(sizes.max())
    gathered = []
    for t in tensors:
        # all_gather needs equal shapes on all ranks: pad to the longest rank, trim afterwards.
        padded = torch.zeros((n_max,) + tuple(t.shape[1:]), dtype=t.dtype, device=device)
        padded[:n] = t.to(device)
        g = strategy.all_gather(padded).reshape((world, n_max) + tuple(t.shape[1:])).cpu()
        gathered.append(g)
    # valid[r, i] = rank r has an i-th record. Transposing to [n_max, world] before masking lists records
    # in (ordinal, rank) order = global-plan order for round-robin shards.
    valid = torch.arange(n_max).unsqueeze(0) < sizes.unsqueeze(1)  # [world, n_max]
    valid_t = valid.t()
    out = [g.transpose(0, 1)[valid_t] for g in gathered]
    rank = torch.arange(world).unsqueeze(0).expand(n_max, world)[valid_t]
    ordinal = torch.arange(n_max).unsqueeze(1).expand(n_max, world)[valid_t]
    return out, rank, ordinal
