"""The sampling history of :class:`~lightning_temporal.callbacks.StochasticSoftmaxCallback`: what the sampler did,
epoch by epoch (the sampling maps of seed Fig. S.1, S.3-S.10)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import torch
from torch import Tensor

__all__ = ["SamplingHistory", "HistoryBuffer"]


@dataclass
class SamplingHistory:
    """What the sampler did, epoch by epoch (for the sampling maps of seed Fig. S.1, S.3-S.10).

    Attributes:
        epochs: int64 ``[E]``, the finished training epochs, in order.
        phases: int64 ``[E]``, the phase code of each epoch (:data:`~lightning_temporal.sampling.PHASE_CODES`).
        columns: int64 ``[C]``, the video index of each column of ``starts`` (all videos, or the tracked ones
            with ``keep_history="tracked"``).
        starts: int32 ``[E, C]``, the start (frame index) each video was trained on in each epoch; -1 where the
            video was not trained that epoch (its clip failed to decode, or ``limit_train_batches`` cut the epoch).
        tracked: int64 ``[K]``, the tracked videos.
        scores: ``{video: float32 [E, N_v]}``, each tracked video's table (score estimates w, REINFORCE logits,
            or the clip prior) after the epoch's update.
        probabilities: ``{video: float32 [E, N_v]}``, the start distribution each tracked video was drawn from in
            each epoch (uniform in warm-up, one-hot in exploration, softmax(γ_s·w) of the previous epoch's table
            in exploitation).
    """

    epochs: Tensor
    phases: Tensor
    columns: Tensor
    starts: Tensor
    tracked: Tensor
    scores: dict = field(default_factory=dict)
    probabilities: dict = field(default_factory=dict)

    def starts_of(self, video: int) -> Tensor:
        """The sampled start of one video for every epoch: int32 ``[E]`` (-1 = not trained that epoch)."""
        col = (self.columns == int(video)).nonzero().flatten()
        if col.numel() == 0:
            raise KeyError(f"video {video} is not in the history (kept videos: {self.columns.tolist()[:20]}...); "
                           "use keep_history='all' or add it to track_videos")
        return self.starts[:, int(col[0])]


class HistoryBuffer:
    """The growing history: one row per finished epoch (``keep_all``: every video's start, else the tracked
    videos'), and the tracked videos' tables and distributions."""

    def __init__(self, keep_all: bool) -> None:
        self.keep_all = keep_all
        self.tracked: Optional[Tensor] = None
        self.num_videos: Optional[int] = None
        self.epochs: list = []
        self.phases: list = []
        self.starts: list = []
        self.scores: dict = {}
        self.probs: dict = {}

    def append(self, epoch: int, phase_code: int, row: Tensor, tables: dict, probs: dict) -> None:
        """Add epoch ``epoch`` (``row`` int32 [V], ``tables`` / ``probs`` {tracked video: float32 [N_v]}); the
        same epoch again (a resume from a mid-epoch checkpoint) replaces it and the epochs after it."""
        if self.epochs and self.epochs[-1] >= epoch:
            k = next(i for i, e in enumerate(self.epochs) if e >= epoch)
            del self.epochs[k:], self.phases[k:], self.starts[k:]
            for d in (self.scores, self.probs):
                for v in d:
                    del d[v][k:]
        self.epochs.append(epoch)
        self.phases.append(phase_code)
        self.starts.append(row if self.keep_all else row[self.tracked])
        for v in self.tracked.tolist():  # a handful of tracked videos, not all videos
            self.scores.setdefault(v, []).append(tables[v])
            self.probs.setdefault(v, []).append(probs[v])

    def view(self) -> SamplingHistory:
        cols = (torch.arange(self.num_videos) if (self.keep_all and self.num_videos is not None)
                else self.tracked)
        if cols is None:
            cols = torch.zeros(0, dtype=torch.long)
        starts = torch.stack(self.starts) if self.starts else torch.zeros(0, cols.numel(), dtype=torch.int32)
        tracked = self.tracked if self.tracked is not None else torch.zeros(0, dtype=torch.long)
        return SamplingHistory(
            epochs=torch.tensor(self.epochs, dtype=torch.long), phases=torch.tensor(self.phases, dtype=torch.long),
            columns=cols.clone(), starts=starts, tracked=tracked.clone(),
            scores={v: torch.stack(s) for v, s in self.scores.items() if s},
            probabilities={v: torch.stack(s) for v, s in self.probs.items() if s})

    def state_dict(self) -> dict:
        h = self.view()
        return {"epochs": h.epochs, "phases": h.phases, "columns": h.columns, "starts": h.starts,
                "tracked": h.tracked, "scores": h.scores, "probabilities": h.probabilities}

    def load_state_dict(self, h: dict, num_videos: int) -> None:
        self.epochs = h["epochs"].tolist()
        self.phases = h["phases"].tolist()
        starts = h["starts"]
        if self.keep_all and starts.shape[1] != num_videos:
            raise ValueError("the checkpoint kept the history of the tracked videos only; resume with "
                             "keep_history='tracked'")
        if not self.keep_all and starts.shape[1] == num_videos and self.tracked.numel() != num_videos:
            starts = starts[:, self.tracked]
        self.starts = list(starts.unbind(0))
        self.scores = {int(v): list(s.unbind(0)) for v, s in h["scores"].items()}
        self.probs = {int(v): list(s.unbind(0)) for v, s in h["probabilities"].items()}
