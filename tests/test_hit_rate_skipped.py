"""The TSS hit rate counts only the videos that trained a clip (``StochasticSoftmaxCallback.hit_rate``): a video
skipped in an epoch (its clip failed to decode: start -1 in the history) is neither a hit nor a miss, even when
its event window is known.

Independent reference: the clips each batch really carried, seen from a separate callback, against the manifest's
event windows, counted one by one.
"""
from __future__ import annotations

import lightning as L
import pytest
import torch

from lightning_temporal import StochasticSoftmaxCallback
from lightning_temporal.sampling.sampler import ClipLoader
from tests.tiny_lightning import TinyDataModule, TinyVideoModule, collate_tiny

pytestmark = pytest.mark.usefixtures("one_thread")

SKIP = (0, 5)  # these videos "fail to decode" in every epoch


def collate_skipping(items):
    """``collate_tiny``, except that the clips of the videos in ``SKIP`` are left out of the batch and listed in
    ``"skipped"``, as ``collate_clips`` does for a video that fails to decode."""
    kept = [it for it in items if it["video_idx"] not in SKIP]
    if not kept:  # the tiny collate needs one clip; the videos are spread so that every batch keeps one
        raise AssertionError("a batch of skipped videos only; change SKIP or the batch size")
    batch = collate_tiny(kept)
    batch["skipped"] = torch.tensor([it["video_idx"] for it in items if it["video_idx"] in SKIP], dtype=torch.long)
    batch["skip_errors"] = [f"video {it['video_idx']}: cannot decode" for it in items if it["video_idx"] in SKIP]
    return batch


class SkippingDataModule(TinyDataModule):
    def train_dataloader(self):
        return ClipLoader(self.dataset, batch_size=self.batch_size, sampler=self.clip_sampler,
                          collate_fn=collate_skipping, num_workers=0)


class TrainedClips(L.Callback):
    """The ``(video_idx, start)`` of every clip each training epoch's batches carried."""

    def __init__(self):
        self.clips = {}

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        pairs = zip(batch["video_idx"].tolist(), batch["start"].tolist())
        self.clips.setdefault(trainer.current_epoch, []).extend(pairs)


def _hits(clips, events, span):
    """(clips overlapping their video's event window, clips), counted one by one."""
    hits = [t < int(events[v, 1]) and t + span > int(events[v, 0]) for v, t in clips]
    return sum(hits), len(hits)


@pytest.mark.parametrize("mode", ["tss", "uniform"])
def test_a_skipped_video_is_not_counted_as_a_miss(mode):
    V = 12
    dm = SkippingDataModule(num_videos=V, batch_size=4, events=True)
    events = dm.train_manifest.events
    assert bool((events[list(SKIP)] >= 0).all())  # the skipped videos' event windows are known
    cb = StochasticSoftmaxCallback(mode=mode, gamma_s=1.0, warmup_epochs=1, exploration_epochs=2, track_videos=2)
    seen = TrainedClips()
    trainer = L.Trainer(max_epochs=4, callbacks=[cb, seen], accelerator="cpu", devices=1, logger=False,
                        enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False)
    trainer.fit(TinyVideoModule(), datamodule=dm)

    starts = cb.history.starts
    assert starts.shape == (4, V)
    misses_if_counted = 0
    for epoch, m in enumerate(cb.metrics):
        clips = seen.clips[epoch]
        assert sorted(v for v, _ in clips) == [v for v in range(V) if v not in SKIP]
        assert [int(starts[epoch, v]) for v in SKIP] == [-1] * len(SKIP)  # skipped: no start this epoch
        hits, trained = _hits(clips, events, cb.span)
        assert m["hit_rate"] == pytest.approx(hits / trained, abs=1e-12), epoch
        # the same figure from the public method, given the epoch's starts (-1 for the skipped videos)
        assert cb.hit_rate(starts[epoch]) == pytest.approx(hits / trained, abs=1e-12)
        misses_if_counted += hits / trained != pytest.approx(hits / V, abs=1e-12)
    assert misses_if_counted > 0  # the test could tell: counting the skipped videos as misses changes the rate
    assert float(trainer.callback_metrics["tss/hit_rate"]) == pytest.approx(cb.metrics[-1]["hit_rate"], rel=1e-6)


def test_hit_rate_of_given_starts_leaves_out_untrained_videos():
    """``hit_rate`` on hand-made starts: -1 (not trained) is left out, and so is a video whose event window is
    unknown (-1 in the manifest); all -1 gives None."""
    dm = TinyDataModule(num_videos=7, batch_size=3, events=True)
    dm.train_manifest.events[6] = -1  # video 6: no event window
    cb = StochasticSoftmaxCallback(mode="uniform", track_videos=1)
    L.Trainer(max_epochs=1, callbacks=[cb], accelerator="cpu", devices=1, logger=False, enable_progress_bar=False,
              enable_model_summary=False, enable_checkpointing=False).fit(TinyVideoModule(), datamodule=dm)
    events, span = dm.train_manifest.events, cb.span
    inside = events[:, 0].clone()          # a start inside each event window: a hit
    far = (events[:, 1]).clone()           # a start at the window's end: a miss
    starts = torch.stack([inside[0], far[1], torch.tensor(-1), inside[3], torch.tensor(-1), far[5], torch.tensor(0)])
    clips = [(v, int(t)) for v, t in enumerate(starts.tolist()) if t >= 0 and v != 6]
    hits, trained = _hits(clips, events, span)
    assert (hits, trained) == (2, 4)
    assert cb.hit_rate(starts) == pytest.approx(0.5)
    assert cb.hit_rate(torch.full((7,), -1)) is None
