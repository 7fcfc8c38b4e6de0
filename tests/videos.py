"""Helpers that ENCODE small test videos with PyAV (no fixtures here; test files build their own).

Every frame is distinct (a moving square over a gradient that shifts with the frame index, plus the index
written as binary blocks), so a test that compares decoded frames notices an off-by-one.

    >>> from tests.videos import write_video, reference_frames
    >>> path = write_video("/tmp/x.mp4", num_frames=40, gop=32)          # doctest: +SKIP
    >>> reference_frames(path).shape                                    # doctest: +SKIP
    (40, 48, 64, 3)
"""
from __future__ import annotations

import os
from fractions import Fraction
from typing import Optional, Sequence, Tuple

import av
import numpy as np


def synthetic_frame(i: int, height: int = 48, width: int = 64) -> np.ndarray:
    """Frame ``i`` of the synthetic test pattern: uint8 [height, width, 3]."""
    y, x = np.mgrid[0:height, 0:width]
    frame = np.empty((height, width, 3), np.uint8)
    frame[..., 0] = (4 * x + 7 * i) % 256
    frame[..., 1] = (4 * y + 3 * i) % 256
    frame[..., 2] = (2 * (x + y) + 11 * i) % 256
    # A bright square that moves one step per frame: large, easy-to-compress motion.
    s = max(4, min(height, width) // 4)
    top = (2 * i) % max(1, height - s)
    left = (3 * i) % max(1, width - s)
    frame[top:top + s, left:left + s] = 255
    # The frame index in binary as 8 black/white blocks along the top row.
    b = max(2, width // 16)
    for bit in range(8):
        frame[:b, bit * b:(bit + 1) * b] = 255 if (i >> bit) & 1 else 0
    return frame


def write_video(
    path: str,
    num_frames: int = 48,
    size: Tuple[int, int] = (48, 64),
    *,
    codec: str = "libx264",
    gop: Optional[int] = 32,
    bframes: int = 2,
    open_gop: bool = False,
    fps: int = 25,
    pix_fmt: Optional[str] = None,
    pts: Optional[Sequence[int]] = None,
    time_base: Fraction = Fraction(1, 1000),
    faststart: bool = False,
    metadata: Optional[dict] = None,
) -> str:
    """Encode the synthetic pattern; returns ``path``.

    ``size=(h, w)``; ``gop`` = keyframe interval (1 = all keyframes, ``None`` = one keyframe at frame 0);
    ``bframes`` B-frames between references (H.264, MPEG-4); ``pts`` (in ``time_base`` units) makes a
    variable-frame-rate video; ``faststart`` puts the MP4 index before the data (so a truncated copy still
    opens). The container follows the file extension (``.mp4``, ``.avi``, ``.mkv``, ``.mov``, ``.webm`` with
    ``codec="libvpx-vp9"``). ``metadata``: container tags, written as given (``bytes`` values go into the file
    unchanged, e.g. a title in cp1251).
    """
    height, width = size
    options = {}
    if faststart:
        options["movflags"] = "faststart"
    raw = {}  # placeholder -> bytes: tags whose bytes are not UTF-8 are written as ASCII, then patched in place
    if path.endswith(".mkv"):
        options["write_crc32"] = "0"  # the patched bytes keep a valid file
    with av.open(path, "w", options=options) as out:
        for k, (key, value) in enumerate((metadata or {}).items()):
            if isinstance(value, bytes):
                placeholder = (f"@{k}@" * len(value))[:len(value)]
                raw[placeholder.encode()] = value
                value = placeholder
            out.metadata[key] = value
        stream = out.add_stream(codec, rate=fps)
        stream.width, stream.height = width, height
        if pix_fmt is None:
            pix_fmt = "yuvj420p" if codec == "mjpeg" else "yuv420p"
            if codec == "libx264" and (height % 2 or width % 2):
                pix_fmt = "yuv444p"  # 4:2:0 needs even sizes
        stream.pix_fmt = pix_fmt
        keyint = num_frames + 1 if gop is None else gop
        if codec == "libx264":
            params = f"keyint={keyint}:min-keyint={keyint}:scenecut=0:bframes={bframes}"
            if open_gop:
                params += ":open-gop=1"
            stream.options = {"preset": "veryfast", "x264-params": params}
        elif codec == "libvpx-vp9":
            stream.options = {"deadline": "realtime", "cpu-used": "8", "g": str(keyint)}
        elif codec == "mpeg4":
            stream.codec_context.gop_size = keyint
            stream.codec_context.max_b_frames = bframes
            stream.options = {"sc_threshold": "1000000000"}  # no scene-cut keyframes
        if pts is not None:
            stream.codec_context.time_base = time_base
            stream.time_base = time_base
        for i in range(num_frames):
            frame = av.VideoFrame.from_ndarray(synthetic_frame(i, height, width), format="rgb24")
            if pts is not None:
                frame.pts = int(pts[i])
                frame.time_base = time_base
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    if raw:
        with open(path, "rb") as f:
            data = f.read()
        for placeholder, value in raw.items():
            assert data.count(placeholder) == 1, "metadata placeholder not found once in the file"
            data = data.replace(placeholder, value)
        with open(path, "wb") as f:
            f.write(data)
    return path


def vfr_pts(num_frames: int, every: int = 10, step: int = 2, *, irregular: bool = False, seed: int = 0) -> np.ndarray:
    """int64 [num_frames] timestamps of a variable-frame-rate video in frame-duration units (time base 1/fps).

    Whole-duration gaps (default): steps of 1 with a step of ``step`` after every ``every``-th frame (a screen
    recorder or ``mpdecimate`` dropping repeated frames when it wrote the file). ``irregular``: seeded steps of
    1 to 4 durations in no pattern (a webcam). Every frame is encoded: nothing is missing from the file.
    """
    if irregular:
        steps = np.random.default_rng(seed).integers(1, 5, num_frames - 1)
    else:
        steps = np.where(np.arange(1, num_frames) % every == 0, step, 1)
    return np.concatenate([[0], np.cumsum(steps)]).astype(np.int64)


def write_with_still_first(path: str, num_frames: int = 20, size: Tuple[int, int] = (48, 64)) -> str:
    """A Matroska file whose first video stream is one still picture (cover art, a thumbnail) and whose second
    is the video (H.264, ``num_frames`` frames of the synthetic pattern)."""
    height, width = size
    with av.open(path, "w") as out:
        still = out.add_stream("mjpeg", rate=1)
        still.width, still.height, still.pix_fmt = width, height, "yuvj444p"
        video = out.add_stream("libx264", rate=25)
        video.width, video.height, video.pix_fmt = width, height, "yuv420p"
        cover = av.VideoFrame.from_ndarray(synthetic_frame(255, height, width), format="rgb24")
        for packet in [*still.encode(cover.reformat(format="yuvj444p")), *still.encode()]:
            out.mux(packet)
        for i in range(num_frames):
            for packet in video.encode(av.VideoFrame.from_ndarray(synthetic_frame(i, height, width), format="rgb24")):
                out.mux(packet)
        for packet in video.encode():
            out.mux(packet)
    return path


def write_audio_only(path: str, seconds: float = 0.5) -> str:
    """A file with one AAC audio stream and no video stream."""
    with av.open(path, "w") as out:
        stream = out.add_stream("aac", rate=16000)
        n = int(16000 * seconds)
        samples = (np.sin(np.arange(n) / 10.0) * 0.3).astype(np.float32)[None]
        for k in range(0, n, 1024):
            frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(samples[:, k:k + 1024]), format="fltp", layout="mono")
            frame.sample_rate = 16000
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


def write_empty_video(path: str, size: Tuple[int, int] = (48, 64)) -> str:
    """A container (use ``.avi``) with a video stream that holds no frame at all (zero decodable frames)."""
    with av.open(path, "w") as out:
        stream = out.add_stream("mpeg4", rate=25)
        stream.height, stream.width = size
        stream.pix_fmt = "yuv420p"
        out.start_encoding()  # writes the header although no packet follows
    return path


def truncate_file(src: str, dst: str, keep: float | int) -> str:
    """Copy the first ``keep`` bytes (an int) or fraction (a float) of ``src`` to ``dst``."""
    with open(src, "rb") as f:
        data = f.read()
    n = keep if isinstance(keep, int) else int(len(data) * keep)
    with open(dst, "wb") as f:
        f.write(data[:n])
    return dst


def copy_video_packets(src: str, dst: str, **open_kwargs) -> str:
    """Copy ``src``'s video packets (no re-encoding) into ``dst``, opened with ``av.open(dst, "w", **open_kwargs)``;
    the demuxer's flush packets (no dts) are left out."""
    with av.open(src) as inp, av.open(dst, "w", **open_kwargs) as out:
        in_stream = inp.streams.video[0]
        out_stream = out.add_stream_from_template(in_stream)
        for packet in inp.demux(in_stream):
            if packet.dts is None:
                continue
            packet.stream = out_stream
            out.mux(packet)
    return dst


def remux_faststart(src: str, dst: str) -> str:
    """Copy ``src``'s video packets (no re-encoding) into an MP4 whose index precedes the data."""
    return copy_video_packets(src, dst, options={"movflags": "faststart"})


def remux_raw_h264(src: str, dst: str) -> str:
    """Copy ``src``'s H.264 packets into an elementary stream (``.h264``): no container, no timestamps."""
    return copy_video_packets(src, dst, format="h264")


def encode_image(frame: np.ndarray, ext: str = "png") -> bytes:
    """One uint8 [H, W, 3] image as PNG or JPEG bytes, encoded with PyAV."""
    codec = {"png": "png", "jpg": "mjpeg", "jpeg": "mjpeg"}[ext.lower()]
    ctx = av.CodecContext.create(codec, "w")
    ctx.height, ctx.width = frame.shape[:2]
    ctx.pix_fmt = "rgb24" if codec == "png" else "yuvj444p"
    ctx.time_base = Fraction(1, 25)
    vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24").reformat(format=ctx.pix_fmt)
    vf.pts = 0
    data = b"".join(bytes(p) for p in ctx.encode(vf)) + b"".join(bytes(p) for p in ctx.encode(None))
    return data


def write_frame_folder(
    folder: str,
    num_frames: int = 20,
    size: Tuple[int, int] = (48, 64),
    *,
    ext: str = "png",
    name: str = "frame_{:05d}",
) -> str:
    """A video stored as a folder of frame images ``name.format(i) + '.' + ext``; returns ``folder``."""
    os.makedirs(folder, exist_ok=True)
    for i in range(num_frames):
        with open(os.path.join(folder, name.format(i) + "." + ext), "wb") as f:
            f.write(encode_image(synthetic_frame(i, *size), ext))
    return folder


def reference_frames(path: str, size: Optional[Tuple[int, int]] = None) -> np.ndarray:
    """Independent reference: a plain sequential PyAV decode of every frame, uint8 [L, H, W, 3].

    Packets the decoder rejects (a truncated tail) are skipped, as the library's definition of "decodable"
    says. ``size=(h, w)`` converts with the same swscale call the library uses, so pixels must match exactly.
    """
    kwargs = {} if size is None else {"height": size[0], "width": size[1]}
    frames = []
    with av.open(path, metadata_errors="replace") as container:
        for packet in container.demux(video=0):
            try:
                decoded = packet.decode()
            except av.FFmpegError:
                continue
            frames.extend(f.to_ndarray(format="rgb24", **kwargs) for f in decoded)
    return np.stack(frames) if frames else np.zeros((0, 0, 0, 3), np.uint8)


def packet_layout(path: str) -> np.ndarray:
    """int64 [L, 4]: (pts, byte position, size, keyframe) of the video packets, rows in display (pts) order."""
    with av.open(path) as container:
        rows = [(p.pts, p.pos, p.size, int(p.is_keyframe)) for p in container.demux(video=0) if p.size]
    rows.sort()
    return np.array(rows, np.int64)


def overwrite_bytes(src: str, dst: str, start: int, length: int, *, seed: int = 0) -> str:
    """Copy ``src`` to ``dst`` with bytes ``[start, start + length)`` replaced by seeded random bytes."""
    with open(src, "rb") as f:
        data = bytearray(f.read())
    end = min(len(data), start + length)
    data[start:end] = np.random.default_rng(seed).integers(0, 256, end - start, dtype=np.uint8).tobytes()
    with open(dst, "wb") as f:
        f.write(bytes(data))
    return dst


def remux(src: str, dst: str, *, drop: Sequence[int] = (), retime: Optional[dict] = None) -> str:
    """Copy ``src``'s video packets into ``dst`` without re-encoding.

    ``drop``: display indices of frames whose packet is left out (their timestamps leave a gap). ``retime``:
    {display index: display index whose pts that frame's packet takes} (duplicate timestamps).
    """
    order = {int(pts): i for i, pts in enumerate(packet_layout(src)[:, 0])}
    retime = retime or {}
    pts_of = {i: pts for pts, i in order.items()}
    with av.open(src) as inp, av.open(dst, "w") as out:
        in_stream = inp.streams.video[0]
        out_stream = out.add_stream_from_template(in_stream)
        for packet in inp.demux(in_stream):
            if packet.dts is None or not packet.size:
                continue
            i = order[packet.pts]
            if i in drop:
                continue
            if i in retime:
                packet.pts = pts_of[retime[i]]
            packet.stream = out_stream
            out.mux(packet)
    return dst


def set_avi_frame_count(src: str, dst: str, count: int) -> str:
    """Copy an AVI file with the frame count of its headers (avih dwTotalFrames, strh dwLength) set to ``count``."""
    with open(src, "rb") as f:
        data = bytearray(f.read())
    avih = data.index(b"avih") + 8
    data[avih + 16:avih + 20] = int(count).to_bytes(4, "little")
    strh = data.index(b"strh") + 8
    data[strh + 32:strh + 36] = int(count).to_bytes(4, "little")
    with open(dst, "wb") as f:
        f.write(bytes(data))
    return dst
