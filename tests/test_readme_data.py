"""The README's "Data" section: every layout it lists has an example, and each example runs.

A ``text`` block whose first line is ``# <file>`` is that file's content; any other ``text`` block lists video
files. The ``yaml`` block under them is a ``data:`` config. The test writes the files, makes the small videos
(or frame folders) the lists point at, and reads every manifest of the config with ``TemporalDataModule``.
"""
import csv
import io
import os
import re
import warnings

import pytest
import yaml

from lightning_temporal.data.manifest import MANIFEST_FORMATS
from lightning_temporal.datamodule import TemporalDataModule
from tests.videos import write_frame_folder, write_video

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
README = open(os.path.join(ROOT, "README.md"), encoding="utf-8").read()
SECTION = README[README.index("## Data\n"):README.index("## Recipes\n")]
FRAMES = 12  # frames of every video the test makes (a CSV row's num_frames when it gives one)


def _examples():
    """[(text blocks, yaml text)] in the order of the section."""
    out, texts = [], []
    for lang, body in re.findall(r"```(text|yaml)\n(.*?)```", SECTION, flags=re.S):
        if lang == "text":
            texts.append(body)
        else:
            out.append((texts, body))
            texts = []
    return out


def _video(path, n=FRAMES):
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    return write_video(path, n, gop=4)


def _media(fmt, manifest, root):
    """Make what ``manifest`` points at; returns {absolute video path: frame count}."""
    made = {}
    if fmt == "folders":
        return {os.path.abspath(os.path.join(dp, f)): FRAMES for dp, _, fs in os.walk(manifest) for f in fs}
    with open(manifest, encoding="utf-8") as f:
        text = f.read()
    if fmt == "csv":
        for row in csv.DictReader(io.StringIO(text)):
            n = int(row["num_frames"]) if row.get("num_frames") else FRAMES
            made[os.path.abspath(_video(os.path.join(root or os.path.dirname(manifest), row["path"]), n))] = n
    elif fmt == "video_list":
        for line in filter(str.strip, text.splitlines()):
            made[os.path.abspath(_video(os.path.join(root, line.rsplit(None, 1)[0])))] = FRAMES
    elif fmt == "rawframe_list":
        for line in filter(str.strip, text.splitlines()):
            folder, total, _ = line.split()
            path = write_frame_folder(os.path.join(root, folder), int(total), ext="jpg", name="img_{:05d}")
            made[os.path.abspath(os.path.join(path, "img_{:05d}.jpg"))] = int(total)
    elif fmt == "kinetics":
        for row in csv.DictReader(io.StringIO(text)):
            name = f"{row['youtube_id']}_{int(row['time_start']):06d}_{int(row['time_end']):06d}.mp4"
            made[(os.path.abspath(_video(os.path.join(root, row["label"], name))), row["split"])] = FRAMES
    return made


def test_the_section_lists_every_layout():
    documented = set(re.findall(r"manifest_format: (\w+)", SECTION)) | {"csv"}
    for line in re.findall(r"manifest_format: ([\w |]+)", SECTION):
        documented |= {w.strip() for w in line.split("|")}
    assert set(MANIFEST_FORMATS) <= documented
    formats = {yaml.safe_load(y)["data"].get("manifest_format", "csv") for _, y in _examples()}
    assert formats >= set(MANIFEST_FORMATS) - {"ucf101", "hmdb51"}  # those two name official files: not shown


@pytest.mark.parametrize("k", range(len(_examples())))
def test_each_data_example_runs(k, tmp_path, monkeypatch):
    texts, config = _examples()[k]
    monkeypatch.chdir(tmp_path)
    for body in texts:
        lines = body.splitlines()
        if lines and lines[0].startswith("# "):
            with open(lines[0][2:].strip(), "w", encoding="utf-8") as f:
                f.write("\n".join(lines[1:]) + "\n")
        else:
            for line in filter(str.strip, lines):
                _video(line.strip())
    data = yaml.safe_load(config)["data"]
    fmt = data.get("manifest_format", "csv")
    splits = [k[:-len("_manifest")] for k in data if k.endswith("_manifest")]
    made = {}
    for split in splits:
        made.update(_media(fmt, data[f"{split}_manifest"], data.get("data_root")))
    dm = TemporalDataModule(**data, clip_len=4, crop_size=16, short_side=20, flip=False, progress=False)
    for split in splits:
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # an example that reads with a warning would not be a good example
            m = dm.manifest(split)
        if fmt == "kinetics":  # one CSV, each split its own rows
            expected = {p: n for (p, s), n in made.items() if s == split}
        else:
            expected = made
        assert {os.path.abspath(r.path): r.num_frames for r in m.records} == expected, (fmt, split)
        if fmt == "folders":  # the label is the class folder's index among the sorted folders
            classes = sorted(os.listdir(data[f"{split}_manifest"]))
            assert m.class_names == classes
            assert [classes[lab] for lab in m.labels.tolist()] == \
                [os.path.relpath(p, data[f"{split}_manifest"]).split(os.sep)[0] for p in m.paths]
