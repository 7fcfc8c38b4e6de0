"""Classification head shared by every backbone: pool space, pool time (respecting the SGS mask), classify.

The temporal pool is separate from the spatial one because SGS leaves a variable number of valid
temporal positions per sample; padded positions must not enter the clip prediction.
"""
from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from lightning_temporal.pooling import softmax_temporal_pool

_POOLS = ("avg", "max")
#: the temporal pools as softmax-pooling temperatures: gamma 0 is exactly the mean of the valid positions, gamma
#: inf exactly their maximum (:func:`~lightning_temporal.pooling.softmax_temporal_pool`)
_POOL_GAMMA = {"avg": 0.0, "max": math.inf}


class ClassifierHead(nn.Module):
    """Spatial pool, masked temporal pool, optional hidden layer, dropout and a linear classifier.

    Example::

        >>> head = ClassifierHead(64, num_classes=5, temporal_pool="max")
        >>> feat = torch.randn(2, 64, 4, 7, 7)
        >>> mask = torch.tensor([[True, True, False, False], [True, True, True, True]])
        >>> head(feat, mask).shape, head.forward_dense(feat).shape
        (torch.Size([2, 5]), torch.Size([2, 4, 5]))

    Args:
        in_channels: C of the feature map ``[N, C, T, H, W]``.
        num_classes: K, number of logits.
        temporal_pool: ``"avg"`` or ``"max"`` over the valid temporal positions.
        spatial_pool: ``"avg"`` (default) or ``"max"`` over H, W.
        dropout: dropout probability before the classifier, in [0, 1).
        hidden: if given, a ``Linear(C, hidden, bias=False) + ReLU`` after pooling (X3D's 2048-d ``lin5``).
    """

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        temporal_pool: str = "avg",
        spatial_pool: str = "avg",
        dropout: float = 0.0,
        hidden: Optional[int] = None,
    ) -> None:
        super().__init__()
        if in_channels < 1 or num_classes < 1:
            raise ValueError(f"in_channels and num_classes must be >= 1, got {in_channels}, {num_classes}")
        if temporal_pool not in _POOLS:
            raise ValueError(f"temporal_pool must be one of {_POOLS}, got {temporal_pool!r}")
        if spatial_pool not in _POOLS:
            raise ValueError(f"spatial_pool must be one of {_POOLS}, got {spatial_pool!r}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        if hidden is not None and hidden < 1:
            raise ValueError(f"hidden must be None or >= 1, got {hidden}")
        self.temporal_pool = temporal_pool
        self.spatial_pool = spatial_pool
        self.hidden = (
            nn.Sequential(nn.Linear(in_channels, hidden, bias=False), nn.ReLU(inplace=True)) if hidden else None
        )
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.fc = nn.Linear(hidden or in_channels, num_classes)

    def _pool_space(self, feat: torch.Tensor) -> torch.Tensor:
        if feat.dim() != 5:
            raise ValueError(f"head expects features [N, C, T, H, W], got shape {tuple(feat.shape)}")
        return feat.mean(dim=(3, 4)) if self.spatial_pool == "avg" else feat.amax(dim=(3, 4))  # N, C, T

    def _classify(self, z: torch.Tensor) -> torch.Tensor:
        if self.hidden is not None:
            z = self.hidden(z)
        return self.fc(self.dropout(z))

    def forward(self, feat: torch.Tensor, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        """``feat [N, C, T, H, W]``, ``mask [N, T]`` bool or None (all valid) -> logits ``[N, K]``.

        The temporal pool is :func:`~lightning_temporal.pooling.softmax_temporal_pool` at gamma 0 (``"avg"``)
        or inf (``"max"``) over the positions ``mask`` marks, with its rules: a sample with no valid position
        raises ``ValueError`` (SGS always keeps at least one bin, so that is a bug upstream).
        """
        z = self._pool_space(feat).transpose(1, 2)  # N, T, C
        z = softmax_temporal_pool(z, _POOL_GAMMA[self.temporal_pool], mask=mask)  # N, C
        return self._classify(z)

    def forward_dense(self, feat: torch.Tensor, window: int = 1) -> torch.Tensor:
        """Logits per temporal position, ``[N, T - window + 1, K]`` (dense whole-video evaluation).

        Position ``j`` pools positions ``j .. j + window - 1`` over time as :meth:`forward` pools a clip's
        positions (``temporal_pool``), then classifies: with ``window`` = a clip's number of feature positions
        it is the clip logit of every clip start read from one pass over the whole video. ``window=1``
        classifies each position alone.
        """
        z = self._pool_space(feat)  # N, C, T
        if not isinstance(window, int) or isinstance(window, bool) or not 1 <= window <= z.shape[2]:
            raise ValueError(f"window={window!r}; an integer in 1..{z.shape[2]} (temporal positions) is allowed")
        if window > 1:
            pool = F.max_pool1d if self.temporal_pool == "max" else F.avg_pool1d
            z = pool(z, window, 1)  # N, C, T - window + 1
        return self._classify(z.transpose(1, 2))
