"""PyTorchVideo 0.1.5 (the reference implementation of the hub checkpoints) for tests, and helpers to make and
save its models with random weights.

pytorchvideo imports ``torchvision.ops.RoIAlign`` at module level, only for its detection heads
(``pytorchvideo/models/head.py``); torchvision has no build that imports with the CPU torch used here. While
pytorchvideo is imported, a test-local stand-in module ``torchvision.ops`` provides a ``RoIAlign`` that raises
if anything builds one (nothing here does); it is removed from ``sys.modules`` right after.
"""
from __future__ import annotations

import importlib
import sys
import types

import torch


def import_pytorchvideo():
    """``(hub, create_x3d, create_resnet, create_slowfast)`` of pytorchvideo, importing it behind the stand-in."""
    added = []
    try:
        importlib.import_module("torchvision.ops")
    except Exception:  # not installed, or installed for another torch: the stand-in takes its place
        for name in ("torchvision", "torchvision.ops"):
            sys.modules.pop(name, None)
        vision, ops = types.ModuleType("torchvision"), types.ModuleType("torchvision.ops")

        class RoIAlign:  # stand-in: only pytorchvideo's detection heads use it
            def __init__(self, *args, **kwargs):
                raise RuntimeError("test stand-in for torchvision.ops.RoIAlign: detection heads are not tested")

        ops.RoIAlign = RoIAlign
        vision.ops = ops
        sys.modules["torchvision"], sys.modules["torchvision.ops"] = vision, ops
        added = ["torchvision", "torchvision.ops"]
    try:
        from pytorchvideo.models import hub
        from pytorchvideo.models.resnet import create_resnet
        from pytorchvideo.models.slowfast import create_slowfast
        from pytorchvideo.models.x3d import create_x3d
    finally:
        for name in added:
            sys.modules.pop(name, None)
    return hub, create_x3d, create_resnet, create_slowfast


def randomise_(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Random weights everywhere, BatchNorm running statistics included (so no BN is an identity and no
    residual branch is zero, as default initialisations make them)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for mod in model.modules():
            if isinstance(mod, torch.nn.modules.batchnorm._BatchNorm):
                n = mod.num_features
                mod.weight.copy_(0.5 + torch.rand(n, generator=g))
                mod.bias.copy_(0.2 * torch.randn(n, generator=g))
                mod.running_mean.copy_(0.2 * torch.randn(n, generator=g))
                mod.running_var.copy_(0.5 + torch.rand(n, generator=g))
            elif isinstance(mod, (torch.nn.Conv3d, torch.nn.Linear)):
                fan_in = mod.weight[0].numel()
                mod.weight.copy_(torch.randn(mod.weight.shape, generator=g) * (2.0 / fan_in) ** 0.5)
                if mod.bias is not None:
                    mod.bias.copy_(0.1 * torch.randn(mod.bias.shape, generator=g))
    return model


def save_hub_checkpoint(model: torch.nn.Module, path) -> str:
    """Save ``model``'s state dict as the PyTorchVideo hub files hold it: ``{"model_state": state_dict}``."""
    torch.save({"model_state": model.state_dict()}, str(path))
    return str(path)
