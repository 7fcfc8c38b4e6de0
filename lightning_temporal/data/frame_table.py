"""The frame table of a video file: which frame each packet is, which frames are missing, and which frames a
damaged frame can spoil. Pure NumPy, no I/O (``lightning_temporal.data.video`` fills it from PyAV).

Definitions (used by every reader of this package):

* **Frame ``i``** is the frame with the ``i``-th smallest presentation timestamp (pts) among the frames the
  container holds (one packet per frame). Decoding order (B-frames) and a non-zero first pts do not matter.
  A packet is recognised by its byte position in the file (and its pts where positions are unknown), so a
  demuxer that loses count after damaged bytes (AVI numbers packets by counting them) cannot shift frames.
* **Missing frames** keep their index, so no later frame shifts, and are *bad*:

  - packets the container's own index lists but the demuxer could not read (damaged chunk headers);
  - pictures the codec's own numbering counts between two timestamps that the file does not hold (a packet
    dropped when the file was written; H.264 picture order count);
  - two packets with one timestamp name one frame, which is bad.

* **Truncation.** A packet the demuxer reports as cut short by the end of the file is bad; the video ends at
  the first bad frame after which no more than the B-frame reorder depth + 1 readable frames follow (frames
  decoded before the cut but shown after it). ``num_frames`` does not count that tail.
* **Spreading damage** (:func:`add_damage`, :func:`spread_damage`). Damaged bytes rarely stop at a packet
  boundary: when a packet is found damaged (the decoder rejects or conceals it, gives no picture, or the
  demuxer lost it), the packet just before it in the file is damaged too, since the tail of that packet may
  be overwritten without the decoder noticing. A frame decoded from a damaged one is damaged too: for a
  damaged frame ``j``, every frame decoded after ``j`` (in packet order) and shown before the next keyframe
  after ``j`` (:func:`dependent_frames`; without its decoding position, from ``j`` minus the reorder depth).
  This is conservative: a damaged B-frame that nothing references also condemns the rest of its keyframe
  interval.

A timestamp gap alone is never taken for lost frames: screen recorders, webcams and ``mpdecimate`` write
variable-frame-rate files whose timestamps jump while every frame is there. Frames are inferred missing only on
evidence of loss: the container's index lists a packet the demuxer cannot deliver, or the codec's own picture
numbering (H.264 picture order count) skips pictures between two timestamps. What cannot be seen here: a
frame dropped from a stream whose codec does not number its pictures (MPEG-4 Part 2, VP8/VP9, MJPEG) when the
file was written; the decoder still reports the frames that referenced it where it notices.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np

MAX_GAP_FRAMES = 1000  # a longer timestamp jump is a discontinuity (concatenated streams), not lost frames
ADJACENT_BYTES = 64  # container overhead between two packets that follow each other in the file


@dataclass
class FrameTable:
    """Where the frames of one video file are, and which of them cannot be read.

    ``pts`` is None when the packets carry no usable timestamps: frames are then named by decoding order
    from the start of the file (reads decode from frame 0).
    """

    pts: Optional[np.ndarray]  # int64 [L] increasing; a missing frame carries its expected pts
    decode_pos: np.ndarray  # int64 [L] position of the frame's packet in demux (= decode) order, -1: none
    key_frame: np.ndarray  # int64 [K] frame indices decoding can start at, increasing, key_frame[0] == 0
    key_seek: np.ndarray  # int64 [K] timestamp to seek to for each keyframe (stream time base)
    bad: np.ndarray  # bool [L] frames known to be unreadable before decoding anything
    why: Dict[int, str]  # frame -> what is wrong with it, for the frames that are damaged themselves
    num_frames: int  # frames of the video (a truncated tail is not counted)
    reorder: int = 0  # B-frame reorder depth: how far a frame can be shown before an earlier-decoded one
    exact: bool = False  # True: every frame was decoded once to build it (damage seen by the decoder is in bad)
    file_prev: Optional[np.ndarray] = None  # int64 [L] frame whose packet ends just before this one's, -1: none
    lookup: Dict[int, int] = field(default_factory=dict, repr=False)  # pts -> frame index, real frames only
    pos_lookup: Dict[int, int] = field(default_factory=dict, repr=False)  # packet byte position -> frame index
    _any_bad: Optional[tuple] = field(default=None, repr=False, compare=False)

    @property
    def any_bad(self) -> bool:
        """Whether any frame is known to be unreadable (reads skip the check when none is)."""
        if self._any_bad is None or self._any_bad[0] is not self.bad:
            self._any_bad = (self.bad, bool(self.bad.any()))
        return self._any_bad[1]

    def damaged_ranges(self) -> Tuple[Tuple[int, int], ...]:
        """Runs ``(first, stop)`` of bad frames among the first ``num_frames``, stop exclusive."""
        bad = np.concatenate([[False], self.bad[: self.num_frames], [False]])
        edges = np.flatnonzero(bad[1:] != bad[:-1])
        return tuple((int(a), int(b)) for a, b in zip(edges[::2], edges[1::2]))

    def next_key(self, frame: int) -> int:
        """Frame index of the first keyframe after ``frame`` (``len(decode_pos)`` when there is none)."""
        k = int(np.searchsorted(self.key_frame, frame, side="right"))
        return int(self.key_frame[k]) if k < len(self.key_frame) else len(self.decode_pos)


def sequential_table(num_frames: int, exact: bool = False) -> FrameTable:
    """Table of a file whose frames are named by decoding order (no usable timestamps)."""
    return FrameTable(None, np.arange(num_frames, dtype=np.int64), np.zeros(1, np.int64), np.zeros(1, np.int64),
                      np.zeros(num_frames, bool), {}, num_frames, 0, exact)


def _reorder_depth(display: np.ndarray) -> int:
    """Largest distance by which a frame is shown before a frame decoded earlier (``display`` in decode order)."""
    if len(display) == 0:
        return 0
    return int((np.maximum.accumulate(display) - display).max())


def table_from_packets(pts: np.ndarray, key: np.ndarray, cut: np.ndarray, pos: Optional[np.ndarray] = None,
                       size: Optional[np.ndarray] = None, lost: Sequence[Tuple[int, int, int, int]] = (),
                       file_size: Optional[int] = None, dts: Optional[np.ndarray] = None,
                       picture_number: Optional[np.ndarray] = None,
                       byte_holes: Optional[np.ndarray] = None) -> FrameTable:
    """Frame table from one demux pass.

    ``pts`` int64, ``key`` bool, ``cut`` bool (packet cut short by the end of the file), ``pos``/``size`` int64
    (byte position and size, -1 unknown), ``dts`` int64 (decoding timestamps, needed with ``lost``): one entry
    per packet, [P], in demux order. ``lost``: (pts, dts, pos, size) of packets the container's index lists
    but the demuxer did not deliver; those lying past ``file_size`` (bytes) are the truncated tail, the others
    damaged bytes. ``picture_number`` int64 [P] (optional): the codec's own display number of each packet's picture
    (H.264 picture order count divided by its step; -1 unknown); where it skips numbers between two
    timestamps, that many frames are missing there. ``byte_holes`` int64 [H, 2] (optional): sorted ``[start,
    end)`` byte ranges of the file between two packets that no packet of any stream covers (bytes a demuxer
    skipped while resyncing after damage); a timestamp gap whose two packets lie on either side of a hole is
    lost frames, as many as the gap holds at the video's median frame duration. Without such evidence a
    timestamp gap is a variable frame rate. Packets without a timestamp: use :func:`sequential_table`.
    """
    pts = np.asarray(pts, np.int64)
    n_pkt = len(pts)
    pos = np.full(n_pkt, -1, np.int64) if pos is None else np.asarray(pos, np.int64)
    size = np.zeros(n_pkt, np.int64) if size is None else np.asarray(size, np.int64)
    if n_pkt == 0:
        return sequential_table(0)
    # All timestamps, delivered packets first: a lost packet never takes the slot of a delivered one.
    all_pts = np.concatenate([pts, np.array([p for p, _, _, _ in lost], np.int64)])
    order = np.argsort(all_pts, kind="stable")
    uniq, first, counts = np.unique(all_pts[order], return_index=True, return_counts=True)
    first_pkt = order[first]  # [U] packet (or n_pkt + lost number) that names each timestamp
    missing = None
    if picture_number is not None:
        numbers = np.full(len(uniq), -1, np.int64)
        known = (first_pkt < n_pkt) & (counts == 1)  # a shared timestamp has no one number
        numbers[known] = np.asarray(picture_number, np.int64)[first_pkt[known]]
        missing = _numbering_gaps(numbers)
    if byte_holes is not None and len(byte_holes) and len(uniq) > 2:
        delivered_ts = first_pkt < n_pkt
        holes = _hole_gaps(uniq, np.where(delivered_ts, pos[np.minimum(first_pkt, n_pkt - 1)], -1),
                           np.asarray(byte_holes, np.int64),
                           _reorder_depth(np.argsort(np.argsort(pts, kind="stable"), kind="stable")))
        missing = holes if missing is None else np.maximum(missing, holes)
    real_idx, frame_pts, why = _timeline(uniq, missing)
    total = len(frame_pts)
    delivered = first_pkt < n_pkt
    decode_pos = np.full(total, -1, np.int64)
    decode_pos[real_idx[delivered]] = 2 * first_pkt[delivered]  # even: delivered packets in demux order
    if len(lost):  # odd: a lost packet sits after the delivered packets decoded before it (by dts)
        rank = np.searchsorted(np.sort(np.asarray(dts, np.int64)), [d for _, d, _, _ in lost], side="right")
        decode_pos[real_idx[~delivered]] = 2 * rank[first_pkt[~delivered] - n_pkt] - 1
    frame_pos, frame_size = np.full(total, -1, np.int64), np.zeros(total, np.int64)
    frame_pos[real_idx[delivered]] = pos[first_pkt[delivered]]
    frame_size[real_idx[delivered]] = size[first_pkt[delivered]]
    bad = np.ones(total, bool)
    bad[real_idx[delivered]] = False
    byte_damage = _lost_packets(why, frame_pos, frame_size, real_idx[~delivered],
                                [lost[k] for k in first_pkt[~delivered] - n_pkt], file_size)
    for r in np.flatnonzero(counts > 1):
        bad[real_idx[r]] = True
        why[int(real_idx[r])] = f"{int(counts[r])} packets share its timestamp {int(uniq[r])}"
    frame_of_packet = real_idx[np.searchsorted(uniq, pts)]  # [P]
    for i in np.unique(frame_of_packet[np.asarray(cut, bool)]).tolist():
        bad[i] = True
        why[i] = "its packet is cut short by the end of the file (truncated file)"
    first_of_ts = first_pkt[np.searchsorted(uniq, pts)] == np.arange(n_pkt)
    reorder = _reorder_depth(frame_of_packet[first_of_ts])
    # Keyframes: frames whose packet is a keyframe packet; frame 0 is always a start (reached by reopening).
    kf = np.unique(frame_of_packet[np.asarray(key, bool)])
    kf = kf[~bad[kf]]
    if len(kf) == 0 or kf[0] != 0:
        kf = np.concatenate([[0], kf]).astype(np.int64)
    table = FrameTable(frame_pts, decode_pos, kf, frame_pts[kf], bad, why, total, reorder,
                       file_prev=_file_prev(frame_pos, frame_size))
    for i in byte_damage:
        add_damage(table, why, i, why[i], byte_level=True)
    table.bad = spread_damage(table, why)
    table.num_frames = truncated_length(table.bad, reorder)
    table.lookup = dict(zip(uniq[delivered].tolist(), real_idx[delivered].tolist()))
    if (pos[first_of_ts] >= 0).all():
        table.pos_lookup = dict(zip(pos[first_of_ts].tolist(), frame_of_packet[first_of_ts].tolist()))
    return table


def _timeline(uniq: np.ndarray, missing: Optional[np.ndarray] = None) -> Tuple[np.ndarray, np.ndarray, Dict[int, str]]:
    """Frame index of each distinct timestamp (int64 [U]), pts of every frame (int64 [L]) and the reasons of
    the frames known missing. ``missing`` (int64 [U], optional): frames known lost just before each timestamp
    (evidence from the codec's own picture numbering); a missing frame gets a pts evenly spaced in its gap.
    A timestamp gap without such evidence is a variable frame rate: no frame is added there."""
    n_missing = np.zeros(len(uniq), np.int64) if missing is None else np.asarray(missing, np.int64).copy()
    n_missing[0] = 0
    n_missing[n_missing > MAX_GAP_FRAMES] = 0  # a discontinuity (concatenated streams), not lost frames
    real_idx = np.arange(len(uniq)) + np.cumsum(n_missing)
    frame_pts = np.empty(int(real_idx[-1]) + 1, np.int64)
    frame_pts[real_idx] = uniq
    why: Dict[int, str] = {}
    for r in np.flatnonzero(n_missing):  # one run per gap
        a, b = int(real_idx[r - 1]), int(real_idx[r])
        step = (int(uniq[r]) - int(uniq[r - 1])) / (b - a)
        frame_pts[a + 1:b] = uniq[r - 1] + np.rint(step * np.arange(1, b - a)).astype(np.int64)
        for i in range(a + 1, b):
            why[i] = (f"missing from the file (the stream numbers {b - a - 1} picture(s) between timestamps "
                      f"{int(uniq[r - 1])} and {int(uniq[r])} that the file does not hold)")
    return real_idx, frame_pts, why


def _numbering_gaps(numbers: np.ndarray) -> np.ndarray:
    """int64 [U]: pictures the codec numbered but the file lacks just before each timestamp, from ``numbers``
    (int64 [U], the codec's display number of the picture at each timestamp in pts order, -1 unknown). A number
    that does not increase starts a new sequence (a keyframe that resets the numbering): nothing is missing."""
    missing = np.zeros(len(numbers), np.int64)
    known = np.flatnonzero(numbers >= 0)
    if len(known) > 1:
        skipped = numbers[known[1:]] - numbers[known[:-1]] - (known[1:] - known[:-1])
        missing[known[1:]] = np.maximum(skipped, 0)
    return missing


def _hole_gaps(uniq: np.ndarray, upos: np.ndarray, holes: np.ndarray, reorder: int) -> np.ndarray:
    """int64 [U]: frames lost just before each timestamp where a hole of the file (``holes`` [H, 2]) lies
    among the packets of the timestamps around the gap (byte positions ``upos``, -1 unknown): the two on either
    side and, with B-frames, ``reorder`` more each way (a lost packet is shown at most that far from where it
    is decoded). The count is what the gap holds at the video's median frame duration."""
    missing = np.zeros(len(uniq), np.int64)
    steps = np.diff(uniq)
    d = float(np.median(steps))
    if d <= 0:
        return missing
    w = reorder + 1
    big = np.iinfo(np.int64).max
    padded_lo = np.concatenate([np.full(w, big), np.where(upos >= 0, upos, big), np.full(w, big)])
    padded_hi = np.concatenate([np.full(w, -1), upos, np.full(w, -1)])
    win = 2 * w  # gap r (between r - 1 and r): timestamps r - w .. r + w - 1
    lo = np.lib.stride_tricks.sliding_window_view(padded_lo, win).min(axis=1)[1:len(uniq)]
    hi = np.lib.stride_tricks.sliding_window_view(padded_hi, win).max(axis=1)[1:len(uniq)]
    inside = (np.searchsorted(holes[:, 1], hi, side="right") > np.searchsorted(holes[:, 0], lo, side="right"))
    missing[1:] = np.where(inside & (hi >= 0), np.maximum(np.rint(steps / d).astype(np.int64) - 1, 0), 0)
    return missing


def _lost_packets(why: Dict[int, str], frame_pos: np.ndarray, frame_size: np.ndarray, frames: np.ndarray,
                  lost: Sequence[Tuple[int, int, int, int]], file_size: Optional[int]) -> List[int]:
    """Reasons of the frames whose packet the index lists but the demuxer never delivered; returns those lost
    to damaged bytes (the others lie past the end of a truncated file)."""
    byte_damage = []
    for i, (_, _, p, s) in zip(frames.tolist(), lost):
        frame_pos[i], frame_size[i] = p, s
        if file_size is not None and p + s > file_size:
            why[i] = "the file ends before its packet (truncated file)"
        else:
            why[i] = f"its packet (byte {p} of the file) cannot be read: the bytes there are damaged"
            byte_damage.append(i)
    return byte_damage


def _file_prev(pos: np.ndarray, size: np.ndarray) -> np.ndarray:
    """int64 [L]: the frame whose packet ends at most ADJACENT_BYTES before each frame's packet, else -1."""
    prev = np.full(len(pos), -1, np.int64)
    known = np.flatnonzero(pos >= 0)
    if len(known) < 2:
        return prev
    by_pos = known[np.argsort(pos[known], kind="stable")]
    end_before = pos[by_pos[:-1]] + size[by_pos[:-1]]
    gap = pos[by_pos[1:]] - end_before
    close = (gap >= 0) & (gap <= ADJACENT_BYTES)
    prev[by_pos[1:][close]] = by_pos[:-1][close]
    return prev


def truncated_length(bad: np.ndarray, reorder: int) -> int:
    """Frames before the truncated tail: the first bad frame followed by at most ``reorder + 1`` good ones
    (frames decoded before the cut but shown after it), or ``len(bad)`` when the end is intact."""
    good_after = np.concatenate([np.cumsum((~bad)[::-1])[::-1][1:], [0]])
    tail = np.flatnonzero(bad & (good_after <= reorder + 1))
    return int(tail[0]) if len(tail) else len(bad)


def add_damage(table: FrameTable, damaged: Dict[int, str], frame: int, reason: str, byte_level: bool) -> None:
    """Record ``frame`` as damaged in ``damaged``; for damaged bytes (``byte_level``) also the frame whose packet
    ends just before it in the file (the damage may reach back into its tail without the decoder noticing)."""
    damaged.setdefault(frame, reason)
    prev = -1 if table.file_prev is None or not byte_level else int(table.file_prev[frame])
    if prev >= 0 and prev not in damaged:
        damaged[prev] = f"its packet ends where the damaged bytes of frame {frame} begin, so they may reach into it"


def dependent_frames(table: FrameTable, j: int) -> np.ndarray:
    """Frame indices that may be decoded from frame ``j`` (``j`` included), int64 [D], increasing."""
    stop = table.next_key(j)
    if table.decode_pos[j] < 0:  # no packet: where it sat in decoding order is unknown
        start = max(j - table.reorder, int(table.key_frame[np.searchsorted(table.key_frame, j, "right") - 1]))
        return np.arange(start, stop, dtype=np.int64)
    window = np.arange(max(0, j - table.reorder), stop, dtype=np.int64)
    later = table.decode_pos[window] > table.decode_pos[j]
    return np.union1d(window[later], [j]).astype(np.int64)


def spread_damage(table: FrameTable, damaged: Iterable[int]) -> np.ndarray:
    """bool [L]: ``table.bad`` plus ``damaged`` plus every frame decoded from one of them."""
    bad = table.bad.copy()
    for j in damaged:
        bad[dependent_frames(table, int(j))] = True
    return bad


def explain(table: FrameTable, frame: int, damaged: Dict[int, str]) -> str:
    """Why ``frame`` cannot be read, given ``damaged`` (frame -> reason, found while decoding) and the table."""
    reasons = {**table.why, **damaged}
    if frame in reasons:
        return reasons[frame]
    for j in sorted(reasons, key=lambda j: (abs(j - frame), j)):
        if frame in dependent_frames(table, j):
            return f"it is decoded from frame {j}, which is damaged ({reasons[j]})"
    return "damaged"


def frame_ranges(frames: List[int]) -> str:
    """'3-5, 9' for [3, 4, 5, 9] (sorted frame indices, for messages)."""
    out: List[str] = []
    start = prev = None
    for f in list(frames) + [None]:
        if f is not None and prev is not None and f == prev + 1:
            prev = f
            continue
        if start is not None:
            out.append(f"{start}-{prev}" if prev > start else str(start))
        start = prev = f
    return ", ".join(out)
