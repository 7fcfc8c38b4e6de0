"""Multiply-accumulates per clip of what actually ran (after SGS: each clip's own B').

Built on `torch.utils.flop_counter.FlopCounterMode`, which counts 2 FLOPs per multiply-accumulate of
convolutions, linear layers and matrix products (not of normalisation, activations or pooling, the same
convention as the published GMACs figures of 3D CNNs).
"""
from __future__ import annotations

from typing import List

import torch
from torch import Tensor, nn
from torch.utils.flop_counter import FlopCounterMode

from lightning_temporal.modes import eval_mode

__all__ = ["count_gmacs", "gmacs_per_clip"]


def gmacs_per_clip(model: nn.Module, clip: Tensor) -> List[float]:
    """GMACs (1e9 multiply-accumulates) of each clip of clip [N, C, T, H, W] (or one clip [C, T, H, W]).

    The clips are run one at a time, so a layer that adapts its temporal size (SGS) is counted on each clip's
    own B' rather than on the batch's padded size. The model runs in eval mode (BatchNorm on running
    statistics, as at inference) under `torch.no_grad()`; each submodule's train/eval flag is restored after.
    """
    if clip.dim() == 4:
        clip = clip.unsqueeze(0)
    if clip.dim() != 5 or clip.shape[0] == 0:
        raise ValueError(f"count_gmacs expects clip [N, C, T, H, W] or [C, T, H, W] with N >= 1, "
                         f"got {tuple(clip.shape)}")
    out = []
    with eval_mode(model), torch.no_grad():
        for i in range(clip.shape[0]):  # one clip at a time on purpose: each its own B' (not a hot path)
            counter = FlopCounterMode(display=False)
            with counter:
                model(clip[i : i + 1])
            out.append(counter.get_total_flops() / 2 / 1e9)
    return out


def count_gmacs(model: nn.Module, clip: Tensor) -> float:
    """Multiply-accumulates per clip, in billions, averaged over the N clips of clip [N, C, T, H, W].

    Example::

        >>> import torch
        >>> conv = torch.nn.Conv3d(3, 8, kernel_size=3, padding=1)
        >>> count_gmacs(conv, torch.zeros(2, 3, 4, 8, 8)) * 1e9   # 8 * 3 * 27 MACs at 4 * 8 * 8 positions
        165888.0
    """
    per_clip = gmacs_per_clip(model, clip)
    return sum(per_clip) / len(per_clip)
