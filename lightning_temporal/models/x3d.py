"""X3D (Feichtenhofer, CVPR 2020) as in PySlowFast / PyTorchVideo: the variants of ``X3D_VARIANTS``
(``x3d_s``, ``x3d_m``), built by ``build_x3d``.

Stages are named ``stem, res2, res3, res4, res5, conv5``; SGS / attention goes after ``res2`` by default
(seed 002: X3D-S + ATFR).

What the published GMACs count (X3D paper Table 3, PySlowFast model zoo; fvcore's counter as of 2020, which
counted convolutions and matrix products only): every conv of the stem, of the blocks (SE's two 1x1x1 convs
included: they act on a 1x1x1 pooled map, so they are a few thousand MACs) and of the head (conv5, lin5, fc).
BatchNorm, activations and pools are not counted. ``torch.utils.flop_counter`` counts exactly the same set
(conv + mm/addmm), so MACs = FlopCounterMode total / 2 reproduces 1.96 (X3D-S, 13x160^2) and 4.73
(X3D-M, 16x224^2). The parameter count (3.79M for X3D-M, K=400) includes BatchNorm's weight and bias.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Dict, Optional, Sequence, Tuple

import torch
from torch import nn

from lightning_temporal.models.backbone import StagedBackbone, apply_mask, init_weights
from lightning_temporal.models.head import ClassifierHead


def round_width(width: float, multiplier: float, min_width: int = 8, divisor: int = 8) -> int:
    """PySlowFast's channel rounding: scale, round to a multiple of ``divisor``, never below 90%."""
    width *= multiplier
    out = max(min_width, int(width + divisor / 2) // divisor * divisor)
    if out < 0.9 * width:
        out += divisor
    return int(out)


class SqueezeExcite3d(nn.Module):
    """Global average pool, 1x1x1 conv to ``round_width(C, ratio)`` channels, ReLU, 1x1x1 conv, sigmoid gate."""

    def __init__(self, channels: int, ratio: float = 1 / 16) -> None:
        super().__init__()
        hidden = round_width(channels, ratio)
        self.fc1 = nn.Conv3d(channels, hidden, 1, bias=True)
        self.fc2 = nn.Conv3d(hidden, channels, 1, bias=True)

    def forward(self, x: torch.Tensor, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        """``x [N, C, T, H, W]``; ``mask [N, T]`` (after SGS): the pool averages the valid positions only, so
        zero-padded bins do not change a sample's gate."""
        if mask is None:
            s = x.mean(dim=(2, 3, 4), keepdim=True)  # N, C, 1, 1, 1
        else:
            m = mask[:, None, :, None, None].to(x.dtype)
            count = m.sum(dim=2, keepdim=True).clamp_min(1) * (x.shape[3] * x.shape[4])
            s = (x * m).sum(dim=(2, 3, 4), keepdim=True) / count
        return x * torch.sigmoid(self.fc2(torch.relu(self.fc1(s))))


class X3dBlock(nn.Module):
    """1x1x1 (cin -> inner), depthwise 3x3x3 with spatial stride, optional SE, swish, 1x1x1 (inner -> cout).

    ``forward(x, mask=None)``: with a mask ``[N, T]`` (after SGS) the padded positions are zeroed before the
    depthwise (temporal) conv and left out of the squeeze-excitation pool.
    """

    takes_mask = True

    def __init__(self, cin: int, inner: int, cout: int, stride_s: int = 1, se: bool = False) -> None:
        super().__init__()
        self.temporal_stride = 1
        self.conv_a = nn.Sequential(nn.Conv3d(cin, inner, 1, bias=False), nn.BatchNorm3d(inner), nn.ReLU(inplace=True))
        self.conv_b = nn.Sequential(
            nn.Conv3d(inner, inner, 3, stride=(1, stride_s, stride_s), padding=1, groups=inner, bias=False),
            nn.BatchNorm3d(inner),
        )
        self.se = SqueezeExcite3d(inner) if se else nn.Identity()
        self.act = nn.SiLU(inplace=True)  # swish
        self.conv_c = nn.Sequential(nn.Conv3d(inner, cout, 1, bias=False), nn.BatchNorm3d(cout))
        self.last_bn = self.conv_c[1]
        stride = (1, stride_s, stride_s)
        # As in PyTorchVideo's X3D (the layout of its hub checkpoints): the shortcut conv is normalised only when
        # the width changes; res2's first block (24 -> 24 channels, stride 2) has a bare strided 1x1x1 conv.
        if cin != cout:
            self.shortcut = nn.Sequential(nn.Conv3d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm3d(cout))
        elif stride_s != 1:
            self.shortcut = nn.Sequential(nn.Conv3d(cin, cout, 1, stride=stride, bias=False))
        else:
            self.shortcut = nn.Identity()
        self.relu = nn.ReLU(inplace=True)

    def forward_pre_activation(self, x: torch.Tensor, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        """The block's output before its final ReLU."""
        y = apply_mask(self.conv_a(x), mask)  # N, inner, T, H, W
        y = self.conv_b(y)  # N, inner, T, H/s, W/s
        y = self.se(y, mask) if isinstance(self.se, SqueezeExcite3d) else self.se(y)
        return self.conv_c(self.act(y)) + self.shortcut(x)  # N, cout, T, H/s, W/s

    def forward(self, x: torch.Tensor, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        return self.relu(self.forward_pre_activation(x, mask))


class X3D(StagedBackbone):
    """X3D: stem (1x3x3 conv + depthwise 5x1x1), four stages of :class:`X3dBlock`, conv5, MLP head.

    Example::

        >>> m = build_x3d("x3d_s", num_classes=5)
        >>> m(torch.randn(1, 3, 4, 64, 64)).shape
        torch.Size([1, 5])

    Args:
        depths: blocks per stage res2..res5.
        widths: output channels per stage.
        stem_channels: output channels of the stem.
        expansion: bottleneck (inner) width = expansion x output width.
        conv5_channels: width of the final 1x1x1 conv (on every position, before pooling).
        head_hidden: width of the pooled ``lin5`` layer (2048).
        se_ratio: squeeze-excitation reduction (SE on blocks 0, 2, 4, ... of each stage).
        num_classes, temporal_pool, spatial_pool, dropout: the head.
    """

    def __init__(
        self,
        *,
        depths: Sequence[int],
        widths: Sequence[int] = (24, 48, 96, 192),
        stem_channels: int = 24,
        expansion: float = 2.25,
        conv5_channels: int = 432,
        head_hidden: int = 2048,
        se_ratio: float = 1 / 16,
        num_classes: int = 400,
        temporal_pool: str = "avg",
        spatial_pool: str = "avg",
        dropout: float = 0.5,
        zero_init_residual: bool = True,
    ) -> None:
        super().__init__()
        if len(depths) != len(widths):
            raise ValueError(f"depths and widths need one entry per stage, got {list(depths)} and {list(widths)}")
        if not 0 < se_ratio <= 1:
            raise ValueError(f"se_ratio must be in (0, 1], got {se_ratio}")
        stages = {
            "stem": nn.Sequential(
                nn.Conv3d(3, stem_channels, (1, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1), bias=False),
                nn.Conv3d(stem_channels, stem_channels, (5, 1, 1), padding=(2, 0, 0), groups=stem_channels, bias=False),
                nn.BatchNorm3d(stem_channels),
                nn.ReLU(inplace=True),
            )  # N, 24, T, H/2, W/2
        }
        self.stage_out["stem"] = cin = stem_channels
        for i, (depth, cout) in enumerate(zip(depths, widths)):
            inner = int(expansion * cout)
            blocks = [X3dBlock(cin if j == 0 else cout, inner, cout, stride_s=2 if j == 0 else 1, se=(j % 2 == 0))
                      for j in range(depth)]
            stages[f"res{i + 2}"] = nn.Sequential(*blocks)  # N, cout, T, H / 2^(i+2), W / 2^(i+2)
            self.stage_out[f"res{i + 2}"] = cin = cout
        stages["conv5"] = nn.Sequential(
            nn.Conv3d(cin, conv5_channels, 1, bias=False), nn.BatchNorm3d(conv5_channels), nn.ReLU(inplace=True)
        )  # N, 432, T, H/32, W/32
        self.stage_out["conv5"] = conv5_channels
        self.stages = nn.ModuleDict(stages)
        self.head = ClassifierHead(conv5_channels, num_classes, temporal_pool=temporal_pool,
                                   spatial_pool=spatial_pool, dropout=dropout, hidden=head_hidden)
        init_weights(self, zero_init_residual)


@dataclass(frozen=True)
class X3dVariant:
    """The numbers of one X3D variant (X3D paper Table 3; PySlowFast ``configs/Kinetics/X3D_*.yaml``).

    ``depth_factor`` (gamma_d) sets the blocks per stage, ``ceil(gamma_d * (1, 2, 5, 3))``; the widths, the
    bottleneck expansion (gamma_b = 2.25) and the head are :class:`X3D`'s defaults for every variant here.
    ``frames`` x ``crop`` x ``crop`` is the clip the published GMACs are measured on: X3D-S and X3D-M are one
    network run on different clips.
    """

    depth_factor: float
    frames: int
    crop: int

    @property
    def depths(self) -> Tuple[int, ...]:
        return tuple(int(math.ceil(self.depth_factor * d)) for d in (1, 2, 5, 3))  # 2.2 -> (3, 5, 11, 7)


#: X3D variants by registry name (as timm keeps its ``model_cfgs``): add a variant here, it is a backbone name.
X3D_VARIANTS: Dict[str, X3dVariant] = {
    "x3d_s": X3dVariant(depth_factor=2.2, frames=13, crop=160),  # 1.96 GMACs, 3.79M params with BatchNorm (K=400)
    "x3d_m": X3dVariant(depth_factor=2.2, frames=16, crop=224),  # 4.73 GMACs, same network
}


def build_x3d(variant: str, num_classes: int = 400, **kwargs) -> X3D:
    """X3D ``variant`` (a key of :data:`X3D_VARIANTS`) with ``num_classes`` logits; ``kwargs`` go to :class:`X3D`
    and override the variant's numbers (e.g. ``dropout=0.2``, or ``depths`` for a smaller network)."""
    if variant not in X3D_VARIANTS:
        raise ValueError(f"unknown X3D variant {variant!r}; known variants: {', '.join(X3D_VARIANTS)}")
    return X3D(**{"depths": X3D_VARIANTS[variant].depths, **kwargs}, num_classes=num_classes)
