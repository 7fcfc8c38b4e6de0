"""The frame table (pure NumPy): naming frames by timestamp, missing and duplicated frames, truncation, and the
frames a damaged one spoils, checked against hand-written packet tables."""
import numpy as np

from lightning_temporal.data.frame_table import (
    MAX_GAP_FRAMES,
    add_damage,
    dependent_frames,
    frame_ranges,
    spread_damage,
    table_from_packets,
)

D = 512  # one frame duration in stream time base units


def _table(display, keys=(0,), cut=(), **kw):
    """Packets in decode order given by their display index (pts = index * D)."""
    display = np.asarray(display)
    return table_from_packets(display * D, np.isin(display, keys), np.isin(display, cut), **kw)


def test_gap_with_evidence_of_loss_is_a_missing_frame_not_a_shift():
    """A timestamp gap is lost frames only on evidence: the codec's picture numbering skips there, or the
    demuxer skipped bytes there."""
    display = np.array([0, 1, 2, 3, 5, 6, 7, 8, 9])
    numbered = _table(display, keys=(0, 5), picture_number=display)  # the codec numbered picture 4 too
    pos = np.arange(9) * 1000
    pos[4:] += 3000  # frame 5's packet lies 3000 bytes past frame 3's end: bytes skipped there
    holed = _table(display, keys=(0, 5), pos=pos, size=np.full(9, 1000), byte_holes=np.array([[4000, 7000]]))
    for t in (numbered, holed):
        assert len(t.bad) == 10 and t.num_frames == 10
        assert t.lookup[5 * D] == 5 and t.lookup[9 * D] == 9  # later frames keep their index
        assert t.bad.tolist() == [False] * 4 + [True] + [False] * 5  # frame 4 and what decodes from it (before key 5)
        assert "between timestamps 1536 and 2560" in t.why[4]
        assert t.key_frame.tolist() == [0, 5]
    # the same gap with consecutive picture numbers, or a hole elsewhere in the file: a variable frame rate
    for t in (_table(display, keys=(0, 5), picture_number=np.arange(9)),
              _table(display, keys=(0, 5), pos=np.arange(9) * 5000, size=np.full(9, 1000),
                     byte_holes=np.array([[1000, 5000]]))):
        assert len(t.bad) == 9 and not t.bad.any() and t.lookup[5 * D] == 4


def test_variable_rate_and_discontinuities_add_no_frames():
    rng = np.random.default_rng(0)
    pts = np.cumsum(rng.integers(100, 900, 50))
    t = table_from_packets(pts, np.arange(50) % 10 == 0, np.zeros(50, bool))
    assert len(t.bad) == 50 and not t.bad.any()
    # whole-duration gaps (a step of 2 after every 10th frame), every frame present: 300 frames, not 329
    vfr = np.concatenate([[0], np.cumsum(np.where(np.arange(1, 300) % 10 == 0, 2, 1))]) * D
    t = table_from_packets(vfr, np.arange(300) % 32 == 0, np.zeros(300, bool))
    assert len(t.bad) == 300 and not t.bad.any() and t.lookup[int(vfr[-1])] == 299
    # 30000/1001 fps in milliseconds: a step of 67 over bytes the demuxer skipped holds a missing frame
    ms = np.rint(np.delete(np.arange(40), 20) * 1001 / 30).astype(np.int64)
    pos = np.arange(39) * 100 + np.where(np.arange(39) >= 20, 2000, 0)
    t = table_from_packets(ms, np.arange(39) % 10 == 0, np.zeros(39, bool), pos, np.full(39, 100),
                           byte_holes=np.array([[2000, 4000]]))
    assert len(t.bad) == 40 and t.lookup[int(ms[-1])] == 39 and "missing" in t.why[20]
    jump = np.concatenate([np.arange(10), np.arange(10) + 10 + 5 * MAX_GAP_FRAMES]) * D  # concatenated streams
    t = table_from_packets(jump, np.arange(20) % 10 == 0, np.zeros(20, bool), picture_number=np.arange(20) * 0
                           + np.r_[np.arange(10), np.arange(10) + 10 + 5 * MAX_GAP_FRAMES])
    assert len(t.bad) == 20 and not t.bad.any()


def test_two_packets_with_one_timestamp_are_one_bad_frame():
    t = _table([0, 1, 2, 2, 3, 4, 5], keys=(0, 4))
    assert len(t.bad) == 6 and t.why[2] == "2 packets share its timestamp 1024"
    assert t.bad.tolist() == [False, False, True, True, False, False]  # 3 was decoded after 2


def test_damage_spreads_to_frames_decoded_later_before_the_next_keyframe():
    # decode order of an IBBP stream: display 0 3 1 2 6 4 5 7 | 8 11 9 10 ...
    order = [0, 3, 1, 2, 6, 4, 5, 7, 8, 11, 9, 10]
    t = _table(order, keys=(0, 8))
    assert t.reorder == 2
    decode_rank = {f: r for r, f in enumerate(order)}
    for j in range(12):
        expected = [f for f in range(12) if f == j or (decode_rank[f] > decode_rank[j] and f < t.next_key(j))]
        assert dependent_frames(t, j).tolist() == sorted(expected), j
    assert frame_ranges(np.flatnonzero(spread_damage(t, [3])).tolist()) == "1-7"


def test_truncated_tail_is_not_counted_and_frames_before_it_stay():
    # the last packet (display 10) is cut short; the B-frames 8, 9 decoded after it depend on it: the video
    # ends at 8. Decoded before it, they stay readable: the video ends at 10.
    assert _table([0, 3, 1, 2, 6, 4, 5, 7, 10, 8, 9], cut=(10,)).num_frames == 8
    t = _table([0, 3, 1, 2, 6, 4, 5, 7, 8, 9, 10], cut=(10,))
    assert t.num_frames == 10 and not t.bad[:10].any()
    # a cut packet in the middle is damage, not the end of the video
    t = _table([0, 3, 1, 2, 6, 4, 5, 7, 10, 8, 9], keys=(0, 7), cut=(3,))
    assert t.num_frames == 11 and t.bad[3] and not t.bad[7:].any()


def test_packets_the_index_lists_but_the_demuxer_lost():
    pts = np.array([0, 1, 2, 4, 5]) * D  # frame 3's packet (bytes 300-399) never came
    pos, size = np.array([0, 100, 200, 400, 500]), np.full(5, 100)
    t = table_from_packets(pts, np.array([1, 0, 0, 0, 0], bool), np.zeros(5, bool), pos, size,
                           lost=[(3 * D, 3 * D, 300, 100)], file_size=600, dts=pts)
    assert "byte 300" in t.why[3]
    assert t.bad.tolist() == [False, False, True, True, True, True]  # 2: its tail lies next to the lost bytes
    assert t.pos_lookup == {0: 0, 100: 1, 200: 2, 400: 4, 500: 5}
    tail = table_from_packets(pts[:3], np.array([1, 0, 0], bool), np.zeros(3, bool), pos[:3], size[:3],
                              lost=[(3 * D, 3 * D, 300, 100)], file_size=300, dts=pts[:3])
    assert tail.num_frames == 3 and "truncated" in tail.why[3]  # past the end of the file: the video ends


def test_adjacent_packet_is_damaged_with_byte_damage_only():
    pts = np.arange(6) * D
    t = table_from_packets(pts, np.ones(6, bool), np.zeros(6, bool), np.arange(6) * 100, np.full(6, 92))
    damaged = {}
    add_damage(t, damaged, 4, "rejected", byte_level=True)
    assert sorted(damaged) == [3, 4] and "frame 4" in damaged[3]
    damaged = {}
    add_damage(t, damaged, 4, "duplicate", byte_level=False)
    assert sorted(damaged) == [4]
    far = table_from_packets(pts, np.ones(6, bool), np.zeros(6, bool), np.arange(6) * 1000, np.full(6, 92))
    damaged = {}
    add_damage(far, damaged, 4, "rejected", byte_level=True)
    assert sorted(damaged) == [4]  # 908 bytes between them: not adjacent
