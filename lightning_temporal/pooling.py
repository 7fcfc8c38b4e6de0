"""Softmax temporal pooling of clip scores into a video score (Ayral et al., TSS; supplementary §S.2 on the
pooling temperature gamma_p, decoupled from the sampling temperature gamma_s).

Pure torch: no Lightning, no I/O.

For the clip scores ``s`` of one video (``T`` clips or temporal positions, ``C`` classes)::

    y_c = sum_t softmax_t(gamma * s[:, c])_t * s[t, c]

``gamma = 0`` is average pooling, ``gamma -> inf`` (``1e6`` in the seed) is max pooling. The pooling
temperature ``gamma_p`` is independent of the sampling temperature ``gamma_s``.
"""
from __future__ import annotations

import math
from typing import Optional, Union

import torch
from torch import Tensor

__all__ = ["softmax_temporal_pool", "lengths_to_mask"]

Gamma = Union[float, int, Tensor]


def lengths_to_mask(lengths: Tensor, max_len: Optional[int] = None) -> Tensor:
    """Boolean mask of valid temporal positions from per-video lengths.

    Args:
        lengths: int ``[B]`` number of valid positions of each video (each >= 1 for pooling).
        max_len: ``T``, the padded length; default ``lengths.max()``.

    Returns:
        bool ``[B, T]``, ``mask[b, t] = t < lengths[b]``.

    Example:
        >>> lengths_to_mask(torch.tensor([1, 3]))
        tensor([[ True, False, False],
                [ True,  True,  True]])
    """
    lengths = torch.as_tensor(lengths)
    if lengths.dim() != 1:
        raise ValueError(f"lengths must be 1-D [B], got shape {tuple(lengths.shape)}")
    if max_len is None:
        max_len = int(lengths.max()) if lengths.numel() else 0
    return torch.arange(max_len, device=lengths.device) < lengths.unsqueeze(-1)


def _check_gamma(gamma: Gamma) -> None:
    if isinstance(gamma, Tensor):
        # One host sync per call: pooling runs at evaluation time, once per batch.
        bad = torch.isnan(gamma) | (gamma < 0)
        if bool(bad.any()):
            raise ValueError(
                f"gamma must be >= 0 (0 = mean, 1e6 or inf = max pooling); got {gamma[bad].flatten()[:5].tolist()}"
            )
    elif isinstance(gamma, (int, float)) and not isinstance(gamma, bool):
        if math.isnan(gamma) or gamma < 0:
            raise ValueError(f"gamma must be >= 0 (0 = mean, 1e6 or inf = max pooling); got {gamma!r}")
    else:
        raise TypeError(f"gamma must be a float or a tensor, got {type(gamma).__name__}")


def softmax_temporal_pool(
    scores: Tensor, gamma: Gamma = 0.0, dim: int = -2, mask: Optional[Tensor] = None
) -> Tensor:
    """Pool clip scores over time with a softmax of temperature ``gamma`` (TSS supplementary §S.2).

    ``y_c = sum_t softmax_t(gamma * s_{., c})_t * s_{t, c}``, computed per class (every other dimension is
    independent). The softmax is shifted by the per-class maximum, so any finite ``gamma`` (``1e6`` included)
    is stable; the result is evaluated as ``max + sum_t p_t (s_t - max)`` so that once the softmax has
    collapsed onto the maximum the output *is* the maximum, bit for bit.

    Args:
        scores: float ``[..., T, C]`` clip logits (any float dtype). ``T`` is the pooled dimension ``dim``.
        gamma: inverse temperature ``>= 0``. A float, or a tensor broadcastable against ``scores`` with size 1
            along ``dim`` (e.g. ``[C]`` per class, ``[B, 1, 1]`` per video, or ``[G, 1, 1, 1]`` to evaluate ``G``
            temperatures at once, giving ``[G, B, C]``). ``0`` gives exactly the mean of the valid positions,
            ``inf`` exactly their maximum. A finite float gamma above float32's largest value (3.4e38; float64's
            for float64 scores) is refused: it would be inf in the computation and give NaN.
        dim: the temporal dimension of ``scores`` (default ``-2``).
        mask: optional bool ``[..., T]`` (the shape of ``scores`` up to and including ``dim``), ``True`` at valid
            positions. Padded positions of ragged videos get zero weight, so a padded batch pools exactly like
            each video alone.

    Returns:
        ``scores`` with ``dim`` removed (broadcast against ``gamma``), e.g. ``[..., C]``.

    Raises:
        ValueError: a video (an item of ``mask.shape[:-1]``) with no valid position. This is the one rule for an
            all-masked video in the package (the classifier head pools through this function too): its pooled
            score would be 0/0 for the mean and -inf for the maximum, and a zero stand-in would pass as a real
            prediction, so it is an error; drop empty videos before pooling. Also a ``scores`` without a
            temporal position, a negative or NaN ``gamma``, a float ``gamma`` that overflows (see ``gamma``), and a ``mask`` of the wrong shape or dtype.

    Non-finite scores: a valid ``-inf`` gets zero weight when ``gamma > 0`` (and makes the mean ``-inf``);
    ``+inf`` or NaN among the valid positions of a class is returned for that class.

    Example:
        >>> s = torch.tensor([[1.0], [3.0]])          # T=2 clips, C=1 class
        >>> softmax_temporal_pool(s, 0.0), softmax_temporal_pool(s, 1e6)
        (tensor([2.]), tensor([3.]))
    """
    # Over 60 lines for its docstring (formula, shapes, the non-finite and empty-video rules); the code is ~30.
    if not isinstance(scores, Tensor) or not scores.is_floating_point():
        raise TypeError(f"scores must be a float tensor [..., T, C], got {getattr(scores, 'dtype', type(scores))}")
    if scores.dim() == 0:
        raise ValueError("scores must have a temporal dimension: expected [..., T, C], got a scalar")
    _check_gamma(gamma)
    nd = scores.dim()
    if not -nd <= dim < nd:
        raise ValueError(f"dim={dim} is out of range for scores of shape {tuple(scores.shape)}")
    dim = dim - nd if dim >= 0 else dim  # negative, so it stays right when gamma adds leading dimensions
    T = scores.shape[dim]
    if T == 0:
        raise ValueError(f"scores has no temporal position (size 0 along dim {dim}, shape {tuple(scores.shape)})")

    valid = None if mask is None else _valid_positions(mask, scores.shape, dim)

    if isinstance(gamma, Tensor):
        g = gamma.to(device=scores.device, dtype=scores.dtype)
        if g.dim() >= -dim and g.shape[dim] != 1:
            raise ValueError(
                f"gamma must have size 1 along the pooled dim {dim}, got gamma shape {tuple(g.shape)} for scores "
                f"{tuple(scores.shape)}"
            )
        return _pool_tensor_gamma(scores, g, dim, valid)
    gamma = float(gamma)
    top = float(torch.finfo(scores.dtype if scores.dtype == torch.float64 else torch.float32).max)
    if math.isfinite(gamma) and gamma > top:
        # gamma * (s - max) is computed in float32 (or the scores' float64): a gamma above the largest finite value
        # is inf there and 0 * inf = NaN at each class's maximum
        raise ValueError(f"gamma = {gamma!r} overflows {'float64' if top > 1e300 else 'float32'} (largest "
                         f"{top:.4g}): give a finite gamma <= {top:.4g} (1e6 already pools as the maximum, as the "
                         "seed does) or gamma = inf for the exact maximum")
    if gamma == 0.0:
        return _masked_mean(scores, dim, valid)
    if math.isinf(gamma):
        return _masked_max(scores, dim, valid)
    return _pool(scores, gamma, dim, valid).squeeze(dim)


def _valid_positions(mask: Tensor, shape: torch.Size, dim: int) -> Tensor:
    """Check ``mask`` against scores of ``shape`` pooled over ``dim`` (negative); returns it with the trailing
    (class) dimensions appended, so that it broadcasts against the scores."""
    if mask.dtype != torch.bool:
        raise TypeError(f"mask must be a bool tensor (True = valid position), got {mask.dtype}; use mask.bool()")
    want = tuple(shape[: len(shape) + dim + 1])
    if tuple(mask.shape) != want:
        raise ValueError(
            f"mask must be [..., T] = {want} (the shape of scores up to and including dim {dim}, T={shape[dim]}), "
            f"got {tuple(mask.shape)}"
        )
    empty = ~mask.any(-1)
    if bool(empty.any()):
        idx = empty.nonzero().tolist()[:5]
        raise ValueError(
            f"mask has no valid position for item(s) {idx} (index into mask.shape[:-1]={tuple(mask.shape[:-1])}); "
            "every video needs at least one clip: drop empty videos before pooling"
        )
    return mask.reshape(mask.shape + (1,) * (-dim - 1))


def _masked_mean(s: Tensor, dim: int, valid: Optional[Tensor], keepdim: bool = False) -> Tensor:
    if valid is None:
        return s.mean(dim, keepdim=keepdim)
    total = torch.where(valid, s, torch.zeros((), dtype=s.dtype, device=s.device)).sum(dim, keepdim=keepdim)
    return total / valid.sum(dim, keepdim=keepdim).to(s.dtype)


def _masked_max(s: Tensor, dim: int, valid: Optional[Tensor], keepdim: bool = False) -> Tensor:
    if valid is not None:
        s = torch.where(valid, s, torch.full((), -math.inf, dtype=s.dtype, device=s.device))
    return s.amax(dim, keepdim=keepdim)


def _pool(s: Tensor, gamma: Union[float, Tensor], dim: int, valid: Optional[Tensor]) -> Tensor:
    """Softmax pooling for finite gamma; keeps ``dim`` (size 1)."""
    top = _masked_max(s, dim, valid, keepdim=True)  # [..., 1, C]; NaN if any valid NaN
    finite_top = torch.isfinite(top)
    # The shift carries no gradient: d/d(shift) of max + sum p (s - max) is 1 - sum p = 0.
    ref = torch.where(finite_top, top, torch.zeros((), dtype=s.dtype, device=s.device)).detach()
    usable = torch.isfinite(s) if valid is None else valid & torch.isfinite(s)
    zero = torch.zeros((), dtype=s.dtype, device=s.device)
    d = torch.where(usable, s - ref, zero)  # <= 0 where usable; finite everywhere (no NaN in backward)
    # -inf logits: exp(gamma * -inf) = 0 for gamma > 0, so they (and padding) get zero weight.
    z = torch.where(usable, gamma * d, torch.full((), -math.inf, dtype=s.dtype, device=s.device))
    # NaN only in a class with no usable position (max -inf, +inf or NaN): replaced by `top` below, and the
    # where() on z keeps that NaN out of the gradient
    p = torch.softmax(z, dim=dim)
    pooled = ref + (p * d).sum(dim, keepdim=True)
    # all-(-inf), +inf or NaN maximum: the maximum is the answer (and NaN propagates)
    return torch.where(finite_top, pooled, top)


def _pool_tensor_gamma(s: Tensor, g: Tensor, dim: int, valid: Optional[Tensor]) -> Tensor:
    is_inf = torch.isinf(g)
    # feed a finite gamma to the softmax branch where gamma is inf, so unselected branches stay NaN-free
    g_fin = torch.where(is_inf, torch.zeros((), dtype=g.dtype, device=g.device), g)
    pooled = _pool(s, g_fin, dim, valid)
    out = torch.where(
        g == 0,
        _masked_mean(s, dim, valid, keepdim=True),
        torch.where(is_inf, _masked_max(s, dim, valid, keepdim=True), pooled),
    )
    return out.squeeze(dim)
