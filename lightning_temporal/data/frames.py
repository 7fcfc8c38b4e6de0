"""Videos stored as folders of frame images, named ``prefix + number + extension``, decoded with PyAV.

A folder holds one video under one naming pattern: one prefix, one extension, numbers without gaps starting
at 0 or 1 (zero-padded or not). Frame ``i`` is the image numbered ``first + i``. Other files (a ``.txt``, a
sub-folder) are ignored.

* ``frame_pattern=None`` (default): the single ``prefix*extension`` group of image files (``.jpg``, ``.jpeg``,
  ``.png``, ``.bmp``) in the folder. A folder holding several groups (the "rawframes" layout ``img_*.jpg`` +
  ``flow_x_*.jpg`` + ``flow_y_*.jpg``, or the same frames as ``.jpg`` and ``.png``) is refused with an error
  that lists the groups found: pass ``frame_pattern``.
* ``frame_pattern="img_{:05d}.jpg"``: a ``str.format`` pattern with one integer field; only files whose name
  it writes exactly are frames (``img_00007.jpg``, not ``img_7.jpg``).

A missing number is an error naming it (never a silent shift of the later frames); so are two files with one
number (``img_1.jpg`` and ``img_01.jpg``). An image that cannot be decoded raises :class:`VideoError` naming
it when it is read (decoding every image to check it would cost as much as reading the whole video).

A frame folder can also be named by a *pattern path*: ``"/data/v_001/img_{:05d}.jpg"`` is the folder
``/data/v_001`` read with that pattern (this is how a manifest row names a pattern per video).
"""
from __future__ import annotations

import os
import re
import string
import threading
from typing import Dict, List, Optional, Tuple

import av
import numpy as np
from av.video.reformatter import VideoReformatter

from lightning_temporal.data.errors import VideoError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp")
_NUMBERED = re.compile(r"^(.*?)(\d+)(\.[^.]+)$")  # prefix, number, extension


def check_frame_pattern(pattern: str) -> Tuple[str, str]:
    """``(prefix, suffix)`` of a frame pattern such as ``"img_{:05d}.jpg"``; ValueError when it is not one.

    The pattern is a file name (no folder) with exactly one ``str.format`` field that formats an integer.
    """
    if not isinstance(pattern, str):
        raise ValueError(f"frame_pattern={pattern!r}; give a file-name pattern such as 'img_{{:05d}}.jpg'")
    try:
        fields = list(string.Formatter().parse(pattern))
        pattern.format(7)
    except (ValueError, IndexError, KeyError) as err:
        raise ValueError(f"frame_pattern={pattern!r} is not a valid format string ({err}); write e.g. "
                         "'img_{:05d}.jpg'") from None
    named = [f for f in fields if f[1] is not None]
    if len(named) != 1 or named[0][1] not in ("", "0") or named[0][3] is not None:
        raise ValueError(f"frame_pattern={pattern!r} must hold exactly one field for the frame number, such as "
                         "{:05d} or {}, e.g. 'img_{:05d}.jpg'")
    if os.sep in pattern or (os.altsep and os.altsep in pattern):
        raise ValueError(f"frame_pattern={pattern!r} is a file name pattern; give the folder as the video path "
                         "and the file names here")
    prefix = "".join(f[0] for f in fields[:fields.index(named[0]) + 1])
    suffix = "".join(f[0] for f in fields[fields.index(named[0]) + 1:])
    return prefix.replace("{{", "{").replace("}}", "}"), suffix.replace("{{", "{").replace("}}", "}")


def video_name(path: str) -> str:
    """Short name of a manifest path for titles and file names: the file (or folder) name, or the folder's name
    for a pattern path (``"/data/v_001/img_{:05d}.jpg"`` -> ``"v_001"``)."""
    folder, name = os.path.split(os.path.normpath(str(path)))
    if "{" in name and "}" in name:
        return os.path.basename(folder) or folder or name
    return name


def split_pattern_path(path: str) -> Optional[Tuple[str, str]]:
    """``(folder, pattern)`` for a pattern path ``"folder/img_{:05d}.jpg"`` whose folder exists, else None."""
    folder, name = os.path.split(path)
    if "{" not in name or os.path.exists(path) or not os.path.isdir(folder or "."):
        return None
    check_frame_pattern(name)
    return folder or ".", name


def _group_label(prefix: str, ext: str) -> str:
    return f"{prefix}*{ext}"


def _numbered_images(folder: str) -> Tuple[Dict[Tuple[str, str], List[Tuple[int, str]]], List[str]]:
    """Image files of ``folder`` grouped by (prefix, extension) with their numbers, and the unnumbered ones."""
    groups: Dict[Tuple[str, str], List[Tuple[int, str]]] = {}
    unnumbered = []
    for name in _files(folder):
        if not name.lower().endswith(IMAGE_EXTENSIONS):
            continue
        m = _NUMBERED.match(name)
        if m is None:
            unnumbered.append(name)
            continue
        groups.setdefault((m.group(1), m.group(3)), []).append((int(m.group(2)), name))
    return groups, unnumbered


def _files(folder: str) -> List[str]:
    try:
        with os.scandir(folder) as it:
            return [e.name for e in it if e.is_file()]
    except OSError as err:
        raise VideoError(f"{folder}: cannot list the frame folder ({err}); check the path and permissions") from err


def _pattern_images(folder: str, pattern: str) -> List[Tuple[int, str]]:
    prefix, suffix = check_frame_pattern(pattern)
    rx = re.compile("^" + re.escape(prefix) + r"(\s*[+-]?\d+)" + re.escape(suffix) + "$")
    out = []
    for name in _files(folder):
        m = rx.match(name)
        if m is not None and pattern.format(int(m.group(1))) == name:
            out.append((int(m.group(1)), name))
    return out


def list_frames(folder: str, frame_pattern: Optional[str] = None) -> List[str]:
    """Paths of the frame images of ``folder`` in frame order (see the module docstring for the rules).

    Raises VideoError naming the folder when it holds no frame, several naming patterns (listed), a missing
    number, or two files with one number.
    """
    if frame_pattern is not None:
        numbered = _pattern_images(folder, frame_pattern)
        if not numbered:
            raise VideoError(f"{folder}: no file matches frame_pattern={frame_pattern!r} ({_found(folder)}); "
                             "fix the pattern or extract the frames")
        label = repr(frame_pattern)
    else:
        groups, unnumbered = _numbered_images(folder)
        if not groups and not unnumbered:
            raise VideoError(f"{folder}: frame folder holds no image ({'/'.join(IMAGE_EXTENSIONS)}); extract the "
                             "frames or remove the video from the manifest")
        if len(groups) + bool(unnumbered) > 1 or not groups:
            raise VideoError(f"{folder}: frame folder holds several naming patterns ({_found(folder)}); a folder is "
                             "read by one prefix + number + extension: pass frame_pattern, e.g. "
                             f"{_example(groups)!r}, or move the other images out")
        (prefix, ext), numbered = next(iter(groups.items()))
        label = _group_label(prefix, ext)
    numbered.sort()
    numbers = np.array([n for n, _ in numbered], np.int64)
    dup = np.flatnonzero(np.diff(numbers) == 0)
    if len(dup):
        a, b = numbered[dup[0]][1], numbered[dup[0] + 1][1]
        raise VideoError(f"{folder}: {a} and {b} both hold frame number {numbers[dup[0]]} ({label}); keep one of them")
    first = int(numbers[0])
    if first > 1:
        raise VideoError(f"{folder}: frame number 1 is missing ({label}: the first file is {numbered[0][1]}, number "
                         f"{first}; numbering starts at 0 or 1): re-extract the frames or remove the video")
    gap = np.flatnonzero(numbers != first + np.arange(len(numbers)))
    if len(gap):
        missing = first + int(gap[0])
        raise VideoError(f"{folder}: frame number {missing} is missing ({label}: {len(numbers)} files numbered "
                         f"{first}..{int(numbers[-1])}, the next one after {numbered[gap[0] - 1][1] if gap[0] else '-'} "
                         f"is {numbered[gap[0]][1]}); re-extract the frames or remove the video from the manifest")
    return [os.path.join(folder, name) for _, name in numbered]


def _found(folder: str) -> str:
    groups, unnumbered = _numbered_images(folder)
    parts = [f"{_group_label(p, e)}: {len(v)} files" for (p, e), v in sorted(groups.items())]
    if unnumbered:
        parts.append(f"unnumbered: {', '.join(sorted(unnumbered)[:3])}{' ...' if len(unnumbered) > 3 else ''}")
    return "; ".join(parts) or "no image files"


def _example(groups) -> str:
    if not groups:
        return "img_{:05d}.jpg"
    (prefix, ext), numbered = max(groups.items(), key=lambda kv: (kv[0][0].startswith(("img", "frame")), len(kv[1])))
    name = min(numbered)[1]
    width = len(name) - len(prefix) - len(ext)
    return f"{prefix}{{:0{width}d}}{ext}" if name[len(prefix)] == "0" and width > 1 else f"{prefix}{{}}{ext}"


_LOCAL = threading.local()


def rgb_array(frame: av.VideoFrame, size: Optional[Tuple[int, int]] = None) -> np.ndarray:
    """A decoded picture as uint8 [H, W, 3] RGB, resized to ``size=(h, w)`` during the conversion when given.

    Converted by this thread's one swscale context with one thread: ``VideoFrame.to_ndarray`` builds a new
    context per frame with automatic threads, which cost 3-10x the conversion itself here. Same pixels as
    ``frame.to_ndarray(format="rgb24", height=h, width=w)`` (same scaler, bilinear).
    """
    reformatter = getattr(_LOCAL, "reformatter", None)
    if reformatter is None:
        reformatter = _LOCAL.reformatter = VideoReformatter()
    if size is None:
        return reformatter.reformat(frame, format="rgb24", threads=1).to_ndarray()
    return reformatter.reformat(frame, format="rgb24", width=size[1], height=size[0], threads=1).to_ndarray()


def decode_image(path: str, size: Optional[Tuple[int, int]] = None) -> np.ndarray:
    """One image file as uint8 [H, W, 3] (``size=(h, w)``: swscale resizes during the RGB conversion)."""
    try:
        with av.open(path) as container:
            for frame in container.decode(video=0):
                return rgb_array(frame, size)
    except (av.FFmpegError, IndexError, ValueError) as err:
        raise VideoError(f"{path}: cannot decode this frame image ({err}); re-extract the frame folder") from err
    raise VideoError(f"{path}: the image holds no decodable picture; re-extract the frame folder")


class FrameFolder:
    """Reads frames of a frame-folder video by index.

    >>> folder = FrameFolder("video_frames/", frame_pattern="img_{:05d}.jpg")  # doctest: +SKIP
    >>> folder.decode(np.array([0, 2, 4]), size=(112, 112)).shape            # doctest: +SKIP
    (3, 112, 112, 3)

    ``files``: the frame paths in order; ``height``/``width``: the first frame's size in pixels.
    """

    def __init__(self, path: str, frame_pattern: Optional[str] = None, files: Optional[List[str]] = None,
                 shape: Optional[Tuple[int, int]] = None):
        self.path = path
        self.frame_pattern = frame_pattern
        self.files = files if files is not None else list_frames(path, frame_pattern)
        self.height, self.width = shape if shape is not None else decode_image(self.files[0]).shape[:2]

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
