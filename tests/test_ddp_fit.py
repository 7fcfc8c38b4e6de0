"""A 2-process CPU DDP fit (gloo) of VideoClassifier + TemporalDataModule + StochasticSoftmaxCallback on real
video files: both ranks hold identical score tables, the shards of every epoch are disjoint and cover the
training set, and the validation metrics (synced by torchmetrics) equal a single-process evaluation."""
import os

import pytest
import torch
from lightning import Callback, Trainer

from lightning_temporal import StochasticSoftmaxCallback, TemporalDataModule, VideoClassifier
from lightning_temporal.data.synthetic import generate_dataset
from tests.hard_timeout import hard_timeout
from tests.synth import CROP


pytestmark = pytest.mark.usefixtures("one_thread")


class SaveRankState(Callback):
    """Writes, per rank, the clips it trained on and the final table."""

    def __init__(self, out_dir):
        self.out_dir = out_dir
        self.seen = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.seen.append((trainer.current_epoch, batch["video_idx"].clone(), batch["start"].clone()))

    def on_validation_end(self, trainer, pl_module):
        # logged metrics are reduced across ranks; keep what each rank ends with
        self.val = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")}

    def on_fit_end(self, trainer, pl_module):
        cb = next(c for c in trainer.callbacks if isinstance(c, StochasticSoftmaxCallback))
        torch.save({"values": cb.policy.table.values.clone(), "seen": self.seen, "val": getattr(self, "val", {}),
                    "state": pl_module.state_dict()},
                   os.path.join(self.out_dir, f"rank{trainer.global_rank}.pt"))


def _dm(paths):
    return TemporalDataModule(train_manifest=paths["train"], val_manifest=paths["val"], clip_len=8, batch_size=2,
                              eval_batch_size=2, eval_clip_stride=4, progress=False, seed=3, **CROP)


def test_two_process_ddp_fit_with_callback(tmp_path):
    paths = generate_dataset(str(tmp_path / "data"), num_train=9, num_val=5, num_test=1, size=32, min_frames=20,
                             max_frames=30, progress=False, num_workers=0)
    torch.manual_seed(0)
    model = VideoClassifier("simple3d", num_classes=4, report_gamma_p=(0.0,))
    callbacks = [StochasticSoftmaxCallback(gamma_s=1.0, warmup_epochs=1, exploration_epochs=2, track_videos=2),
                 SaveRankState(str(tmp_path))]
    trainer = Trainer(accelerator="cpu", devices=2, strategy="ddp_fork", max_epochs=4, logger=False,
                      enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                      num_sanity_val_steps=0, check_val_every_n_epoch=4, callbacks=callbacks,
                      default_root_dir=str(tmp_path))
    with hard_timeout(150, "2-process DDP fit"):
        trainer.fit(model, datamodule=_dm(paths))
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in (0, 1))
    # identical tables on both ranks, written by exploration and exploitation (not all zero)
    assert torch.equal(r0["values"], r1["values"]) and bool((r0["values"] != 0).any())
    # DDP keeps the model replicas identical
    assert all(torch.equal(r0["state"][k], r1["state"][k]) for k in r0["state"])
    for epoch in range(4):
        v0 = torch.cat([v for e, v, _ in r0["seen"] if e == epoch])
        v1 = torch.cat([v for e, v, _ in r1["seen"] if e == epoch])
        # 9 videos on 2 ranks: 5 + 5 with one padded repeat; together they cover every video
        assert len(v0) == len(v1) == 5
        assert set(v0.tolist()) | set(v1.tolist()) == set(range(9))
        assert len(set(v0.tolist()) & set(v1.tolist())) <= 1
    # validation metrics: each rank evaluated a disjoint part of the videos, synced they equal one process
    single = Trainer(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False,
                     enable_model_summary=False)
    model.load_state_dict(r0["state"])
    expected = single.validate(model, datamodule=_dm(paths), verbose=False)[0]
    for key in ("val/top1", "val/mean_class_acc", "val/gp0/top1"):
        assert r0["val"][key] == pytest.approx(expected[key]) and r1["val"][key] == pytest.approx(expected[key])
