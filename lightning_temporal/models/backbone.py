"""Shared plumbing of the staged backbones: named stages, a temporal module (SGS / attention) after one of
them, and the validity mask that follows the features through the later stages.

After SGS the samples of a batch have different numbers of temporal positions (B'); each is padded with zero
bins at the end. The mask keeps every later layer from letting the padding change a real sample's result
(eval mode): padded positions are re-zeroed after every block and inside blocks before a temporal conv or a
pool over time, so that a sample's logits do not depend on what it is batched with.
"""
from __future__ import annotations

from typing import Any, Dict, Optional, Tuple

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
    """Zero the padded temporal positions of ``x [N, C, T, H, W]`` (``mask [N, T]``; None: nothing to do)."""
    if mask is None:
        return x
    return x * mask[:, None, :, None, None].to(x.dtype)


def _run_block(block: nn.Module, x: torch.Tensor, mask: Optional[torch.Tensor]) -> torch.Tensor:
    # blocks with a temporal conv that does not read the block input (or a pool over time) take the mask
    return block(x, mask) if getattr(block, "takes_mask", False) else block(x)


def run_stage(
    stage: nn.Module, x: torch.Tensor, mask: Optional[torch.Tensor], pre_activation: bool = False
) -> Tuple[torch.Tensor, Optional[torch.Tensor], Optional[nn.Module]]:
    """Run ``stage`` block by block; after SGS (``mask [N, T]`` not None) re-zero padded positions after every
    block. Returns ``(x, mask, activation)``.

    Why re-zero: after BatchNorm a padded (zero) bin is no longer zero, and a temporal conv would leak it into
    the last valid bin of a sample. With every temporal conv reading zeros past a sample's valid bins (blocks
    that have a temporal conv not reading the block input, or a pool over time, take the mask: ``takes_mask``)
    a sample's result is that of running it alone: the zeros are what the conv's own zero padding gives. A
    block with temporal stride s (attribute ``temporal_stride``; 'same' padding) keeps positions
    ``0, s, 2s, ...``, so the mask is strided the same way.

    ``pre_activation``: stop before the final ReLU of the last block (``forward_pre_activation``) or of a
    stage that ends in an ``nn.ReLU`` and return that ReLU as ``activation``, for a module that must read the
    stage's output before it (the released SGS placement). Where the stage does not end in a ReLU,
    ``activation`` is None and the stage ran whole.
    """
    blocks = list(stage) if isinstance(stage, nn.Sequential) else [stage]
    activation: Optional[nn.Module] = None
    for i, block in enumerate(blocks):
        last = i == len(blocks) - 1
        if last and pre_activation and isinstance(block, nn.ReLU):
            activation = block
            break
        if last and pre_activation and hasattr(block, "forward_pre_activation"):
            x = block.forward_pre_activation(x, mask)
            activation = block.relu
        else:
            x = _run_block(block, x, mask)
        if mask is None:
            continue
        s = getattr(block, "temporal_stride", 1)
        if s != 1:
            mask = mask[:, ::s]
        if mask.shape[1] != x.shape[2]:
            raise RuntimeError(
                f"mask of {mask.shape[1]} positions does not match {x.shape[2]} temporal positions after "
                f"{type(block).__name__}; give the block a `temporal_stride` attribute"
            )
        x = apply_mask(x, mask)
    return x, mask, activation


def run_stage_then(
    stage: nn.Module, x: torch.Tensor, mask: Optional[torch.Tensor], temporal: Optional[nn.Module] = None
) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
    """One stage of a forward pass -> ``(x, mask)``: the stage whole while no temporal module has run yet
    (``mask`` None, no ``temporal``), else block by block under the mask (:func:`run_stage`), followed by
    ``temporal`` (``forward(x) -> (x, mask)``) when given. With ``temporal.pre_activation`` (SGS's released
    placement) the temporal module reads the stage's output before its final ReLU and the ReLU runs on the
    temporal module's output."""
    if temporal is None and mask is None:
        return stage(x), None
    x, mask, act = run_stage(stage, x, mask, pre_activation=getattr(temporal, "pre_activation", False))
    if temporal is not None:
        x, mask = temporal(x)
        if act is not None:
            x = act(x)
    return x, mask


class TemporalInsertion(nn.Module):
    """Named stages with known output channels, and a temporal module inserted after one of them.

    The one place that checks where a temporal module (SGS, attention) may go, for single-pathway
    (:class:`StagedBackbone`) and two-pathway (``SlowFast``, one module per pathway) networks. Subclasses fill
    ``self.stage_out`` (stage name -> what the stage outputs, e.g. its channels, in forward order) and call
    :meth:`_insert`; ``self.temporal`` / ``self.temporal_after`` then say what runs after which stage.
    """

    def __init__(self) -> None:
        super().__init__()
        self.stage_out: Dict[str, Any] = {}
        self.temporal: Optional[nn.Module] = None
        self.temporal_after: Optional[str] = None

    def _stage_output(self, name: str) -> Any:
        if name not in self.stage_out:
            raise ValueError(f"unknown stage {name!r}; {type(self).__name__} has stages {list(self.stage_out)}")
        return self.stage_out[name]

    def _insert(self, after: str, module: nn.Module) -> None:
        self._stage_output(after)  # validates the name
        if after == list(self.stage_out)[-1]:
            raise ValueError(f"cannot insert after the last stage {after!r}: nothing would run on its output")
        self.temporal = module
        self.temporal_after = after

    def _temporal_after(self, name: str, pathway: Optional[str] = None) -> Optional[nn.Module]:
        """The temporal module that runs after stage ``name`` (that of ``pathway`` when there is one per
        pathway), or None."""
        if name != self.temporal_after:
            return None
        return self.temporal if pathway is None else self.temporal[pathway]


class StagedBackbone(TemporalInsertion):
    """A sequence of named stages (``stem``, ``res2`` ...) and a :class:`ClassifierHead`.

    Subclasses fill ``self.stages`` (an ``nn.ModuleDict`` in forward order), ``self.stage_out`` (channels
    after each stage) and ``self.head``. ``insert_temporal(after, module)`` puts a module with
    ``forward(x) -> (x, mask)`` after a stage; the later stages then run on its output.
    """

    stages: nn.ModuleDict
    head: ClassifierHead

    def stage_channels(self, name: str) -> int:
        """Channels of the output of stage ``name``."""
        return self._stage_output(name)

    def insert_temporal(self, after: str, module: nn.Module) -> None:
        """Insert ``module`` (``forward(x) -> (x, mask)``) after stage ``after``."""
        self._insert(after, module)

    def forward_features(self, x: torch.Tensor) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
        """``x [N, 3, T, H, W]`` -> ``(feat [N, C, T', H', W'], mask [N, T'] bool or None)``."""
        if x.dim() != 5 or x.shape[1] != 3:
            raise ValueError(f"expected a clip [N, 3, T, H, W], got shape {tuple(x.shape)}")
        mask: Optional[torch.Tensor] = None
        for name, stage in self.stages.items():
            x, mask = run_stage_then(stage, x, mask, self._temporal_after(name))
        return x, mask

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x [N, 3, T, H, W]`` -> logits ``[N, K]``."""
        feat, mask = self.forward_features(x)
        return self.head(feat, mask)
