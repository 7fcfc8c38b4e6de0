"""``BootstrapPolicy``: Temporal Stochastic Softmax that builds its tables while the model learns to score clips
and starts exploiting them when the data say the scores mean something.

The seed's TSS (:class:`~lightning_temporal.sampling.policies.StochasticSoftmaxPolicy`) fixes its phases by the
epoch: W warm-up epochs, E exploration epochs on a grid, then softmax sampling with one scored clip per video per
epoch. On data where the model learns late, the exploration writes the scores of an untrained model and
exploitation then revisits mostly where those happened to be high (supplementary §S.1 notes that the phases
"require more attention in future work"). This policy changes three things:

1. **k scored positions per video per epoch** (``positions_per_video``): the trained clip and k - 1 uniformly
   drawn positions, all scored clean without gradients by the callback and written with seed Eq. S.2 (a video's
   first record fills its whole table, so unvisited positions do not sit at 0);
2. **a data-driven start of exploitation**: uniform starts until the clean clips' accuracy (margin > 0) is above
   chance, 1/C, by ``z`` binomial standard errors, sqrt(c (1 - c) / R) over the epoch's R records, in ``patience``
   consecutive epochs (one lucky epoch does not open it); exploitation starts with the next epoch and stays;
3. **a floor of uniform**: in exploitation t ~ (1 - ε) softmax(γ_s w̃) + ε Uniform{0 … N - 1};
4. **scale-free scores** (``normalise=True``): w̃ is each video's table standardised, (w - mean_v) / std_v, so
   the softmax focuses as soon as the scores rank the positions, however small the logits still are (early in
   training the target logits of all clips differ by a fraction of a unit, and softmax(γ_s w) with the seed's
   γ_s = 1 is then close to uniform). ``normalise=False``: w̃ = w.

Its phases are decided from data, so ``phase_of`` returns None and :meth:`BootstrapPolicy.phase` answers from the
learned state (the callback logs that phase). Pure torch: no Lightning.
"""
from __future__ import annotations

import math
from typing import Optional

import torch
from torch import Tensor

from lightning_temporal.checks import check_instance, check_int, check_number
from lightning_temporal.sampling.phases import Phase, PhaseSchedule, check_epoch
from lightning_temporal.sampling.policy import SamplingPolicy, uniform_starts
from lightning_temporal.sampling.records import ClipRecords, record_occurrence
from lightning_temporal.sampling.segments import IntsLike
from lightning_temporal.sampling.table import ScoreTable, check_temperature

__all__ = ["BootstrapPolicy"]


class BootstrapPolicy(SamplingPolicy):
    """TSS with k clean-scored positions per video per epoch, a data-driven start of exploitation and a floor ε of
    uniform (see the module docstring).

    Example:
        >>> import torch
        >>> p = BootstrapPolicy([40, 30], clip_len=4, num_classes=2, positions_per_video=3, patience=1)
        >>> p.phase(0).value, p.extra_starts(0, torch.Generator().manual_seed(0)).shape
        ('warmup', torch.Size([2, 2]))
        >>> _ = p.update(0, torch.tensor([0, 1]), torch.tensor([5, 7]), torch.tensor([2.0, 1.0]),
        ...              predicted=torch.tensor([0, 1]), margin=torch.tensor([1.0, 0.5]))
        >>> p.phase(1).value, p.threshold(2) > 1   # 2 of 2 right is not above 0.5 + 2 s.e. with 2 records
        ('warmup', True)

    Args:
        num_positions: N_v per video (ints >= 1), [V].
        clip_len: F (the clip's span in frames), the reach of Eq. S.2.
        gamma_s: γ_s >= 0 of the exploitation softmax.
        num_classes: C >= 2, for the chance level 1/C of the gate (the callback supplies the model's).
        positions_per_video: k >= 1 clean-scored positions per video per epoch (the trained one and k - 1 uniform).
        epsilon: ε in [0, 1], the floor of uniform in exploitation (0 = pure softmax, 1 = uniform).
        patience: consecutive epochs above chance before exploitation starts (>= 1).
        z: standard errors above chance that count as above (>= 0).
        min_warmup_epochs: exploitation never starts before this epoch (>= 0).
        normalise: draw from each video's standardised table (see the module docstring); False: the raw table.
        schedule, seed: accepted for the constructor signature shared with the other TSS policies (the callback
            gives them); the phases here come from data, and the draws from the sampler's generator.
    """

    learns = True

    def __init__(self, num_positions: IntsLike, clip_len: int, gamma_s: float = 1.0,
                 num_classes: Optional[int] = None, positions_per_video: int = 3, epsilon: float = 0.1,
                 patience: int = 2, z: float = 2.0, min_warmup_epochs: int = 1, normalise: bool = True,
                 schedule: Optional[PhaseSchedule] = None, seed: int = 0):
        if num_classes is None:
            raise ValueError("BootstrapPolicy needs num_classes (C >= 2) for the chance level 1/C of its gate; the "
                             "callback gives the model's num_classes, or pass num_classes=")
        self.num_classes = check_int("num_classes", num_classes, minimum=2)
        self.positions_per_video = check_int("positions_per_video", positions_per_video, minimum=1,
                                             hint="clean-scored positions per video per epoch, the trained one included")
        self.epsilon = check_number("epsilon", epsilon, minimum=0, maximum=1, hint="the floor of uniform")
        self.patience = check_int("patience", patience, minimum=1)
        self.z = check_number("z", z, minimum=0)
        self.min_warmup_epochs = check_int("min_warmup_epochs", min_warmup_epochs, minimum=0)
        self.normalise = bool(normalise)
        if schedule is not None:
            check_instance("schedule", schedule, PhaseSchedule)
        self.seed = check_int("seed", seed)
        super().__init__(num_positions, ScoreTable(num_positions, clip_len), check_temperature(gamma_s, "gamma_s"),
                         schedule)
        self.seen = torch.zeros(self.num_videos, dtype=torch.bool)
        self.exploit_from: Optional[int] = None   # first exploitation epoch, once the gate opened
        self.streak = 0                           # consecutive epochs above chance
        self.accuracy: list = []                  # (epoch, clean-clip accuracy, threshold) per learned epoch

    @property
    def gamma_s(self) -> float:
        return self.temperature

    # ------------------------------------------------------------------------------------------ phases
    def phase(self, epoch: int) -> Phase:
        """Warm-up (uniform, scored) until the gate opened, exploitation from the epoch after it opened."""
        e = check_epoch(epoch)
        return Phase.EXPLOITATION if self.exploit_from is not None and e >= self.exploit_from else Phase.WARMUP

    def records_scores(self, epoch: int) -> bool:
        return True

    # ----------------------------------------------------------------------------------------- drawing
    def starts(self, epoch: int, generator: Optional[torch.Generator] = None) -> Tensor:
        """Warm-up: uniform. Exploitation: with probability ε uniform, else softmax(γ_s w): int64 ``[V]``."""
        if self.phase(epoch) is Phase.WARMUP:
            return uniform_starts(self.num_positions, generator)
        floor = torch.rand(self.num_videos, generator=generator, dtype=torch.float64) < self.epsilon
        soft = self._drawn_table().sample(self.temperature, generator)
        flat = uniform_starts(self.num_positions, generator)
        return torch.where(floor, flat, soft)

    def _drawn_table(self) -> ScoreTable:
        """The table exploitation draws from: each video's standardised scores (``normalise``), or the table."""
        if not self.normalise:
            return self.table
        lengths = self.num_positions
        w = self.table.values.to(torch.float64)
        n = lengths.to(torch.float64)
        mean = torch.segment_reduce(w, "sum", lengths=lengths) / n
        d = w - torch.repeat_interleave(mean, lengths)
        std = torch.sqrt(torch.segment_reduce(d * d, "sum", lengths=lengths) / n)
        out = ScoreTable(lengths, self.table.clip_len)
        # a flat table (std 0) stays flat: uniform
        out.values.copy_(d / torch.repeat_interleave(torch.where(std > 0, std, torch.ones_like(std)), lengths))
        return out

    def _mixture(self) -> Tensor:
        """(1 - ε) softmax(γ_s w̃) + ε / N of every video, flat float64 ``[P]``."""
        lengths = self.num_positions
        x = self._drawn_table().values.to(torch.float64) * self.temperature
        top = torch.segment_reduce(x, "max", lengths=lengths)
        e = torch.exp(x - torch.repeat_interleave(top, lengths))
        z = torch.segment_reduce(e, "sum", lengths=lengths)
        p = e / torch.repeat_interleave(z, lengths)
        return (1 - self.epsilon) * p + self.epsilon / torch.repeat_interleave(lengths.to(torch.float64), lengths)

    def entropy(self, epoch: int) -> Tensor:
        if self.phase(epoch) is Phase.WARMUP:
            return super().entropy(epoch)
        q = self._mixture()
        h = -(q * torch.log(torch.clamp(q, min=1e-300)))
        return torch.segment_reduce(h, "sum", lengths=self.num_positions).to(torch.float32)

    def probabilities(self, v: int, epoch: int) -> Tensor:
        if self.phase(epoch) is Phase.WARMUP:
            return super().probabilities(v, epoch)
        v = int(v)
        if not 0 <= v < self.num_videos:
            raise IndexError(f"video index {v} out of range 0..{self.num_videos - 1}")
        off = self.table.offsets
        return self._mixture()[int(off[v]):int(off[v + 1])].to(torch.float32)

    # ---------------------------------------------------------------------------------------- learning
    def threshold(self, num_records: int) -> float:
        """Accuracy above which an epoch counts as above chance: c + z sqrt(c (1 - c) / R), c = 1/C."""
        c = 1.0 / self.num_classes
        return c + self.z * math.sqrt(c * (1 - c) / max(num_records, 1))

    def learn(self, epoch: int, records: ClipRecords) -> dict:
        vid, st, sc = records.video_idx, records.start, records.score
        # A video's first record ever fills its whole table (so unvisited positions are not left at 0).
        first = (record_occurrence(vid) == 0) & ~self.seen[vid]
        if bool(first.any()):
            v = vid[first]
            self.table.fill(v, st[first], sc[first], self.num_positions[v], checked=True)
            self.seen[v] = True
        counts = self.table.interpolate(vid, st, sc, checked=True)
        if records.correct is not None and len(records) and self.exploit_from is None:
            acc = float(records.correct.float().mean())
            thr = self.threshold(len(records))
            self.accuracy.append((int(epoch), acc, thr))
            self.streak = self.streak + 1 if acc > thr else 0
            if self.streak >= self.patience:
                self.exploit_from = max(int(epoch) + 1, self.min_warmup_epochs)
        return counts

    # -------------------------------------------------------------------------------------- checkpoint
    def hyperparameters(self) -> dict:
        return {"gamma_s": self.gamma_s, "num_classes": self.num_classes,
                "positions_per_video": self.positions_per_video, "epsilon": self.epsilon,
                "patience": self.patience, "z": self.z, "min_warmup_epochs": self.min_warmup_epochs,
                "normalise": self.normalise}

    def state_dict(self) -> dict:
        return {**super().state_dict(), "seen": self.seen.clone(), "streak": self.streak,
                "exploit_from": -1 if self.exploit_from is None else self.exploit_from,
                "accuracy": [list(a) for a in self.accuracy]}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.seen.copy_(torch.as_tensor(state["seen"], dtype=torch.bool))
        self.streak = int(state["streak"])
        self.exploit_from = None if int(state["exploit_from"]) < 0 else int(state["exploit_from"])
        self.accuracy = [tuple(a) for a in state["accuracy"]]
