import math
import sys

import numpy as np
import pytest
import torch

from lightning_temporal.plots.sampling_map import (
    figure_to_array,
    figure_to_png,
    plot_sampling_map,
    plot_sampling_maps,
)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
L, F = 40, 8
N = L - F + 1


def _lines(ax, gid):
    return [ln for ln in ax.get_lines() if ln.get_gid() == gid]


def test_single_map_renders_and_plots_softmax_of_table():
    g = torch.Generator().manual_seed(0)
    snapshots = torch.randn(5, N, generator=g)
    positions = torch.tensor([0, 7, N - 1, -1, 12, 3])  # epoch 3: video not drawn
    gamma = 2.5
    fig = plot_sampling_map(positions, snapshots, num_frames=L, clip_len=F, gamma=gamma, event=(10, 20),
                            score_epochs=[1, 2, 3, 4, 5], title="video 7")
    png = figure_to_png(fig)
    assert png.startswith(PNG_MAGIC) and len(png) > 5000
    assert len(fig.axes) == 2
    ax_map, ax_dist = fig.axes
    # bottom: the final snapshot's softmax(gamma * w), written element by element, at the clip centres
    (line,) = _lines(ax_dist, "distribution")
    w = snapshots[-1].double().tolist()
    z = sum(math.exp(gamma * v) for v in w)
    want = [math.exp(gamma * v) / z for v in w]
    np.testing.assert_allclose(line.get_ydata(), want, rtol=1e-12)
    np.testing.assert_allclose(line.get_xdata(), np.arange(N) + (F - 1) / 2)
    assert len([ln for ln in ax_dist.get_lines() if str(ln.get_gid()).startswith("snapshot:")]) == 4
    # top: one marker per drawn epoch, at the clip centre, epoch on y
    (marks,) = _lines(ax_map, "sampled")
    np.testing.assert_array_equal(marks.get_xdata(), np.array([0, 7, N - 1, 12, 3]) + (F - 1) / 2)
    np.testing.assert_array_equal(marks.get_ydata(), [0, 1, 2, 4, 5])
    assert ax_map.get_ylim()[0] > ax_map.get_ylim()[1]  # epoch 0 at the top
    # the event window is shaded on both panels
    for ax in (ax_map, ax_dist):
        (span,) = [p for p in ax.patches if p.get_gid() == "event"]
        x0, x1 = span.get_x(), span.get_x() + span.get_width()  # a Rectangle in data x, axes y
        assert (x0, x1) == pytest.approx((9.5, 19.5))


def test_raw_scores_frame_scores_and_phases():
    class Schedule:  # duck-typed PhaseSchedule
        def phase(self, epoch):
            return "WARMUP" if epoch < 2 else "EXPLORATION" if epoch < 4 else "EXPLOITATION"

    frame_scores = np.linspace(0, 5, L)
    table = np.linspace(-1, 1, N)
    fig = plot_sampling_map(np.arange(6) * 3, table, num_frames=L, clip_len=F, frame_scores=frame_scores,
                            phases=Schedule())
    assert len(fig.axes) == 3
    _, ax_dist, twin = fig.axes
    np.testing.assert_array_equal(_lines(ax_dist, "distribution")[0].get_ydata(), table)  # gamma=None: raw w
    np.testing.assert_array_equal(_lines(twin, "frame_scores")[0].get_ydata(), frame_scores)
    ax_map = fig.axes[0]
    assert [ln.get_gid() for ln in ax_map.get_lines()] == ["sampled:warmup", "sampled:exploration",
                                                          "sampled:exploitation"]
    np.testing.assert_array_equal(_lines(ax_map, "sampled:exploitation")[0].get_ydata(), [4, 5])
    assert figure_to_array(fig).shape == (480, 640, 3)


def test_no_table_shows_empirical_frequency_and_stride():
    stride = 2
    span = (F - 1) * stride + 1
    n_pos = L - span + 1
    positions = np.array([[0, 3], [3, -1], [n_pos - 1, 0]])  # [E, K]: two clips per epoch
    fig = plot_sampling_map(positions, None, num_frames=L, clip_len=F, stride=stride)
    ax_dist = fig.axes[1]
    bars = [p for p in ax_dist.patches if p.get_gid() == "distribution"]
    heights = np.array([b.get_height() for b in bars])
    want = np.zeros(n_pos)
    for s in (0, 3, 3, n_pos - 1, 0):
        want[s] += 1 / 5
    np.testing.assert_allclose(heights, want)
    assert figure_to_png(fig).startswith(PNG_MAGIC)


def test_short_video_has_one_position():
    fig = plot_sampling_map([0, 0], [1.5], num_frames=5, clip_len=16, gamma=1.0)
    np.testing.assert_array_equal(_lines(fig.axes[1], "distribution")[0].get_ydata(), [1.0])


def test_grid_of_videos():
    v = dict(positions=[0, 3, 5], scores=np.zeros(N), num_frames=L, clip_len=F, gamma=1.0)
    videos = [dict(v, title=f"v{i}") for i in range(4)] + [dict(v, frame_scores=np.ones(L), event=(0, 4))]
    fig = plot_sampling_maps(videos, ncols=2, title="tracked")
    assert len(fig.axes) == 2 * 5 + 1
    assert len(fig.subfigs) == 6  # 3 rows x 2 cols, last cell empty
    png = figure_to_png(fig)
    assert png.startswith(PNG_MAGIC)
    # uniform table: softmax is 1/N everywhere
    np.testing.assert_allclose(_lines(fig.axes[2 + 1], "distribution")[0].get_ydata(), np.full(N, 1 / N))


def test_no_pyplot_global_state():
    # figures made through pyplot would stay registered (and leak memory) until closed
    plot_sampling_map([1], np.zeros(N), num_frames=L, clip_len=F)
    if "matplotlib.pyplot" in sys.modules:
        assert sys.modules["matplotlib.pyplot"].get_fignums() == []


def test_bad_inputs_are_named():
    with pytest.raises(ValueError, match=r"positions\[1, 0\] = 33.0 .* 0..32"):
        plot_sampling_map([0, N], None, num_frames=L, clip_len=F)
    with pytest.raises(ValueError, match="N = 33"):
        plot_sampling_map([0], np.zeros(N + 1), num_frames=L, clip_len=F)
    with pytest.raises(ValueError, match="frame_scores must be"):
        plot_sampling_map([0], None, num_frames=L, clip_len=F, frame_scores=np.zeros(L - 1))
    with pytest.raises(ValueError, match="event must be"):
        plot_sampling_map([0], None, num_frames=L, clip_len=F, event=(5, 50))
    with pytest.raises(ValueError, match="gamma must be"):
        plot_sampling_map([0], np.zeros(N), num_frames=L, clip_len=F, gamma=-1.0)
    with pytest.raises(ValueError, match="phases has 1 entries"):
        plot_sampling_map([0, 1], None, num_frames=L, clip_len=F, phases=["warmup"])
    with pytest.raises(ValueError, match=r"videos\[1\] \(b\)"):
        plot_sampling_maps([dict(positions=[0], num_frames=L, clip_len=F),
                            dict(positions=[99], num_frames=L, clip_len=F, title="b")])


# ------------------------------------------------------------------------------- readable without the README
def _legend_texts(fig):
    legends = list(fig.legends) + [sf_leg for sf in getattr(fig, "subfigs", []) for sf_leg in sf.legends]
    legends += [ax.get_legend() for ax in fig.axes if ax.get_legend() is not None]
    return legends, [t.get_text() for leg in legends for t in leg.get_texts()]


@pytest.mark.parametrize("phases", [
    [0, 0, 1, 1, 2, 2],                                               # the integer codes SamplingHistory keeps
    np.array([0, 0, 1, 1, 2, 2]),
    ["warmup", "warmup", "exploration", "exploration", "exploitation", "exploitation"],
])
def test_legend_names_the_phases_whatever_their_encoding(phases):
    fig = plot_sampling_map(np.arange(6) * 3, np.zeros((6, N)), num_frames=L, clip_len=F, gamma=1.0, phases=phases,
                            event=(10, 20))
    _, texts = _legend_texts(fig)
    assert {"warm-up", "exploration", "exploitation"} <= set(texts), texts
    assert not [t for t in texts if t.strip().isdigit() or t.startswith("phase ")], texts
    colours = {ln.get_gid(): ln.get_color() for ln in fig.axes[0].get_lines()}
    assert len(set(colours.values())) == 3  # one colour per phase, not the default cycle of unnamed codes


def test_phase_codes_agree_with_the_callbacks_codes():
    from lightning_temporal.callbacks.stochastic_softmax import PHASE_CODES
    from lightning_temporal.plots.sampling_map import _PHASE_BY_CODE

    assert _PHASE_BY_CODE == {code: phase.value for phase, code in PHASE_CODES.items()}


def test_legends_sit_outside_the_data_and_distributions_start_at_zero():
    g = torch.Generator().manual_seed(1)
    v = dict(positions=np.arange(6) * 3, scores=torch.randn(6, N, generator=g), num_frames=L, clip_len=F, gamma=1.0,
             phases=[0, 0, 1, 1, 2, 2], event=(10, 20), frame_scores=np.linspace(1, 5, L))
    for fig in (plot_sampling_map(**v), plot_sampling_maps([v, dict(v, frame_scores=None), v], ncols=3)):
        fig.canvas.draw()
        renderer = fig.canvas.get_renderer()
        legends, _ = _legend_texts(fig)
        assert legends
        for leg in legends:
            box = leg.get_window_extent(renderer)
            for ax in fig.axes:
                assert not box.overlaps(ax.get_window_extent(renderer)), (leg.get_texts()[0].get_text(), ax)
        for ax in fig.axes:
            if ax.get_ylabel().startswith("softmax") or ax.get_ylabel() == "frame score":
                assert ax.get_ylim()[0] == 0.0, ax.get_ylabel()


def test_earlier_epochs_are_labelled_with_their_epoch():
    snapshots = np.random.default_rng(0).normal(size=(12, N))
    epochs = np.arange(3, 15)
    fig = plot_sampling_map(np.zeros(12, dtype=int), snapshots, num_frames=L, clip_len=F, gamma=1.0,
                            epochs=epochs, score_epochs=epochs)
    _, texts = _legend_texts(fig)
    earlier = [t for t in texts if t.startswith("epoch") and "last" not in t]
    assert "epoch 14 (last)" in texts and "epoch 3" in earlier and len(earlier) >= 3
    ax_dist = fig.axes[1]
    for line in ax_dist.get_lines():  # a labelled snapshot line is the snapshot of that epoch
        if str(line.get_gid()).startswith("snapshot:") and not line.get_label().startswith("_"):
            i = int(line.get_gid().split(":")[1])
            assert line.get_label() == f"epoch {epochs[i]}"
            z = np.exp(snapshots[i] - snapshots[i].max())
            np.testing.assert_allclose(line.get_ydata(), z / z.sum())
