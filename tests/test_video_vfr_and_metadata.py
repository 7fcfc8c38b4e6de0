"""Intact files the reader used to refuse: variable frame rate read as damage, and tags that are not UTF-8.

The references are plain sequential PyAV decodes (``tests.videos.reference_frames``)."""
import sys
from fractions import Fraction

import numpy as np
import pytest

from lightning_temporal.data.video import VideoReader, clear_index_cache, probe, read_clip
from tests.backends import backend_fixture
from tests.videos import reference_frames, remux, synthetic_frame, vfr_pts, write_video, write_with_still_first

backend = backend_fixture(sys.modules[__name__])  # every test here runs once per decoding backend


@pytest.mark.parametrize("ext, codec", [(".mp4", "libx264"), (".mkv", "libx264"), (".webm", "libvpx-vp9")])
def test_variable_frame_rate_with_every_frame_present_is_not_damage(tmp_path, ext, codec):
    """300 frames, time base 1/30, a timestamp step of 2 after every 10th frame: 300 frames (not 329), and
    every 16-frame clip is the sequential decode's frames i..i+15 (frame i = the i-th timestamp)."""
    n = 300 if codec == "libx264" else 120
    path = write_video(str(tmp_path / f"vfr{ext}"), n, gop=32, pts=vfr_pts(n), time_base=Fraction(1, 30),
                       codec=codec)
    ref = reference_frames(path)
    assert len(ref) == n
    for exact in (False, True):
        clear_index_cache()
        info = probe(path, exact=exact)
        assert info.num_frames == n and info.damaged == ()
    clear_index_cache()
    for start in range(0, n - 16 + 1, 7):
        np.testing.assert_array_equal(read_clip(path, start, 16).numpy(), ref[start:start + 16], err_msg=str(start))
    with VideoReader(path) as reader:
        np.testing.assert_array_equal(reader.read_all().numpy(), ref)


@pytest.mark.parametrize("ext", [".mp4", ".mkv"])
def test_a_packet_dropped_from_a_vfr_file_is_still_found(tmp_path, ext):
    """The evidence that tells loss from a variable frame rate (the codec's picture numbering) works on a VFR
    timeline too: a P-frame's packet dropped from the file above is a missing frame, later frames keep their
    index."""
    src = write_video(str(tmp_path / "src.mp4"), 60, gop=16, pts=vfr_pts(60, every=7), time_base=Fraction(1, 30))
    full = reference_frames(src)
    bad = remux(src, str(tmp_path / f"dropped{ext}"), drop=[22])
    clear_index_cache()
    assert probe(bad, exact=False).num_frames == 60  # a worker's demux index numbers the frames the same way
    clear_index_cache()
    info = probe(bad)
    assert info.num_frames == 60 and any(a <= 22 < b for a, b in info.damaged)
    np.testing.assert_array_equal(read_clip(bad, 40, 8).numpy(), full[40:48])


@pytest.mark.parametrize("ext", [".mp4", ".mkv"])
def test_tag_that_is_not_utf8_does_not_cost_the_video(tmp_path, ext):
    """A cp1251 title (a camera's tag) is no reason to refuse a video that decodes fully."""
    title = "Видео с камеры".encode("cp1251")
    path = write_video(str(tmp_path / f"tagged{ext}"), 24, gop=8, metadata={"title": title})
    with open(path, "rb") as f:
        assert "Видео с камеры".encode("cp1251") in f.read()
    ref = reference_frames(path)
    clear_index_cache()
    assert probe(path).num_frames == 24
    np.testing.assert_array_equal(read_clip(path, 3, 8).numpy(), ref[3:11])


def test_a_still_picture_listed_first_does_not_cost_the_video(tmp_path):
    """A cover picture (or thumbnail) stream before the video stream: the video is read, not the still."""
    path = write_with_still_first(str(tmp_path / "with_cover.mkv"), 20)
    clear_index_cache()
    assert probe(path).num_frames == 20
    clip = read_clip(path, 5, 4).numpy().astype(int)
    expected = np.stack([synthetic_frame(i) for i in range(5, 9)]).astype(int)
    assert np.abs(clip - expected).mean() < 8  # the encoded pattern of frames 5-8 (lossy), not the still


def test_picture_numbering_that_is_not_one_step_a_picture_is_no_evidence():
    """The encoder's POC step is the most common one; a numbering with other steps proves nothing (no frame is
    added from it), and a skip of whole steps counts the pictures skipped."""
    from lightning_temporal.data.video import _H264Numbering

    assert _H264Numbering.display_numbers([0, 4, 2, 8, 6, 12, 10, 14]).tolist() == [0, 2, 1, 4, 3, 6, 5, 7]
    assert _H264Numbering.display_numbers([0, 4, 2, 6, 10]).tolist() == [0, 2, 1, 3, 5]  # picture 8 skipped
    assert _H264Numbering.display_numbers([0, 2, 4, 5, 7]) is None  # steps 2 and 1: not one step a picture
    assert _H264Numbering.display_numbers([None, None]) is None
