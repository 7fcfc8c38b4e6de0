"""Frame-exact clip decoding with PyAV: seek to the keyframe at or before a clip, decode forward, check every frame.

Definitions used throughout (the frame table is explained in :mod:`lightning_temporal.data.frame_table`):

* **Frame index** ``i`` = the frame with the ``i``-th smallest presentation timestamp (pts) among the frames
  the container holds, one packet per frame. One demux pass (no decoding, ~1 ms) lists every packet's pts and
  keyframe flag; that works with B-frames (decode order differs from display order), a non-zero first pts and
  variable frame rate, because nothing is computed from ``pts * fps``.
* **Clip** ``(start, num_frames, stride)`` = frames ``start, start + stride, ...``; an index past the last
  frame ``L - 1`` is replaced by ``L - 1`` (a video shorter than a clip repeats its last frame).
* **Variable frame rate is not damage**: a timestamp gap with every packet present is read as it is (frame
  ``i`` stays the ``i``-th timestamp). Frames are taken as missing only on evidence of loss: the container's
  index lists packets the demuxer cannot deliver, the demuxer skipped bytes there, or the codec's own picture
  numbering skips (H.264 picture order count); see :mod:`lightning_temporal.data.frame_table`.
* **Damaged frame**: a frame missing from the file (on such evidence), one whose packet the
  decoder rejects or marks as concealed, one whose packet is cut short, one that no picture comes out for,
  two packets with one pts, or a frame decoded from such a frame (until the next keyframe). Reading a damaged
  frame raises :class:`VideoError` naming the file, the frame index and what is wrong; a read never returns a
  shifted frame or a padded one in its place. Frames of a truncated file after the cut are not part of the
  video (``num_frames`` stops before them).

How a clip is read: seek to the last keyframe at or before its first frame (passing the keyframe's pts;
should a demuxer land after the wanted frame anyway, the reader steps back a keyframe), feed packets to the
decoder and name every decoded picture by its pts. When the wanted frames are out, the decoder is drained
(its held-back B-frame references come out without more decoding) and every packet fed since the keyframe is
checked to have given exactly one clean picture. Only wanted frames are converted to RGB, by one reused
swscale context per thread (PyAV's ``to_ndarray`` builds a new, multi-threaded one per frame: 3-10x the
conversion itself), straight to ``size`` when given.

Files whose packets carry no timestamps (raw streams) are named by decoding order from the start; files whose
decoder output the demux pass cannot name (packets holding several pictures) fall back to the same after one
full decode. Indices are cached per file (path, inode, size, mtime). A small per-process cache of opened
files (:func:`set_open_cache_size`) saves the ~1-4 ms ``av.open`` when clips of one video repeat; it is
safe across DataLoader worker forks (a child never uses a container opened by its parent).

What no check can see: bytes overwritten inside a picture that the decoder accepts without complaint (it
reports nothing, so nothing here can); larger damage (a packet header, a slice that fails to parse) is found,
and so is the packet just before it in the file, whose tail the damage may reach. In a file without timestamps
(a raw ``.h264`` stream) frames are named by decoding order, so damage the decoder does not report shifts the
frames after it: store videos in a container (MP4, MKV, AVI, ...).
"""
from __future__ import annotations

import os
import stat
import threading
from collections import OrderedDict
from dataclasses import dataclass
from fractions import Fraction
from typing import Dict, Iterator, List, Optional, Tuple, Union

import av
import numpy as np
import torch

from lightning_temporal.checks import check_int
from lightning_temporal.data.errors import VideoError
from lightning_temporal.data.frame_table import (
    FrameTable,
    add_damage,
    explain,
    frame_ranges,
    sequential_table,
    spread_damage,
    table_from_packets,
)
from lightning_temporal.data.torchcodec_backend import (
    TorchcodecFile,
    resolve_backend,
    same_rgb,
)
from lightning_temporal.data.frames import (
    FrameFolder,
    check_frame_pattern,
    decode_image,
    list_frames,
    rgb_array,
    split_pattern_path,
)

PathLike = Union[str, "os.PathLike[str]"]

__all__ = ["VideoError", "VideoInfo", "VideoReader", "probe", "read_clip", "clear_index_cache",
           "set_open_cache_size", "OpenFileCache"]


@dataclass(frozen=True)
class VideoInfo:
    """What :func:`probe` learns about a video. ``fps`` is 0.0 when unknown (frame folders)."""

    path: str
    num_frames: int  # frames of the video (the damaged ones included; a truncated tail not)
    fps: float  # frames per second (average for variable frame rate)
    height: int  # pixels
    width: int  # pixels
    damaged: Tuple[Tuple[int, int], ...] = ()  # runs (first, stop) of frames that cannot be read, stop exclusive


# --------------------------------------------------------------------------------------------------------
# Argument checks (ValueError, naming the file and the value)


def _check_int(value, name: str, path: str, minimum: int) -> int:
    """``checks.check_int`` named by the file, with a fast path (this runs for every clip read) and 0-d integer
    tensors accepted (a sampler may hand them over)."""
    if type(value) is int and value >= minimum:
        return value
    if torch.is_tensor(value) and value.numel() == 1 and not value.dtype.is_floating_point \
            and value.dtype != torch.bool:
        value = int(value)
    return check_int(f"{path}: {name}", value, minimum=minimum)


def _check_size(size, path: str) -> Optional[Tuple[int, int]]:
    if size is None:
        return None
    if not isinstance(size, (tuple, list)) or len(size) != 2:
        raise ValueError(f"{path}: size must be None or (height, width) in pixels, got {size!r}")
    return (_check_int(size[0], "size[0] (height)", path, 1), _check_int(size[1], "size[1] (width)", path, 1))


def _check_starts(starts, path: str) -> np.ndarray:
    if torch.is_tensor(starts):
        starts = starts.detach().cpu().numpy()
    arr = np.asarray(starts)
    if arr.ndim != 1:
        raise ValueError(f"{path}: starts must be a 1-d sequence of frame indices, got shape {arr.shape}")
    if arr.size and arr.dtype.kind not in "iu":
        raise ValueError(f"{path}: starts must be integers, got dtype {arr.dtype} ({arr[:5].tolist()}...)")
    arr = arr.astype(np.int64)
    if arr.size and arr.min() < 0:
        raise ValueError(f"{path}: starts must be >= 0, got {int(arr.min())}")
    return arr


# --------------------------------------------------------------------------------------------------------
# Opening files


def _not_found(path: str) -> VideoError:
    return VideoError(f"{path}: file not found; check the manifest path or the data root")


def _open(path: str):
    """Open ``path`` (a regular file, see :func:`_source`) and return (container, video stream); VideoError for
    every way that can fail."""
    try:
        # metadata_errors="replace": a tag that is not UTF-8 (a camera writing cp1251) is not the video's fault
        container = av.open(path, metadata_errors="replace")
    except (av.FFmpegError, UnicodeDecodeError, ValueError, OSError) as err:
        if not os.path.isfile(path):
            raise _not_found(path) from err
        if os.path.getsize(path) == 0:
            raise VideoError(f"{path}: the file is empty (0 bytes); re-download or re-encode it, or remove it "
                             "from the manifest") from err
        raise VideoError(f"{path}: cannot open as a video ({err}); the file is corrupt, truncated or not a video: "
                         "re-download or re-encode it, or remove it from the manifest") from err
    fmt = container.format.name
    if fmt == "image2" or fmt.endswith("_pipe") or fmt == "image2pipe":
        container.close()
        raise VideoError(f"{path}: this is a single image ({fmt}), not a video; store a video as a video file or "
                         "as a folder of frame images, and fix the manifest path")
    if not container.streams.video:
        kinds = ", ".join(s.type for s in container.streams) or "none"
        container.close()
        raise VideoError(f"{path}: no video stream (streams: {kinds}); remove it from the manifest or point it "
                         "at the video")
    # FFmpeg's choice of the main video stream (av_find_best_stream): not a cover picture or a thumbnail stream
    # that a file may list first
    stream = container.streams.best("video") or container.streams.video[0]
    # One decoder thread: loaders parallelise over clips, and FFmpeg's automatic thread count made every RGB
    # conversion taken while the decoder was open ~10x slower here.
    stream.codec_context.thread_count = 1
    return container, stream


def _packets(container, stream) -> Iterator:
    """Demuxed packets of ``stream`` (None: of every stream); a demuxer error ends the video (everything before
    it is kept)."""
    try:
        yield from (container.demux() if stream is None else container.demux(stream))
    except av.FFmpegError:
        return


HOLE_BYTES = 1024  # more bytes than container overhead between two packets: data a demuxer skipped


def _byte_holes(covered: List[Tuple[int, int]], unread: np.ndarray) -> np.ndarray:
    """int64 [H, 2]: ``[start, end)`` byte ranges the demuxer skipped, sorted and disjoint: ranges longer than
    HOLE_BYTES between packets (of any stream) that no packet covers (the bytes before the first and after the
    last packet, headers and indices, are not holes), and ``unread`` [N, 2], the packets the container's
    index lists but the demuxer never delivered."""
    holes = [np.asarray(unread, np.int64).reshape(-1, 2)]
    if len(covered) >= 2:
        pos, size = np.array(covered, np.int64).T
        order = np.argsort(pos, kind="stable")
        pos, end = pos[order], np.maximum.accumulate((pos + size)[order])
        big = np.flatnonzero(pos[1:] - end[:-1] > HOLE_BYTES)
        holes.append(np.stack([end[:-1][big], pos[1:][big]], axis=1))
    holes = np.concatenate(holes)
    holes = holes[np.argsort(holes[:, 0], kind="stable")]
    if len(holes) > 1:  # merge overlapping ranges so that starts and ends are both sorted
        end = np.maximum.accumulate(holes[:, 1])
        new = np.concatenate([[True], holes[1:, 0] > end[:-1]])
        holes = np.stack([holes[new, 0], np.maximum.reduceat(holes[:, 1], np.flatnonzero(new))], axis=1)
    return holes


def _feed(packet) -> list:
    """Decode one packet (a module function so that tests can count the packets decoded)."""
    return packet.decode()


def _drain(stream) -> list:
    """The pictures the decoder still holds (B-frame references), without decoding anything more."""
    try:
        return stream.codec_context.decode(None)
    except (av.FFmpegError, EOFError):
        return []


def _stat_key(path: str, st: Optional[os.stat_result] = None) -> tuple:
    """Identity of a file's current content: (absolute path, device, inode, size, mtime)."""
    if st is None:
        try:
            st = os.stat(path)
        except OSError:
            raise _not_found(path) from None
    absolute = _ABSPATH.get(path)
    if absolute is None:  # normpath costs more than the stat; absolute paths repeat (relative ones: cwd may move)
        absolute = os.path.abspath(path)
        if os.path.isabs(path) and len(_ABSPATH) < 100_000:
            _ABSPATH[path] = absolute
    return absolute, st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns


_ABSPATH: Dict[str, str] = {}


# --------------------------------------------------------------------------------------------------------
# The per-file index


@dataclass
class _FileIndex:
    table: FrameTable
    fps: float
    height: int
    width: int
    time_base: Optional[Fraction] = None  # of the video stream: pts x time_base = seconds
    stream_index: int = 0  # the video stream read (FFmpeg's best one)
    pix_fmt: Optional[str] = None  # the decoder's pixel format (e.g. "yuv420p"), None when unknown


def _fps(stream, pts: Optional[np.ndarray]) -> float:
    # From the timestamps when there are two or more: exact for constant rate, the mean for variable rate
    # (container rate fields disagree between formats for variable rate, e.g. Matroska reports the nominal one).
    if pts is not None and len(pts) > 1 and stream.time_base and pts[-1] > pts[0]:
        return float((len(pts) - 1) / (int(pts[-1] - pts[0]) * stream.time_base))
    rate = stream.average_rate or stream.guessed_rate
    return float(rate) if rate else 0.0


def _demux_index(container, stream, path: str) -> _FileIndex:
    """The frame table from one demux pass (no decoding), checked against the container's own index."""
    rows = []  # pts, dts, keyframe, cut short, byte position, size
    numbering = _H264Numbering.of(stream)
    numbers, covered = [], []  # (byte position, size) of the packets of every stream
    for packet in _packets(container, None):
        if packet.size and packet.pos is not None and packet.pos >= 0:
            covered.append((packet.pos, packet.size))
        if packet.stream_index != stream.index or packet.size == 0 or packet.is_discard:
            continue  # flush packets at the end, AVI's empty "drop" chunks, edit-list pre-roll: not frames
        rows.append((packet.pts, packet.dts, packet.is_keyframe, packet.is_corrupt, packet.pos, packet.size))
        if numbering is not None:
            numbers.append(numbering.slice_head(packet))
    if any(r[0] is None for r in rows):
        table = sequential_table(len(rows))
    else:
        pts, dts, key, cut, pos, size = (np.array(c) for c in zip(*rows)) if rows else [np.zeros(0, np.int64)] * 6
        pts, dts, keep, lost, unread = _check_index(stream, pts.astype(np.int64), dts, pos.astype(np.int64),
                                                    size.astype(np.int64), cut.astype(bool))
        steps = np.diff(np.unique(pts))
        # the picture numbering is read only where it can matter: a timeline whose steps are not all equal
        order = None if numbering is None or len(np.unique(steps)) <= 1 else \
            _H264Numbering.display_numbers(numbering.picture_orders(numbers))
        table = table_from_packets(pts[keep], key[keep].astype(bool), cut[keep].astype(bool), pos[keep],
                                   size[keep], lost, os.path.getsize(path), None if dts is None else dts[keep],
                                   None if order is None else order[keep], _byte_holes(covered, unread))
    cc = stream.codec_context
    return _FileIndex(table, _fps(stream, table.pts), cc.height, cc.width, stream.time_base, stream.index, cc.pix_fmt)


class _Bits:
    """MSB-first bit reader over the first bytes of an H.264 NAL unit payload (emulation prevention removed)."""

    def __init__(self, data: bytes):
        self.bits = bin(int.from_bytes(b"\x01" + data.replace(b"\x00\x00\x03", b"\x00\x00"), "big"))[3:]
        self.pos = 0

    def u(self, n: int) -> int:
        if self.pos + n > len(self.bits):
            raise ValueError("H.264 header runs past the bytes read")
        value = int(self.bits[self.pos:self.pos + n] or "0", 2)
        self.pos += n
        return value

    def ue(self) -> int:
        zeros = self.bits.find("1", self.pos) - self.pos
        if zeros < 0 or zeros > 31:
            raise ValueError("bad Exp-Golomb code in an H.264 header")
        self.pos += zeros + 1
        return (1 << zeros) - 1 + self.u(zeros)

    def se(self) -> int:
        k = self.ue()
        return (k + 1) // 2 if k % 2 else -(k // 2)


class _H264Numbering:
    """The picture order count (POC) of each H.264 packet, read from its first slice header (ITU-T H.264 7.3.3,
    8.2.1.1 and 8.2.1.3): the encoder numbers every picture it wrote in display order, whatever its timestamp,
    so a POC that skips between two timestamps is a frame missing from the file, while a timestamp gap with
    consecutive POCs is a variable frame rate. Only length-prefixed streams (MP4, MKV: ``avcC`` extradata) with
    POC types 0 and 2; anything else (or any header that fails to parse) gives no numbering: no evidence."""

    def __init__(self, length_size: int, sps: Dict[int, dict], pps: Dict[int, int]):
        self.length_size, self.sps, self.pps = length_size, sps, pps
        self.prev_msb = self.prev_lsb = 0  # POC type 0: of the previous reference picture
        self.prev_frame_num, self.frame_num_offset = 0, 0  # POC type 2

    @classmethod
    def of(cls, stream) -> Optional["_H264Numbering"]:
        try:
            extradata = stream.codec_context.extradata
            if stream.codec_context.name != "h264" or not extradata or extradata[0] != 1 or len(extradata) < 7:
                return None
            length_size = (extradata[4] & 3) + 1
            sps, pps, at = {}, {}, 6
            for kind in ("sps", "pps"):
                count = extradata[5] & 0x1F if kind == "sps" else extradata[at - 1]
                for _ in range(count):
                    n = int.from_bytes(extradata[at:at + 2], "big")
                    nal = bytes(extradata[at + 2:at + 2 + n])
                    at += 2 + n
                    if kind == "sps":
                        sps_id, fields = cls._parse_sps(_Bits(nal[1:]))
                        sps[sps_id] = fields
                    else:
                        b = _Bits(nal[1:])
                        pps_id = b.ue()
                        pps[pps_id] = b.ue()
                at += 1  # the PPS count byte
            return cls(length_size, sps, pps) if sps and pps else None
        except Exception:  # extradata this cannot read: no numbering, no evidence
            return None

    @staticmethod
    def _parse_sps(b: _Bits) -> Tuple[int, dict]:
        profile = b.u(8)
        b.u(16)  # constraint flags, level
        sps_id = b.ue()
        separate_planes = 0
        if profile in (100, 110, 122, 244, 44, 83, 86, 118, 128, 138, 139, 134, 135):
            chroma = b.ue()
            if chroma == 3:
                separate_planes = b.u(1)
            b.ue(), b.ue(), b.u(1)  # bit depths, qpprime_y_zero_transform_bypass
            if b.u(1):  # seq_scaling_matrix_present: skip the lists
                for i in range(8 if chroma != 3 else 12):
                    if b.u(1):
                        last = nxt = 8
                        for _ in range(16 if i < 6 else 64):
                            if nxt:
                                nxt = (last + b.se() + 256) % 256
                            last = nxt or last
        log2_frame_num = b.ue() + 4
        poc_type = b.ue()
        log2_poc_lsb = b.ue() + 4 if poc_type == 0 else 0
        if poc_type == 1:
            raise ValueError("POC type 1 is not read")
        b.ue(), b.u(1), b.ue(), b.ue()  # max_num_ref_frames, gaps allowed, width, height in macroblocks
        frame_mbs_only = b.u(1)
        return sps_id, dict(separate_planes=separate_planes, log2_frame_num=log2_frame_num, poc_type=poc_type,
                            log2_poc_lsb=log2_poc_lsb, frame_mbs_only=frame_mbs_only)

    def slice_head(self, packet) -> Optional[bytes]:
        """The first bytes of the packet's first slice NAL unit (enough for the header fields read here)."""
        try:
            data = memoryview(packet)
            at, n, k = 0, len(data), self.length_size
            while at + k < n:
                size = int.from_bytes(data[at:at + k], "big")
                if data[at + k] & 0x1F in (1, 5):
                    return bytes(data[at + k:at + k + min(size, 32)])
                at += k + size
        except Exception:  # a packet this cannot walk is no evidence, never a reason to lose the video
            return None
        return None

    def picture_orders(self, heads: List[Optional[bytes]]) -> List[Optional[int]]:
        """POC of each packet's picture from :meth:`slice_head` (in decode order), None where unreadable."""
        out: List[Optional[int]] = []
        for head in heads:
            try:
                out.append(None if head is None else self._poc(head))
            except Exception:  # a header this cannot read is no evidence
                out.append(None)
        return out

    def _poc(self, head: bytes) -> int:
        ref_idc, idr = head[0] >> 5 & 3, head[0] & 0x1F == 5
        b = _Bits(head[1:])
        b.ue(), b.ue()  # first_mb_in_slice, slice_type
        sps = self.sps[self.pps[b.ue()]]
        if sps["separate_planes"]:
            b.u(2)
        frame_num = b.u(sps["log2_frame_num"])
        if not sps["frame_mbs_only"] and b.u(1):
            b.u(1)  # a field picture: its POC is the frame's
        if idr:
            b.ue()
        if sps["poc_type"] == 2:  # 8.2.1.3: from frame_num
            if idr:
                self.frame_num_offset = 0
            elif self.prev_frame_num > frame_num:
                self.frame_num_offset += 1 << sps["log2_frame_num"]
            self.prev_frame_num = frame_num
            return 2 * (self.frame_num_offset + frame_num) - (0 if ref_idc else 1)
        lsb, max_lsb = b.u(sps["log2_poc_lsb"]), 1 << sps["log2_poc_lsb"]  # 8.2.1.1
        if idr:
            self.prev_msb = self.prev_lsb = 0
        if lsb < self.prev_lsb and self.prev_lsb - lsb >= max_lsb // 2:
            msb = self.prev_msb + max_lsb
        elif lsb > self.prev_lsb and lsb - self.prev_lsb > max_lsb // 2:
            msb = self.prev_msb - max_lsb
        else:
            msb = self.prev_msb
        if ref_idc:
            self.prev_msb, self.prev_lsb = msb, lsb
        return msb + lsb

    @staticmethod
    def display_numbers(pocs: List[Optional[int]]) -> Optional[np.ndarray]:
        """int64 [P]: display number of each packet's picture (POC over the file's POC step), -1 where unknown;
        None when no packet has one (no evidence either way)."""
        if not pocs or all(p is None for p in pocs):
            return None
        poc = np.array([-1 if p is None else p for p in pocs], np.int64)
        steps = np.diff(np.unique(poc[poc >= 0]))
        if not len(steps):
            return None
        values, counts = np.unique(steps, return_counts=True)
        step = int(values[np.argmax(counts)])  # the encoder's step (x264: 2 a frame)
        if (steps % step).any():
            return None  # numbering that is not one step a picture: no evidence either way
        return np.where(poc >= 0, poc // step, -1)


def _check_index(stream, pts, dts, pos, size, cut):
    """Compare the demuxed packets with the container's index of the stream (AVI idx1, MP4 sample table).

    A demuxer that numbers packets by counting them (AVI) shifts every later timestamp when damaged bytes make
    it skip a chunk; the index still knows each packet's timestamp by its byte position. Returns the corrected
    pts and dts, a bool mask of the packets the index knows (others are junk found while resyncing) and the
    (pts, dts, pos, size) of packets the index lists but the demuxer never delivered (placed only where pts =
    dts + a constant, i.e. without B-frame reordering), and the ``[start, end)`` byte ranges of those packets
    (int64 [N, 2]; with reordering the timestamp gap around them is filled from these, :func:`_byte_holes`).
    A sparse index
    (Matroska cues: keyframes only) checks nothing: those containers store a timestamp with every packet.
    """
    keep = np.ones(len(pts), bool)
    entries = [(e.pos, e.timestamp, e.size) for e in stream.index_entries if not e.is_discard]
    none = np.zeros((0, 2), np.int64)
    if len(entries) < len(pts) or not len(pts) or (pos < 0).any() or any(d is None for d in dts):
        return pts, None, keep, [], none
    e_pos, e_ts, e_size = (np.array(c, np.int64) for c in zip(*entries))
    order = np.argsort(e_pos, kind="stable")
    e_pos, e_ts, e_size = e_pos[order], e_ts[order], e_size[order]
    k = np.searchsorted(e_pos, pos, side="right") - 1
    kc = np.maximum(k, 0)
    # The index may point at the chunk header a few bytes before the payload (AVI: 8 bytes); a packet cut by
    # the end of the file is shorter than its entry.
    keep = (k >= 0) & (pos - e_pos[kc] <= 32) & ((e_size[kc] == size) | (cut & (size < e_size[kc])))
    dts = dts.astype(np.int64)
    fixed_pts = np.where(keep, pts + (e_ts[kc] - dts), pts)
    fixed_dts = np.where(keep, e_ts[kc], dts)
    delivered = np.zeros(len(e_pos), bool)
    delivered[kc[keep]] = True
    offsets = (fixed_pts - fixed_dts)[keep]
    unread = np.stack([e_pos[~delivered], e_pos[~delivered] + np.maximum(e_size[~delivered], 1)], axis=1)
    unread = unread[unread[:, 1] <= pos.max()]  # past the last packet delivered: a truncated tail, no gap
    if not len(offsets) or offsets.min() != offsets.max():
        return fixed_pts, fixed_dts, keep, [], unread
    lost = [(int(t) + int(offsets[0]), int(t), int(p), int(z))
            for t, p, z in zip(e_ts[~delivered], e_pos[~delivered], e_size[~delivered])]
    return fixed_pts, fixed_dts, keep, lost, unread


class _IndexMismatch(Exception):
    """The decoder produced a picture the frame table cannot name (internal; rebuilds the table by decoding)."""


class _Restructured(Exception):
    """The frame table was rebuilt from a full decode; the caller clamps against its count again (internal)."""


_LANDED_AFTER = object()


class _LRU:
    """Thread-safe LRU dict (file indices and frame-folder listings, keyed by file identity)."""

    def __init__(self, maxsize: int):
        self.maxsize = maxsize
        self._data: "OrderedDict[tuple, object]" = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key):
        with self._lock:
            value = self._data.get(key)
            if value is not None:
                self._data.move_to_end(key)
            return value

    def put(self, key, value) -> None:
        with self._lock:
            self._data[key] = value
            self._data.move_to_end(key)
            while len(self._data) > self.maxsize:
                self._data.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._data.clear()

    def _after_fork(self) -> None:
        self._lock = threading.Lock()  # a lock held by another thread at fork time would never be released


_INDEX = _LRU(1024)  # (stat key, exact) -> _FileIndex
_FOLDERS = _LRU(1024)  # (stat key of the folder, pattern) -> (files, height, width)


# --------------------------------------------------------------------------------------------------------
# Decoding a video file


class _VideoFile:
    """One opened video file: container, decoder and colour converter (internal backend of VideoReader).

    ``lazy``: the PyAV container is opened on first use (a read whose index is cached and that torchcodec
    decodes never opens it)."""

    def __init__(self, path: str, key: tuple, lazy: bool = False):
        self.path, self.key = path, key
        self.container = self.stream = None
        self.closed, self.pid, self.fresh = False, os.getpid(), True
        self.torchcodec: Optional[TorchcodecFile] = None
        if not lazy:
            self._reopen()

    # -- lifecycle
    def _reopen(self) -> None:
        self.close()
        self.closed = False
        self.pid = os.getpid()
        self.container, self.stream = _open(self.path)
        self.fresh = True  # nothing demuxed since opening: decoding starts at frame 0 without a seek

    def close(self) -> None:
        if self.container is not None and self.pid == os.getpid():
            self.container.close()
        self.container = None
        self.closed = True
        if self.torchcodec is not None:
            self.torchcodec.close()

    # -- index
    def index(self, exact: bool = False) -> _FileIndex:
        fi = _INDEX.get((self.key, True)) or (None if exact else _INDEX.get((self.key, False)))
        if fi is None:
            fi = self._exact_index() if exact else self._cheap_index()
            _INDEX.put((self.key, exact), fi)
        if fi.table.num_frames == 0:
            raise VideoError(f"{self.path}: zero decodable frames (the video stream is empty or every packet is "
                             "corrupt); re-encode the file or remove it from the manifest")
        return fi

    def _cheap_index(self) -> _FileIndex:
        if self.container is None or self.pid != os.getpid():
            self._reopen()
        fi = _demux_index(self.container, self.stream, self.path)  # demuxes this container to its end
        self.fresh = False
        if fi.table.num_frames == 0:  # nothing to read by packets: let one decode pass have its say
            return self._exact_index()
        return fi

    def _exact_index(self) -> _FileIndex:
        """The frame table checked by decoding every frame once (no colour conversion, no deblocking)."""
        scan = _VideoFile(self.path, self.key)
        try:
            cheap = _demux_index(scan.container, scan.stream, self.path)
            table, first = cheap.table, None
            if table.pts is not None:
                scan._reopen_for_scan()
                try:
                    damaged, first = scan._run(table, {}, None, None, "start", 0)
                    table.bad = spread_damage(table, damaged)
                    table.why = {**damaged, **table.why}
                    table.exact = True
                except _IndexMismatch:
                    table = None
            if table is None or table.pts is None:
                scan._reopen_for_scan()
                table, first = scan._scan_sequential()
            height, width = (first.height, first.width) if first is not None else (cheap.height, cheap.width)
            return _FileIndex(table, _fps(scan.stream, table.pts), height, width, scan.stream.time_base,
                              scan.stream.index, scan.stream.codec_context.pix_fmt)
        finally:
            scan.close()

    def _reopen_for_scan(self) -> None:
        self._reopen()
        self.fresh = False
        # Only counts, timestamps and decoder errors are read here, never pixels: skipping the deblocking
        # filter saves 15-25% of an H.264 decode and changes no frame count.
        self.stream.codec_context.options = {"skip_loop_filter": "all"}

    def _scan_sequential(self):
        """Exact table of a file named by decoding order; frames from the first decoder error on are bad."""
        count, first, damage = 0, None, None
        for packet in _packets(self.container, self.stream):
            if packet.size == 0:
                continue
            try:
                frames = _feed(packet)
            except av.FFmpegError:
                damage = count if damage is None else damage
                continue
            for frame in frames:
                first = first or frame
                if frame.is_corrupt and damage is None:
                    damage = count
                count += 1
        for frame in _drain(self.stream):
            first = first or frame
            count += 1
        table = sequential_table(count, exact=True)
        if damage is not None:
            table.bad[damage:] = True
            table.why[damage] = "the decoder reports an error here and the file has no timestamps to name the frames after it"
        return table, first

    # -- positioning
    def _position(self, table: FrameTable, k: int) -> str:
        """Put the demuxer at keyframe ``k`` of the table: "start" (decode from the file start) or "seek"."""
        if self.container is None or self.pid != os.getpid():
            self._reopen()  # not opened yet (lazy), or inherited through fork: shares its file offset with the parent
        if k == 0 and self.fresh:
            self.fresh = False
            return "start"
        self.fresh = False
        try:
            self.container.seek(int(table.key_seek[k]), backward=True, stream=self.stream)
            return "seek"
        except av.FFmpegError:
            self._reopen()  # a demuxer that cannot seek there: decode from the start instead
            self.fresh = False
            return "start"

    # -- decoding
    def decode(self, wanted: np.ndarray, size: Optional[Tuple[int, int]],
               buffer: Optional[np.ndarray] = None, backend: str = "pyav") -> np.ndarray:
        """Frames ``wanted`` (sorted unique int64 [U], each < num_frames) as uint8 [U, H, W, 3]; written into
        ``buffer[:U]`` when that has room at this frame size (a reused allocation). ``backend="torchcodec"``:
        torchcodec decodes when it can do so exactly (:mod:`.torchcodec_backend`), else the PyAV path."""
        fi = self.index()
        table = fi.table
        h, w = (fi.height, fi.width) if size is None else size
        reuse = buffer is not None and len(buffer) >= len(wanted) and buffer.shape[1:] == (h, w, 3)
        if reuse:
            out = buffer[:len(wanted)]
        else:
            out = np.empty((len(wanted), h, w, 3), np.uint8)
        if not len(wanted):
            return out
        if table.pts is None:
            return self._decode_sequential(fi, wanted, out, size)
        if table.any_bad and table.bad[wanted].any():  # known before decoding anything
            frame = int(wanted[table.bad[wanted]][0])
            raise self._damage_error(frame, explain(table, frame, {}), table.bad)
        if backend == "torchcodec" and size is None:
            frames = self._torchcodec_read(fi, wanted)
            if frames is not None:
                if reuse:  # the caller's allocation
                    out[...] = frames
                    return out
                return frames
        # Segments: runs of wanted frames decoded without a seek (no keyframe between a frame and the next one).
        if wanted[-1] - wanted[0] == len(wanted) - 1:  # consecutive frames (a clip at stride 1): one run
            bounds, k = [(0, len(wanted))], [int(np.searchsorted(table.key_frame, wanted[0], side="right")) - 1]
        else:
            k = (np.searchsorted(table.key_frame, wanted, side="right") - 1).tolist()
            cut = (np.flatnonzero(table.key_frame[k[1:]] > wanted[:-1] + 1) + 1).tolist()
            bounds = list(zip([0] + cut, cut + [len(wanted)]))
        try:
            for a, b in bounds:
                self._segment(fi, wanted[a:b].tolist(), range(a, b), out, size, k[a])
        except _IndexMismatch as err:
            if table.exact:  # even the table built by decoding everything cannot name what this read gave
                raise VideoError(f"{self.path}: frames {frame_ranges(wanted.tolist())} cannot be named ({err}); the "
                                 "file is damaged: re-encode it or remove it from the manifest") from None
            _INDEX.put((self.key, True), self._exact_index())
            raise _Restructured from None
        return out

    def _torchcodec_read(self, fi: _FileIndex, wanted: np.ndarray) -> Optional[np.ndarray]:
        """uint8 [U, H, W, 3]: ``wanted`` decoded by torchcodec; None when the PyAV path must read them: no
        timestamps, a pixel format whose RGB would differ (:func:`same_rgb`), or torchcodec could not return
        exactly the table's pictures (:meth:`TorchcodecFile.read`)."""
        table = fi.table
        if fi.time_base is None or table.pts is None or not same_rgb(fi.pix_fmt, fi.height, fi.width):
            return None
        # (a bad frame on the way to a wanted one needs no check here: every frame decoded from a bad one is bad
        # itself, until the next keyframe, and the caller refused wanted frames known bad)
        if self.torchcodec is None:
            self.torchcodec = TorchcodecFile(self.path, fi.stream_index)
        return self.torchcodec.read(table, wanted, fi.time_base, (fi.height, fi.width))

    def _segment(self, fi: _FileIndex, frames: List[int], slots, out, size, k: int) -> None:
        table = fi.table
        want = dict(zip(frames, slots))
        self.size_check = (fi.height, fi.width) if size is None else None
        while True:
            mode = self._position(table, k)
            result = self._run(table, want, out, size, mode, frames[0])
            if result is not _LANDED_AFTER:
                break
            # The demuxer landed after the wanted frame (its seek index disagrees with the packet timestamps):
            # step back one keyframe, or decode from the start.
            if k == 0:
                self._reopen()
            k = max(0, k - 1)
        damaged, _ = result
        hit = self._first_hit(table, damaged, want)
        if hit is not None:
            raise self._damage_error(hit, explain(table, hit, damaged), spread_damage(table, damaged))

    def _run(self, table: FrameTable, want: Dict[int, int], out, size, mode: str, first: int):
        """Feed packets from the current position until every frame of ``want`` (frame -> slot of ``out``) is
        converted, then drain the decoder. Returns ``(damaged, first decoded picture)`` with ``damaged`` =
        frame -> reason for every frame found damaged, or ``_LANDED_AFTER``. Stops early once a wanted frame is
        damaged (the read fails anyway).

        This loop runs once per packet of every read: the common case keeps its bookkeeping in locals and
        leaves everything unusual to ``_Segment`` (method calls per packet cost ~5% of an MJPEG clip).
        """
        seg = _Segment(table, want, 0 if mode == "start" else None)
        by_pos, by_pts = table.pos_lookup, table.lookup
        name, fed, seen, damaged = seg.name, seg.fed, seg.seen, seg.damaged
        landed, remaining, first_picture, n_damaged = seg.landed, len(want), None, 0
        convert, stop_early = (self._converter(size) if want else None), bool(want)

        def take(pictures) -> None:  # convert the wanted pictures (one call per packet: ~0.1 us)
            nonlocal first_picture, remaining
            for picture in pictures:
                first_picture = first_picture or picture
                o = name.get(picture.pts)
                if o is None or o < landed or o in seen or picture.is_corrupt:
                    seg.odd_picture(o, picture)
                    continue
                seen.add(o)
                slot = want.get(o)
                if slot is not None:
                    convert(picture, o, out[slot])
                    remaining -= 1

        for packet in _packets(self.container, self.stream):
            if not packet.size:
                continue
            i = by_pos.get(packet.pos) if by_pos else seg.by_timestamp(packet)
            if i is None:
                if packet.is_discard:
                    _feed(packet)  # edit-list pre-roll: decoded as a reference, never shown
                continue  # junk a demuxer found while resyncing after damaged bytes: not a frame
            if landed is None:
                if not packet.is_keyframe:
                    continue  # decoding can only start at a keyframe
                if i > first:
                    return _LANDED_AFTER
                landed = seg.landed = i
            fed.append(i)
            if name.setdefault(packet.pts, i) != i or packet.is_corrupt:
                seg.odd_packet(i, packet)
            try:
                pictures = _feed(packet)
            except av.FFmpegError as err:
                seg.damage(i, f"the decoder rejects its packet ({err})", byte_level=True)
                pictures = ()
            take(pictures)
            if len(damaged) != n_damaged:
                n_damaged = len(damaged)
                if stop_early and self._first_hit(table, damaged, want) is not None:
                    return damaged, first_picture
            if stop_early and remaining == 0:
                break
        take(_drain(self.stream))  # held-back pictures: no more decoding
        seg.remaining = remaining
        return seg.finish(), first_picture

    @staticmethod
    def _first_hit(table: FrameTable, damaged: Dict[int, str], want: Dict[int, int]) -> Optional[int]:
        if not damaged:
            return None
        bad = spread_damage(table, damaged)
        hits = [f for f in want if f < len(bad) and bad[f]]
        return min(hits) if hits else None

    def _converter(self, size):
        """``convert(picture, frame index, dst)``: RGB into ``dst`` (a view of the converted picture is copied
        once); with ``size``, swscale resizes during the colour conversion, so no full-size RGB frame is made."""
        if size is not None:
            def convert(frame, index: int, dst: np.ndarray) -> None:
                dst[...] = rgb_array(frame, size)
            return convert
        h, w = self.size_check

        def convert_checked(frame, index: int, dst: np.ndarray) -> None:
            if frame.height != h or frame.width != w:
                raise VideoError(f"{self.path}: frame {index} is {frame.width}x{frame.height} but the video starts "
                                 f"at {w}x{h} (resolution change); pass size=(h, w) or re-encode at one size")
            dst[...] = rgb_array(frame, None)
        return convert_checked

    def _decode_sequential(self, fi: _FileIndex, wanted: np.ndarray, out, size) -> np.ndarray:
        """Files without timestamps: frame i = the i-th picture decoded from the start of the file."""
        table = fi.table
        if table.bad[wanted].any():
            frame = int(wanted[table.bad[wanted]][0])
            raise self._damage_error(frame, explain(table, frame, {}), table.bad)
        self.size_check = (fi.height, fi.width) if size is None else None
        convert = self._converter(size)
        if not self.fresh or self.container is None or self.pid != os.getpid():
            self._reopen()
        self.fresh = False
        want = dict(zip(wanted.tolist(), range(len(wanted))))
        last, pos, done = int(wanted[-1]), -1, 0

        def pictures():
            for packet in _packets(self.container, self.stream):
                if packet.size == 0:
                    continue
                try:
                    yield from _feed(packet)
                except av.FFmpegError as err:
                    yield err
            yield from _drain(self.stream)

        for frame in pictures():
            if isinstance(frame, Exception) or frame.is_corrupt:
                raise self._damage_error(pos + 1, "the decoder reports an error here, and without timestamps the "
                                         "frames after it cannot be named", table.bad)
            pos += 1
            slot = want.get(pos)
            if slot is not None:
                convert(frame, pos, out[slot])
                done += 1
                if done == len(want):
                    return out
            if pos >= last:
                break
        raise self._damage_error(int(wanted[done]), "the file ends before it (truncated file)", table.bad)

    def _damage_error(self, frame: int, reason: str, bad: np.ndarray) -> VideoError:
        known = frame_ranges(np.flatnonzero(bad).tolist()) or str(frame)
        return VideoError(f"{self.path}: frame {frame} cannot be read: {reason}. The file is damaged there "
                          f"(unreadable frames known so far: {known}); re-encode or re-download it, or remove it "
                          "from the manifest (in training, clips over these frames are skipped and counted)")


class _Segment:
    """Bookkeeping of one decoding run from a keyframe: the packets that went in, the pictures that came out.

    Packets are recognised by byte position (pts where positions are unknown); a picture is named by the
    packet that carried its pts. Every packet fed must give exactly one clean picture.
    """

    def __init__(self, table: FrameTable, want: Dict[int, int], landed: Optional[int]):
        self.table, self.want, self.landed = table, want, landed  # landed: frame decoding started at
        self.by_pos = table.pos_lookup
        self.name: Dict[int, int] = {}  # pts as the demuxer gave it -> frame index
        self.fed: List[int] = []
        self.seen = set()
        self.damaged: Dict[int, str] = {}
        self.remaining = len(want)
        self.cut = set()  # frames whose packet the file's end cut short: no damaged bytes before them

    def by_timestamp(self, packet) -> int:
        """Frame of a packet when the table has no byte positions."""
        i = self.table.lookup.get(packet.pts)
        if i is None:
            raise _IndexMismatch(f"a packet with pts {packet.pts} the index does not know")
        return i

    def odd_packet(self, i: int, packet) -> None:
        """A packet that shares its timestamp with another one fed here, or is cut short."""
        other = self.name[packet.pts]
        if other != i:
            self.damage(i, f"its packet carries the timestamp of frame {other}", byte_level=False)
            self.damage(other, f"frame {i}'s packet carries its timestamp", byte_level=False)
        if packet.is_corrupt:
            self.cut.add(i)
            self.damage(i, "its packet is cut short by the end of the file (truncated file)", byte_level=False)

    def damage(self, i: int, reason: str, byte_level: bool) -> None:
        add_damage(self.table, self.damaged, i, reason, byte_level and i not in self.cut)

    def odd_picture(self, o: Optional[int], picture) -> None:
        """A picture that is not a fresh clean frame of this run: unnamed, leading, repeated or concealed."""
        if o is None:
            raise _IndexMismatch(f"decoded a picture with pts {picture.pts} that no packet fed here has")
        if o < self.landed:
            return  # a leading picture of the keyframe decoding started at (open GOP): not ours
        if o in self.seen:
            self.damage(o, "the decoder put out two pictures for it", byte_level=False)
            return
        self.seen.add(o)
        self.damage(o, "the decoder reports errors in it (concealed picture)", byte_level=True)

    def finish(self) -> Dict[int, str]:
        """After the drain: packets that gave no picture, wanted frames the file ended before."""
        landed = 0 if self.landed is None else self.landed
        for i in self.fed:
            if i >= landed and i not in self.seen:
                self.damage(i, "no picture came out of the decoder for its packet", byte_level=True)
        if self.remaining:
            for f in sorted(self.want):
                if f not in self.seen and f not in self.damaged:
                    self.damaged[f] = "the file ends before it (truncated file)"
                    break
        return self.damaged


class _OpenFiles:
    """Per-process LRU of idle opened video files, so that a clip of a video read again skips ``av.open``.

    A file is handed out to one reader at a time (thread-safe), keyed by its identity (path, inode, size,
    mtime): a changed file is opened afresh and its old entry closed. After ``fork`` the child forgets the
    parent's entries without touching them (their file offsets are shared with the parent).
    """

    def __init__(self, capacity: int):
        self.capacity = capacity
        self._idle: List[_VideoFile] = []  # least recently used first
        self._lock = threading.Lock()
        self._inherited: List[_VideoFile] = []  # parent's entries after a fork: kept, never used or closed

    def checkout(self, path: str, key: tuple) -> _VideoFile:
        """An opened file for ``path`` whose identity is ``key`` (:func:`_stat_key`), cached or new."""
        with self._lock:
            for n in range(len(self._idle) - 1, -1, -1):
                if self._idle[n].key == key:
                    return self._idle.pop(n)
        return _VideoFile(path, key, lazy=True)

    def checkin(self, f: _VideoFile) -> None:
        if f.closed or f.pid != os.getpid():
            return
        closing = []
        with self._lock:
            stale = [g for g in self._idle if g.key[0] == f.key[0] and g.key != f.key]  # the file changed
            closing += stale
            self._idle = [g for g in self._idle if g not in stale] + [f]
            while len(self._idle) > self.capacity:
                closing.append(self._idle.pop(0))
        for g in closing:
            g.close()

    def resize(self, capacity: int) -> int:
        """Set the capacity (closing the least recently used extras); returns the previous one."""
        with self._lock:
            previous, self.capacity = self.capacity, capacity
            closing = self._idle[: max(0, len(self._idle) - capacity)]
            self._idle = self._idle[len(closing):]
        for g in closing:
            g.close()
        return previous

    def clear(self) -> None:
        with self._lock:
            closing, self._idle = self._idle, []
        for g in closing:
            g.close()

    def _after_fork(self) -> None:
        self._lock = threading.Lock()
        self._inherited += self._idle
        self._idle = []


_OPEN = _OpenFiles(capacity=4)
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=lambda: [c._after_fork() for c in (_OPEN, _INDEX, _FOLDERS)])


def set_open_cache_size(max_open: int) -> int:
    """Keep at most ``max_open`` idle opened video files per process (default 4; 0 turns the cache off).

    Returns the previous size. Each DataLoader worker has its own cache. An entry holds a file handle and the
    decoder's buffers (a few MB for SD video, tens of MB for 1080p), so keep it small.
    """
    max_open = _check_int(max_open, "max_open", "set_open_cache_size", 0)
    return _OPEN.resize(max_open)


def clear_index_cache() -> None:
    """Forget every cached file index and folder listing and close the cached open files (e.g. after rewriting
    files in place within the same mtime tick)."""
    _INDEX.clear()
    _FOLDERS.clear()
    _OPEN.clear()


class OpenFileCache(_OpenFiles):
    """A cache of at most ``max_open`` idle opened video files (0: none) that :func:`read_clip` and
    :class:`VideoReader` use inside ``with cache:`` instead of the process's own cache; the process's cache is
    back at the end of the block. A cache keeps its files between blocks until :meth:`clear`.

    For timing reads with and without a warm cache side by side (``benchmarks/decode.py``) in one thread: the
    switch is process-wide. ``len(cache)`` is the number of idle open files it holds. Raises ``ValueError`` for
    ``max_open`` below 0.

    >>> cold, warm = OpenFileCache(0), OpenFileCache(4)
    >>> with warm:
    ...     len(warm)
    0
    """

    def __init__(self, max_open: int):
        super().__init__(_check_int(max_open, "max_open", "OpenFileCache", 0))
        self._previous: List[_OpenFiles] = []

    def __len__(self) -> int:
        return len(self._idle)

    def __enter__(self) -> "OpenFileCache":
        global _OPEN
        self._previous.append(_OPEN)
        _OPEN = self
        return self

    def __exit__(self, *exc) -> None:
        global _OPEN
        _OPEN = self._previous.pop()


# --------------------------------------------------------------------------------------------------------
# Frame folders


def _folder(path: str, frame_pattern: Optional[str], st: Optional[os.stat_result] = None) -> FrameFolder:
    if frame_pattern is not None:
        check_frame_pattern(frame_pattern)
    if st is None:
        try:
            st = os.stat(path)
        except OSError:
            raise _not_found(path) from None
    key = (os.path.abspath(path), st.st_dev, st.st_ino, st.st_mtime_ns, frame_pattern)
    hit = _FOLDERS.get(key)
    if hit is None:
        files = list_frames(path, frame_pattern)
        hit = (files, decode_image(files[0]).shape[:2])
        _FOLDERS.put(key, hit)
    return FrameFolder(path, frame_pattern, files=hit[0], shape=hit[1])


def _source(path: str, frame_pattern: Optional[str]):
    """(FrameFolder, None) for a folder or pattern path, (None, file identity :func:`_stat_key`) for a file;
    one ``stat`` call. VideoError when the path is neither."""
    try:
        st = os.stat(path)
    except OSError:
        split = split_pattern_path(path)
        if split is None:
            raise _not_found(path) from None
        if frame_pattern is not None and frame_pattern != split[1]:
            raise ValueError(f"{path}: the path names the pattern {split[1]!r} but frame_pattern={frame_pattern!r}; "
                             "give one of them")
        return _folder(*split), None
    if stat.S_ISDIR(st.st_mode):
        return _folder(path, frame_pattern, st), None
    if not stat.S_ISREG(st.st_mode):
        raise VideoError(f"{path}: not a regular file; pass a video file or a folder of frame images")
    return None, _stat_key(path, st)


def _check_out(out, path: str) -> Optional[np.ndarray]:
    if out is None:
        return None
    if not torch.is_tensor(out) or out.dtype != torch.uint8 or out.dim() != 4 or out.shape[-1] != 3 \
            or not out.is_contiguous() or out.device.type != "cpu":
        what = f"{out.dtype} {tuple(out.shape)}" if torch.is_tensor(out) else type(out).__name__
        raise ValueError(f"{path}: out must be a contiguous CPU uint8 tensor [N, H, W, 3], got {what}")
    return out.numpy()


# --------------------------------------------------------------------------------------------------------
# Public API


class VideoReader:
    """Read many clips of one video (file or frame folder) with one open container, each frame decoded once.

    >>> with VideoReader("video.mp4") as reader:                              # doctest: +SKIP
    ...     clips = reader.read_clips([0, 8, 16], num_frames=16, stride=2, size=(112, 112))
    ...     clips.shape, clips.dtype
    (torch.Size([3, 16, 112, 112, 3]), torch.uint8)

    ``size=(h, w)`` lets swscale resize during the colour conversion. Clips that run past the last frame repeat
    it. Frames requested by several clips are decoded once (requests are merged and sorted), and the reader
    seeks forward over gaps that contain a keyframe, so evaluating every clip position or a dense pass over all
    frames decodes each frame once. A read that needs a damaged frame raises :class:`VideoError` naming it.
    ``frame_pattern``: the file-name pattern of a frame folder (see :mod:`lightning_temporal.data.frames`).
    ``backend``: ``"pyav"`` (default), ``"torchcodec"`` or ``"auto"`` (torchcodec when it imports), see
    :func:`read_clip`.
    """

    def __init__(self, path: PathLike, *, frame_pattern: Optional[str] = None, backend: str = "pyav"):
        self.path = os.fspath(path)
        self.backend = resolve_backend(backend, f"{self.path}: backend")
        self._folder, key = _source(self.path, frame_pattern)
        self._file = _OPEN.checkout(self.path, key) if key is not None else None
        self._info: Optional[VideoInfo] = None
        if self._file is not None:
            try:
                self._file.index()  # one demux pass (cached): a file without frames fails here
            except BaseException:
                self._file.close()
                raise

    # -- lifecycle
    def close(self) -> None:
        if self._file is not None:
            _OPEN.checkin(self._file)
            self._file = None

    def __enter__(self) -> "VideoReader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _open_file(self) -> _VideoFile:
        if self._file is None:
            raise ValueError(f"{self.path}: the reader is closed; open a new VideoReader")
        return self._file

    # -- metadata
    @property
    def info(self) -> VideoInfo:
        """Exact :class:`VideoInfo` (for a file this decodes it once without colour conversion, then caches)."""
        if self._info is None:
            if self._folder is not None:
                f = self._folder
                self._info = VideoInfo(self.path, f.num_frames, 0.0, f.height, f.width)
            else:
                fi = self._open_file().index(exact=True)
                self._info = VideoInfo(self.path, fi.table.num_frames, fi.fps, fi.height, fi.width,
                                       fi.table.damaged_ranges())
        return self._info

    @property
    def num_frames(self) -> int:
        """Frames of the video: from the packet index of a file (no decoding), the listing of a frame folder."""
        return self._num_frames()

    def _num_frames(self) -> int:
        return self._folder.num_frames if self._folder is not None else self._open_file().index().table.num_frames

    # -- reading
    def read_frames(self, indices, *, size=None) -> torch.Tensor:
        """Frames at ``indices`` (any order, repeats allowed, each < num_frames) as uint8 [N, H, W, 3]."""
        size = _check_size(size, self.path)
        idx = _check_starts(indices, self.path)
        return self._gather(idx, size)

    def read_clip(self, start, num_frames, stride=1, *, size=None) -> torch.Tensor:
        """Frames ``start, start + stride, ...`` (``num_frames`` of them) as uint8 [T, H, W, 3]."""
        start = _check_int(start, "start", self.path, 0)
        return self.read_clips(np.array([start], np.int64), num_frames, stride, size=size)[0]

    def read_clips(self, starts, num_frames, stride=1, *, size=None) -> torch.Tensor:
        """Clips starting at ``starts`` (int [K]) as uint8 [K, T, H, W, 3]; frames past the end repeat the last."""
        starts = _check_starts(starts, self.path)
        num_frames = _check_int(num_frames, "num_frames", self.path, 1)
        stride = _check_int(stride, "stride", self.path, 1)
        size = _check_size(size, self.path)
        idx = starts[:, None] + stride * np.arange(num_frames, dtype=np.int64)[None, :]  # K, T
        return self._gather(idx, size, starts=starts)

    def read_all(self, *, size=None, out: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Every frame in order as uint8 [L, H, W, 3] (one sequential decode); VideoError if one is damaged.

        ``out``: optional uint8 ``[N, H, W, 3]`` contiguous CPU buffer to decode into, so that a caller reading
        many videos reuses one allocation: when it has room for the ``L`` frames at the decoded size, the result
        is the view ``out[:L]``; otherwise it is left alone and the result is a new tensor (the same frames).
        """
        size = _check_size(size, self.path)
        buf = _check_out(out, self.path)
        result = self._gather(np.arange(self._num_frames(), dtype=np.int64), size, out=buf)
        return out[:len(result)] if buf is not None and result.data_ptr() == out.data_ptr() else result

    def _gather(self, idx: np.ndarray, size, starts: Optional[np.ndarray] = None,
                out: Optional[np.ndarray] = None) -> torch.Tensor:
        for _ in range(2):  # a second round only when a full decode rebuilt the frame table
            n = self._num_frames()
            first = starts if starts is not None else idx.reshape(-1)
            if first.size and first.max() >= n:
                what = "start" if starts is not None else "frame index"
                raise ValueError(f"{self.path}: {what} {int(first.max())} is past the last decodable frame (the video "
                                 f"has {n} frames, valid values 0..{n - 1}); use probe() for the frame count")
            flat = np.minimum(idx, n - 1).reshape(-1)  # padding: past the end the last frame repeats
            increasing = flat.size < 2 or bool((flat[1:] > flat[:-1]).all())  # one clip: no repeats to merge
            wanted, inverse = (flat, None) if increasing else np.unique(flat, return_inverse=True)
            try:
                if self._folder is not None:
                    frames = self._folder.decode(wanted, size)
                else:
                    frames = self._open_file().decode(wanted, size, out if inverse is None else None, self.backend)
            except _Restructured:
                continue
            if inverse is None:
                return torch.from_numpy(frames.reshape(idx.shape + frames.shape[1:]))  # no gather copy
            return torch.from_numpy(frames[inverse.reshape(idx.shape)])
        raise AssertionError("unreachable: the frame table is rebuilt at most once")


def probe(path: PathLike, *, exact: bool = True, frame_pattern: Optional[str] = None) -> VideoInfo:
    """Frame count, fps, height, width and damaged frames of a video file or frame folder.

    ``exact=True`` decodes the file once without colour conversion (about the cost of decoding, much less
    than reading it as RGB): ``damaged`` then lists every frame that cannot be read, and the table is cached
    for later reads in this process. ``exact=False`` reads one demux pass (~1 ms): the same frame count
    (missing frames, truncation and timestamps are all visible there), but ``damaged`` only lists the frames
    the timestamps show missing. ``frame_pattern``: see :mod:`lightning_temporal.data.frames`.
    Raises VideoError naming the file when it cannot be read at all.
    """
    path = os.fspath(path)
    folder, key = _source(path, frame_pattern)
    if folder is not None:
        return VideoInfo(path, folder.num_frames, 0.0, folder.height, folder.width)
    if exact:
        with VideoReader(path) as reader:
            return reader.info
    fi = _INDEX.get((key, True)) or _INDEX.get((key, False))  # a cached index needs no open file
    if fi is None:
        with VideoReader(path) as reader:
            fi = reader._open_file().index()
    return VideoInfo(path, fi.table.num_frames, fi.fps, fi.height, fi.width, fi.table.damaged_ranges())


def read_clip(path: PathLike, start, num_frames, stride=1, *, size=None,
              frame_pattern: Optional[str] = None, backend: str = "pyav") -> torch.Tensor:
    """Frames ``start, start + stride, ...`` of ``path`` as uint8 [T, H, W, 3], frame-exact.

    Frame ``i`` is the frame with the ``i``-th smallest timestamp (module docstring); seeks to the keyframe at
    or before ``start`` and decodes forward. Past the last frame the last frame repeats; ``start`` itself must
    be a frame of the video (ValueError otherwise). A damaged frame in the clip raises VideoError naming the
    file and the frame. ``size=(h, w)`` resizes during the colour conversion.

    ``backend``: ``"pyav"`` (default), ``"torchcodec"`` (ImportError when it does not import) or ``"auto"``
    (torchcodec when it imports, else PyAV). Frames are named by the same frame table and come out
    byte-identical; torchcodec decodes full-size reads of files with timestamps and leaves the rest (``size``
    given, a run over a frame known bad, anything it cannot return exactly) to PyAV. It cannot see a picture
    the decoder conceals without an error: see :mod:`lightning_temporal.data.torchcodec_backend`.
    """
    path = os.fspath(path)
    backend = resolve_backend(backend, f"{path}: backend")
    folder, key = _source(path, frame_pattern)
    if folder is not None:
        with VideoReader(path, frame_pattern=frame_pattern) as reader:  # the folder listing is cached
            return reader.read_clip(start, num_frames, stride, size=size)
    start = _check_int(start, "start", path, 0)
    num_frames = _check_int(num_frames, "num_frames", path, 1)
    stride = _check_int(stride, "stride", path, 1)
    size = _check_size(size, path)
    f = _OPEN.checkout(path, key)  # the lean path of VideoReader(path).read_clip: it runs once per training clip
    try:
        for _ in range(2):  # a second round only when a full decode rebuilt the frame table
            n = f.index().table.num_frames
            if start >= n:
                raise ValueError(f"{path}: start {start} is past the last decodable frame (the video has {n} frames, "
                                 f"valid values 0..{n - 1}); use probe() for the frame count")
            inside = min(num_frames, (n - 1 - start) // stride + 1)  # frames before the padding
            wanted = start + stride * np.arange(inside, dtype=np.int64)
            if inside < num_frames and wanted[-1] != n - 1:
                wanted = np.append(wanted, n - 1)  # padding: past the end the last frame repeats
            try:
                frames = f.decode(wanted, size, backend=backend)
            except _Restructured:
                continue
            if inside < num_frames:
                frames = frames[np.minimum(np.arange(num_frames), len(wanted) - 1)]
            return torch.from_numpy(frames)
        raise AssertionError("unreachable: the frame table is rebuilt at most once")
    finally:
        _OPEN.checkin(f)
