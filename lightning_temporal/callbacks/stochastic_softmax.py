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
from torch import Tensor

from lightning_temporal.data.manifest import path_fingerprint
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
_STATE_FORMAT = 2  # 2: + manifest fingerprint, + pending records of the epoch in progress


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

    Exact resume. The state (policy tables, exploration slots, history, metrics, and the records of the epoch in
    progress, gathered from every rank) goes through ``state_dict``, with a fingerprint of the training manifest
    (each video's folder/file name and its number of clip positions, in order); loading it on another manifest, a
    reordered one included, raises an error naming the first differing row. The sampler draws each epoch from (its
    seed, the epoch, the policy state) and ``ClipLoader`` saves its position in the epoch, so a run resumed from any
    checkpoint of ``fit`` (end of epoch, ``every_n_train_steps``, after validation) draws the same clips and ends
    with the same tables as an uninterrupted run. A checkpoint written in the middle of an epoch resumes on the same
    number of ranks only; one written after its last batch or at its end, on any.

    Empty batches. A batch whose clips all failed to decode is recorded as skipped items (nothing scored).
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
        self._fingerprint: Optional[dict] = None   # {"paths": int64 [V] or None, "num_positions", "sources"}
        self._stash: Optional[dict] = None         # state loaded before the policy existed
        self._pending_stash: Optional[dict] = None  # records of an unfinished epoch loaded from a checkpoint
        self._rank, self._world_size = 0, 1
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
        self._rank, self._world_size = trainer.global_rank, trainer.world_size
        if self._pending_stash is not None:
            pending, self._pending_stash = self._pending_stash, None
            self._restore_pending(trainer, pl_module, pending)
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
        manifest = getattr(datamodule, "train_manifest", None)
        self._events = self._read_events(manifest, V)
        self._fingerprint = self._manifest_fingerprint(manifest, num_positions)
        self.policy = self._build_policy(num_positions, datamodule)
        if self._stash is not None:
            stash, self._stash = self._stash, None
            self._apply_state(stash)
        sampler.policy = self.policy
        self.clip_sampler = sampler

    @staticmethod
    def _manifest_fingerprint(manifest, num_positions: Tensor) -> dict:
        """Paths (hashed folder/file names) and clip positions of the training videos, in order."""
        paths = getattr(manifest, "paths", None)
        if paths is not None and len(paths) != num_positions.numel():
            raise ValueError(f"train_manifest has {len(paths)} videos but the clip sampler {num_positions.numel()}; "
                             "build the sampler from the training manifest")
        records = getattr(manifest, "records", None)
        return {"paths": path_fingerprint(paths) if paths is not None else None,
                "num_positions": num_positions.clone(),
                "sources": [getattr(r, "source", "") or r.path for r in records] if records is not None else None,
                "names": list(paths) if paths is not None else None}

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
        self._pending_epoch: Optional[int] = None          # the epoch these records belong to

    def _local_pending(self) -> list[Tensor]:
        """This rank's records of the epoch in progress as 7 flat tensors (seen video/start, scored
        video/start/score/ordinal, [next ordinal])."""
        def cat(parts, j, dtype):
            return torch.cat([p[j].cpu() for p in parts]) if parts else torch.zeros(0, dtype=dtype)
        return [cat(self._seen, 0, torch.long), cat(self._seen, 1, torch.long),
                cat(self._scored, 0, torch.long), cat(self._scored, 1, torch.long),
                cat(self._scored, 2, torch.float32), cat(self._scored, 3, torch.long),
                torch.tensor([self._ordinal], dtype=torch.long)]

    @staticmethod
    def _pending_state(parts: list[Tensor], ranks: list[Tensor], world_size: int, epoch: Optional[int]) -> dict:
        """The records of the epoch in progress as saved: ``next_ordinal`` int64 [world_size] is where each rank's
        ordinals continue; ``rank`` says whose each record is."""
        sv, st, v, t, score, ordinal, nxt = parts
        return {"epoch": epoch, "world_size": world_size,
                "seen": {"video_idx": sv, "start": st, "rank": ranks[0]},
                "scored": {"video_idx": v, "start": t, "score": score, "ordinal": ordinal, "rank": ranks[1]},
                "next_ordinal": nxt}

    def _restore_pending(self, trainer, pl_module, pending: dict) -> None:
        """The records of an unfinished epoch saved in a checkpoint: applied now if Lightning resumes after that
        epoch, else this rank's part is taken to go on with the epoch."""
        self._reset_pending()
        if pending.get("epoch") is None:
            return
        if pending["epoch"] < trainer.current_epoch:
            # Written after the epoch's last batch (every_n_train_steps): Lightning counts that epoch as done and
            # resumes with the next one without calling on_train_epoch_end. Apply it before the loader draws the
            # next plan (lazily, at the first batch) from the tables; any number of ranks can, from the saved records.
            self._finish_epoch(trainer, pl_module, int(pending["epoch"]), log=False, saved=pending)
            return
        if pending["world_size"] != self._world_size:
            raise ValueError(
                f"this checkpoint was written in the middle of training epoch {pending['epoch']} by "
                f"{pending['world_size']} rank(s); this run has {self._world_size}. The records of that epoch "
                "belong to the ranks that trained them: resume on the same number of devices, or from a checkpoint "
                "written at the end of an epoch")
        r = self._rank
        seen, scored = pending["seen"], pending["scored"]
        keep = seen["rank"] == r
        if bool(keep.any()):
            self._seen = [(seen["video_idx"][keep], seen["start"][keep])]
        keep = scored["rank"] == r
        if bool(keep.any()):
            self._scored = [(scored["video_idx"][keep], scored["start"][keep], scored["score"][keep],
                             scored["ordinal"][keep])]
        self._ordinal = int(pending["next_ordinal"][r if pending["world_size"] > 1 else 0])
        self._pending_epoch = int(pending["epoch"])

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
        if n:
            self._seen.append((vid, start))
            if score is not None:
                self._scored.append((vid, start, score, ordinal))

    def on_train_batch_start(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule", batch: Any,
                             batch_idx: int) -> None:
        epoch = trainer.current_epoch
        self._pending_epoch = epoch
        score = None
        empty = self._batch_field(batch, "video_idx").numel() == 0  # every clip failed to decode
        if self.scoring == "clean" and self.mode in ("tss", "reinforce"):
            self._require_clean(batch)  # fail at the first batch, not when warm-up ends
            if self.records_scores(epoch) and not empty:
                score = self._score_clean(trainer, pl_module, batch)
        elif self.scoring == "augmented" and self.records_scores(epoch) and not empty:
            return  # recorded in on_train_batch_end, from the training step's logits
        self._record(batch, score)

    def on_train_batch_end(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule", outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        if not (self.scoring == "augmented" and self.records_scores(trainer.current_epoch)):
            return
        if self._batch_field(batch, "video_idx").numel() == 0:
            return  # an empty batch, recorded in on_train_batch_start
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
        self._finish_epoch(trainer, pl_module, trainer.current_epoch)

    def _finish_epoch(self, trainer, pl_module, epoch: int, log: bool = True, saved: Optional[dict] = None) -> None:
        """Gather the epoch's records of every rank, apply them, append the history; every rank calls this.

        ``saved``: the records of every rank as a checkpoint holds them (see :meth:`_pending_state`), applied
        without gathering (every rank read the same checkpoint).
        """
        V = self.num_positions.numel()
        phase = self.phase(epoch)

        # Every rank takes part in both gathers, whatever it recorded (collectives must match).
        if saved is None:
            (seen_v, seen_t), _, _ = self._gather(trainer, self._seen, 2, (torch.long, torch.long))
        else:
            seen_v, seen_t = saved["seen"]["video_idx"], saved["seen"]["start"]
        row = torch.full((V,), -1, dtype=torch.int32)
        row[seen_v] = seen_t.to(torch.int32)  # padding duplicates carry the same start

        # Numbers describing the distributions this epoch drew from: taken before its records are applied.
        entropy = self.policy.entropy(epoch)
        probs = {v: self.policy.probabilities(v, epoch).clone() for v in self.tracked.tolist()}  # few videos
        counts = {"applied": 0, "nonfinite": 0}
        n_dup = 0
        recording = self.records_scores(epoch)
        if recording:
            if saved is None:
                (vid, start, score, ordinal), rank, _ = self._gather(
                    trainer, self._scored, 4, (torch.long, torch.long, torch.float32, torch.long))
                world = trainer.world_size
            else:
                s = saved["scored"]
                vid, start, score, ordinal, rank = s["video_idx"], s["start"], s["score"], s["ordinal"], s["rank"]
                world = saved["world_size"]
            # Global-plan order: plan index = ordinal * world_size + rank (ClipSampler deals plan[r::R]).
            key = ordinal * world + rank
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
        self._log_epoch(trainer, pl_module, epoch, phase, row, counts, n_dup, entropy, log)

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

    def _log_epoch(self, trainer, pl_module, epoch, phase, row, counts, n_dup, entropy, log: bool = True) -> None:
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
        if not (self.log_every_epoch and log):
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
        state = checkpoint.get("callbacks", {}).get(self.state_key)
        if state is None or self.policy is None:
            return
        # Lightning builds the checkpoint on every rank (only rank 0 writes it): the records of the epoch in
        # progress are gathered here so that the file holds every rank's. Every rank takes part.
        local = self._local_pending()
        seen, seen_rank, _ = gather_records(trainer.strategy, local[:2])
        scored, scored_rank, _ = gather_records(trainer.strategy, local[2:6])
        epoch = torch.tensor([-1 if self._pending_epoch is None else self._pending_epoch], dtype=torch.long)
        (next_ordinal, epochs), _, _ = gather_records(trainer.strategy, [local[6], epoch])  # rank order
        pending_epoch = int(epochs.max())
        state["pending"] = self._pending_state(seen + scored + [next_ordinal], [seen_rank, scored_rank],
                                               trainer.world_size, None if pending_epoch < 0 else pending_epoch)
        if self._seen:
            loader = trainer.train_dataloader
            if not (hasattr(loader, "state_dict") and hasattr(loader, "load_state_dict")):
                warnings.warn(f"a checkpoint is saved in the middle of training epoch {trainer.current_epoch} but "
                              f"the train loader ({type(loader).__name__}) does not save its position: a resume "
                              "from it retrains the epoch from its start. Use "
                              "lightning_temporal.sampling.ClipLoader (TemporalDataModule does)", RuntimeWarning)

    # ----------------------------------------------------------------------------------------- state
    def state_dict(self) -> dict:
        if self.policy is None:
            return dict(self._stash) if self._stash is not None else {}
        h = self.history
        local = self._local_pending()
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
            "fingerprint": {k: self._fingerprint[k] for k in ("paths", "num_positions")},
            # this rank's records of the epoch in progress; on_save_checkpoint puts every rank's in a checkpoint
            "pending": self._pending_state(local, [torch.full_like(local[0], self._rank),
                                                   torch.full_like(local[2], self._rank)], 1, self._pending_epoch),
        }

    def load_state_dict(self, state_dict: dict) -> None:
        if not state_dict:
            return
        if state_dict.get("format") not in (1, _STATE_FORMAT):
            raise ValueError(f"StochasticSoftmaxCallback state of format {state_dict.get('format')!r}; this "
                             f"version reads formats 1 and {_STATE_FORMAT}")
        if state_dict["mode"] != self.mode:
            raise ValueError(f"the checkpoint's StochasticSoftmaxCallback ran mode={state_dict['mode']!r}, this one "
                             f"mode={self.mode!r}; resume with the same mode")
        if self.policy is None:
            self._stash = state_dict  # applied when setup builds the policy
            return
        self._apply_state(state_dict)

    def _apply_state(self, state: dict) -> None:
        n = torch.as_tensor(state["num_positions"])
        fingerprint = state.get("fingerprint")
        if fingerprint is None:
            warnings.warn("this StochasticSoftmaxCallback checkpoint (format 1) has no fingerprint of its training "
                          "manifest: it cannot be checked that the tables belong to this manifest", RuntimeWarning)
            fingerprint = {"paths": None, "num_positions": n}
        self._check_fingerprint(fingerprint)
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
        self._reset_pending()
        self._pending_stash = state.get("pending")  # this rank's part is taken in on_train_start

    def _check_fingerprint(self, saved: dict) -> None:
        """Raise, naming the first differing row, unless ``saved`` describes this training manifest."""
        mine = self._fingerprint
        n_saved, n_mine = torch.as_tensor(saved["num_positions"]), mine["num_positions"]
        todo = ("Resume with the training manifest the checkpoint was trained on (the same rows in the same "
                "order), with the same clip_len and stride, or start a new run without ckpt_path: the score "
                "tables belong to that manifest")
        head = "the checkpoint's StochasticSoftmaxCallback tables were learned on another training manifest"
        if n_saved.numel() != n_mine.numel():
            raise ValueError(f"{head}: it had {n_saved.numel()} videos, this one has {n_mine.numel()}. {todo}")
        p_saved, p_mine = saved.get("paths"), mine["paths"]
        same_path = torch.ones_like(n_mine, dtype=torch.bool)
        if p_saved is not None and p_mine is not None:
            same_path = torch.as_tensor(p_saved) == p_mine
        bad = (~same_path | (n_saved != n_mine)).nonzero().flatten()
        if bad.numel() == 0:
            return
        i = int(bad[0])
        where = f"video {i}"
        if mine["names"] is not None:
            where += f" ({mine['sources'][i] if mine['sources'] else ''}: {mine['names'][i]})"
        if not bool(same_path[i]):
            moved = (torch.as_tensor(p_saved) == p_mine[i]).nonzero().flatten()
            what = (f"{where} was video {int(moved[0])} in the checkpoint's manifest (the rows are reordered)"
                    if moved.numel() else f"{where} is not in the checkpoint's manifest (another video is in its "
                                           "row)")
        else:
            what = (f"{where} has {int(n_mine[i])} clip positions here, {int(n_saved[i])} in the checkpoint "
                    "(another frame count, clip_len or stride)")
        raise ValueError(f"{head}: {what}; {bad.numel()} of {n_mine.numel()} rows differ. {todo}")
