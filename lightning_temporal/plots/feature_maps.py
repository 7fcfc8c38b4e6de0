"""Input feature maps vs SGS output maps (ATFR seed Fig. A.1), as a matplotlib Figure on the Agg canvas."""
from __future__ import annotations

from typing import List, Optional, Tuple

import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from torch import Tensor

__all__ = ["plot_sgs_feature_maps"]

#: one row of the figure: its label, its (title, image) panels, its colour limits (None: RGB frames)
Row = Tuple[str, List[Tuple[str, np.ndarray]], Optional[Tuple[float, float]]]


def _one_sample(t: Tensor, dims: int, sample: int, name: str) -> Tensor:
    t = torch.as_tensor(t).detach().cpu()
    if t.dim() == dims + 1:
        t = t[sample]
    if t.dim() != dims:
        raise ValueError(f"{name} must have {dims} dims (or {dims + 1} with a batch dim), got {tuple(t.shape)}")
    return t.float()


def plot_sgs_feature_maps(
    input_maps: Tensor,
    output_maps: Tensor,
    mask: Optional[Tensor] = None,
    channels: int = 4,
    frames: int = 8,
    *,
    clip: Optional[Tensor] = None,
    sample: int = 0,
) -> Figure:
    """Figure of SGS's input and output feature maps of one clip (seed Fig. A.1).

    Example::

        >>> import torch
        >>> from lightning_temporal.models.sgs import SimilarityGuidedSampling
        >>> sgs = SimilarityGuidedSampling(16).eval()
        >>> feats = torch.randn(1, 16, 32, 14, 14)
        >>> out, mask = sgs(feats)
        >>> fig = plot_sgs_feature_maps(feats, out, mask, channels=4, frames=8)
        >>> fig.savefig("/tmp/sgs_maps.png")

    Rows, top to bottom: the input frames (only when `clip` [3, T, H, W] or [T, H, W, 3], values in [0, 1]
    or 0..255, is given), then for each of the first `channels` channels the input maps at `frames` evenly
    spaced times, then for each of those channels the SGS output maps of the first `frames` real bins
    (those `mask` marks). Inputs: input_maps [C, T, H, W], output_maps [C, B', H, W], mask [B'] bool (None:
    all real), or the same with a leading batch dimension, `sample` picking the clip. Each channel is drawn
    on one colour scale shared by its input and output rows, so intensities compare across rows.
    """
    if not isinstance(channels, int) or channels < 1 or not isinstance(frames, int) or frames < 1:
        raise ValueError(f"channels and frames must be positive ints, got channels={channels!r}, frames={frames!r}")
    inp, out = _real_bins(input_maps, output_maps, mask, sample)  # C, T, H, W and C, B'real, H, W
    t = inp.shape[1]
    times = torch.linspace(0, t - 1, min(frames, t)).round().long().unique()
    bins = list(range(min(frames, out.shape[1])))
    rows = [] if clip is None else [_frame_row(clip, len(times))]
    rows += _map_rows(inp, out, min(channels, inp.shape[0]), times, bins)
    ncols = max(len(times), len(bins), 1)
    fig = Figure(figsize=(1.3 * ncols + 0.8, 1.3 * len(rows) + 0.4))
    FigureCanvasAgg(fig)
    _draw_rows(fig, rows, ncols)
    fig.suptitle(f"SGS: {t} input maps -> {out.shape[1]} output maps", fontsize=9)
    return fig


def _real_bins(input_maps: Tensor, output_maps: Tensor, mask: Optional[Tensor], sample: int) -> Tuple[Tensor, Tensor]:
    """One clip's input maps ``[C, T, H, W]`` and its real output bins ``[C, B'real, H, W]``, checked."""
    inp = _one_sample(input_maps, 4, sample, "input_maps")
    out = _one_sample(output_maps, 4, sample, "output_maps")
    if mask is None:
        valid = torch.ones(out.shape[1], dtype=torch.bool)
    else:
        valid = _one_sample(mask, 1, sample, "mask").bool()
    if valid.numel() != out.shape[1]:
        raise ValueError(f"mask has {valid.numel()} bins but output_maps has {out.shape[1]}")
    if inp.shape[0] != out.shape[0]:
        raise ValueError(f"input_maps has {inp.shape[0]} channels but output_maps has {out.shape[0]}")
    return inp, out[:, valid]


def _frame_row(clip: Tensor, count: int) -> Row:
    """The row of ``count`` evenly spaced input frames of ``clip`` ``[3, T, H, W]`` or ``[T, H, W, 3]``."""
    rgb = torch.as_tensor(clip).detach().cpu().float()
    if rgb.dim() == 4 and rgb.shape[0] == 3:  # [3, T, H, W] -> [T, H, W, 3]
        rgb = rgb.permute(1, 2, 3, 0)
    if rgb.dim() != 4 or rgb.shape[-1] != 3:
        raise ValueError(f"clip must be [3, T, H, W] or [T, H, W, 3], got {tuple(rgb.shape)}")
    if rgb.max() > 1.0:
        rgb = rgb / 255.0
    idx = torch.linspace(0, rgb.shape[0] - 1, count).round().long()
    return "frames", [(f"t={int(i)}", rgb[i].clamp(0, 1).numpy()) for i in idx], None


def _map_rows(inp: Tensor, out: Tensor, c: int, times: Tensor, bins: List[int]) -> List[Row]:
    """The input rows then the SGS rows of the first ``c`` channels, each channel on one colour scale."""
    limits = []  # one colour scale per channel, shared by its input and output rows
    for ch in range(c):
        both = torch.cat([inp[ch].flatten(), out[ch].flatten()])
        limits.append((both.min().item(), both.max().item()))
    rows = [(f"input c{ch}", [(f"t={int(i)}", inp[ch, i].numpy()) for i in times], limits[ch]) for ch in range(c)]
    return rows + [(f"SGS c{ch}", [(f"bin {b}", out[ch, b].numpy()) for b in bins], limits[ch]) for ch in range(c)]


def _draw_rows(fig: Figure, rows: List[Row], ncols: int) -> None:
    """One row of images per entry of ``rows`` (label, [(title, image)], colour limits or None for RGB)."""
    axes = fig.subplots(len(rows), ncols, squeeze=False)
    for r, (label, images, lim) in enumerate(rows):
        for col in range(ncols):
            ax = axes[r][col]
            ax.set_xticks([])
            ax.set_yticks([])
            if col >= len(images):
                ax.axis("off")
                continue
            title, img = images[col]
            if lim is None:
                ax.imshow(img)
            else:
                ax.imshow(img, cmap="viridis", vmin=lim[0], vmax=lim[1])
            ax.set_title(title, fontsize=7)
            if col == 0:
                ax.set_ylabel(label, fontsize=8)
