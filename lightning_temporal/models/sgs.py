"""Similarity Guided Sampling (SGS), the layer of "3D CNNs with Adaptive Temporal Feature Resolution" (ATFR).

Temporally redundant feature maps are grouped into similarity bins; bins that no frame reaches are dropped, so
the layers after SGS run on B' <= B temporal positions per clip (the seed's Eq. 2-4, supplementary §C-§E).

Four assignments of frames to bins (``assignment=``); the first two bin a similarity coordinate Delta:

* ``"released"`` reproduces the authors' released code (the PySlowFast fork "Similarity-Guided-Sampling",
  ``sgs/models/TemporalSampler.py``, ``sampling_kernels.py``, ``distance_functions.py``,
  ``temporal_sampling_layer.py``, ``resnet_helper.py``; every released config: ``DISTANCE_TYPE: L2``,
  ``LATENT_DIMENSION: 8``, ``KERNEL_TYPE: linear``, ``NUM_BINS: -1``): Delta is scaled to [0, 2B], B bins of
  width 2 with centres 2b + 1, the unnormalised linear kernel max(0, 1 + 1e-7 - |Delta - beta_b|), the distance
  ||mean_t z - z_t + 1e-6|| (torch's ``pairwise_distance`` of that time adds its ``eps=1e-6`` inside the
  norm), and in a backbone the embedding reads the last block's output before its final ReLU (the stage
  applies the ReLU after SGS). Known flaw: the largest Delta always sits on a bin edge and keeps weight ~1e-7,
  and any Delta near an edge is nearly dropped: a static clip comes out as one bin holding T x 1e-7 x the
  frame, two equally long states as one bin in which every frame keeps < 1 % of its weight (erased, not
  merged).
* ``"interpolate"`` (this package's improvement): Delta is scaled so that its minimum and maximum land on the
  first and last bin centres, each frame's weight is split linearly between its two nearest centres (the
  weights of a frame sum to 1, as in linear binning of a histogram), bins whose normalised weights are
  identical (so are their outputs) are merged, and each output bin is the weighted *mean* of its frames. A
  clip whose Delta are all equal (to 64 float eps relative to the embedding's size) is one bin, explicitly.

What neither can keep: bins are ordered by similarity, not by time, so a class defined only by the order of
positions (the direction of a motion) is averaged away. And Delta is one number per frame (its distance to the
clip's mean with ``l2_to_mean``): states that are equally far from the mean share a bin, e.g. a clip of two
equally long states gives one bin, their mean (``interpolate``) or ~1e-5 x it (``released``). Both rescale
Delta per clip, so B' follows the shape of the Delta values, not how much the clip changes.

* ``"ordered"`` (this package, from the SPEC's "what SGS must do"): bins are contiguous stretches of time, in
  time order, of equal cumulative change of the embedding (path length sum_t ||z_t - z_{t-1}||), with linear
  (soft) weights between neighbouring bins so that gradients reach the embedding; each bin is the weighted
  mean of its frames. The number of bins follows the amount of change in the absolute units of the
  batch-normalised embedding: min(B, 1 + floor(total change / min_change)). A static clip is one bin; A | B | A
  is three bins in that order. With ``block_size`` each block is binned on its own and bins of neighbouring
  blocks that do not differ (by min_change) are merged again.
* ``"fixed"``: no content, a temporal average pooling to min(B, T) positions at the same place, with the same
  masks and GMAC accounting: the baseline an adaptive assignment must beat at equal GMACs.

The default is ``"ordered"``, chosen on ``benchmarks/sgs_tradeoff.py``'s results (the README's SGS tables,
``benchmarks/results/sgs_tradeoff_variants.json``): the adaptive assignment that did best against fixed pooling
across the variants; ``"released"`` stays for reproducing the authors' code, ``"interpolate"`` for comparison.

In a backbone the convs before SGS pad time by repeating edge frames (``temporal_padding="replicate"``, the
default; :func:`replicate_time_padding`): with zero padding a static clip's edge frames differ after them, and
SGS keeps 4-8 bins of a clip that has nothing to compress.

Pure math: no Lightning, no I/O. The functional pieces (`similarity_coordinates`, `scale_to_bins`,
`bin_weights`, `interpolate_weights`, `ordered_weights`, `fixed_weights`, `compact_bins`, `merge_identical_bins`,
`merge_adjacent_bins`, `sample_bins`) are exposed so that they can be tested on their own.
"""
from __future__ import annotations

import math
from typing import Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "SimilarityGuidedSampling",
    "ASSIGNMENTS",
    "SIMILARITY_ASSIGNMENTS",
    "DEFAULT_ASSIGNMENT",
    "RELEASED_CONFIG",
    "RELEASED_DISTANCE_EPS",
    "SIMILARITIES",
    "KERNELS",
    "KERNEL_EPS",
    "similarity_coordinates",
    "scale_to_bins",
    "bin_weights",
    "interpolate_weights",
    "compact_bins",
    "merge_identical_bins",
    "merge_adjacent_bins",
    "sample_bins",
    "fixed_weights",
    "cumulative_change",
    "ordered_weights",
    "block_diagonal",
    "ORDERED_MIN_CHANGE",
    "TEMPORAL_PADDINGS",
    "ReplicateTimeConv3d",
    "replicate_time_padding",
    "replicate_padding_before",
]

SIMILARITIES = ("magnitude", "l2_to_mean", "l1_to_mean", "cosine_to_mean", "spherical")
KERNELS = ("linear", "dirac")
ASSIGNMENTS = ("interpolate", "released", "ordered", "fixed")
# the assignments that bin a similarity coordinate Delta (``similarity``, ``coordinates`` apply to them)
SIMILARITY_ASSIGNMENTS = ("interpolate", "released")
TEMPORAL_PADDINGS = ("replicate", "zeros")
# ordered: the change of the batch-normalised embedding (unit variance per coordinate over the training
# batches, D = 8) that one more bin costs; see `ordered_weights`.
ORDERED_MIN_CHANGE = 1.0
# Chosen by benchmarks/sgs_tradeoff.py (benchmarks/results/sgs_tradeoff_variants.json): see the README's SGS section.
DEFAULT_ASSIGNMENT = "ordered"
# The released linear kernel is max(0, 1 + 1e-7 - |Delta - beta|): a Delta on a bin edge (the largest Delta
# always is, it is scaled to 2B) keeps a tiny weight and its bin is not dropped.
KERNEL_EPS = 1e-7
# torch.nn.functional.pairwise_distance's eps, added to (mean - z) inside the norm by the released distance.
RELEASED_DISTANCE_EPS = 1e-6
# The released computation as constructor arguments (distance_eps follows from assignment="released").
RELEASED_CONFIG = dict(assignment="released", similarity="l2_to_mean", kernel="linear", normalize=False,
                       embed_dim=8, pre_activation=True)
# Multi-dimensional (spherical) bins are B**K; past this the [N, B**K, T] weight tensor gets silly.
MAX_TOTAL_BINS = 1 << 16
# A coordinate whose spread over the clip is within this many float eps of the embedding's size is constant.
_DEGENERATE_EPS = 64
# Bins whose normalised weights differ by at most this much (max over frames) are merged (interpolate).
MERGE_ATOL = 1e-6


# --------------------------------------------------------------------------------------------------------
# Similarity coordinate
# --------------------------------------------------------------------------------------------------------
def _spherical(z: Tensor) -> Tensor:
    """Hyperspherical coordinates of z [..., D] -> [..., D] = (r, phi_1 .. phi_{D-1}), all >= 0.

    phi_k = atan2(||z_{k+1:}||, z_k) in [0, pi] for k < D-1; the last angle atan2(z_D, z_{D-1}) + pi lies in
    [0, 2 pi]. Written with atan2 of a square root padded by 1e-30 (and a masked last angle) so that the
    gradient stays finite at z = 0, where the angles are undefined.
    """
    d = z.shape[-1]
    r = torch.linalg.vector_norm(z, dim=-1, keepdim=True)
    if d == 1:
        return r
    tiny = torch.finfo(z.dtype).tiny
    sq = z * z
    # tail[..., k] = sum_{j > k} z_j^2 for k = 0 .. D-3 (the polar angles)
    tail = sq.flip(-1).cumsum(-1).flip(-1)[..., 1:]
    angles = []
    if d > 2:
        polar = torch.atan2(torch.sqrt(tail[..., : d - 2] + 1e-30), z[..., : d - 2])
        angles.append(polar)
    x, y = z[..., d - 2], z[..., d - 1]
    ok = (x * x + y * y) > tiny
    last = torch.atan2(torch.where(ok, y, torch.zeros_like(y)), torch.where(ok, x, torch.ones_like(x)))
    angles.append((last + math.pi).unsqueeze(-1))
    return torch.cat([r, *angles], dim=-1)


def similarity_coordinates(
    z: Tensor, similarity: str, coordinates: Optional[Sequence[int]] = None, distance_eps: float = 0.0
) -> Tuple[Tensor, Tensor]:
    """Similarity coordinates Delta of embeddings z [M, T, D].

    * ``magnitude``: ||z_t||_2 (the seed's choice, §5.2.1);
    * ``l2_to_mean`` / ``l1_to_mean``: ||mean_t z - z_t + distance_eps||_p (released ``LP(p)`` distance; the
      released code runs with ``distance_eps = 1e-6``, torch's ``pairwise_distance`` eps);
    * ``cosine_to_mean``: 1 - cos(z_t, mean_t z) (released ``Cosine``);
    * ``spherical``: the chosen spherical coordinates of z_t (seed §D, Eq. 1).

    Returns (delta [M, T, K] >= 0, reference [M, 1, K] >= 0): K = 1 except for `spherical`
    (K = len(coordinates)). `reference` is the size of the quantity Delta is measured against (the largest
    embedding norm, or 1 for angles and cosines): a spread of Delta within float rounding of it is noise.
    """
    if similarity == "magnitude":
        delta = torch.linalg.vector_norm(z, dim=-1, keepdim=True)
        ref = delta.detach().amax(dim=1, keepdim=True)
    elif similarity in ("l2_to_mean", "l1_to_mean"):
        diff = z.mean(dim=1, keepdim=True) - z
        if distance_eps:
            diff = diff + distance_eps
        order = 2 if similarity == "l2_to_mean" else 1
        # vector_norm's backward is 0 (not NaN) where the difference is exactly 0 (all frames equal)
        delta = torch.linalg.vector_norm(diff, ord=order, dim=-1, keepdim=True)
        ref = torch.linalg.vector_norm(z.detach(), ord=order, dim=-1, keepdim=True).amax(dim=1, keepdim=True)
    elif similarity == "cosine_to_mean":
        mean = z.mean(dim=1, keepdim=True).expand_as(z)
        delta = (1.0 - F.cosine_similarity(z, mean, dim=-1, eps=1e-8)).unsqueeze(-1)
        ref = torch.ones_like(delta[:, :1])
    elif similarity == "spherical":
        coords = list(coordinates) if coordinates is not None else [0]
        sph = _spherical(z)[..., coords]
        delta = sph
        ref = torch.ones_like(sph[:, :1])
        if 0 in coords:  # the radius is measured against the embedding's size, the angles against 1 rad
            k = coords.index(0)
            ref = ref.clone()
            ref[..., k] = sph[..., k].detach().amax(dim=1, keepdim=True)
    else:
        raise ValueError(f"similarity={similarity!r} is unknown; use one of {SIMILARITIES}")
    return delta, ref.clamp_min(0.0)


def _constant(spread: Tensor, reference: Tensor) -> Tensor:
    """True where a coordinate's spread over the clip is float noise: <= 64 eps x reference."""
    return spread <= _DEGENERATE_EPS * torch.finfo(spread.dtype).eps * reference


# --------------------------------------------------------------------------------------------------------
# Released assignment: Delta scaled to [0, 2B], bins of width 2, linear / dirac kernel
# --------------------------------------------------------------------------------------------------------
def scale_to_bins(delta: Tensor, reference: Tensor, num_bins: int) -> Tensor:
    """Released scaling: Delta [M, T, K] >= 0 -> Delta * (2B / max_t Delta), per sample and coordinate.

    Written in the released order of operations (``distances * (2 * num_bins / max_distances)``), so that
    float32 results round as the released code's do; the largest Delta lands on 2B up to one rounding. Where
    max_t Delta is float noise (<= 64 eps x reference; the released code divides by it, giving NaN at 0 or a
    rounding-driven assignment), every Delta is set to 0: one bin, finite values and gradients.
    """
    peak = delta.amax(dim=1, keepdim=True)  # [M, 1, K]
    degenerate = _constant(peak, reference)
    safe_peak = torch.where(degenerate, torch.ones_like(peak), peak)
    scaled = delta * (2.0 * num_bins / safe_peak)
    return torch.where(degenerate, torch.zeros_like(scaled), scaled)


class _DiracStraightThrough(torch.autograd.Function):
    """Psi = 1[|Delta - beta| <= 1]; backward passes the gradient straight through (identity) inside the
    bin window and 0 outside, as the released `DeltaKernel` does."""

    @staticmethod
    def forward(ctx, diff: Tensor) -> Tensor:  # diff = Delta - beta
        inside = diff.abs() <= 1.0
        ctx.save_for_backward(inside)
        return inside.to(diff.dtype)

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        (inside,) = ctx.saved_tensors
        return grad * inside.to(grad.dtype)


def _kernel_1d(delta: Tensor, num_bins: int, kernel: str) -> Tensor:
    """delta [M, T] scaled to [0, 2B] -> Psi [M, B, T].

    Bins as the released ``create_bins(0, max_t delta, B)``: width w = max_t delta / B (2, up to rounding),
    centres w / 2 + b w (2b + 1). Taking them from the scaled maximum keeps the largest Delta exactly on the
    last bin's upper edge, where it keeps the kernel's 1e-7. The centres are constants (no gradient), as in
    the released backward. An all-zero sample (degenerate) gets width 2.
    """
    top = delta.detach().amax(dim=1, keepdim=True)  # [M, 1]
    width = torch.where(top > 0, top / num_bins, torch.full_like(top, 2.0))
    centres = torch.arange(num_bins, device=delta.device, dtype=delta.dtype).view(1, -1) * width + width / 2
    diff = delta.unsqueeze(1) - centres.unsqueeze(-1)  # [M, B, T]
    if kernel == "linear":
        return torch.clamp(1.0 + KERNEL_EPS - diff.abs(), min=0.0)
    if kernel == "dirac":
        return _DiracStraightThrough.apply(diff)
    raise ValueError(f"kernel={kernel!r} is unknown; use one of {KERNELS}")


def _outer_over_coordinates(per_coord: Sequence[Tensor]) -> Tensor:
    """[M, B, T] weights per coordinate -> [M, B**K, T], their product (seed §D, Eq. 1); bins ordered
    lexicographically, coordinate 0 most significant."""
    w = per_coord[0]
    m, _, t = w.shape
    for wj in per_coord[1:]:  # loop over coordinates (K is 1 or 2 in practice), never over samples
        w = (w.unsqueeze(2) * wj.unsqueeze(1)).reshape(m, -1, t)
    return w


def bin_weights(delta: Tensor, num_bins: int, kernel: str = "linear", normalize: bool = False) -> Tensor:
    """Released sampling weights Psi [M, B**K, T] from scaled coordinates delta [M, T, K] (each in [0, 2B]).

    K > 1: the product of the 1-D kernels over coordinates (seed §D, Eq. 1). `normalize` (the released
    ``linear_normalized`` / ``delta_normalized`` kernels, used by no released config) divides each bin's
    weights by the number of t active in it (weight > 0, as the released ``kernels != 0``). The count is
    piecewise constant in Delta, so it carries no gradient: d(Psi / n)/dDelta = Psi' / n. (The released
    hand-written linear-kernel backward leaves the 1/n out, marked "fixme" there; autograd here gives the true
    derivative, which `torch.autograd.gradcheck` confirms.)
    """
    w = _outer_over_coordinates([_kernel_1d(delta[..., j], num_bins, kernel) for j in range(delta.shape[-1])])
    if normalize:
        active = (w > 0).sum(dim=-1, keepdim=True).clamp_min(1).to(w.dtype)
        w = w / active
    return w


# --------------------------------------------------------------------------------------------------------
# Interpolate assignment: min and max on the first and last centres, linear split between two centres
# --------------------------------------------------------------------------------------------------------
def interpolate_weights(delta: Tensor, reference: Tensor, num_bins: int) -> Tensor:
    """Linear-binning weights W [M, B**K, T] of coordinates delta [M, T, K] (this package's assignment).

    Per sample and coordinate, u = (Delta - min_t Delta) / (max_t Delta - min_t Delta) * (B - 1) puts the
    smallest Delta on centre 0 and the largest on centre B - 1; frame t gives weight 1 - frac(u_t) to centre
    floor(u_t) and frac(u_t) to the next one, so its weights sum to 1 (B = 1: all weight on the one bin).
    A coordinate whose spread is float noise relative to the embedding (<= 64 eps x reference) puts every
    frame on centre 0: a clip whose Delta are all equal is one bin, without a 0 / 0. With K coordinates the
    weights are the product of the 1-D weights (seed §D, Eq. 1), so they still sum to 1 per frame.

    Gradients reach Delta through frac(u) (and through the min and max); floor(u) is piecewise constant.
    """
    lo = delta.amin(dim=1, keepdim=True)
    spread = delta.amax(dim=1, keepdim=True) - lo  # [M, 1, K]
    degenerate = _constant(spread, reference)
    safe = torch.where(degenerate, torch.ones_like(spread), spread)
    u = torch.where(degenerate, torch.zeros_like(delta), (delta - lo) / safe) * (num_bins - 1)  # [M, T, K]
    per_coord = []
    for j in range(delta.shape[-1]):  # loop over coordinates (K <= 2 in practice)
        uj = u[..., j]  # [M, T]
        if num_bins == 1:
            per_coord.append(torch.ones_like(uj).unsqueeze(1))
            continue
        low = uj.detach().floor().clamp(0, num_bins - 2)
        frac = uj - low  # in [0, 1]; carries the gradient
        low = low.long()
        w = F.one_hot(low, num_bins).to(uj.dtype) * (1.0 - frac).unsqueeze(-1)
        w = w + F.one_hot(low + 1, num_bins).to(uj.dtype) * frac.unsqueeze(-1)  # [M, T, B]
        per_coord.append(w.transpose(1, 2))
    return _outer_over_coordinates(per_coord)


def fixed_weights(num_frames: int, num_bins: int, dtype: torch.dtype = torch.float32,
                  device: Optional[torch.device] = None) -> Tensor:
    """The fixed temporal average pooling to B positions as a sampling matrix W [B'', T], B'' = min(B, T).

    Bin b averages frames floor(b T / B'') .. ceil((b + 1) T / B'') - 1 (end exclusive), the windows of
    ``torch.nn.functional.adaptive_avg_pool1d``: with T a multiple of B'' a plain stride of T / B''. No content:
    every clip gets the same B'' bins, in time order. Rows sum to 1.
    """
    b = min(int(num_bins), int(num_frames))
    idx = torch.arange(b, device=device)
    start = (idx * num_frames) // b  # floor(b T / B)
    end = -((-(idx + 1) * num_frames) // b)  # ceil((b + 1) T / B)
    t = torch.arange(num_frames, device=device)
    inside = (t.unsqueeze(0) >= start.unsqueeze(1)) & (t.unsqueeze(0) < end.unsqueeze(1))  # [B, T]
    return inside.to(dtype) / (end - start).unsqueeze(1).to(dtype)


def cumulative_change(z: Tensor) -> Tuple[Tensor, Tensor]:
    """Path length of the embedding along time: z [M, T, D] -> (c [M, T], total [M, 1]).

    c_0 = 0, c_t = sum_{s=1..t} ||z_s - z_{s-1}||_2, total = c_{T-1}. A step within float rounding of the
    embedding's size (<= 64 eps x max_t ||z_t||) counts as 0, so that a static clip has no change at all.
    """
    m, t, _ = z.shape
    if t == 1:
        zero = z.new_zeros(m, 1)
        return zero, zero
    step = torch.linalg.vector_norm(z[:, 1:] - z[:, :-1], dim=-1)  # [M, T-1]; backward 0 at an exact 0
    ref = torch.linalg.vector_norm(z.detach(), dim=-1).amax(dim=1, keepdim=True)  # [M, 1]
    step = torch.where(_constant(step.detach(), ref), torch.zeros_like(step), step)
    c = torch.cat([z.new_zeros(m, 1), step.cumsum(dim=1)], dim=1)
    return c, c[:, -1:]


def ordered_weights(z: Tensor, num_bins: int, min_change: Optional[float] = ORDERED_MIN_CHANGE) -> Tensor:
    """Order-preserving sampling weights W [M, B, T] from embeddings z [M, T, D] (this package's ``ordered``).

    Bins are contiguous stretches of time, in time order, of equal cumulative change of the embedding
    (:func:`cumulative_change`): u_t = c_t / total * (B_eff - 1); frame t gives weight 1 - frac(u_t) to bin
    floor(u_t) and frac(u_t) to the next (linear binning, as ``interpolate``, so the weights of a frame sum to
    1 and gradients reach the embedding through c_t / total). The number of bins used follows the amount of
    change, in the absolute units of the batch-normalised embedding: B_eff = min(B, 1 + floor(total /
    min_change)); a clip that changes by less than `min_change` along its whole length is one bin (its mean),
    a static clip (total 0) always. ``min_change=None``: scale-free, B_eff = B whenever the clip changes.
    Rows are not normalised (see :meth:`SimilarityGuidedSampling.weights`); bins no frame reaches are empty.
    """
    m, t, _ = z.shape
    c, total = cumulative_change(z)
    if num_bins == 1 or t == 1:
        return torch.ones_like(c).unsqueeze(1)
    with torch.no_grad():
        if min_change is None:
            b_eff = torch.full_like(total, float(num_bins))
        else:
            b_eff = (1.0 + torch.floor(total / min_change)).clamp(max=num_bins)
        b_eff = torch.where(total > 0, b_eff, torch.ones_like(b_eff))  # [M, 1]
    safe = torch.where(total > 0, total, torch.ones_like(total))
    u = c / safe * (b_eff - 1.0)  # [M, T] in [0, B_eff - 1]
    low = torch.minimum(u.detach().floor(), (b_eff - 2.0).clamp(min=0.0))
    frac = u - low  # in [0, 1]; carries the gradient
    low = low.long()
    w = F.one_hot(low, num_bins).to(u.dtype) * (1.0 - frac).unsqueeze(-1)
    w = w + F.one_hot((low + 1).clamp(max=num_bins - 1), num_bins).to(u.dtype) * frac.unsqueeze(-1)
    return w.transpose(1, 2)  # [M, B, T]


def block_diagonal(weights: Tensor, num_blocks: int) -> Tensor:
    """Per-block weights [N * nb, B, bs] -> weights over the whole clip [N, nb * B, nb * bs] (block b's bins
    read only block b's frames; bins in block order)."""
    mb, b, bs = weights.shape
    n = mb // num_blocks
    eye = torch.eye(num_blocks, dtype=weights.dtype, device=weights.device)
    w = weights.reshape(n, num_blocks, b, bs)
    return torch.einsum("nkbs,kj->nkbjs", w, eye).reshape(n, num_blocks * b, num_blocks * bs)


def _normalize_bins(weights: Tensor, keep: Optional[Tensor] = None) -> Tensor:
    """Each bin's weight row divided by its sum, so the bin's output is the weighted mean of its frames.

    weights [M, B, T] >= 0 -> [M, B, T]; rows where `keep` [M, B] is False (default: rows that sum to 0) are
    returned as they are.
    """
    total = weights.sum(dim=-1, keepdim=True)
    ok = total > 0 if keep is None else keep.unsqueeze(-1)
    return weights / torch.where(ok, total, torch.ones_like(total))


def merge_adjacent_bins(weights: Tensor, mask: Tensor, z: Tensor, min_change: float,
                        block_size: Optional[int] = None) -> Tuple[Tensor, Tensor, Tensor]:
    """Merge consecutive bins whose mean embeddings differ by less than `min_change` (time-ordered bins).

    weights [M, B', T] >= 0 (compacted, in time order, `mask` [M, B']), z [M, T, D] -> (weights, mask, counts)
    compacted again; merged rows are summed. With `block_size` only bins of different temporal blocks are
    merged (SGS on blocks, where the block edges are boundaries that no change asked for): a static clip
    binned block by block becomes one bin again.
    """
    m, b, t = weights.shape
    if b <= 1:
        return weights, mask, mask.sum(dim=1)
    with torch.no_grad():
        rows = _normalize_bins(weights)
        means = torch.matmul(rows, z.to(rows.dtype))  # [M, B', D]
        close = torch.linalg.vector_norm(means[:, 1:] - means[:, :-1], dim=-1) < min_change  # [M, B'-1]
        link = close & mask[:, 1:] & mask[:, :-1]
        if block_size is not None:
            block = (weights > 0).to(torch.int8).argmax(dim=-1) // block_size  # block of a bin's first frame
            link &= block[:, 1:] != block[:, :-1]
        group = torch.cat([torch.zeros_like(mask[:, :1], dtype=torch.long), (~link).long().cumsum(dim=1)], dim=1)
    merged = torch.zeros_like(weights).scatter_add(1, group.unsqueeze(-1).expand(m, b, t), weights)
    keep = torch.zeros_like(mask).scatter(1, group, mask)
    return compact_bins(merged, keep)


def merge_identical_bins(weights: Tensor, mask: Tensor, atol: float = MERGE_ATOL) -> Tuple[Tensor, Tensor, Tensor]:
    """Merge the bins whose weight rows are proportional: their weighted means, so their outputs, are equal.

    weights [M, B', T] >= 0 (compacted, `mask` [M, B'] marks real bins) -> (weights, mask, counts) compacted
    again. Two bins merge when their rows divided by their sums differ by at most `atol` at every frame; each
    bin joins the first bin it matches, and the merged row is the sum of the rows (a frame's weights still sum
    to what they summed to). Why: a state that falls between two centres fills both with its own frames, and
    a single isolated frame fills two bins with itself; both would cost two positions for one feature map.
    """
    m, b, t = weights.shape
    if b <= 1:
        return weights, mask, mask.sum(dim=1)
    with torch.no_grad():
        rows = _normalize_bins(weights)
        same = torch.cdist(rows, rows, p=float("inf")) <= atol  # [M, B', B']
        same &= mask.unsqueeze(1) & mask.unsqueeze(2)
        # first real bin i matching bin j (same[j, j] holds for a real j, so i <= j); padding maps to itself
        first = torch.where(mask, same.to(torch.int8).argmax(dim=1), torch.arange(b, device=weights.device))
    merged = torch.zeros_like(weights).scatter_add(1, first.unsqueeze(-1).expand(m, b, t), weights)
    keep = torch.zeros_like(mask).scatter(1, first, mask)  # [M, B']: bins that received a real bin
    return compact_bins(merged, keep)


def compact_bins(weights: Tensor, keep: Optional[Tensor] = None) -> Tuple[Tensor, Tensor, Tensor]:
    """Drop empty bins, batch-wide and without a loop over samples.

    weights [M, B, T] -> (weights [M, B'max, T], mask [M, B'max] bool, counts [M] int64). A bin is kept when
    some t has weight > 0 in it (or where `keep` [M, B] says so); kept bins keep their order (stable sort of
    the keep mask) and are moved to the front; each sample is padded with zero rows up to the largest B' in
    the batch, and `mask` marks its real bins.
    """
    m, b, t = weights.shape
    if keep is None:
        keep = weights.amax(dim=-1) > 0  # [M, B]; weights are >= 0
    counts = keep.sum(dim=1)  # [M]
    bmax = int(counts.max()) if counts.numel() else 0
    # a stable descending sort of the keep mask puts kept bins first, in their original order
    order = torch.argsort(keep.to(torch.int8), dim=1, descending=True, stable=True)[:, :bmax]
    flat = (order + torch.arange(m, device=weights.device).unsqueeze(1) * b).flatten()
    gathered = weights.reshape(m * b, t).index_select(0, flat).view(m, bmax, t)
    mask = keep.gather(1, order)
    gathered = gathered * mask.unsqueeze(-1).to(gathered.dtype)  # rows past a sample's B' are zero padding
    return gathered, mask, counts


def sample_bins(x: Tensor, weights: Tensor) -> Tensor:
    """O_b = sum_t Psi[b, t] I_t as one matmul: x [M, C, T, S], weights [M, B', T] -> [M, C, B', S]."""
    return torch.matmul(weights.unsqueeze(1), x)


# --------------------------------------------------------------------------------------------------------
# Temporal padding of the layers that feed SGS
# --------------------------------------------------------------------------------------------------------
class ReplicateTimeConv3d(nn.Conv3d):
    """A Conv3d that pads time by repeating the edge frames (space keeps its zero padding).

    Same parameters and state-dict keys as the ``nn.Conv3d`` it replaces (:func:`replicate_time_padding` swaps
    the class in place); ``time_padding`` frames are repeated at each end, then the conv runs with temporal
    padding 0. Why: with zero padding the edge frames of a static clip differ from the middle ones after a
    temporal conv (by 36-63 % in x3d_s's res2), so SGS sees change where there is none.
    """

    time_padding: int = 0

    def forward(self, x: Tensor) -> Tensor:
        p = self.time_padding
        if p:
            x = F.pad(x, (0, 0, 0, 0, p, p), mode="replicate")
        return self._conv_forward(x, self.weight, self.bias)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", time_padding={self.time_padding} (replicate)"


def replicate_padding_before(layers: Sequence[nn.Module], *temporal: nn.Module) -> int:
    """Apply :func:`replicate_time_padding` to `layers` (the layers that feed the temporal modules) when one
    of `temporal` asks for it (``temporal_padding == "replicate"``, the SGS default); returns the number of
    convs changed. The backbones call it from ``insert_temporal``."""
    if not any(getattr(m, "temporal_padding", None) == "replicate" for m in temporal):
        return 0
    return sum(replicate_time_padding(layer) for layer in layers)


def replicate_time_padding(module: nn.Module) -> int:
    """Make every ``nn.Conv3d`` inside `module` with temporal padding p > 0 repeat its edge frames instead of
    padding time with zeros (:class:`ReplicateTimeConv3d`, in place; weights and state-dict keys unchanged).
    Returns the number of convs changed. Backbones call it on the layers before SGS when SGS is inserted with
    ``temporal_padding="replicate"`` (its default); the layers after SGS keep zero padding, which the masking
    of padded bins relies on.
    """
    changed = 0
    for m in module.modules():
        if type(m) is nn.Conv3d and m.padding_mode == "zeros" and isinstance(m.padding, tuple) and m.padding[0] > 0:
            m.__class__ = ReplicateTimeConv3d
            m.time_padding = int(m.padding[0])
            m.padding = (0, *m.padding[1:])
            changed += 1
    return changed


# --------------------------------------------------------------------------------------------------------
# Module
# --------------------------------------------------------------------------------------------------------
class SimilarityGuidedSampling(nn.Module):
    """Similarity Guided Sampling: bins temporally similar feature maps and drops empty bins.

    Example::

        >>> import torch
        >>> sgs = SimilarityGuidedSampling(in_channels=32).eval()      # assignment="ordered"
        >>> x = torch.randn(2, 32, 16, 7, 7)                 # N, C, T, H, W
        >>> x[1] = x[1, :, :1]                                # sample 1 is a static clip
        >>> out, mask = sgs(x)                                # out [2, 32, B'max, 7, 7], mask [2, B'max]
        >>> int(sgs.last_num_bins[1]), bool(torch.allclose(out[1, :, 0], x[1, :, 0]))   # one bin = the frame
        (1, True)
        >>> sgs.num_bins = 8                                  # fewer bins at inference, one line (Table A.4)
        >>> released = SimilarityGuidedSampling(32, assignment="released")   # the authors' released layer

    Args:
        in_channels: C of the input.
        num_bins: B, the number of bins per coordinate. None: B = T of each input (or `block_size`).
        embed_dim: D, the embedding size (8 in every released config).
        similarity: "l2_to_mean" (default; the released code's ``DISTANCE_TYPE: L2``), "l1_to_mean",
            "cosine_to_mean" (distance of z_t to the temporal mean of z), "magnitude" (||z_t||, the seed's
            §5.2.1 choice), "spherical" (seed §D).
        assignment: "ordered" (default: bins are contiguous stretches of time in time order, of equal
            cumulative change of the embedding, as many as the change pays for: :func:`ordered_weights`;
            weighted means, identical bins merged), "interpolate" (this package's first improvement: min / max
            of Delta on the first / last centre, linear split between two centres, bins are weighted means,
            identical bins merged), "released" (the released code, for reproduction: Delta * 2B / max Delta,
            width-2 bins, ``kernel``, bins are weighted sums) or "fixed" (no content: a temporal average pooling to min(B, T) positions,
            :func:`fixed_weights`; the baseline an adaptive assignment must beat at the same GMACs; it has no
            embedding). See the module docstring.
        kernel: released assignment only: "linear" (max(0, 1 + 1e-7 - |Delta - beta|), every released config)
            or "dirac" (1[|Delta - beta| <= 1], gradient passed straight through inside the bin).
        normalize: released assignment only: divide each bin's weights by the number of frames active in it
            (the released ``linear_normalized`` kernel, used by no released config). Default False.
        distance_eps: added to (mean - z_t) inside the l2/l1 distance. None: 1e-6 with "released" (what the
            released code computes), 0 otherwise.
        pre_activation: in a backbone, feed SGS the last block's output before its final ReLU and apply the
            ReLU after SGS (the released placement), where the stage ends in a ReLU; otherwise SGS reads the
            stage's output. The module itself only records the choice.
        block_size: run SGS independently on consecutive temporal blocks of this length (SlowFast: 8 on the
            fast pathway, 2 on the slow one); T must be a multiple of it.
        coordinates: `spherical` only: which spherical coordinates form the bins, 0 = radius,
            k = the k-th angle (1 .. D-1). Default (0, 1). There are B**K bins; (0,) is exactly `magnitude`.
        min_change: "ordered" only: the embedding change one more bin costs (absolute units of the
            batch-normalised embedding; None: ``ORDERED_MIN_CHANGE`` = 1.0). With `block_size`, bins of
            neighbouring blocks whose mean embeddings differ by less than it are merged.
        temporal_padding: "replicate" (default): in a backbone, the convs before SGS repeat the edge frames
            instead of padding time with zeros (:func:`replicate_time_padding`), so a static clip reaches
            SGS as identical frames; "zeros" leaves the backbone as it is. The module itself only records it.

    Shapes: forward(x [N, C, T, H, W]) -> (out [N, C, B', H, W], mask [N, B'] bool). Each sample's real bins
    come first and the rest is zero padding up to the largest B' of the batch; with `block_size` the kept bins
    of the blocks follow each other in block order. After each forward `last_num_bins` [N] (int64) holds the
    number of real bins of every sample.

    Raises:
        ValueError: unknown similarity / kernel / assignment, options that do not apply to the assignment or
            similarity, non-positive sizes, or more than 65536 spherical bins.
    """

    def __init__(
        self,
        in_channels: int,
        num_bins: Optional[int] = None,
        embed_dim: int = 8,
        similarity: str = "l2_to_mean",
        kernel: str = "linear",
        normalize: bool = False,
        block_size: Optional[int] = None,
        coordinates: Optional[Sequence[int]] = None,
        assignment: str = DEFAULT_ASSIGNMENT,
        distance_eps: Optional[float] = None,
        pre_activation: bool = True,
        min_change: Optional[float] = None,
        temporal_padding: str = "replicate",
    ) -> None:
        # Over 60 lines: one check per argument, where the user passes it (as the other public classes do), then
        # the embedding layers; a helper would only move the checks away from the arguments they name.
        super().__init__()
        if not isinstance(in_channels, int) or in_channels < 1:
            raise ValueError(f"in_channels must be a positive int, got {in_channels!r}")
        if not isinstance(embed_dim, int) or embed_dim < 1:
            raise ValueError(f"embed_dim must be a positive int, got {embed_dim!r}")
        if similarity not in SIMILARITIES:
            raise ValueError(f"similarity={similarity!r} is unknown; use one of {SIMILARITIES}")
        if kernel not in KERNELS:
            raise ValueError(f"kernel={kernel!r} is unknown; use one of {KERNELS}")
        if assignment not in ASSIGNMENTS:
            raise ValueError(f"assignment={assignment!r} is unknown; use one of {ASSIGNMENTS}")
        if assignment != "released" and (kernel != "linear" or normalize):
            raise ValueError(
                f"kernel={kernel!r}, normalize={normalize!r}: assignment={assignment!r} always splits a frame "
                "linearly between two bins and averages each bin; kernel and normalize apply to "
                "assignment='released' only"
            )
        if assignment in ("ordered", "fixed") and (similarity != "l2_to_mean" or coordinates is not None):
            raise ValueError(
                f"similarity={similarity!r}, coordinates={coordinates!r}: assignment={assignment!r} does not use "
                "a similarity coordinate (ordered bins the cumulative change of the embedding, fixed pools time); "
                "pass assignment='interpolate' or 'released' to bin a similarity coordinate"
            )
        if min_change is not None and assignment != "ordered":
            raise ValueError(f"min_change={min_change!r} only applies to assignment='ordered', not {assignment!r}")
        if min_change is None and assignment == "ordered":
            min_change = ORDERED_MIN_CHANGE
        if min_change is not None and (isinstance(min_change, bool) or not isinstance(min_change, (int, float))
                                       or not math.isfinite(min_change) or min_change <= 0):
            raise ValueError(f"min_change must be a finite number > 0, got {min_change!r}")
        if temporal_padding not in TEMPORAL_PADDINGS:
            raise ValueError(f"temporal_padding={temporal_padding!r} is unknown; use one of {TEMPORAL_PADDINGS}")
        if distance_eps is None:
            distance_eps = RELEASED_DISTANCE_EPS if assignment == "released" else 0.0
        if not isinstance(distance_eps, (int, float)) or not math.isfinite(distance_eps) or distance_eps < 0:
            raise ValueError(f"distance_eps must be a finite number >= 0, got {distance_eps!r}")
        if block_size is not None and (not isinstance(block_size, int) or block_size < 1):
            raise ValueError(f"block_size must be None or a positive int, got {block_size!r}")
        if coordinates is not None and similarity != "spherical":
            raise ValueError(
                f"coordinates={coordinates!r} only applies to similarity='spherical', not {similarity!r}"
            )
        if similarity == "spherical":
            coordinates = (0, 1) if coordinates is None else tuple(int(c) for c in coordinates)
            if embed_dim == 1:
                coordinates = (0,) if coordinates == (0, 1) else coordinates
            bad = [c for c in coordinates if not 0 <= c < embed_dim]
            if not coordinates or bad or len(set(coordinates)) != len(coordinates):
                raise ValueError(
                    f"coordinates={coordinates!r}: give distinct spherical coordinates in 0..{embed_dim - 1} "
                    f"(0 = radius, k = k-th angle) for embed_dim={embed_dim}"
                )
        self.in_channels = in_channels
        self.embed_dim = embed_dim
        self.similarity = similarity
        self.kernel = kernel
        self.normalize = bool(normalize)
        self.assignment = assignment
        self.distance_eps = float(distance_eps)
        self.pre_activation = bool(pre_activation)
        self.block_size = block_size
        self.coordinates = coordinates
        self.min_change = None if min_change is None else float(min_change)
        self.temporal_padding = temporal_padding
        self._num_bins: Optional[int] = None
        self.num_bins = num_bins

        hidden = max(1, in_channels // 2)
        # z_t = BN(MLP(avgpool_HW(I_t))): C -> C/2 -> D with ReLU, BatchNorm over D (released TSLayer); the
        # fixed pooling reads no content, so it has no embedding (and no parameter DDP would find unused)
        self.embed: Optional[nn.Module] = None
        self.norm: Optional[nn.Module] = None
        if assignment != "fixed":
            self.embed = nn.Sequential(
                nn.Linear(in_channels, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, embed_dim)
            )
            self.norm = nn.BatchNorm1d(embed_dim)
        # a plain attribute, not a buffer: its size follows the batch, and DDP would broadcast a buffer
        self.last_num_bins: Tensor = torch.zeros(0, dtype=torch.long)

    # how empty bins are dropped (weights [M, B, T] -> (weights, mask, counts)); a class attribute so that a
    # subclass or an instance can swap in another rule (e.g. a per-sample loop, to time the batch-wide one)
    drop_empty_bins = staticmethod(compact_bins)

    # -- number of bins ------------------------------------------------------------------------------------
    @property
    def num_bins(self) -> Optional[int]:
        """B per coordinate; None follows the input's T (or `block_size`). Assign to change it on a trained
        model (e.g. `model.temporal.num_bins = 16`)."""
        return self._num_bins

    @num_bins.setter
    def num_bins(self, value: Optional[int]) -> None:
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise ValueError(f"num_bins must be None (B = T) or a positive int, got {value!r}")
        if value is not None and self.coordinates is not None and value ** len(self.coordinates) > MAX_TOTAL_BINS:
            raise ValueError(
                f"num_bins={value} with {len(self.coordinates)} spherical coordinates gives "
                f"{value ** len(self.coordinates)} bins (> {MAX_TOTAL_BINS}); use fewer bins or coordinates"
            )
        self._num_bins = value

    def set_num_bins(self, value: Optional[int]) -> "SimilarityGuidedSampling":
        """Same as assigning `num_bins`; returns self for chaining."""
        self.num_bins = value
        return self

    def extra_repr(self) -> str:
        s = (
            f"in_channels={self.in_channels}, num_bins={self.num_bins}, embed_dim={self.embed_dim}, "
            f"similarity={self.similarity!r}, assignment={self.assignment!r}"
        )
        if self.assignment == "released":
            s += f", kernel={self.kernel!r}, normalize={self.normalize}"
        if self.min_change is not None:
            s += f", min_change={self.min_change:g}"
        if self.temporal_padding != "replicate":
            s += f", temporal_padding={self.temporal_padding!r}"
        if self.distance_eps:
            s += f", distance_eps={self.distance_eps:g}"
        s += f", pre_activation={self.pre_activation}"
        if self.block_size is not None:
            s += f", block_size={self.block_size}"
        if self.coordinates is not None:
            s += f", coordinates={self.coordinates}"
        return s

    # -- forward -------------------------------------------------------------------------------------------
    def embedding(self, x: Tensor) -> Tensor:
        """x [N, C, T, H, W] -> z [N, T, D]. Raises RuntimeError for assignment="fixed" (no embedding)."""
        if self.embed is None:
            raise RuntimeError("assignment='fixed' reads no content and has no embedding")
        n, c, t = x.shape[:3]
        pooled = x.mean(dim=(3, 4)).transpose(1, 2)  # N, T, C
        z = self.embed(pooled).reshape(n * t, self.embed_dim)
        return self.norm(z).reshape(n, t, self.embed_dim)

    def weights(self, x: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
        """Sampling matrix of x [N, C, T, H, W]: ([N * nblocks, B'max, bs], mask, counts), or, for "ordered"
        with more than one block, over the whole clip: ([N, B'max, T], mask, counts).

        Row b of a sample holds the weights with which its frames form output bin b: the kernel values Psi
        (released) or the normalised linear-binning / pooling weights (interpolate, ordered, fixed: rows sum
        to 1).
        """
        n, c, t = x.shape[:3]
        bs = self.block_size or t
        nb = t // bs
        num_bins = self._num_bins if self._num_bins is not None else bs
        if self.assignment == "fixed":
            w = fixed_weights(bs, num_bins, torch.promote_types(x.dtype, torch.float32), x.device)
            w = w.expand(n * nb, *w.shape)
            return w, torch.ones(w.shape[:2], dtype=torch.bool, device=x.device), \
                torch.full((n * nb,), w.shape[1], dtype=torch.long, device=x.device)
        if self.coordinates is not None and num_bins ** len(self.coordinates) > MAX_TOTAL_BINS:
            raise ValueError(
                f"B={num_bins} (from T={bs}) with {len(self.coordinates)} spherical coordinates gives "
                f"{num_bins ** len(self.coordinates)} bins (> {MAX_TOTAL_BINS}); set num_bins smaller"
            )
        z = self.embedding(x).reshape(n * nb, bs, self.embed_dim)  # blocks as samples: [N*nb, bs, D]
        # the binning math runs in at least float32: under bf16/fp16 autocast a coordinate scaled to [0, 2B]
        # would keep only ~3 significant digits and the kernel weights would be coarse
        z = z.to(torch.promote_types(z.dtype, torch.float32))
        if self.assignment == "ordered":
            w, mask, counts = self.drop_empty_bins(ordered_weights(z, num_bins, self.min_change))
            w, mask, counts = merge_identical_bins(w, mask)
            if nb > 1:  # the whole clip, bins in time order; merge across block edges that hold no change
                w, mask, counts = self.drop_empty_bins(block_diagonal(w, nb), mask.reshape(n, -1))
                w, mask, counts = merge_adjacent_bins(w, mask, z.reshape(n, t, -1), self.min_change, bs)
            return _normalize_bins(w, mask), mask, counts
        delta, ref = similarity_coordinates(z, self.similarity, self.coordinates, self.distance_eps)
        if self.assignment == "released":
            w = bin_weights(scale_to_bins(delta, ref, num_bins), num_bins, self.kernel, self.normalize)
            return self.drop_empty_bins(w)
        w, mask, counts = self.drop_empty_bins(interpolate_weights(delta, ref, num_bins))
        w, mask, counts = merge_identical_bins(w, mask)
        return _normalize_bins(w, mask), mask, counts

    def forward(self, x: Tensor) -> Tuple[Tensor, Tensor]:
        if x.dim() != 5 or x.shape[1] != self.in_channels:
            raise ValueError(
                f"SimilarityGuidedSampling expects x [N, {self.in_channels}, T, H, W], got {tuple(x.shape)}"
            )
        n, c, t, h, w_ = x.shape
        bs = self.block_size or t
        if t % bs != 0:
            raise ValueError(f"T={t} is not a multiple of block_size={bs}; pad the clip or change block_size")
        nb = t // bs
        weights, mask, counts = self.weights(x)  # [N*nb, B', bs], [N*nb, B'], [N*nb]
        if weights.shape[0] != n * nb:  # ordered over blocks: one sampling matrix over the whole clip
            nb, bs = 1, t
        bprime = weights.shape[1]
        # x viewed as blocks [N, C, nb, bs, HW] (no copy); weights broadcast over C
        xb = x.reshape(n, c, nb, bs, h * w_)
        out = sample_bins(xb, weights.reshape(n, nb, bprime, bs).to(x.dtype))  # [N, C, nb, B', HW]
        out = out.reshape(n, c, nb * bprime, h * w_)
        mask = mask.reshape(n, nb * bprime)
        counts = counts.reshape(n, nb).sum(dim=1)
        if nb > 1:
            # the kept bins of all blocks first, in block order, then the padding: a sample's layout then does
            # not depend on the other samples' B' (temporal convs after SGS see the same neighbours)
            keep = int(counts.max())
            order = torch.argsort(mask.to(torch.int8), dim=1, descending=True, stable=True)[:, :keep]
            out = out.gather(2, order.view(n, 1, keep, 1).expand(n, c, keep, h * w_))
            mask = mask.gather(1, order)
        self.last_num_bins = counts.detach()
        return out.reshape(n, c, mask.shape[1], h, w_), mask
