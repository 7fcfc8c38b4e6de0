"""Bad input: every case raises VideoError (files) or ValueError (arguments) naming the file and what to do."""
import os
import re
import sys

import numpy as np
import pytest

from lightning_temporal.data.video import VideoError, VideoReader, clear_index_cache, probe, read_clip
from tests.backends import backend_fixture
from tests.videos import (
    encode_image,
    overwrite_bytes,
    packet_layout,
    reference_frames,
    remux,
    remux_faststart,
    set_avi_frame_count,
    synthetic_frame,
    truncate_file,
    write_audio_only,
    write_empty_video,
    write_frame_folder,
    write_video,
)

backend = backend_fixture(sys.modules[__name__])  # every test here runs once per decoding backend


@pytest.fixture(scope="session")
def bad_files(tmp_path_factory, real_videos):
    d = tmp_path_factory.mktemp("bad")
    good = write_video(str(d / "good.mp4"), 40, gop=8)
    files = {"good": good}
    files["missing"] = str(d / "missing.mp4")
    files["empty"] = str(d / "empty.mp4")
    open(files["empty"], "wb").close()
    files["garbage"] = str(d / "garbage.mp4")
    with open(files["garbage"], "wb") as f:
        f.write(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    files["png_renamed"] = str(d / "image.mp4")
    with open(files["png_renamed"], "wb") as f:
        f.write(encode_image(synthetic_frame(0), "png"))
    files["audio_only"] = write_audio_only(str(d / "audio.mp4"))
    files["no_frames"] = write_empty_video(str(d / "no_frames.avi"))
    # The mp4 index at the end (PyAV's default): a truncated copy has no index at all.
    files["truncated_no_index"] = truncate_file(good, str(d / "truncated_no_index.mp4"), 0.6)
    # An mp4 whose index is at the front, cut just after the index: 0 decodable frames of 40 announced.
    faststart = write_video(str(d / "faststart.mp4"), 40, gop=8, faststart=True)
    data = open(faststart, "rb").read()
    files["index_only"] = truncate_file(faststart, str(d / "index_only.mp4"), data.index(b"mdat") + 4)
    files["truncated_real_no_index"] = truncate_file(real_videos["bikes"], str(d / "bikes_truncated.mp4"), 0.5)
    front = remux_faststart(real_videos["bikes"], str(d / "bikes_faststart.mp4"))
    files["truncated_real"] = truncate_file(front, str(d / "bikes_faststart_truncated.mp4"), 0.5)
    files["not_a_file"] = str(d)
    return files


@pytest.mark.parametrize(
    "case, needle",
    [
        ("missing", "file not found"),
        ("empty", r"empty \(0 bytes\)"),
        ("garbage", "cannot open as a video"),
        ("png_renamed", "single image"),
        ("audio_only", "no video stream"),
        ("no_frames", "zero decodable frames"),
        ("truncated_no_index", "cannot open as a video"),
        ("truncated_real_no_index", "cannot open as a video"),
        ("index_only", "zero decodable frames"),
    ],
)
def test_bad_files_raise_video_error(bad_files, case, needle):
    path = bad_files[case]
    for call in (lambda: probe(path), lambda: read_clip(path, 0, 4), lambda: VideoReader(path),
                 lambda: probe(path, exact=False)):
        clear_index_cache()
        with pytest.raises(VideoError, match=needle) as err:
            call()
        message = str(err.value)
        assert path in message
        assert any(hint in message for hint in ("remove", "re-encode", "check", "fix")), message


def test_truncated_real_video(bad_files, real_videos):
    """Half of bikes.mp4 remuxed with its index at the front: the frames before the cut read as in the intact
    file at their own indices (bikes.mp4 itself keeps its index at the end: cut, it cannot be opened). A plain
    sequential decode of the cut file holds one frame more: the frame after the cut packet, shifted down."""
    path = bad_files["truncated_real"]
    full = reference_frames(real_videos["bikes"], size=(34, 80))
    clear_index_cache()
    L = probe(path, exact=False).num_frames
    assert 0 < L < 250 and probe(path).num_frames == L
    assert len(reference_frames(path)) > L
    np.testing.assert_array_equal(read_clip(path, L - 3, 6, size=(34, 80)).numpy(),
                                  full[[L - 3, L - 2, L - 1, L - 1, L - 1, L - 1]])
    np.testing.assert_array_equal(read_clip(path, 40, 8, 3, size=(34, 80)).numpy(), full[40:64:3])
    with pytest.raises(ValueError, match=f"past the last decodable frame.*{L} frames"):
        read_clip(path, L + 10, 2)


def test_frame_folder_errors(tmp_path):
    empty = tmp_path / "no_images"
    empty.mkdir()
    (empty / "readme.txt").write_text("x")
    with pytest.raises(VideoError, match="holds no image") as err:
        probe(str(empty))
    assert str(empty) in str(err.value)

    folder = write_frame_folder(str(tmp_path / "frames"), 6, ext="png")
    bad = os.path.join(folder, "frame_00003.png")
    with open(bad, "wb") as f:
        f.write(b"not a png at all")
    assert probe(folder).num_frames == 6  # counted by file; the broken image raises when read
    np.testing.assert_array_equal(read_clip(folder, 0, 3).numpy(), np.stack([synthetic_frame(i) for i in range(3)]))
    with pytest.raises(VideoError, match="cannot decode this frame image") as err:
        read_clip(folder, 2, 3)
    assert bad in str(err.value)

    mixed = write_frame_folder(str(tmp_path / "mixed"), 3, ext="png")
    with open(os.path.join(mixed, "frame_00003.png"), "wb") as f:
        f.write(encode_image(synthetic_frame(3, 40, 64), "png"))
    with pytest.raises(VideoError, match="first frame is 64x48"):
        read_clip(mixed, 0, 4)
    assert read_clip(mixed, 0, 4, size=(20, 30)).shape == (4, 20, 30, 3)  # resizing makes sizes agree


@pytest.mark.parametrize(
    "kwargs, needle",
    [
        (dict(start=-1), "start must be an int >= 0"),
        (dict(start=1.5), "start must be an int"),
        (dict(start=2.0), "start must be an int"),
        (dict(start="3"), "start must be an int"),
        (dict(start=True), "start must be an int"),
        (dict(start=40), "past the last decodable frame"),
        (dict(num_frames=0), "num_frames must be an int >= 1"),
        (dict(num_frames=2.5), "num_frames must be an int"),
        (dict(stride=0), "stride must be an int >= 1"),
        (dict(size=(32,)), "size must be None or \\(height, width\\)"),
        (dict(size=(0, 32)), "height\\) must be an int >= 1"),
        (dict(size=(32, 1.5)), "width\\) must be an int"),
    ],
)
def test_bad_arguments(bad_files, kwargs, needle):
    path = bad_files["good"]  # 40 frames
    args = dict(start=0, num_frames=4, stride=1, size=None)
    args.update(kwargs)
    with pytest.raises(ValueError, match=needle) as err:
        read_clip(path, args["start"], args["num_frames"], args["stride"], size=args["size"])
    assert path in str(err.value)


def test_bad_reader_arguments(bad_files):
    path = bad_files["good"]
    with VideoReader(path) as reader:
        with pytest.raises(ValueError, match="starts must be integers"):
            reader.read_clips([0.5, 2], 4)
        with pytest.raises(ValueError, match="1-d sequence"):
            reader.read_clips([[0, 2]], 4)
        with pytest.raises(ValueError, match="starts must be >= 0"):
            reader.read_clips([3, -2], 4)
        with pytest.raises(ValueError, match="start 41 is past"):
            reader.read_clips([3, 41], 4)
        with pytest.raises(ValueError, match="frame index 40 is past"):
            reader.read_frames([0, 40])
        # A failed request leaves the reader usable.
        np.testing.assert_array_equal(reader.read_clip(38, 3).numpy(), reference_frames(path)[[38, 39, 39]])


# ---------------------------------------------------------------------------------------------------------
# Damage inside a file: every read returns the frames it was asked for, or raises VideoError naming the frame.
# The reference is always the intact file decoded sequentially: frame i of a damaged copy must be its frame i.

T = 6


def _clips_exact_or_refused(path, full):
    """Read every clip position; each is refused with a VideoError naming the file and a frame, or equal to the
    intact file's frames at the same indices. Returns (refused starts, read starts)."""
    refused, read = [], []
    for s in range(probe(path, exact=False).num_frames - T + 1):
        try:
            clip = read_clip(path, s, T).numpy()
        except VideoError as err:
            assert path in str(err) and re.search(r"frame \d+ cannot be read", str(err)), str(err)
            refused.append(s)
            continue
        np.testing.assert_array_equal(clip, full[s:s + T], err_msg=f"{path}: clip at {s} is not the intact one")
        read.append(s)
    return refused, read


def _hits(clip_starts, frames):
    frames = set(int(f) for f in frames)
    return [s for s in clip_starts if frames & set(range(s, s + T))]


@pytest.mark.parametrize("name, kwargs", [
    ("h264.mp4", dict(gop=16)),
    ("h264_large.mp4", dict(gop=16, size=(96, 128))),
    ("h264.mkv", dict(gop=16)),
    ("mjpeg.avi", dict(codec="mjpeg")),  # AVI numbers packets by counting: a lost chunk used to shift the rest
    ("mpeg4.avi", dict(codec="mpeg4", gop=12)),
])
@pytest.mark.parametrize("target", [40, 50])
def test_overwritten_bytes_mid_file(tmp_path, name, kwargs, target):
    """Random bytes from a quarter into the packet of frame ``target`` to just past the start of the third
    packet after it (in file order): one packet's tail, two whole packets, one packet's head."""
    src = write_video(str(tmp_path / name), 80, **kwargs)
    full = reference_frames(src)
    layout = packet_layout(src)
    by_file = np.argsort(layout[:, 1])
    k = int(np.flatnonzero(by_file == target)[0])
    start = int(layout[target, 1] + layout[target, 2] // 4)
    end = int(layout[by_file[k + 3], 1] + 10)
    bad = overwrite_bytes(src, str(tmp_path / f"bad_{name}"), start, end - start, seed=target)
    hit = np.flatnonzero((layout[:, 1] < end) & (layout[:, 1] + layout[:, 2] > start))  # frames overwritten
    for index in ("demux", "exact"):  # the cheap index of a fresh worker, and the one probe() builds
        clear_index_cache()
        if index == "exact":
            info = probe(bad)
            assert info.num_frames == 80
            assert set(hit) <= {f for a, b in info.damaged for f in range(a, b)}
        refused, read = _clips_exact_or_refused(bad, full)
        assert set(_hits(range(80 - T + 1), hit)) <= set(refused)  # no clip over the damage gets through
        assert {0, 80 - T} <= set(read)  # clips far from it are read (at their own indices)


@pytest.mark.parametrize("ext", [".mp4", ".mkv"])
def test_dropped_packet_leaves_a_gap_not_a_shift(tmp_path, ext):
    """The packet of frame 20 left out when remuxing: its timestamp slot stays empty, frame 21 stays frame 21,
    and the frames decoded from the lost one (to the next keyframe, 32) are refused."""
    src = write_video(str(tmp_path / "src.mp4"), 60, gop=16)
    full = reference_frames(src)
    bad = remux(src, str(tmp_path / f"dropped{ext}"), drop=[20])
    assert len(reference_frames(bad)) == 59
    clear_index_cache()
    assert probe(bad, exact=False).num_frames == 60
    with pytest.raises(VideoError, match="frame 20 cannot be read: missing from the file"):
        read_clip(bad, 20, 1)
    refused, read = _clips_exact_or_refused(bad, full)
    assert set(_hits(range(60 - T + 1), [20])) <= set(refused)
    assert 32 in read and 12 in read


@pytest.mark.parametrize("ext", [".mp4", ".mkv"])
@pytest.mark.parametrize("frame, source", [(21, 20), (22, 21)])  # a B-frame / a reference frame retimed
def test_duplicate_timestamps_are_refused_not_merged(tmp_path, ext, frame, source):
    src = write_video(str(tmp_path / "src.mp4"), 60, gop=16)
    full = reference_frames(src)
    bad = remux(src, str(tmp_path / f"dup{ext}"), retime={frame: source})
    layout = packet_layout(bad)
    assert (layout[:, 0] == layout[source, 0]).sum() == 2
    clear_index_cache()
    with pytest.raises(VideoError, match=f"frame {source} cannot be read: 2 packets share its timestamp"):
        read_clip(bad, source, 1)
    refused, read = _clips_exact_or_refused(bad, full)
    assert set(_hits(range(60 - T + 1), [source, frame])) <= set(refused)
    assert 32 in read and 12 in read
    assert probe(bad).num_frames == 60


@pytest.mark.parametrize("claimed", [10, 90])
def test_header_frame_count_is_never_trusted(tmp_path, claimed):
    src = write_video(str(tmp_path / "v.avi"), 30, codec="mjpeg")
    bad = set_avi_frame_count(src, str(tmp_path / f"claims_{claimed}.avi"), claimed)
    import av

    with av.open(bad) as c:
        assert c.streams.video[0].frames == claimed
    clear_index_cache()
    assert probe(bad, exact=False).num_frames == probe(bad).num_frames == 30
    np.testing.assert_array_equal(read_clip(bad, 24, 8).numpy(), reference_frames(src)[[24, 25, 26, 27, 28, 29, 29, 29]])


def test_clip_dataset_counts_and_reports_damaged_clips(tmp_path, backend):
    """Training path: a clip over damaged frames is a counted SkippedClip naming the file and frame (strict:
    a VideoError); every clip that is not skipped equals the intact video's frames."""
    import torch

    from lightning_temporal.data.dataset import ClipDataset, SkipCounter, collate_clips
    from lightning_temporal.data.manifest import VideoManifest, VideoRecord

    src = write_video(str(tmp_path / "v.mp4"), 48, gop=16)
    full = reference_frames(src)
    layout = packet_layout(src)
    start = int(layout[20, 1])
    bad = overwrite_bytes(src, str(tmp_path / "bad.mp4"), start, int(layout[23, 1]) - start, seed=3)
    clear_index_cache()
    records = [VideoRecord(p, 0, probe(p).num_frames, source=f"m.csv, row {i + 2}") for i, p in enumerate([src, bad])]
    manifest = VideoManifest(records, ["a"])
    ds = ClipDataset(manifest, clip_len=T, backend=backend)
    positions = [(v, s) for v in range(2) for s in range(48 - T + 1)]
    loader = torch.utils.data.DataLoader(ds, batch_size=8, sampler=positions, collate_fn=collate_clips)
    counter = SkipCounter()
    with pytest.warns(UserWarning, match="skipping a clip of video 1 .*bad.mp4: frame \\d+ cannot be read"):
        batches = list(loader)
    trained = []
    for batch in batches:
        counter.update(batch)
        for clip, v, s in zip(batch["clip"], batch["video_idx"].tolist(), batch["start"].tolist()):
            expected = torch.from_numpy(full[s:s + T]).permute(3, 0, 1, 2).float() / 255
            torch.testing.assert_close(clip, expected, rtol=0, atol=0)
            trained.append((v, s))
    assert counter.videos() == [1] and counter.epoch_skipped == len(positions) - len(trained)
    assert set(_hits(range(48 - T + 1), range(20, 23))) <= {s for v, s in positions if (v, s) not in trained}
    assert "bad.mp4: frame" in counter.summary(epoch=0) and "row 3" in counter.summary()
    strict = ClipDataset(manifest, clip_len=T, strict=True, backend=backend)
    with pytest.raises(VideoError, match=r"row 3.*bad.mp4: frame \d+ cannot be read"):
        strict[(1, 18)]
