"""Frame-exact clip decoding with PyAV (placeholder: sequential decode; the fast seeking reader replaces it)."""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Optional, Sequence, Tuple

import av
import numpy as np
import torch


class VideoError(RuntimeError):
    """A video that cannot be opened or decoded; the message names the file and what to do."""


@dataclass(frozen=True)
class VideoInfo:
    path: str
    num_frames: int  # exact number of decodable frames
    fps: float
    height: int
    width: int


def _frames(path: str):
    if not os.path.exists(path):
        raise VideoError(f"{path}: file not found; check the manifest path or the data root")
    try:
        with av.open(path) as container:
            if not container.streams.video:
                raise VideoError(f"{path}: no video stream; remove it from the manifest")
            for frame in container.decode(video=0):
                yield frame.to_ndarray(format="rgb24")
    except av.FFmpegError as err:
        raise VideoError(f"{path}: cannot decode ({err}); re-encode or remove the file") from err


def probe(path: str) -> VideoInfo:
    count, shape = 0, None
    for arr in _frames(path):
        count += 1
        shape = arr.shape
    if count == 0:
        raise VideoError(f"{path}: zero decodable frames; re-encode or remove the file")
    with av.open(path) as c:
        rate = c.streams.video[0].average_rate
    return VideoInfo(path, count, float(rate or 0.0), shape[0], shape[1])


def read_clip(path: str, start: int, num_frames: int, stride: int = 1, *, size: Optional[Tuple[int, int]] = None) -> torch.Tensor:
    """Frames start, start+stride, ... (num_frames of them) as uint8 [T, H, W, 3]; past the end the last frame repeats."""
    wanted = start + stride * np.arange(num_frames)
    frames = [a for a in _frames(path)]
    if not frames:
        raise VideoError(f"{path}: zero decodable frames; re-encode or remove the file")
    idx = np.minimum(wanted, len(frames) - 1)
    return torch.from_numpy(np.stack([frames[i] for i in idx]))
