"""Shared plumbing of the staged backbones: named stages, a temporal module (SGS / attention) after one of
them, and the validity mask that follows the features through the later stages (CONTRACT §5).
"""
from __future__ import annotations

from typing import Dict, Optional, Tuple

import torch
from torch import nn

from lightning_temporal.models.head import ClassifierHead


def init_weights(module: nn.Module, zero_init_residual: bool = True) -> None:
    """Kaiming (fan_out) convs, BatchNorm weight 1 / bias 0, small-normal linears; optionally zero the
    last BatchNorm of each residual branch (blocks mark it as ``last_bn``) so residual blocks start as
    identities."""
    for m in module.modules():
        if isinstance(m, nn.Conv3d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm3d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, std=0.01)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
    if zero_init_residual:
        for m in module.modules():
            bn = getattr(m, "last_bn", None)
            if isinstance(bn, nn.BatchNorm3d):
                nn.init.zeros_(bn.weight)


def apply_mask(x: torch.Tensor, mask: Optional[torch.Tensor]) -> torch.Tensor:
    """Zero the padded temporal positions of ``x [N, C, T, H, W]`` (``mask [N, T]``)."""
    if mask is None:
        return x
    return x * mask[:, None, :, None, None].to(x.dtype)


def run_masked(stage: nn.Module, x: torch.Tensor, mask: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """Run ``stage`` block by block after SGS, re-zeroing padded positions after every block.

    Why: after BatchNorm a padded (zero) bin is no longer zero, and a temporal conv would leak it into the
    last valid bin of a sample; zeroing keeps each sample's result independent of the other samples'
    B'. A block with temporal stride s (attribute ``temporal_stride``; 'same' padding) keeps positions
    ``0, s, 2s, ...``, so the mask is strided the same way.
    """
    blocks = stage if isinstance(stage, nn.Sequential) else [stage]
    for block in blocks:
        x = block(x)
        s = getattr(block, "temporal_stride", 1)
        if s != 1:
            mask = mask[:, ::s]
        if mask.shape[1] != x.shape[2]:
            raise RuntimeError(
                f"mask of {mask.shape[1]} positions does not match {x.shape[2]} temporal positions after "
                f"{type(block).__name__}; give the block a `temporal_stride` attribute"
            )
        x = apply_mask(x, mask)
    return x, mask


class StagedBackbone(nn.Module):
    """A sequence of named stages (``stem``, ``res2`` ...) and a :class:`ClassifierHead`.

    Subclasses fill ``self.stages`` (an ``nn.ModuleDict`` in forward order), ``self.stage_out`` (channels
    after each stage) and ``self.head``. ``insert_temporal(after, module)`` puts a module with
    ``forward(x) -> (x, mask)`` after a stage; the later stages then run on its output.
    """

    stages: nn.ModuleDict
    head: ClassifierHead

    def __init__(self) -> None:
        super().__init__()
        self.stage_out: Dict[str, int] = {}
        self.temporal: Optional[nn.Module] = None
        self.temporal_after: Optional[str] = None

    def stage_channels(self, name: str) -> int:
        """Channels of the output of stage ``name``."""
        if name not in self.stage_out:
            raise ValueError(f"unknown stage {name!r}; this backbone has stages {list(self.stage_out)}")
        return self.stage_out[name]

    def insert_temporal(self, after: str, module: nn.Module) -> None:
        """Insert ``module`` (``forward(x) -> (x, mask)``) after stage ``after``."""
        self.stage_channels(after)  # validates the name
        if after == list(self.stage_out)[-1]:
            raise ValueError(f"cannot insert after the last stage {after!r}: nothing would run on its output")
        self.temporal = module
        self.temporal_after = after

    def forward_features(self, x: torch.Tensor) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
        """``x [N, 3, T, H, W]`` -> ``(feat [N, C, T', H', W'], mask [N, T'] bool or None)``."""
        if x.dim() != 5 or x.shape[1] != 3:
            raise ValueError(f"expected a clip [N, 3, T, H, W], got shape {tuple(x.shape)}")
        mask: Optional[torch.Tensor] = None
        for name, stage in self.stages.items():
            if mask is None:
                x = stage(x)
            else:
                x, mask = run_masked(stage, x, mask)
            if name == self.temporal_after:
                x, mask = self.temporal(x)
        return x, mask

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x [N, 3, T, H, W]`` -> logits ``[N, K]``."""
        feat, mask = self.forward_features(x)
        return self.head(feat, mask)
