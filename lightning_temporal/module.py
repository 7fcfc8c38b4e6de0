"""``VideoClassifier``: the LightningModule users subclass; clip training, whole-video evaluation."""
from __future__ import annotations

import contextlib
import warnings
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from lightning.pytorch import LightningModule
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import Tensor, nn
from torchmetrics import MeanMetric

from lightning_temporal.checks import check_int, check_number
from lightning_temporal.data.dataset import SkipCounter
from lightning_temporal.data.video_dataset import gather_clips
from lightning_temporal.evaluation import dense_clip_scores, pad_clip_scores, pool_video_scores, pooling_weights
from lightning_temporal.metrics import classification_metrics
from lightning_temporal.models.backbone import StagedBackbone, gmacs_by_bins
from lightning_temporal.models.sgs import SimilarityGuidedSampling
from lightning_temporal.pooling import softmax_temporal_pool
from lightning_temporal.sampling.sampler import counter_seed

__all__ = ["VideoClassifier", "pad_clip_scores", "pooling_key"]


def pooling_key(gamma_p: float) -> str:
    """The key of a pooling temperature in metric names: ``"gp0"``, ``"gp1"``, ``"gp0p5"``, ``"gp1e06"`` (as in
    ``val/gp1e06/top1``)."""
    return "gp" + (f"{float(gamma_p):g}".replace("+", "").replace(".", "p"))


class VideoClassifier(LightningModule):
    """A 3D CNN video classifier: trained on clips, evaluated on whole videos with softmax temporal pooling.

    >>> from lightning import Trainer                                                   # doctest: +SKIP
    >>> from lightning_temporal import StochasticSoftmaxCallback, TemporalDataModule     # doctest: +SKIP
    >>> model = VideoClassifier("simple3d", num_classes=4, gamma_p=1.0)
    >>> model(torch.zeros(2, 3, 8, 32, 32)).shape
    torch.Size([2, 4])
    >>> trainer = Trainer(callbacks=[StochasticSoftmaxCallback(gamma_s=1.0)])          # doctest: +SKIP
    >>> trainer.fit(model, datamodule=TemporalDataModule(synthetic={"root": "data"}))   # doctest: +SKIP

    Subclass it to change the network or the loss: override :meth:`compute_loss`, pass any ``nn.Module`` as
    ``backbone`` (``forward(clips [N, 3, T, H, W]) -> logits [N, K]``), or override :meth:`score_clips` (what
    ``StochasticSoftmaxCallback`` calls, in eval mode under ``no_grad``, on the clean clips).

    Evaluation (validation / test): the clip logits of each video (``[K, C]``, from the data module's
    whole-video batches) are pooled with :func:`~lightning_temporal.softmax_temporal_pool` at ``gamma_p``
    (0 = mean, 1e6 = max; independent of the sampling temperature γ_s). Metrics (top-1, mean per-class
    accuracy, top-5 with > 5 classes, EER accuracy for 2 classes) are logged as ``val/top1`` etc. at
    ``gamma_p`` and as ``val/gp0/top1`` etc. for each of ``report_gamma_p``.

    Args:
        backbone: a name of :func:`~lightning_temporal.models.build_backbone` or an ``nn.Module``.
        num_classes: number of classes K. backbone_kwargs: extra builder arguments (e.g. ``temporal_pool``).
        sgs, attention: Similarity Guided Sampling / double-attention options (dicts) for named backbones.
        optimizer, lr_scheduler: callables building them from the parameters (LightningCLI style).
        label_smoothing: of the cross-entropy loss.
        gamma_p: pooling temperature of the reported metrics. report_gamma_p: further temperatures logged.
        eval_chunk: clips per forward pass during evaluation.

    Training. A batch whose clips all failed to decode trains nothing: on one process the step is skipped; under
    DDP the rank joins the gradient average with zeros (every rank must), so it still takes part in every
    collective. Such batches are counted (``train/empty_batches``) beside the skipped clips
    (``train/skipped_clips``). ``train/loss_epoch`` and ``train/top1`` are torchmetrics means over the clips
    of all ranks; ``train/loss_step`` is this rank's batch loss.

    SGS, what it saved. With a Similarity Guided Sampling layer in the backbone, training, validation and test
    log the mean over clips (all ranks) of ``<stage>/sgs_bins`` (the temporal positions each clip kept, B',
    read from the masks the layers return; summed over the layers, e.g. SlowFast's two pathways) and, for a
    backbone with one SGS layer on whole clips, ``<stage>/gmacs`` (GMACs per clip of what ran for that clip's
    own B', :func:`~lightning_temporal.models.backbone.gmacs_by_bins`, as
    :func:`~lightning_temporal.flops.gmacs_per_clip` counts it) and ``<stage>/gmacs_saved`` (1 - those GMACs /
    the GMACs of the same backbone without SGS). ``sgs_bins`` and ``gmacs`` show in the progress bar;
    ``predict`` returns them per video.

    Randomness. Before each training batch the global torch RNG is seeded from (the run's seed, epoch, batch
    index, rank) (:func:`~lightning_temporal.sampling.sampler.counter_seed`), so dropout masks and any other
    global-RNG draw of a training step are a function of the step: a run resumed from a checkpoint draws the
    same ones as the uninterrupted run. The run's seed is ``torch.initial_seed()`` when ``fit`` first starts
    (set it with ``lightning.seed_everything``) and travels in every checkpoint, with the skip counter.
    """

    def __init__(
        self,
        backbone: Union[str, nn.Module] = "simple3d",
        num_classes: int = 4,
        backbone_kwargs: Optional[Dict[str, Any]] = None,
        sgs: Optional[Dict[str, Any]] = None,
        attention: Optional[Dict[str, Any]] = None,
        optimizer: OptimizerCallable = torch.optim.Adam,
        lr_scheduler: Optional[LRSchedulerCallable] = None,
        label_smoothing: float = 0.0,
        gamma_p: float = 1.0,
        report_gamma_p: Sequence[float] = (0.0, 1e6),
        eval_chunk: int = 32,
    ):
        super().__init__()
        self.save_hyperparameters(ignore=["backbone", "optimizer", "lr_scheduler"] if isinstance(backbone, nn.Module)
                                  else ["optimizer", "lr_scheduler"])
        if backbone_kwargs and "pretrained" in backbone_kwargs:
            # A checkpoint of this module holds the trained weights: restoring it must not need the file (or hold
            # the state dict) the backbone started from.
            self.hparams["backbone_kwargs"] = {k: v for k, v in backbone_kwargs.items() if k != "pretrained"}
        check_int("model.num_classes", num_classes, minimum=2)
        for name, g in [("model.gamma_p", gamma_p)] + [("model.report_gamma_p[]", g) for g in report_gamma_p]:
            check_number(name, g, minimum=0, finite=False, hint="0 = average pooling, 1e6 = max pooling")
        check_number("model.label_smoothing", label_smoothing, minimum=0, maximum=1, exclusive_maximum=True)
        check_int("model.eval_chunk", eval_chunk, minimum=1, hint="clips per forward pass")
        if isinstance(backbone, str):
            from lightning_temporal.models import build_backbone

            try:
                backbone = build_backbone(backbone, num_classes, sgs=sgs, attention=attention,
                                          **(backbone_kwargs or {}))
            except (ValueError, TypeError) as err:
                raise ValueError(f"model.backbone: {err}") from None
        elif not isinstance(backbone, nn.Module):
            raise TypeError(f"model.backbone={backbone!r}; a backbone name or an nn.Module is allowed")
        elif sgs is not None or attention is not None:
            raise ValueError("model.sgs / model.attention apply to named backbones; build them into your module")
        self.backbone = backbone
        self.optimizer, self.lr_scheduler = optimizer, lr_scheduler
        self.gamma_p = float(gamma_p)
        self.gammas = [self.gamma_p] + [float(g) for g in report_gamma_p if float(g) != self.gamma_p]
        self.eval_chunk = eval_chunk
        self.loss_fn = nn.CrossEntropyLoss(label_smoothing=label_smoothing)
        self.num_classes = num_classes
        self.metrics = nn.ModuleDict({f"{stage}_{pooling_key(g)}": classification_metrics(
            num_classes, prefix=self.metric_prefix(stage, g)) for stage in ("val", "test") for g in self.gammas})
        self.train_metrics = nn.ModuleDict({"loss": MeanMetric(), "top1": MeanMetric()})
        self.eval_loss = nn.ModuleDict({"val": MeanMetric(), "test": MeanMetric()})
        self.sgs_metrics = None if not self._sgs_layers() else nn.ModuleDict({
            f"{stage}_{key}": MeanMetric() for stage in ("train", "val", "test")
            for key in ("sgs_bins", "gmacs", "gmacs_saved")})
        self._gmacs_tables: Dict[Tuple[int, ...], Optional[Tuple[Tensor, float]]] = {}
        self.skips = SkipCounter()
        self.epochs_trained: Optional[int] = None
        self.rng_seed: Optional[int] = None  # seeds the per-step global RNG; set at the first fit, checkpointed

    def metric_prefix(self, stage: str, gamma_p: float) -> str:
        """Where the metrics of ``stage`` (``"val"``/``"test"``) at pooling temperature ``gamma_p`` are logged:
        ``"test/"`` at the module's ``gamma_p``, ``"test/gp0/"`` etc. at each of ``report_gamma_p``."""
        return f"{stage}/" if float(gamma_p) == self.gamma_p else f"{stage}/{pooling_key(gamma_p)}/"

    # ------------------------------------------------------------------------------------------- model
    def forward(self, clips: Tensor) -> Tensor:
        """Logits ``[N, K]`` of clips ``[N, 3, T, H, W]``."""
        return self.backbone(clips)

    def score_clips(self, clips: Tensor) -> Tensor:
        """Logits ``[N, K]`` the clip sampler learns from (called in eval mode under ``no_grad``)."""
        return self(clips)

    def compute_loss(self, logits: Tensor, labels: Tensor) -> Tensor:
        return self.loss_fn(logits, labels)

    def configure_optimizers(self):
        optimizer = self.optimizer(self.parameters())
        if self.lr_scheduler is None:
            return optimizer
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": self.lr_scheduler(optimizer),
                                                         "monitor": "val/top1"}}

    def setup(self, stage: str) -> None:
        dm = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        k = getattr(dm, "num_classes", None) if dm is not None else None
        if k is None or k == self.num_classes:
            return
        head = f"model.num_classes={self.num_classes} but the data has {k} classes ({', '.join(dm.class_names)})"
        train = getattr(dm, "train_manifest", None) if stage == "fit" else None
        if k > self.num_classes and train is not None and hasattr(train, "rarest_labels"):
            # more labels than the model has classes: usually a typo makes a class of its own (seen once)
            raise ValueError(f"{head}; the training manifest's rarest labels: {train.rarest_labels()}. A label seen "
                             "once is usually a typo: fix it in the manifest, or give data.classes the class list "
                             f"so that unknown labels are named. Set model.num_classes: {k} only if the data really "
                             "has these classes")
        if k < self.num_classes:
            raise ValueError(f"{head}: the class list is the labels the training manifest uses unless data.classes "
                             f"gives it; give data.classes all {self.num_classes} class names (or set "
                             f"model.num_classes: {k} if the data has only these)")
        raise ValueError(f"{head}; set model.num_classes: {k} if the data really has these classes")

    # ------------------------------------------------------------------------------------------- SGS
    def _sgs_layers(self) -> List[SimilarityGuidedSampling]:
        return [m for m in self.backbone.modules() if isinstance(m, SimilarityGuidedSampling)]

    @contextlib.contextmanager
    def sgs_bins(self) -> Iterator[List[Tensor]]:
        """Within the block, every forward pass records each clip's B' (int64 ``[N]``, the valid positions of
        the masks the SGS layers return, summed over the layers); after the block the list holds one tensor, all
        clips in call order (empty list without SGS)."""
        layers = self._sgs_layers()
        seen: Dict[int, List[Tensor]] = {id(m): [] for m in layers}
        handles = [m.register_forward_hook(lambda mod, inp, out: seen[id(mod)].append(out[1].sum(dim=1)))
                   for m in layers]
        result: List[Tensor] = []
        try:
            yield result
        finally:
            for h in handles:
                h.remove()
        if layers and all(seen.values()):
            result.append(torch.stack([torch.cat(v) for v in seen.values()]).sum(dim=0))

    def gmacs_table(self, clip_shape: Sequence[int]) -> Optional[Tuple[Tensor, float]]:
        """``(GMACs per clip indexed by B', GMACs without SGS)`` for clips of shape ``(C, T, H, W)``
        (:func:`~lightning_temporal.models.backbone.gmacs_by_bins`, computed once per shape), or None where the
        backbone's cost is not a function of one B' (no SGS, several SGS layers, temporal blocks)."""
        key = tuple(int(v) for v in clip_shape[-4:])
        if key not in self._gmacs_tables:
            try:
                table, base = gmacs_by_bins(self.backbone, key)
                self._gmacs_tables[key] = (table.to(self.device), base)
            except ValueError:
                self._gmacs_tables[key] = None
        return self._gmacs_tables[key]

    def _gmacs_counted(self) -> bool:
        """True if GMACs per clip are a function of the clip's B' (one SGS layer on whole clips)."""
        sgs = getattr(self.backbone, "temporal", None)
        return (isinstance(self.backbone, StagedBackbone) and isinstance(sgs, SimilarityGuidedSampling)
                and sgs.block_size is None)

    def _log_sgs(self, stage: str, bins: List[Tensor], clip_shape: Sequence[int], n: int) -> None:
        """Update and log ``<stage>/sgs_bins``, ``/gmacs``, ``/gmacs_saved`` from the batch's B' (``bins`` from
        :meth:`sgs_bins`, empty for a batch without clips) of clips shaped ``clip_shape`` ``(C, T, H, W)``: every
        rank logs the same keys on every batch (the epoch means are reduced over ranks)."""
        if self.sgs_metrics is None:
            return
        counted = self._gmacs_counted()
        if bins:
            b = bins[0]
            self.sgs_metrics[f"{stage}_sgs_bins"].update(b.float())
            table = self.gmacs_table(clip_shape) if counted else None
            if table is not None:
                gmacs = table[0][b]
                self.sgs_metrics[f"{stage}_gmacs"].update(gmacs)
                self.sgs_metrics[f"{stage}_gmacs_saved"].update(1.0 - gmacs / table[1])
        for key in ("sgs_bins", "gmacs", "gmacs_saved") if counted else ("sgs_bins",):
            self.log(f"{stage}/{key}", self.sgs_metrics[f"{stage}_{key}"], on_step=False, on_epoch=True,
                     prog_bar=key != "gmacs_saved", batch_size=max(n, 1))

    # ---------------------------------------------------------------------------------------- training
    def on_fit_start(self) -> None:
        if self.rng_seed is None:  # not restored from a checkpoint
            self.rng_seed = int(torch.initial_seed())

    def on_train_epoch_start(self) -> None:
        self.skips.reset()

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        # global-RNG draws of this step (dropout, ...) are a function of the step: equal after a resume
        seed = self.rng_seed if self.rng_seed is not None else int(torch.initial_seed())
        torch.manual_seed(counter_seed(seed, self.current_epoch, batch_idx, self.global_rank))

    def training_step(self, batch: Dict[str, Any], batch_idx: int) -> Optional[Dict[str, Tensor]]:
        self.skips.update(batch)
        clips, labels = batch["clip"], batch["label"]
        n = clips.shape[0]
        bins: List[Tensor] = []
        if n:
            with self.sgs_bins() as bins:
                logits = self(clips)
            loss = self.compute_loss(logits, labels)
            self.log("train/loss_step", loss.detach(), on_step=True, on_epoch=False, prog_bar=True, batch_size=n)
            self.train_metrics["loss"].update(loss.detach(), weight=n)
            self.train_metrics["top1"].update((logits.argmax(-1) == labels).float().mean(), weight=n)
        # Every rank logs the same keys on every batch, empty or not (the means are synced at epoch end, and a
        # collective that one rank skips hangs the others).
        self.log("train/loss_epoch", self.train_metrics["loss"], on_step=False, on_epoch=True, batch_size=max(n, 1))
        self.log("train/top1", self.train_metrics["top1"], on_step=False, on_epoch=True, batch_size=max(n, 1))
        self._log_sgs("train", bins, clips.shape[1:], n)
        if n:
            return {"loss": loss, "logits": logits.detach()}
        # every clip of this batch failed to decode: nothing to train on
        if self.trainer.world_size == 1:
            return None  # Lightning skips backward and the optimizer step
        # under DDP this rank must still join the gradient all-reduce: a zero loss that reaches every parameter
        zero = sum(p.sum() for p in self.parameters() if p.requires_grad) * 0.0
        return {"loss": zero, "logits": torch.zeros(0, self.num_classes, device=self.device)}

    def on_train_epoch_end(self) -> None:
        skipped = self.skips.epoch_skipped
        self.log("train/skipped_clips", float(skipped), reduce_fx="sum", sync_dist=True)
        self.log("train/empty_batches", float(self.skips.empty_batches), reduce_fx="sum", sync_dist=True)
        if skipped or self.skips.empty_batches:
            warnings.warn(self.skips.summary(self.current_epoch))

    def on_save_checkpoint(self, checkpoint: Dict[str, Any]) -> None:
        checkpoint["lightning_temporal"] = {"skips": self.skips.state_dict(), "rng_seed": self.rng_seed}

    def on_load_checkpoint(self, checkpoint: Dict[str, Any]) -> None:
        state = checkpoint.get("lightning_temporal")
        if state is not None:
            self.skips.load_state_dict(state["skips"])
            self.rng_seed = state["rng_seed"]

    def on_train_end(self) -> None:
        # epochs actually trained (early stopping may end before max_epochs); seed Table S.1 reports them
        self.epochs_trained = self.trainer.current_epoch
        if self.trainer.logger is not None:
            self.trainer.logger.log_metrics({"epochs_trained": float(self.epochs_trained)},
                                            step=self.trainer.global_step)

    # -------------------------------------------------------------------------------------- evaluation
    def video_clip_scores(self, batch: Dict[str, Any]) -> Tuple[Tensor, Tensor, Tensor]:
        """Clip logits of each video of an evaluation batch (:func:`~lightning_temporal.data.collate_videos`):
        ``scores [V, T, K]``, ``mask [V, T]`` and the frame each clip starts at, ``starts [V, T]``.

        Clips mode (the batch has ``"clip_counts"``): the clips at the batch's starts, read as views of the one
        decoded video and scored ``eval_chunk`` at a time by :meth:`score_clips`. Dense mode: :meth:`dense_scores`.
        """
        video, clip_len, stride = batch["video"], int(batch["clip_len"]), int(batch["stride"])
        if "clip_counts" not in batch:
            return self.dense_scores(video, batch["lengths"], clip_len, stride)
        counts, starts = batch["clip_counts"], batch["starts"]
        video_idx = torch.repeat_interleave(torch.arange(counts.numel(), device=video.device), counts.to(video.device))
        logits = torch.cat([  # one contiguous copy per chunk of clips, made from views of the video
            self.score_clips(gather_clips(video, video_idx[i:i + self.eval_chunk], starts[i:i + self.eval_chunk],
                                          clip_len, stride))
            for i in range(0, video_idx.numel(), self.eval_chunk)])  # sum K, C
        scores, mask = pad_clip_scores(logits, counts)
        padded_starts, _ = pad_clip_scores(starts[:, None].to(logits), counts)
        return scores, mask, padded_starts[..., 0].long()

    def dense_scores(self, video: Tensor, lengths: Tensor, clip_len: Optional[int] = None,
                     stride: int = 1) -> Tuple[Tensor, Tensor, Tensor]:
        """Clip logits of every clip start of whole videos from one fully convolutional pass per video:
        :func:`~lightning_temporal.evaluation.dense_clip_scores` of this module's backbone (its arguments,
        returns and errors)."""
        return dense_clip_scores(self.backbone, video, lengths, clip_len, stride)

    def _eval_step(self, batch: Dict[str, Any], stage: str) -> None:
        skipped = batch["skipped"].numel()
        self.log(f"{stage}/skipped_videos", float(skipped), reduce_fx="sum", sync_dist=True, batch_size=1)
        if skipped:
            warnings.warn(f"{stage}: {skipped} video(s) could not be decoded and are left out of the metrics: "
                          + "; ".join(batch["skip_errors"]))
        labels = batch["label"]
        bins: List[Tensor] = []
        if labels.numel():
            with self.sgs_bins() as bins:
                scores, mask, _ = self.video_clip_scores(batch)  # one forward pass serves every gamma_p and metric
            pooled = pool_video_scores(scores, mask, self.gammas)  # G, V, K: every gamma_p at once
            for g, video_logits in zip(self.gammas, pooled):
                self.metrics[f"{stage}_{pooling_key(g)}"].update(video_logits, labels)
            self.eval_loss[stage].update(F.cross_entropy(pooled[0], labels), weight=labels.numel())
        # Every rank logs the same keys on every batch, even one whose videos all failed to decode: the epoch
        # values are reduced over the ranks, and a rank that never logged a key would skip that collective and
        # hang the others.
        self.log(f"{stage}/loss", self.eval_loss[stage], on_step=False, on_epoch=True,
                 batch_size=max(labels.numel(), 1))
        if self.sgs_metrics is not None:
            shape = (batch["video"].shape[1], int(batch["clip_len"]), *batch["video"].shape[-2:]) if bins else ()
            self._log_sgs(stage, bins, shape, labels.numel())

    def _eval_epoch_end(self, stage: str) -> None:
        for g in self.gammas:
            metrics = self.metrics[f"{stage}_{pooling_key(g)}"]
            # compute() already reduced the states over ranks; sync_dist only averages identical values
            self.log_dict(metrics.compute(), prog_bar=g == self.gamma_p, sync_dist=True)
            metrics.reset()

    def validation_step(self, batch: Dict[str, Any], batch_idx: int) -> None:
        self._eval_step(batch, "val")

    def on_validation_epoch_end(self) -> None:
        self._eval_epoch_end("val")

    def test_step(self, batch: Dict[str, Any], batch_idx: int) -> None:
        self._eval_step(batch, "test")

    def on_test_epoch_end(self) -> None:
        self._eval_epoch_end("test")

    def predict_step(self, batch: Dict[str, Any], batch_idx: int) -> List[Dict[str, Any]]:
        """One dict per video of the batch: where in the video the predicted class shows, and how sure.

        * ``video_idx``, ``label`` (class index), ``pred`` (class index), ``probs`` float ``[K]``: softmax of the
          video logits pooled at ``gamma_p`` (:func:`~lightning_temporal.softmax_temporal_pool`);
        * ``positions`` int64 ``[T]``: the first frame of each clip position;
        * ``curve`` float ``[T, K]``: the clip logits at those positions (the relevance curve of each class);
        * ``weights`` float ``[T]``: the pooling weights of the predicted class,
          ``softmax_t(gamma_p * curve[:, pred])`` (the softmax temporal pooling of Ayral et al., seed §S.2): how
          much each clip position counts in the prediction (uniform at ``gamma_p = 0``, one-hot at max pooling);
        * ``num_frames``: frames of the video;
        * with SGS in the backbone (clips mode): ``clip_bins`` int64 ``[T]``, the B' of each clip position,
          ``sgs_bins`` their mean and ``gmacs`` the mean GMACs per clip (one SGS layer on whole clips).

        A video that failed to decode gives ``{"video_idx", "error"}`` instead, so it is reported, not lost.
        """
        out: List[Dict[str, Any]] = [{"video_idx": int(v), "error": e}
                                     for v, e in zip(batch["skipped"].tolist(), batch["skip_errors"])]
        if batch["label"].numel() == 0:
            return out
        with self.sgs_bins() as bins:
            scores, mask, starts = self.video_clip_scores(batch)  # V, T, K; V, T; V, T
        pooled = softmax_temporal_pool(scores, self.gamma_p, mask=mask)
        probs = pooled.softmax(-1)
        pred = probs.argmax(-1)  # V
        weights = pooling_weights(scores, mask, pred, self.gamma_p)  # V, T
        n = mask.sum(1).tolist()
        frames = batch.get("num_frames", torch.full((len(n),), -1))
        videos = [{"video_idx": int(v), "label": int(y), "pred": int(c), "probs": p.cpu(), "curve": sc[:k].cpu(),
                   "positions": t[:k].cpu(), "weights": w[:k].cpu(), "num_frames": int(f)}
                  for v, y, c, p, sc, t, w, k, f in zip(batch["video_idx"], batch["label"], pred, probs, scores,
                                                         starts, weights, n, frames)]
        if bins and "clip_counts" in batch:
            self._add_sgs_columns(videos, bins[0], batch)
        return out + videos

    def _add_sgs_columns(self, videos: List[Dict[str, Any]], bins: Tensor, batch: Dict[str, Any]) -> None:
        """Each video's ``clip_bins`` (B' of each clip position), ``sgs_bins`` (their mean) and ``gmacs`` (mean
        GMACs per clip, where :meth:`gmacs_table` applies), from the clips' B' in batch order."""
        counts = batch["clip_counts"]
        per_clip = bins.float()[:, None]
        table = None
        if self._gmacs_counted():
            video = batch["video"]
            table = self.gmacs_table((video.shape[1], int(batch["clip_len"]), *video.shape[-2:]))
        if table is not None:
            per_clip = torch.cat([per_clip, table[0][bins][:, None].to(per_clip)], dim=1)
        padded, valid = pad_clip_scores(per_clip, counts)  # V, T, 1 or 2
        means = (padded * valid[..., None]).sum(1) / valid.sum(1, keepdim=True).clamp_min(1)  # V, 1 or 2
        for item, b, k, m in zip(videos, padded[..., 0], valid.sum(1).tolist(), means.tolist()):
            item["clip_bins"] = b[:k].long().cpu()
            item["sgs_bins"] = m[0]
            if table is not None:
                item["gmacs"] = m[1]
