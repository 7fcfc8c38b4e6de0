"""Relevance curve of one video: where in the video the predicted class shows (what ``predict`` computes).

Plain data in, a ``matplotlib.figure.Figure`` (Agg canvas, no ``pyplot``) out. The x axis is the frame index;
a clip starting at ``t`` is drawn at its centre frame ``t + (span - 1) / 2`` (``span = (clip_len - 1) * stride
+ 1``), as in the sampling maps, so the event window lines up.
"""
from __future__ import annotations

from typing import Optional, Tuple

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from lightning_temporal.plots.sampling_map import ArrayLike, _np

__all__ = ["plot_relevance_curve"]


def plot_relevance_curve(
    positions: ArrayLike,
    scores: ArrayLike,
    *,
    num_frames: int,
    clip_len: int,
    stride: int = 1,
    weights: Optional[ArrayLike] = None,
    bins: Optional[ArrayLike] = None,
    class_name: str = "predicted class",
    event: Optional[Tuple[int, int]] = None,
    title: Optional[str] = None,
    figsize: Tuple[float, float] = (6.4, 3.6),
    dpi: float = 100,
) -> Figure:
    """Clip logit of the predicted class at each clip position, and its weight in the softmax pooling.

    Example:
        >>> fig = plot_relevance_curve([0, 8, 16], [0.5, 2.0, -1.0], num_frames=32, clip_len=16,
        ...                            weights=[0.17, 0.76, 0.07], class_name="up", event=(10, 20))
        >>> [ax.get_ylabel() for ax in fig.axes]
        ['logit of "up"', 'pooling weight']

    Args:
        positions: int ``[T]``, first frame of each clip position.
        scores: float ``[T]``, the clip logits of the predicted class.
        num_frames, clip_len, stride: the video's length and the clip's frames / temporal stride.
        weights: float ``[T]``, softmax pooling weights of the predicted class (a panel below, from 0); None
            leaves that panel out.
        bins: int ``[T]``, the temporal positions SGS kept (B') for the clip at each position (a last panel,
            from 0); None leaves it out.
        class_name: the predicted class, for the axis label.
        event: ``(start, end)`` frames (end exclusive) of a known event window, shaded.
        title: figure title (e.g. the video's file name).

    Raises:
        ValueError: lengths that differ, or a position outside the video.
    """
    # Over 60 lines for its docstring (23 lines); the code is ~55.
    pos = _np(positions, "positions")
    s = _np(scores, "scores")
    if pos.ndim != 1 or s.shape != pos.shape:
        raise ValueError(f"positions and scores must be [T] of one length, got {pos.shape} and {s.shape}")
    span = (clip_len - 1) * stride + 1
    if pos.size and (pos.min() < 0 or pos.max() > max(0, num_frames - span)):
        raise ValueError(f"positions must be clip starts 0..{max(0, num_frames - span)} of a {num_frames}-frame "
                         f"video (clip span {span}), got {pos.min():g}..{pos.max():g}")
    centre = pos + (span - 1) / 2.0
    fig = Figure(figsize=figsize, dpi=dpi, layout="constrained")
    FigureCanvasAgg(fig)
    if title:
        fig.suptitle(title)
    w = None if weights is None else _np(weights, "weights")
    b = None if bins is None else _np(bins, "bins")
    for name, arr in (("weights", w), ("bins", b)):
        if arr is not None and arr.shape != pos.shape:
            raise ValueError(f"{name} must be [T] like positions ({pos.shape}), got {arr.shape}")
    ratios = [3] + [2] * ((w is not None) + (b is not None))
    axes = list(np.atleast_1d(fig.subplots(len(ratios), 1, sharex=True, gridspec_kw={"height_ratios": ratios})))
    top = axes[0]
    top.plot(centre, s, "o-", color="tab:red", markersize=3, linewidth=1.2, label="clip logit", gid="curve")
    top.set_ylabel(f'logit of "{class_name}"')
    width = max(1.0, float(np.min(np.diff(centre))) * 0.8) if pos.size > 1 else 1.0
    if w is not None:
        axes[1].bar(centre, w, width=width, color="tab:blue", alpha=0.7, label="pooling weight", gid="weights")
        axes[1].set_ylim(0, max(1e-9, float(w.max())) * 1.05)
        axes[1].set_ylabel("pooling weight")
    if b is not None:
        axes[-1].bar(centre, b, width=width, color="tab:green", alpha=0.7, label="SGS bins kept", gid="bins")
        axes[-1].set_ylim(0, max(1.0, float(b.max())) * 1.1)
        axes[-1].set_ylabel("SGS bins B'")
    axes[-1].set_xlabel("frame (clip centre)")
    axes[-1].set_xlim(-0.5, num_frames - 0.5)
    if event is not None:
        for ax in axes:
            ax.axvspan(event[0] - 0.5, event[1] - 0.5, color="gold", alpha=0.25, zorder=0, gid="event",
                       label="event window" if ax is top else None)
    top.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize="small", borderaxespad=0)
    return fig
