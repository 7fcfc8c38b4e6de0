"""Manifests that say what is wrong, and the dataset layouts users already hold.

* encodings: a manifest that is not UTF-8 is an error naming the file, the row and the fix, or is read in the
  encoding given;
* counts a row gives (``num_frames``, ``total_frames``) are checked against the file before anything is sized
  by them;
* Kinetics: one annotation CSV with a ``split`` column gives each split its own rows;
* class-folder trees, ``path label`` lists and MMAction2 rawframe lists read directly, with the CSV's errors.
"""
import os
import pathlib
import resource
import warnings

import pytest

from lightning_temporal.data.manifest import (ManifestError, ManifestFileNotFoundError, read_class_folders,
                                              read_csv_manifest, read_kinetics_csv, read_manifest,
                                              read_rawframe_list, read_video_list)
from lightning_temporal.data.dataset import ClipDataset, SkippedClip
from lightning_temporal.data.video import probe
from lightning_temporal.data.video_dataset import VideoDataset
from lightning_temporal.datamodule import TemporalDataModule
from tests.videos import write_frame_folder, write_video


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    """Small real videos: {name: (path, frame count)}."""
    d = tmp_path_factory.mktemp("clips")
    out = {}
    for name, n in [("a.mp4", 26), ("b.mp4", 18), ("c.mp4", 12)]:
        out[name] = (write_video(str(d / name), n, gop=8), n)
    return d, out


def _dm(**kw):
    return TemporalDataModule(clip_len=4, crop_size=16, short_side=20, batch_size=2, progress=False, **kw)


# ------------------------------------------------------------------------------------------------ encodings
def test_manifest_not_in_utf8_names_file_row_and_fix(clips):
    d, _ = clips
    csv = d / "latin1.csv"
    csv.write_bytes("path,label\na.mp4,caf\u00e9\nb.mp4,th\u00e9\n".encode("latin-1"))
    with pytest.raises(ManifestError, match=rf"{csv}, row 2: byte\(s\) e9 at column 10 are not utf-8 .* save it as "
                                            r"UTF-8, or give its encoding: encoding='latin-1' \(TemporalDataModule: "
                                            r"data.manifest_encoding: latin-1\)"):
        read_csv_manifest(str(csv), progress=False)
    m = read_csv_manifest(str(csv), progress=False, encoding="latin-1")
    assert m.class_names == ["caf\u00e9", "th\u00e9"] and m.num_frames.tolist() == [26, 18]
    assert _dm(train_manifest=str(csv), manifest_encoding="latin-1").manifest("train").class_names == m.class_names
    with pytest.raises(ValueError, match="data.manifest_encoding"):
        _dm(train_manifest=str(csv), manifest_encoding="no-such-codec")
    with pytest.raises(ManifestError, match="row 2: .* not utf-8"):
        _dm(train_manifest=str(csv)).manifest("train")


@pytest.mark.parametrize("fmt", ["video_list", "kinetics", "classes"])
def test_every_list_reader_names_the_encoding_error(clips, fmt):
    d, _ = clips
    text = {"video_list": "a.mp4 0\n# caf\u00e9 0\n",
            "kinetics": "label,youtube_id,time_start,time_end,split\ncaf\u00e9,x,0,10,train\n",
            "classes": "walk\ncaf\u00e9\n"}[fmt]
    f = d / f"latin1_{fmt}.txt"
    f.write_bytes(text.encode("latin-1"))
    with pytest.raises(ManifestError, match=rf"{f}, row 2: .* not utf-8 .*encoding='latin-1'"):
        if fmt == "video_list":
            read_video_list(str(f))
        elif fmt == "kinetics":
            read_kinetics_csv(str(f), str(d))
        else:
            (d / "ok.csv").write_text("path,label\na.mp4,walk\n")
            read_csv_manifest(str(d / "ok.csv"), classes=str(f))


# ------------------------------------------------------------------------------------------------ count claims
def test_count_above_the_file_warns_naming_the_row_and_the_file_count_is_used(clips):
    d, info = clips
    csv = d / "claims.csv"
    csv.write_text("path,label,num_frames\na.mp4,x,1000000000\nb.mp4,x,30\nc.mp4,y,10\n")
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.warns(UserWarning, match=rf"2 manifest row\(s\) claim more frames than the video holds.*{csv}, row 2: "
                                         rf"num_frames = 1000000000 but .*a.mp4 has 26; {csv}, row 3: num_frames = 30 "
                                         r"but .*b.mp4 has 18"):
        dm = _dm(train_manifest=str(csv), val_manifest=str(csv), flip=False)
        m = dm.manifest("train")
        dm.setup("fit")
    assert m.num_frames.tolist() == [26, 18, 10]  # a smaller claim is the row's choice (10 of 12)
    assert dm.clip_sampler.num_positions.tolist() == [23, 15, 7]  # nothing sized by the claim
    item = dm.datasets["val"][0]
    assert item["video"].shape[1] == 26  # decoded whole: no padding past the file's end
    # a 1e9 claim allocated nothing proportional to it (4 GB for a float score table)
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss < 1_000_000  # KiB


def test_unchecked_claim_sizes_no_buffer_and_pads_no_clip(clips):
    """probe=False trusts the counts; the evaluation buffer is still sized by the file's own count, and a training
    clip the claim puts inside the video but the file ends before is skipped and named, never padded."""
    d, _ = clips
    csv = d / "trusted.csv"
    csv.write_text("path,label,num_frames\na.mp4,x,1000000000\nb.mp4,x,30\n")
    m = read_csv_manifest(str(csv), probe=False)
    ds = VideoDataset(m, clip_len=4)
    frames = ds.decode(0)
    assert frames.shape[0] == 26 and ds._buffer.shape[0] == 26
    clips_ds = ClipDataset(m, clip_len=8)
    assert clips_ds[(1, 10)]["clip"].shape[1] == 8  # frames 10..17 of 18: inside the file
    with pytest.warns(UserWarning, match=r"b.mp4: the clip at 12 needs frame 19 but the file has 18 frames while the "
                                         r"manifest says 30: it would be padded"):
        assert isinstance(clips_ds[(1, 12)], SkippedClip)


# ------------------------------------------------------------------------------------------------ Kinetics
@pytest.fixture(scope="module")
def kinetics(tmp_path_factory):
    d = tmp_path_factory.mktemp("kinetics")
    rows = [("abseiling", "aaa", "train"), ("abseiling", "bbb", "train"), ("air drumming", "ccc", "train"),
            ("abseiling", "ddd", "val"), ("air drumming", "eee", "val"), ("air drumming", "fff", "test")]
    for label, yid, _ in rows:
        os.makedirs(d / "videos" / label.replace(" ", "_"), exist_ok=True)
        write_video(str(d / "videos" / label.replace(" ", "_") / f"{yid}_000010_000020.mp4"), 8, gop=4)
    csv = d / "kinetics.csv"
    csv.write_text("label,youtube_id,time_start,time_end,split\n"
                   + "".join(f"{label},{yid},10,20,{split}\n" for label, yid, split in rows))
    return d, csv


def test_kinetics_split_column_gives_each_split_its_rows(kinetics):
    d, csv = kinetics
    names = {s: sorted(os.path.basename(p)[:3] for p in read_kinetics_csv(str(csv), str(d / "videos"), split=s,
                                                                          progress=False).paths)
             for s in ("train", "val", "validate", "test")}
    assert names == {"train": ["aaa", "bbb", "ccc"], "val": ["ddd", "eee"], "validate": ["ddd", "eee"],
                     "test": ["fff"]}
    dm = _dm(train_manifest=str(csv), val_manifest=str(csv), test_manifest=str(csv), manifest_format="kinetics",
             data_root=str(d / "videos"), flip=False)
    train, val, test = (set(dm.manifest(s).paths) for s in ("train", "val", "test"))
    assert len(train) == 3 and len(val) == 2 and len(test) == 1
    assert not (train & val) and not (train & test) and not (val & test)  # no video in two splits
    assert dm.manifest("val").class_names == ["abseiling", "air drumming"]
    with pytest.raises(ManifestError, match=r"no row of split 'test' \(its split column holds \['train'\]\)"):
        (d / "train_only.csv").write_text("label,youtube_id,time_start,time_end,split\nabseiling,aaa,10,20,train\n")
        read_kinetics_csv(str(d / "train_only.csv"), str(d / "videos"), split="test")


def test_kinetics_without_data_root_names_the_key(kinetics):
    d, csv = kinetics
    with pytest.raises(ValueError, match=r"data.data_root is not set; manifest_format='kinetics' needs the folder"):
        _dm(train_manifest=str(csv), manifest_format="kinetics")
    with pytest.raises(ManifestError, match=r"pass root= \(TemporalDataModule: data.data_root"):
        read_kinetics_csv(str(csv), None)


# ------------------------------------------------------------------------------------------------ layouts
@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    """root/<class>/<video>: videos in sub-folders, a rawframes video, an upper-case extension, a stray file."""
    root = tmp_path_factory.mktemp("tree") / "train"
    made = {}
    for rel, n in [("walk/w1.mp4", 10), ("walk/more/w2.avi", 9), ("run/r1.MP4", 11), ("jump/j1.mkv", 12)]:
        os.makedirs(root / os.path.dirname(rel), exist_ok=True)
        made[rel] = (write_video(str(root / rel), n, gop=4, codec="mpeg4" if rel.endswith(".avi") else "libx264"), n)
    made["run/r2"] = (write_frame_folder(str(root / "run" / "r2"), 7, ext="png"), 7)
    (root / "walk" / "notes.txt").write_text("not a video")
    return root, made


def test_class_folder_tree_follows_pytorchvideo_from_directory(tree):
    root, made = tree
    with pytest.warns(UserWarning, match=r"1 file\(s\) left out, not videos .*walk/notes.txt"):
        m = read_class_folders(str(root), progress=False)
    # PyTorchVideo LabeledVideoPaths.from_directory: classes = sorted sub-folders, label = index in that order
    classes = sorted(p.name for p in pathlib.Path(root).iterdir() if p.is_dir())
    assert m.class_names == classes == ["jump", "run", "walk"]
    got = {os.path.relpath(p, root): int(lab) for p, lab in zip(m.paths, m.labels)}
    assert got == {rel: classes.index(rel.split("/")[0]) for rel in made}
    counts = {os.path.relpath(r.path, root): r.num_frames for r in m.records}
    assert counts == {rel: n for rel, (_, n) in made.items()}
    dm = _dm(train_manifest=str(root), manifest_format="folders", flip=False)
    with pytest.warns(UserWarning, match="left out"):
        assert dm.manifest("train").paths == m.paths
    with pytest.raises(ManifestError, match=r"no class folders; this layout is root/<class>/<video>"):
        read_class_folders(str(root / "walk" / "more"))


def test_path_label_list_reads_like_pytorchvideo_from_csv(clips, tmp_path):
    d, info = clips
    os.makedirs(tmp_path / "my videos", exist_ok=True)
    spaced = write_video(str(tmp_path / "my videos" / "clip one.mp4"), 14, gop=4)
    lst = tmp_path / "train_list.txt"
    lst.write_text(f"{d / 'a.mp4'} 1\nmy videos/clip one.mp4 0\n\n{d / 'c.mp4'} 2\n")
    m = read_video_list(str(lst), progress=False)
    # from_csv: path, label = line.rsplit(None, 1), int(label)
    expected = [line.rsplit(None, 1) for line in lst.read_text().splitlines() if line.strip()]
    assert [os.path.relpath(p, tmp_path) if not os.path.isabs(e[0]) else p for p, e in zip(m.paths, expected)] \
        == [e[0] for e in expected]
    assert m.labels.tolist() == [int(e[1]) for e in expected] and m.class_names == ["0", "1", "2"]
    assert m.num_frames.tolist() == [26, 14, 12] and os.path.samefile(m.paths[1], spaced)
    # MMAction2 VideoDataset: names relative to data_prefix (root=)
    (tmp_path / "mm.txt").write_text("a.mp4 0\nb.mp4 1\n")
    assert read_manifest(str(tmp_path / "mm.txt"), format="video_list", root=str(d), progress=False).paths == \
        [str(d / "a.mp4"), str(d / "b.mp4")]
    dm = _dm(train_manifest=str(tmp_path / "mm.txt"), manifest_format="video_list", data_root=str(d), flip=False)
    assert dm.manifest("train").num_frames.tolist() == [26, 18]
    # the CSV's errors: a missing video names the file and row; a line without a label says what is expected
    (tmp_path / "bad.txt").write_text("a.mp4 0\nnope.mp4 1\n")
    with pytest.raises(ManifestFileNotFoundError, match=rf"{tmp_path / 'bad.txt'}, row 2: video .*nope.mp4 not found"):
        read_video_list(str(tmp_path / "bad.txt"), root=str(d))
    (tmp_path / "nolabel.txt").write_text("a.mp4 0\nb.mp4\n")
    with pytest.raises(ManifestError, match=r"row 2: expected '<path> <label>', got 'b.mp4'"):
        read_video_list(str(tmp_path / "nolabel.txt"), root=str(d))


def test_rawframe_list_reads_mmaction2_rawframes(tmp_path):
    v1 = write_frame_folder(str(tmp_path / "rawframes" / "v1"), 12, ext="jpg", name="img_{:05d}")
    v2 = write_frame_folder(str(tmp_path / "rawframes" / "v2"), 9, ext="jpg", name="img_{:05d}")
    write_frame_folder(str(tmp_path / "rawframes" / "v2"), 9, ext="jpg", name="flow_x_{:05d}")  # optical flow too
    lst = tmp_path / "train_list_rawframes.txt"
    lst.write_text("v1 12 0\nv2 9 1\n")
    with pytest.raises(ManifestError, match="several naming patterns"):
        read_rawframe_list(str(lst), root=str(tmp_path / "rawframes"), progress=False)
    m = read_rawframe_list(str(lst), root=str(tmp_path / "rawframes"), frame_pattern="img_{:05d}.jpg", progress=False)
    assert m.num_frames.tolist() == [12, 9] and m.labels.tolist() == [0, 1]
    assert probe(m.paths[1]).num_frames == 9 and os.path.dirname(m.paths[1]) == v2 and v1
    lst.write_text("v1 40 0\nv2 9 1\n")  # total_frames above the folder's: checked like num_frames
    with pytest.warns(UserWarning, match=r"row 1: num_frames = 40 but .*v1.* has 12"):
        m = read_rawframe_list(str(lst), root=str(tmp_path / "rawframes"), frame_pattern="img_{:05d}.jpg")
    assert m.num_frames.tolist() == [12, 9]
    dm = _dm(train_manifest=str(lst), manifest_format="rawframe_list", data_root=str(tmp_path / "rawframes"),
             frame_pattern="img_{:05d}.jpg", flip=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert dm.manifest("train").num_frames.tolist() == [12, 9]


@pytest.mark.parametrize("text, kind", [("a.mp4 0\nb.mp4 1\n", "video_list"), ("v1 12 0\n", "rawframe_list")])
def test_a_list_given_as_csv_names_the_formats(tmp_path, text, kind):
    lst = tmp_path / "list.txt"
    lst.write_text(text)
    with pytest.raises(ManifestError, match=rf"{lst}, row 1: .* is a space-separated list, not a CSV manifest; read "
                                            rf"it as manifest_format: {kind} .*Supported formats.*video_list.*"
                                            r"rawframe_list.*folders"):
        read_csv_manifest(str(lst))
    (tmp_path / "bad.csv").write_text("file;class\na.mp4;x\n")
    with pytest.raises(ManifestError, match=r"header \['file;class'\] is not valid.*supported formats"):
        read_csv_manifest(str(tmp_path / "bad.csv"))


def test_cache_folder_default_is_the_users_cache(tmp_path, monkeypatch):
    from lightning_temporal.data.manifest import cache_folder

    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert cache_folder() == str(tmp_path / ".cache" / "lightning_temporal" / "frames")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_folder() == str(tmp_path / "xdg" / "lightning_temporal" / "frames")


def test_count_of_a_video_that_cannot_be_read_is_kept_and_named(clips):
    """A row that gives a count for a file that cannot be read keeps its row and count (its clips are skipped and
    counted in training, as before), with a warning naming the row; on_bad_video='skip' leaves it out."""
    d, _ = clips
    (d / "garbage.mp4").write_bytes(bytes(range(256)) * 20)
    csv = d / "with_garbage.csv"
    csv.write_text("path,label,num_frames\na.mp4,x,26\ngarbage.mp4,y,22\n")
    with pytest.warns(UserWarning, match=rf"1 manifest row\(s\) give a frame count that cannot be checked.*{csv}, row "
                                         r"3: .*garbage.mp4.*Their counts are kept"):
        m = read_csv_manifest(str(csv), progress=False)
    assert m.num_frames.tolist() == [26, 22]
    ds = ClipDataset(m, clip_len=4)
    with pytest.warns(UserWarning, match="skipping a clip"):
        assert isinstance(ds[(1, 0)], SkippedClip)
    with pytest.warns(UserWarning, match=r"1 of 2 manifest rows left out \(on_bad_video='skip'\)"):
        assert read_csv_manifest(str(csv), progress=False, on_bad_video="skip").num_frames.tolist() == [26]
