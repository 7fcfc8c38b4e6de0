"""Frame-exactness of probe / read_clip / VideoReader against an independent sequential decode."""
import os
import shutil
import sys
from fractions import Fraction

import av
import numpy as np
import pytest
import torch

from lightning_temporal.data import video as video_mod
from lightning_temporal.data.video import (
    VideoError,
    VideoInfo,
    VideoReader,
    clear_index_cache,
    probe,
    read_clip,
    set_open_cache_size,
)
from tests.backends import backend_fixture
from tests.videos import (
    packet_layout,
    reference_frames,
    remux_raw_h264,
    synthetic_frame,
    truncate_file,
    vfr_pts,
    write_frame_folder,
    write_video,
)

_VFR_PTS = np.cumsum(np.random.default_rng(0).integers(10, 90, 60)) + 500  # ms, first pts 500+

backend = backend_fixture(sys.modules[__name__])  # every test here runs once per decoding backend


@pytest.fixture(scope="session")
def encoded_videos(tmp_path_factory):
    """Small videos encoded with PyAV: {name: path}. All <= 120 frames, at most 97x61 pixels."""
    d = tmp_path_factory.mktemp("encoded")
    specs = {
        "h264_gop1.mp4": dict(num_frames=40, gop=1),
        "h264_gop32.mp4": dict(num_frames=100, gop=32),
        "h264_onekey.mp4": dict(num_frames=100, gop=None),
        "h264_opengop.mp4": dict(num_frames=100, gop=16, open_gop=True),
        "h264_gop8.mkv": dict(num_frames=60, gop=8),
        "mpeg4.mp4": dict(num_frames=60, codec="mpeg4", gop=12),
        "mpeg4.avi": dict(num_frames=60, codec="mpeg4", gop=12),
        "mjpeg.avi": dict(num_frames=30, codec="mjpeg"),
        "odd_97x61.mp4": dict(num_frames=40, size=(61, 97), gop=16),
        "odd_97x61_mjpeg.mkv": dict(num_frames=20, size=(61, 97), codec="mjpeg"),
        "vfr.mp4": dict(num_frames=60, gop=16, pts=_VFR_PTS),
        "vfr.mkv": dict(num_frames=60, gop=16, pts=_VFR_PTS),
        # Variable frame rate with every frame in the file (nothing is missing; time base 1/30): a step of 2
        # durations after every 10th frame, and irregular steps of 1-4 durations.
        "vfr_gap10.mp4": dict(num_frames=300, gop=32, pts=vfr_pts(300), time_base=Fraction(1, 30)),
        "vfr_gap10.mkv": dict(num_frames=300, gop=32, pts=vfr_pts(300), time_base=Fraction(1, 30)),
        "vfr_gap10.webm": dict(num_frames=90, gop=32, pts=vfr_pts(90), time_base=Fraction(1, 30),
                               codec="libvpx-vp9"),
        "vfr_irregular.mp4": dict(num_frames=80, gop=16, pts=vfr_pts(80, irregular=True), time_base=Fraction(1, 30)),
        "vfr_irregular.mkv": dict(num_frames=80, gop=16, pts=vfr_pts(80, irregular=True, seed=1),
                                  time_base=Fraction(1, 30)),
        "vfr_irregular.webm": dict(num_frames=60, gop=16, pts=vfr_pts(60, irregular=True, seed=2),
                                   time_base=Fraction(1, 30), codec="libvpx-vp9"),
        "vfr_pause.mp4": dict(num_frames=60, gop=16, pts=np.r_[np.arange(30), np.arange(30) + 90],
                              time_base=Fraction(1, 30)),  # one long pause (a screen recorder idle for 2 s)
    }
    return {name: write_video(str(d / name), **kw) for name, kw in specs.items()}


@pytest.fixture(scope="session")
def folder_videos(tmp_path_factory):
    d = tmp_path_factory.mktemp("folders")
    png = write_frame_folder(str(d / "png"), 12, ext="png", name="{}")  # unpadded names: natural order matters
    jpg = write_frame_folder(str(d / "jpg"), 9, size=(61, 97), ext="jpg", name="img_{:03d}")
    with open(os.path.join(png, "notes.txt"), "w") as f:
        f.write("not a frame")
    os.makedirs(os.path.join(png, "sub.png"))  # a folder with an image-like name is not a frame
    return {"png": png, "jpg": jpg}


@pytest.fixture(scope="session")
def all_videos(encoded_videos, real_videos):
    return {**encoded_videos, **real_videos}


@pytest.fixture(scope="session")
def references(all_videos):
    return {name: reference_frames(path) for name, path in all_videos.items()}


def _random_clips(num_frames, rng, n=12):
    """(start, T, stride) triples: random ones plus ones that run past the end."""
    clips = [(0, 1, 1), (num_frames - 1, 3, 1), (max(0, num_frames - 5), 8, 2)]
    for _ in range(n):
        clips.append((int(rng.integers(0, num_frames)), int(rng.integers(1, 9)), int(rng.integers(1, 4))))
    return clips


def _expected(ref, start, T, stride):
    return ref[np.minimum(start + stride * np.arange(T), len(ref) - 1)]


def test_probe_counts_exactly(all_videos, references):
    for name, path in all_videos.items():
        ref = references[name]
        clear_index_cache()
        info = probe(path)
        assert isinstance(info, VideoInfo)
        assert (info.num_frames, info.height, info.width) == ref.shape[:3], name
        # The cheap packet count agrees on intact files.
        clear_index_cache()
        assert probe(path, exact=False).num_frames == len(ref), name


def test_probe_fps(encoded_videos, real_videos):
    assert probe(encoded_videos["h264_gop32.mp4"]).fps == pytest.approx(25.0)
    assert probe(real_videos["carphone_pristine"]).fps == pytest.approx(30000 / 1001)
    expected = (len(_VFR_PTS) - 1) / ((_VFR_PTS[-1] - _VFR_PTS[0]) / 1000)  # mean rate of the VFR timestamps
    assert probe(encoded_videos["vfr.mkv"]).fps == pytest.approx(expected, rel=1e-6)
    assert probe(encoded_videos["vfr.mp4"]).fps == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("cold", [True, False], ids=["demux-index", "exact-index"])
def test_read_clip_matches_sequential_decode(all_videos, references, cold):
    rng = np.random.default_rng(1)
    for name, path in all_videos.items():
        ref = references[name]
        if cold:
            clear_index_cache()  # reads use the packet (demux) index
        else:
            probe(path)  # reads use the exact decode index
        # bigbuckbunny (1280x720, one keyframe) costs a decode from frame 0 per clip: fewer clips there.
        n = {"bigbuckbunny": 1, "bikes": 4}.get(name, 12)
        for start, T, stride in _random_clips(len(ref), rng, n=n):
            clip = read_clip(path, start, T, stride)
            assert clip.dtype == torch.uint8 and clip.shape == (T,) + ref.shape[1:], (name, start)
            np.testing.assert_array_equal(clip.numpy(), _expected(ref, start, T, stride), err_msg=f"{name} {start} {T} {stride}")


def test_read_clip_around_every_keyframe(encoded_videos, real_videos):
    """Clips starting just before, at and just after each keyframe (where seeking goes wrong first)."""
    for path in [encoded_videos["h264_gop32.mp4"], encoded_videos["h264_opengop.mp4"], encoded_videos["mpeg4.avi"],
                 encoded_videos["vfr.mkv"], real_videos["bikes"]]:
        ref = reference_frames(path)
        with av.open(path) as c:
            keys = [i for i, f in enumerate(c.decode(video=0)) if f.key_frame]
        assert len(keys) > 1, path
        for k in keys[1:]:
            for start in [s for s in (k - 2, k - 1, k, k + 1) if s < len(ref)]:
                np.testing.assert_array_equal(read_clip(path, start, 4).numpy(), _expected(ref, start, 4, 1), err_msg=f"{path} {start}")


def test_resize_during_conversion(encoded_videos, real_videos):
    for path in [encoded_videos["h264_gop32.mp4"], encoded_videos["odd_97x61.mp4"], real_videos["bikes"]]:
        ref = reference_frames(path, size=(24, 40))
        clip = read_clip(path, 30, 5, 2, size=(24, 40))
        assert clip.shape == (5, 24, 40, 3)
        np.testing.assert_array_equal(clip.numpy(), ref[30:40:2])
        with VideoReader(path) as reader:
            np.testing.assert_array_equal(reader.read_all(size=(24, 40)).numpy(), ref)


class _DecodeCounter:
    """Records the pts of every packet the library decodes (wraps video._feed): the decoding work done."""

    def __init__(self, monkeypatch):
        self.pts = []
        inner = video_mod._feed

        def counting(packet):
            self.pts.append(packet.pts)
            return inner(packet)

        monkeypatch.setattr(video_mod, "_feed", counting)


def _pts_to_index(path):
    with av.open(path) as c:
        return {f.pts: i for i, f in enumerate(c.decode(video=0))}


@pytest.mark.pyav_only
def test_read_clip_seeks_to_nearest_keyframe(encoded_videos, monkeypatch):
    path = encoded_videos["h264_gop32.mp4"]  # keyframes at 0, 32, 64, 96
    to_index = _pts_to_index(path)
    probe(path)
    counter = _DecodeCounter(monkeypatch)
    read_clip(path, 70, 4)
    decoded = sorted(to_index[p] for p in counter.pts)
    assert decoded[0] == 64  # started at the keyframe before 70, not at frame 0
    assert len(decoded) <= (73 - 64 + 1) + 4  # keyframe..clip end, plus the B-frame reorder delay
    # A single-keyframe video has to be decoded from its start.
    path = encoded_videos["h264_onekey.mp4"]
    to_index = _pts_to_index(path)
    counter.pts.clear()
    read_clip(path, 50, 2)
    assert sorted(to_index[p] for p in counter.pts)[0] == 0


@pytest.mark.pyav_only
def test_reader_decodes_each_frame_once(encoded_videos, real_videos, monkeypatch):
    # bikes at (68, 160): all its 236 clips of 8 full-size frames would take 1 GB.
    for path, size in [(encoded_videos["h264_gop32.mp4"], None), (encoded_videos["vfr.mp4"], None), (real_videos["bikes"], (68, 160))]:
        ref = reference_frames(path, size=size)
        L = len(ref)
        counter = _DecodeCounter(monkeypatch)
        T, stride = 8, 2
        span = (T - 1) * stride + 1
        starts = np.arange(max(1, L - span + 1))  # every clip position (test-time evaluation)
        with VideoReader(path) as reader:
            assert reader.info.num_frames == L
            clips = reader.read_clips(starts, T, stride, size=size)
            assert clips.shape == (len(starts), T) + ref.shape[1:]
            np.testing.assert_array_equal(clips.numpy(), ref[starts[:, None] + stride * np.arange(T)])
            assert len(counter.pts) == L and len(set(counter.pts)) == L  # every frame decoded exactly once
            # Sparse requests in one call seek over the gaps, in any order, repeats allowed.
            counter.pts.clear()
            sparse = np.array([L - 3, 2, 2, L // 2])
            out = reader.read_clips(sparse, 2, size=size)
            np.testing.assert_array_equal(out.numpy(), ref[np.minimum(sparse[:, None] + np.arange(2), L - 1)])
            assert len(counter.pts) < L
            np.testing.assert_array_equal(reader.read_all(size=size).numpy(), ref)
            np.testing.assert_array_equal(reader.read_frames(torch.tensor([5, 0, 5]), size=size).numpy(), ref[[5, 0, 5]])


def test_reader_short_video_pads_with_last_frame(encoded_videos):
    path = encoded_videos["mjpeg.avi"]  # 30 frames
    ref = reference_frames(path)
    with VideoReader(path) as reader:
        clips = reader.read_clips([0], 16, 4)  # span 61 > 30 frames
    np.testing.assert_array_equal(clips[0].numpy(), ref[[0, 4, 8, 12, 16, 20, 24, 28] + [29] * 8])


def test_integer_like_arguments(encoded_videos):
    path = encoded_videos["h264_gop32.mp4"]
    ref = reference_frames(path)
    for start in (np.int64(40), torch.tensor(40), 40):
        np.testing.assert_array_equal(read_clip(path, start, np.int32(3), torch.tensor(2)).numpy(), ref[40:46:2])
    with VideoReader(path) as reader:
        out = reader.read_clips(torch.tensor([3, 50]), 2)
        np.testing.assert_array_equal(out.numpy(), ref[[[3, 4], [50, 51]]])
        assert reader.read_clips([], 4).shape == (0, 4, 48, 64, 3)


@pytest.mark.parametrize("keep", [0.5, 0.77])
def test_truncated_file_keeps_its_frames_and_ends_at_the_cut(tmp_path, keep):
    """A truncated copy holds frames 0..L-1 of the intact file unchanged; L is the first frame whose packet is
    not wholly in the file (computed here from the intact file's packet table), however the index was built."""
    src = write_video(str(tmp_path / "faststart.mp4"), 100, gop=16, faststart=True)  # index before the data
    path = truncate_file(src, str(tmp_path / "truncated.mp4"), keep)
    full = reference_frames(src)
    layout = packet_layout(src)
    cut = int(np.flatnonzero(layout[:, 1] + layout[:, 2] > os.path.getsize(path))[0])
    with av.open(path) as c:
        assert c.streams.video[0].frames == 100  # the container metadata is wrong
    clear_index_cache()
    assert probe(path, exact=False).num_frames == cut  # the demux pass sees the cut ...
    np.testing.assert_array_equal(read_clip(path, cut - 2, 5).numpy(), full[[cut - 2, cut - 1] + [cut - 1] * 3])
    info = probe(path)  # ... and the full decode agrees
    assert (info.num_frames, info.damaged) == (cut, ())
    clear_index_cache()
    np.testing.assert_array_equal(read_clip(path, 5, 6, 2).numpy(), full[5:17:2])
    with VideoReader(path) as reader:
        np.testing.assert_array_equal(reader.read_all().numpy(), full[:cut])
    with pytest.raises(ValueError, match="past the last decodable frame"):
        read_clip(path, cut, 2)


def test_frame_rejected_mid_file_is_named_and_never_shifts_later_frames(tmp_path):
    """MJPEG with the bytes of frame 10 zeroed: the decoder rejects it. Old behaviour: frames after it moved
    down by one and a clip over the hole returned frame 11 as frame 10. Now: a read over frames 9-10 raises
    naming frame 10 (9 is refused too: its packet ends where the damaged bytes begin), every other frame reads
    as in the intact file, at its own index."""
    path = write_video(str(tmp_path / "mj.avi"), 30, codec="mjpeg")
    full = reference_frames(path)
    _, pos, size, _ = packet_layout(path)[10]
    data = bytearray(open(path, "rb").read())
    data[pos:pos + size] = bytes(size)
    bad = str(tmp_path / "mj_bad.avi")
    open(bad, "wb").write(bytes(data))
    assert len(reference_frames(bad)) == 29  # a plain sequential decode loses frame 10 and shifts the rest
    clear_index_cache()
    with pytest.raises(VideoError, match=r"frame (9|10) cannot be read.*frame 10") as err:
        read_clip(bad, 8, 5)
    assert bad in str(err.value)
    np.testing.assert_array_equal(read_clip(bad, 0, 9).numpy(), full[0:9])
    np.testing.assert_array_equal(read_clip(bad, 11, 19).numpy(), full[11:30])
    info = probe(bad)
    assert (info.num_frames, info.damaged) == (30, ((9, 11),))


def test_cache_follows_file_changes(tmp_path):
    path = str(tmp_path / "v.mp4")
    write_video(path, 40, gop=8)
    assert probe(path).num_frames == 40
    os.remove(path)
    write_video(path, 24, gop=8)
    st = os.stat(path)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # a new mtime even on coarse clocks
    assert probe(path).num_frames == 24
    np.testing.assert_array_equal(read_clip(path, 20, 6).numpy(), reference_frames(path)[[20, 21, 22, 23, 23, 23]])


# ---------------------------------------------------------------------------------------------------------
# The per-process cache of open files


@pytest.fixture
def open_cache():
    """Cache of open files at a known size for the test, restored afterwards."""
    previous = set_open_cache_size(4)
    clear_index_cache()
    yield
    set_open_cache_size(previous)
    clear_index_cache()


def _count_opens(monkeypatch):
    opened = []
    inner = video_mod._open

    def counting(path):
        opened.append(path)
        return inner(path)

    monkeypatch.setattr(video_mod, "_open", counting)
    return opened


@pytest.mark.pyav_only
def test_open_cache_reuses_the_file_and_stays_exact(encoded_videos, references, open_cache, monkeypatch):
    opened = _count_opens(monkeypatch)
    for name in ("h264_gop32.mp4", "mpeg4.avi", "vfr.mkv"):
        path, ref = encoded_videos[name], references[name]
        opened.clear()
        for start in (70 % len(ref), 3, 40 % len(ref), 0, len(ref) - 4):  # forward, back to keyframe 0, the end
            np.testing.assert_array_equal(read_clip(path, start, 4).numpy(), _expected(ref, start, 4, 1), err_msg=name)
        assert opened == [path], name  # one open (which also built the index) for five clips
    set_open_cache_size(0)
    opened.clear()
    path = encoded_videos["h264_gop32.mp4"]
    for start in (5, 50):
        np.testing.assert_array_equal(read_clip(path, start, 4).numpy(), references["h264_gop32.mp4"][start:start + 4])
    assert opened == [path, path]  # without the cache every read opens the file


def test_open_cache_is_bounded_and_follows_file_changes(tmp_path, open_cache):
    set_open_cache_size(2)
    paths = [write_video(str(tmp_path / f"v{k}.mp4"), 24 + k, gop=8) for k in range(4)]
    files = []
    for p in paths:
        read_clip(p, 0, 2)
        files.append(video_mod._OPEN._idle[-1])
    assert [f.path for f in video_mod._OPEN._idle] == paths[2:]  # the two most recently used are kept ...
    assert files[0].container is None and files[1].container is None  # ... and the others closed
    path = paths[3]
    os.remove(path)
    write_video(path, 20, gop=4, size=(32, 48))  # a different video under the same name
    st = os.stat(path)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    np.testing.assert_array_equal(read_clip(path, 16, 6).numpy(), reference_frames(path)[[16, 17, 18, 19, 19, 19]])
    assert files[3].container is None and files[3] not in video_mod._OPEN._idle  # the stale entry was closed


def _child_reads(path, starts):
    """In a forked process: read clips, report them and how often this process opened the file."""
    opened = []
    inner = video_mod._open
    video_mod._open = lambda p: opened.append(p) or inner(p)
    try:
        clips = [read_clip(path, starts[0], 4).numpy()]
        opened_for_first = len(opened)  # 0 would mean the parent's container was used
        return clips + [read_clip(path, s, 4).numpy() for s in starts[1:]], opened_for_first
    finally:
        video_mod._open = inner


@pytest.mark.pyav_only
def test_open_cache_is_not_shared_with_forked_children(encoded_videos, references, open_cache):
    """A DataLoader worker is a fork: it must open its own files (a container inherited from the parent shares
    the parent's file offset), and the parent's cached file must still read exactly afterwards."""
    import multiprocessing

    path, ref = encoded_videos["h264_gop32.mp4"], references["h264_gop32.mp4"]
    read_clip(path, 10, 4)
    assert len(video_mod._OPEN._idle) == 1
    with multiprocessing.get_context("fork").Pool(1) as pool:
        clips, opens = pool.apply(_child_reads, (path, [60, 20, 90]))
    assert opens == 1
    for clip, s in zip(clips, [60, 20, 90]):
        np.testing.assert_array_equal(clip, ref[s:s + 4])
    cached = video_mod._OPEN._idle[-1]
    np.testing.assert_array_equal(read_clip(path, 70, 4).numpy(), ref[70:74])
    assert video_mod._OPEN._idle[-1] is cached  # the parent kept using its own


def test_two_threads_read_one_video(encoded_videos, references, open_cache):
    from concurrent.futures import ThreadPoolExecutor

    path, ref = encoded_videos["h264_gop32.mp4"], references["h264_gop32.mp4"]
    starts = list(range(0, 96, 6))
    with ThreadPoolExecutor(2) as pool:
        clips = list(pool.map(lambda s: read_clip(path, s, 4).numpy(), starts))
    for clip, s in zip(clips, starts):
        np.testing.assert_array_equal(clip, ref[s:s + 4])
    assert len(video_mod._OPEN._idle) <= 2


def test_only_the_wanted_frames_are_converted(encoded_videos, references, monkeypatch):
    """Decoding starts at the keyframe before the clip (64 for 70), colour conversion at the clip."""
    converted = []
    inner = video_mod._VideoFile._converter

    def counting(self, size):
        convert = inner(self, size)
        return lambda frame, index, dst: converted.append(index) or convert(frame, index, dst)

    monkeypatch.setattr(video_mod._VideoFile, "_converter", counting)
    path = encoded_videos["h264_gop32.mp4"]
    counter = _DecodeCounter(monkeypatch)
    np.testing.assert_array_equal(read_clip(path, 70, 4, size=(24, 32)).numpy(),
                                  reference_frames(path, size=(24, 32))[70:74])
    assert converted == [70, 71, 72, 73] and len(counter.pts) >= 10


def test_frame_folders(folder_videos, tmp_path):
    png, jpg = folder_videos["png"], folder_videos["jpg"]
    info = probe(png)
    assert (info.num_frames, info.height, info.width) == (12, 48, 64)
    # Lossless PNG: frame i is the synthetic frame i, so natural order (10 after 9) is checked exactly.
    clip = read_clip(png, 8, 4)
    np.testing.assert_array_equal(clip.numpy(), np.stack([synthetic_frame(i) for i in (8, 9, 10, 11)]))
    np.testing.assert_array_equal(read_clip(png, 10, 4, 2).numpy(), np.stack([synthetic_frame(i) for i in (10, 11, 11, 11)]))
    # JPEG: compare with decoding each file by name.
    names = sorted(n for n in os.listdir(jpg))
    ref = np.stack([reference_frames(os.path.join(jpg, n))[0] for n in names])
    with VideoReader(jpg) as reader:
        assert reader.info == VideoInfo(jpg, 9, 0.0, 61, 97)
        np.testing.assert_array_equal(reader.read_all().numpy(), ref)
        np.testing.assert_array_equal(reader.read_clips([0, 5], 3, 2).numpy(), ref[[[0, 2, 4], [5, 7, 8]]])
        small = reader.read_clip(1, 2, size=(30, 50))
    assert small.shape == (2, 30, 50, 3)
    np.testing.assert_array_equal(small[0].numpy(), reference_frames(os.path.join(jpg, names[1]), size=(30, 50))[0])


@pytest.mark.pyav_only
def test_benchmark_floor_reads_the_same_frames(encoded_videos, references):
    """benchmarks/decode.py times read_clip against a minimal PyAV seek-and-decode: both must read the same
    frames, or the comparison is meaningless."""
    from av.video.reformatter import VideoReformatter

    from tests.bench import load_benchmark

    decode = load_benchmark("decode")
    path, ref = encoded_videos["h264_gop32.mp4"], references["h264_gop32.mp4"]
    pts = packet_layout(path)[:, 0]
    for start in (0, 33, 70):
        count = {}
        plain = decode.minimal_clip(path, int(pts[start]), count=count)
        np.testing.assert_array_equal(plain, ref[start:start + 16])
        np.testing.assert_array_equal(decode.minimal_clip(path, int(pts[start]), VideoReformatter()), plain)
        keyframe = start - start % 32
        assert count["packets"] >= start + 16 - keyframe  # at least the frames from the keyframe to the clip end


def test_raw_stream_without_timestamps_reads_by_decoding_order(encoded_videos, references, tmp_path):
    """An H.264 elementary stream has no timestamps: frames are named by decoding order from the start."""
    src, ref = encoded_videos["h264_gop32.mp4"], references["h264_gop32.mp4"]
    raw = str(tmp_path / "raw.h264")
    remux_raw_h264(src, raw)
    with av.open(raw) as c:
        assert all(p.pts is None for p in c.demux(video=0) if p.size)
    clear_index_cache()
    assert probe(raw, exact=False).num_frames == probe(raw).num_frames == 100
    np.testing.assert_array_equal(read_clip(raw, 70, 6, 2).numpy(), ref[70:82:2])
    with VideoReader(raw) as reader:
        np.testing.assert_array_equal(reader.read_clips([96, 3], 6).numpy(), ref[[[96, 97, 98, 99, 99, 99], [3, 4, 5, 6, 7, 8]]])
