"""The pieces joined: TemporalDataModule + VideoClassifier (+ StochasticSoftmaxCallback) on real video files.

Each evaluation number is checked against an independent computation: clips decoded one by one with
``read_clip`` and transformed separately, scored one at a time, pooled with the formula written out.
"""
import csv
import os
import warnings

import numpy as np
import pytest
import torch
from lightning import Trainer
from torch import nn

from lightning_temporal import (
    SamplingMapLogger,
    StochasticSoftmaxCallback,
    TemporalDataModule,
    VideoClassifier,
    softmax_temporal_pool,
)
from lightning_temporal.cli import run as main
from lightning_temporal.data.video import read_clip
from lightning_temporal.data.video_dataset import VideoDataset, collate_videos, eval_clip_starts, gather_clips
from lightning_temporal.module import pad_clip_scores
from tests.synth import CROP, tiny_dataset
from tests.videos import reference_frames


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    """A tiny embedded dataset: 8 train / 4 val / 4 test videos, 32x32, 20-36 frames, 4 classes."""
    root = tmp_path_factory.mktemp("synth")
    return tiny_dataset(root, num_train=8, num_val=4, num_test=4)


def _dm(synth, **kw):
    args = dict(train_manifest=synth["train"], val_manifest=synth["val"], test_manifest=synth["test"],
                clip_len=8, batch_size=4, eval_batch_size=2, eval_clip_stride=3, progress=False, **CROP)
    args.update(kw)
    return TemporalDataModule(**args)


def _trainer(tmp_path, **kw):
    args = dict(accelerator="cpu", devices=1, max_epochs=1, logger=False, enable_checkpointing=False,
                enable_progress_bar=False, enable_model_summary=False, default_root_dir=str(tmp_path))
    args.update(kw)
    return Trainer(**args)


# ------------------------------------------------------------------------------------------- evaluation data
def test_video_dataset_clips_equal_independent_decode(synth):
    """The clips the model reads (views of each batch's padded videos) equal each clip decoded alone."""
    dm = _dm(synth)
    dm.setup("validate")
    ds = dm.datasets["val"]
    batch = collate_videos([ds[i] for i in range(len(ds))])  # videos of different lengths, padded
    video_idx = torch.repeat_interleave(torch.arange(len(ds)), batch["clip_counts"])
    clips = gather_clips(batch["video"], video_idx, batch["starts"], batch["clip_len"], batch["stride"])
    for v, t, clip in zip(video_idx.tolist(), batch["starts"].tolist(), clips):
        record = ds.manifest[v]
        expected = dm.clean_transform(read_clip(record.path, t, 8))
        torch.testing.assert_close(clip, expected, atol=1e-5, rtol=1e-5)
    for i in range(len(ds)):
        starts = batch["starts"][video_idx == i]
        assert torch.equal(starts, eval_clip_starts(int(ds.num_positions[i]), 3))
        assert int(starts[-1]) == ds.manifest[i].num_frames - 8  # the last position is always evaluated


def test_video_dataset_dense_equals_sequential_decode(synth):
    dm = _dm(synth, eval_mode="dense")
    dm.setup("test")
    ds = dm.datasets["test"]
    item = ds[1]
    frames = torch.from_numpy(reference_frames(ds.manifest[1].path))
    torch.testing.assert_close(item["video"], dm.clean_transform(frames), atol=1e-5, rtol=1e-5)


def test_pad_clip_scores_matches_loop():
    counts = torch.tensor([3, 1, 4])
    scores = torch.randn(8, 5)
    padded, mask = pad_clip_scores(scores, counts)
    assert padded.shape == (3, 4, 5) and mask.sum() == 8
    off = 0
    for v, n in enumerate(counts.tolist()):
        assert torch.equal(padded[v, :n], scores[off:off + n]) and mask[v, :n].all() and not mask[v, n:].any()
        off += n


class _Linear(nn.Module):
    """A deterministic clip classifier: mean colour per channel and time, then a fixed linear map."""

    def __init__(self, num_classes=4, clip_len=8):
        super().__init__()
        self.fc = nn.Linear(3 * clip_len, num_classes)

    def forward(self, x):  # N, 3, T, H, W
        return self.fc(x.mean(dim=(3, 4)).flatten(1))


@pytest.mark.parametrize("gamma", [0.0, 1.0, 1e6])
def test_validation_pools_each_video_like_the_formula(synth, tmp_path, gamma):
    torch.manual_seed(0)
    model = VideoClassifier(_Linear(), num_classes=4, gamma_p=gamma, report_gamma_p=())
    dm = _dm(synth)
    out = _trainer(tmp_path).validate(model, datamodule=dm, verbose=False)[0]
    # independent: read each clip alone, score it alone, pool with the formula written out
    ds = dm.datasets["val"]
    correct = []
    for i in range(len(ds)):
        record = ds.manifest[i]
        starts = eval_clip_starts(int(ds.num_positions[i]), 3).tolist()
        with torch.no_grad():
            s = torch.stack([model.backbone(dm.clean_transform(read_clip(record.path, t, 8))[None])[0]
                             for t in starts]).double()  # T, C
        w = torch.softmax(gamma * s, dim=0) if gamma < 1e5 else (s == s.max(0).values).double()
        y = (w * s).sum(0)
        correct.append(int(y.argmax()) == record.label)
    assert out["val/top1"] == pytest.approx(float(np.mean(correct)))


def test_dense_and_clips_agree_on_a_fully_convolutional_model(synth, tmp_path):
    """simple3d has no temporal stride at the head: dense and clips modes both run and give valid metrics;
    predict returns a score curve per video over its frames."""
    model = VideoClassifier("simple3d", num_classes=4)
    dense = _trainer(tmp_path).predict(model, datamodule=_dm(synth, eval_mode="dense"))
    clips = _trainer(tmp_path).predict(model, datamodule=_dm(synth, eval_mode="clips"))
    flat_d = [v for batch in dense for v in batch]
    flat_c = [v for batch in clips for v in batch]
    assert [v["video_idx"] for v in flat_d] == [v["video_idx"] for v in flat_c] == [0, 1, 2, 3]
    for d, c in zip(flat_d, flat_c):
        assert d["curve"].shape[1] == c["curve"].shape[1] == 4
        assert torch.allclose(d["probs"].sum(), torch.tensor(1.0)) and torch.allclose(c["probs"].sum(),
                                                                                      torch.tensor(1.0))
        assert c["positions"].tolist() == eval_clip_starts(c["positions"].max().item() + 1, 3).tolist()


# ------------------------------------------------------------------------------------- subclass + callback
class ScoringProbe(VideoClassifier):
    """A user subclass: own backbone, own loss, own score_clips; the callback must work unchanged."""

    def __init__(self):
        super().__init__(_Linear(), num_classes=4)
        self.scored = []

    def compute_loss(self, logits, labels):
        return nn.functional.multi_margin_loss(logits, labels)

    def score_clips(self, clips):
        self.scored.append((self.training, torch.is_grad_enabled(), clips.shape[0]))
        return super().score_clips(clips)


def test_callback_with_subclassed_module_fills_tables(synth, tmp_path):
    model = ScoringProbe()
    cb = StochasticSoftmaxCallback(gamma_s=1.0, warmup_epochs=1, exploration_epochs=2, track_videos=2)
    plots = SamplingMapLogger(every_n_epochs=2, out_dir=str(tmp_path / "maps"))
    _trainer(tmp_path, max_epochs=4, callbacks=[cb, plots], num_sanity_val_steps=0,
             check_val_every_n_epoch=4).fit(model, datamodule=_dm(synth))
    # epochs 1..3 score every training video once, in eval mode without gradients
    assert sum(n for _, _, n in model.scored if True) >= 3 * 8
    assert all(not training and not grad for training, grad, _ in model.scored)
    h = cb.history
    assert h.starts.shape == (4, 8) and (h.starts >= 0).all()
    # after exploration every position of every table was written: no table is all zeros any more
    table = cb.policy.table
    assert all(bool((table[v] != 0).any()) for v in range(8))
    assert len(plots.saved) == 2 and all(os.path.getsize(p) > 10_000 for p in plots.saved)


def test_training_skips_and_counts_a_broken_video(synth, tmp_path):
    # a manifest whose third video is garbage bytes, with its frame count given so probing is not needed
    folder = os.path.dirname(synth["train"])
    rows = list(csv.reader(open(synth["train"])))
    broken = os.path.join(str(tmp_path), "broken.mp4")
    with open(broken, "wb") as f:
        f.write(os.urandom(2000))
    rows[3][0] = broken
    path = os.path.join(folder, "train_with_broken.csv")  # beside the videos: relative paths still resolve
    with open(path, "w", newline="") as f:
        csv.writer(f).writerows(rows)
    model = VideoClassifier("simple3d", num_classes=4)
    dm = _dm(synth, train_manifest=path)
    with pytest.warns(UserWarning, match="broken.mp4"):
        _trainer(tmp_path, max_epochs=2, num_sanity_val_steps=0, limit_val_batches=0).fit(model, datamodule=dm)
    assert model.skips.total_skipped == 2  # once per epoch, the other 7 videos trained each epoch
    assert model.trainer.callback_metrics["train/skipped_clips"] == 1.0


# --------------------------------------------------------------------------------------------- bad configs
@pytest.mark.parametrize("override, message", [
    (["--model.init_args.backbone=resnet9000"], "known backbones"),
    (["--model.init_args.gamma_p=-1"], "gamma_p"),
    (["--data.init_args.crop_size=80"], "crop_size"),
    (["--data.init_args.train_manifest=/nonexistent/train.csv"], "train_manifest"),
    (["--trainer.callbacks+=lightning_temporal.StochasticSoftmaxCallback",
      "--trainer.callbacks.gamma_s=-2"], "gamma_s"),
])
def test_bad_config_fails_before_training_naming_the_key(override, message, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("sys.argv", ["lightning-temporal"])
    config = os.path.join(os.path.dirname(__file__), "..", "recipes", "quickstart.yaml")
    with pytest.raises((ValueError, FileNotFoundError)) as err:
        main(["fit", "--config", config, *override, "--trainer.fast_dev_run=1",
              "--data.init_args.synthetic={root: synth, num_train: 4, num_val: 2, num_test: 2, size: 32, "
              "min_frames: 24, max_frames: 32}"])
    assert message in str(err.value)
    assert not os.path.exists(tmp_path / "synth"), "the error must come before any data is generated"


def test_sgs_feature_map_logger_draws_the_layer_of_a_validation_clip(synth, tmp_path, monkeypatch):
    """The figure is drawn from what the model's SGS layer takes in and puts out on the first clip of the first
    validation video, recomputed here by running that clip, decoded by the dataset, through the trained model."""
    import lightning_temporal.callbacks.sgs_plots as sgs_plots
    from lightning_temporal import SGSFeatureMapLogger, SimilarityGuidedSampling

    drawn = []
    real_plot = sgs_plots.plot_sgs_feature_maps

    def recording_plot(*args, **kwargs):
        drawn.append((args, kwargs))
        return real_plot(*args, **kwargs)

    monkeypatch.setattr(sgs_plots, "plot_sgs_feature_maps", recording_plot)
    model = VideoClassifier("r3d18_a1", num_classes=4, sgs={"after": "res2", "num_bins": 8})
    logger = SGSFeatureMapLogger(out_dir=str(tmp_path / "sgs"))
    dm = _dm(synth)
    _trainer(tmp_path, max_epochs=1, callbacks=[logger], num_sanity_val_steps=0, limit_train_batches=1,
             limit_val_batches=1).fit(model, datamodule=dm)
    assert len(drawn) == 1 and logger.saved == [str(tmp_path / "sgs" / "sgs_maps_epoch000.png")]
    with open(logger.saved[0], "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    # the reference: the first clip of validation video 0, through the trained model in eval mode
    item = dm.datasets["val"][0]
    clip = gather_clips(item["video"][None], torch.zeros(1, dtype=torch.long), item["starts"][:1], 8, 1)
    (sgs,) = [m for m in model.modules() if isinstance(m, SimilarityGuidedSampling)]
    seen = {}
    handle = sgs.register_forward_hook(lambda m, inp, out: seen.update(inp=inp[0], out=out[0], mask=out[1]))
    model.eval()
    with torch.no_grad():
        model.score_clips(clip)
    handle.remove()
    (inp, out, mask, *_), kwargs = drawn[0]
    torch.testing.assert_close(inp, seen["inp"])
    torch.testing.assert_close(out, seen["out"])
    assert torch.equal(mask, seen["mask"]) and out.shape[2] <= 8  # at most B = 8 bins were kept
    shown = kwargs["clip"]  # the clip itself, shown beside the maps (rescaled to [0, 1] for display)
    torch.testing.assert_close(shown, (clip[0] - clip.min()) / (clip.max() - clip.min()))
    with pytest.raises(ValueError, match="SimilarityGuidedSampling"):
        _trainer(tmp_path, callbacks=[SGSFeatureMapLogger()]).validate(VideoClassifier("simple3d", num_classes=4),
                                                                       datamodule=_dm(synth))


def test_quickstart_cli_fits_then_tests_and_writes_figures(tmp_path, monkeypatch):
    """The main job's path end to end (tiny data, 2 epochs): fit, test with softmax pooling, sampling maps."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("sys.argv", ["lightning-temporal"])
    config = os.path.join(os.path.dirname(__file__), "..", "recipes", "quickstart.yaml")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        cli = main(["fit", "--config", config, "--trainer.max_epochs=5", "--trainer.check_val_every_n_epoch=1",
                    "--trainer.enable_progress_bar=false", "--data.init_args.clip_len=8",
                    "--data.init_args.crop_size=24", "--data.init_args.short_side=32",
                    "--data.init_args.synthetic={root: synth, num_train: 6, num_val: 2, num_test: 3, size: 32, "
                    "min_frames: 24, max_frames: 32}"])
    # checkpoints are written at training-epoch ends, after the score tables were updated: resumable exactly
    assert not [w for w in caught if "middle of training epoch" in str(w.message)]
    assert cli.trainer.checkpoint_callback._save_on_train_epoch_end is True
    metrics = cli.trainer.callback_metrics
    assert "test/top1" in metrics and "test/gp0/top1" in metrics and "test/gp1e06/top1" in metrics
    pngs = [os.path.join(d, f) for d, _, fs in os.walk(tmp_path / "outputs") for f in fs if f.endswith(".png")]
    assert any("sampling_map_epoch004" in p for p in pngs), pngs
    csvs = [os.path.join(d, f) for d, _, fs in os.walk(tmp_path / "outputs") for f in fs if f == "metrics.csv"]
    assert csvs and "epochs_trained" in open(csvs[0]).read()


def test_readme_subclass_example_trains_with_the_callback(synth, tmp_path):
    """The subclass shown in the README (own network, own loss) works with StochasticSoftmaxCallback."""
    readme = open(os.path.join(os.path.dirname(__file__), "..", "README.md")).read()
    block = next(b for b in readme.split("```python")[1:] if "class FocalVideoClassifier" in b).split("```")[0]
    namespace = {}
    exec(block, namespace)
    model = namespace["FocalVideoClassifier"](num_classes=4)
    cb = StochasticSoftmaxCallback(gamma_s=1.0, warmup_epochs=1, exploration_epochs=2)
    _trainer(tmp_path, max_epochs=4, callbacks=[cb], num_sanity_val_steps=0, limit_val_batches=0).fit(
        model, datamodule=_dm(synth))
    assert cb.metrics[-1]["records"] == 8 and bool((cb.policy.table.values != 0).any())


def test_flip_with_direction_classes_warns():
    with pytest.warns(UserWarning, match="flip"):
        TemporalDataModule(synthetic={"root": "unused"}, flip=True, **CROP)


def test_console_script_exit_status(tmp_path):
    """`lightning-temporal` exits 0 after a run and 2 with a one-line message on a bad config."""
    import subprocess
    import sys

    config = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "recipes", "quickstart.yaml"))
    tiny = ("--data.init_args.synthetic={root: synth, num_train: 4, num_val: 2, num_test: 2, size: 32, "
            "min_frames: 24, max_frames: 32}")
    # exactly what the installed `lightning-temporal` entry point runs
    script = "import sys; from lightning_temporal.cli import main; sys.exit(main())"
    base = [sys.executable, "-c", script, "fit", "--config", config, tiny,
            "--data.init_args.clip_len=8", "--data.init_args.crop_size=24", "--trainer.enable_progress_bar=false"]
    root = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
    env = dict(os.environ, PYTHONPATH=root + os.pathsep + os.environ.get("PYTHONPATH", ""))
    ok = subprocess.run(base + ["--trainer.fast_dev_run=1"], cwd=tmp_path, capture_output=True, text=True, env=env)
    assert ok.returncode == 0, ok.stderr[-2000:]
    bad = subprocess.run(base + ["--model.init_args.gamma_p=-1"], cwd=tmp_path, capture_output=True, text=True,
                         env=env)
    assert bad.returncode == 2 and "gamma_p" in bad.stderr and "Traceback" not in bad.stderr
