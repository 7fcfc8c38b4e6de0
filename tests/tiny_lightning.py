"""Tiny in-memory Lightning pieces for the callback tests (no video I/O).

Everything here is defined at module level so that ``ddp_spawn`` can pickle it.

* :class:`TinyClipDataset`: one fixed random tensor ``[3, L, S, S]`` per video (a class-dependent pattern is
  added inside the video's event window so that a model can learn where the class shows); items are the
  clip dict of the package's datasets (``clip``, ``label``, ``video_idx``, ``start``, optional ``clean``) for a
  ``(video_idx, start)`` key.
* :func:`collate_tiny`: the batch dict of the package's collate (those keys stacked, ``"skipped"`` empty,
  ``"skip_errors"`` []).
* :class:`TinyManifest`: the part of ``VideoManifest`` the callback reads (``events`` int64 [V, 2] with -1
  where unknown, ``num_frames``, ``labels``, ``load_frame_scores(i)``).
* :class:`TinyDataModule`: builds the dataset and a ``ClipSampler`` in ``setup`` with ``num_replicas``/``rank``
  taken from ``self.trainer``; exposes ``clip_sampler``, ``train_manifest``, ``clip_len`` and ``stride``.
* :class:`TinyVideoModule`: 3D conv + linear with what the callback calls (``score_clips``; ``training_step`` returns
  ``{"loss", "logits"}``), optional dropout/BatchNorm, optional call log.
* :class:`SaveStateCallback`: used by the DDP test: every rank saves its callback's table, its shard of each
  epoch and the gathered records of each epoch to ``out_dir/rank{r}.pt`` at the end of fit.
"""
from __future__ import annotations

import os
from typing import Optional, Sequence

import lightning as L
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from lightning_temporal.sampling.sampler import ClipLoader, ClipSampler


def clip_span(clip_len: int, stride: int) -> int:
    return (clip_len - 1) * stride + 1


class TinyClipDataset(Dataset):
    """Videos held in memory; ``dataset[(v, t)]`` is the clip dict of clip ``t`` of video ``v``.

    The "augmentation" is deterministic (a horizontal flip of every other clip and a small offset), so that
    runs are reproducible without any global RNG: the exact-resume test relies on it.
    """

    def __init__(self, num_frames: Sequence[int], labels: Sequence[int], events: torch.Tensor, clip_len: int,
                 stride: int = 1, size: int = 6, clean: bool = True, seed: int = 0):
        g = torch.Generator().manual_seed(seed)
        self.clip_len, self.stride, self.clean = clip_len, stride, clean
        self.labels = torch.as_tensor(labels, dtype=torch.long)
        self.videos = []
        for v, n in enumerate(num_frames):  # built once at set-up, not a hot path
            x = 0.5 * torch.rand(3, int(n), size, size, generator=g)
            es, ee = int(events[v, 0]), int(events[v, 1])
            if es >= 0:
                x[int(self.labels[v]) % 3, es:ee] += 1.0  # the class shows only in the event window
            self.videos.append(x)

    def __len__(self) -> int:
        return len(self.videos)

    def __getitem__(self, key):
        v, t = int(key[0]), int(key[1])
        video = self.videos[v]
        idx = (t + torch.arange(self.clip_len) * self.stride).clamp(max=video.shape[1] - 1)  # pad with last frame
        clean = video[:, idx]
        aug = clean.flip(-1) if (v + t) % 2 else clean
        aug = aug + 0.05
        item = {"clip": aug, "label": int(self.labels[v]), "video_idx": v, "start": t}
        if self.clean:
            item["clean"] = clean
        return item


def collate_tiny(items):
    batch = {
        "clip": torch.stack([it["clip"] for it in items]),
        "label": torch.tensor([it["label"] for it in items], dtype=torch.long),
        "video_idx": torch.tensor([it["video_idx"] for it in items], dtype=torch.long),
        "start": torch.tensor([it["start"] for it in items], dtype=torch.long),
        "skipped": torch.zeros(0, dtype=torch.long),
        "skip_errors": [],
    }
    if "clean" in items[0]:
        batch["clean"] = torch.stack([it["clean"] for it in items])
    return batch


class TinyManifest:
    """Per-video metadata in the shape of ``VideoManifest`` (the attributes the callback reads)."""

    def __init__(self, num_frames: torch.Tensor, labels: torch.Tensor, events: torch.Tensor,
                 frame_scores: Optional[list] = None):
        self.num_frames = num_frames
        self.labels = labels
        self.events = events
        self._frame_scores = frame_scores

    def __len__(self) -> int:
        return int(self.num_frames.numel())

    def load_frame_scores(self, i: int):
        return None if self._frame_scores is None else self._frame_scores[i]


class TinyDataModule(L.LightningDataModule):
    """A data module exposing ``clip_sampler`` and ``train_manifest``, as ``StochasticSoftmaxCallback`` needs."""

    def __init__(self, num_videos: int = 12, min_frames: int = 8, max_frames: int = 24, clip_len: int = 4,
                 stride: int = 1, size: int = 6, num_classes: int = 3, batch_size: int = 4, clean: bool = True,
                 events: bool = True, frame_scores: bool = False, seed: int = 0, sampler_seed: int = 0,
                 resumable: bool = True):
        super().__init__()
        self.resumable = resumable  # a ClipLoader (saves its position in the epoch) or a plain DataLoader
        self.num_videos, self.clip_len, self.stride = num_videos, clip_len, stride
        self.size, self.num_classes, self.batch_size = size, num_classes, batch_size
        self.clean, self.seed, self.sampler_seed = clean, seed, sampler_seed
        g = torch.Generator().manual_seed(seed + 1)
        num_frames = torch.randint(min_frames, max_frames + 1, (num_videos,), generator=g)
        labels = torch.arange(num_videos) % num_classes
        if events:
            length = (num_frames // 4).clamp(min=1)
            es = (torch.rand(num_videos, generator=g) * (num_frames - length + 1)).long()
            ev = torch.stack([es, es + length], 1)
        else:
            ev = torch.full((num_videos, 2), -1, dtype=torch.long)
        scores = None
        if frame_scores:  # prior: 1 inside the event window, 0 elsewhere
            t = [torch.arange(int(n)) for n in num_frames]
            scores = [((x >= ev[v, 0]) & (x < ev[v, 1])).float() for v, x in enumerate(t)]
        self.train_manifest = TinyManifest(num_frames, labels, ev, scores)
        span = clip_span(clip_len, stride)
        self.num_positions = (num_frames - span + 1).clamp(min=1)
        self.dataset: Optional[TinyClipDataset] = None
        self.clip_sampler: Optional[ClipSampler] = None

    def setup(self, stage: str) -> None:
        if self.dataset is None:
            m = self.train_manifest
            self.dataset = TinyClipDataset(m.num_frames.tolist(), m.labels, m.events, self.clip_len, self.stride,
                                           self.size, self.clean, self.seed)
        world = self.trainer.world_size if self.trainer is not None else 1
        rank = self.trainer.global_rank if self.trainer is not None else 0
        if self.clip_sampler is None:
            self.clip_sampler = ClipSampler(self.num_positions, seed=self.sampler_seed, num_replicas=world, rank=rank)
        self.clip_sampler.num_replicas, self.clip_sampler.rank = world, rank

    def train_dataloader(self):
        cls = ClipLoader if self.resumable else DataLoader
        return cls(self.dataset, batch_size=self.batch_size, sampler=self.clip_sampler, collate_fn=collate_tiny,
                   num_workers=0)


class TinyVideoModule(L.LightningModule):
    """3D conv + linear classifier with ``score_clips`` and a ``training_step`` returning ``{"loss", "logits"}``
    (deterministic unless ``dropout > 0``)."""

    def __init__(self, num_classes: int = 3, channels: int = 4, lr: float = 0.1, dropout: float = 0.0,
                 batchnorm: bool = False, record: bool = False, seed: int = 0):
        super().__init__()
        torch.manual_seed(seed)  # same weights whatever the global RNG did before
        self.conv = nn.Conv3d(3, channels, kernel_size=3, padding=1)
        self.bn = nn.BatchNorm3d(channels) if batchnorm else nn.Identity()
        self.drop = nn.Dropout(dropout)
        self.fc = nn.Linear(channels, num_classes)
        self.lr = lr
        self.record = record
        self.calls: list = []
        self.train_logits: list = []

    def forward(self, x):  # x: N, 3, T, H, W -> logits N, K
        h = torch.relu(self.bn(self.conv(x)))
        h = h.mean(dim=(2, 3, 4))  # N, C
        return self.fc(self.drop(h))

    def _note(self, what: str, batch_size: int) -> None:
        if self.record:
            modes = {name: m.training for name, m in self.named_modules()}
            self.calls.append((what, modes, torch.is_grad_enabled(), batch_size, self.trainer.global_step))

    def score_clips(self, clips):
        self._note("score", clips.shape[0])
        return self(clips)

    def training_step(self, batch, batch_idx):
        self._note("train", batch["clip"].shape[0])
        logits = self(batch["clip"])
        loss = nn.functional.cross_entropy(logits, batch["label"])
        if self.record:
            self.train_logits.append((batch["video_idx"].clone(), batch["start"].clone(),
                                      batch["label"].clone(), logits.detach().clone()))
        return {"loss": loss, "logits": logits.detach()}

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=self.lr)


class SaveStateCallback(L.Callback):
    """Saves, on every rank, what the DDP test compares (list it after the StochasticSoftmaxCallback)."""

    def __init__(self, out_dir: str):
        self.out_dir = out_dir
        self.shards: dict = {}
        self.records: dict = {}

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        e = trainer.current_epoch
        self.shards.setdefault(e, []).append(torch.stack([batch["video_idx"], batch["start"]], 1))

    def on_train_epoch_end(self, trainer, pl_module):
        tss = next(cb for cb in trainer.callbacks if type(cb).__name__ == "StochasticSoftmaxCallback")
        self.records[trainer.current_epoch] = {k: v.clone() for k, v in tss.last_records.items()}

    def on_fit_end(self, trainer, pl_module):
        tss = next(cb for cb in trainer.callbacks if type(cb).__name__ == "StochasticSoftmaxCallback")
        torch.save({
            "rank": trainer.global_rank,
            "world_size": trainer.world_size,
            "policy": tss.policy.state_dict(),
            "shards": {e: torch.cat(s) for e, s in self.shards.items()},
            "records": self.records,
            "history_starts": tss.history.starts.clone(),
            "params": {k: p.detach().clone() for k, p in pl_module.named_parameters()},
        }, os.path.join(self.out_dir, f"rank{trainer.global_rank}.pt"))
