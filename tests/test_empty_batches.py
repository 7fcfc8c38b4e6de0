"""A batch in which every clip failed to decode trains nothing and says so, on one process and under 2-process DDP.

The training manifest holds 3 real videos and one file of garbage bytes (its frame count given, so the manifest
reads); with ``batch_size=1`` that file is a batch of its own in every epoch: an empty batch. Scoring (clean, or
of the training logits) is on from the first epoch. Under DDP the empty batch falls on one rank only, while the
other trains a real clip: every collective (the gradient all-reduce, the synced epoch means, the callback's
gathers) must still be joined by both.
"""
from __future__ import annotations

import csv
import os
import warnings

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

from lightning_temporal import StochasticSoftmaxCallback, TemporalDataModule, VideoClassifier
from tests.hard_timeout import hard_timeout
from tests.synth import tiny_dataset

EPOCHS = 2
BROKEN = 2  # video index of the garbage file


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def manifest(tmp_path_factory):
    root = tmp_path_factory.mktemp("empty_batches")
    paths = tiny_dataset(root, num_train=3, num_val=1, num_test=1, max_frames=24)
    rows = list(csv.reader(open(paths["train"])))
    broken = root / "broken.mp4"
    broken.write_bytes(os.urandom(3000))
    rows.insert(1 + BROKEN, [str(broken), rows[1][1], "22", "", "", ""])
    path = os.path.join(os.path.dirname(paths["train"]), "train_with_broken.csv")
    with open(path, "w", newline="") as f:
        csv.writer(f).writerows(rows)
    return path


def _parts(manifest, scoring="clean"):
    dm = TemporalDataModule(train_manifest=manifest, clip_len=4, batch_size=1, crop_size=24, short_side=32,
                            classes=["down", "left", "right", "up"], progress=False, seed=2)
    torch.manual_seed(0)
    model = VideoClassifier("simple3d", num_classes=4, report_gamma_p=(), backbone_kwargs={"widths": (4, 4, 4, 4)})
    tss = StochasticSoftmaxCallback(gamma_s=1.0, warmup_epochs=0, exploration_epochs=2, track_videos=0,
                                    scoring=scoring)
    return dm, model, tss


class WatchEmptySteps(L.Callback):
    """Weights before and after each empty batch's step; at the end each rank writes what the test compares."""

    def __init__(self, out_dir=None):
        self.out_dir = out_dir
        self.changed = []
        self.losses = []  # (epoch, loss, clips) of every batch that trained

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.before = [p.detach().clone() for p in pl_module.parameters()]

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if batch["clip"].shape[0] == 0:
            self.changed.append(any(not torch.equal(a, p) for a, p in zip(self.before, pl_module.parameters())))
        else:
            self.losses.append((trainer.current_epoch, float(outputs["loss"]), batch["clip"].shape[0]))

    def on_fit_end(self, trainer, pl_module):
        if self.out_dir is None:
            return
        tss = next(c for c in trainer.callbacks if isinstance(c, StochasticSoftmaxCallback))
        torch.save({"table": [tss.policy.table[v].clone() for v in range(4)], "skips": pl_module.skips.state_dict(),
                    "changed": self.changed, "losses": self.losses,
                    "params": {k: p.detach().clone() for k, p in pl_module.named_parameters()}, "records": tss.metrics,
                    "logged": {k: float(v) for k, v in trainer.callback_metrics.items()}},
                   os.path.join(self.out_dir, f"rank{trainer.global_rank}.pt"))


def _trainer(callbacks, **kw):
    args = dict(accelerator="cpu", devices=1, max_epochs=EPOCHS, logger=False, enable_progress_bar=False,
                enable_model_summary=False, enable_checkpointing=False, limit_val_batches=0)
    args.update(kw)
    return L.Trainer(callbacks=callbacks, **args)


@pytest.mark.parametrize("scoring", ["clean", "augmented"])
def test_an_empty_batch_trains_nothing_is_counted_and_checkpointed(manifest, tmp_path, scoring):
    dm, model, tss = _parts(manifest, scoring)
    watch = WatchEmptySteps()
    ckpt = ModelCheckpoint(dirpath=tmp_path, filename="{epoch}-{step}", every_n_train_steps=1, save_top_k=-1)
    with pytest.warns(UserWarning, match=r"epoch 1: skipped 1 clip\(s\) of 1 video\(s\) .*broken\.mp4.*; 1 "
                                         r"batch\(es\) had no clip left and trained nothing"):
        _trainer([tss, watch, ckpt], enable_checkpointing=True).fit(model, datamodule=dm)
    assert watch.changed == [False] * EPOCHS  # the empty batch's step changed no weight (Adam has momentum)
    assert model.skips.total_skipped == model.skips.total_empty_batches == EPOCHS
    assert model.trainer.callback_metrics["train/empty_batches"] == 1.0
    # the epoch's mean loss is over the clips that trained (the empty batch adds nothing)
    last = [(loss, n) for e, loss, n in watch.losses if e == EPOCHS - 1]
    assert len(last) == 3 and model.trainer.callback_metrics["train/loss_epoch"].item() == pytest.approx(
        sum(loss * n for loss, n in last) / sum(n for _, n in last), rel=1e-6)
    table = tss.policy.table
    assert not bool((table[BROKEN] != 0).any())  # never scored
    assert all(bool((table[v] != 0).any()) for v in range(4) if v != BROKEN)
    assert [m["records"] for m in tss.metrics] == [3] * EPOCHS
    # the skip counter travels in the checkpoints: resumed mid-epoch after epoch 1's empty batch, it goes on
    states = [torch.load(p, weights_only=False) for p in sorted(tmp_path.glob("epoch=1-*.ckpt"))]
    after = next(s for s in states if s["lightning_temporal"]["skips"]["empty_batches"] == 1
                 and s["loops"]["fit_loop"]["epoch_loop.batch_progress"]["current"]["completed"] < 4)
    resumed_dm, resumed, resumed_tss = _parts(manifest, scoring)
    path = next(p for p, s in zip(sorted(tmp_path.glob("epoch=1-*.ckpt")), states) if s is after)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _trainer([resumed_tss]).fit(resumed, datamodule=resumed_dm, ckpt_path=str(path))
    assert resumed.skips.state_dict() == model.skips.state_dict()
    assert torch.equal(resumed_tss.policy.table.values, table.values)


def test_two_process_ddp_with_an_empty_batch_on_one_rank_does_not_hang(manifest, tmp_path):
    # augmented scoring: the callback scores nothing itself, so the module's own collectives are what is tested
    # (clean scoring of an empty batch is the single-process test's)
    dm, model, tss = _parts(manifest, "augmented")
    trainer = _trainer([tss, WatchEmptySteps(str(tmp_path))], devices=2, strategy="ddp_fork")
    with hard_timeout(150, "2-process DDP fit with an empty batch on one rank"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.fit(model, datamodule=dm)
    r = [torch.load(tmp_path / f"rank{k}.pt", weights_only=False) for k in (0, 1)]
    # each epoch the garbage file fell on one rank: its batch there was empty while the other rank trained a clip
    empties = [x["skips"]["total_empty_batches"] for x in r]
    assert sum(empties) == EPOCHS and min(empties) < EPOCHS
    assert all(x["logged"]["train/empty_batches"] == 1.0 for x in r)  # summed over the ranks, every epoch
    last = [(loss, n) for x in r for e, loss, n in x["losses"] if e == EPOCHS - 1]  # both ranks' clips
    assert len(last) == 3 and all(x["logged"]["train/loss_epoch"] == pytest.approx(
        sum(loss * n for loss, n in last) / sum(n for _, n in last), rel=1e-6) for x in r)
    assert all(torch.equal(a, b) for a, b in zip(r[0]["table"], r[1]["table"]))
    assert not bool((r[0]["table"][BROKEN] != 0).any())
    assert all(bool((r[0]["table"][v] != 0).any()) for v in range(4) if v != BROKEN)
    assert [m["records"] for m in r[0]["records"]] == [3] * EPOCHS
    # the gradient all-reduce ran every step on both ranks: the weights stay equal (BatchNorm running statistics are
    # each rank's own under DDP until the next forward broadcasts rank 0's)
    assert all(torch.equal(r[0]["params"][k], r[1]["params"][k]) for k in r[0]["params"])


class KeepLogged(L.Callback):
    """Each rank writes what it logged at the end of validation."""

    def __init__(self, out_dir):
        self.out_dir = out_dir

    def on_validation_end(self, trainer, pl_module):
        torch.save({k: float(v) for k, v in trainer.callback_metrics.items()},
                   os.path.join(self.out_dir, f"val_rank{trainer.global_rank}.pt"))


def test_two_process_ddp_validation_with_every_video_of_one_rank_broken_does_not_hang(manifest, tmp_path):
    # evaluation shards videos r, r + 2, ...: with [good, broken] rank 1's only batch has no video left
    rows = list(csv.reader(open(manifest)))
    good, broken = rows[1], next(r for r in rows[1:] if r[0].endswith("broken.mp4"))
    root = os.path.dirname(manifest)
    val = os.path.join(root, "val_one_broken.csv")
    with open(val, "w", newline="") as f:
        csv.writer(f).writerows([rows[0], good, broken])
    dm = TemporalDataModule(val_manifest=val, clip_len=4, batch_size=1, crop_size=24, short_side=32,
                            classes=["down", "left", "right", "up"], progress=False, seed=2)
    torch.manual_seed(0)
    model = VideoClassifier("simple3d", num_classes=4, report_gamma_p=(), backbone_kwargs={"widths": (4, 4, 4, 4)})
    trainer = _trainer([KeepLogged(str(tmp_path))], devices=2, strategy="ddp_fork", limit_val_batches=None)
    with hard_timeout(150, "2-process DDP validation with every video of one rank broken"), \
            warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.validate(model, datamodule=dm)
    logged = [torch.load(tmp_path / f"val_rank{k}.pt") for k in (0, 1)]
    assert logged[0] == logged[1]  # every value reduced over both ranks
    assert logged[0]["val/skipped_videos"] == 1.0
    # the metrics cover the one good video: the same as validating it alone on one process
    alone = os.path.join(root, "val_good_only.csv")
    with open(alone, "w", newline="") as f:
        csv.writer(f).writerows([rows[0], good])
    dm = TemporalDataModule(val_manifest=alone, clip_len=4, batch_size=1, crop_size=24, short_side=32,
                            classes=["down", "left", "right", "up"], progress=False, seed=2)
    torch.manual_seed(0)
    model = VideoClassifier("simple3d", num_classes=4, report_gamma_p=(), backbone_kwargs={"widths": (4, 4, 4, 4)})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        (single,) = _trainer([], limit_val_batches=None).validate(model, datamodule=dm)
    assert logged[0]["val/loss"] == pytest.approx(single["val/loss"], rel=1e-5)
    assert logged[0]["val/top1"] == single["val/top1"]
