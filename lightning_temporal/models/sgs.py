"""Similarity Guided Sampling (SGS), the layer of "3D CNNs with Adaptive Temporal Feature Resolution".

SPEC §2. Temporally redundant feature maps are grouped into similarity bins; bins that no frame reaches
are dropped, so the layers after SGS run on B' <= B temporal positions per clip.

Pure math: no Lightning, no I/O. The functional pieces (`similarity_coordinates`, `scale_to_bins`,
`bin_weights`, `compact_bins`, `sample_bins`) are exposed so they can be tested on their own.
"""
from __future__ import annotations

import math
from typing import Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "SimilarityGuidedSampling",
    "SIMILARITIES",
    "KERNELS",
    "KERNEL_EPS",
    "similarity_coordinates",
    "scale_to_bins",
    "bin_weights",
    "compact_bins",
    "sample_bins",
]

SIMILARITIES = ("magnitude", "l2_to_mean", "l1_to_mean", "cosine_to_mean", "spherical")
KERNELS = ("linear", "dirac")
# The authors' code adds 1e-7 to the linear kernel so that a Delta lying exactly on a bin edge (the largest
# Delta always does: it is scaled to 2B) keeps a tiny weight and its bin is not dropped.
KERNEL_EPS = 1e-7
# Multi-dimensional (spherical) bins are B**K; past this the [N, B**K, T] weight tensor gets silly.
MAX_TOTAL_BINS = 1 << 16


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
    z: Tensor, similarity: str, coordinates: Optional[Sequence[int]] = None
) -> Tuple[Tensor, Tensor]:
    """Similarity coordinates Delta of embeddings z [M, T, D].

    Returns (delta [M, T, K] >= 0, reference [M, 1, K] > 0): K = 1 except for `spherical`
    (K = len(coordinates)). `reference` is the size of the quantity Delta is measured against; a sample whose
    largest Delta is within float rounding of 0 relative to it is degenerate (see `scale_to_bins`).
    """
    if similarity == "magnitude":
        delta = torch.linalg.vector_norm(z, dim=-1, keepdim=True)
        ref = delta.detach().amax(dim=1, keepdim=True)
    elif similarity in ("l2_to_mean", "l1_to_mean"):
        diff = z - z.mean(dim=1, keepdim=True)
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


def scale_to_bins(delta: Tensor, reference: Tensor, num_bins: int) -> Tensor:
    """Scale Delta [M, T, K] >= 0 per sample and coordinate to [0, 2B]: Delta * 2B / max_t Delta.

    Computed as (Delta / max) * 2B so that the largest Delta lands exactly on 2B in floating point (x / x == 1
    exactly) and none goes past it. Degenerate samples (max_t Delta <= 64 eps (1 + reference), e.g. every frame
    equal, where a distance to the mean is pure rounding noise) get Delta = 0 for every t: one bin, and finite
    values and gradients (the denominator is replaced before dividing, not after).
    """
    peak = delta.amax(dim=1, keepdim=True)  # [M, 1, K]
    tol = 64 * torch.finfo(delta.dtype).eps * (1.0 + reference)
    degenerate = peak <= tol
    safe_peak = torch.where(degenerate, torch.ones_like(peak), peak)
    ratio = delta / safe_peak
    return torch.where(degenerate, torch.zeros_like(ratio), ratio) * (2.0 * num_bins)


# --------------------------------------------------------------------------------------------------------
# Kernels
# --------------------------------------------------------------------------------------------------------
class _DiracStraightThrough(torch.autograd.Function):
    """Psi = 1[|Delta - beta| <= 1]; backward passes the gradient straight through (identity) inside the
    bin window and 0 outside, as the authors' `DeltaKernel` does."""

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
    """delta [M, T] scaled to [0, 2B] -> Psi [M, B, T] with centres beta_b = 2b + 1."""
    centres = torch.arange(num_bins, device=delta.device, dtype=delta.dtype) * 2.0 + 1.0
    diff = delta.unsqueeze(1) - centres.view(1, -1, 1)  # [M, B, T]
    if kernel == "linear":
        return torch.clamp(1.0 + KERNEL_EPS - diff.abs(), min=0.0)
    if kernel == "dirac":
        return _DiracStraightThrough.apply(diff)
    raise ValueError(f"kernel={kernel!r} is unknown; use one of {KERNELS}")


def bin_weights(delta: Tensor, num_bins: int, kernel: str = "linear", normalize: bool = True) -> Tensor:
    """Sampling weights Psi [M, B**K, T] from scaled coordinates delta [M, T, K] (each in [0, 2B]).

    K > 1: the product of the 1-D kernels over coordinates (seed §D, Eq. 1); bins are ordered
    lexicographically, coordinate 0 most significant. `normalize` divides each bin's weights by the number of
    t active in it, "active" meaning weight > 0 (the authors' `kernels != 0`; with the linear kernel a t on a
    bin edge counts, with its 1e-7 weight). The count is piecewise constant in Delta, so it carries no
    gradient: d(Psi / n)/dDelta = Psi' / n.
    """
    m, t, k = delta.shape
    w = _kernel_1d(delta[..., 0], num_bins, kernel)
    for j in range(1, k):  # loop over coordinates (K is 1 or 2 in practice), never over samples
        wj = _kernel_1d(delta[..., j], num_bins, kernel)
        w = (w.unsqueeze(2) * wj.unsqueeze(1)).reshape(m, -1, t)
    if normalize:
        active = (w > 0).sum(dim=-1, keepdim=True).clamp_min(1).to(w.dtype)
        w = w / active
    return w


def compact_bins(weights: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
    """Drop empty bins, batch-wide and without a loop over samples.

    weights [M, B, T] -> (weights [M, B'max, T], mask [M, B'max] bool, counts [M] int64). A bin is kept when
    some t has weight > 0 in it; kept bins keep their order (stable sort of the keep mask) and are moved to
    the front; each sample is padded with zero rows up to the largest B' in the batch, and `mask` marks its
    real bins.
    """
    keep = (weights > 0).any(dim=-1)  # [M, B]
    counts = keep.sum(dim=1)  # [M]
    bmax = int(counts.max()) if counts.numel() else 0
    # stable descending sort of a 0/1 key puts kept bins first in their original order
    order = torch.sort(keep.to(torch.uint8), dim=1, descending=True, stable=True).indices[:, :bmax]
    mask = torch.arange(bmax, device=weights.device).unsqueeze(0) < counts.unsqueeze(1)
    gathered = weights.gather(1, order.unsqueeze(-1).expand(-1, -1, weights.shape[-1]))
    gathered = gathered * mask.unsqueeze(-1).to(gathered.dtype)
    return gathered, mask, counts


def sample_bins(x: Tensor, weights: Tensor) -> Tensor:
    """O_b = sum_t Psi[b, t] I_t as one matmul: x [M, C, T, S], weights [M, B', T] -> [M, C, B', S]."""
    return torch.matmul(weights.unsqueeze(1), x)


# --------------------------------------------------------------------------------------------------------
# Module
# --------------------------------------------------------------------------------------------------------
class SimilarityGuidedSampling(nn.Module):
    """Similarity Guided Sampling: bins temporally similar feature maps and drops empty bins (SPEC §2).

    Example::

        >>> import torch
        >>> sgs = SimilarityGuidedSampling(in_channels=32).eval()
        >>> x = torch.randn(2, 32, 16, 7, 7)                 # N, C, T, H, W
        >>> x[1] = x[1, :, :1]                                # sample 1 is a static clip
        >>> out, mask = sgs(x)                                # out [2, 32, B'max, 7, 7], mask [2, B'max]
        >>> int(sgs.last_num_bins[1])                         # the static clip collapses to one bin
        1
        >>> sgs.num_bins = 8                                  # fewer bins at inference, one line (Table A.4)

    Args:
        in_channels: C of the input.
        num_bins: B, the number of bins per coordinate. None: B = T of each input (or `block_size`).
        embed_dim: D, the embedding size.
        similarity: one of "magnitude" (||z_t||, the paper's choice), "l2_to_mean" (the authors' code default),
            "l1_to_mean", "cosine_to_mean" (distance of z_t to the temporal mean of z), "spherical".
        kernel: "linear" (max(0, 1 + 1e-7 - |Delta - beta|)) or "dirac" (1[|Delta - beta| <= 1], gradient
            passed straight through inside the bin).
        normalize: divide each bin's weights by the number of t active in it (the authors' default).
        block_size: run SGS independently on consecutive temporal blocks of this length (SlowFast: 8 on the
            fast pathway, 2 on the slow one); T must be a multiple of it.
        coordinates: `spherical` only: which spherical coordinates form the bins, 0 = radius,
            k = the k-th angle (1 .. D-1). Default (0, 1). There are B**K bins; (0,) is exactly `magnitude`.

    Shapes: forward(x [N, C, T, H, W]) -> (out [N, C, B', H, W], mask [N, B'] bool). With `block_size`,
    B' = (T / block_size) * (largest number of kept bins in any block of the batch); the blocks follow each
    other along time, each padded with zero bins. After each forward `last_num_bins` [N] (int64) holds the
    number of real bins of every sample.
    """

    def __init__(
        self,
        in_channels: int,
        num_bins: Optional[int] = None,
        embed_dim: int = 8,
        similarity: str = "l2_to_mean",
        kernel: str = "linear",
        normalize: bool = True,
        block_size: Optional[int] = None,
        coordinates: Optional[Sequence[int]] = None,
    ) -> None:
        super().__init__()
        if not isinstance(in_channels, int) or in_channels < 1:
            raise ValueError(f"in_channels must be a positive int, got {in_channels!r}")
        if not isinstance(embed_dim, int) or embed_dim < 1:
            raise ValueError(f"embed_dim must be a positive int, got {embed_dim!r}")
        if similarity not in SIMILARITIES:
            raise ValueError(f"similarity={similarity!r} is unknown; use one of {SIMILARITIES}")
        if kernel not in KERNELS:
            raise ValueError(f"kernel={kernel!r} is unknown; use one of {KERNELS}")
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
        self.block_size = block_size
        self.coordinates = coordinates
        self._num_bins: Optional[int] = None
        self.num_bins = num_bins

        hidden = max(1, in_channels // 2)
        # z_t = BN(MLP(avgpool_HW(I_t))): C -> C/2 -> D with ReLU, BatchNorm over D (SPEC §2.1)
        self.embed = nn.Sequential(
            nn.Linear(in_channels, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, embed_dim)
        )
        self.norm = nn.BatchNorm1d(embed_dim)
        self.register_buffer("last_num_bins", torch.zeros(0, dtype=torch.long), persistent=False)

    # -- number of bins ------------------------------------------------------------------------------------
    @property
    def num_bins(self) -> Optional[int]:
        """B per coordinate; None follows the input's T (or `block_size`). Assign to change it on a trained
        model (e.g. `model.sgs.num_bins = 16`)."""
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
            f"similarity={self.similarity!r}, kernel={self.kernel!r}, normalize={self.normalize}"
        )
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
        """Compacted sampling weights of x [N, C, T, H, W]: ([N * nblocks, B'max, bs], mask, counts)."""
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
        delta, ref = similarity_coordinates(z, self.similarity, self.coordinates)
        delta = scale_to_bins(delta, ref, num_bins)
        w = bin_weights(delta, num_bins, self.kernel, self.normalize)
        return compact_bins(w)

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
        out = sample_bins(xb, weights.reshape(n, nb, bprime, bs))  # [N, C, nb, B', HW]
        out = out.reshape(n, c, nb * bprime, h, w_)
        mask = mask.reshape(n, nb * bprime)
        self.last_num_bins = counts.reshape(n, nb).sum(dim=1).detach()
        return out, mask
