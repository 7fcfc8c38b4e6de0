"""Whole-video evaluation math: clip scores of every clip start from one fully convolutional pass (dense),
clip scores scattered per video, and their softmax temporal pooling into video logits at every gamma_p at once.

Pure torch (and :mod:`lightning_temporal.pooling`): no Lightning, no I/O; ``VideoClassifier`` calls it. The
backbone is duck-typed: dense scoring needs ``forward_features(x) -> (features, mask)`` and
``head.forward_dense(features, window) -> [N, T' - window + 1, K]`` (the head pooling each window of
``window`` temporal positions as it pools a clip's own positions, then classifying).

Pooling (Ayral et al., TSS supplementary §S.2): ``y_c = sum_t softmax_t(gamma_p * s[:, c])_t * s[t, c]`` over
the valid clips of each video (:func:`~lightning_temporal.pooling.softmax_temporal_pool`).
"""
from __future__ import annotations

import math
from typing import Optional, Sequence, Tuple

import torch
from torch import Tensor, nn

from lightning_temporal.pooling import softmax_temporal_pool

__all__ = ["dense_clip_scores", "pad_clip_scores", "pool_video_scores", "pooling_weights"]


def pad_clip_scores(scores: Tensor, counts: Tensor) -> Tuple[Tensor, Tensor]:
    """Scatter clip scores ``[sum K, C]`` of ``V`` videos (``counts`` ``[V]`` clips each, in order) into
    ``[V, max K, C]`` (zeros after each video's clips) with a bool mask ``[V, max K]`` of the real clips.
    Vectorised (no loop over videos)."""
    num_videos, longest = counts.numel(), int(counts.max()) if counts.numel() else 0
    counts = counts.to(scores.device)
    video = torch.repeat_interleave(torch.arange(num_videos, device=scores.device), counts)
    first = torch.cumsum(counts, 0) - counts
    pos = torch.arange(scores.shape[0], device=scores.device) - first[video]
    padded = scores.new_zeros(num_videos, longest, scores.shape[-1])
    mask = torch.zeros(num_videos, longest, dtype=torch.bool, device=scores.device)
    padded[video, pos] = scores
    mask[video, pos] = True
    return padded, mask


def dense_clip_scores(backbone: nn.Module, video: Tensor, lengths: Tensor, clip_len: Optional[int] = None,
                      stride: int = 1) -> Tuple[Tensor, Tensor, Tensor]:
    """Clip logits of every clip start of whole videos from one fully convolutional pass per video.

    The backbone runs once over all frames; the head then pools the features over each clip's window of
    temporal positions the way it pools a clip's own features (``head.forward_dense(feat, window)``), so a
    score differs from the clip-wise one only where the clip's receptive field crosses the clip's borders
    (the dense pass sees the neighbouring frames, a lone clip sees zero padding). With ``stride > 1`` the
    video is split into its ``stride`` phases (frames p, p + stride, ...), one pass each (side by side in the
    batch), so that every clip start is scored. A backbone with temporal stride r scores every r-th start of
    each phase. No loop over videos, clips or phases; the video is passed as it is (no copy) when
    ``stride == 1`` and its length is already a whole number of the backbone's ``alpha`` (SlowFast).

    Args:
        backbone: has ``forward_features`` and ``head.forward_dense``, no SGS / attention (``temporal`` None).
        video: ``[V, 3, L, H, W]``, videos padded to the longest by repeating their last frame.
        lengths: int ``[V]`` frames of each video (at least one clip span).
        clip_len: frames per clip; None classifies every temporal position alone (window of 1).
        stride: temporal stride of the clips.
    Returns:
        ``scores [V, T, K]``, ``mask [V, T]`` (True where the whole clip lies in the video) and ``starts
        [V, T]``, the frame each scored clip starts at (increasing).
    Raises:
        TypeError for a backbone without ``forward_features`` / ``head.forward_dense``; ValueError for one
        with SGS or attention (they change the time axis).
    """
    head = getattr(backbone, "head", None)
    if not hasattr(backbone, "forward_features") or not hasattr(head, "forward_dense"):
        raise TypeError(f"{type(backbone).__name__} has no forward_features/head.forward_dense; use "
                        "data.eval_mode: clips")
    if getattr(backbone, "temporal", None) is not None:
        raise ValueError("dense evaluation needs a backbone without SGS/attention (they change the time "
                         "axis); use data.eval_mode: clips")
    num_videos, channels, longest, height, width = video.shape
    frames = clip_len or 1
    span = (frames - 1) * stride + 1
    per_phase = max(-(-longest // stride), frames)
    alpha = getattr(backbone, "alpha", 1)  # SlowFast takes a multiple of its frame-rate ratio
    per_phase = -(-per_phase // alpha) * alpha
    x = video
    if stride > 1 or per_phase != longest:  # phases side by side in the batch, the tail repeats the last frame
        idx = torch.arange(per_phase * stride, device=video.device).clamp_(max=longest - 1)
        x = video[:, :, idx].view(num_videos, channels, per_phase, stride, height, width)
        x = x.permute(0, 3, 1, 2, 4, 5).reshape(num_videos * stride, channels, per_phase, height, width)
    feat, _ = backbone.forward_features(x)  # V * stride, C', T', H', W'
    t_out = feat.shape[2]
    step = max(1, round(per_phase / t_out))  # frames of a phase per output position (temporal stride)
    window = min(-(-frames // step), t_out)
    scores = head.forward_dense(feat, window)  # V * stride, n, K
    n = scores.shape[1]
    if stride > 1:  # position j of phase p starts at frame j * step * stride + p
        scores = scores.view(num_videos, stride, n, -1).transpose(1, 2).reshape(num_videos, n * stride, -1)
    starts = (torch.arange(n, device=video.device)[:, None] * (step * stride)
              + torch.arange(stride, device=video.device)[None, :]).reshape(-1)
    last = (lengths.to(video.device) - span).clamp(min=0)
    mask = starts[None, :] <= last[:, None]
    return scores, mask, starts.expand(num_videos, -1)


def pool_video_scores(scores: Tensor, mask: Tensor, gammas: Sequence[float]) -> Tensor:
    """Video logits at every pooling temperature at once: float32 ``[G, V, K]`` from clip scores ``[V, T, K]``
    and their mask ``[V, T]`` (one call of :func:`~lightning_temporal.pooling.softmax_temporal_pool` with
    ``gamma`` ``[G, 1, 1, 1]``; 0 = mean, 1e6 or inf = max over each video's own clips). Raises its
    ``ValueError`` for a video without a clip or a negative / NaN gamma."""
    g = torch.tensor([float(x) for x in gammas], dtype=torch.float32, device=scores.device).view(-1, 1, 1, 1)
    return softmax_temporal_pool(scores.float(), g, mask=mask)


def pooling_weights(scores: Tensor, mask: Tensor, classes: Tensor, gamma: float) -> Tensor:
    """How much each clip counts in the pooled logit of one class per video: float ``[V, T]``,
    ``softmax_t(gamma * scores[v, t, classes[v]])`` over the valid clips (0 at padding), i.e. the weights of
    softmax temporal pooling (TSS supplementary §S.2). ``gamma = 0`` gives uniform weights; a large or infinite
    ``gamma`` a one-hot (split evenly among tied maxima). ``scores [V, T, K]``, ``mask [V, T]``,
    ``classes`` int ``[V]``."""
    s = scores.gather(-1, classes[:, None, None].expand(-1, scores.shape[1], 1)).squeeze(-1)  # V, T
    gamma = min(float(gamma), 1e30)  # max pooling (inf) as a one-hot over the maximal positions
    z = gamma * (s - s.masked_fill(~mask, -math.inf).amax(-1, keepdim=True))
    return z.masked_fill(~mask, -math.inf).softmax(-1)
