"""Videos stored as folders of frame images (jpg/png/bmp), decoded with PyAV.

Frame ``i`` is the ``i``-th image file of the folder in natural name order (``frame_2`` before ``frame_10``;
for zero-padded names this is plain name order). Other files and sub-folders are ignored. The frame count is
the number of image files; an image that cannot be decoded raises :class:`VideoError` naming it when it is
read (decoding every image to count it would cost as much as reading the whole video).

Use it through :mod:`lightning_temporal.data.video` (``probe``, ``read_clip`` and ``VideoReader`` accept a
folder path); this module holds the folder-specific part.
"""
from __future__ import annotations

import os
import re
from typing import List, Optional, Tuple

import av
import numpy as np

from lightning_temporal.data.video import VideoError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp")


def _natural_key(name: str):
    # "frame_10" sorts after "frame_9"; re.split puts strings at even and ints at odd positions, so
    # keys of any two names compare element by element without mixing str and int.
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", name)]


def list_frames(folder: str) -> List[str]:
    """Paths of the frame images of ``folder`` in frame order; raises VideoError when there is none."""
    try:
        names = [n for n in os.listdir(folder) if n.lower().endswith(IMAGE_EXTENSIONS)]
    except OSError as err:
        raise VideoError(f"{folder}: cannot list the frame folder ({err}); check the path and permissions") from err
    names = [n for n in names if os.path.isfile(os.path.join(folder, n))]
    if not names:
        raise VideoError(
            f"{folder}: frame folder holds no image ({'/'.join(IMAGE_EXTENSIONS)}); extract the frames or "
            "remove the video from the manifest"
        )
    names.sort(key=_natural_key)
    return [os.path.join(folder, n) for n in names]


def decode_image(path: str, size: Optional[Tuple[int, int]] = None) -> np.ndarray:
    """One image file as uint8 [H, W, 3] (``size=(h, w)``: swscale resizes during the RGB conversion)."""
    kwargs = {} if size is None else {"height": size[0], "width": size[1]}
    try:
        with av.open(path) as container:
            for frame in container.decode(video=0):
                return frame.to_ndarray(format="rgb24", **kwargs)
    except (av.FFmpegError, IndexError, ValueError) as err:
        raise VideoError(f"{path}: cannot decode this frame image ({err}); re-extract the frame folder") from err
    raise VideoError(f"{path}: the image holds no decodable picture; re-extract the frame folder")


class FrameFolder:
    """Reads frames of a frame-folder video by index.

    >>> folder = FrameFolder("video_frames/")                     # doctest: +SKIP
    >>> folder.decode(np.array([0, 2, 4]), size=(112, 112)).shape  # doctest: +SKIP
    (3, 112, 112, 3)
    """

    def __init__(self, path: str):
        self.path = path
        self.files = list_frames(path)
        first = decode_image(self.files[0])
        self.height, self.width = first.shape[:2]

    @property
    def num_frames(self) -> int:
        return len(self.files)

    def decode(self, wanted: np.ndarray, size: Optional[Tuple[int, int]]) -> np.ndarray:
        """Frames ``wanted`` (int64 [U], indices < num_frames) as uint8 [U, H, W, 3]."""
        h, w = (self.height, self.width) if size is None else size
        out = np.empty((len(wanted), h, w, 3), np.uint8)
        for j, i in enumerate(wanted.tolist()):
            image = decode_image(self.files[i], size)
            if image.shape[:2] != (h, w):
                raise VideoError(
                    f"{self.files[i]}: frame is {image.shape[1]}x{image.shape[0]} but the folder's first frame is "
                    f"{w}x{h}; re-extract the frames at one size or pass size=(h, w)"
                )
            out[j] = image
        return out
