"""``vgg3d``: the seed's 3D VGG-16 (Temporal Stochastic Softmax, Ayral et al.; its released code and Table S.4
"Our baseline 3D VGG").

VGG-16 (Simonyan & Zisserman 2015, configuration D) with every 3 x 3 convolution inflated to 3 x 3 x 3 (the 2D
weights repeated over the 3 temporal taps and divided by 3, temporal padding 1) and its 2 x 2 max pools kept
spatial (1 x 2 x 2): no temporal pooling, so the features keep one temporal position per input frame. The fully
connected layers run per frame: VGG's adaptive 7 x 7 average pool, fc6 (25088 -> 4096), fc7 (4096 -> 4096), then
4096 -> 128 -> C. A clip's logits are the temporal max of its per-frame logits; over a whole video the per-frame
logits max-pooled over windows of F frames with stride 1 are every clip's logits from one pass (dense scoring:
``head.forward_dense(features, F)``, what ``VideoClassifier.dense_scores`` calls).

Built from a torchvision-layout 2D VGG-16 state dict (``features.N.weight`` / ``.bias`` for N in
:data:`CONV_INDICES`, ``classifier.0`` / ``classifier.3`` for fc6 / fc7) by :func:`inflate_vgg16_state_dict`;
nothing is downloaded. ``width`` scales every channel count and the 4096-d layers (a small variant for CPU
tests), ``pool_size`` the adaptive pool before fc6.

Counts at width 1, ``pool_size`` 7, C classes: parameters 3 * 14,710,464 + 4,224 (convolutions; the 2D
VGG-16's convolution weights are 14,710,464 and its biases 4,224) + 119,545,856 (fc6, fc7) + 524,416 (4096 ->
128) + 129 C; see :func:`vgg3d_param_count` and :func:`vgg3d_gmacs`.
"""
from __future__ import annotations

from typing import Dict, List, Mapping, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lightning_temporal.pooling import softmax_temporal_pool

__all__ = ["VGG3D", "vgg3d", "VGG16_CONFIG", "CONV_INDICES", "inflate_vgg16_state_dict", "load_vgg16_2d",
           "vgg3d_param_count", "vgg3d_gmacs"]

#: VGG-16 (configuration D): output channels of each 3 x 3 convolution, "M" a 2 x 2 max pool
VGG16_CONFIG: Tuple[Union[int, str], ...] = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M",
                                             512, 512, 512, "M")


def _conv_indices(config=VGG16_CONFIG) -> List[int]:
    """Index of each convolution in torchvision's ``features`` Sequential (conv, ReLU, ..., max pool)."""
    out, i = [], 0
    for v in config:
        if v == "M":
            i += 1
        else:
            out.append(i)
            i += 2
    return out


#: the ``features.N`` indices of the 13 convolutions in torchvision's VGG-16 (and here)
CONV_INDICES: Tuple[int, ...] = tuple(_conv_indices())


def _scaled(c: int, width: float) -> int:
    return max(1, int(round(c * width)))


class FramewiseHead(nn.Module):
    """The per-frame fully connected layers and the temporal max over a clip's frames.

    ``forward(feat [N, C, T, h, w], mask [N, T] or None) -> [N, K]``: per-frame logits, then their max over the
    (valid) frames. ``forward_dense(feat, window) -> [N, T - window + 1, K]``: per-frame logits max-pooled over
    windows of ``window`` frames with stride 1 (the logits of every clip start). ``frame_logits(feat) ->
    [N, T, K]``.
    """

    def __init__(self, in_channels: int, num_classes: int, hidden: int, embed: int, pool_size: int,
                 dropout: float) -> None:
        super().__init__()
        self.pool_size = pool_size
        self.avgpool = nn.AdaptiveAvgPool2d((pool_size, pool_size))
        self.classifier = nn.Sequential(  # torchvision's classifier.0 .. classifier.5 (fc6, fc7)
            nn.Linear(in_channels * pool_size * pool_size, hidden), nn.ReLU(inplace=True), nn.Dropout(dropout),
            nn.Linear(hidden, hidden), nn.ReLU(inplace=True), nn.Dropout(dropout))
        self.embed = nn.Sequential(nn.Linear(hidden, embed), nn.ReLU(inplace=True), nn.Dropout(dropout))
        self.fc = nn.Linear(embed, num_classes)

    def frame_logits(self, feat: Tensor) -> Tensor:
        """Per-frame logits ``[N, T, K]`` of features ``[N, C, T, h, w]`` (one frame at a time, batched)."""
        if feat.dim() != 5:
            raise ValueError(f"vgg3d head expects features [N, C, T, h, w], got shape {tuple(feat.shape)}")
        n, c, t, h, w = feat.shape
        x = feat.transpose(1, 2).reshape(n * t, c, h, w)
        x = torch.flatten(self.avgpool(x), 1)
        return self.fc(self.embed(self.classifier(x))).view(n, t, -1)

    def forward(self, feat: Tensor, mask: Optional[Tensor] = None) -> Tensor:
        return softmax_temporal_pool(self.frame_logits(feat), float("inf"), dim=1, mask=mask)

    def forward_dense(self, feat: Tensor, window: int = 1) -> Tensor:
        z = self.frame_logits(feat)  # N, T, K
        if not isinstance(window, int) or isinstance(window, bool) or not 1 <= window <= z.shape[1]:
            raise ValueError(f"window={window!r}; an integer in 1..{z.shape[1]} (frames) is allowed")
        if window == 1:
            return z
        return F.max_pool1d(z.transpose(1, 2), window, 1).transpose(1, 2)


class VGG3D(nn.Module):
    """3D VGG-16 of the seed (see the module docstring).

    Example::

        >>> m = vgg3d(num_classes=4, width=1 / 16, pool_size=1)
        >>> clip = torch.randn(2, 3, 8, 32, 32)
        >>> m(clip).shape, m.head.forward_dense(m.forward_features(clip)[0], 4).shape
        (torch.Size([2, 4]), torch.Size([2, 5, 4]))

    Args:
        num_classes: C.
        width: multiplier of every channel count and of the 4096-d layers (1 = VGG-16).
        embed: the per-frame embedding before the classifier (128 in the seed).
        pool_size: the adaptive average pool before fc6 (7 as in VGG-16; 1 keeps fc6 small for tests).
        dropout: dropout after fc6, fc7 and the embedding (VGG's 0.5).
        config: the convolution configuration (default VGG-16's).
    """

    temporal = None  # no SGS / attention module: dense scoring reads every frame

    def __init__(self, num_classes: int = 4, width: float = 1.0, embed: int = 128, pool_size: int = 7,
                 dropout: float = 0.5, config: Sequence[Union[int, str]] = VGG16_CONFIG) -> None:
        super().__init__()
        if not isinstance(num_classes, int) or num_classes < 1:
            raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")
        if not (isinstance(width, (int, float)) and 0 < width <= 4):
            raise ValueError(f"width must be a number in (0, 4], got {width!r}")
        if not isinstance(pool_size, int) or pool_size < 1:
            raise ValueError(f"pool_size must be an int >= 1, got {pool_size!r}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        layers: List[nn.Module] = []
        cin = 3
        for v in config:
            if v == "M":
                layers.append(nn.MaxPool3d((1, 2, 2), (1, 2, 2)))  # no temporal pooling
            else:
                cout = _scaled(int(v), width)
                layers += [nn.Conv3d(cin, cout, 3, padding=1), nn.ReLU(inplace=True)]
                cin = cout
        self.features = nn.Sequential(*layers)
        self.out_channels = cin
        self.head = FramewiseHead(cin, num_classes, _scaled(4096, width), embed, pool_size, dropout)
        for m in self.modules():  # torchvision's VGG initialisation
            if isinstance(m, nn.Conv3d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.zeros_(m.bias)

    def forward_features(self, x: Tensor) -> Tuple[Tensor, None]:
        """``x [N, 3, T, H, W]`` -> (features ``[N, C, T, H / 32, W / 32]``, mask None)."""
        if x.dim() != 5:
            raise ValueError(f"vgg3d expects clips [N, 3, T, H, W], got shape {tuple(x.shape)}")
        return self.features(x), None

    def forward(self, x: Tensor) -> Tensor:
        """Clip logits ``[N, K]``: the max over the clip's frames of the per-frame logits."""
        return self.head(self.forward_features(x)[0])

    def stage_channels(self, name: str) -> int:
        raise ValueError("vgg3d takes no SGS / attention module (the seed's 3D VGG has none); use another backbone")

    def insert_temporal(self, *args, **kwargs) -> None:
        raise ValueError("vgg3d takes no SGS / attention module (the seed's 3D VGG has none); use another backbone")


def vgg3d(num_classes: int = 4, width: float = 1.0, embed: int = 128, pool_size: int = 7, dropout: float = 0.5,
          pretrained_2d=None) -> VGG3D:
    """The seed's 3D VGG-16; ``pretrained_2d``: a torchvision-layout 2D VGG-16 state dict or the path of one
    (e.g. ImageNet's ``vgg16-397923af.pth``, or a face-expression VGG-16), inflated by :func:`load_vgg16_2d`."""
    model = VGG3D(num_classes, width, embed, pool_size, dropout)
    if pretrained_2d is not None:
        load_vgg16_2d(model, pretrained_2d)
    return model


def inflate_vgg16_state_dict(state_2d: Mapping[str, Tensor], model: VGG3D) -> Dict[str, Tensor]:
    """The 2D VGG-16 state dict (torchvision layout) as ``model``'s: each conv weight ``[O, I, 3, 3]`` repeated
    over 3 temporal taps and divided by 3 (``[O, I, 3, 3, 3]``, so a temporally constant input gives the 2D
    response), biases as they are, fc6 / fc7 (``classifier.0`` / ``classifier.3``) copied to
    ``head.classifier.0`` / ``.3``; the 1000-class ``classifier.6`` is left out (the new 4096 -> 128 -> C layers
    start fresh).

    Raises ``ValueError`` listing missing keys and shapes that differ from ``model``'s.
    """
    own = model.state_dict()
    out: Dict[str, Tensor] = {}
    missing, wrong = [], []
    pairs = [(f"features.{i}.{p}", f"features.{i}.{p}") for i in CONV_INDICES for p in ("weight", "bias")]
    pairs += [(f"classifier.{i}.{p}", f"head.classifier.{i}.{p}") for i in (0, 3) for p in ("weight", "bias")]
    for src, dst in pairs:
        if src not in state_2d:
            missing.append(src)
            continue
        v = torch.as_tensor(state_2d[src])
        if v.dim() == 4:  # conv weight: inflate to 3 x k x k
            v = v[:, :, None].repeat(1, 1, 3, 1, 1) / 3.0
        if dst not in own or v.shape != own[dst].shape:
            wrong.append(f"{src} {tuple(v.shape)} vs {tuple(own[dst].shape) if dst in own else 'absent'}")
            continue
        out[dst] = v.to(own[dst].dtype)
    if missing or wrong:
        raise ValueError("the 2D VGG-16 state dict does not fit vgg3d: "
                         + "; ".join(([f"missing {missing[:6]}"] if missing else [])
                                     + ([f"shapes differ (inflated vs model): {wrong[:6]}"] if wrong else []))
                         + ". Give a torchvision-layout VGG-16 (features.N / classifier.N) of the same width and "
                         "pool size")
    return out


def load_vgg16_2d(model: VGG3D, source) -> Dict[str, List[str]]:
    """Load a 2D VGG-16 (a state dict or a file path, read with ``torch.load(weights_only=True)``; nothing is
    downloaded) into ``model`` by inflation. Returns ``{"fresh": [...]}``, the keys left at their
    initialisation (the 4096 -> 128 -> C layers)."""
    from lightning_temporal.models.pretrained import read_checkpoint

    inflated = inflate_vgg16_state_dict(read_checkpoint(source, "vgg3d"), model)
    own = model.state_dict()
    model.load_state_dict({**own, **inflated})
    return {"fresh": [k for k in own if k not in inflated]}


def vgg3d_param_count(num_classes: int, width: float = 1.0, embed: int = 128, pool_size: int = 7) -> int:
    """Parameters of :func:`vgg3d` from the layer shapes: 27 I O + O per convolution, then the linear layers."""
    total, cin = 0, 3
    for v in VGG16_CONFIG:
        if v != "M":
            cout = _scaled(int(v), width)
            total += 27 * cin * cout + cout
            cin = cout
    hidden = _scaled(4096, width)
    dims = [cin * pool_size * pool_size, hidden, hidden, embed, num_classes]
    return total + sum(a * b + b for a, b in zip(dims[:-1], dims[1:]))


def vgg3d_gmacs(num_classes: int, frames: int, height: int, width_px: int, width: float = 1.0, embed: int = 128,
                pool_size: int = 7) -> float:
    """GMACs of one clip of ``frames`` x ``height`` x ``width_px``: 27 I O per output position of each
    convolution (T x H x W positions, halved spatially by each pool), the linear layers once per frame."""
    macs, cin, h, w = 0, 3, height, width_px
    for v in VGG16_CONFIG:
        if v == "M":
            h, w = h // 2, w // 2
        else:
            cout = _scaled(int(v), width)
            macs += 27 * cin * cout * frames * h * w
            cin = cout
    hidden = _scaled(4096, width)
    dims = [cin * pool_size * pool_size, hidden, hidden, embed, num_classes]
    macs += frames * sum(a * b for a, b in zip(dims[:-1], dims[1:]))
    return macs / 1e9
