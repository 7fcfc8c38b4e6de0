import json
import os
import shutil
import threading
import warnings

import numpy as np
import pytest
import torch

from lightning_temporal.data.manifest import (ManifestError, UnknownLabelError, VideoManifest, VideoRecord,
                                              cache_folder, path_fingerprint, probe_frame_counts,
                                              read_csv_manifest,
                                              read_hmdb51_split, read_kinetics_csv, read_ucf101_split)
from lightning_temporal.data.video import VideoInfo
from tests.videos import encode_image, synthetic_frame


class FakeProbe:
    """Counts calls; frame count = file size in bytes (so rewriting a file changes its count)."""

    def __init__(self):
        self.calls = []
        self.lock = threading.Lock()

    def __call__(self, path):
        with self.lock:
            self.calls.append(path)
        return VideoInfo(path, os.path.getsize(path), 25.0, 48, 64)


def _touch(path, nbytes=40):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(b"x" * nbytes)
    return path


def _write(path, text):
    with open(path, "w") as f:
        f.write(text)
    return str(path)


@pytest.fixture
def videos(tmp_path):
    d = tmp_path / "data"
    for name, n in [("a.mp4", 40), ("b.mp4", 50), ("sub/c.mp4", 60)]:
        _touch(str(d / name), n)
    return d


def test_csv_names_counts_events_and_paths(videos):
    absolute = str(videos / "b.mp4")
    csv = _write(videos / "m.csv", "path,label,num_frames,event_start,event_end\n"
                                   "a.mp4,walk,40,10,20\n"
                                   f"{absolute},run,50,,\n"
                                   "\n"
                                   "sub/c.mp4,walk,60,0,60\n")
    probe = FakeProbe()
    m = read_csv_manifest(csv, probe_fn=probe)
    assert sorted(probe.calls) == sorted(m.paths)  # every count given is checked against its file
    assert m.class_names == ["run", "walk"]
    assert m.labels.tolist() == [1, 0, 1]
    assert m.num_frames.dtype == torch.int64 and m.num_frames.tolist() == [40, 50, 60]
    assert m.events.tolist() == [[10, 20], [-1, -1], [0, 60]]
    assert m.paths == [str(videos / "a.mp4"), absolute, str(videos / "sub" / "c.mp4")]
    assert m[0].source == f"{csv}, row 2" and m[2].source == f"{csv}, row 5"
    sub = m.subset([2, 0])
    assert sub.paths == [m.paths[2], m.paths[0]] and sub.class_names == m.class_names
    assert len(m.subset(torch.tensor([1]))) == 1


def test_labels_by_index_and_class_list(videos, tmp_path):
    csv = _write(videos / "m.csv", "path,label,num_frames\na.mp4,2,40\nb.mp4,0,50\n")
    m = read_csv_manifest(csv, probe=False)
    assert m.class_names == ["0", "1", "2"] and m.labels.tolist() == [2, 0]
    classes = _write(tmp_path / "classes.txt", "1 jump\n2 run\n3 walk\n")
    m = read_csv_manifest(csv, classes=classes, probe=False)
    assert m.class_names == ["jump", "run", "walk"] and m.labels.tolist() == [2, 0]
    plain = _write(tmp_path / "plain.txt", "air drumming\nabseiling\n")
    m = read_csv_manifest(_write(videos / "k.csv", "path,label,num_frames\na.mp4,air drumming,40\n"),
                          classes=plain, probe=False)
    assert m.class_names == ["air drumming", "abseiling"] and m.labels.tolist() == [0]
    csv2 = _write(videos / "m2.csv", "path,label,num_frames\na.mp4,walk,40\nb.mp4,1,50\n")
    m = read_csv_manifest(csv2, classes=["jump", "run", "walk"], probe=False)
    assert m.labels.tolist() == [2, 1]


def test_probe_once_cache_and_reprobe_changed_file(videos, tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "usercache"))
    csv = _write(videos / "m.csv", "path,label\na.mp4,x\nb.mp4,y\nsub/c.mp4,x\n")
    probe = FakeProbe()
    m = read_csv_manifest(csv, probe_fn=probe, progress=False)
    assert sorted(probe.calls) == sorted(m.paths)
    assert m.num_frames.tolist() == [40, 50, 60] and m[0].height == 48 and m[0].width == 64
    assert not os.path.exists(csv + ".frames.json")  # nothing written into the dataset's folders
    assert len(os.listdir(cache_folder())) == 1
    probe.calls.clear()
    m2 = read_csv_manifest(csv, probe_fn=probe, progress=False)
    assert probe.calls == [] and m2.num_frames.tolist() == [40, 50, 60]
    # same size, new mtime: probed again
    st = os.stat(videos / "a.mp4")
    os.utime(videos / "a.mp4", ns=(st.st_atime_ns, st.st_mtime_ns + 5_000_000_000))
    _touch(str(videos / "b.mp4"), 77)  # new content and size
    m3 = read_csv_manifest(csv, probe_fn=probe, progress=False)
    assert sorted(probe.calls) == sorted([m.paths[0], m.paths[1]])
    assert m3.num_frames.tolist() == [40, 77, 60]
    probe.calls.clear()
    read_csv_manifest(csv, probe_fn=probe, progress=False)
    assert probe.calls == []


def test_cache_goes_to_the_user_cache_folder_keyed_by_the_manifest(videos, tmp_path, monkeypatch):
    """Read-only or shared dataset folders get no cache file: it goes to $XDG_CACHE_HOME/lightning_temporal/frames,
    one per manifest; a cache an older version wrote beside the manifest is still read."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "usercache"))
    before = sorted(os.listdir(videos))
    csv = _write(videos / "m.csv", "path,label\na.mp4,x\nb.mp4,y\n")
    other = _write(videos / "other.csv", "path,label\na.mp4,x\n")
    probe = FakeProbe()
    read_csv_manifest(csv, probe_fn=probe, progress=False)
    read_csv_manifest(other, probe_fn=probe, progress=False)
    assert len(probe.calls) == 3 and sorted(os.listdir(videos)) == sorted(before + ["m.csv", "other.csv"])
    assert cache_folder() == str(tmp_path / "usercache" / "lightning_temporal" / "frames")
    written = sorted(os.listdir(cache_folder()))
    assert len(written) == 2 and all(json.load(open(os.path.join(cache_folder(), w)))["videos"] for w in written)
    probe.calls.clear()
    m = read_csv_manifest(csv, probe_fn=probe, progress=False)
    assert probe.calls == [] and m.num_frames.tolist() == [40, 50]
    # an older version's cache beside a manifest is read
    legacy = _write(videos / "legacy.csv", "path,label\nsub/c.mp4,x\n")
    key = os.stat(videos / "sub" / "c.mp4")
    _write(legacy + ".frames.json", json.dumps({"version": 1, "videos": {
        os.path.normpath(str(videos / "sub" / "c.mp4")): [key.st_size, key.st_mtime_ns, 61, 48, 64]}}))
    assert read_csv_manifest(legacy, probe_fn=probe, progress=False).num_frames.tolist() == [61]
    assert probe.calls == []


def test_probing_runs_in_parallel_with_progress_bar(videos, capsys):
    csv = _write(videos / "m.csv", "path,label\na.mp4,x\nb.mp4,y\n")
    barrier = threading.Barrier(2, timeout=10)

    def probe(path):  # both calls must be in flight at once, else the barrier breaks
        barrier.wait()
        return os.path.getsize(path)

    m = read_csv_manifest(csv, probe_fn=probe, num_workers=2, progress=True)
    assert m.num_frames.tolist() == [40, 50] and m[0].height is None  # an int probe gives no frame size
    assert "probing frame counts" in capsys.readouterr().err


def test_default_probe_on_real_video(real_videos, tmp_path):
    shutil.copy(real_videos["carphone_pristine"], tmp_path / "face.mp4")
    csv = _write(tmp_path / "m.csv", "path,label\nface.mp4,face\n")
    m = read_csv_manifest(csv, progress=False)
    assert (m[0].num_frames, m[0].height, m[0].width) == (120, 144, 176)


def _broken_files(d, real):
    with open(real, "rb") as f:
        data = f.read()
    files = {"truncated.mp4": data[: len(data) // 2], "garbage.mp4": bytes(range(256)) * 40, "empty.mp4": b"",
             "image.mp4": encode_image(synthetic_frame(0), "png")}
    for name, content in files.items():
        with open(d / name, "wb") as f:
            f.write(content)
    return list(files)


def test_undecodable_videos_name_their_row(real_videos, tmp_path):
    shutil.copy(real_videos["carphone_pristine"], tmp_path / "good.mp4")
    names = _broken_files(tmp_path, real_videos["carphone_pristine"])
    for name in names:
        csv = _write(tmp_path / "m.csv", f"path,label\ngood.mp4,a\n{name},b\n")
        with pytest.raises(ManifestError, match=rf"m\.csv, row 3: cannot probe the video \(.*{name}"):
            read_csv_manifest(csv, progress=False)
    rows = "".join(f"{n},b\n" for n in names)
    csv = _write(tmp_path / "m.csv", f"path,label\ngood.mp4,a\n{rows}")
    with pytest.warns(UserWarning, match="4 of 5 manifest rows left out"):
        m = read_csv_manifest(csv, progress=False, on_bad_video="skip")
    assert m.paths == [str(tmp_path / "good.mp4")] and m.num_frames.tolist() == [120]
    assert [src for src, _, _ in m.dropped] == [f"{csv}, row {i}" for i in (3, 4, 5, 6)]
    assert m.class_names == ["a", "b"]  # classes come from every row, dropped or not


XYZ = ["x", "y", "z"]
BAD_ROWS = [  # (csv text, classes, exception, message pattern)
    ("path,label,num_frames\na.mp4,x,40\nb.mp4,y\n", None, ManifestError, r"row 3: 2 columns but the header has 3"),
    ("path,label\na.mp4,x\nb.mp4,nope\n", XYZ, UnknownLabelError,
     r"bad\.csv, row 3: label 'nope' is not in the class list; known classes: x, y, z"),
    ("path,label\na.mp4,x\nb.mp4,Y\n", XYZ, UnknownLabelError, r"row 3: label 'Y' is not in the class list \(did you "
                                                                 r"mean 'y'\?\)"),
    ("path,label\na.mp4,1\nb.mp4,5\n", XYZ, UnknownLabelError, r"row 3: label index 5 is outside 0\.\.2"),
    ("path,label\na.mp4,-1\n", None, ManifestError, r"row 2: label index -1 is outside"),
    ("path,label,num_frames\na.mp4,x,-4\n", None, ManifestError, r"row 2: num_frames = -4 is below 1"),
    ("path,label,num_frames\na.mp4,x,12.5\n", None, ManifestError, r"row 2: num_frames = '12.5' is not an integer"),
    ("path,label,num_frames,event_start,event_end\na.mp4,x,40,-1,5\n", None, ManifestError,
     r"row 2: event_start = -1 is below 0"),
    ("path,label,num_frames,event_start,event_end\na.mp4,x,40,5,5\n", None, ManifestError,
     r"row 2: event_end = 5 <= event_start = 5"),
    ("path,label,num_frames,event_start,event_end\na.mp4,x,40,5,41\n", None, ManifestError,
     r"row 2: event_end = 41 is beyond the video's 40 frames"),
    ("path,label,event_start,event_end\na.mp4,x,5,41\n", None, ManifestError,  # against the probed count
     r"row 2: event_end = 41 is beyond the video's 40 frames"),
    ("path,label,num_frames,event_start,event_end\na.mp4,x,40,5,\n", None, ManifestError,
     r"row 2: only one of event_start/event_end"),
    ("path,label,num_frames\na.mp4,x,40\nmissing.mp4,x,40\n", None, FileNotFoundError,
     r"row 3: video .*missing\.mp4 not found"),
    ("path,label,num_frames,frame_scores\na.mp4,x,40,nope.npy\n", None, FileNotFoundError,
     r"row 2: frame_scores file .*nope\.npy not found"),
    ("path,labels\na.mp4,x\n", None, ManifestError, r"row 1: header \['path', 'labels'\] is not valid"),
    ("", None, ManifestError, r"empty file"),
    ("path,label\n\n", None, ManifestError, r"bad\.csv: lists no videos"),
    ("path,label\nmissing.mp4,x\n", "skip", ManifestError,
     r"bad\.csv: every one of its 1 videos was left out, first .*row 2: video .*missing\.mp4 not found"),
    # a video listed twice: both rows named, whatever the spelling of the path
    ("path,label,num_frames\na.mp4,x,40\nb.mp4,y,50\nsub/../a.mp4,x,40\n", None, ManifestError,
     r"bad\.csv, row 4: video .*/a\.mp4 repeats .*bad\.csv, row 2 \(label 'x'\)\. Remove the repeated row, or "
     r"pass allow_repeats=True"),
    ("path,label,num_frames\na.mp4,x,40\nb.mp4,y,50\n./a.mp4,y,40\n", None, ManifestError,
     r"bad\.csv, row 4: video .*/a\.mp4 is listed again under label 'y'; .*bad\.csv, row 2 lists it under 'x'\. A "
     r"video has one label"),
]


@pytest.mark.parametrize("text,classes,exc,pattern", BAD_ROWS)
def test_bad_rows_name_file_and_row(videos, text, classes, exc, pattern):
    csv = _write(videos / "bad.csv", text)
    on_bad = "skip" if classes == "skip" else "raise"
    with pytest.raises(exc, match=pattern) as info, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the "left out" warning of the skip case
        read_csv_manifest(csv, classes=None if on_bad == "skip" else classes, probe_fn=FakeProbe(),
                          on_bad_video=on_bad)
    assert isinstance(info.value, ValueError)  # ManifestError subclasses ValueError, missing files both
    assert csv in str(info.value)


def test_byte_order_mark_is_accepted(videos):
    csv = str(videos / "bom.csv")
    with open(csv, "w", encoding="utf-8-sig") as f:
        f.write("path,label,num_frames\na.mp4,x,40\n")
    assert read_csv_manifest(csv, probe_fn=FakeProbe()).num_frames.tolist() == [40]


def test_missing_manifest(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"nowhere\.csv: manifest not found"):
        read_csv_manifest(tmp_path / "nowhere.csv")


def test_frame_scores_npy_txt_and_wrong_length(videos):
    np.save(videos / "a.npy", np.linspace(0, 1, 40).astype(np.float32))
    _write(videos / "b.txt", "\n".join(str(v) for v in range(50)) + "\n")
    np.save(videos / "short.npy", np.zeros(39, dtype=np.float32))
    _touch(str(videos / "d.mp4"))
    csv = _write(videos / "m.csv", "path,label,num_frames,frame_scores\na.mp4,x,40,a.npy\nb.mp4,x,50,b.txt\n"
                                   "sub/c.mp4,x,60,\nd.mp4,x,40,short.npy\n")
    m = read_csv_manifest(csv, probe_fn=FakeProbe())
    torch.testing.assert_close(m.load_frame_scores(0), torch.linspace(0, 1, 40))
    assert m.load_frame_scores(1).tolist() == list(range(50))
    assert m.load_frame_scores(2) is None
    with pytest.raises(ManifestError, match=rf"{csv}, row 5: frame_scores .*short\.npy has 39 values but the "
                                            r"video has 40 frames"):
        m.load_frame_scores(3)


def test_unknown_counts_without_probe(videos):
    csv = _write(videos / "m.csv", "path,label\na.mp4,x\n")
    m = read_csv_manifest(csv, probe=False)
    assert m[0].num_frames is None
    with pytest.raises(ManifestError, match=r"row 2: frame count unknown .* probe=True"):
        m.num_frames
    with pytest.raises(ManifestError, match="label index 3 is outside 0..1"):
        VideoManifest([VideoRecord("a.mp4", 3, 10)], ["a", "b"])


def test_ucf101_split(tmp_path):
    root, splits = tmp_path / "UCF-101", tmp_path / "ucfTrainTestlist"
    splits.mkdir()
    for name, n in [("ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi", 41), ("Archery/v_Archery_g01_c01.avi", 42),
                    ("Archery/v_Archery_g02_c01.avi", 43)]:
        _touch(str(root / name), n)
    _write(splits / "classInd.txt", "1 ApplyEyeMakeup\r\n2 Archery\r\n")
    _write(splits / "trainlist01.txt", "ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi 1\r\n"
                                        "Archery/v_Archery_g01_c01.avi 2\r\n")
    _write(splits / "testlist01.txt", "Archery/v_Archery_g02_c01.avi\r\n")
    probe = FakeProbe()
    train = read_ucf101_split(root, splits, train=True, probe_fn=probe)
    test = read_ucf101_split(root, splits, train=False, probe_fn=probe)
    assert train.class_names == ["ApplyEyeMakeup", "Archery"]
    assert train.labels.tolist() == [0, 1] and train.num_frames.tolist() == [41, 42]
    assert test.labels.tolist() == [1] and test.num_frames.tolist() == [43]
    assert not os.path.exists(splits / "trainlist01.txt.frames.json")  # cached in the user cache folder
    probe.calls.clear()
    read_ucf101_split(root, splits, train=True, probe_fn=probe)
    assert probe.calls == []
    _write(splits / "trainlist01.txt", "ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi 2\n")
    with pytest.raises(ManifestError, match=r"trainlist01\.txt, row 1: class index 2 \(Archery\) disagrees"):
        read_ucf101_split(root, splits, probe_fn=probe)
    _write(splits / "trainlist01.txt", "Nope/v_x.avi 1\n")
    with pytest.raises(ManifestError, match=r"row 1: class folder 'Nope' is not in"):
        read_ucf101_split(root, splits, probe_fn=probe)
    with pytest.raises(FileNotFoundError, match="testlist02.txt"):
        read_ucf101_split(root, splits, split=2, train=False)


def test_hmdb51_split(tmp_path):
    root, splits = tmp_path / "hmdb51", tmp_path / "splits"
    splits.mkdir()
    for name, n in [("brush_hair/a.avi", 10), ("brush_hair/b.avi", 11), ("cartwheel/c.avi", 12),
                    ("cartwheel/d.avi", 13)]:
        _touch(str(root / name), n)
    _write(splits / "brush_hair_test_split1.txt", "a.avi 1 \nb.avi 2 \n")
    _write(splits / "cartwheel_test_split1.txt", "c.avi 0 \nd.avi 1 \n")
    probe = FakeProbe()
    train = read_hmdb51_split(root, splits, train=True, probe_fn=probe)
    test = read_hmdb51_split(root, splits, train=False, probe_fn=probe)
    assert train.class_names == ["brush_hair", "cartwheel"]
    assert [os.path.basename(p) for p in train.paths] == ["a.avi", "d.avi"] and train.labels.tolist() == [0, 1]
    assert [os.path.basename(p) for p in test.paths] == ["b.avi"] and test.num_frames.tolist() == [11]
    _write(splits / "cartwheel_test_split1.txt", "c.avi 3\n")
    with pytest.raises(ManifestError, match=r"cartwheel_test_split1\.txt, row 1: expected"):
        read_hmdb51_split(root, splits, probe_fn=probe)


def test_kinetics_layouts(tmp_path):
    root = tmp_path / "k400"
    _touch(str(root / "air_drumming" / "abc_000010_000020.mp4"), 30)  # label folder, spaces as underscores
    _touch(str(root / "abseiling" / "def_000000_000010.mp4"), 31)    # label folder as written
    _touch(str(root / "ghi_000005_000015.mp4"), 32)                  # flat
    csv = _write(tmp_path / "train.csv", "label,youtube_id,time_start,time_end,split\n"
                                         "air drumming,abc,10,20,train\n"
                                         "abseiling,def,0,10,train\n"
                                         "abseiling,ghi,5,15,train\n"
                                         "abseiling,zzz,5,15,val\n")
    m = read_kinetics_csv(csv, root, split="train", probe_fn=FakeProbe())
    assert m.class_names == ["abseiling", "air drumming"]
    assert m.labels.tolist() == [1, 0, 0] and m.num_frames.tolist() == [30, 31, 32]
    with pytest.raises(FileNotFoundError, match=r"train\.csv, row 5: video .*abseiling/zzz_000005_000015\.mp4 "
                                                r"or .*k400/zzz_000005_000015\.mp4 not found"):
        read_kinetics_csv(csv, root, probe_fn=FakeProbe())
    with pytest.warns(UserWarning, match="1 of 4 manifest rows left out"):
        m = read_kinetics_csv(csv, root, probe_fn=FakeProbe(), on_bad_video="skip")
    assert len(m) == 3 and len(m.dropped) == 1
    bad = _write(tmp_path / "bad.csv", "label,youtube_id,time_start,time_end,split\nabseiling,def,zero,10,train\n")
    with pytest.raises(ManifestError, match=r"bad\.csv, row 2: time_start = 'zero' is not an integer"):
        read_kinetics_csv(bad, root, probe_fn=FakeProbe())


def test_probe_frame_counts_reports_failures_and_does_not_cache_them(tmp_path):
    good, bad = _touch(str(tmp_path / "g.mp4"), 5), _touch(str(tmp_path / "b.mp4"), 6)
    calls = []

    def probe(path):
        calls.append(path)
        if path == bad:
            raise RuntimeError(f"{path}: cannot decode")
        return 5

    cache = str(tmp_path / "c.json")
    results, errors = probe_frame_counts([good, bad], cache_path=cache, probe_fn=probe)
    assert results == [(5, -1, -1), None] and errors == {1: f"{bad}: cannot decode"}
    calls.clear()
    probe_frame_counts([good, bad], cache_path=cache, probe_fn=probe)
    assert calls == [bad]


def test_extra_columns_are_kept_and_empty_events_read_as_none(tmp_path):
    """The synthetic redundancy variant adds `static_fraction`; binary no_event rows leave the window empty."""
    (tmp_path / "m.csv").write_text("path,label,num_frames,event_start,event_end,static_fraction\n"
                                    "a.mp4,event,40,5,9,0.25\nb.mp4,no_event,30,,,0.5\n")
    (tmp_path / "a.mp4").write_bytes(b"")  # existence is checked; probe=False does not decode
    (tmp_path / "b.mp4").write_bytes(b"")
    m = read_csv_manifest(str(tmp_path / "m.csv"), probe=False)
    assert [r.extra for r in m.records] == [{"static_fraction": "0.25"}, {"static_fraction": "0.5"}]
    assert m.events.tolist() == [[5, 9], [-1, -1]]


def test_allow_repeats_keeps_deliberate_oversampling_but_never_two_labels(videos):
    csv = _write(videos / "over.csv", "path,label,num_frames\na.mp4,x,40\nb.mp4,y,50\na.mp4,x,40\na.mp4,x,40\n")
    with pytest.raises(ManifestError, match=r"row 4: .* repeats .*row 2 \(label 'x'\) \(2 repeated rows in all\)"):
        read_csv_manifest(csv, probe_fn=FakeProbe())
    m = read_csv_manifest(csv, probe_fn=FakeProbe(), allow_repeats=True)
    assert len(m) == 4 and m.paths[0] == m.paths[2] == m.paths[3]
    csv = _write(videos / "two.csv", "path,label,num_frames\na.mp4,x,40\na.mp4,y,40\n")
    with pytest.raises(ManifestError, match="listed again under label 'y'"):
        read_csv_manifest(csv, probe_fn=FakeProbe(), allow_repeats=True)


def test_rarest_labels_name_the_rows_of_the_least_used_classes(videos):
    rows = ["a.mp4,walk,40", "b.mp4,run,40", "sub/c.mp4,walk,40"]
    extra = [f"v{i}.mp4,run,40" for i in range(3)] + ["v9.mp4,wlak,40"]
    for r in extra:
        _touch(str(videos / r.split(",")[0]))
    m = read_csv_manifest(_write(videos / "typo.csv", "path,label,num_frames\n" + "\n".join(rows + extra) + "\n"),
                          probe_fn=FakeProbe())
    assert m.class_names == ["run", "walk", "wlak"]
    text = m.rarest_labels(k=2, rows_listed=1)
    assert text.startswith("'wlak': 1 video (") and text.endswith("typo.csv, row 8); 'walk': 2 videos (" +
                                                                  str(videos / "typo.csv") + ", row 2; ...)")


def test_path_fingerprint_names_videos_by_folder_and_file_in_order():
    a = path_fingerprint(["/data/ucf/a/x.avi", "/data/ucf/b/y.avi"])
    moved = path_fingerprint(["/mnt/other/a/x.avi", "b/y.avi"])
    assert torch.equal(a, moved) and a.dtype == torch.int64 and a[0] != a[1]
    assert torch.equal(path_fingerprint(["/data/ucf/b/y.avi", "/data/ucf/a/x.avi"]), a.flip(0))
    assert path_fingerprint(["/data/ucf/b/x.avi"])[0] != a[0]  # same file name in another class folder
    assert path_fingerprint([]).shape == (0,)
