"""``VideoClassifier``: the LightningModule users subclass; clip training, whole-video evaluation."""
from __future__ import annotations

import math
import warnings
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from lightning.pytorch import LightningModule
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import Tensor, nn

from lightning_temporal.data.dataset import SkipCounter
from lightning_temporal.metrics import classification_metrics
from lightning_temporal.pooling import softmax_temporal_pool

__all__ = ["VideoClassifier", "pad_clip_scores"]


def pad_clip_scores(scores: Tensor, counts: Tensor) -> Tuple[Tensor, Tensor]:
    """Scatter clip scores ``[sum K, C]`` of ``V`` videos (``counts`` ``[V]`` clips each, in order) into
    ``[V, max K, C]`` with a bool mask ``[V, max K]`` of the real clips. Vectorised (no loop over videos)."""
    num_videos, longest = counts.numel(), int(counts.max()) if counts.numel() else 0
    video = torch.repeat_interleave(torch.arange(num_videos, device=scores.device), counts.to(scores.device))
    first = torch.cumsum(counts, 0).to(scores.device) - counts.to(scores.device)
    pos = torch.arange(scores.shape[0], device=scores.device) - first[video]
    padded = scores.new_zeros(num_videos, longest, scores.shape[-1])
    mask = torch.zeros(num_videos, longest, dtype=torch.bool, device=scores.device)
    padded[video, pos] = scores
    mask[video, pos] = True
    return padded, mask


def _gamma_key(gamma: float) -> str:
    return "gp" + (f"{gamma:g}".replace("+", "").replace(".", "p"))


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
        if not isinstance(num_classes, int) or isinstance(num_classes, bool) or num_classes < 2:
            raise ValueError(f"model.num_classes={num_classes!r}; an integer >= 2 is allowed")
        for name, g in [("gamma_p", gamma_p)] + [("report_gamma_p", g) for g in report_gamma_p]:
            if not isinstance(g, (int, float)) or math.isnan(g) or g < 0:
                raise ValueError(f"model.{name} holds {g!r}; temperatures must be numbers >= 0 (0 = average "
                                 "pooling, 1e6 = max pooling)")
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"model.label_smoothing={label_smoothing!r}; a value in [0, 1) is allowed")
        if not isinstance(eval_chunk, int) or eval_chunk < 1:
            raise ValueError(f"model.eval_chunk={eval_chunk!r}; a positive integer is allowed")
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
        self.metrics = nn.ModuleDict({
            f"{stage}_{_gamma_key(g)}": classification_metrics(
                num_classes, prefix=f"{stage}/" if g == self.gamma_p else f"{stage}/{_gamma_key(g)}/")
            for stage in ("val", "test") for g in self.gammas})
        self.skips = SkipCounter()
        self.epochs_trained: Optional[int] = None

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
        if k is not None and k != self.num_classes:
            raise ValueError(f"model.num_classes={self.num_classes} but the data has {k} classes "
                             f"({', '.join(dm.class_names)}); set model.num_classes: {k}")

    # ---------------------------------------------------------------------------------------- training
    def on_train_epoch_start(self) -> None:
        self.skips.reset()

    def training_step(self, batch: Dict[str, Any], batch_idx: int) -> Dict[str, Tensor]:
        self.skips.update(batch)
        clips, labels = batch["clip"], batch["label"]
        if clips.shape[0] == 0:
            # every clip of this batch failed to decode: a zero loss keeps DDP's gradient sync in step
            zero = sum(p.sum() for p in self.parameters()) * 0.0
            return {"loss": zero, "logits": torch.zeros(0, self.num_classes, device=self.device)}
        logits = self(clips)
        loss = self.compute_loss(logits, labels)
        n = clips.shape[0]
        self.log("train/loss", loss, on_step=True, on_epoch=True, prog_bar=True, batch_size=n, sync_dist=True)
        self.log("train/top1", (logits.argmax(-1) == labels).float().mean(), on_epoch=True, on_step=False,
                 batch_size=n, sync_dist=True)
        return {"loss": loss, "logits": logits.detach()}

    def on_train_epoch_end(self) -> None:
        skipped = self.skips.epoch_skipped
        self.log("train/skipped_clips", float(skipped), reduce_fx="sum", sync_dist=True)
        if skipped:
            warnings.warn(self.skips.summary(self.current_epoch))

    def on_train_end(self) -> None:
        # epochs actually trained (early stopping may end before max_epochs); seed Table S.1 reports them
        self.epochs_trained = self.trainer.current_epoch
        if self.trainer.logger is not None:
            self.trainer.logger.log_metrics({"epochs_trained": float(self.epochs_trained)},
                                            step=self.trainer.global_step)

    # -------------------------------------------------------------------------------------- evaluation
    def video_clip_scores(self, batch: Dict[str, Any]) -> Tuple[Tensor, Tensor, Tensor]:
        """Clip logits of each video of an evaluation batch: ``scores [V, T, K]``, ``mask [V, T]`` and the
        frame index each temporal position starts at, ``starts [V, T]`` (clip starts, or frames in dense mode).
        """
        if "clips" in batch:
            clips = batch["clips"]
            logits = torch.cat([self.score_clips(c) for c in clips.split(self.eval_chunk)])  # sum K, C
            scores, mask = pad_clip_scores(logits, batch["clip_counts"])
            starts, _ = pad_clip_scores(batch["starts"][:, None].to(logits), batch["clip_counts"])
            return scores, mask, starts[..., 0].long()
        return self.dense_scores(batch["video"], batch["lengths"])

    def dense_scores(self, video: Tensor, lengths: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
        """One fully convolutional pass over whole videos ``[V, 3, L, H, W]``: a score per temporal position."""
        backbone = self.backbone
        head = getattr(backbone, "head", None)
        if not hasattr(backbone, "forward_features") or not hasattr(head, "forward_dense"):
            raise TypeError(f"{type(backbone).__name__} has no forward_features/head.forward_dense; use "
                            "data.eval_mode: clips")
        if getattr(backbone, "temporal", None) is not None:
            raise ValueError("dense evaluation needs a backbone without SGS/attention (they change the time "
                             "axis); use data.eval_mode: clips")
        feat, _ = backbone.forward_features(video)
        scores = head.forward_dense(feat)  # V, T', K
        t_out, longest = scores.shape[1], video.shape[2]
        # temporal position j of the output covers input frames from j * L / T'
        starts = (torch.arange(t_out, device=video.device) * longest) // t_out
        mask = starts[None, :] < lengths.to(video.device)[:, None]
        return scores, mask, starts.expand(scores.shape[0], -1)

    def _eval_step(self, batch: Dict[str, Any], stage: str) -> None:
        skipped = batch["skipped"].numel()
        self.log(f"{stage}/skipped_videos", float(skipped), reduce_fx="sum", sync_dist=True, batch_size=1)
        if skipped:
            warnings.warn(f"{stage}: {skipped} video(s) could not be decoded and are left out of the metrics: "
                          + "; ".join(batch["skip_errors"]))
        if batch["label"].numel() == 0:
            return
        scores, mask, _ = self.video_clip_scores(batch)
        labels = batch["label"]
        for g in self.gammas:
            pooled = softmax_temporal_pool(scores, g, mask=mask)
            self.metrics[f"{stage}_{_gamma_key(g)}"].update(pooled, labels)
            if g == self.gamma_p:
                self.log(f"{stage}/loss", F.cross_entropy(pooled, labels), batch_size=labels.numel(),
                         sync_dist=True)

    def _eval_epoch_end(self, stage: str) -> None:
        for g in self.gammas:
            metrics = self.metrics[f"{stage}_{_gamma_key(g)}"]
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
        * ``positions`` int64 ``[T]``: the first frame of each clip position (frames in dense mode);
        * ``curve`` float ``[T, K]``: the clip logits at those positions (the relevance curve of each class);
        * ``weights`` float ``[T]``: the pooling weights of the predicted class,
          ``softmax_t(gamma_p * curve[:, pred])`` (the softmax temporal pooling of Ayral et al., seed §S.2): how
          much each clip position counts in the prediction (uniform at ``gamma_p = 0``, one-hot at max pooling);
        * ``num_frames``: frames of the video.

        A video that failed to decode gives ``{"video_idx", "error"}`` instead, so it is reported, not lost.
        """
        out: List[Dict[str, Any]] = [{"video_idx": int(v), "error": e}
                                     for v, e in zip(batch["skipped"].tolist(), batch["skip_errors"])]
        if batch["label"].numel() == 0:
            return out
        scores, mask, starts = self.video_clip_scores(batch)  # V, T, K; V, T; V, T
        pooled = softmax_temporal_pool(scores, self.gamma_p, mask=mask)
        probs = pooled.softmax(-1)
        pred = probs.argmax(-1)  # V
        s = scores.gather(-1, pred[:, None, None].expand(-1, scores.shape[1], 1)).squeeze(-1)  # V, T
        gamma = min(self.gamma_p, 1e30)  # max pooling (inf) as a one-hot over the maximal positions
        z = gamma * (s - s.masked_fill(~mask, -math.inf).amax(-1, keepdim=True))
        weights = z.masked_fill(~mask, -math.inf).softmax(-1)
        n = mask.sum(1).tolist()
        frames = batch.get("num_frames", torch.full((len(n),), -1))
        out += [{"video_idx": int(v), "label": int(y), "pred": int(c), "probs": p.cpu(), "curve": sc[:k].cpu(),
                 "positions": t[:k].cpu(), "weights": w[:k].cpu(), "num_frames": int(f)}
                for v, y, c, p, sc, t, w, k, f in zip(batch["video_idx"], batch["label"], pred, probs, scores,
                                                       starts, weights, n, frames)]
        return out
