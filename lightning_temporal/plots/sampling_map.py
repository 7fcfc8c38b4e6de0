"""Sampling maps: where in a video the clips were drawn, epoch by epoch, above the score distribution.

Fig. S.1, S.3-S.10 of the TSS supplementary material (Ayral et al.). Plain data in, a ``matplotlib.figure.Figure``
out, rendered with the Agg canvas: no ``pyplot``, so no global figure state, no GUI backend and nothing to close.

Coordinates: the x axis is the frame index of the video (0..L-1). A clip starting at ``t`` covers frames
``t .. t + span - 1`` (``span = (clip_len - 1) * stride + 1``) and is drawn at its centre frame
``t + (span - 1) / 2``, so clip positions, the event window and per-frame scores line up.
"""
from __future__ import annotations

import enum
import io
from typing import Any, Mapping, Optional, Sequence, Tuple, Union

import matplotlib
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure, SubFigure
from matplotlib.ticker import MaxNLocator

from lightning_temporal.sampling.phases import Phase

__all__ = ["plot_sampling_map", "plot_sampling_maps", "draw_sampling_map", "figure_to_png", "figure_to_array"]

ArrayLike = Any  # torch.Tensor, numpy array or nested sequence

_PHASE_COLORS = {"warmup": "tab:gray", "exploration": "tab:blue", "exploitation": "tab:red", "prior": "tab:green"}


def _np(x: ArrayLike, name: str, dtype=np.float64) -> np.ndarray:
    if hasattr(x, "detach"):  # torch tensor, without importing torch here
        x = x.detach().cpu().numpy()
    try:
        return np.asarray(x, dtype=dtype)
    except (TypeError, ValueError) as e:
        raise TypeError(f"{name} must be numeric array-like, got {type(x).__name__}: {e}") from None


def _softmax(w: np.ndarray, gamma: float) -> np.ndarray:
    z = gamma * (w - w.max(axis=-1, keepdims=True))  # shifted: stable for any gamma >= 0
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


#: display names of the phases in the legend
_PHASE_NAMES = {"warmup": "warm-up", "exploration": "exploration", "exploitation": "exploitation", "prior": "prior"}
#: integer phase codes as logged (``tss/phase``) and kept in ``SamplingHistory.phases``: the order of ``Phase``
_PHASE_BY_CODE = {i: p.value for i, p in enumerate(Phase)}


def _phase_key(p: Any) -> str:
    """``"warmup"`` / ``"exploration"`` / ``"exploitation"`` (or another name, lower case) of a phase given as a
    ``Phase``, its name or value, or its integer code (0 warm-up, 1 exploration, 2 exploitation)."""
    if isinstance(p, enum.Enum):
        p = p.value if isinstance(p.value, str) else p.name
    if isinstance(p, (int, np.integer)) and not isinstance(p, bool):
        if int(p) not in _PHASE_BY_CODE:
            raise ValueError(f"phase code {int(p)} is not one of {_PHASE_BY_CODE} (the codes of tss/phase)")
        return _PHASE_BY_CODE[int(p)]
    text = str(p).strip().lower().replace("-", "")
    return _PHASE_BY_CODE[int(text)] if text.isdigit() and int(text) in _PHASE_BY_CODE else text


def _phase_labels(phases: Any, epochs: np.ndarray) -> Optional[list]:
    if phases is None:
        return None
    if hasattr(phases, "phase"):  # a PhaseSchedule-like object
        labels = [phases.phase(int(e)) for e in epochs]
    else:
        labels = list(phases.tolist() if hasattr(phases, "tolist") else phases)
        if len(labels) != len(epochs):
            raise ValueError(f"phases has {len(labels)} entries but positions has {len(epochs)} epochs; give one per epoch")
    return [_phase_key(p) for p in labels]


def _clip_geometry(num_frames: int, clip_len: int, stride: int, gamma: Optional[float]) -> Tuple[int, int, float]:
    """Checked sizes -> ``(span, n_pos, half)``: frames a clip covers, clip positions, offset of a clip's centre."""
    for name, v, lo in (("num_frames", num_frames, 1), ("clip_len", clip_len, 1), ("stride", stride, 1)):
        if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < lo:
            raise ValueError(f"{name} must be an int >= {lo}, got {v!r}")
    if gamma is not None and not (np.isfinite(gamma) and gamma >= 0):
        raise ValueError(f"gamma must be None (plot raw table scores) or a finite float >= 0, got {gamma!r}")
    span = (clip_len - 1) * stride + 1
    return span, max(1, num_frames - span + 1), (span - 1) / 2.0


def _clip_starts(
    positions: ArrayLike, epochs: Optional[ArrayLike], n_pos: int, num_frames: int, span: int
) -> Tuple[np.ndarray, np.ndarray]:
    """Checked clip starts ``[E, K]`` (-1 = not drawn) and the epoch number of each row ``[E]``."""
    pos = _np(positions, "positions")
    if pos.ndim == 1:
        pos = pos[:, None]  # E, K (K clips of this video per epoch; -1 = not drawn)
    if pos.ndim != 2:
        raise ValueError(f"positions must be [E] or [E, K] clip starts, got shape {pos.shape}")
    n_ep = pos.shape[0]
    ep = np.arange(n_ep) if epochs is None else _np(epochs, "epochs")
    if ep.shape != (n_ep,):
        raise ValueError(f"epochs must have one entry per row of positions ({n_ep}), got shape {ep.shape}")
    bad = (pos >= 0) & ((pos > n_pos - 1) | (pos != np.round(pos)))
    if bad.any():
        e, k = np.argwhere(bad)[0]
        raise ValueError(
            f"positions[{e}, {k}] = {pos[e, k]} is not a clip start of this video: starts are integers 0..{n_pos - 1} "
            f"(num_frames={num_frames}, clip span {span}); use -1 for an epoch where the video was not drawn"
        )
    return pos, ep


def _draw_clips(ax, pos: np.ndarray, ep: np.ndarray, labels: Optional[list], span: int, half: float,
                show_span: bool) -> np.ndarray:
    """Top panel: each drawn clip at its centre frame (row = epoch, colour = phase); returns the drawn starts."""
    rows, cols = np.nonzero(pos >= 0)
    starts = pos[rows, cols]
    y = ep[rows]
    if show_span and len(starts):
        ax.hlines(y, starts - 0.5, starts + span - 0.5, colors="0.6", linewidth=1.0, alpha=0.6)
    if labels is None:
        ax.plot(starts + half, y, "o", color="tab:red", markersize=4, linestyle="none", gid="sampled")
    else:
        row_labels = np.asarray(labels, dtype=object)[rows]
        for lab in dict.fromkeys(labels):  # phases in order of first appearance
            sel = row_labels == lab
            if sel.any():
                ax.plot(starts[sel] + half, y[sel], "o", markersize=4, linestyle="none",
                        label=_PHASE_NAMES.get(lab, lab), color=_PHASE_COLORS.get(lab), gid=f"sampled:{lab}")
    return starts


def _draw_table(ax, scores: ArrayLike, gamma: Optional[float], score_epochs: Optional[ArrayLike], centres: np.ndarray,
                num_frames: int, span: int) -> None:
    """Bottom panel with a table: ``softmax(gamma * w)`` (or raw ``w``) of each snapshot, the last in bold."""
    n_pos = len(centres)
    w = _np(scores, "scores")
    if w.ndim == 1:
        w = w[None]
    if w.ndim != 2 or w.shape[1] != n_pos:
        raise ValueError(
            f"scores must be [N] or [E', N] with N = {n_pos} clip positions (num_frames={num_frames}, "
            f"clip span {span}), got shape {w.shape}"
        )
    dist = w if gamma is None else _softmax(w, float(gamma))
    s_ep = np.arange(len(w)) if score_epochs is None else _np(score_epochs, "score_epochs")
    if s_ep.shape != (len(w),):
        raise ValueError(f"score_epochs must have one entry per snapshot ({len(w)}), got shape {s_ep.shape}")
    if len(w) > 1:  # earlier snapshots fade in (colour = epoch), a few of them labelled; the final one on top
        cmap = matplotlib.colormaps["viridis"]
        labelled = set(np.unique(np.round(np.linspace(0, len(w) - 2, min(4, len(w) - 1)))).astype(int))
        for i in range(len(w) - 1):
            ax.plot(centres, dist[i], color=cmap(i / max(1, len(w) - 1)), alpha=0.45, linewidth=0.8,
                    gid=f"snapshot:{i}", label=f"epoch {s_ep[i]:g}" if i in labelled else None)
    ax.plot(centres, dist[-1], color="k", linewidth=1.6, gid="distribution",
            label=f"epoch {s_ep[-1]:g} (last)" if len(w) > 1 else f"epoch {s_ep[-1]:g}")
    ax.set_ylabel(f"softmax(γ·w), γ={gamma:g}" if gamma is not None else "table score w")
    ax.set_ylim(bottom=min(0.0, float(dist.min())) if gamma is None else 0.0)


def _draw_frequency(ax, starts: np.ndarray, centres: np.ndarray) -> None:
    """Bottom panel without a table: the share of the draws that started at each clip position."""
    counts = np.bincount(starts.astype(np.int64), minlength=len(centres)).astype(np.float64)
    freq = counts / max(1.0, counts.sum())
    ax.bar(centres, freq, width=1.0, color="tab:red", alpha=0.6, gid="distribution", label="share of the draws")
    ax.set_ylabel("sampling frequency")
    ax.set_ylim(bottom=0.0)


def _shade_event(ax_map, ax_dist, event: Tuple[int, int], num_frames: int) -> None:
    """The event window on both panels (one legend entry, on the bottom one)."""
    ev = tuple(event)
    if len(ev) != 2 or not (0 <= ev[0] < ev[1] <= num_frames):
        raise ValueError(f"event must be (start, end) frames with 0 <= start < end <= {num_frames}, got {event!r}")
    for ax in (ax_map, ax_dist):
        ax.axvspan(ev[0] - 0.5, ev[1] - 0.5, color="gold", alpha=0.25, gid="event", zorder=0,
                   label="event window" if ax is ax_dist else None)


def _draw_frame_scores(ax_dist, frame_scores: ArrayLike, num_frames: int, label: str):
    """Per-frame scores on a twin axis of the bottom panel, behind its distribution; returns the twin axis."""
    fs = _np(frame_scores, "frame_scores")
    if fs.shape != (num_frames,):
        raise ValueError(f"frame_scores must be [L] with L = num_frames = {num_frames}, got shape {fs.shape}")
    twin = ax_dist.twinx()
    twin.plot(np.arange(num_frames), fs, color="tab:orange", linewidth=1.0, gid="frame_scores", label=label)
    twin.set_ylabel(label, color="tab:orange")
    twin.set_ylim(bottom=min(0.0, float(fs.min())))
    # keep the distribution above the frame scores
    ax_dist.set_zorder(twin.get_zorder() + 1)
    ax_dist.patch.set_visible(False)
    return twin


def _add_legends(fig: Union[Figure, SubFigure], axes: list) -> None:
    """Legends beside the panels, outside the data: what the markers (top) and the curves (bottom) are."""
    handles, labels = axes[0].get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, loc="outside right upper", fontsize="small", title="phase")
    handles, labels = [], []
    for ax in axes[1:]:
        h, lab = ax.get_legend_handles_labels()
        handles, labels = handles + h, labels + lab
    if handles:
        fig.legend(handles, labels, loc="outside right lower", fontsize="small")


def draw_sampling_map(
    fig: Union[Figure, SubFigure],
    positions: ArrayLike,
    scores: Optional[ArrayLike] = None,
    *,
    num_frames: int,
    clip_len: int,
    stride: int = 1,
    gamma: Optional[float] = None,
    event: Optional[Tuple[int, int]] = None,
    frame_scores: Optional[ArrayLike] = None,
    phases: Any = None,
    epochs: Optional[ArrayLike] = None,
    score_epochs: Optional[ArrayLike] = None,
    show_span: bool = True,
    title: Optional[str] = None,
    frame_scores_label: str = "frame score",
) -> list:
    """Draw a sampling map into ``fig`` (a ``Figure`` or ``SubFigure``); see :func:`plot_sampling_map`.

    Returns the axes ``[map_ax, dist_ax]`` plus the twin axis of the frame scores when drawn.
    """
    span, n_pos, half = _clip_geometry(num_frames, clip_len, stride, gamma)
    pos, ep = _clip_starts(positions, epochs, n_pos, num_frames, span)
    labels = _phase_labels(phases, ep)
    ax_map, ax_dist = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 2]})
    axes = [ax_map, ax_dist]

    starts = _draw_clips(ax_map, pos, ep, labels, span, half, show_span)
    if title:
        ax_map.set_title(title)  # over the panel (a figure title would run into the legends beside it)
    ax_map.set_ylabel("epoch")
    ax_map.yaxis.set_major_locator(MaxNLocator(integer=True))
    if len(ep):
        ax_map.set_ylim(ep.max() + 0.5, ep.min() - 0.5)  # epoch 0 on top, time flows down to the distribution
    ax_map.set_xlim(-0.5, num_frames - 0.5)

    centres = np.arange(n_pos) + half
    if scores is not None:
        _draw_table(ax_dist, scores, gamma, score_epochs, centres, num_frames, span)
    else:  # without a table, the empirical distribution of the draws
        _draw_frequency(ax_dist, starts, centres)
    ax_dist.set_xlabel("frame (clip centre)")

    if event is not None:
        _shade_event(ax_map, ax_dist, event, num_frames)
    if frame_scores is not None:
        axes.append(_draw_frame_scores(ax_dist, frame_scores, num_frames, frame_scores_label))
    _add_legends(fig, axes)
    return axes


def plot_sampling_map(
    positions: ArrayLike,
    scores: Optional[ArrayLike] = None,
    *,
    num_frames: int,
    clip_len: int,
    figsize: Tuple[float, float] = (6.4, 4.8),
    dpi: float = 100,
    **kwargs,
) -> Figure:
    """Sampling map of one video (seed Fig. S.1, S.3): sampled clip per epoch above the score distribution.

    Example:
        >>> fig = plot_sampling_map([0, 5, 9, 9], [0.0, 0.1, 0.5, 2.0, 1.0, 0.2, 0.0, 0.0, 0.3, 2.5],
        ...                         num_frames=25, clip_len=16, gamma=1.0, event=(10, 20))
        >>> len(fig.axes)
        2

    Args:
        positions: clip starts ``[E]`` (one per epoch) or ``[E, K]``; ``-1`` where the video was not drawn.
        scores: the score table ``[N]`` (final) or snapshots ``[E', N]`` (one line each, the last in bold);
            ``N = max(1, num_frames - span + 1)``. None: the bottom panel shows the empirical frequency of the
            drawn starts instead.
        num_frames: ``L``, frames of the video. clip_len: ``F``. stride: temporal stride (default 1).
        gamma: plot ``softmax(gamma * w)`` (the sampling distribution); None plots the raw table ``w``.
        event: ``(start, end)`` frames (end exclusive) shaded on both panels.
        frame_scores: ``[L]`` per-frame scores (e.g. PSPI) on a twin axis of the bottom panel.
        phases: one label per epoch (str or enum; markers coloured by phase) or an object with ``.phase(epoch)``
            such as ``PhaseSchedule``.
        epochs / score_epochs: epoch numbers of the rows of ``positions`` / ``scores`` (default 0, 1, ...).
        show_span: draw each clip's full span as a bar. title: figure title.

    Returns:
        A ``Figure`` (Agg canvas) with 2 axes, 3 with ``frame_scores``; save with ``fig.savefig`` or
        :func:`figure_to_png`.
    """
    fig = Figure(figsize=figsize, dpi=dpi, layout="constrained")
    FigureCanvasAgg(fig)
    draw_sampling_map(fig, positions, scores, num_frames=num_frames, clip_len=clip_len, **kwargs)
    return fig


def plot_sampling_maps(
    videos: Sequence[Mapping[str, Any]],
    ncols: int = 3,
    *,
    panel_size: Tuple[float, float] = (4.8, 3.6),
    dpi: float = 100,
    title: Optional[str] = None,
) -> Figure:
    """Sampling maps of several tracked videos in a grid (seed Fig. S.1, S.9, S.10).

    Each entry of ``videos`` holds the keyword arguments of :func:`plot_sampling_map` for one video
    (``positions``, ``num_frames``, ``clip_len`` required; ``title`` is the panel title, e.g. the video name).

    Example:
        >>> v = dict(positions=[0, 3], scores=[0.0, 1.0, 0.0, 2.0], num_frames=11, clip_len=8, gamma=1.0)
        >>> len(plot_sampling_maps([v, dict(v, title="b"), dict(v, title="c")], ncols=2).axes)
        6
    """
    if not isinstance(ncols, int) or ncols < 1:
        raise ValueError(f"ncols must be an int >= 1, got {ncols!r}")
    if len(videos) == 0:
        raise ValueError("videos is empty: give at least one dict of plot_sampling_map arguments")
    ncols = min(ncols, len(videos))
    nrows = -(-len(videos) // ncols)
    fig = Figure(figsize=(panel_size[0] * ncols, panel_size[1] * nrows), dpi=dpi, layout="constrained")
    FigureCanvasAgg(fig)
    if title:
        fig.suptitle(title)
    subfigs = np.atleast_1d(fig.subfigures(nrows, ncols, squeeze=False)).ravel()
    for i, (sub, video) in enumerate(zip(subfigs, videos)):
        kw = dict(video)
        missing = [k for k in ("positions", "num_frames", "clip_len") if k not in kw]
        if missing:
            raise ValueError(f"videos[{i}] lacks {missing}: each entry needs positions, num_frames and clip_len")
        try:
            draw_sampling_map(sub, **kw)
        except (ValueError, TypeError) as e:
            raise type(e)(f"videos[{i}] ({kw.get('title', 'untitled')}): {e}") from None
    return fig


def figure_to_png(fig: Figure, dpi: Optional[float] = None) -> bytes:
    """PNG bytes of a figure (e.g. to write a file or hand to a logger)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return buf.getvalue()


def figure_to_array(fig: Figure) -> np.ndarray:
    """The rendered figure as uint8 ``[H, W, 3]`` (RGB), e.g. for ``add_image(..., dataformats="HWC")``."""
    canvas = fig.canvas if isinstance(fig.canvas, FigureCanvasAgg) else FigureCanvasAgg(fig)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()
