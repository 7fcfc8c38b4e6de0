"""StochasticSoftmaxCallback under DDP: 2 CPU processes (gloo, ddp_fork) with Lightning, under a hard timeout.

Each rank saves its final tables, its shard of every epoch and the gathered records of every epoch
(tests/tiny_lightning.SaveStateCallback). We check that both ranks end with identical tables, equal to a
single-process policy fed the same records, and that every epoch's shards were disjoint and covered all videos.
Then a 2-process run resumed from a checkpoint written in the middle of an exploitation epoch (it holds both ranks'
records of that epoch) must end with the same tables and clips; resuming it on one process is a clear error.
"""
from __future__ import annotations

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

from lightning_temporal.callbacks.stochastic_softmax import StochasticSoftmaxCallback
from lightning_temporal.sampling.phases import PhaseSchedule
from lightning_temporal.sampling.policies import StochasticSoftmaxPolicy
from tests.hard_timeout import hard_timeout
from tests.tiny_lightning import SaveStateCallback, TinyDataModule, TinyVideoModule, clip_span

V, W, E, EPOCHS = 12, 1, 2, 5  # epochs 0 warm-up, 1-2 exploration, 3-4 exploitation


pytestmark = pytest.mark.usefixtures("one_thread")


def test_ddp_two_ranks_hold_identical_tables_equal_to_single_process(tmp_path):
    L.seed_everything(0)
    dm = TinyDataModule(num_videos=V, batch_size=3, clip_len=4)
    tss = StochasticSoftmaxCallback(gamma_s=1.0, warmup_epochs=W, exploration_epochs=E, seed=3)
    ckpt = ModelCheckpoint(dirpath=tmp_path / "ckpt", filename="{epoch}-{step}", every_n_train_steps=1,
                           save_top_k=-1)
    trainer = L.Trainer(accelerator="cpu", devices=2, strategy="ddp_fork", max_epochs=EPOCHS,
                        callbacks=[tss, SaveStateCallback(str(tmp_path)), ckpt], logger=False,
                        enable_progress_bar=False, enable_model_summary=False)
    with hard_timeout(150, "2-process DDP fit"):
        trainer.fit(TinyVideoModule(), datamodule=dm)

    r0 = torch.load(tmp_path / "rank0.pt", weights_only=False)
    r1 = torch.load(tmp_path / "rank1.pt", weights_only=False)
    assert (r0["rank"], r1["rank"], r0["world_size"]) == (0, 1, 2)

    # identical tables (and everything else of the policy) on both ranks
    t0, t1 = r0["policy"]["table"]["values"], r1["policy"]["table"]["values"]
    assert torch.equal(t0, t1)
    assert torch.equal(r0["policy"]["slot_orders"], r1["policy"]["slot_orders"])
    assert bool((t0 != 0).any())
    assert torch.equal(r0["history_starts"], r1["history_starts"])

    ref = StochasticSoftmaxPolicy(dm.num_positions, clip_span(4, 1), 1.0, PhaseSchedule(W, E), seed=3)
    for e in range(EPOCHS):
        s0, s1 = r0["shards"][e], r1["shards"][e]
        # disjoint shards that together cover every video once
        assert s0.shape == s1.shape == (V // 2, 2)
        assert not set(s0[:, 0].tolist()) & set(s1[:, 0].tolist())
        assert sorted(s0[:, 0].tolist() + s1[:, 0].tolist()) == list(range(V))
        both = torch.cat([s0, s1])
        starts = torch.full((V,), -1, dtype=torch.int32)
        starts[both[:, 0]] = both[:, 1].to(torch.int32)
        assert torch.equal(r0["history_starts"][e], starts)
        rec0, rec1 = r0["records"][e], r1["records"][e]
        if e < W:
            assert rec0 == {} and rec1 == {}
            continue
        for k in ("video_idx", "start", "score", "rank"):
            assert torch.equal(rec0[k], rec1[k]), k
        # the records are the clips the two ranks trained, dealt back in global-plan order: plan[r::2]
        assert torch.equal(rec0["video_idx"][0::2], s0[:, 0]) and torch.equal(rec0["video_idx"][1::2], s1[:, 0])
        assert torch.equal(rec0["start"][0::2], s0[:, 1]) and torch.equal(rec0["start"][1::2], s1[:, 1])
        assert rec0["rank"].tolist() == [0, 1] * (V // 2)
        assert torch.isfinite(rec0["score"]).all()
        ref.update(e, rec0["video_idx"], rec0["start"], rec0["score"])
    # a single-process policy fed the same gathered records ends with the same tables, bit for bit
    assert torch.equal(ref.table.values, t0)

    # resume in the middle of exploitation epoch 3 (after its first of two steps): the checkpoint holds both ranks'
    # records of that epoch, the loader's position; the resumed 2-process run ends where the uninterrupted one did
    path = tmp_path / "ckpt" / "epoch=3-step=7.ckpt"
    pending = torch.load(path, weights_only=False)["callbacks"]["StochasticSoftmaxCallback"]["pending"]
    assert pending["epoch"] == 3 and pending["world_size"] == 2
    assert sorted(pending["scored"]["rank"].tolist()) == [0, 0, 0, 1, 1, 1]
    out = tmp_path / "resumed"
    out.mkdir()
    trainer = L.Trainer(accelerator="cpu", devices=2, strategy="ddp_fork", max_epochs=EPOCHS,
                        callbacks=[StochasticSoftmaxCallback(gamma_s=1.0, warmup_epochs=W, exploration_epochs=E,
                                                             seed=3), SaveStateCallback(str(out))], logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
    with hard_timeout(150, "2-process DDP resume"):
        trainer.fit(TinyVideoModule(), datamodule=TinyDataModule(num_videos=V, batch_size=3, clip_len=4),
                    ckpt_path=str(path))
    b0 = torch.load(out / "rank0.pt", weights_only=False)
    assert torch.equal(b0["policy"]["table"]["values"], t0)
    assert torch.equal(b0["history_starts"], r0["history_starts"])
    assert torch.equal(b0["shards"][3], r0["shards"][3][3:])  # only the rest of epoch 3 was trained again
    assert all(torch.equal(b0["params"][k], r0["params"][k]) for k in r0["params"])

    # the records of a mid-epoch checkpoint belong to the ranks that trained them: not resumable on one process
    def one_process(path):
        tss = StochasticSoftmaxCallback(gamma_s=1.0, warmup_epochs=W, exploration_epochs=E, seed=3)
        L.Trainer(accelerator="cpu", devices=1, max_epochs=EPOCHS, logger=False, enable_checkpointing=False,
                  enable_progress_bar=False, enable_model_summary=False, callbacks=[tss]).fit(
            TinyVideoModule(), datamodule=TinyDataModule(num_videos=V, batch_size=3, clip_len=4), ckpt_path=str(path))
        return tss

    with pytest.raises(ValueError, match=r"written in the middle of epoch 3 by 2 rank\(s\) with batch_size 3; this "
                                         r"run has 1 rank\(s\)"):
        one_process(path)
    # one written at the end of an epoch resumes on any number of processes
    tss = one_process(tmp_path / "ckpt" / "epoch=2-step=6.ckpt")
    assert tss.history.epochs.tolist() == list(range(EPOCHS))
    assert torch.equal(tss.history.starts[:3], r0["history_starts"][:3])
