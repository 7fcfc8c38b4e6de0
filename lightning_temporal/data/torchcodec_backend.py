"""Optional decoding backend: torchcodec decodes the frames, the package's frame table names them.

``read_clip(..., backend="torchcodec")`` (and :class:`~lightning_temporal.data.video.VideoReader`, the datasets'
``backend`` argument) decode with `torchcodec <https://github.com/pytorch/torchcodec>`_ (``pip install
"lightning_temporal[torchcodec]"``; it links the system's FFmpeg libraries: ``apt-get install ffmpeg``) instead of
PyAV. What stays the same whatever the backend:

* **Which frame is frame i**: the frame table of :mod:`lightning_temporal.data.frame_table` (one PyAV demux pass,
  cached per file) is handed to torchcodec as its frame mapping (``custom_frame_mappings``: every frame's pts,
  duration to the next one and keyframe flag, for the GOPs a read needs; torchcodec then scans nothing),
  torchcodec is asked for frames by index, and every picture it returns is checked to carry exactly the table's
  pts. torchcodec's own scan is never
  used: on a damaged file its numbering differs (a lost packet shifts its later frames down), and asking for the
  frame "played at" a time picks the wrong one where a container's frame durations are nominal (variable frame
  rate in Matroska).
* **Errors**: a read over a frame the table knows is bad raises the same :class:`VideoError` before anything is
  decoded; the argument checks are the same.

When torchcodec is asked for a read it cannot do as the PyAV path would, that read goes through the PyAV path
(same result as ``backend="pyav"``, nothing returned from torchcodec): a pixel format outside
``TORCHCODEC_PIXEL_FORMATS`` (8-bit 4:2:0 at even frame sizes, its full-range twin likewise, 4:4:4), a ``size``
given (torchcodec's resize is not swscale's bilinear conversion: up to 124/255 apart per channel, measured), a
file without timestamps, a torchcodec error (a packet the decoder rejects; the last frame of a file whose last
GOP holds B-frames, in torchcodec 0.13), a picture with another pts or another frame size than the table's, or
torchcodec not importable. For those pixel formats, full-size RGB from torchcodec is byte-identical to the PyAV
path on every test file (``tests/test_decode_backends.py`` compares every frame: H.264, HEVC, VP9, MPEG-4,
MJPEG, odd frame sizes); it depends on the swscale of both FFmpeg builds (PyAV's own, torchcodec's system one),
which those tests check where they run.

What torchcodec cannot report: a picture the decoder conceals without rejecting its packet (PyAV reads the
frame's corrupt flag and raises). The frame table built by ``probe(path)`` (``exact=True``: one decode pass)
already lists such frames, and after that the torchcodec path refuses them as the PyAV one does; without it, a
read with ``backend="torchcodec"`` can return a concealed picture where ``backend="pyav"`` raises. Use the PyAV
backend (the default) to find damaged files.
"""
from __future__ import annotations

import os
from typing import Optional

import numpy as np

__all__ = ["BACKENDS", "TORCHCODEC_PIXEL_FORMATS", "torchcodec_available", "resolve_backend", "frame_mappings",
           "same_rgb"]

BACKENDS = ("pyav", "torchcodec", "auto")
# Pixel formats whose RGB from torchcodec is byte-identical to the PyAV path's (compared frame by frame in
# tests/test_decode_backends.py); others go through PyAV. 4:2:0 only at even frame sizes: at 97x61 (MJPEG,
# yuvj420p) the two conversions were measured up to 22/255 apart.
TORCHCODEC_PIXEL_FORMATS = frozenset({"yuv420p", "yuvj420p", "yuv444p"})


def same_rgb(pix_fmt: Optional[str], height: int, width: int) -> bool:
    """Whether torchcodec's RGB of frames in ``pix_fmt`` at ``height`` x ``width`` pixels is the PyAV path's."""
    if pix_fmt not in TORCHCODEC_PIXEL_FORMATS:
        return False
    return pix_fmt == "yuv444p" or (height % 2 == 0 and width % 2 == 0)

WINDOW_MARGIN = 512  # frames of the table mapped on each side of a read (TorchcodecFile)
_AVAILABLE: Optional[bool] = None
_INHERITED: list = []
_IMPORT_ERROR: Optional[str] = None


def torchcodec_available() -> bool:
    """Whether ``torchcodec.decoders.VideoDecoder`` imports (and its FFmpeg libraries load) in this process."""
    global _AVAILABLE, _IMPORT_ERROR
    if _AVAILABLE is None:
        try:
            from torchcodec.decoders import VideoDecoder  # noqa: F401
            _AVAILABLE = True
        except Exception as err:  # ImportError, or RuntimeError/OSError when no FFmpeg library loads
            _AVAILABLE, _IMPORT_ERROR = False, f"{type(err).__name__}: {err}".splitlines()[0][:300]
    return _AVAILABLE


def resolve_backend(backend: str, where: str = "backend") -> str:
    """``"pyav"`` or ``"torchcodec"`` for a ``backend`` argument: ``"auto"`` is torchcodec when it imports, else
    PyAV. Raises ``ValueError`` for another name and ``ImportError`` for ``"torchcodec"`` when it does not import
    (naming why and what to install)."""
    if backend == "pyav":
        return backend
    if backend not in BACKENDS:
        raise ValueError(f"{where} must be one of {', '.join(repr(b) for b in BACKENDS)}, got {backend!r}")
    if torchcodec_available():
        return "torchcodec"
    if backend == "auto":
        return "pyav"
    raise ImportError(f"{where}='torchcodec' but torchcodec cannot be imported ({_IMPORT_ERROR}); install it with "
                      "pip install \"lightning_temporal[torchcodec]\" and the FFmpeg shared libraries (e.g. apt-get "
                      "install ffmpeg), or use backend='pyav'")


def frame_mappings(pts: np.ndarray, key_frame: np.ndarray, next_pts: Optional[int] = None) -> str:
    """torchcodec's ``custom_frame_mappings`` JSON for frames of a frame table: ``pts`` int64 [L] increasing
    (stream time base), ``key_frame`` int64 [K] indices into ``pts`` decoding can start at. Durations are the
    steps to the next pts (the last frame: to ``next_pts``, the frame after these, else the step before it)."""
    L = len(pts)
    if next_pts is None:
        next_pts = pts[-1] + (pts[-1] - pts[-2] if L > 1 else 1)
    duration = np.diff(pts, append=next_pts)
    key = np.zeros(L, np.int64)
    key[key_frame[key_frame < L]] = 1
    rows = ",".join(f'{{"pts":{a},"duration":{b},"key_frame":{c}}}'
                    for a, b, c in zip(pts.tolist(), duration.tolist(), key.tolist()))
    return f'{{"frames":[{rows}]}}'


class TorchcodecFile:
    """One torchcodec decoder of one video file (internal to :mod:`.video`).

    The decoder's frame mapping is a window of the frame table, ``[a, b)``: the GOPs of the frames read at the
    first open (a fresh read pays for no more), then, once the file is read again outside it, from the keyframe
    at or before ``WINDOW_MARGIN`` frames before the first frame read to the keyframe after ``WINDOW_MARGIN``
    frames past the last one, the whole video when it is short (torchcodec parses the mapping at every open,
    ~1 us a frame: a long video's whole table, 18000 frames, cost 22 ms an open, more than decoding a small
    clip). A read inside
    the window reuses the decoder, positioned where the last read left it (a forward read in the same GOP decodes
    on instead of seeking back); a read outside it opens a decoder for its own window.
    :meth:`read` returns None, promising nothing, whenever the read must go through the PyAV path.
    """

    def __init__(self, path: str, stream_index: int):
        self.path, self.stream_index = path, stream_index
        self.decoder, self.table, self.window, self.opens = None, None, (0, 0), 0
        self.pid = os.getpid()

    def _decoder(self, table, frames: np.ndarray):
        a, b = self.window
        if self.decoder is None or self.pid != os.getpid() or table is not self.table \
                or not a <= frames[0] <= frames[-1] < b:
            from torchcodec.decoders import VideoDecoder

            if self.decoder is not None and self.pid != os.getpid():  # opened by the parent before a fork:
                _INHERITED.append(self.decoder)  # it shares its file offset; kept, never used or freed here
            keys = table.key_frame[table.key_frame < table.num_frames]
            margin = WINDOW_MARGIN if self.opens else 0  # read again: this file is kept, map more of it
            a = int(keys[np.searchsorted(keys, max(0, int(frames[0]) - margin), side="right") - 1])
            b = min(table.num_frames, table.next_key(min(table.num_frames - 1, int(frames[-1]) + margin)))
            mappings = frame_mappings(table.pts[a:b], keys[(keys >= a) & (keys < b)] - a,
                                      int(table.pts[b]) if b < len(table.pts) else None)
            self.decoder = None
            # one FFmpeg thread, as PyAV's decoder here (loaders parallelise over clips)
            self.decoder = VideoDecoder(self.path, stream_index=self.stream_index, dimension_order="NHWC",
                                        num_ffmpeg_threads=1, custom_frame_mappings=mappings)
            self.pid, self.table, self.window = os.getpid(), table, (a, b)
            self.opens += 1
        return self.decoder

    def read(self, table, frames: np.ndarray, time_base, shape) -> Optional[np.ndarray]:
        """``frames`` (int64 [U], increasing) of the frame table ``table`` as uint8 [U, H, W, 3] (torchcodec's own
        buffer, no copy), each checked to carry the table's pts (stream time base ``time_base``). ``shape``: the
        (H, W) every picture must have. None: nothing usable."""
        pts = table.pts[frames]
        try:
            decoder = self._decoder(table, frames)
            batch = decoder.get_frames_at((frames - self.window[0]).tolist())
        except Exception:  # a rejected packet, a seek past the stream's stated end, an unreadable file
            self.decoder = None  # a decoder that failed mid-run is not reused (the parent's is never freed)
            return None
        data = batch.data
        if tuple(data.shape[1:]) != (shape[0], shape[1], 3):
            return None
        got = np.rint(batch.pts_seconds.double().numpy() / float(time_base)).astype(np.int64)
        if not np.array_equal(got, pts):
            return None
        return np.ascontiguousarray(data.numpy())

    def close(self) -> None:
        self.decoder = None  # torchcodec frees its FFmpeg contexts with the object
