"""Exact resume through real ``Trainer.fit`` on real (synthetic) video files, with random crop + flip and dropout.

Run A trains without interruption and writes a checkpoint after every training step, after every validation (every
second step: in the middle of an epoch or after its last batch) and at every epoch end. Runs B are built from scratch
(new module, data module, callback, Trainer, global seed) and resume from chosen checkpoints: in warm-up
(mid-epoch), in exploration (after a mid-epoch validation, after the validation that ends an epoch, and at an epoch
end), in exploitation (mid-epoch, and after the last batch of an epoch, before its end-of-epoch hooks). Each must end with
bit-identical tables, sampling history (every clip position of every epoch), per-epoch numbers and model weights.
Run A with ``num_workers=0`` and ``num_workers=2`` must also be identical: augmentation does not depend on workers.
"""
from __future__ import annotations

import warnings

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

from lightning_temporal import StochasticSoftmaxCallback, TemporalDataModule, VideoClassifier
from tests.synth import tiny_dataset

W, E, EPOCHS = 1, 1, 4  # epoch 0 warm-up, 1 exploration, 2-3 exploitation; 3 training steps an epoch
STEPS = 3
# (checkpoint file, where it was written); global step = optimizer steps done when it was written
RESUMES = [
    ("step/epoch=0-step=1.ckpt", "warm-up, mid-epoch (every_n_train_steps)"),
    ("val/epoch=1-step=4.ckpt", "exploration, after a mid-epoch validation"),
    ("val/epoch=1-step=6.ckpt", "exploration, after the validation that ends the epoch (before its epoch-end hooks)"),
    ("end/epoch=1.ckpt", "exploration, end of epoch"),
    ("step/epoch=2-step=8.ckpt", "exploitation, mid-epoch"),
    ("step/epoch=2-step=9.ckpt", "exploitation, after the epoch's last batch (before its epoch-end hooks)"),
]


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    root = tmp_path_factory.mktemp("resume_data")
    return tiny_dataset(root, num_train=6, num_val=1, num_test=1, max_frames=26)


def _parts(videos, num_workers, seed=3):
    dm = TemporalDataModule(train_manifest=videos["train"], val_manifest=videos["val"], clip_len=4, batch_size=2,
                            eval_batch_size=2, eval_clip_stride=8, crop_size=24, short_side=32, flip=True,
                            num_workers=num_workers, progress=False, seed=seed)
    torch.manual_seed(0)
    model = VideoClassifier("simple3d", num_classes=4, report_gamma_p=(),
                            backbone_kwargs={"widths": (4, 4, 4, 4), "dropout": 0.5})
    tss = StochasticSoftmaxCallback(gamma_s=2.0, warmup_epochs=W, exploration_epochs=E, seed=1, track_videos=2)
    return dm, model, tss


def _trainer(callbacks, **kw):
    return L.Trainer(accelerator="cpu", devices=1, max_epochs=EPOCHS, callbacks=callbacks, logger=False,
                     enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                     check_val_every_n_epoch=None, val_check_interval=2, **kw)  # every 2nd step: mid-epoch or last


def _fit(videos, num_workers, tmp_path=None, ckpt_path=None, seed=11, data_seed=3):
    dm, model, tss = _parts(videos, num_workers, data_seed)
    callbacks = [tss]
    if tmp_path is not None:
        callbacks += [ModelCheckpoint(dirpath=tmp_path / "step", filename="{epoch}-{step}", every_n_train_steps=1,
                                      save_top_k=-1),
                      ModelCheckpoint(dirpath=tmp_path / "val", filename="{epoch}-{step}", save_top_k=-1,
                                      monitor="val/top1", mode="max", save_on_train_epoch_end=False),
                      ModelCheckpoint(dirpath=tmp_path / "end", filename="{epoch}", save_top_k=-1, every_n_epochs=1,
                                      save_on_train_epoch_end=True)]
    L.seed_everything(seed)
    trainer = _trainer(callbacks, enable_checkpointing=tmp_path is not None)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*callbacks used to create the checkpoint.*")
        warnings.filterwarnings("ignore", message=".*does not have many workers.*")
        trainer.fit(model, datamodule=dm, ckpt_path=ckpt_path)
    return model, tss, trainer


def _assert_same_run(a, b, what):
    (model_a, tss_a, _), (model_b, tss_b, trainer_b) = a, b
    ha, hb = tss_a.history, tss_b.history
    assert hb.epochs.tolist() == list(range(EPOCHS)), what
    assert torch.equal(ha.starts, hb.starts), what  # the clip position of every video in every epoch
    assert torch.equal(tss_a.policy.table.values, tss_b.policy.table.values), what
    for v in ha.scores:
        assert torch.equal(ha.scores[v], hb.scores[v]) and torch.equal(ha.probabilities[v], hb.probabilities[v])
    assert tss_b.metrics == tss_a.metrics, what
    sa, sb = model_a.state_dict(), model_b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), f"{what}: {k}"
    assert trainer_b.global_step == EPOCHS * STEPS, what


@pytest.mark.parametrize("num_workers", [0, 2])
def test_resume_from_any_checkpoint_is_bit_identical(videos, tmp_path, num_workers):
    full = _fit(videos, num_workers, tmp_path)
    model, tss, trainer = full
    assert trainer.global_step == EPOCHS * STEPS
    assert [m["records"] for m in tss.metrics] == [0, 6, 6, 6]
    assert bool((tss.policy.table.values != 0).any())
    if num_workers == 2:  # the same run with 0 workers: augmentation is a function of the clip, not the worker
        ref = _fit(videos, 0)
        _assert_same_run(ref, full, "0 vs 2 workers")
    for name, what in RESUMES:
        path = tmp_path / name
        assert path.exists(), sorted(p.name for p in (tmp_path / name.split("/")[0]).iterdir())
        # another global seed: the run's seed (dropout) comes from the checkpoint
        _assert_same_run(full, _fit(videos, num_workers, ckpt_path=str(path), seed=99), f"resumed from {what}")
    # a data module built with another seed: the checkpoint's plans go on, and a warning says so
    with pytest.warns(RuntimeWarning, match="the checkpoint's clip sampler ran with seed 3, this one is built with 4"):
        resumed = _fit(videos, num_workers, ckpt_path=str(tmp_path / RESUMES[-2][0]), data_seed=4)
    _assert_same_run(full, resumed, "resumed with another data seed")
