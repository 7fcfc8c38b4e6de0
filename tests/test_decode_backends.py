"""The torchcodec decoding backend: byte-identical frames at the frame table's indices, the PyAV path wherever
torchcodec cannot read exactly, and the ``backend`` argument's checks.

The frame-exactness and damaged-file tests of ``tests/test_video*.py`` also run once per backend
(``tests/backends.py``); the tests here check what is particular to torchcodec. References are plain sequential
PyAV decodes (``tests.videos.reference_frames``); a test that needs torchcodec is skipped, with the import
error as the reason, where it does not import.
"""
import json
import multiprocessing
import os
from fractions import Fraction

import av
import numpy as np
import pytest
import torch

from lightning_temporal.data import torchcodec_backend
from lightning_temporal.data import video as video_mod
from lightning_temporal.data.torchcodec_backend import frame_mappings, resolve_backend, torchcodec_available
from lightning_temporal.data.video import VideoError, VideoReader, clear_index_cache, probe, read_clip
from tests.videos import packet_layout, reference_frames, remux, remux_raw_h264, vfr_pts, write_video

needs_torchcodec = pytest.mark.skipif(
    not torchcodec_available(), reason=f"torchcodec does not import here ({torchcodec_backend._IMPORT_ERROR})")


def _has_encoder(name):
    try:
        av.codec.Codec(name, "w")
        return True
    except Exception:
        return False


class _Spy:
    """Counts the reads torchcodec returned frames for (``done``) and those it handed back (``declined``), and
    lists the declined ones as (file, last frame asked for)."""

    def __init__(self, monkeypatch):
        self.done = self.declined = 0
        self.declined_reads = []
        inner = torchcodec_backend.TorchcodecFile.read

        def read(tc, table, frames, *args):
            out = inner(tc, table, frames, *args)
            if out is None:
                self.declined += 1
                self.declined_reads.append((os.path.basename(tc.path), int(frames[-1])))
            else:
                self.done += 1
            return out

        monkeypatch.setattr(torchcodec_backend.TorchcodecFile, "read", read)


# ---------------------------------------------------------------------------------------------------------
# The argument (no torchcodec needed)


def test_backend_argument_is_checked(tmp_path, monkeypatch):
    path = write_video(str(tmp_path / "v.mp4"), 12, gop=4)
    with pytest.raises(ValueError, match="backend must be one of 'pyav', 'torchcodec', 'auto', got 'ffmpeg'") as err:
        read_clip(path, 0, 2, backend="ffmpeg")
    assert path in str(err.value)
    with pytest.raises(ValueError, match="ClipDataset backend must be one of"):
        resolve_backend("cv2", "ClipDataset backend")
    assert resolve_backend("auto") == ("torchcodec" if torchcodec_available() else "pyav")
    # torchcodec that does not import: "auto" is PyAV, "torchcodec" an ImportError that says what to install
    monkeypatch.setattr(torchcodec_backend, "_AVAILABLE", False)
    monkeypatch.setattr(torchcodec_backend, "_IMPORT_ERROR", "OSError: libavutil.so.57: cannot open shared object")
    assert resolve_backend("auto") == "pyav"
    np.testing.assert_array_equal(read_clip(path, 3, 4, backend="auto").numpy(), reference_frames(path)[3:7])
    with pytest.raises(ImportError, match="libavutil.so.57.*lightning_temporal\\[torchcodec\\].*backend='pyav'"):
        VideoReader(path, backend="torchcodec")


def test_frame_mappings_are_the_frame_table():
    """The JSON torchcodec reads as its frame index: one row per frame with the table's pts, the step to the next
    pts as duration (the last frame: the step before it) and the keyframe flag."""
    pts = np.array([500, 533, 600, 601, 700], np.int64)
    rows = json.loads(frame_mappings(pts, np.array([0, 3], np.int64)))["frames"]
    assert [(r["pts"], r["duration"], r["key_frame"]) for r in rows] == \
        [(500, 33, 1), (533, 67, 0), (600, 1, 0), (601, 99, 1), (700, 99, 0)]
    rows = json.loads(frame_mappings(pts[:3], np.array([0], np.int64), next_pts=601))["frames"]  # a window
    assert [(r["pts"], r["duration"], r["key_frame"]) for r in rows] == [(500, 33, 1), (533, 67, 0), (600, 1, 0)]


# ---------------------------------------------------------------------------------------------------------
# torchcodec reads


@pytest.fixture(scope="module")
def codec_files(tmp_path_factory):
    d = tmp_path_factory.mktemp("codecs")
    specs = {
        "h264_bframes.mp4": dict(num_frames=50, gop=16),
        "h264_odd_97x61.mp4": dict(num_frames=30, size=(61, 97), gop=8),  # odd sizes: 4:4:4
        "h264_onekey.mkv": dict(num_frames=40, gop=None),
        "h264_opengop.mp4": dict(num_frames=50, gop=16, open_gop=True),
        "vfr_irregular.mkv": dict(num_frames=50, gop=16, pts=vfr_pts(50, irregular=True, seed=1),
                                  time_base=Fraction(1, 30)),  # Matroska keeps nominal frame durations
        "vp9_vfr.webm": dict(num_frames=40, gop=16, pts=vfr_pts(40), time_base=Fraction(1, 30), codec="libvpx-vp9"),
        "mpeg4.avi": dict(num_frames=40, codec="mpeg4", gop=12),
        "mjpeg.avi": dict(num_frames=20, codec="mjpeg"),  # full-range YUV (yuvj420p)
        "mjpeg_odd_97x61.avi": dict(num_frames=12, size=(61, 97), codec="mjpeg"),  # 4:2:0 at an odd size: PyAV
    }
    if _has_encoder("libx265"):
        specs["hevc.mp4"] = dict(num_frames=40, gop=16, codec="libx265")
    return {name: write_video(str(d / name), **kw) for name, kw in specs.items()}


@needs_torchcodec
def test_torchcodec_reads_every_codec_byte_identical(codec_files, monkeypatch):
    """Every frame of every file, and clips with strides and padding, equal the sequential PyAV decode byte for
    byte, and torchcodec (not the PyAV path) decoded them, except reads of the last frame of two files with
    B-frames in their last GOP (open GOP H.264, MPEG-4 in AVI): torchcodec 0.13 ends there without the frame
    ("no more frames left to decode"), and those reads go through PyAV; and 4:2:0 MJPEG at an odd frame size,
    whose RGB from torchcodec differs, is never asked of it."""
    spy = _Spy(monkeypatch)
    lengths = {}
    for name, path in codec_files.items():
        ref = reference_frames(path)
        L = lengths[name] = len(ref)
        clear_index_cache()
        with VideoReader(path, backend="torchcodec") as reader:
            np.testing.assert_array_equal(reader.read_all().numpy(), ref, err_msg=name)
            starts = np.array([L - 1, 0, L // 3, L // 2])
            np.testing.assert_array_equal(reader.read_clips(starts, 5, 3).numpy(),
                                          ref[np.minimum(starts[:, None] + 3 * np.arange(5), L - 1)], err_msg=name)
        for start in (0, L // 2 + 1, L - 2):  # read_clip, fresh files each time
            with video_mod.OpenFileCache(0):
                clip = read_clip(path, start, 4, backend="torchcodec").numpy()
            np.testing.assert_array_equal(clip, ref[np.minimum(np.arange(start, start + 4), L - 1)], err_msg=name)
    assert spy.done + spy.declined == 5 * (len(codec_files) - 1)
    assert "mjpeg_odd_97x61.avi" not in {name for name, _ in spy.declined_reads}
    assert all(last == lengths[name] - 1 and name in ("h264_opengop.mp4", "mpeg4.avi")
               for name, last in spy.declined_reads), spy.declined_reads
    assert spy.declined <= 6


@needs_torchcodec
def test_resized_reads_and_files_without_timestamps_go_through_pyav(codec_files, monkeypatch, tmp_path):
    """torchcodec's resize is not swscale's bilinear conversion, and a raw stream has no pts to check: both are
    read by the PyAV path (torchcodec is not asked), with the PyAV path's frames."""
    spy = _Spy(monkeypatch)
    path = codec_files["h264_bframes.mp4"]
    np.testing.assert_array_equal(read_clip(path, 20, 4, size=(24, 40), backend="torchcodec").numpy(),
                                  reference_frames(path, size=(24, 40))[20:24])
    raw = str(tmp_path / "raw.h264")
    remux_raw_h264(path, raw)
    np.testing.assert_array_equal(read_clip(raw, 30, 3, backend="torchcodec").numpy(), reference_frames(path)[30:33])
    assert spy.done == spy.declined == 0


@needs_torchcodec
@pytest.mark.parametrize("fault", ["shifted", "raises", "resized"])
def test_a_torchcodec_read_that_is_not_exact_falls_back_to_pyav(codec_files, monkeypatch, fault):
    """torchcodec made to return the next frames (a shift), to fail, or to return another frame size: every
    picture is checked against the table, so the read is redone by the PyAV path and still exact."""
    from torchcodec.decoders import VideoDecoder

    inner = VideoDecoder.get_frames_at

    def faulty(self, indices):
        if fault == "raises":
            raise RuntimeError("decodeAVFrame: Invalid data found when processing input")
        batch = inner(self, [i + 1 for i in indices] if fault == "shifted" else indices)
        if fault == "resized":
            batch.data = batch.data[:, :-2]
        return batch

    monkeypatch.setattr(VideoDecoder, "get_frames_at", faulty)
    spy = _Spy(monkeypatch)
    path = codec_files["vfr_irregular.mkv"]
    ref = reference_frames(path)
    clear_index_cache()
    for start in (0, 17, 30):
        np.testing.assert_array_equal(read_clip(path, start, 6, backend="torchcodec").numpy(), ref[start:start + 6])
    assert spy.declined == 3 and spy.done == 0


@needs_torchcodec
def test_missing_frame_is_refused_the_same_and_later_frames_read_by_torchcodec(tmp_path, monkeypatch):
    """A packet dropped from the file: torchcodec's own scan would number the later frames one lower; with the
    frame table as its mapping, frame 40 is still frame 40, and the missing frame's error is PyAV's."""
    src = write_video(str(tmp_path / "src.mp4"), 60, gop=16)
    ref = reference_frames(src)
    bad = remux(src, str(tmp_path / "dropped.mkv"), drop=[20])
    from torchcodec.decoders import VideoDecoder

    own = VideoDecoder(bad, dimension_order="NHWC")  # torchcodec's own numbering: 59 frames, shifted after 20
    assert own.metadata.num_frames == 59
    assert not np.array_equal(own.get_frame_at(40).data.numpy(), ref[40])
    messages = {}
    for backend in ("pyav", "torchcodec"):
        clear_index_cache()
        with pytest.raises(VideoError, match="frame 18 cannot be read: it is decoded from frame 20.*missing") as err:
            read_clip(bad, 18, 4, backend=backend)
        messages[backend] = str(err.value)
    assert messages["pyav"] == messages["torchcodec"]
    spy = _Spy(monkeypatch)
    np.testing.assert_array_equal(read_clip(bad, 36, 8, backend="torchcodec").numpy(), ref[36:44])
    np.testing.assert_array_equal(read_clip(bad, 2, 8, backend="torchcodec").numpy(), ref[2:10])
    assert spy.done == 2


def _child_reads(path, starts):
    return [read_clip(path, s, 4, backend="torchcodec").numpy() for s in starts]


_READER = {}  # a VideoReader opened in the parent, used by a forked child


def _child_uses_the_parents_reader(parent_decoder_id):
    reader = _READER["reader"]
    clip = reader.read_clip(20, 4).numpy()
    return clip, id(reader._file.torchcodec.decoder) != parent_decoder_id


@needs_torchcodec
def test_cached_torchcodec_decoder_is_not_used_by_a_forked_child(codec_files):
    """A DataLoader worker is a fork: it opens its own torchcodec decoder (the parent's shares its file offset),
    and the parent's cached decoder still reads exactly afterwards."""
    path = codec_files["h264_bframes.mp4"]
    ref = reference_frames(path)
    previous = video_mod.set_open_cache_size(4)
    try:
        clear_index_cache()
        read_clip(path, 10, 4, backend="torchcodec")
        cached = video_mod._OPEN._idle[-1]
        parent_decoder = cached.torchcodec.decoder
        assert parent_decoder is not None
        with multiprocessing.get_context("fork").Pool(1) as pool:
            clips = pool.apply(_child_reads, (path, [40, 5, 30]))
        for clip, s in zip(clips, [40, 5, 30]):
            np.testing.assert_array_equal(clip, ref[s:s + 4])
        np.testing.assert_array_equal(read_clip(path, 1, 4, backend="torchcodec").numpy(), ref[1:5])
        # (frames 0-15: the GOP of the first read, the decoder's window)
        assert video_mod._OPEN._idle[-1] is cached and cached.torchcodec.decoder is parent_decoder
        # a reader opened before the fork and used in the child: the child opens its own decoder
        with VideoReader(path, backend="torchcodec") as reader:
            reader.read_clip(3, 4)
            _READER["reader"] = reader
            decoder = reader._file.torchcodec.decoder
            with multiprocessing.get_context("fork").Pool(1) as pool:
                clip, own = pool.apply(_child_uses_the_parents_reader, (id(decoder),))
            np.testing.assert_array_equal(clip, ref[20:24])
            assert own
            np.testing.assert_array_equal(reader.read_clip(8, 4).numpy(), ref[8:12])
            assert reader._file.torchcodec.decoder is decoder
        _READER.clear()
    finally:
        video_mod.set_open_cache_size(previous)
        clear_index_cache()


@needs_torchcodec
def test_datasets_take_the_backend(codec_files, monkeypatch):
    """ClipDataset and VideoDataset decode with the backend given (VideoDataset into its reused buffer)."""
    from lightning_temporal.data.dataset import ClipDataset
    from lightning_temporal.data.manifest import VideoManifest, VideoRecord
    from lightning_temporal.data.video_dataset import VideoDataset

    paths = [codec_files["h264_bframes.mp4"], codec_files["mjpeg.avi"]]
    manifest = VideoManifest([VideoRecord(p, 0, probe(p).num_frames) for p in paths], ["a"])
    spy = _Spy(monkeypatch)
    clips = ClipDataset(manifest, clip_len=4, backend="torchcodec")
    whole = VideoDataset(manifest, clip_len=4, backend="torchcodec")
    for v, p in enumerate(paths):
        ref = torch.from_numpy(reference_frames(p))
        torch.testing.assert_close(clips[(v, 3)]["clip"], ref[3:7].permute(3, 0, 1, 2).float() / 255, rtol=0, atol=0)
        assert torch.equal(whole.decode(v), ref)
    assert spy.done == 4 and spy.declined == 0


def test_decode_benchmark_times_every_variant_on_the_same_frames(tmp_path):
    """benchmarks/decode.py at a tiny size: every variant (torchcodec's where it imports) read the clips the
    sequential decode holds, and the report has the goal rows (no timing is asserted)."""
    from tests.bench import load_benchmark

    decode = load_benchmark("decode")
    path = write_video(str(tmp_path / "v.mp4"), 40, gop=8)
    v = decode.Video("tiny", path, 2, np.random.default_rng(0))
    res = decode.bench_video(v, 3)
    assert set(res["exact"]) == set(decode.variants()) and all(res["exact"].values()), res["exact"]
    assert ("torchcodec, kept" in res["exact"]) == torchcodec_available()
    report = decode.tables([(v, res)], "settings")
    rows = [line for line in report.splitlines() if line.startswith("| tiny")]
    assert len(rows) == (3 if torchcodec_available() else 2)
    assert rows[0].split("|")[-2].strip() == "yes"  # the exact column of the ms table


@needs_torchcodec
def test_torchcodec_decoder_window_is_the_gops_read(codec_files, monkeypatch):
    """torchcodec parses its frame mapping at every open, so it gets the GOPs around a read (here: 0 frames of
    margin), not the whole table: a read in the window reuses the positioned decoder, one outside opens a
    decoder for its own GOPs."""
    path = codec_files["h264_bframes.mp4"]  # 50 frames, keyframes 0, 16, 32, 48
    ref = reference_frames(path)
    clear_index_cache()
    monkeypatch.setattr(torchcodec_backend, "WINDOW_MARGIN", 0)
    with VideoReader(path, backend="torchcodec") as reader:
        np.testing.assert_array_equal(reader.read_clip(35, 4).numpy(), ref[35:39])
        tc = reader._file.torchcodec
        first = tc.decoder
        assert tc.window == (32, 48)
        np.testing.assert_array_equal(reader.read_clip(40, 4).numpy(), ref[40:44])  # forward in the window
        assert tc.decoder is first
        np.testing.assert_array_equal(reader.read_clips([5, 20], 4, 2).numpy(), ref[[[5, 7, 9, 11], [20, 22, 24, 26]]])
        assert tc.window == (0, 32) and tc.decoder is not first
        np.testing.assert_array_equal(reader.read_clip(46, 8).numpy(), ref[[46, 47, 48, 49, 49, 49, 49, 49]])
        assert tc.window == (32, 50)
    with VideoReader(codec_files["h264_onekey.mkv"], backend="torchcodec") as reader:
        reader.read_clip(20, 2)
        assert reader._file.torchcodec.window == (0, 40)
    # a margin of 20 frames: a first read maps its GOPs only, a read outside them maps 20 frames either side too
    monkeypatch.setattr(torchcodec_backend, "WINDOW_MARGIN", 20)
    clear_index_cache()
    with VideoReader(path, backend="torchcodec") as reader:
        np.testing.assert_array_equal(reader.read_clip(35, 4).numpy(), ref[35:39])
        assert reader._file.torchcodec.window == (32, 48)
        np.testing.assert_array_equal(reader.read_clip(4, 4).numpy(), ref[4:8])  # frames 0-27 and their GOPs
        assert reader._file.torchcodec.window == (0, 32)
        np.testing.assert_array_equal(reader.read_clip(36, 4).numpy(), ref[36:40])  # frames 16-59
        assert reader._file.torchcodec.window == (16, 50)


def test_datamodule_datasets_decode_with_pyav_at_short_side(tmp_path):
    # README "Decoding backends": TemporalDataModule decodes at short_side (a resized read, which torchcodec never
    # serves) and has no backend option, so the recipes and the CLI always decode with PyAV
    import inspect

    from lightning_temporal import TemporalDataModule

    rows = ["a.mp4,left", "b.mp4,right"]
    for r in rows:
        (tmp_path / r.split(",")[0]).write_bytes(b"")  # the frame count is given: nothing is decoded
    for name in ("train.csv", "val.csv"):
        (tmp_path / name).write_text("path,label,num_frames\n" + "".join(f"{r},30\n" for r in rows))
    dm = TemporalDataModule(train_manifest=str(tmp_path / "train.csv"), val_manifest=str(tmp_path / "val.csv"),
                            clip_len=4, crop_size=24, short_side=32, progress=False)
    dm.setup("fit")
    assert dm.datasets["train"].backend == "pyav" and dm.datasets["train"].decode_size == 32
    assert dm.datasets["val"].backend == "pyav"
    assert not any("backend" in p for p in inspect.signature(TemporalDataModule.__init__).parameters)
