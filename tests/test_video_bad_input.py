"""Bad input: every case raises VideoError (files) or ValueError (arguments) naming the file and what to do."""
import os
import shutil

import numpy as np
import pytest

from lightning_temporal.data.video import VideoError, VideoReader, clear_index_cache, probe, read_clip
from tests.videos import (
    encode_image,
    reference_frames,
    remux_faststart,
    synthetic_frame,
    truncate_file,
    write_audio_only,
    write_empty_video,
    write_frame_folder,
    write_video,
)


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
    """Half of bikes.mp4 remuxed with its index at the front: the frames before the cut decode, and reads
    agree with a sequential decode (bikes.mp4 itself keeps its index at the end: cut, it cannot be opened)."""
    path = bad_files["truncated_real"]
    ref = reference_frames(path)
    full = reference_frames(real_videos["bikes"])
    L = len(ref)
    assert 0 < L < 250
    np.testing.assert_array_equal(ref[: L - 5], full[: L - 5])  # what survives the cut is unchanged
    clear_index_cache()
    np.testing.assert_array_equal(read_clip(path, L - 3, 6, size=(34, 80)).numpy(),
                                  reference_frames(path, size=(34, 80))[[L - 3, L - 2, L - 1, L - 1, L - 1, L - 1]])
    assert probe(path).num_frames == L
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
        (dict(start=-1), "start must be an integer >= 0"),
        (dict(start=1.5), "start must be an integer"),
        (dict(start=2.0), "start must be an integer"),
        (dict(start="3"), "start must be an integer"),
        (dict(start=True), "start must be an integer"),
        (dict(start=40), "past the last decodable frame"),
        (dict(num_frames=0), "num_frames must be an integer >= 1"),
        (dict(num_frames=2.5), "num_frames must be an integer"),
        (dict(stride=0), "stride must be an integer >= 1"),
        (dict(size=(32,)), "size must be None or \\(height, width\\)"),
        (dict(size=(0, 32)), "height\\) must be an integer >= 1"),
        (dict(size=(32, 1.5)), "width\\) must be an integer"),
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
