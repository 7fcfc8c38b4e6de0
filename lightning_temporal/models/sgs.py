"""Similarity Guided Sampling (SGS), the layer of "3D CNNs with Adaptive Temporal Feature Resolution" (ATFR).

Temporally redundant feature maps are grouped into similarity bins; bins that no frame reaches are dropped, so
the layers after SGS run on B' <= B temporal positions per clip (the seed's Eq. 2-4, supplementary §C-§E).

Two assignments of frames to bins (``assignment=``):

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

What neither assignment can keep: bins are ordered by similarity, not by time, so a class defined only by the
order of positions (the direction of a motion) is averaged away. And Delta is one number per frame (its
distance to the clip's mean with ``l2_to_mean``): states that are equally far from the mean share a bin, e.g. a
clip of two equally long states gives one bin, their mean (``interpolate``) or ~1e-5 x it (``released``).

Pure math: no Lightning, no I/O. The functional pieces (`similarity_coordinates`, `scale_to_bins`,
`bin_weights`, `interpolate_weights`, `compact_bins`, `merge_identical_bins`, `sample_bins`) are exposed so that
they can be tested on their own.
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
    "sample_bins",
]

SIMILARITIES = ("magnitude", "l2_to_mean", "l1_to_mean", "cosine_to_mean", "spherical")
KERNELS = ("linear", "dirac")
ASSIGNMENTS = ("interpolate", "released")
# Chosen by benchmarks/sgs_tradeoff.py (benchmarks/results/sgs_tradeoff.json): see the README's SGS section.
DEFAULT_ASSIGNMENT = "interpolate"
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
        total = weights.sum(dim=-1, keepdim=True)
        rows = weights / torch.where(total > 0, total, torch.ones_like(total))
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
# Module
# --------------------------------------------------------------------------------------------------------
class SimilarityGuidedSampling(nn.Module):
    """Similarity Guided Sampling: bins temporally similar feature maps and drops empty bins.

    Example::

        >>> import torch
        >>> sgs = SimilarityGuidedSampling(in_channels=32).eval()      # assignment="interpolate"
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
        assignment: "interpolate" (default, this package's improvement: min / max of Delta on the first / last
            centre, linear split between two centres, bins are weighted means, identical bins merged) or
            "released" (the released code: Delta * 2B / max Delta, width-2 bins, ``kernel``, bins are weighted
            sums). See the module docstring.
        kernel: released assignment only: "linear" (max(0, 1 + 1e-7 - |Delta - beta|), every released config)
            or "dirac" (1[|Delta - beta| <= 1], gradient passed straight through inside the bin).
        normalize: released assignment only: divide each bin's weights by the number of frames active in it
            (the released ``linear_normalized`` kernel, used by no released config). Default False.
        distance_eps: added to (mean - z_t) inside the l2/l1 distance. None: 1e-6 with "released" (what the
            released code computes), 0 with "interpolate".
        pre_activation: in a backbone, feed SGS the last block's output before its final ReLU and apply the
            ReLU after SGS (the released placement), where the stage ends in a ReLU; otherwise SGS reads the
            stage's output. The module itself only records the choice.
        block_size: run SGS independently on consecutive temporal blocks of this length (SlowFast: 8 on the
            fast pathway, 2 on the slow one); T must be a multiple of it.
        coordinates: `spherical` only: which spherical coordinates form the bins, 0 = radius,
            k = the k-th angle (1 .. D-1). Default (0, 1). There are B**K bins; (0,) is exactly `magnitude`.

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
        if assignment == "interpolate" and (kernel != "linear" or normalize):
            raise ValueError(
                f"kernel={kernel!r}, normalize={normalize!r}: assignment='interpolate' always splits a frame "
                "linearly between two centres and averages each bin; kernel and normalize apply to "
                "assignment='released' only"
            )
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
        self._num_bins: Optional[int] = None
        self.num_bins = num_bins

        hidden = max(1, in_channels // 2)
        # z_t = BN(MLP(avgpool_HW(I_t))): C -> C/2 -> D with ReLU, BatchNorm over D (released TSLayer)
        self.embed = nn.Sequential(
            nn.Linear(in_channels, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, embed_dim)
        )
        self.norm = nn.BatchNorm1d(embed_dim)
        # a plain attribute, not a buffer: its size follows the batch, and DDP would broadcast a buffer
        self.last_num_bins: Tensor = torch.zeros(0, dtype=torch.long)

    # how empty bins are dropped; a class attribute so that benchmarks can swap in a per-sample loop
    _compact = staticmethod(compact_bins)

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
        """x [N, C, T, H, W] -> z [N, T, D]."""
        n, c, t = x.shape[:3]
        pooled = x.mean(dim=(3, 4)).transpose(1, 2)  # N, T, C
        z = self.embed(pooled).reshape(n * t, self.embed_dim)
        return self.norm(z).reshape(n, t, self.embed_dim)

    def weights(self, x: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
        """Sampling matrix of x [N, C, T, H, W]: ([N * nblocks, B'max, bs], mask, counts).

        Row b of a sample holds the weights with which its frames form output bin b: the kernel values Psi
        (released) or the normalised linear-binning weights (interpolate, rows sum to 1).
        """
        n, c, t = x.shape[:3]
        bs = self.block_size or t
        nb = t // bs
        num_bins = self._num_bins if self._num_bins is not None else bs
        if self.coordinates is not None and num_bins ** len(self.coordinates) > MAX_TOTAL_BINS:
            raise ValueError(
                f"B={num_bins} (from T={bs}) with {len(self.coordinates)} spherical coordinates gives "
                f"{num_bins ** len(self.coordinates)} bins (> {MAX_TOTAL_BINS}); set num_bins smaller"
            )
        z = self.embedding(x).reshape(n * nb, bs, self.embed_dim)  # blocks as samples: [N*nb, bs, D]
        # the binning math runs in at least float32: under bf16/fp16 autocast a coordinate scaled to [0, 2B]
        # would keep only ~3 significant digits and the kernel weights would be coarse
        z = z.to(torch.promote_types(z.dtype, torch.float32))
        delta, ref = similarity_coordinates(z, self.similarity, self.coordinates, self.distance_eps)
        if self.assignment == "released":
            w = bin_weights(scale_to_bins(delta, ref, num_bins), num_bins, self.kernel, self.normalize)
            return self._compact(w)
        w, mask, counts = self._compact(interpolate_weights(delta, ref, num_bins))
        w, mask, counts = merge_identical_bins(w, mask)
        total = w.sum(dim=-1, keepdim=True)
        return w / torch.where(mask.unsqueeze(-1), total, torch.ones_like(total)), mask, counts

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
