"""What SGS saved, visible without Python: ``lightning-temporal fit`` with SGS writes each stage's mean B' and
GMACs per clip to ``metrics.csv``, and ``predict`` writes each video's.

The logged numbers are compared with an independent count: every clip run alone under the FLOP counter
(``gmacs_per_clip``) and the B' its SGS layer keeps. The GMACs table the module uses is checked against the same
count on clips of different B', for both assignments.
"""
import csv
import os

import numpy as np
import pytest
import torch

from lightning_temporal.data.video_dataset import gather_clips
from lightning_temporal.flops import gmacs_per_clip
from lightning_temporal.models.backbone import gmacs_by_bins
from lightning_temporal.models.registry import build_backbone
from tests.test_cli import _cli

SGS = "--model.init_args.sgs={after: res2, num_bins: 8}"


@pytest.mark.parametrize("name,shape,kw,assignment", [
    ("simple3d", (3, 16, 32, 32), {}, "interpolate"), ("simple3d", (3, 16, 32, 32), {}, "released"),
    ("x3d_s", (3, 10, 32, 32), {"depths": (1, 1, 1, 1)}, "interpolate")], ids=["simple3d", "released", "x3d_s"])
def test_gmacs_table_equals_the_count_of_each_clip_alone(name, shape, kw, assignment):
    torch.manual_seed(0)
    model = build_backbone(name, 5, sgs={"after": "res2", "assignment": assignment}, **kw).eval()
    table, base = gmacs_by_bins(model, shape)
    g = torch.Generator().manual_seed(0)
    clips = torch.randn(5, *shape, generator=g) * torch.rand(5, 1, shape[1], 1, 1, generator=g) * 3
    clips[0] = clips[0, :, :1]  # a static clip keeps few bins
    with torch.no_grad():
        model(clips)
    bins = model.temporal.last_num_bins
    assert len(set(bins.tolist())) >= 3
    torch.testing.assert_close(table[bins], torch.tensor(gmacs_per_clip(model, clips), dtype=torch.float64),
                               rtol=1e-12, atol=0)
    plain = build_backbone(name, 5, **kw)
    assert base == pytest.approx(gmacs_per_clip(plain, clips[:1])[0], rel=1e-12)
    assert torch.all(table[2:] > table[1:-1])  # one more bin always costs more


@pytest.fixture(scope="module")
def sgs_run(tmp_path_factory):
    """``lightning-temporal fit`` of the miniature quickstart with SGS, one epoch, validation and test."""
    folder = tmp_path_factory.mktemp("sgs_quickstart")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(folder)
        mp.setattr("sys.argv", ["lightning-temporal"])
        cli = _cli(["fit", "--trainer.max_epochs=1", "--trainer.check_val_every_n_epoch=1", SGS])
    return folder, cli


def _per_clip(model, loader):
    """GMACs of each clip (run alone under the FLOP counter), its B', and the video it belongs to, over
    ``loader``'s evaluation batches."""
    gmacs, bins, videos = [], [], []
    for batch in loader:
        counts = batch["clip_counts"]
        idx = torch.repeat_interleave(torch.arange(counts.numel()), counts)
        clips = gather_clips(batch["video"], idx, batch["starts"], int(batch["clip_len"]), int(batch["stride"]))
        gmacs += gmacs_per_clip(model, clips)
        with torch.no_grad():
            model.eval()(clips)
        bins += model.temporal.last_num_bins.tolist()
        videos += batch["video_idx"][idx].tolist()
    return np.array(gmacs), np.array(bins), np.array(videos)


def test_fit_writes_bins_and_gmacs_to_metrics_csv(sgs_run):
    folder, cli = sgs_run
    with open(folder / "outputs" / "quickstart" / "logs" / "version_0" / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    for stage in ("train", "val", "test"):
        for key in ("sgs_bins", "gmacs", "gmacs_saved"):
            assert f"{stage}/{key}" in rows[0], f"{stage}/{key} missing from metrics.csv"
    last = {k: float(v) for r in rows for k, v in r.items() if v not in ("", None)}
    backbone = cli.model.backbone
    dm = cli.datamodule
    gmacs, bins, _ = _per_clip(backbone, dm.val_dataloader())
    gmacs, bins = gmacs.mean(), bins.mean()
    assert last["val/gmacs"] == pytest.approx(gmacs, rel=1e-5)
    assert last["val/sgs_bins"] == pytest.approx(bins, rel=1e-5)
    base = gmacs_per_clip(build_backbone("simple3d", 4), torch.zeros(1, 3, 8, 24, 24))[0]
    assert last["val/gmacs_saved"] == pytest.approx(1 - gmacs / base, rel=1e-5)
    assert 1 <= last["train/sgs_bins"] <= 8 and 0 < last["train/gmacs"] < base
    assert {"test/sgs_bins", "test/gmacs"} <= set(cli.trainer.progress_bar_metrics)  # the last stage shown


def test_predict_writes_each_videos_bins_and_gmacs(sgs_run, monkeypatch):
    folder, _ = sgs_run
    monkeypatch.chdir(folder)
    monkeypatch.setattr("sys.argv", ["lightning-temporal"])
    cli = _cli(["predict", "--ckpt_path", "last", SGS])
    from lightning_temporal import PredictionWriter

    (writer,) = [cb for cb in cli.trainer.callbacks if isinstance(cb, PredictionWriter)]
    with open(writer.path, newline="") as f:
        rows = list(csv.DictReader(f))
    gmacs, bins, videos = _per_clip(cli.model.backbone, cli.datamodule.predict_dataloader())
    assert len(rows) == len(set(videos.tolist())) >= 2
    for row in rows:
        mine = videos == int(row["video_idx"])
        clip_bins = [int(b) for b in row["clip_bins"].split()]
        assert clip_bins == bins[mine].tolist() and len(clip_bins) == len(row["clip_starts"].split())
        assert float(row["sgs_bins"]) == pytest.approx(bins[mine].mean(), rel=1e-3)
        assert float(row["gmacs_per_clip"]) == pytest.approx(gmacs[mine].mean(), rel=1e-5)


def test_relevance_curve_draws_the_bins_each_clip_kept():
    from lightning_temporal.plots.relevance_curve import plot_relevance_curve

    fig = plot_relevance_curve([0, 8, 16], [0.5, 2.0, -1.0], num_frames=32, clip_len=16, weights=[0.2, 0.7, 0.1],
                               bins=[3, 5, 1])
    assert [ax.get_ylabel() for ax in fig.axes][-1] == "SGS bins B'"
    heights = [p.get_height() for p in fig.axes[-1].patches if p.get_gid() == "bins"]
    heights = heights or [p.get_height() for c in fig.axes[-1].containers for p in c if c.get_gid() == "bins"]
    assert heights == [3, 5, 1]
    with pytest.raises(ValueError, match="bins must be"):
        plot_relevance_curve([0, 8], [0.5, 2.0], num_frames=32, clip_len=16, bins=[1])
