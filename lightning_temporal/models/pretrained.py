"""Load published Kinetics checkpoints into this package's backbones (no download: a file path or a state dict).

Layouts read (the key maps below are written from the reference sources):

* **PyTorchVideo hub** (``.pyth`` files ``{"model_state": state_dict}``, e.g.
  ``https://dl.fbaipublicfiles.com/pytorchvideo/model_zoo/kinetics/X3D_S.pyth``) into ``x3d_s``, ``x3d_m``,
  ``slow_r50`` and ``slowfast_r50``: the modules of ``pytorchvideo.models.x3d.create_x3d``,
  ``resnet.create_resnet`` and ``slowfast.create_slowfast`` (``blocks.<stage>.res_blocks.<block>.branch2.conv_a``
  ...). ``tests/test_pretrained.py`` loads state dicts saved from pytorchvideo 0.1.5 and compares logits.
* **torchvision** ``r3d_18`` (``torchvision.models.video.resnet``: ``stem.0``, ``layer1.0.conv1.0``,
  ``layer2.0.downsample.0``, ``fc`` ...) into ``r3d18``.
* This package's own layout (``model.backbone.state_dict()`` of a trained classifier), into the same backbone.

What is not taken from the checkpoint:

* the classifier (``head.fc``) when its number of classes differs from the model's: it keeps its fresh
  initialisation, and a warning says so;
* the SGS / attention module (``temporal.*``): published checkpoints have none, it starts from its
  initialisation;
* BatchNorm's ``num_batches_tracked`` counters when the file lacks them (they do not enter the forward pass).

Any other key of the model missing from the checkpoint, any key of the checkpoint that has no place in the
model, or a shape that differs, is an error that lists them.
"""
from __future__ import annotations

import os
import re
import warnings
from typing import Callable, Dict, List, Mapping, Optional, Tuple, Union

import torch
from torch import Tensor, nn

__all__ = ["load_pretrained", "read_checkpoint", "convert_state_dict", "PretrainedSource", "LAYOUTS", "PUBLISHED"]

PretrainedSource = Union[str, os.PathLike, Mapping[str, Tensor]]

# PyTorchVideo ResBlock / BottleneckBlock (and X3D's norm_b = Sequential(BatchNorm, SqueezeExcitation))
# -> this package's Bottleneck3d / X3dBlock
_PTV_BLOCK = {
    "branch1_conv": "shortcut.0",
    "branch1_norm": "shortcut.1",
    "branch2.conv_a": "conv_a.0",
    "branch2.norm_a": "conv_a.1",
    "branch2.conv_b": "conv_b.0",
    "branch2.norm_b": "conv_b.1",
    "branch2.norm_b.0": "conv_b.1",
    "branch2.norm_b.1.block.0": "se.fc1",
    "branch2.norm_b.1.block.2": "se.fc2",
    "branch2.conv_c": "conv_c.0",
    "branch2.norm_c": "conv_c.1",
}
_PATHWAYS = ("slow", "fast")  # PyTorchVideo's multipathway_blocks.0 / .1


def _ptv_x3d(module: str) -> Optional[str]:
    fixed = {
        "blocks.0.conv.conv_t": "stages.stem.0",   # 1x3x3 spatial conv (PyTorchVideo names it conv_t)
        "blocks.0.conv.conv_xy": "stages.stem.1",  # 5x1x1 depthwise temporal conv
        "blocks.0.norm": "stages.stem.2",
        "blocks.5.pool.pre_conv": "stages.conv5.0",
        "blocks.5.pool.pre_norm": "stages.conv5.1",
        "blocks.5.pool.post_conv": "head.hidden.0",  # 1x1x1 conv on the pooled map = the 2048-d linear lin5
        "blocks.5.proj": "head.fc",
    }
    return fixed.get(module) or _ptv_res_block(module)


def _ptv_resnet(module: str) -> Optional[str]:
    fixed = {"blocks.0.conv": "stages.stem.0", "blocks.0.norm": "stages.stem.1", "blocks.5.proj": "head.fc"}
    return fixed.get(module) or _ptv_res_block(module)


def _ptv_res_block(module: str) -> Optional[str]:
    """A PyTorchVideo single-pathway residual block (``blocks.<1-4>.res_blocks.<j>.<part>``) -> ``stages.res<2-5>``."""
    m = re.fullmatch(r"blocks\.([1-4])\.res_blocks\.(\d+)\.(.+)", module)
    if m and m[3] in _PTV_BLOCK:
        return f"stages.res{int(m[1]) + 1}.{m[2]}.{_PTV_BLOCK[m[3]]}"
    return None


def _ptv_slowfast(module: str) -> Optional[str]:
    if module == "blocks.6.proj":
        return "head.fc"
    m = re.fullmatch(r"blocks\.0\.multipathway_blocks\.([01])\.(conv|norm)", module)
    if m:
        return f"{_PATHWAYS[int(m[1])]}.stem.{0 if m[2] == 'conv' else 1}"
    m = re.fullmatch(r"blocks\.([1-4])\.multipathway_blocks\.([01])\.res_blocks\.(\d+)\.(.+)", module)
    if m and m[4] in _PTV_BLOCK:
        return f"{_PATHWAYS[int(m[2])]}.res{int(m[1]) + 1}.{m[3]}.{_PTV_BLOCK[m[4]]}"
    m = re.fullmatch(r"blocks\.([0-3])\.multipathway_fusion\.(conv_fast_to_slow|norm)", module)
    if m:
        stage = "stem" if m[1] == "0" else f"res{int(m[1]) + 1}"
        return f"fusions.{stage}.{'conv' if m[2] == 'conv_fast_to_slow' else 'bn'}"
    return None


def _torchvision_r3d(module: str) -> Optional[str]:
    # torchvision.models.video.resnet.VideoResNet with BasicBlock / Conv3DSimple / BasicStem
    fixed = {"stem.0": "stages.stem.0", "stem.1": "stages.stem.1", "fc": "head.fc"}
    if module in fixed:
        return fixed[module]
    m = re.fullmatch(r"layer([1-4])\.(\d+)\.(conv1|conv2|downsample)\.([01])", module)
    if m:
        part = "shortcut" if m[3] == "downsample" else m[3]
        return f"stages.res{int(m[1]) + 1}.{m[2]}.{part}.{m[4]}"
    return None


_ZOO = "https://dl.fbaipublicfiles.com/pytorchvideo/model_zoo/kinetics"
#: where each backbone's published Kinetics-400 weights are (download them yourself; nothing is fetched here)
PUBLISHED = {
    "x3d_s": f"{_ZOO}/X3D_S.pyth",
    "x3d_m": f"{_ZOO}/X3D_M.pyth",
    "slow_r50": f"{_ZOO}/SLOW_8x8_R50.pyth",
    "slowfast_r50": f"{_ZOO}/SLOWFAST_8x8_R50.pyth",
    "r3d18": "https://download.pytorch.org/models/r3d_18-b3b3357e.pth",
    "vgg3d": "https://download.pytorch.org/models/vgg16-397923af.pth",  # 2D VGG-16, inflated to 3D on loading
}

#: layout name -> (backbones it applies to, module-path translation)
LAYOUTS: Dict[str, Tuple[Tuple[str, ...], Callable[[str], Optional[str]]]] = {
    "pytorchvideo_x3d": (("x3d_s", "x3d_m"), _ptv_x3d),
    "pytorchvideo_resnet": (("slow_r50",), _ptv_resnet),
    "pytorchvideo_slowfast": (("slowfast_r50",), _ptv_slowfast),
    "torchvision_r3d": (("r3d18",), _torchvision_r3d),
}


def read_checkpoint(source: PretrainedSource, name: Optional[str] = None) -> Dict[str, Tensor]:
    """The state dict held by ``source``: a path to a ``.pyth`` / ``.pth`` / ``.pt`` file, or a mapping
    (``name``: the backbone, for the error message of a missing file).

    A mapping (or file) holding ``"model_state"`` (PyTorchVideo / PySlowFast) or ``"state_dict"`` is unwrapped.
    Files are read with ``torch.load(weights_only=True)`` on the CPU: tensors only, no code from the file runs.

    Raises:
        FileNotFoundError: the path does not exist (the message says where published files come from).
        ValueError: the file cannot be read as tensors, or holds no state dict.
    """
    if isinstance(source, (str, os.PathLike)):
        path = os.fspath(source)
        if not os.path.isfile(path):
            url = PUBLISHED.get(name or "")
            where = f"{name}'s Kinetics weights are at {url}" if url else \
                f"published weights load into {', '.join(PUBLISHED)}"
            raise FileNotFoundError(f"pretrained checkpoint {path!r} not found (nothing is downloaded at run time): "
                                    f"download it first and give its path; {where}")
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:  # pickle / zip errors of many kinds
            raise ValueError(
                f"pretrained checkpoint {path!r} could not be read as tensors ({type(err).__name__}: "
                f"{str(err).splitlines()[0] if str(err) else ''}); if it holds more than tensors, save its "
                "state dict alone: torch.save(torch.load(p, weights_only=False)['model_state'], 'weights.pth')"
            ) from None
        where = path
    elif isinstance(source, Mapping):
        obj, where = source, "the given state dict"
    else:
        raise TypeError(f"pretrained must be a file path or a state dict, got {type(source).__name__}")
    for key in ("model_state", "state_dict"):
        if isinstance(obj, Mapping) and key in obj and isinstance(obj[key], Mapping):
            obj = obj[key]
            break
    if not isinstance(obj, Mapping) or not obj or not all(isinstance(v, Tensor) for v in obj.values()):
        raise ValueError(f"{where} holds no state dict (expected {{name: tensor}}, or {{'model_state': "
                         "{name: tensor}}} as in PyTorchVideo's .pyth files)")
    return dict(obj)


def _fits(value: Tensor, want: torch.Size) -> bool:
    """Same shape, or a 1x1x1 conv weight ``[O, I, 1, 1, 1]`` for a linear weight ``[O, I]``."""
    return value.shape == want or (value.dim() == len(want) + 3 and value.shape[:len(want)] == want
                                   and all(s == 1 for s in value.shape[len(want):]))


def convert_state_dict(state: Mapping[str, Tensor], name: str, model: nn.Module) -> Tuple[Dict[str, Tensor], List[str]]:
    """Rename the keys of a published state dict to those of ``model`` (backbone ``name``).

    The layout is the one of :data:`LAYOUTS` (for this backbone) under which most keys find a parameter of the
    same shape, or this package's own layout when every key is one of the model's.

    Returns ``(converted, unexpected)``: the state dict under this package's names (1x1x1 conv weights that
    this package holds as a linear layer are reshaped), and the keys that have no place in the model.

    Raises:
        ValueError: fewer than half of the keys fit under any layout this backbone reads (a checkpoint of
            another network).
    """
    own = model.state_dict()
    if set(state) <= set(own):
        return dict(state), []
    best: Tuple[int, str, Dict[str, Tensor], List[str]] = (-1, "", {}, [])
    for layout, (names, translate) in LAYOUTS.items():
        if name not in names:
            continue
        converted: Dict[str, Tensor] = {}
        unexpected: List[str] = []
        for key, value in state.items():
            module, _, param = key.rpartition(".")
            target = translate(module)
            ours = f"{target}.{param}" if target is not None else None
            if ours is None or ours not in own:
                unexpected.append(key)
                continue
            converted[ours] = value.reshape(own[ours].shape) if value.shape != own[ours].shape \
                and _fits(value, own[ours].shape) else value
        fitting = sum(v.shape == own[k].shape for k, v in converted.items())
        if fitting > best[0]:
            best = (fitting, layout, converted, unexpected)
    fitting, layout, converted, unexpected = best
    if fitting < len(state) / 2:
        readers = [f"{lay} ({', '.join(n)})" for lay, (n, _) in LAYOUTS.items()]
        raise ValueError(
            f"backbone {name!r}: the checkpoint is in no layout this backbone reads (at best {max(fitting, 0)} of its "
            f"{len(state)} tensors find a parameter of the same shape; first keys: {list(state)[:3]}). Is it a "
            f"checkpoint of another network? Layouts read: {'; '.join(readers)}; or this package's own state dict")
    return converted, unexpected


def _fill_aliases(converted: Dict[str, Tensor], own: Mapping[str, Tensor]) -> None:
    """Give every name of a shared tensor its value: blocks also register their last BatchNorm as
    ``last_bn`` (the same module under two names), so the state dict lists it twice."""
    groups: Dict[int, List[str]] = {}
    for key, value in own.items():
        if value.numel():
            groups.setdefault(value.data_ptr(), []).append(key)
    for names in groups.values():
        source = next((n for n in names if n in converted), None)
        if source is not None:
            for n in names:
                converted.setdefault(n, converted[source])


def _listing(keys: List[str], limit: int = 12) -> str:
    more = f" ... and {len(keys) - limit} more" if len(keys) > limit else ""
    return ", ".join(keys[:limit]) + more


def load_pretrained(model: nn.Module, name: str, source: PretrainedSource) -> Dict[str, List[str]]:
    """Load a published checkpoint into ``model`` (backbone ``name`` of :func:`build_backbone`), in place.

    Example::

        >>> from lightning_temporal.models import build_backbone
        >>> net = build_backbone("x3d_s", num_classes=4, pretrained="checkpoints/X3D_S.pyth")  # doctest: +SKIP

    Args:
        model: the freshly built backbone (SGS / attention, if any, already attached).
        name: its registry name (``x3d_s``, ``x3d_m``, ``slow_r50``, ``slowfast_r50``, ``r3d18``; any backbone
            for a state dict of this package's own layout).
        source: path of the checkpoint file, or a state dict (see :func:`read_checkpoint`).

    Returns:
        ``{"reinitialised": [...], "fresh": [...]}``: the model's keys kept at their initialisation (the
        classifier when the class count differs; SGS / attention modules).

    Raises:
        ValueError: missing or unexpected keys, or shapes that differ (listed), or an unknown layout.
        FileNotFoundError: the file does not exist.
    """
    if name == "vgg3d":  # a 2D VGG-16 inflated to 3D, not a renaming of a 3D checkpoint
        from lightning_temporal.models.vgg3d import load_vgg16_2d

        return {"reinitialised": [], **load_vgg16_2d(model, source)}
    state = read_checkpoint(source, name)
    where = os.fspath(source) if isinstance(source, (str, os.PathLike)) else "the given state dict"
    converted, unexpected = convert_state_dict(state, name, model)
    own = model.state_dict()
    reinit, wrong = [], []
    ckpt_classes = int(converted["head.fc.weight"].shape[0]) if "head.fc.weight" in converted else None
    for key, value in list(converted.items()):
        if value.shape == own[key].shape:
            continue
        if key.startswith("head.fc.") and value.shape[1:] == own[key].shape[1:]:
            reinit.append(key)
            del converted[key]
        else:
            wrong.append(f"{key} {tuple(value.shape)} vs {tuple(own[key].shape)}")
    _fill_aliases(converted, own)
    fresh = [k for k in own if k.startswith("temporal.") and k not in converted]
    optional = [k for k in own if k.endswith(".num_batches_tracked")]
    missing = [k for k in own if k not in converted and k not in reinit and k not in fresh and k not in optional]
    problems = []
    if missing:
        problems.append(f"{len(missing)} key(s) of the model missing from the checkpoint: {_listing(missing)}")
    if unexpected:
        problems.append(f"{len(unexpected)} key(s) of the checkpoint with no place in {name}: "
                        f"{_listing(unexpected)}")
    if wrong:
        problems.append(f"{len(wrong)} shape(s) differ (checkpoint vs model): {_listing(wrong)}")
    if problems:
        raise ValueError(f"pretrained {where} does not fit backbone {name!r}: " + "; ".join(problems))
    model.load_state_dict({**own, **converted})
    if reinit:
        warnings.warn(f"pretrained {where}: its classifier has {ckpt_classes} classes, this model "
                      f"{own['head.fc.weight'].shape[0]}: head.fc is re-initialised, the rest of {name} is loaded"
                      + (f"; the {name} temporal module (SGS / attention) starts fresh" if fresh else ""),
                      UserWarning, stacklevel=2)
    return {"reinitialised": reinit, "fresh": fresh}
