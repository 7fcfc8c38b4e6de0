"""A clip-position policy written outside the package, as a researcher would: used by tests/test_policy_contract.py
through a YAML recipe (``class_path`` + ``init_args``), with no edit of lightning_temporal.

``GatedSoftmax`` keeps uniform starts until its clean clips' accuracy (the records' margins) reaches
``open_at``, then draws from (1 - epsilon) softmax(gamma_s * w) + epsilon uniform; it scores
``positions_per_video`` clips per video per epoch and keeps every record it was given (for the tests).
"""
from typing import Optional

import torch

from lightning_temporal.sampling import ClipRecords, Phase, SamplingPolicy, ScoreTable


class GatedSoftmax(SamplingPolicy):
    learns = True

    def __init__(self, num_positions, clip_len: int, gamma_s: float = 1.0, open_at: float = 0.0,
                 epsilon: float = 0.5, positions_per_video: int = 2, seed: int = 0):
        super().__init__(num_positions, ScoreTable(num_positions, clip_len), gamma_s)
        self.open_at, self.epsilon, self.positions_per_video = open_at, epsilon, positions_per_video
        self.open_from: Optional[int] = None
        self.seen_records: list = []   # (epoch, ClipRecords) of every update

    def phase(self, epoch: int) -> Phase:
        return Phase.EXPLOITATION if self.open_from is not None and epoch >= self.open_from else Phase.WARMUP

    def records_scores(self, epoch: int) -> bool:
        return True

    def starts(self, epoch, generator=None):
        if self.phase(epoch) is Phase.WARMUP:
            return super().starts(epoch, generator)
        floor = torch.rand(self.num_videos, generator=generator) < self.epsilon
        soft = self.table.sample(self.temperature, generator)
        flat = (torch.rand(self.num_videos, generator=generator) * self.num_positions).long()
        return torch.where(floor, flat, soft)

    def learn(self, epoch: int, records: ClipRecords) -> dict:
        self.seen_records.append((epoch, records))
        counts = self.table.interpolate(records.video_idx, records.start, records.score, checked=True)
        if self.open_from is None and float(records.correct.float().mean()) >= self.open_at:
            self.open_from = epoch + 1
        return counts

    def state_dict(self) -> dict:
        return {**super().state_dict(), "open_from": -1 if self.open_from is None else self.open_from}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.open_from = None if state["open_from"] < 0 else int(state["open_from"])
