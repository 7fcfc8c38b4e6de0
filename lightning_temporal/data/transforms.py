"""Clip transforms on plain torch (no torchvision), vectorised over the frames of a clip.

Input is a decoded clip, uint8 ``[T, H, W, 3]``; output float32 ``[C, T, H, W]`` (C = 3). Each random
choice (crop position, flip) is drawn once per clip and applied to all its frames, from ``generator``
(``ClipDataset`` passes one seeded by the clip's key, so the same clip gets the same augmentation in any worker,
on any rank and after a restart) or, when it is None, from torch's global RNG.
"""
from __future__ import annotations

from typing import Optional, Sequence, Tuple

import torch
import torch.nn.functional as F

__all__ = [
    "short_side_size",
    "to_float_clip",
    "resize_short_side",
    "crop",
    "center_crop_offsets",
    "random_crop_offsets",
    "hflip",
    "normalize",
    "TrainTransform",
    "CleanTransform",
]

# Kinetics statistics on [0, 1] pixels, as in PyTorchVideo / SlowFast.
KINETICS_MEAN = (0.45, 0.45, 0.45)
KINETICS_STD = (0.225, 0.225, 0.225)


def short_side_size(height: int, width: int, short_side: int) -> Tuple[int, int]:
    """(h, w) with the shorter side = ``short_side`` and the aspect ratio kept (long side truncated, as
    torchvision does)."""
    if height <= width:
        return short_side, int(short_side * width / height)
    return int(short_side * height / width), short_side


def _check_clip(clip: torch.Tensor) -> torch.Tensor:
    """The uint8 ``[T, H, W, 3]`` clip as a ``[T, 3, H, W]`` view (frames as the batch of an image op)."""
    if not torch.is_tensor(clip) or clip.dtype != torch.uint8 or clip.ndim != 4 or clip.shape[-1] != 3:
        what = f"{clip.dtype} {tuple(clip.shape)}" if torch.is_tensor(clip) else type(clip).__name__
        raise ValueError(f"expected a decoded clip, uint8 [T, H, W, 3]; got {what}")
    return clip.permute(0, 3, 1, 2)


def to_float_clip(clip: torch.Tensor) -> torch.Tensor:
    """uint8 ``[T, H, W, 3]`` -> float32 ``[T, 3, H, W]`` in [0, 1]."""
    return _check_clip(clip).float().div_(255.0)


def resize_short_side(frames: torch.Tensor, short_side: int, antialias: bool = True) -> torch.Tensor:
    """Bilinear resize of ``[T, C, H, W]`` so the shorter side is ``short_side``; one interpolate call for
    all frames. Returns the input unchanged (any dtype) when it already has that size, else float32."""
    h, w = frames.shape[-2:]
    size = short_side_size(h, w, short_side)
    if size == (h, w):
        return frames
    return F.interpolate(frames.float(), size=size, mode="bilinear", align_corners=False, antialias=antialias)


def _check_crop(h: int, w: int, size: int) -> None:
    if size > h or size > w:
        raise ValueError(f"crop size {size} is larger than the frames ({h}x{w}); resize to a short side >= "
                         f"{size} first")


def center_crop_offsets(height: int, width: int, size: int) -> Tuple[int, int]:
    """(top, left) of the centred ``size`` x ``size`` crop (rounded as torchvision does)."""
    _check_crop(height, width, size)
    return int(round((height - size) / 2.0)), int(round((width - size) / 2.0))


def random_crop_offsets(height: int, width: int, size: int,
                        generator: Optional[torch.Generator] = None) -> Tuple[int, int]:
    """(top, left) drawn uniformly among all positions of a ``size`` x ``size`` crop."""
    _check_crop(height, width, size)
    top = int(torch.randint(height - size + 1, (1,), generator=generator))
    left = int(torch.randint(width - size + 1, (1,), generator=generator))
    return top, left


def crop(frames: torch.Tensor, top: int, left: int, size: int) -> torch.Tensor:
    """The ``size`` x ``size`` window at (top, left) of ``[..., H, W]`` (a view)."""
    return frames[..., top:top + size, left:left + size]


def hflip(frames: torch.Tensor) -> torch.Tensor:
    """Mirror ``[..., H, W]`` left-right (columns reversed)."""
    return frames.flip(-1)


def normalize(frames: torch.Tensor, mean: torch.Tensor, std: torch.Tensor, channel_dim: int = -3) -> torch.Tensor:
    """(x - mean[c]) / std[c] per channel; ``mean``/``std`` float [C]."""
    shape = [1] * frames.ndim
    shape[channel_dim] = -1
    return (frames - mean.view(shape)) / std.view(shape)


class _ClipTransform:
    """Shared argument checks and the final layout step of the train and clean transforms."""

    def __init__(self, crop_size: int, short_side: int, mean: Sequence[float], std: Sequence[float]):
        for name, v in (("crop_size", crop_size), ("short_side", short_side)):
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ValueError(f"{name}={v!r}; a positive integer number of pixels is allowed")
        if crop_size > short_side:
            raise ValueError(f"crop_size={crop_size} > short_side={short_side}; the crop must fit in the resized "
                             "frame, so use crop_size <= short_side")
        mean_t = torch.as_tensor(mean, dtype=torch.float32).flatten()
        std_t = torch.as_tensor(std, dtype=torch.float32).flatten()
        if mean_t.numel() != 3 or std_t.numel() != 3 or not bool((std_t > 0).all()):
            raise ValueError(f"mean={mean!r}, std={std!r}; give 3 values each (RGB, for pixels in [0, 1]), "
                             "std > 0")
        self.crop_size, self.short_side = crop_size, short_side
        self.mean, self.std = mean_t, std_t
        self._scale = (1.0 / (255.0 * std_t)).view(3, 1, 1, 1)  # per channel of [C, T, h, w]
        self._shift = (mean_t / std_t).view(3, 1, 1, 1)

    def _finish(self, frames: torch.Tensor) -> torch.Tensor:
        """Cropped ``[T, 3, h, w]`` pixels in 0..255 (uint8 or float) -> normalised float32 ``[3, T, h, w]``.

        (x / 255 - mean) / std is folded into one multiply-subtract written straight into the output layout,
        so the clip is converted once, after cropping (fewer pixels), and never copied for the transpose.
        """
        t, c, h, w = frames.shape
        out = torch.empty((c, t, h, w), dtype=torch.float32)
        torch.mul(frames.transpose(0, 1), self._scale, out=out)
        return out.sub_(self._shift)

    def __repr__(self) -> str:
        extra = f", flip={self.flip}" if hasattr(self, "flip") else ""
        return (f"{type(self).__name__}(crop_size={self.crop_size}, short_side={self.short_side}{extra}, "
                f"mean={self.mean.tolist()}, std={self.std.tolist()})")


class TrainTransform(_ClipTransform):
    """Training augmentation: short-side resize, random crop, random horizontal flip, normalisation.

    >>> t = TrainTransform(crop_size=112, short_side=128)
    >>> t(torch.zeros(16, 120, 160, 3, dtype=torch.uint8)).shape
    torch.Size([3, 16, 112, 112])

    Input uint8 ``[T, H, W, 3]``; output float32 ``[3, T, crop_size, crop_size]``. One crop position and
    one flip decision per clip, drawn from ``generator`` (or the global RNG when it is None): the crop's top,
    then its left offset (``torch.randint``), then the flip (``torch.rand() < 0.5``).
    """

    def __init__(self, crop_size: int, short_side: int, flip: bool = True,
                 mean: Sequence[float] = KINETICS_MEAN, std: Sequence[float] = KINETICS_STD):
        super().__init__(crop_size, short_side, mean, std)
        self.flip = bool(flip)

    def __call__(self, clip: torch.Tensor, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        frames = resize_short_side(_check_clip(clip), self.short_side)  # T, 3, H, W (uint8 when not resized)
        top, left = random_crop_offsets(frames.shape[-2], frames.shape[-1], self.crop_size, generator)
        frames = crop(frames, top, left, self.crop_size)
        if self.flip and bool(torch.rand((), generator=generator) < 0.5):
            frames = hflip(frames)
        return self._finish(frames)


class CleanTransform(_ClipTransform):
    """Deterministic view for clip scoring and evaluation: short-side resize, centre crop, normalisation.

    >>> t = CleanTransform(crop_size=112, short_side=128)
    >>> t(torch.zeros(16, 120, 160, 3, dtype=torch.uint8)).shape
    torch.Size([3, 16, 112, 112])
    """

    def __init__(self, crop_size: int, short_side: int, mean: Sequence[float] = KINETICS_MEAN,
                 std: Sequence[float] = KINETICS_STD):
        super().__init__(crop_size, short_side, mean, std)

    def __call__(self, clip: torch.Tensor, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        frames = resize_short_side(_check_clip(clip), self.short_side)
        top, left = center_crop_offsets(frames.shape[-2], frames.shape[-1], self.crop_size)
        return self._finish(crop(frames, top, left, self.crop_size))
