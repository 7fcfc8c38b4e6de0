"""Evaluation metrics of the TSS seed (Ayral et al., supplementary: top-1 accuracy, the EER accuracy of Table
S.4), as torchmetrics ``Metric`` objects correct under DDP.

* top-1 / top-5 accuracy: torchmetrics' ``MulticlassAccuracy(top_k=k, average="micro")``;
* mean per-class accuracy: :class:`MeanClassAccuracy` (recall averaged over the classes that occur in the targets);
* EER accuracy for binary tasks (seed Table S.4): :class:`EERAccuracy` and its functional twins
  :func:`eer_accuracy` / :func:`equal_error_rate`.

:func:`classification_metrics` builds the collection a classifier logs. Every state declares its distributed
reduction (``add_state(..., dist_reduce_fx=...)``), so the numbers are the same on one process or many.
"""
from __future__ import annotations

from typing import NamedTuple, Optional

import torch
from torch import Tensor
from torchmetrics import Metric, MetricCollection
from torchmetrics.classification import MulticlassAccuracy
from torchmetrics.utilities import dim_zero_cat, rank_zero_warn

__all__ = [
    "EERAccuracy",
    "EERResult",
    "MeanClassAccuracy",
    "classification_metrics",
    "eer_accuracy",
    "equal_error_rate",
]


# --------------------------------------------------------------------------------------------------------------
# EER accuracy (binary)
# --------------------------------------------------------------------------------------------------------------
class EERResult(NamedTuple):
    """Operating point where the false-positive and false-negative rates are equal.

    ``eer``: the equal error rate in [0, 1]; ``accuracy``: the accuracy there (= ``1 - eer``, see
    :func:`equal_error_rate`); ``threshold``: the score threshold of that point (interpolated between the two
    bracketing score values). All float32 scalar tensors; NaN when only one class is present.
    """

    eer: Tensor
    accuracy: Tensor
    threshold: Tensor


def _binary_scores(preds: Tensor) -> Tensor:
    """Scores ``[N]`` from ``[N]`` / ``[N, 1]`` scores or ``[N, 2]`` two-class logits (``logit_1 - logit_0``)."""
    if preds.dim() == 2 and preds.shape[1] == 2:
        # monotone in softmax(preds)[:, 1] = sigmoid(logit_1 - logit_0), so the ROC is the same
        return preds[:, 1] - preds[:, 0]
    if preds.dim() == 2 and preds.shape[1] == 1:
        return preds[:, 0]
    if preds.dim() == 1:
        return preds
    raise ValueError(
        f"EER accuracy needs binary scores [N], [N, 1] or two-class logits [N, 2]; got preds of shape "
        f"{tuple(preds.shape)}"
    )


def _check_binary(scores: Tensor, target: Tensor) -> None:
    if scores.shape != target.shape:
        raise ValueError(f"scores {tuple(scores.shape)} and targets {tuple(target.shape)} must have the same shape [N]")
    if not scores.is_floating_point():
        raise TypeError(f"scores must be a float tensor, got {scores.dtype}")
    nan = torch.isnan(scores)
    if bool(nan.any()):
        raise ValueError(
            f"{int(nan.sum())} NaN score(s) (first at index {int(nan.nonzero()[0])}) cannot be ranked; "
            "check the model output for this batch"
        )
    bad = (target != 0) & (target != 1)
    if bool(bad.any()):
        i = int(bad.nonzero()[0])
        raise ValueError(f"binary targets must be 0 or 1; got {target[i].item()} at index {i}")


def equal_error_rate(scores: Tensor, targets: Tensor) -> EERResult:
    """Equal error rate, the accuracy there and its threshold, for binary scores (seed Table S.4).

    Definition. A sample is predicted positive when ``score >= theta``. For every candidate threshold — each
    distinct score value and ``+inf`` (all negative) — ``FPR = #(neg with score >= theta) / #neg`` and
    ``FNR = #(pos with score < theta) / #pos``. Going down the thresholds, ``D = FPR - FNR`` rises from -1 to +1.
    Let ``theta_j`` be the first (highest) threshold with ``D >= 0`` and ``theta_i`` the one just above it
    (``D < 0``). The operating point is interpolated linearly between the two (a point on the segment of the ROC
    curve joining them): ``lam = -D_i / (D_j - D_i)``, ``EER = FPR_i + lam (FPR_j - FPR_i)`` (equal to the FNR
    interpolated the same way), and the EER accuracy is the accuracy interpolated with the same ``lam``; since
    accuracy is linear in (FPR, FNR) and both equal ``EER`` there, it is exactly ``1 - EER`` whatever the class
    balance. ``threshold = theta_i + lam (theta_j - theta_i)`` (``theta_j`` when ``theta_i = +inf``). When one
    threshold gives ``FPR == FNR`` exactly, ``lam = 1`` and that threshold's own accuracy is returned.

    Args:
        scores: float ``[N]`` (higher = more positive), or ``[N, 2]`` two-class logits.
        targets: ``[N]`` in {0, 1} (int or bool).

    Returns:
        :class:`EERResult`; all NaN (with a warning) when ``targets`` holds only one class.
    """
    scores = _binary_scores(scores)
    _check_binary(scores, targets)
    return _eer_from_flat(scores, targets)


def eer_accuracy(scores: Tensor, targets: Tensor) -> Tensor:
    """Accuracy at the equal-error-rate operating point (= ``1 - EER``); see :func:`equal_error_rate`.

    Example:
        >>> eer_accuracy(torch.tensor([0.1, 0.2, 0.7, 0.3, 0.8, 0.9]), torch.tensor([0, 0, 0, 1, 1, 1]))
        tensor(0.6667)
    """
    return equal_error_rate(scores, targets).accuracy


def _eer_from_flat(scores: Tensor, targets: Tensor) -> EERResult:
    n = scores.numel()
    y = targets.to(torch.float64)
    n_pos = y.sum()
    n_neg = n - n_pos
    if n == 0 or n_pos == 0 or n_neg == 0:
        rank_zero_warn(
            f"EER accuracy is undefined with {int(n_pos)} positive and {int(n_neg)} negative samples; returning NaN"
        )
        nan = torch.tensor(float("nan"), device=scores.device)
        return EERResult(nan, nan, nan)
    order = torch.argsort(scores, descending=True, stable=True)
    s = scores[order].to(torch.float64)
    y = y[order]
    tp = torch.cumsum(y, 0)
    fp = torch.cumsum(1.0 - y, 0)
    # one candidate per distinct score: the last sample of each run of equal scores
    last = torch.cat([(s[1:] != s[:-1]).nonzero().squeeze(1), torch.tensor([n - 1], device=s.device)])
    zero = torch.zeros(1, dtype=torch.float64, device=s.device)
    tp = torch.cat([zero, tp[last]])
    fp = torch.cat([zero, fp[last]])
    thr = torch.cat([torch.full((1,), float("inf"), dtype=torch.float64, device=s.device), s[last]])
    fpr = fp / n_neg
    fnr = 1.0 - tp / n_pos
    d = fpr - fnr  # non-decreasing from -1 (theta = +inf) to +1 (theta = min score)
    j = torch.searchsorted(d, torch.zeros(1, dtype=torch.float64, device=s.device)).clamp(1, d.numel() - 1)
    i = j - 1
    lam = -d[i] / (d[j] - d[i])
    eer = fpr[i] + lam * (fpr[j] - fpr[i])
    t_i, t_j = thr[i], thr[j]
    threshold = torch.where(torch.isfinite(t_i), t_i + lam * (t_j - t_i), t_j)
    eer = eer.squeeze(0).float()
    return EERResult(eer, 1.0 - eer, threshold.squeeze(0).float())


class EERAccuracy(Metric):
    """Accuracy at the equal-error-rate threshold for binary tasks (seed Table S.4).

    Accumulates all scores and targets (``cat`` states, gathered across processes) and computes
    :func:`equal_error_rate` over the whole set: the threshold depends on every sample, so it cannot be averaged
    per batch. ``compute()`` returns the accuracy (a scalar tensor, for logging); :meth:`compute_eer` returns the
    EER, accuracy and threshold.

    Example:
        >>> metric = EERAccuracy()
        >>> metric.update(torch.tensor([0.1, 0.2, 0.7]), torch.tensor([0, 0, 0]))
        >>> metric.update(torch.tensor([0.3, 0.8, 0.9]), torch.tensor([1, 1, 1]))
        >>> metric.compute()   # threshold 0.7: FPR = FNR = 1/3
        tensor(0.6667)

    Args:
        validate_args: check shapes, binary targets and NaN scores in ``update`` (one host sync per batch).

    ``update(preds, target)``: ``preds`` float ``[N]`` scores (higher = positive), ``[N, 1]``, or ``[N, 2]``
    two-class logits (score = ``logit_1 - logit_0``); ``target`` ``[N]`` in {0, 1}.
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    def __init__(self, validate_args: bool = True, **kwargs) -> None:
        super().__init__(**kwargs)
        if not isinstance(validate_args, bool):
            raise ValueError(f"validate_args must be True or False, got {validate_args!r}")
        self.validate_args = validate_args
        self.add_state("scores", default=[], dist_reduce_fx="cat")
        self.add_state("targets", default=[], dist_reduce_fx="cat")

    def update(self, preds: Tensor, target: Tensor) -> None:
        scores = _binary_scores(preds).detach()
        target = target.detach()
        if self.validate_args:
            _check_binary(scores, target)
        self.scores.append(scores.float())
        self.targets.append(target.to(torch.uint8))

    def _result(self) -> EERResult:
        if len(self.scores) == 0 or (isinstance(self.scores, Tensor) and self.scores.numel() == 0):
            return _eer_from_flat(torch.zeros(0), torch.zeros(0))
        return _eer_from_flat(dim_zero_cat(self.scores), dim_zero_cat(self.targets))

    def compute(self) -> Tensor:
        return self._result().accuracy

    def compute_eer(self) -> EERResult:
        """EER, accuracy and threshold over all processes' data (synchronises like ``compute``)."""
        with self.sync_context(should_sync=self.sync_on_compute, should_unsync=True):
            return self._result()


# --------------------------------------------------------------------------------------------------------------
# Mean per-class accuracy
# --------------------------------------------------------------------------------------------------------------
class MeanClassAccuracy(Metric):
    """Mean over classes of the per-class accuracy (recall), over the classes present in the targets.

    Unlike torchmetrics' ``MulticlassAccuracy(average="macro")``, a class that is predicted but never occurs
    in the targets seen so far does not count as a 0 (which would make partial or small evaluations look worse);
    on a test set that holds every class the two agree.

    Example:
        >>> metric = MeanClassAccuracy(num_classes=3)
        >>> metric.update(torch.tensor([[2.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]), torch.tensor([0, 1, 1]))
        >>> metric.compute()   # class 0: 1/1, class 1: 1/2, class 2 absent
        tensor(0.7500)

    ``update(preds, target)``: ``preds`` logits/probabilities ``[N, K]`` or predicted labels ``[N]``;
    ``target`` int ``[N]`` in ``0..K-1``.
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    def __init__(self, num_classes: int, validate_args: bool = True, **kwargs) -> None:
        super().__init__(**kwargs)
        if not isinstance(num_classes, int) or isinstance(num_classes, bool) or num_classes < 1:
            raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")
        self.num_classes = num_classes
        self.validate_args = validate_args
        self.add_state("correct", default=torch.zeros(num_classes, dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("support", default=torch.zeros(num_classes, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, preds: Tensor, target: Tensor) -> None:
        if preds.dim() == 2:
            if preds.shape[1] != self.num_classes:
                raise ValueError(f"preds has {preds.shape[1]} classes, expected num_classes={self.num_classes}")
            preds = preds.argmax(1)
        target = target.long()
        if self.validate_args:
            if preds.shape != target.shape:
                raise ValueError(f"preds {tuple(preds.shape)} and target {tuple(target.shape)} must both be [N]")
            bad = (target < 0) | (target >= self.num_classes)
            if bool(bad.any()):
                i = int(bad.nonzero()[0])
                raise ValueError(f"target {target[i].item()} at index {i} is outside 0..{self.num_classes - 1}")
        self.support += torch.bincount(target, minlength=self.num_classes)
        self.correct += torch.bincount(target[preds == target], minlength=self.num_classes)

    def compute(self) -> Tensor:
        present = self.support > 0
        if not bool(present.any()):
            return torch.tensor(float("nan"), device=self.support.device)
        return (self.correct[present].double() / self.support[present]).mean().float()


# --------------------------------------------------------------------------------------------------------------
# The collection a classifier logs
# --------------------------------------------------------------------------------------------------------------
def classification_metrics(num_classes: int, *, eer: Optional[bool] = None, prefix: Optional[str] = None) -> MetricCollection:
    """The seed's metrics for a ``num_classes``-way classifier, updated with ``(logits [N, K], labels [N])``.

    Keys: ``top1`` (micro top-1 accuracy), ``mean_class_acc`` (:class:`MeanClassAccuracy`), ``top5`` when
    ``num_classes > 5``, and ``eer_acc`` (:class:`EERAccuracy` on ``logit_1 - logit_0``) when ``eer`` is True
    (default: ``num_classes == 2``).

    Example:
        >>> metrics = classification_metrics(10, prefix="val/")
        >>> sorted(metrics.keys())
        ['val/mean_class_acc', 'val/top1', 'val/top5']
    """
    if not isinstance(num_classes, int) or isinstance(num_classes, bool) or num_classes < 2:
        raise ValueError(f"num_classes must be an int >= 2, got {num_classes!r}")
    if eer is None:
        eer = num_classes == 2
    if eer and num_classes != 2:
        raise ValueError(f"eer=True needs a binary task (num_classes == 2), got num_classes={num_classes}")
    metrics = {
        "top1": MulticlassAccuracy(num_classes=num_classes, top_k=1, average="micro"),
        "mean_class_acc": MeanClassAccuracy(num_classes=num_classes),
    }
    if num_classes > 5:
        metrics["top5"] = MulticlassAccuracy(num_classes=num_classes, top_k=5, average="micro")
    if eer:
        metrics["eer_acc"] = EERAccuracy()
    # compute groups would share state between metrics of different kinds; each keeps its own
    return MetricCollection(metrics, prefix=prefix, compute_groups=False)
