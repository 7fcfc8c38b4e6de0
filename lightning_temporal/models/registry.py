"""``build_backbone(name, num_classes, sgs=None | dict, attention=None | dict, pretrained=None | path, **kwargs)``.

``sgs`` / ``attention`` dicts: key ``"after"`` names the stage the module goes after (default ``"res2"``);
the other keys are the module's constructor arguments (``SimilarityGuidedSampling`` /
``DoubleAttention``), ``in_channels`` being filled in from the stage. SlowFast gets one module per pathway;
its SGS runs on temporal blocks, ``block_size_slow`` (default 2) and ``block_size_fast`` (default 8).
"""
from __future__ import annotations

from functools import partial
from typing import Callable, Dict, List, Optional

from torch import nn

from lightning_temporal.models.pretrained import PretrainedSource, load_pretrained
from lightning_temporal.models.resnet3d import r3d18, r3d18_a1, r3d50, slow_r50
from lightning_temporal.models.simple import simple3d
from lightning_temporal.models.slowfast import SlowFast, slowfast_r50
from lightning_temporal.models.vgg3d import vgg3d
from lightning_temporal.models.x3d import X3D_VARIANTS, build_x3d

BACKBONES: Dict[str, Callable[..., nn.Module]] = {
    "r3d18": r3d18,
    "r3d18_a1": r3d18_a1,
    "r3d50": r3d50,
    "slow_r50": slow_r50,
    **{name: partial(build_x3d, name) for name in X3D_VARIANTS},
    "slowfast_r50": slowfast_r50,
    "simple3d": simple3d,
    "vgg3d": vgg3d,
}

# SlowFast + ATFR (seed 002 §A): SGS over temporal blocks of 2 (slow) and 8 (fast) positions.
SLOWFAST_SGS_BLOCKS = {"slow": 2, "fast": 8}


def list_backbones() -> List[str]:
    """Names accepted by :func:`build_backbone`."""
    return sorted(BACKBONES)


def _module_class(kind: str):
    # Imported lazily so that a backbone without a temporal module does not need them.
    if kind == "sgs":
        from lightning_temporal.models.sgs import SimilarityGuidedSampling

        return SimilarityGuidedSampling
    from lightning_temporal.models.attention import DoubleAttention

    return DoubleAttention


def _attach(model: nn.Module, spec, kind: str, name: str) -> None:
    if spec is True:
        spec = {}
    if not isinstance(spec, dict):
        raise TypeError(f"{kind}= must be None or a dict of constructor arguments (plus 'after'), got {spec!r}")
    spec = dict(spec)
    after = spec.pop("after", "res2")
    if "in_channels" in spec:
        raise ValueError(f"{kind}: do not pass in_channels, it is taken from stage {after!r} of {name}")
    cls = _module_class(kind)
    if isinstance(model, SlowFast):
        if "block_size" in spec:
            raise ValueError(f"{kind}: for slowfast give block_size_slow / block_size_fast, not block_size")
        per_path = {}
        for path in ("slow", "fast"):
            kw = dict(spec)
            for p in ("slow", "fast"):
                kw.pop(f"block_size_{p}", None)
            if kind == "sgs":
                kw["block_size"] = spec.get(f"block_size_{path}", SLOWFAST_SGS_BLOCKS[path])
            per_path[path] = cls(model.stage_channels(after, path), **kw)
        model.insert_temporal(after, **per_path)
    else:
        bad = [k for k in spec if k.startswith("block_size_")]
        if bad:
            raise ValueError(f"{kind}: {bad} only apply to slowfast_r50")
        model.insert_temporal(after, cls(model.stage_channels(after), **spec))


def build_backbone(name: str, num_classes: int, sgs: Optional[dict] = None, attention: Optional[dict] = None,
                   pretrained: Optional[PretrainedSource] = None, **kwargs) -> nn.Module:
    """Build backbone ``name`` with ``num_classes`` logits, optionally with SGS or double attention, optionally
    from a published Kinetics checkpoint.

    Example::

        >>> m = build_backbone("r3d18_a1", 10, sgs={"after": "res2", "num_bins": 16})
        >>> type(m.temporal).__name__
        'SimilarityGuidedSampling'

    ``pretrained``: a checkpoint file path or a state dict, loaded by
    :func:`~lightning_temporal.models.pretrained.load_pretrained`: PyTorchVideo hub files (``X3D_S.pyth``,
    ``X3D_M.pyth``, ``SLOW_8x8_R50.pyth``, ``SLOWFAST_8x8_R50.pyth``) for ``x3d_s``, ``x3d_m``, ``slow_r50``,
    ``slowfast_r50``; torchvision's ``r3d_18`` state dict for ``r3d18``; a torchvision 2D VGG-16 state dict for
    ``vgg3d`` (inflated to 3D, :func:`~lightning_temporal.models.vgg3d.load_vgg16_2d`). The classifier is re-initialised (with
    a warning) when ``num_classes`` differs from the checkpoint's; SGS / attention start fresh. Nothing is
    downloaded.

    ``kwargs`` go to the builder (e.g. ``temporal_pool="max"``, ``dropout=0.2``).
    """
    if name not in BACKBONES:
        raise ValueError(f"unknown backbone {name!r}; known backbones: {', '.join(list_backbones())}")
    if sgs is not None and attention is not None:
        raise ValueError("give sgs or attention, not both: a backbone holds one temporal module")
    if not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")
    model = BACKBONES[name](num_classes=num_classes, **kwargs)
    if sgs is not None:
        _attach(model, sgs, "sgs", name)
    if attention is not None:
        _attach(model, attention, "attention", name)
    if pretrained is not None:
        load_pretrained(model, name, pretrained)
    return model
