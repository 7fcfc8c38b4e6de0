"""Frame folders are read by one naming pattern: gaps, mixed prefixes and duplicates are refused, never merged."""
import csv
import os

import numpy as np
import pytest
import torch

from lightning_temporal.data.frames import check_frame_pattern, list_frames
from lightning_temporal.data.video import VideoError, VideoReader, clear_index_cache, probe, read_clip
from tests.videos import encode_image, synthetic_frame, write_frame_folder


def _frames(indices, size=(48, 64)):
    return np.stack([synthetic_frame(i, *size) for i in indices])


def _write(folder, name, i, ext="png", size=(48, 64)):
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, name), "wb") as f:
        f.write(encode_image(synthetic_frame(i, *size), ext))


def _touch_later(folder):
    st = os.stat(folder)
    os.utime(folder, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # a new mtime even on coarse clocks


def test_numbering_gap_is_an_error_naming_the_first_missing_number(tmp_path):
    """img 1, 2, 3, 5, 6 used to be read as 5 consecutive frames (frame 3 = img_5, later frames shifted)."""
    folder = str(tmp_path / "gap")
    for n in (1, 2, 3, 5, 6, 8):
        _write(folder, f"img_{n:05d}.png", n)
    for call in (lambda: probe(folder), lambda: read_clip(folder, 0, 2), lambda: VideoReader(folder),
                 lambda: read_clip(os.path.join(folder, "img_{:05d}.png"), 0, 2)):
        with pytest.raises(VideoError, match="frame number 4 is missing") as err:
            call()
        assert folder in str(err.value) and "img_00005.png" in str(err.value)
    _write(folder, "img_00004.png", 4)  # filling the gap: the folder is listed again (its mtime changed)
    _write(folder, "img_00007.png", 7)
    _touch_later(folder)
    assert probe(folder).num_frames == 8
    np.testing.assert_array_equal(read_clip(folder, 2, 4).numpy(), _frames([3, 4, 5, 6]))  # img_1 is frame 0


def test_numbering_must_start_at_0_or_1(tmp_path):
    folder = str(tmp_path / "late")
    for n in (3, 4, 5):
        _write(folder, f"frame_{n}.png", n)
    with pytest.raises(VideoError, match="frame number 1 is missing.*frame_3.png"):
        probe(folder)
    zero = str(tmp_path / "zero")
    for n in (0, 1, 2):
        _write(zero, f"frame_{n}.png", n)
    np.testing.assert_array_equal(read_clip(zero, 0, 3).numpy(), _frames([0, 1, 2]))


def test_rawframes_layout_is_refused_by_default_and_read_with_a_pattern(tmp_path):
    """img_* + flow_x_* + flow_y_* (mmaction's rawframes): one folder, three streams. They used to be read as
    one video of 3x the frames, flow images first."""
    folder = str(tmp_path / "rawframes")
    for n in range(1, 7):
        _write(folder, f"img_{n:05d}.png", n)
        _write(folder, f"flow_x_{n:05d}.png", 100 + n, size=(48, 64))
        _write(folder, f"flow_y_{n:05d}.png", 200 + n, size=(48, 64))
    with pytest.raises(VideoError, match="several naming patterns") as err:
        probe(folder)
    message = str(err.value)
    for group in ("img_*.png: 6 files", "flow_x_*.png: 6 files", "flow_y_*.png: 6 files"):
        assert group in message, message
    assert "frame_pattern" in message and "img_{:05d}.png" in message  # the suggestion names the image stream
    info = probe(folder, frame_pattern="img_{:05d}.png")
    assert (info.num_frames, info.height, info.width) == (6, 48, 64)
    np.testing.assert_array_equal(read_clip(folder, 0, 6, frame_pattern="img_{:05d}.png").numpy(), _frames(range(1, 7)))
    flow = read_clip(os.path.join(folder, "flow_x_{:05d}.png"), 2, 3)  # a pattern path reads the flow stream
    np.testing.assert_array_equal(flow.numpy(), _frames([103, 104, 105]))
    with VideoReader(folder, frame_pattern="flow_y_{:05d}.png") as reader:
        np.testing.assert_array_equal(reader.read_all().numpy(), _frames(range(201, 207)))


def test_same_frames_under_two_extensions_are_never_merged(tmp_path):
    folder = str(tmp_path / "twice")
    for n in range(4):
        _write(folder, f"{n:04d}.png", n)
        _write(folder, f"{n:04d}.jpg", n, ext="jpg")
    with pytest.raises(VideoError, match=r"several naming patterns \(\*\.jpg: 4 files; \*\.png: 4 files\)"):
        probe(folder)
    np.testing.assert_array_equal(read_clip(folder, 0, 4, frame_pattern="{:04d}.png").numpy(), _frames(range(4)))


def test_two_files_with_one_number_are_refused(tmp_path):
    folder = str(tmp_path / "dup")
    for name, n in (("img_1.png", 1), ("img_01.png", 1), ("img_2.png", 2)):
        _write(folder, name, n)
    with pytest.raises(VideoError, match="img_01.png and img_1.png both hold frame number 1"):
        probe(folder)
    # an exact pattern takes only the names it writes: {} writes img_1, not img_01
    np.testing.assert_array_equal(read_clip(folder, 0, 2, frame_pattern="img_{}.png").numpy(), _frames([1, 2]))


def test_unnumbered_image_beside_the_frames_is_refused(tmp_path):
    folder = write_frame_folder(str(tmp_path / "f"), 3, name="frame_{:03d}")
    _write(folder, "cover.png", 0)
    with pytest.raises(VideoError, match="several naming patterns.*unnumbered: cover.png"):
        probe(folder)
    assert probe(folder, frame_pattern="frame_{:03d}.png").num_frames == 3


@pytest.mark.parametrize("pattern", ["img.png", "img_{}_{}.png", "img_{:s}.png", "sub/img_{}.png", "img_{x}.png", 5])
def test_bad_patterns(tmp_path, pattern):
    folder = write_frame_folder(str(tmp_path / "f"), 3)
    with pytest.raises(ValueError, match="frame_pattern"):
        check_frame_pattern(pattern)
    with pytest.raises(ValueError, match="frame_pattern"):
        probe(folder, frame_pattern=pattern)


def test_pattern_matching_no_file(tmp_path):
    folder = write_frame_folder(str(tmp_path / "f"), 3, name="frame_{:05d}")
    with pytest.raises(VideoError, match=r"no file matches frame_pattern='img_\{:05d\}.jpg' \(frame_\*.png: 3 files\)"):
        list_frames(folder, "img_{:05d}.jpg")


def test_frame_pattern_reaches_manifest_and_datamodule(tmp_path):
    """CSV rows that are rawframes folders: read_csv_manifest(frame_pattern=...) and
    TemporalDataModule(frame_pattern=...) read the image stream; without it the rows are refused by name."""
    from lightning_temporal.data.manifest import ManifestError, read_csv_manifest
    from lightning_temporal.datamodule import TemporalDataModule

    for v, length in enumerate((9, 11)):
        folder = str(tmp_path / "videos" / f"v{v}")
        for n in range(1, length + 1):
            _write(folder, f"img_{n:05d}.png", 10 * v + n, size=(32, 32))
            _write(folder, f"flow_x_{n:05d}.png", 0, size=(32, 32))
    csv_path = str(tmp_path / "train.csv")
    with open(csv_path, "w", newline="") as f:
        csv.writer(f).writerows([["path", "label"], ["videos/v0", "a"], ["videos/v1", "b"]])
    with pytest.raises(ManifestError, match="row 2.*several naming patterns"):
        read_csv_manifest(csv_path, progress=False)
    clear_index_cache()
    m = read_csv_manifest(csv_path, progress=False, frame_pattern="img_{:05d}.png")
    assert m.num_frames.tolist() == [9, 11]
    dm = TemporalDataModule(train_manifest=csv_path, clip_len=4, crop_size=32, short_side=32, flip=False,
                            mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0), progress=False,
                            frame_pattern="img_{:05d}.png", clean_clips=False)
    dm.setup("fit")
    item = dm.datasets["train"][(1, 3)]
    expected = torch.from_numpy(_frames([14, 15, 16, 17], size=(32, 32))).permute(3, 0, 1, 2).float() / 255
    torch.testing.assert_close(item["clip"], expected, rtol=0, atol=1e-6)
    with pytest.raises(ValueError, match="data.frame_pattern"):
        TemporalDataModule(train_manifest=csv_path, frame_pattern="img_{:s}.png")


def test_frames_module_does_not_import_the_video_module():
    """frames.py and video.py used to import each other; now video.py uses frames.py, never the reverse."""
    import ast

    import lightning_temporal.data.frames as frames

    tree = ast.parse(open(frames.__file__).read())
    imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)} | {
        a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    assert "lightning_temporal.data.video" not in imported and "lightning_temporal.data.errors" in imported


def test_video_name_of_files_folders_and_pattern_paths():
    from lightning_temporal.data.frames import video_name

    assert video_name("/data/videos/v_001.mp4") == "v_001.mp4"
    assert video_name("/data/frames/v_001/") == "v_001"
    # a pattern path is named by its folder, not by the pattern shared by every video
    assert video_name("/data/frames/v_001/img_{:05d}.jpg") == "v_001"
    assert video_name("rel/v_002/flow_x_{:05d}.jpg") == "v_002"
