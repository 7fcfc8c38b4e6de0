"""Clean scoring for :class:`~lightning_temporal.callbacks.StochasticSoftmaxCallback` (seed §S.1 / Table S.2):
clips scored by the model in eval mode under ``torch.no_grad()``, and the further clip positions a policy asks
for, loaded clean from the training dataset."""
from __future__ import annotations

from contextlib import nullcontext
from typing import Mapping, Optional, Tuple

import torch
from torch import Tensor

from lightning_temporal.modes import eval_mode
from lightning_temporal.sampling.records import logit_summary
from lightning_temporal.sampling.sampler import counter_seed

__all__ = ["batch_field", "check_logits", "clean_logits", "load_clean_clips", "ExtraPositions"]

_EXTRA_STREAM = 0x5C0BE  # the counter that tells the extra positions' generator from the sampler's


def batch_field(batch, key: str) -> Tensor:
    """``batch[key]``, or ``KeyError`` naming what the batch holds."""
    if not isinstance(batch, Mapping) or key not in batch:
        have = sorted(batch.keys()) if isinstance(batch, Mapping) else type(batch).__name__
        raise KeyError(f"StochasticSoftmaxCallback needs batch[{key!r}] (the batch dict of "
                       f"lightning_temporal.data.dataset.collate_clips); the batch has {have}")
    return batch[key]


def check_logits(logits, n: int, where: str) -> Tensor:
    """``logits`` if it is a ``[n, K]`` tensor, else ``ValueError`` naming ``where``."""
    if not torch.is_tensor(logits) or logits.dim() != 2 or logits.shape[0] != n:
        shape = tuple(logits.shape) if torch.is_tensor(logits) else type(logits).__name__
        raise ValueError(f"{where} must be logits [N, K] for the batch's N = {n} clips, got {shape}")
    return logits


def clean_logits(trainer, pl_module, clips: Tensor) -> Tensor:
    """The model's logits ``[N, K]`` of ``clips`` ``[N, C, T, H, W]`` in eval mode, without gradients, under the
    trainer's precision (``trainer`` may be None): ``pl_module.score_clips`` when it has one, else its forward.
    Every submodule gets its own mode back afterwards (a user may keep parts frozen in eval mode)."""
    score_fn = getattr(pl_module, "score_clips", None)
    precision = getattr(trainer, "precision_plugin", None)
    ctx = precision.forward_context() if precision is not None else nullcontext()
    with eval_mode(pl_module), torch.no_grad(), ctx:
        logits = score_fn(clips) if callable(score_fn) else pl_module(clips)
    return check_logits(logits, clips.shape[0], "pl_module.score_clips(clips)")


def load_clean_clips(dataset, video_idx: Tensor, starts: Tensor) -> Tuple[Optional[Tensor], Tensor]:
    """The clean copies of the clips ``(video_idx[i], starts[i])`` from the training dataset (``dataset[(v, s)]
    ["clean"]``, as the loader reads them): ``(clips [M, C, T, H, W] or None, kept int64 [M])``, ``kept`` the
    indices of the clips that decoded (an undecodable one is left out, as in training).

    Decoding is I/O, one clip at a time as a ``DataLoader`` fetches them; the scoring that follows is one batch.
    ``KeyError`` when the dataset gives no clean copy (build it with a clean transform).
    """
    items, kept = [], []
    for i, (v, s) in enumerate(zip(video_idx.tolist(), starts.tolist())):
        item = dataset[(v, s)]
        if not isinstance(item, Mapping):  # a skipped clip (failed to decode)
            continue
        if "clean" not in item:
            raise KeyError("positions_per_video > 1 needs the training dataset's clean copies (item['clean']): "
                           "build the data module with clean clips (TemporalDataModule(clean_clips=True))")
        items.append(item["clean"])
        kept.append(i)
    return (torch.stack(items) if items else None), torch.tensor(kept, dtype=torch.long)


class ExtraPositions:
    """The k - 1 further positions per video a policy has scored each epoch (``policy.positions_per_video`` = k).

    :meth:`starts` draws them once per epoch from a generator seeded by (seed, epoch) through
    ``policy.extra_starts`` (the same on every rank and after a resume); :meth:`score` scores those of a batch's
    videos clean, one batch of ``len(video_idx)`` clips at a time.
    """

    def __init__(self, seed: int) -> None:
        self.seed = seed
        self._cache: Optional[tuple] = None  # (epoch, int64 [V, k - 1])

    def reset(self) -> None:
        self._cache = None

    def starts(self, policy, epoch: int) -> Tensor:
        """int64 ``[V, k - 1]``: the further positions of every video in ``epoch``."""
        if self._cache is None or self._cache[0] != epoch:
            g = torch.Generator().manual_seed(counter_seed(self.seed, epoch, _EXTRA_STREAM))
            self._cache = (epoch, policy.extra_starts(epoch, g).to(torch.int64))
        return self._cache[1]

    def score(self, trainer, pl_module, batch, video_idx: Tensor, ordinal: Tensor, policy, epoch: int):
        """Score the further positions of the batch's videos: ``(video_idx, start, ordinal, (score, predicted,
        margin))`` of the clips that decoded (1-D CPU tensors), or None when there are none."""
        extra = self.starts(policy, epoch)
        k1 = extra.shape[1]
        if k1 == 0 or video_idx.numel() == 0:
            return None
        vid = video_idx.cpu()
        v = vid.repeat_interleave(k1)
        s = extra[vid].reshape(-1)
        ords = ordinal.cpu().repeat_interleave(k1)
        labels = batch_field(batch, "label").cpu().repeat_interleave(k1)
        dataset = getattr(trainer.train_dataloader, "dataset", None)
        if dataset is None:
            raise RuntimeError("positions_per_video > 1 needs the train loader's dataset to read further clips")
        clips, kept = load_clean_clips(dataset, v, s)
        if clips is None:
            return None
        device = batch["clean"].device if "clean" in batch else pl_module.device
        n = max(int(video_idx.numel()), 1)
        logits = torch.cat([clean_logits(trainer, pl_module, clips[i:i + n].to(device)).float().cpu()
                            for i in range(0, clips.shape[0], n)])
        return v[kept], s[kept], ords[kept], logit_summary(logits, labels[kept])
