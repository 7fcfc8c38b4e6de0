"""A small, fast 3D CNN for the CPU quickstart on the synthetic localized-event videos.

Four 3x3x3 conv + BN + ReLU stages (~0.29M parameters). The head defaults to global MAX pooling over
space and time: on the synthetic data a global average over the clip hid a short event while max pooling learned.
Stages are named ``stem, res2, res3, res4`` so SGS / attention go after ``res2`` by default, as elsewhere.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from lightning_temporal.models.backbone import StagedBackbone, init_weights
from lightning_temporal.models.head import ClassifierHead


def _conv_bn_relu(cin: int, cout: int, stride_s: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv3d(cin, cout, 3, stride=(1, stride_s, stride_s), padding=1, bias=False),
        nn.BatchNorm3d(cout),
        nn.ReLU(inplace=True),
    )


class SimpleConv3d(StagedBackbone):
    """Plain 3D CNN: four 3x3x3 conv stages, spatial stride 2 in the first three, no temporal stride.

    Example::

        >>> m = simple3d(num_classes=4)
        >>> m(torch.randn(2, 3, 16, 32, 32)).shape
        torch.Size([2, 4])

    Args:
        widths: output channels of the four stages.
        spatial_strides: spatial stride of each stage.
        num_classes, temporal_pool ("max" default), spatial_pool ("max" default), dropout: the head.
    """

    def __init__(
        self,
        *,
        widths: Sequence[int] = (16, 32, 64, 128),
        spatial_strides: Sequence[int] = (2, 2, 2, 1),
        num_classes: int = 4,
        temporal_pool: str = "max",
        spatial_pool: str = "max",
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if len(widths) != 4 or len(spatial_strides) != 4 or min(widths) < 1 or min(spatial_strides) < 1:
            raise ValueError(f"widths and spatial_strides need 4 positive entries, got {widths}, {spatial_strides}")
        names = ("stem", "res2", "res3", "res4")
        stages, cin = {}, 3
        for name, cout, s in zip(names, widths, spatial_strides):
            stages[name] = _conv_bn_relu(cin, cout, s)  # N, cout, T, H / s, W / s
            self.stage_out[name] = cin = cout
        self.stages = nn.ModuleDict(stages)
        self.head = ClassifierHead(cin, num_classes, temporal_pool=temporal_pool, spatial_pool=spatial_pool,
                                   dropout=dropout)
        init_weights(self, zero_init_residual=False)



def simple3d(num_classes: int = 4, **kwargs) -> SimpleConv3d:
    """Quickstart CNN: widths 16/32/64/128, 292,596 params (K=4), 0.090 GMACs at 16x32x32."""
    return SimpleConv3d(**kwargs, num_classes=num_classes)
