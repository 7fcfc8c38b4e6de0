"""Warnings a user needs: clips longer than videos, a run too short to reach TSS exploitation."""
import warnings

import pytest
from lightning import Trainer

from lightning_temporal import StochasticSoftmaxCallback, TemporalDataModule, VideoClassifier
from tests.synth import CROP, read_rows, tiny_dataset


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth")
    return tiny_dataset(root, num_train=6, num_val=2, num_test=2)


def _frames(manifest):
    return [int(r["num_frames"]) for r in read_rows(manifest)]


def _short_warnings(caught):
    return [str(w.message) for w in caught if "shorter than one clip" in str(w.message)]


@pytest.mark.parametrize("clip_len, stride", [(30, 1), (10, 3)])
def test_clips_longer_than_videos_warn_once_with_the_count(synth, clip_len, stride):
    span = (clip_len - 1) * stride + 1
    frames = _frames(synth["train"])
    short = sum(n < span for n in frames)
    assert 0 < short < len(frames)  # the case the warning is for: some videos, not all
    dm = TemporalDataModule(train_manifest=synth["train"], clip_len=clip_len, stride=stride, progress=False, **CROP)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        dm.setup("fit")
        dm.setup("fit")
        dm.train_dataloader()
    (message,) = _short_warnings(caught)
    assert message.startswith(f"{short} of {len(frames)} train videos are shorter than one clip")
    assert f"{span} frames; the shortest has {min(frames)}" in message and "repeat the last frame" in message


def test_no_warning_when_every_video_holds_a_clip(synth):
    dm = TemporalDataModule(train_manifest=synth["train"], val_manifest=synth["val"], clip_len=min(
        _frames(synth["train"]) + _frames(synth["val"])), progress=False, **CROP)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        dm.setup("fit")
    assert _short_warnings(caught) == []


@pytest.mark.parametrize("max_epochs, warns", [(2, True), (8, True), (9, False)])
def test_a_run_that_ends_before_exploitation_warns(synth, tmp_path, max_epochs, warns):
    """W = 3 warm-up + E = 5 exploration epochs: exploitation is epoch 8, the 9th."""
    cb = StochasticSoftmaxCallback(gamma_s=1.0, warmup_epochs=3, exploration_epochs=5)
    trainer = Trainer(max_epochs=max_epochs, callbacks=[cb], logger=False, enable_checkpointing=False,
                      enable_progress_bar=False, enable_model_summary=False, default_root_dir=str(tmp_path),
                      limit_train_batches=0, limit_val_batches=0)  # the check comes before any batch
    dm = TemporalDataModule(train_manifest=synth["train"], clip_len=8, progress=False, **CROP)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.fit(VideoClassifier("simple3d", num_classes=4), datamodule=dm)
    found = [str(w.message) for w in caught if "before exploitation begins" in str(w.message)]
    assert bool(found) == warns, found
    if warns:
        assert found[0].startswith(f"trainer.max_epochs={max_epochs} ends before exploitation begins at epoch 8 "
                                   "(3 warm-up + 5 exploration epochs")
