"""Double attention (A^2-Net, Chen et al., NeurIPS 2018): the temporal-attention baseline of the ATFR seed §G.

Inserted after a stage like SGS (forward(x) -> (x, None)), but it re-weights features instead of merging
them, so the temporal size (and the GFLOPs of the layers after it) stays the same.
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch
from torch import Tensor, nn

__all__ = ["DoubleAttention"]


class DoubleAttention(nn.Module):
    """A^2 block over all T*H*W positions of a clip's feature map, with a residual connection.

    Example::

        >>> import torch
        >>> block = DoubleAttention(32, c_m=8, c_n=8)
        >>> y, mask = block(torch.randn(2, 32, 8, 7, 7))     # N, C, T, H, W
        >>> tuple(y.shape), mask
        ((2, 32, 8, 7, 7), None)

    With L = T*H*W positions, A = conv_a(x) [N, c_m, L] (features), B = conv_b(x) [N, c_n, L] (attention
    maps), V = conv_v(x) [N, c_n, L] (attention vectors), all 1x1x1 convolutions:

    * gather: G = A softmax_L(B)^T [N, c_m, c_n], each of the c_n global descriptors is a softmax-weighted
      average of the features over all positions;
    * distribute: Z = G softmax_{c_n}(V) [N, c_m, L], each position takes a softmax mixture of descriptors;
    * output: y = x + BN(conv_out(Z)), conv_out: c_m -> C. BN's scale starts at 0 (`zero_init=True`) so the
      block starts as the identity, as residual attention blocks usually are.

    Args:
        in_channels: C.
        c_m: channels of the features / descriptors (default C // 4, at least 1).
        c_n: number of descriptors (default C // 4, at least 1).
        zero_init: start the output BatchNorm's scale at 0.
    Config dict for `build_backbone(..., attention={...})`: {"c_m": int, "c_n": int, "zero_init": bool}.
    """

    def __init__(self, in_channels: int, c_m: Optional[int] = None, c_n: Optional[int] = None,
                 zero_init: bool = True) -> None:
        super().__init__()
        if not isinstance(in_channels, int) or in_channels < 1:
            raise ValueError(f"in_channels must be a positive int, got {in_channels!r}")
        c_m = max(1, in_channels // 4) if c_m is None else c_m
        c_n = max(1, in_channels // 4) if c_n is None else c_n
        for name, v in (("c_m", c_m), ("c_n", c_n)):
            if not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be None (C // 4) or a positive int, got {v!r}")
        self.in_channels, self.c_m, self.c_n = in_channels, c_m, c_n
        self.conv_a = nn.Conv3d(in_channels, c_m, 1)
        self.conv_b = nn.Conv3d(in_channels, c_n, 1)
        self.conv_v = nn.Conv3d(in_channels, c_n, 1)
        self.conv_out = nn.Conv3d(c_m, in_channels, 1, bias=False)
        self.bn = nn.BatchNorm3d(in_channels)
        if zero_init:
            nn.init.zeros_(self.bn.weight)

    def extra_repr(self) -> str:
        return f"in_channels={self.in_channels}, c_m={self.c_m}, c_n={self.c_n}"

    def attend(self, x: Tensor) -> Tensor:
        """The attention output before conv_out: Z [N, c_m, T, H, W]."""
        n, _, t, h, w = x.shape
        a = self.conv_a(x).flatten(2)  # N, c_m, L
        attn = torch.softmax(self.conv_b(x).flatten(2), dim=-1)  # N, c_n, L: softmax over positions
        vec = torch.softmax(self.conv_v(x).flatten(2), dim=1)  # N, c_n, L: softmax over descriptors
        descriptors = torch.bmm(a, attn.transpose(1, 2))  # N, c_m, c_n (gather)
        z = torch.bmm(descriptors, vec)  # N, c_m, L (distribute)
        return z.reshape(n, self.c_m, t, h, w)

    def forward(self, x: Tensor) -> Tuple[Tensor, None]:
        if x.dim() != 5 or x.shape[1] != self.in_channels:
            raise ValueError(f"DoubleAttention expects x [N, {self.in_channels}, T, H, W], got {tuple(x.shape)}")
        return x + self.bn(self.conv_out(self.attend(x))), None
