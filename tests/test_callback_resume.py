"""Exact resume: stop after epoch k, resume from its checkpoint, get the same later clips and final tables.

Run A trains 10 epochs (warm-up 2, exploration 3, exploitation 5) and saves a checkpoint at every training
epoch end (ModelCheckpoint). Run B is built from scratch (new module, data module, callback, Trainer) and resumes
from A's checkpoint of epoch 4 (5 epochs done) to epoch 10. The sampled start of every video in every epoch and
the final tables must be bit-identical. A control run C resumes the same way but with a callback that ignores
its checkpoint state: its clips must differ, which shows the comparison can fail.
"""
from __future__ import annotations

import csv
import os
import shutil

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

from lightning_temporal.callbacks.stochastic_softmax import StochasticSoftmaxCallback
from tests.tiny_lightning import TinyDataModule, TinyVideoModule

W, E, EPOCHS, STOP = 2, 3, 10, 5


def _callback(cls=StochasticSoftmaxCallback):
    return cls(gamma_s=3.0, warmup_epochs=W, exploration_epochs=E, seed=7, track_videos=[1, 4])


def _trainer(callbacks, **kw):
    args = dict(accelerator="cpu", devices=1, max_epochs=EPOCHS, logger=False, enable_progress_bar=False,
                enable_model_summary=False, deterministic=True)
    args.update(kw)
    return L.Trainer(callbacks=callbacks, **args)


def _data():
    return TinyDataModule(num_videos=10, batch_size=4, clip_len=4, sampler_seed=5)


class ForgetfulCallback(StochasticSoftmaxCallback):
    @property
    def state_key(self):  # same key as the real callback, so Lightning hands it the saved state...
        return StochasticSoftmaxCallback.__qualname__

    def load_state_dict(self, state_dict):  # ...which it drops (tables, slot orders, history)
        self.loaded = True


def test_resume_from_epoch_checkpoint_gives_the_same_clips_and_tables(tmp_path):
    L.seed_everything(0)
    a = _callback()
    ckpt = ModelCheckpoint(dirpath=tmp_path, filename="{epoch}", save_top_k=-1, every_n_epochs=1)
    module_a = TinyVideoModule()
    _trainer([a, ckpt]).fit(module_a, datamodule=_data())
    path = tmp_path / f"epoch={STOP - 1}.ckpt"
    assert path.exists()
    saved = torch.load(path, weights_only=False)
    state = next(v for k, v in saved["callbacks"].items() if "StochasticSoftmaxCallback" in k)
    assert state["history"]["epochs"].tolist() == list(range(STOP))

    L.seed_everything(0)
    b = _callback()
    module_b = TinyVideoModule()
    _trainer([b], enable_checkpointing=False).fit(module_b, datamodule=_data(), ckpt_path=str(path))

    ha, hb = a.history, b.history
    assert ha.starts.shape == hb.starts.shape == (EPOCHS, 10)
    assert torch.equal(ha.starts, hb.starts)  # epochs 5..9 were drawn and trained by run B itself
    assert torch.equal(a.policy.table.values, b.policy.table.values)
    assert bool((a.policy.table.values != 0).any())
    for v in (1, 4):
        assert torch.equal(ha.scores[v], hb.scores[v]) and torch.equal(ha.probabilities[v], hb.probabilities[v])
    assert [m["records"] for m in b.metrics] == [0, 0] + [10] * 8
    assert b.metrics == a.metrics
    for pa, pb in zip(module_a.parameters(), module_b.parameters()):
        assert torch.equal(pa, pb)

    # control: without the callback state, the resumed run draws other clips (the test above can fail)
    L.seed_everything(0)
    c = _callback(ForgetfulCallback)
    _trainer([c], enable_checkpointing=False).fit(TinyVideoModule(), datamodule=_data(), ckpt_path=str(path))
    assert c.loaded
    assert not torch.equal(c.history.starts, ha.starts[STOP:])


def test_bootstrap_with_extra_positions_and_a_data_driven_phase_resumes_exactly(tmp_path):
    """The bootstrap policy (2 clean-scored positions per video, the gate opened from data) resumed from the
    checkpoint of epoch 4 draws the same clips and ends with the same tables, gate and history."""
    def cb():
        return StochasticSoftmaxCallback(gamma_s=3.0, mode="bootstrap", seed=7, track_videos=[1, 4], policy_args={
            "num_classes": 10, "z": 0.0, "patience": 2, "positions_per_video": 2, "epsilon": 0.2})

    L.seed_everything(0)
    a = cb()
    ckpt = ModelCheckpoint(dirpath=tmp_path, filename="{epoch}", save_top_k=-1, every_n_epochs=1)
    module_a = TinyVideoModule()
    _trainer([a, ckpt], max_epochs=8).fit(module_a, datamodule=_data())
    L.seed_everything(0)
    b = cb()
    _trainer([b], max_epochs=8, enable_checkpointing=False).fit(TinyVideoModule(), datamodule=_data(),
                                                                ckpt_path=str(tmp_path / f"epoch={STOP - 1}.ckpt"))
    assert 2 in [m["phase"] for m in a.metrics[STOP:]], "the gate should have opened (chance 0.1, z = 0)"
    assert torch.equal(a.history.starts, b.history.starts)
    assert torch.equal(a.policy.table.values, b.policy.table.values)
    assert a.policy.exploit_from == b.policy.exploit_from and a.metrics == b.metrics
    assert [m["records"] for m in b.metrics] == [20] * 8   # 2 positions x 10 videos, every epoch


# ---------------------------------------------------------------------- the tables belong to a training manifest
def _video_parts(train_csv, num_classes=4):
    from lightning_temporal import TemporalDataModule, VideoClassifier

    dm = TemporalDataModule(train_manifest=train_csv, clip_len=4, batch_size=2, crop_size=24, short_side=32,
                            classes=["down", "left", "right", "up"], progress=False)
    model = VideoClassifier("simple3d", num_classes=num_classes, report_gamma_p=(),
                            backbone_kwargs={"widths": (4, 4, 4, 4)})
    return dm, model, StochasticSoftmaxCallback(warmup_epochs=0, exploration_epochs=2)


def _resume(tss, model, dm, path):
    _trainer([tss], max_epochs=2, limit_val_batches=0, enable_checkpointing=False).fit(model, datamodule=dm,
                                                                                      ckpt_path=path)


def _write_rows(path, rows):
    with open(path, "w", newline="") as f:
        csv.writer(f).writerows(rows)
    return str(path)


def test_resume_on_another_manifest_names_the_first_differing_row(tmp_path):
    from lightning_temporal.data.synthetic import generate_dataset

    torch.set_num_threads(1)
    paths = generate_dataset(str(tmp_path / "data"), num_train=4, num_val=1, num_test=1, size=32, min_frames=20,
                             max_frames=20, progress=False, num_workers=0)  # equal lengths: equal clip positions
    dm, model, tss = _video_parts(paths["train"])
    ckpt = ModelCheckpoint(dirpath=tmp_path / "ckpt", filename="{epoch}", every_n_epochs=1)
    _trainer([tss, ckpt], max_epochs=1, limit_val_batches=0).fit(model, datamodule=dm)
    path = str(tmp_path / "ckpt" / "epoch=0.ckpt")
    fingerprint = torch.load(path, weights_only=False)["callbacks"]["StochasticSoftmaxCallback"]["fingerprint"]
    assert fingerprint["paths"].shape == (4,) and fingerprint["num_positions"].tolist() == [17] * 4

    rows = list(csv.reader(open(paths["train"])))
    folder = os.path.dirname(paths["train"])
    swapped = _write_rows(os.path.join(folder, "swapped.csv"), [rows[0], rows[1], rows[3], rows[2], rows[4]])
    dm, model, tss = _video_parts(swapped)
    with pytest.raises(ValueError, match=r"another training manifest: video 1 \(.*swapped\.csv, row 3: "
                                         r".*train_00002\.mp4\) was video 2 in the checkpoint's manifest \(the rows "
                                         r"are reordered\); 2 of 4 rows differ\. Resume with the training manifest"):
        _resume(tss, model, dm, path)

    val = list(csv.reader(open(paths["val"])))[1]  # another video of the same length in the last row
    other = _write_rows(os.path.join(folder, "other.csv"), rows[:4] + [[val[0], rows[4][1], *val[2:]]])
    dm, model, tss = _video_parts(other)
    with pytest.raises(ValueError, match=r"video 3 \(.*other\.csv, row 5: .*val_00000\.mp4\) is not in the "
                                         r"checkpoint's manifest \(another video is in its row\); 1 of 4 rows differ"):
        _resume(tss, model, dm, path)

    # the same rows in a folder moved elsewhere: the fingerprint is relative to the videos' folder, resuming works
    moved = shutil.copytree(folder, tmp_path / "moved" / "data")
    dm, model, tss = _video_parts(str(moved / os.path.basename(paths["train"])))
    _resume(tss, model, dm, path)
    assert tss.history.epochs.tolist() == [0, 1]
