"""Exact resume: stop after epoch k, resume from its checkpoint, get the same later clips and final tables.

Run A trains 10 epochs (warm-up 2, exploration 3, exploitation 5) and saves a checkpoint at every training
epoch end (ModelCheckpoint). Run B is built from scratch (new module, data module, callback, Trainer) and resumes
from A's checkpoint of epoch 4 (5 epochs done) to epoch 10. The sampled start of every video in every epoch and
the final tables must be bit-identical. A control run C resumes the same way but with a callback that ignores
its checkpoint state: its clips must differ, which shows the comparison can fail.
"""
from __future__ import annotations

import lightning as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

from lightning_temporal.callbacks.stochastic_softmax import StochasticSoftmaxCallback
from tests.tiny_lightning import TinyDataModule, TinyVideoModule

W, E, EPOCHS, STOP = 2, 3, 10, 5


def _callback(cls=StochasticSoftmaxCallback):
    return cls(gamma_s=3.0, warmup_epochs=W, exploration_epochs=E, seed=7, track_videos=[1, 4])


def _trainer(callbacks, **kw):
    return L.Trainer(accelerator="cpu", devices=1, max_epochs=EPOCHS, callbacks=callbacks, logger=False,
                     enable_progress_bar=False, enable_model_summary=False, deterministic=True, **kw)


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
