"""3D ResNets from one builder: ``r3d18`` (torchvision R3D-18), ``r3d18_a1`` (seed 002 Table A.1),
``r3d50`` (the seed's 3DResNet-50) and ``slow_r50`` (slow-only 8x8, checks the builder against PySlowFast).

Stages are named ``stem, res2, res3, res4, res5``; SGS / attention goes after one of them (default ``res2``).
Bottlenecks put the temporal kernel on the first (1x1) conv and the spatial stride on the 3x3 conv, as in
PySlowFast / PyTorchVideo (this placement is what reproduces the published GMACs).
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch
from torch import nn

from lightning_temporal.models.backbone import StagedBackbone, apply_mask, init_weights
from lightning_temporal.models.head import ClassifierHead


def _conv_bn(cin: int, cout: int, kernel, stride=1, groups: int = 1) -> nn.Sequential:
    kernel = (kernel,) * 3 if isinstance(kernel, int) else tuple(kernel)
    pad = tuple(k // 2 for k in kernel)
    return nn.Sequential(
        nn.Conv3d(cin, cout, kernel, stride=stride, padding=pad, groups=groups, bias=False), nn.BatchNorm3d(cout)
    )


class BasicBlock3d(nn.Module):
    """Two kt x 3 x 3 convs (torchvision R3D ``BasicBlock`` with ``Conv3DSimple``).

    ``forward(x, mask=None)``: with a mask ``[N, T]`` (after SGS) the padded positions of the first conv's
    output are zeroed before the second (temporal) conv reads them.
    """

    takes_mask = True

    def __init__(self, cin: int, cout: int, stride_t: int = 1, stride_s: int = 1, kt: int = 3) -> None:
        super().__init__()
        stride = (stride_t, stride_s, stride_s)
        self.temporal_stride = stride_t
        self.conv1 = _conv_bn(cin, cout, (kt, 3, 3), stride)
        self.conv2 = _conv_bn(cout, cout, (kt, 3, 3))
        self.last_bn = self.conv2[1]
        self.shortcut = _conv_bn(cin, cout, 1, stride) if (cin != cout or stride != (1, 1, 1)) else nn.Identity()
        self.relu = nn.ReLU(inplace=True)

    def forward_pre_activation(self, x: torch.Tensor, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        """The block's output before its final ReLU."""
        y = self.relu(self.conv1(x))  # N, cout, T/st, H/ss, W/ss
        if mask is not None:
            y = apply_mask(y, mask[:, :: self.temporal_stride])
        return self.conv2(y) + self.shortcut(x)

    def forward(self, x: torch.Tensor, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        return self.relu(self.forward_pre_activation(x, mask))


class Bottleneck3d(nn.Module):
    """kt x 1 x 1 (cin -> inner), 1 x 3 x 3 with the stride (inner -> inner), 1 x 1 x 1 (inner -> cout).

    Its only temporal conv reads the block input, which is already masked after SGS: no mask needed inside.
    """

    def __init__(self, cin: int, inner: int, cout: int, kt: int = 1, stride_t: int = 1, stride_s: int = 1) -> None:
        super().__init__()
        stride = (stride_t, stride_s, stride_s)
        self.temporal_stride = stride_t
        self.conv_a = _conv_bn(cin, inner, (kt, 1, 1))
        self.conv_b = _conv_bn(inner, inner, (1, 3, 3), stride)
        self.conv_c = _conv_bn(inner, cout, 1)
        self.last_bn = self.conv_c[1]
        self.shortcut = _conv_bn(cin, cout, 1, stride) if (cin != cout or stride != (1, 1, 1)) else nn.Identity()
        self.relu = nn.ReLU(inplace=True)

    def forward_pre_activation(self, x: torch.Tensor, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        """The block's output before its final ReLU (the mask is not needed, see the class docstring)."""
        y = self.relu(self.conv_a(x))  # N, inner, T, H, W
        y = self.relu(self.conv_b(y))  # N, inner, T/st, H/ss, W/ss
        return self.conv_c(y) + self.shortcut(x)  # N, cout, T/st, H/ss, W/ss

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.forward_pre_activation(x))


class ResNet3d(StagedBackbone):
    """A 3D ResNet: stem (conv + optional 1x3x3 max pool), four residual stages, :class:`ClassifierHead`.

    Example::

        >>> m = r3d18_a1(num_classes=5)
        >>> feat, mask = m.forward_features(torch.randn(1, 3, 8, 64, 64))
        >>> feat.shape, mask, m(torch.randn(1, 3, 8, 64, 64)).shape
        (torch.Size([1, 1024, 8, 2, 2]), None, torch.Size([1, 5]))

    Args:
        block: ``"basic"`` or ``"bottleneck"``.
        depths: blocks per stage res2..res5.
        widths: inner width per stage (= output width for basic blocks).
        stem_channels, stem_kernel (kt, kh, kw), stem_stride (st, ss, ss), stem_pool: the stem.
        temporal_kernels: kt per stage (first conv of a bottleneck; both convs of a basic block).
        spatial_strides / temporal_strides: stride of the first block of each stage.
        expansion: output width = inner width x expansion (bottleneck only).
        num_classes, temporal_pool, spatial_pool, dropout: the head.
    """

    def __init__(
        self,
        *,
        block: str,
        depths: Sequence[int],
        widths: Sequence[int],
        stem_channels: int,
        stem_kernel: Sequence[int],
        stem_stride: Sequence[int] = (1, 2, 2),
        stem_pool: bool = True,
        temporal_kernels: Sequence[int],
        spatial_strides: Sequence[int] = (1, 2, 2, 2),
        temporal_strides: Sequence[int] = (1, 1, 1, 1),
        expansion: int = 4,
        num_classes: int = 400,
        temporal_pool: str = "avg",
        spatial_pool: str = "avg",
        dropout: float = 0.0,
        zero_init_residual: bool = True,
    ) -> None:
        super().__init__()
        if block not in ("basic", "bottleneck"):
            raise ValueError(f"block must be 'basic' or 'bottleneck', got {block!r}")
        n = len(depths)
        for name, seq in [("widths", widths), ("temporal_kernels", temporal_kernels),
                          ("spatial_strides", spatial_strides), ("temporal_strides", temporal_strides)]:
            if len(seq) != n:
                raise ValueError(f"{name} must have one entry per stage ({n}), got {list(seq)}")
        stem = [
            nn.Conv3d(3, stem_channels, tuple(stem_kernel), stride=tuple(stem_stride),
                      padding=tuple(k // 2 for k in stem_kernel), bias=False),
            nn.BatchNorm3d(stem_channels),
            nn.ReLU(inplace=True),
        ]
        if stem_pool:
            stem.append(nn.MaxPool3d((1, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1)))
        stages = {"stem": nn.Sequential(*stem)}  # N, stem_channels, T/st, H/4 (H/2 without pool)
        self.stage_out["stem"] = cin = stem_channels
        for i in range(n):
            inner = widths[i]
            cout = inner if block == "basic" else inner * expansion
            blocks = []
            for j in range(depths[i]):
                st = temporal_strides[i] if j == 0 else 1
                ss = spatial_strides[i] if j == 0 else 1
                if block == "basic":
                    blocks.append(BasicBlock3d(cin, cout, st, ss, kt=temporal_kernels[i]))
                else:
                    blocks.append(Bottleneck3d(cin, inner, cout, kt=temporal_kernels[i], stride_t=st, stride_s=ss))
                cin = cout
            name = f"res{i + 2}"
            stages[name] = nn.Sequential(*blocks)  # N, cout, T / prod(st), H / prod(ss), W / prod(ss)
            self.stage_out[name] = cout
        self.stages = nn.ModuleDict(stages)
        self.head = ClassifierHead(cin, num_classes, temporal_pool=temporal_pool, spatial_pool=spatial_pool,
                                   dropout=dropout)
        init_weights(self, zero_init_residual)



def r3d18(num_classes: int = 400, **kwargs) -> ResNet3d:
    """torchvision R3D-18: 33,371,472 params, 40.70 GMACs at 16x112x112 (K=400)."""
    cfg = dict(block="basic", depths=(2, 2, 2, 2), widths=(64, 128, 256, 512), stem_channels=64,
               stem_kernel=(3, 7, 7), stem_pool=False, temporal_kernels=(3, 3, 3, 3),
               spatial_strides=(1, 2, 2, 2), temporal_strides=(1, 2, 2, 2))
    return ResNet3d(**{**cfg, **kwargs}, num_classes=num_classes)


def r3d18_a1(num_classes: int = 400, **kwargs) -> ResNet3d:
    """Seed 002 Table A.1 as written (bottlenecks x2, 8-channel stem, no temporal stride):
    18.06 GMACs at 32x224x224 without SGS."""
    cfg = dict(block="bottleneck", depths=(2, 2, 2, 2), widths=(8, 64, 128, 256), stem_channels=8,
               stem_kernel=(5, 7, 7), temporal_kernels=(3, 1, 1, 3))
    return ResNet3d(**{**cfg, **kwargs}, num_classes=num_classes)


def r3d50(num_classes: int = 400, **kwargs) -> ResNet3d:
    """The seed's 3DResNet-50: ResNet-50 bottlenecks with Table A.1's temporal kernels (5 / 3 / 1 / 1 / 3),
    meant for 32 frames, no temporal stride."""
    cfg = dict(block="bottleneck", depths=(3, 4, 6, 3), widths=(64, 128, 256, 512), stem_channels=64,
               stem_kernel=(5, 7, 7), temporal_kernels=(3, 1, 1, 3))
    return ResNet3d(**{**cfg, **kwargs}, num_classes=num_classes)


def slow_r50(num_classes: int = 400, **kwargs) -> ResNet3d:
    """Slow-only 8x8 R50 (PySlowFast / PyTorchVideo): 32.45M params, 54.52 GMACs at 8x256x256."""
    cfg = dict(block="bottleneck", depths=(3, 4, 6, 3), widths=(64, 128, 256, 512), stem_channels=64,
               stem_kernel=(1, 7, 7), temporal_kernels=(1, 1, 3, 3))
    return ResNet3d(**{**cfg, **kwargs}, num_classes=num_classes)
