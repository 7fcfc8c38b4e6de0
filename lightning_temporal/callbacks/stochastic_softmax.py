"""StochasticSoftmaxCallback: Temporal Stochastic Softmax clip sampling as a Lightning callback (SPEC §1).

The callback is glue: the math (score tables, phases, policies, the clip sampler) lives in
``lightning_temporal.sampling`` and never imports Lightning. Here we

* build the sampling policy for the data module's ``clip_sampler`` and install it;
* score each training batch (clean clips in eval mode under ``torch.no_grad()`` before the training step, or
  the training step's own logits) and record ``(video_idx, start, target logit)``;
* at the end of each training epoch gather the records of every rank in global-plan order and apply them to
  the policy, so every rank holds identical tables and draws the same next plan;
* keep the sampling history and log per-epoch numbers;
* carry everything that changes through ``state_dict`` / ``load_state_dict`` (exact resume).
"""
from __future__ import annotations

import math
import warnings
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any, Mapping, Optional, Sequence, Union

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor

from lightning_temporal.distributed import gather_records
from lightning_temporal.sampling.phases import Phase, PhaseSchedule
from lightning_temporal.sampling.policies import (
    PriorPolicy,
    ReinforcePolicy,
    StochasticSoftmaxPolicy,
    UniformPolicy,
)

__all__ = ["StochasticSoftmaxCallback", "SamplingHistory", "PHASE_CODES"]

_MODES = ("tss", "prior", "reinforce", "uniform")
_SCORING = ("clean", "augmented")
_KEEP_HISTORY = ("all", "tracked")
#: integer code of each phase in the logs (``tss/phase``)
PHASE_CODES = {Phase.WARMUP: 0, Phase.EXPLORATION: 1, Phase.EXPLOITATION: 2}
_STATE_FORMAT = 1


@dataclass
class SamplingHistory:
    """What the sampler did, epoch by epoch (for the sampling maps of seed Fig. S.1, S.3-S.10).

    Attributes:
        epochs: int64 ``[E]``, the finished training epochs, in order.
        phases: int64 ``[E]``, the phase code of each epoch (:data:`PHASE_CODES`).
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


def _is_int(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


class StochasticSoftmaxCallback(Callback):
    """Temporal Stochastic Softmax training-clip sampling (SPEC §1, seed §S.1).

    Example:
        >>> import lightning as L
        >>> from lightning_temporal.callbacks.stochastic_softmax import StochasticSoftmaxCallback
        >>> callback = StochasticSoftmaxCallback(gamma_s=1.0, warmup_epochs=3, exploration_epochs=5)
        >>> trainer = L.Trainer(max_epochs=20, callbacks=[callback], logger=False, enable_progress_bar=False)
        >>> # trainer.fit(model, datamodule=dm)   # dm exposes ``clip_sampler`` (e.g. TemporalDataModule)
        >>> callback.phase(0).value, callback.phase(3).value, callback.phase(8).value
        ('warmup', 'exploration', 'exploitation')

    The data module must expose its training ``ClipSampler`` as ``datamodule.clip_sampler`` after
    ``setup("fit")`` (``TemporalDataModule`` does), with ``num_replicas``/``rank`` set from the trainer. The
    callback builds the policy of ``mode`` for the sampler's videos and installs it (``clip_sampler.policy``).

    Args:
        gamma_s: sampling temperature γ_s >= 0 of softmax(γ_s·w) (``tss``, ``prior``); 0 = uniform.
        warmup_epochs: W >= 0 epochs of uniform sampling without recording (``tss``, ``reinforce``).
        exploration_epochs: E >= 1 epochs on the deterministic grid (``tss`` only; see
            ``lightning_temporal.sampling.phases`` for E = 1, the single middle slot).
        scoring: ``"clean"`` (default, SPEC §1.1): before each training step, score ``batch["clean"]`` with the
            module in eval mode under ``torch.no_grad()`` through ``pl_module.score_clips`` (or ``forward``);
            ``"augmented"``: reuse ``outputs["logits"]`` returned by ``training_step``.
        mode: ``"tss"`` (warm-up, exploration, exploitation with Eq. S.2 updates), ``"prior"`` (softmax of the
            clip prior from the manifest's per-frame scores, from epoch 0, never updated, nothing scored),
            ``"reinforce"`` (REINFORCE baseline of seed Fig. S.2, after ``warmup_epochs``), ``"uniform"``
            (uniform starts; only history and logs — the baseline with the same bookkeeping).
        clip_len: frames per clip F; None = ``datamodule.clip_len``. With ``stride`` s > 1 the tables and the
            prior use the clip's span (F-1)·s+1 in frames (the reach of Eq. S.2 in start positions; equal to F
            for contiguous clips, the seed's setting).
        stride: temporal stride s; None = ``datamodule.stride`` (1 when absent).
        track_videos: number of videos (evenly spaced over the dataset) or a list of video indices whose
            tables are snapshot every epoch.
        keep_history: ``"all"``: keep every video's start of every epoch (4 bytes per video per epoch, e.g.
            400 MB for 10^6 videos over 100 epochs); ``"tracked"``: only the tracked videos'.
        seed: seeds each video's order of exploration slots (``tss``). The sampler's own ``seed`` drives the
            per-epoch draws.
        log_every_epoch: log ``tss/phase``, ``tss/entropy``, ``tss/score_entropy``, ``tss/hit_rate``,
            ``tss/records``, ``tss/nonfinite``, ``tss/duplicates`` through ``pl_module.log`` each epoch.
        reinforce_lr, reinforce_baseline_momentum: α and the baseline momentum of ``reinforce``.
        frame_scores: ``prior`` only: per-video 1-D frame scores; None = read them from
            ``datamodule.train_manifest.load_frame_scores(i)``.

    Records. Every rank records the clips it trains; at the end of the epoch the records of all ranks are
    gathered in global-plan order (plan index ``k * world_size + rank``, the order ``ClipSampler`` deals the
    plan) and applied. Videos that DDP padding repeats in an epoch are applied twice, in that order (the
    tables apply repeated videos in the given order), so the result is deterministic; their count is
    logged as ``tss/duplicates``. NaN/inf scores are never written: they are counted, warned about and
    logged as ``tss/nonfinite``.

    Exact resume. The state (policy tables, exploration slots, history, metrics) goes through
    ``state_dict``; the sampler draws each epoch from (its seed, the epoch, the policy state). A run resumed
    from a checkpoint saved at the end of a training epoch continues with the same clips and tables as an
    uninterrupted run. Records of an unfinished epoch are not saved: a checkpoint written in the middle of
    an epoch warns.
    """

    def __init__(self, gamma_s: float = 1.0, warmup_epochs: int = 3, exploration_epochs: int = 5,
                 scoring: str = "clean", mode: str = "tss", clip_len: Optional[int] = None,
                 stride: Optional[int] = None, track_videos: Union[int, Sequence[int]] = 8,
                 keep_history: str = "all", seed: int = 0, log_every_epoch: bool = True,
                 reinforce_lr: float = 1.0, reinforce_baseline_momentum: float = 0.9,
                 frame_scores: Optional[Sequence] = None):
        if isinstance(gamma_s, bool) or not isinstance(gamma_s, (int, float)) or not math.isfinite(gamma_s) \
                or gamma_s < 0:
            raise ValueError(f"gamma_s must be a finite number >= 0 (0 = uniform sampling, 1 = the seed's "
                             f"default), got {gamma_s!r}")
        if not _is_int(warmup_epochs) or warmup_epochs < 0:
            raise ValueError(f"warmup_epochs must be an int >= 0 (epochs of uniform sampling), got {warmup_epochs!r}")
        if not _is_int(exploration_epochs) or exploration_epochs < 1:
            raise ValueError(f"exploration_epochs must be an int >= 1 (one exploration epoch per grid slot; the "
                             f"seed uses 5), got {exploration_epochs!r}")
        if scoring not in _SCORING:
            raise ValueError(f"scoring must be one of {_SCORING} ('clean': score an un-augmented copy in eval "
                             f"mode; 'augmented': reuse the training logits), got {scoring!r}")
        if mode not in _MODES:
            raise ValueError(f"mode must be one of {_MODES}, got {mode!r}")
        for name, v in (("clip_len", clip_len), ("stride", stride)):
            if v is not None and (not _is_int(v) or v < 1):
                raise ValueError(f"{name} must be an int >= 1 or None (read from the data module), got {v!r}")
        if _is_int(track_videos):
            if track_videos < 0:
                raise ValueError(f"track_videos must be a count >= 0 or a list of video indices, got {track_videos}")
        else:
            try:
                tv = [int(v) for v in track_videos]
            except TypeError:
                raise ValueError(f"track_videos must be a count >= 0 or a list of video indices, got "
                                 f"{track_videos!r}") from None
            if any(v < 0 for v in tv):
                raise ValueError(f"track_videos must hold video indices >= 0, got {tv}")
            track_videos = tv
        if keep_history not in _KEEP_HISTORY:
            raise ValueError(f"keep_history must be one of {_KEEP_HISTORY}, got {keep_history!r}")
        if not _is_int(seed):
            raise ValueError(f"seed must be an int, got {seed!r}")
        if mode == "reinforce":
            if isinstance(reinforce_lr, bool) or not isinstance(reinforce_lr, (int, float)) \
                    or not math.isfinite(reinforce_lr) or reinforce_lr <= 0:
                raise ValueError(f"reinforce_lr must be a finite number > 0, got {reinforce_lr!r}")
            if isinstance(reinforce_baseline_momentum, bool) or \
                    not isinstance(reinforce_baseline_momentum, (int, float)) or \
                    not 0 <= reinforce_baseline_momentum < 1:
                raise ValueError(f"reinforce_baseline_momentum must be in [0, 1), got {reinforce_baseline_momentum!r}")
        if frame_scores is not None and mode != "prior":
            raise ValueError(f"frame_scores is only used by mode='prior', got mode={mode!r}")

        self.gamma_s = float(gamma_s)
        self.schedule = PhaseSchedule(warmup_epochs, exploration_epochs)
        self.scoring = scoring
        self.mode = mode
        self.clip_len = clip_len
        self.stride = stride
        self.track_videos = track_videos
        self.keep_history = keep_history
        self.seed = seed
        self.log_every_epoch = bool(log_every_epoch)
        self.reinforce_lr = float(reinforce_lr)
        self.reinforce_baseline_momentum = float(reinforce_baseline_momentum)
        self.frame_scores = frame_scores

        self.policy = None
        self.clip_sampler = None
        self.span: Optional[int] = None
        self.num_positions: Optional[Tensor] = None
        self.tracked: Optional[Tensor] = None
        self._events: Optional[Tensor] = None      # int64 [V, 2], -1 where unknown
        self._stash: Optional[dict] = None         # state loaded before the policy existed
        self._reset_pending()
        # history, filled per finished epoch
        self._epochs: list[int] = []
        self._phases: list[int] = []
        self._starts: list[Tensor] = []
        self._scores: dict[int, list[Tensor]] = {}
        self._probs: dict[int, list[Tensor]] = {}
        #: per-epoch numbers (also logged): list of dicts
        self.metrics: list[dict] = []
        #: the gathered records applied at the last epoch end: {"video_idx", "start", "score", "rank"}
        self.last_records: dict[str, Tensor] = {}

    # ------------------------------------------------------------------------------------------ phases
    @property
    def warmup_epochs(self) -> int:
        return self.schedule.warmup_epochs

    @property
    def exploration_epochs(self) -> int:
        return self.schedule.exploration_epochs

    def phase(self, epoch: int) -> Phase:
        """The phase of an epoch in this callback's ``mode``."""
        if self.mode == "tss":
            return self.schedule.phase(epoch)
        if self.mode == "reinforce":
            return Phase.WARMUP if epoch < self.warmup_epochs else Phase.EXPLOITATION
        if self.mode == "prior":
            return Phase.EXPLOITATION  # SPEC §1.4: no warm-up, no exploration
        return Phase.WARMUP  # uniform

    def records_scores(self, epoch: int) -> bool:
        """Whether clips are scored in this epoch (nothing is scored in warm-up, nor ever for prior/uniform)."""
        if self.mode in ("prior", "uniform"):
            return False
        return self.phase(epoch) is not Phase.WARMUP

    # ------------------------------------------------------------------------------------------ set-up
    def setup(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule", stage: str) -> None:
        if stage != "fit":
            return
        sampler = getattr(trainer.datamodule, "clip_sampler", None) if trainer.datamodule is not None else None
        if sampler is not None:
            self._install(sampler, trainer.datamodule)
        # else: maybe the sampler only exists once the train loader is built; on_train_start looks again.

    def on_fit_start(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule") -> None:
        # A run too short to reach exploitation trains like uniform sampling: say so once, before it starts.
        first = {"tss": self.warmup_epochs + self.exploration_epochs, "reinforce": self.warmup_epochs}.get(self.mode)
        max_epochs = trainer.max_epochs
        if first is None or trainer.fast_dev_run or max_epochs is None or max_epochs < 0 or max_epochs > first:
            return
        rank_zero_warn(
            f"trainer.max_epochs={max_epochs} ends before exploitation begins at epoch {first} "
            f"({self.warmup_epochs} warm-up" + (f" + {self.exploration_epochs} exploration" if self.mode == "tss"
                                               else "") + " epochs, counted from 0): no clip of this run is drawn "
            f"from the learned score tables. Raise max_epochs above {first} or lower warmup_epochs"
            + (" / exploration_epochs" if self.mode == "tss" else ""))

    def on_train_start(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule") -> None:
        if self.clip_sampler is None:
            loader = trainer.train_dataloader
            sampler = getattr(loader, "sampler", None)
            if not (hasattr(sampler, "policy") and hasattr(sampler, "num_positions")):
                raise RuntimeError(
                    "StochasticSoftmaxCallback needs the training ClipSampler: use "
                    "lightning_temporal's TemporalDataModule, or expose your data module's "
                    "lightning_temporal.sampling.sampler.ClipSampler as `datamodule.clip_sampler` after "
                    "setup('fit') and use it as the train DataLoader's sampler "
                    f"(found datamodule={type(trainer.datamodule).__name__ if trainer.datamodule else None}, "
                    f"train sampler={type(sampler).__name__})")
            self._install(sampler, trainer.datamodule)
        s = self.clip_sampler
        if getattr(s, "num_replicas", 1) != trainer.world_size or getattr(s, "rank", 0) != trainer.global_rank:
            raise RuntimeError(
                f"the ClipSampler is set for num_replicas={getattr(s, 'num_replicas', 1)}, "
                f"rank={getattr(s, 'rank', 0)} but the trainer runs world_size={trainer.world_size}, "
                f"global_rank={trainer.global_rank}: set `clip_sampler.num_replicas = trainer.world_size` and "
                "`clip_sampler.rank = trainer.global_rank` in the data module's setup (TemporalDataModule does)")

    def _resolve_span(self, datamodule) -> Optional[int]:
        F = self.clip_len if self.clip_len is not None else getattr(datamodule, "clip_len", None)
        s = self.stride if self.stride is not None else getattr(datamodule, "stride", 1)
        if F is None:
            if self.mode in ("tss", "prior"):
                raise ValueError(f"mode={self.mode!r} needs the clip length: pass clip_len= to "
                                 "StochasticSoftmaxCallback or give the data module a `clip_len` attribute")
            return None
        if not _is_int(F) or F < 1 or not _is_int(s) or s < 1:
            raise ValueError(f"clip_len and stride must be ints >= 1, got clip_len={F!r}, stride={s!r}")
        return (F - 1) * s + 1

    def _build_policy(self, num_positions: Tensor, datamodule):
        if self.mode == "tss":
            return StochasticSoftmaxPolicy(num_positions, self.span, self.gamma_s, self.schedule, self.seed)
        if self.mode == "uniform":
            return UniformPolicy(num_positions)
        if self.mode == "reinforce":
            return ReinforcePolicy(num_positions, self.reinforce_lr, self.reinforce_baseline_momentum, self.seed)
        scores = self.frame_scores
        if scores is None:
            manifest = getattr(datamodule, "train_manifest", None)
            if manifest is None or not hasattr(manifest, "load_frame_scores"):
                raise ValueError("mode='prior' needs per-frame scores: give the training manifest a frame_scores "
                                 "column (datamodule.train_manifest.load_frame_scores) or pass frame_scores= "
                                 "to StochasticSoftmaxCallback")
            # I/O once at set-up (one file per video), not a hot path.
            scores = [manifest.load_frame_scores(i) for i in range(num_positions.numel())]
        missing = [i for i, s in enumerate(scores) if s is None]
        if missing:
            raise ValueError(f"mode='prior': {len(missing)} training video(s) have no frame scores (first: video "
                             f"{missing[0]}); give every training video a frame_scores file or use mode='tss'")
        if len(scores) != num_positions.numel():
            raise ValueError(f"mode='prior': {len(scores)} frame-score sequences for {num_positions.numel()} "
                             "training videos; give one per video, in the manifest's order")
        policy = PriorPolicy(scores, self.span, self.gamma_s)
        if not torch.equal(policy.num_positions, num_positions):
            bad = int((policy.num_positions != num_positions).nonzero()[0]) \
                if policy.num_positions.shape == num_positions.shape else 0
            raise ValueError(f"mode='prior': the frame scores do not match the videos' frame counts (video {bad}: "
                             "the prior has a different number of clip positions than the sampler); give one "
                             "score per decoded frame")
        return policy

    def _install(self, sampler, datamodule) -> None:
        num_positions = torch.as_tensor(sampler.num_positions, dtype=torch.int64)
        if self.policy is not None and self.num_positions is not None \
                and torch.equal(self.num_positions, num_positions):
            # a second fit() with the same callback continues with the same tables
            sampler.policy = self.policy
            self.clip_sampler = sampler
            return
        self.span = self._resolve_span(datamodule)
        self.num_positions = num_positions
        V = num_positions.numel()
        if isinstance(self.track_videos, int):
            k = min(self.track_videos, V)
            self.tracked = torch.linspace(0, V - 1, k).round().long().unique() if k else torch.zeros(0, dtype=torch.long)
        else:
            bad = [v for v in self.track_videos if v >= V]
            if bad:
                raise ValueError(f"track_videos {bad} are outside the {V} training videos (0..{V - 1})")
            self.tracked = torch.tensor(sorted(set(self.track_videos)), dtype=torch.long)
        self._events = self._read_events(getattr(datamodule, "train_manifest", None), V)
        self.policy = self._build_policy(num_positions, datamodule)
        if self._stash is not None:
            stash, self._stash = self._stash, None
            self._apply_state(stash)
        sampler.policy = self.policy
        self.clip_sampler = sampler

    @staticmethod
    def _read_events(manifest, num_videos: int) -> Optional[Tensor]:
        """Event windows ``[V, 2]`` (start, end exclusive; -1 = unknown) from ``manifest.events``, if any."""
        ev = getattr(manifest, "events", None)
        if ev is None:
            return None
        ev = torch.as_tensor(ev, dtype=torch.int64)
        if ev.shape != (num_videos, 2):
            raise ValueError(f"train_manifest.events has shape {tuple(ev.shape)}; expected ({num_videos}, 2): "
                             "one (event_start, event_end) per training video, -1 where unknown")
        known = (ev >= 0).all(1)
        return ev if bool(known.any()) else None

    # ----------------------------------------------------------------------------------------- records
    def _reset_pending(self) -> None:
        self._seen: list[tuple[Tensor, Tensor]] = []       # (video_idx, start) of every trained clip
        self._scored: list[tuple[Tensor, Tensor, Tensor, Tensor]] = []  # (video_idx, start, score, ordinal)
        self._ordinal = 0                                   # this rank's sampler items met this epoch

    @staticmethod
    def _batch_field(batch, key: str) -> Tensor:
        if not isinstance(batch, Mapping) or key not in batch:
            have = sorted(batch.keys()) if isinstance(batch, Mapping) else type(batch).__name__
            raise KeyError(f"StochasticSoftmaxCallback needs batch[{key!r}] (the CONTRACT batch dict of "
                           f"lightning_temporal.data.dataset.collate_clips); the batch has {have}")
        return batch[key]

    def _target_logit(self, logits, label: Tensor, where: str) -> Tensor:
        if not torch.is_tensor(logits) or logits.dim() != 2 or logits.shape[0] != label.shape[0]:
            shape = tuple(logits.shape) if torch.is_tensor(logits) else type(logits).__name__
            raise ValueError(f"{where} must be logits [N, K] for the batch's N = {label.shape[0]} clips, got {shape}")
        # f(x_t) = the logit of the video's target label (SPEC §1.1)
        return logits.detach().gather(1, label.view(-1, 1).to(logits.device)).squeeze(1).float()

    @staticmethod
    def _require_clean(batch) -> None:
        if not isinstance(batch, Mapping) or "clean" not in batch:
            raise KeyError("scoring='clean' needs the un-augmented copy batch['clean']: build the data module "
                           "with a clean transform (TemporalDataModule does when the callback scores clean "
                           "clips) or use StochasticSoftmaxCallback(scoring='augmented')")

    def _score_clean(self, trainer, pl_module, batch) -> Tensor:
        self._require_clean(batch)
        # Remember every submodule's own mode: a user may keep parts frozen in eval mode during training.
        modes = [(m, m.training) for m in pl_module.modules()]
        score_fn = getattr(pl_module, "score_clips", None)
        precision = getattr(trainer, "precision_plugin", None)
        ctx = precision.forward_context() if precision is not None else nullcontext()
        try:
            pl_module.eval()
            with torch.no_grad(), ctx:
                logits = score_fn(batch["clean"]) if callable(score_fn) else pl_module(batch["clean"])
        finally:
            for m, was_training in modes:
                m.training = was_training
        return self._target_logit(logits, batch["label"], "pl_module.score_clips(batch['clean'])")

    def _record(self, batch, score: Optional[Tensor]) -> None:
        vid = self._batch_field(batch, "video_idx").detach()
        start = self._batch_field(batch, "start").detach()
        n = vid.shape[0]
        # Skipped (undecodable) items still took a place in this rank's shard: count them so the ordinals of
        # later items stay close to their plan positions (their order is what matters for determinism).
        skipped = batch.get("skipped") if isinstance(batch, Mapping) else None
        n_skipped = int(skipped.numel()) if torch.is_tensor(skipped) else 0
        ordinal = torch.arange(self._ordinal, self._ordinal + n, device=vid.device)
        self._ordinal += n + n_skipped
        self._seen.append((vid, start))
        if score is not None:
            self._scored.append((vid, start, score, ordinal))

    def on_train_batch_start(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule", batch: Any,
                             batch_idx: int) -> None:
        epoch = trainer.current_epoch
        score = None
        if self.scoring == "clean" and self.mode in ("tss", "reinforce"):
            self._require_clean(batch)  # fail at the first batch, not when warm-up ends
            if self.records_scores(epoch):
                score = self._score_clean(trainer, pl_module, batch)
        elif self.scoring == "augmented" and self.records_scores(epoch):
            return  # recorded in on_train_batch_end, from the training step's logits
        self._record(batch, score)

    def on_train_batch_end(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule", outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        if not (self.scoring == "augmented" and self.records_scores(trainer.current_epoch)):
            return
        if not isinstance(outputs, Mapping) or "logits" not in outputs:
            got = sorted(outputs.keys()) if isinstance(outputs, Mapping) else type(outputs).__name__
            raise KeyError("scoring='augmented' needs training_step to return {'loss': loss, 'logits': "
                           f"logits.detach()}} (CONTRACT §6); it returned {got}. Or use scoring='clean'")
        score = self._target_logit(outputs["logits"], self._batch_field(batch, "label"), "outputs['logits']")
        self._record(batch, score)

    # ------------------------------------------------------------------------------------- epoch end
    def _gather(self, trainer, parts: list, n_fields: int, dtypes: Sequence[torch.dtype]):
        if parts:
            local = [torch.cat([p[j] for p in parts]) for j in range(n_fields)]
        else:
            local = [torch.zeros(0, dtype=d) for d in dtypes]
        return gather_records(trainer.strategy, local)

    def on_train_epoch_end(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule") -> None:
        if self.policy is None:
            return
        epoch = trainer.current_epoch
        V = self.num_positions.numel()
        phase = self.phase(epoch)

        # Every rank takes part in both gathers, whatever it recorded (collectives must match).
        (seen_v, seen_t), _, _ = self._gather(trainer, self._seen, 2, (torch.long, torch.long))
        row = torch.full((V,), -1, dtype=torch.int32)
        row[seen_v] = seen_t.to(torch.int32)  # padding duplicates carry the same start

        # Numbers describing the distributions this epoch drew from: taken before its records are applied.
        entropy = self.policy.entropy(epoch)
        probs = {v: self.policy.probabilities(v, epoch).clone() for v in self.tracked.tolist()}  # few videos
        counts = {"applied": 0, "nonfinite": 0}
        n_dup = 0
        recording = self.records_scores(epoch)
        if recording:
            (vid, start, score, ordinal), rank, _ = self._gather(
                trainer, self._scored, 4, (torch.long, torch.long, torch.float32, torch.long))
            # Global-plan order: plan index = ordinal * world_size + rank (ClipSampler deals plan[r::R]).
            key = ordinal * trainer.world_size + rank
            order = torch.sort(key, stable=True).indices
            vid, start, score, rank = vid[order], start[order], score[order], rank[order]
            n_dup = int(vid.numel() - torch.unique(vid).numel()) if vid.numel() else 0
            finite = torch.isfinite(score)
            n_bad = int((~finite).sum())
            if n_bad:
                videos = vid[~finite].unique().tolist()
                warnings.warn(
                    f"epoch {epoch}: {n_bad} non-finite clip score(s) (NaN/inf) were not written into the "
                    f"tables, from video(s) {videos[:10]}{' ...' if len(videos) > 10 else ''}; check the model's "
                    "logits (diverging loss, fp16 overflow)", RuntimeWarning)
            self.last_records = {"video_idx": vid, "start": start, "score": score, "rank": rank}
            if bool(finite.any()):
                counts = dict(self.policy.update(epoch, vid[finite], start[finite], score[finite]))
            counts["nonfinite"] = n_bad
        else:
            self.last_records = {}
        self._reset_pending()
        self._append_history(epoch, phase, row, probs)
        self._log_epoch(trainer, pl_module, epoch, phase, row, counts, n_dup, entropy)

    def _table_of(self, v: int) -> Tensor:
        p = self.policy
        for name in ("table", "theta", "prior"):
            t = getattr(p, name, None)
            if t is not None:
                return t[v].clone()
        return torch.zeros(int(self.num_positions[v]), dtype=torch.float32)

    def _append_history(self, epoch: int, phase: Phase, row: Tensor, probs: dict) -> None:
        if self._epochs and self._epochs[-1] >= epoch:
            # the same epoch again (e.g. resumed from a mid-epoch checkpoint): replace, keep epochs increasing
            k = next(i for i, e in enumerate(self._epochs) if e >= epoch)
            del self._epochs[k:], self._phases[k:], self._starts[k:]
            for d in (self._scores, self._probs):
                for v in d:
                    del d[v][k:]
        self._epochs.append(epoch)
        self._phases.append(PHASE_CODES[phase])
        self._starts.append(row if self.keep_history == "all" else row[self.tracked])
        for v in self.tracked.tolist():  # a handful of tracked videos, not all videos
            self._scores.setdefault(v, []).append(self._table_of(v))
            self._probs.setdefault(v, []).append(probs[v])

    @property
    def history(self) -> SamplingHistory:
        """The sampling history so far (see :class:`SamplingHistory`)."""
        cols = torch.arange(self.num_positions.numel()) if (self.keep_history == "all" and self.num_positions
                                                            is not None) else self.tracked
        if cols is None:
            cols = torch.zeros(0, dtype=torch.long)
        n_cols = cols.numel()
        starts = torch.stack(self._starts) if self._starts else torch.zeros(0, n_cols, dtype=torch.int32)
        tracked = self.tracked if self.tracked is not None else torch.zeros(0, dtype=torch.long)
        return SamplingHistory(
            epochs=torch.tensor(self._epochs, dtype=torch.long),
            phases=torch.tensor(self._phases, dtype=torch.long),
            columns=cols.clone(),
            starts=starts,
            tracked=tracked.clone(),
            scores={v: torch.stack(s) for v, s in self._scores.items() if s},
            probabilities={v: torch.stack(s) for v, s in self._probs.items() if s},
        )

    def hit_rate(self, starts: Tensor) -> Optional[float]:
        """Fraction of this epoch's clips ``[t, t + span)`` that overlap their video's event window.

        Args: ``starts`` int [V], one start per video (-1 = not trained). Only videos with a known event window
        and a start count. Returns None when the manifest has no event windows (or no clip length is known).
        """
        if self._events is None or self.span is None:
            return None
        es, ee = self._events[:, 0], self._events[:, 1]
        t = starts.to(torch.int64)
        valid = (t >= 0) & (es >= 0) & (ee >= 0)
        if not bool(valid.any()):
            return None
        hit = (t < ee) & (t + self.span > es)
        return float((hit & valid).sum()) / float(valid.sum())

    def _log_epoch(self, trainer, pl_module, epoch, phase, row, counts, n_dup, entropy) -> None:
        m = {
            "epoch": epoch,
            "phase": PHASE_CODES[phase],
            "entropy": float(entropy.mean()),
            "records": int(counts.get("applied", 0)),
            "nonfinite": int(counts.get("nonfinite", 0)),
            "duplicates": n_dup,
        }
        table = getattr(self.policy, "table", None)
        if table is not None:  # how peaked the tables are after this epoch's update, whatever the phase
            m["score_entropy"] = float(table.entropy(self.gamma_s).mean())
        hr = self.hit_rate(row)
        if hr is not None:
            m["hit_rate"] = hr
        self.metrics.append(m)
        if not self.log_every_epoch:
            return
        # The values are identical on every rank (computed from gathered records), so no reduction is
        # needed; sync_dist only silences Lightning's epoch-level DDP warning (mean of equal values).
        sync = trainer.world_size > 1
        for k, v in m.items():
            if k == "epoch":
                continue
            pl_module.log(f"tss/{k}", float(v), on_step=False, on_epoch=True, sync_dist=sync, batch_size=1)

    def on_save_checkpoint(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule",
                           checkpoint: dict) -> None:
        n = sum(int(p[0].numel()) for p in self._scored)
        if n:
            warnings.warn(f"a checkpoint is saved in the middle of training epoch {trainer.current_epoch}: the "
                          f"{n} clip scores recorded so far in this epoch are not in it, so a resume from it is "
                          "not exact; save at training-epoch ends (ModelCheckpoint(save_on_train_epoch_end=True)) "
                          "for an exact resume", RuntimeWarning)

    # ----------------------------------------------------------------------------------------- state
    def state_dict(self) -> dict:
        if self.policy is None:
            return dict(self._stash) if self._stash is not None else {}
        h = self.history
        return {
            "format": _STATE_FORMAT,
            "mode": self.mode,
            "num_positions": self.num_positions.clone(),
            "policy": self.policy.state_dict(),
            "history": {
                "epochs": h.epochs, "phases": h.phases, "columns": h.columns, "starts": h.starts,
                "tracked": h.tracked, "scores": h.scores, "probabilities": h.probabilities,
            },
            "metrics": [dict(m) for m in self.metrics],
        }

    def load_state_dict(self, state_dict: dict) -> None:
        if not state_dict:
            return
        if state_dict.get("format") != _STATE_FORMAT:
            raise ValueError(f"StochasticSoftmaxCallback state of format {state_dict.get('format')!r}; this "
                             f"version reads format {_STATE_FORMAT}")
        if state_dict["mode"] != self.mode:
            raise ValueError(f"the checkpoint's StochasticSoftmaxCallback ran mode={state_dict['mode']!r}, this one "
                             f"mode={self.mode!r}; resume with the same mode")
        if self.policy is None:
            self._stash = state_dict  # applied when setup builds the policy
            return
        self._apply_state(state_dict)

    def _apply_state(self, state: dict) -> None:
        n = torch.as_tensor(state["num_positions"])
        if not torch.equal(n, self.num_positions):
            raise ValueError(f"the checkpoint's StochasticSoftmaxCallback was trained on {n.numel()} videos with "
                             f"other clip positions than this data module's {self.num_positions.numel()} videos; "
                             "resume with the same training manifest, clip_len and stride")
        self.policy.load_state_dict(state["policy"])
        h = state["history"]
        self._epochs = h["epochs"].tolist()
        self._phases = h["phases"].tolist()
        starts = h["starts"]
        if self.keep_history == "all" and starts.shape[1] != n.numel():
            raise ValueError("the checkpoint kept the history of the tracked videos only; resume with "
                             "keep_history='tracked'")
        if self.keep_history == "tracked" and starts.shape[1] == n.numel() and self.tracked.numel() != n.numel():
            starts = starts[:, self.tracked]
        self._starts = list(starts.unbind(0))
        self._scores = {int(v): list(s.unbind(0)) for v, s in h["scores"].items()}
        self._probs = {int(v): list(s.unbind(0)) for v, s in h["probabilities"].items()}
        self.metrics = [dict(m) for m in state.get("metrics", [])]
