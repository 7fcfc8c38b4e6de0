"""StochasticSoftmaxCallback: Temporal Stochastic Softmax clip sampling as a Lightning callback (Ayral et al.,
supplementary §S.1).

The callback is glue: the math (score tables, phases, policies, the clip sampler) lives in
``lightning_temporal.sampling`` and never imports Lightning; the parts of the glue have their own modules
(:mod:`.tss_records` the record buffer, :mod:`.tss_history` the sampling history, :mod:`.tss_manifest` the
manifest fingerprint and the hit rate, :mod:`.tss_scoring` clean scoring; the policy factory is
:mod:`lightning_temporal.sampling.registry`). Here we

* build the sampling policy for the data module's ``clip_sampler`` (a name, a class, a ``class_path`` mapping or
  an instance) and install it;
* score each training batch (clean clips in eval mode under ``torch.no_grad()`` before the training step, or
  the training step's own logits), and the further positions the policy asks for, and record
  ``(video_idx, start, target logit, predicted class, margin)``;
* at the end of each training epoch gather the records of every rank in global-plan order and apply them to
  the policy, so every rank holds identical tables and draws the same next plan;
* keep the sampling history and log per-epoch numbers;
* carry everything that changes through ``state_dict`` / ``load_state_dict`` (exact resume).

It talks to the policy only through :class:`~lightning_temporal.sampling.SamplingPolicy` (``phase``,
``records_scores``, ``positions_per_video``, ``extra_starts``, ``update``, ``entropy``, ``probabilities``,
``table``, ``state_dict``).
"""
from __future__ import annotations

import inspect
import itertools
import warnings
from typing import Any, Dict, Mapping, Optional, Sequence, Union

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor

from lightning_temporal.callbacks.tss_history import HistoryBuffer, SamplingHistory
from lightning_temporal.callbacks.tss_manifest import EventWindows, ManifestFingerprint
from lightning_temporal.callbacks.tss_records import EpochRecords, global_plan_order, pending_state
from lightning_temporal.callbacks.tss_scoring import ExtraPositions, batch_field, check_logits, clean_logits
from lightning_temporal.checks import check_choice, check_int, fail
from lightning_temporal.distributed import gather_records
from lightning_temporal.sampling.phases import PHASE_CODES, Phase, PhaseSchedule
from lightning_temporal.sampling.policies import (
    PriorPolicy,
    ReinforcePolicy,
    check_baseline_momentum,
    check_gamma_s,
    check_reinforce_lr,
)
from lightning_temporal.sampling.policy import PolicyContext, SamplingPolicy
from lightning_temporal.sampling.records import logit_summary
from lightning_temporal.sampling.registry import POLICIES, build_policy, policy_class, policy_name

__all__ = ["StochasticSoftmaxCallback", "SamplingHistory", "PHASE_CODES", "POLICIES"]

_SCORING = ("clean", "augmented")
_KEEP_HISTORY = ("all", "tracked")
# 2: + manifest fingerprint, + pending records of the epoch in progress; 3: every policy keeps its table under
# "table"; 4: + predicted class and margin of each pending scored record
_STATE_FORMAT = 4


def _check_track_videos(track_videos) -> Union[int, list]:
    """A count >= 0, or a list of video indices >= 0."""
    allowed = "a count >= 0 or a list of video indices >= 0"
    if isinstance(track_videos, int) and not isinstance(track_videos, bool):
        return track_videos if track_videos >= 0 else fail("track_videos", allowed, track_videos)
    try:
        tv = [int(v) for v in track_videos]
    except TypeError:
        fail("track_videos", allowed, track_videos)
    return tv if all(v >= 0 for v in tv) else fail("track_videos", allowed, tv)


class StochasticSoftmaxCallback(Callback):
    """Temporal Stochastic Softmax training-clip sampling (Ayral et al., supplementary §S.1).

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
    callback builds the policy (a :class:`~lightning_temporal.sampling.SamplingPolicy`) for the sampler's videos
    and installs it (``clip_sampler.policy``); from then on it talks to the policy only through that contract.

    Choosing the policy, without editing the package: ``mode="tss"`` (a name of
    :data:`~lightning_temporal.sampling.POLICIES`), or ``policy=`` one of: a name, a ``SamplingPolicy`` subclass
    or its import path, ``{"class_path": "my_lab.GatedPolicy", "init_args": {...}}`` (the form a YAML recipe
    gives through LightningCLI), or an instance built for the sampler's videos. A name or class is built with
    ``cls.from_context(context, **policy_args)``
    (:meth:`~lightning_temporal.sampling.SamplingPolicy.from_context`), the context carrying what only the
    callback knows: clip positions per video, clip span, ``PhaseSchedule(warmup_epochs, exploration_epochs)``,
    ``seed``, ``gamma_s`` and the model's ``num_classes``.

    Args:
        gamma_s: sampling temperature γ_s >= 0 of softmax(γ_s·w) (``tss``, ``prior``); 0 = uniform.
        warmup_epochs: W >= 0 epochs of uniform sampling without recording (``tss``, ``reinforce``).
        exploration_epochs: E >= 1 epochs on the deterministic grid (``tss`` only; see
            ``lightning_temporal.sampling.phases`` for E = 1, the single middle slot).
        scoring: ``"clean"`` (default): before each training step, score ``batch["clean"]`` with the
            module in eval mode under ``torch.no_grad()`` through ``pl_module.score_clips`` (or ``forward``);
            ``"augmented"``: reuse ``outputs["logits"]`` returned by ``training_step`` (seed Table S.2 compares the
            two).
        mode: ``"tss"`` (warm-up, exploration, exploitation with Eq. S.2 updates), ``"bootstrap"``
            (:class:`~lightning_temporal.sampling.BootstrapPolicy`), ``"prior"`` (softmax of the
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
        log_every_epoch: log ``tss/phase`` (the phase the policy says the epoch was in), ``tss/entropy``,
            ``tss/score_entropy``, ``tss/hit_rate``, ``tss/records``, ``tss/nonfinite``, ``tss/duplicates`` and
            ``tss/clean_top1`` (accuracy of the epoch's scored clean clips) through ``pl_module.log`` each epoch.
        reinforce_lr, reinforce_baseline_momentum: α and the baseline momentum of ``reinforce``.
        frame_scores: ``prior`` only: per-video 1-D frame scores; None = read them from
            ``datamodule.train_manifest.load_frame_scores(i)``.
        policy: the policy instead of ``mode`` (see above); ``mode`` must then be left at its default.
        policy_args: constructor arguments of the policy of ``mode`` / ``policy`` (merged over a ``class_path``
            mapping's ``init_args``); e.g. ``{"positions_per_video": 3, "epsilon": 0.1}`` for ``"bootstrap"``.

    Further positions. A policy with ``positions_per_video`` k > 1 has k - 1 further positions per video per
    epoch scored (:meth:`extra_starts`): their clean clips are read from the train loader's dataset and scored
    in eval mode without gradients, a batch at a time, and recorded after the trained clip's record.

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
                 frame_scores: Optional[Sequence] = None,
                 policy: Optional[Union[str, Dict[str, Any]]] = None,
                 policy_args: Optional[Dict[str, Any]] = None):
        self.gamma_s = check_gamma_s(gamma_s)
        self.schedule = PhaseSchedule(warmup_epochs, exploration_epochs)
        self.scoring = check_choice("scoring", scoring, _SCORING, hint="'clean': score an un-augmented copy in "
                                    "eval mode; 'augmented': reuse the training logits")
        if policy is None:
            policy = check_choice("mode", mode, tuple(POLICIES))
        elif mode != "tss":
            raise ValueError(f"give the policy once: mode={mode!r} (a name) or policy={policy!r}, not both")
        self._policy_spec = policy
        self._policy_cls, init_args = policy_class(policy)
        self.mode = policy_name(policy)
        if policy_args is not None and isinstance(policy, SamplingPolicy):
            raise ValueError("policy_args is for a policy given by name or class; build the instance with them")
        init_args.update(policy_args or {})
        if issubclass(self._policy_cls, ReinforcePolicy):
            init_args.setdefault("lr", check_reinforce_lr(reinforce_lr, "reinforce_lr"))
            init_args.setdefault("baseline_momentum", check_baseline_momentum(reinforce_baseline_momentum,
                                                                              "reinforce_baseline_momentum"))
        self.reinforce_lr, self.reinforce_baseline_momentum = reinforce_lr, reinforce_baseline_momentum
        if frame_scores is not None:
            if not issubclass(self._policy_cls, PriorPolicy):
                raise ValueError(f"frame_scores is only used by mode='prior', got mode={self.mode!r}")
            init_args["frame_scores"] = frame_scores
        self.frame_scores = frame_scores
        self.policy_args = init_args
        for name, v in (("clip_len", clip_len), ("stride", stride)):
            if v is not None:
                check_int(name, v, minimum=1, hint="or None: read from the data module")
        self.clip_len, self.stride = clip_len, stride
        self.track_videos = _check_track_videos(track_videos)
        self.keep_history = check_choice("keep_history", keep_history, _KEEP_HISTORY)
        self.seed = check_int("seed", seed)
        self.log_every_epoch = bool(log_every_epoch)

        self.policy: Optional[SamplingPolicy] = None
        self.clip_sampler = None
        self.span: Optional[int] = None
        self.num_positions: Optional[Tensor] = None
        self.tracked: Optional[Tensor] = None
        self._events: Optional[EventWindows] = None
        self._fingerprint: Optional[ManifestFingerprint] = None
        self._stash: Optional[dict] = None          # state loaded before the policy existed
        self._pending_stash: Optional[dict] = None  # records of an unfinished epoch loaded from a checkpoint
        self._rank, self._world_size = 0, 1
        self._records = EpochRecords()
        self._history = HistoryBuffer(keep_all=self.keep_history == "all")
        self._extra = ExtraPositions(self.seed)     # the further positions a policy has scored
        #: per-epoch numbers (also logged): list of dicts
        self.metrics: list[dict] = []
        #: the gathered records applied at the last epoch end: {"video_idx", "start", "score", "predicted",
        #: "margin", "rank"}
        self.last_records: dict[str, Tensor] = {}

    @property
    def policy_class(self) -> type:
        """The class of the policy this callback builds (known before set-up)."""
        return self._policy_cls

    # ------------------------------------------------------------------------------------------ phases
    @property
    def warmup_epochs(self) -> int:
        return self.schedule.warmup_epochs

    @property
    def exploration_epochs(self) -> int:
        return self.schedule.exploration_epochs

    def phase(self, epoch: int) -> Phase:
        """The phase of an epoch: the policy's. Before the policy is built, from its class and the schedule; a
        policy that decides its phases from data answers only once built (``ValueError`` before)."""
        if self.policy is not None:
            return self.policy.phase(epoch)
        phase = self._policy_cls.phase_of(epoch, self.schedule)
        if phase is None:
            raise ValueError(f"the phases of {self.mode} are decided from data: ask once the policy is built "
                             "(after setup('fit'))")
        return phase

    def records_scores(self, epoch: int) -> bool:
        """Whether clips are scored in this epoch (nothing is scored in warm-up, nor ever for prior/uniform)."""
        if self.policy is not None:
            return self.policy.records_scores(epoch)
        return self._policy_cls.records_scores_of(epoch, self.schedule)

    # ------------------------------------------------------------------------------------------ set-up
    def setup(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule", stage: str) -> None:
        if stage != "fit":
            return
        sampler = getattr(trainer.datamodule, "clip_sampler", None) if trainer.datamodule is not None else None
        if sampler is not None:
            self._install(sampler, trainer.datamodule, pl_module)
        # else: maybe the sampler only exists once the train loader is built; on_train_start looks again.

    def on_fit_start(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule") -> None:
        # A run too short to reach exploitation trains like uniform sampling: say so once, before it starts.
        max_epochs = trainer.max_epochs
        cls = self._policy_cls
        if not cls.learns or not cls.phases_known_ahead(self.schedule) or trainer.fast_dev_run \
                or max_epochs is None or max_epochs < 0:
            return
        phase = lambda e: cls.phase_of(e, self.schedule)  # noqa: E731
        first = next(e for e in itertools.count() if phase(e) is Phase.EXPLOITATION)  # W + E at most
        if max_epochs > first:
            return
        phases = [phase(e) for e in range(first)]
        counts = [(phases.count(p), name) for p, name in ((Phase.WARMUP, "warm-up"),
                                                           (Phase.EXPLORATION, "exploration"))]
        before = " + ".join(f"{n} {name}" for n, name in counts if n)
        lower = " / ".join(f"{name.replace('-', '')}_epochs" for n, name in counts if n)
        rank_zero_warn(
            f"trainer.max_epochs={max_epochs} ends before exploitation begins at epoch {first} ({before} epochs, "
            f"counted from 0): no clip of this run is drawn from the learned score tables. Raise max_epochs above "
            f"{first} or lower {lower}")

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
            self._install(sampler, trainer.datamodule, pl_module)
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

    def _needs_span(self) -> bool:
        params = inspect.signature(self._policy_cls.__init__).parameters
        return any(n in params and n not in self.policy_args for n in ("clip_len", "span"))

    def _resolve_span(self, datamodule) -> Optional[int]:
        F = self.clip_len if self.clip_len is not None else getattr(datamodule, "clip_len", None)
        s = self.stride if self.stride is not None else getattr(datamodule, "stride", 1)
        if F is None:
            if self._needs_span() and not isinstance(self._policy_spec, SamplingPolicy):
                raise ValueError(f"mode={self.mode!r} needs the clip length: pass clip_len= to "
                                 "StochasticSoftmaxCallback or give the data module a `clip_len` attribute")
            return None
        F = check_int("clip_len", F, minimum=1, hint="datamodule.clip_len unless given")
        s = check_int("stride", s, minimum=1, hint="datamodule.stride unless given")
        return (F - 1) * s + 1

    def _context(self, num_positions: Tensor, datamodule, pl_module) -> PolicyContext:
        manifest = getattr(datamodule, "train_manifest", None)
        frame_scores = None
        if manifest is not None and hasattr(manifest, "load_frame_scores"):
            # I/O once at set-up (one file per video), not a hot path; read only by a policy that asks.
            frame_scores = lambda: [manifest.load_frame_scores(i)  # noqa: E731
                                    for i in range(num_positions.numel())]
        num_classes = getattr(pl_module, "num_classes", None) or getattr(datamodule, "num_classes", None)
        return PolicyContext(num_positions=num_positions, span=self.span, schedule=self.schedule, seed=self.seed,
                             gamma_s=self.gamma_s, frame_scores=frame_scores,
                             num_classes=int(num_classes) if num_classes is not None else None)

    def _tracked_videos(self, num_videos: int) -> Tensor:
        """int64 [K]: ``track_videos`` evenly spaced videos, or the listed ones (checked against the videos)."""
        if isinstance(self.track_videos, int):
            k = min(self.track_videos, num_videos)
            return (torch.linspace(0, num_videos - 1, k).round().long().unique() if k
                    else torch.zeros(0, dtype=torch.long))
        bad = [v for v in self.track_videos if v >= num_videos]
        if bad:
            raise ValueError(f"track_videos {bad} are outside the {num_videos} training videos (0..{num_videos - 1})")
        return torch.tensor(sorted(set(self.track_videos)), dtype=torch.long)

    def _install(self, sampler, datamodule, pl_module=None) -> None:
        num_positions = torch.as_tensor(sampler.num_positions, dtype=torch.int64)
        if self.policy is not None and self.num_positions is not None \
                and torch.equal(self.num_positions, num_positions):
            # a second fit() with the same callback continues with the same tables
            sampler.policy = self.policy
            self.clip_sampler = sampler
            return
        self.span = self._resolve_span(datamodule)
        self.num_positions = num_positions
        self.tracked = self._tracked_videos(num_positions.numel())
        self._history.tracked, self._history.num_videos = self.tracked, num_positions.numel()
        manifest = getattr(datamodule, "train_manifest", None)
        self._events = EventWindows.from_manifest(manifest, num_positions.numel(), self.span)
        self._fingerprint = ManifestFingerprint(manifest, num_positions)
        spec = self._policy_spec
        self.policy = build_policy(spec, self._context(num_positions, datamodule, pl_module),
                                   None if isinstance(spec, SamplingPolicy) else self.policy_args)
        if int(self.policy.positions_per_video) > 1 and self.scoring != "clean":
            raise ValueError(f"{type(self.policy).__name__} scores positions_per_video="
                             f"{self.policy.positions_per_video} positions per video: its further positions are "
                             "scored clean; use scoring='clean'")
        if self._stash is not None:
            stash, self._stash = self._stash, None
            self._apply_state(stash)
        sampler.policy = self.policy
        self.clip_sampler = sampler

    # ----------------------------------------------------------------------------------------- records
    def _restore_pending(self, trainer, pl_module, pending: dict) -> None:
        """The records of an unfinished epoch saved in a checkpoint: applied now if Lightning resumes after that
        epoch, else this rank's part is taken to go on with the epoch."""
        self._records.reset()
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
        self._records.take(pending, self._rank)

    def score_clean(self, trainer, pl_module, batch) -> Tensor:
        """The clip scores f(x_t) of a training batch's clean clips: float32 ``[N]``, the logit of each video's
        target label with the module in eval mode under ``torch.no_grad()`` (seed §S.1, clean scoring; Table S.2).
        ``trainer`` may be None (no precision context). ``KeyError`` when the batch has no ``"clean"``."""
        return logit_summary(self._clean_batch_logits(trainer, pl_module, batch), batch_field(batch, "label"))[0]

    def _clean_batch_logits(self, trainer, pl_module, batch) -> Tensor:
        self._require_clean(batch)
        return clean_logits(trainer, pl_module, batch["clean"])

    @staticmethod
    def _require_clean(batch) -> None:
        if not isinstance(batch, Mapping) or "clean" not in batch:
            raise KeyError("scoring='clean' needs the un-augmented copy batch['clean']: build the data module "
                           "with a clean transform (TemporalDataModule does when the callback scores clean "
                           "clips) or use StochasticSoftmaxCallback(scoring='augmented')")

    def extra_starts(self, epoch: int) -> Tensor:
        """The further positions the policy scores in ``epoch``: int64 ``[V, k - 1]``, drawn once per epoch from a
        generator seeded by (seed, epoch) (the same on every rank and after a resume)."""
        return self._extra.starts(self.policy, epoch)

    def _record(self, batch, summary: Optional[tuple]) -> Tensor:
        skipped = batch.get("skipped") if isinstance(batch, Mapping) else None
        return self._records.add(batch_field(batch, "video_idx").detach(), batch_field(batch, "start").detach(),
                                 summary, int(skipped.numel()) if torch.is_tensor(skipped) else 0)

    def on_train_batch_start(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule", batch: Any,
                             batch_idx: int) -> None:
        epoch = trainer.current_epoch
        self._records.epoch = epoch
        summary = None
        vid = batch_field(batch, "video_idx")
        empty = vid.numel() == 0  # every clip failed to decode
        scored = self.records_scores(epoch) and not empty
        if self.scoring == "clean" and self._policy_cls.learns:
            self._require_clean(batch)  # fail at the first batch, not when warm-up ends
            if scored:
                summary = logit_summary(self._clean_batch_logits(trainer, pl_module, batch), batch["label"])
        elif self.scoring == "augmented" and scored:
            return  # recorded in on_train_batch_end, from the training step's logits
        ordinal = self._record(batch, summary)
        if summary is not None and int(self.policy.positions_per_video) > 1:
            extra = self._extra.score(trainer, pl_module, batch, vid.detach(), ordinal, self.policy, epoch)
            if extra is not None:
                self._records.add_extra(*extra)

    def on_train_batch_end(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule", outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        if not (self.scoring == "augmented" and self.records_scores(trainer.current_epoch)):
            return
        if batch_field(batch, "video_idx").numel() == 0:
            return  # an empty batch, recorded in on_train_batch_start
        if not isinstance(outputs, Mapping) or "logits" not in outputs:
            got = sorted(outputs.keys()) if isinstance(outputs, Mapping) else type(outputs).__name__
            raise KeyError("scoring='augmented' needs training_step to return {'loss': loss, 'logits': "
                           f"logits.detach()}}; it returned {got}. Or use scoring='clean'")
        label = batch_field(batch, "label")
        logits = check_logits(outputs["logits"], label.shape[0], "outputs['logits']")
        self._record(batch, logit_summary(logits, label))

    # ------------------------------------------------------------------------------------- epoch end
    def on_train_epoch_end(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule") -> None:
        if self.policy is None:
            return
        self._finish_epoch(trainer, pl_module, trainer.current_epoch)

    def _epoch_records(self, trainer, epoch: int, saved: Optional[dict]):
        """Every rank's ``(seen video, seen start)`` and, when the epoch's clips are scored, its scored records
        (a dict of 1-D tensors, with ``rank``) in global-plan order: gathered from every rank (all ranks call this:
        the collectives must match), or read from ``saved``, the records of every rank as a checkpoint holds them
        (every rank read the same checkpoint)."""
        local = self._records.local() if saved is None else None
        if saved is None:
            (seen_v, seen_t), _, _ = gather_records(trainer.strategy, local[:2])
        else:
            seen_v, seen_t = saved["seen"]["video_idx"], saved["seen"]["start"]
        if not self.records_scores(epoch):
            return (seen_v, seen_t), None
        if saved is None:
            (vid, start, score, ordinal, pred, margin), rank, _ = gather_records(trainer.strategy, local[2:8])
            fields = {"video_idx": vid, "start": start, "score": score, "ordinal": ordinal, "predicted": pred,
                      "margin": margin, "rank": rank}
            world = trainer.world_size
        else:
            fields = dict(saved["scored"])
            n = fields["video_idx"].shape[0]
            fields.setdefault("predicted", torch.full((n,), -1, dtype=torch.long))
            fields.setdefault("margin", torch.full((n,), float("nan")))
            world = saved["world_size"]
        return (seen_v, seen_t), global_plan_order(fields, world)

    def _finish_epoch(self, trainer, pl_module, epoch: int, log: bool = True, saved: Optional[dict] = None) -> None:
        """Gather the epoch's records of every rank, apply them, append the history; every rank calls this.

        ``saved``: the records of every rank as a checkpoint holds them (see :func:`pending_state`), applied
        without gathering (every rank read the same checkpoint).
        """
        (seen_v, seen_t), scored = self._epoch_records(trainer, epoch, saved)
        row = torch.full((self.num_positions.numel(),), -1, dtype=torch.int32)
        row[seen_v] = seen_t.to(torch.int32)  # padding duplicates carry the same start

        # The phase and the distributions this epoch drew from: taken before its records are applied (a policy
        # that decides its phases from data may change the next epochs' at this update, never this one's).
        phase = self.policy.phase(epoch)
        entropy = self.policy.entropy(epoch)
        probs = {v: self.policy.probabilities(v, epoch).clone() for v in self.tracked.tolist()}  # few videos
        counts, n_dup = {"applied": 0, "nonfinite": 0}, 0
        self.last_records = {}
        if scored is not None:
            vid = scored["video_idx"]
            n_dup = int(vid.numel() - torch.unique(vid).numel()) if vid.numel() else 0
            k = int(self.policy.positions_per_video)
            if k > 1:  # the extra positions are expected repeats, not DDP padding
                n_dup = max(0, n_dup - (k - 1) * int(torch.unique(vid).numel()))
            self.last_records = {key: scored[key] for key in ("video_idx", "start", "score", "predicted", "margin",
                                                              "rank")}
            known = bool((scored["predicted"] >= 0).all())
            counts = self.policy.update(epoch, vid, scored["start"], scored["score"],  # leaves out NaN/inf scores
                                        predicted=scored["predicted"] if known else None,
                                        margin=scored["margin"] if known else None)
        self._records.reset()
        tables = {v: self._table_of(v) for v in self.tracked.tolist()}
        self._history.append(epoch, PHASE_CODES[phase], row, tables, probs)
        self._log_epoch(trainer, pl_module, epoch, phase, row, counts, n_dup, entropy, scored, log)

    def _table_of(self, v: int) -> Tensor:
        table = self.policy.table
        return table[v].clone() if table is not None else torch.zeros(int(self.num_positions[v]), dtype=torch.float32)

    @property
    def history(self) -> SamplingHistory:
        """The sampling history so far (see :class:`SamplingHistory`)."""
        return self._history.view()

    def hit_rate(self, starts: Tensor) -> Optional[float]:
        """Fraction of this epoch's clips ``[t, t + span)`` that overlap their video's event window.

        Args: ``starts`` int [V], one start per video (-1 = not trained). Only videos with a known event window
        and a start count. Returns None when the manifest has no event windows (or no clip length is known).
        """
        return None if self._events is None else self._events.hit_rate(starts)

    def _log_epoch(self, trainer, pl_module, epoch, phase, row, counts, n_dup, entropy, scored,
                   log: bool = True) -> None:
        m = {
            "epoch": epoch,
            "phase": PHASE_CODES[phase],
            "entropy": float(entropy.mean()),
            "records": int(counts.get("applied", 0)),
            "nonfinite": int(counts.get("nonfinite", 0)),
            "duplicates": n_dup,
        }
        if self.policy.learns and self.policy.table is not None:  # how peaked the learned tables are, any phase
            m["score_entropy"] = float(self.policy.table.entropy(self.policy.temperature).mean())
        if scored is not None and scored["margin"].numel() and bool((scored["predicted"] >= 0).all()):
            m["clean_top1"] = float((scored["margin"] > 0).float().mean())  # accuracy of the scored clean clips
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
        local = self._records.local()
        seen, seen_rank, _ = gather_records(trainer.strategy, local[:2])
        scored, scored_rank, _ = gather_records(trainer.strategy, local[2:8])
        epoch = torch.tensor([-1 if self._records.epoch is None else self._records.epoch], dtype=torch.long)
        (next_ordinal, epochs), _, _ = gather_records(trainer.strategy, [local[8], epoch])  # rank order
        pending_epoch = int(epochs.max())
        state["pending"] = pending_state(seen + scored + [next_ordinal], [seen_rank, scored_rank],
                                         trainer.world_size, None if pending_epoch < 0 else pending_epoch)
        if self._records.seen:
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
        local = self._records.local()
        return {
            "format": _STATE_FORMAT,
            "mode": self.mode,
            "num_positions": self.num_positions.clone(),
            "policy": self.policy.state_dict(),
            "history": self._history.state_dict(),
            "metrics": [dict(m) for m in self.metrics],
            "fingerprint": self._fingerprint.state(),
            # this rank's records of the epoch in progress; on_save_checkpoint puts every rank's in a checkpoint
            "pending": pending_state(local, [torch.full_like(local[0], self._rank),
                                             torch.full_like(local[2], self._rank)], 1, self._records.epoch),
        }

    def load_state_dict(self, state_dict: dict) -> None:
        if not state_dict:
            return
        if state_dict.get("format") not in range(1, _STATE_FORMAT + 1):
            raise ValueError(f"StochasticSoftmaxCallback state of format {state_dict.get('format')!r}; this "
                             f"version reads formats 1 to {_STATE_FORMAT}")
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
        self._fingerprint.check(fingerprint)
        self.policy.load_state_dict(state["policy"])
        self._history.load_state_dict(state["history"], n.numel())
        self.metrics = [dict(m) for m in state.get("metrics", [])]
        self._records.reset()
        self._extra.reset()
        self._pending_stash = state.get("pending")  # this rank's part is taken in on_train_start
