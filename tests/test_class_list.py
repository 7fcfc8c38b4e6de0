"""The class list as a whole: a typo'd training label is named with its row (not "set model.num_classes: 5"), and a
val label outside the training classes names its file, row, label and the known classes."""
import lightning as L
import pytest

from lightning_temporal import TemporalDataModule, VideoClassifier
from lightning_temporal.data.manifest import UnknownLabelError

ROWS = ["a.mp4,left", "b.mp4,right", "c.mp4,up", "d.mp4,down", "e.mp4,left", "f.mp4,lfet", "g.mp4,up",
        "h.mp4,right", "i.mp4,down"]


def _manifest(folder, name, rows):
    for r in rows:
        (folder / r.split(",")[0]).write_bytes(b"")  # the frame count is given: nothing is decoded
    path = folder / name
    path.write_text("path,label,num_frames\n" + "".join(f"{r},30\n" for r in rows))
    return str(path)


def _fit(dm, num_classes=4):
    trainer = L.Trainer(accelerator="cpu", devices=1, max_epochs=1, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(VideoClassifier("simple3d", num_classes=num_classes), datamodule=dm)


def test_more_training_labels_than_classes_names_the_rarest_with_their_rows(tmp_path):
    dm = TemporalDataModule(train_manifest=_manifest(tmp_path, "train.csv", ROWS), clip_len=4, crop_size=24,
                            short_side=32, progress=False)
    with pytest.raises(ValueError, match=r"model\.num_classes=4 but the data has 5 classes \(down, left, lfet, "
                                         r"right, up\); the training manifest's rarest labels: 'lfet': 1 video \(.*"
                                         r"train\.csv, row 7\); 'down': 2 videos .*A label seen once is usually a "
                                         r"typo"):
        _fit(dm)
    # fewer labels than classes: the advice is the class list, not a smaller model
    dm = TemporalDataModule(train_manifest=_manifest(tmp_path, "three.csv", ROWS[:3]), clip_len=4, crop_size=24,
                            short_side=32, progress=False)
    with pytest.raises(ValueError, match=r"data has 3 classes .*give data\.classes all 4 class names"):
        _fit(dm)


def test_val_label_outside_the_training_classes_names_file_row_label_and_classes(tmp_path):
    train = _manifest(tmp_path, "train.csv", [r for r in ROWS if "lfet" not in r])
    val = _manifest(tmp_path, "val.csv", ["a.mp4,left", "j.mp4,jump"])
    dm = TemporalDataModule(train_manifest=train, val_manifest=val, clip_len=4, crop_size=24, short_side=32,
                            progress=False)
    with pytest.raises(UnknownLabelError, match=r"val\.csv, row 3: label 'jump' is not in the class list; known "
                                                r"classes: down, left, right, up\. .*the val split's class list is the "
                                                r"training manifest's: .*train\.csv; give data\.classes"):
        dm.manifest("val")
    val = _manifest(tmp_path, "val2.csv", ["a.mp4,left", "k.mp4,Rigth"])
    dm = TemporalDataModule(train_manifest=train, val_manifest=val, clip_len=4, crop_size=24, short_side=32,
                            progress=False)
    with pytest.raises(UnknownLabelError, match=r"val2\.csv, row 3: label 'Rigth' is not in the class list \(did you "
                                                r"mean 'right'\?\)"):
        dm.manifest("val")
