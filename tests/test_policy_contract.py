"""The open policy contract: a policy written outside the package is chosen by class, instance or
``class_path`` + ``init_args`` (from a YAML recipe through ``lightning-temporal fit``), decides its phases from
data (logged as they are), sees the clean clips' predicted class and margin, and gets k > 1 scored positions."""
import os
import warnings

import lightning as L
import pytest
import torch
import yaml

from lightning_temporal.callbacks.stochastic_softmax import StochasticSoftmaxCallback
from lightning_temporal.cli import run
from lightning_temporal.sampling import (
    POLICIES,
    BootstrapPolicy,
    PhaseSchedule,
    PolicyContext,
    StochasticSoftmaxPolicy,
    UniformPolicy,
    build_policy,
)
from tests.custom_policy import GatedSoftmax
from tests.tiny_lightning import TinyDataModule, TinyVideoModule

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
QUICKSTART = os.path.join(ROOT, "recipes", "quickstart.yaml")


def _context(n=(30, 12), span=4):
    return PolicyContext(num_positions=torch.tensor(n), span=span, schedule=PhaseSchedule(1, 2), seed=3,
                         gamma_s=2.0, num_classes=4)


def test_one_registry_builds_the_builtins_as_their_constructors_do():
    ctx = _context()
    tss = build_policy("tss", ctx)
    ref = StochasticSoftmaxPolicy(ctx.num_positions, 4, 2.0, PhaseSchedule(1, 2), 3)
    assert torch.equal(tss.slot_orders, ref.slot_orders) and tss.gamma_s == 2.0 and tss.table.clip_len == 4
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    assert torch.equal(tss.starts(1, g1), ref.starts(1, g2))
    assert isinstance(build_policy("uniform", ctx), UniformPolicy)
    boot = build_policy({"class_path": "bootstrap", "init_args": {"positions_per_video": 4}}, ctx)
    assert isinstance(boot, BootstrapPolicy) and boot.positions_per_video == 4 and boot.num_classes == 4
    assert set(POLICIES) >= {"tss", "uniform", "prior", "reinforce", "bootstrap"}


def test_a_policy_by_class_path_instance_or_class_without_editing_the_package():
    ctx = _context()
    by_path = build_policy({"class_path": "tests.custom_policy.GatedSoftmax", "init_args": {"epsilon": 0.25}}, ctx)
    assert isinstance(by_path, GatedSoftmax) and by_path.epsilon == 0.25 and by_path.table.clip_len == 4
    assert build_policy(GatedSoftmax, ctx).temperature == 2.0  # gamma_s from the context
    inst = GatedSoftmax(ctx.num_positions, 4)
    assert build_policy(inst, ctx) is inst
    with pytest.raises(ValueError, match="built for other videos"):
        build_policy(GatedSoftmax([5], 4), ctx)
    with pytest.raises(TypeError, match=r"GatedSoftmax takes no argument\(s\) \['temperature'\]"):
        build_policy({"class_path": "tests.custom_policy.GatedSoftmax", "init_args": {"temperature": 1}}, ctx)
    with pytest.raises(ValueError, match="cannot import it"):
        build_policy("tests.custom_policy.Missing", ctx)
    with pytest.raises(TypeError, match="not a SamplingPolicy subclass"):
        build_policy("torch.nn.Linear", ctx)


def _fit_recipe(tmp_path, monkeypatch, policy: dict, epochs: int = 3):
    """``lightning-temporal fit`` of a miniature quickstart whose sampler callback is given ``policy``."""
    with open(QUICKSTART) as f:
        recipe = yaml.safe_load(f)
    cb = recipe["trainer"]["callbacks"][0]
    assert cb["class_path"].endswith("StochasticSoftmaxCallback")
    cb["init_args"] = {"policy": policy, "track_videos": 2}
    recipe["trainer"]["callbacks"] = [cb]
    recipe["trainer"].update(max_epochs=epochs, check_val_every_n_epoch=epochs, enable_progress_bar=False,
                             default_root_dir=str(tmp_path / "out"))
    recipe["trainer"]["logger"]["init_args"]["save_dir"] = str(tmp_path / "out")
    recipe["data"]["init_args"].update(
        synthetic={"root": str(tmp_path / "synth"), "num_train": 6, "num_val": 2, "num_test": 2, "size": 32,
                   "min_frames": 24, "max_frames": 40}, clip_len=8, crop_size=24, batch_size=3)
    path = tmp_path / "custom.yaml"
    path.write_text(yaml.safe_dump(recipe))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("sys.argv", ["lightning-temporal"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cli = run(["fit", "--config", str(path), "--test_after_fit=false"])
    return cli, next(c for c in cli.trainer.callbacks if isinstance(c, StochasticSoftmaxCallback))


def test_custom_policy_from_a_yaml_recipe_trains_with_a_data_driven_phase_and_k_positions(tmp_path, monkeypatch):
    # open_at=0: the gate opens after epoch 0 whatever the accuracy, so epoch 0 is warm-up, epochs 1-2 exploitation
    cli, cb = _fit_recipe(tmp_path, monkeypatch, {"class_path": "tests.custom_policy.GatedSoftmax",
                                                  "init_args": {"open_at": 0.0, "positions_per_video": 3}})
    policy = cb.policy
    assert isinstance(policy, GatedSoftmax) and cli.trainer.state.finished
    assert [m["phase"] for m in cb.metrics] == [0, 2, 2]   # warm-up, then exploitation: as the policy decided
    assert cb.history.phases.tolist() == [0, 2, 2]
    assert float(cli.trainer.callback_metrics["tss/phase"]) == 2.0
    # every epoch, 3 scored positions per video: the trained one first, then 2 further ones, with logits summary
    V = cb.num_positions.numel()
    for epoch, rec in policy.seen_records:
        assert len(rec) == 3 * V
        assert rec.predicted is not None and rec.margin is not None
        assert torch.equal(rec.correct, rec.margin > 0)
        trained = cb.history.starts[epoch]
        for v in range(V):   # a video's first record is its trained clip
            first = int((rec.video_idx == v).nonzero()[0])
            assert int(rec.start[first]) == int(trained[v])
        assert int(torch.bincount(rec.video_idx, minlength=V).min()) == 3


def test_k_positions_are_scored_clean_like_the_trained_clip():
    """The further positions' records are the model's target logit, argmax and margin of their clean clips
    (recomputed here with the weights fixed, lr 0), and the bootstrap policy's phase is logged as it decides it."""
    module = TinyVideoModule(lr=0.0)
    dm = TinyDataModule(num_videos=7, batch_size=3)
    cb = StochasticSoftmaxCallback(policy=GatedSoftmax, policy_args={"open_at": 2.0, "positions_per_video": 3},
                                   log_every_epoch=False)
    trainer = L.Trainer(max_epochs=2, callbacks=[cb], accelerator="cpu", devices=1, logger=False,
                        enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False)
    trainer.fit(module, datamodule=dm)
    assert [m["phase"] for m in cb.metrics] == [0, 0]   # the gate (accuracy >= 2) never opens
    rec = cb.last_records
    assert rec["video_idx"].numel() == 3 * 7
    ds = dm.dataset
    clips = torch.stack([ds[(int(v), int(t))]["clean"] for v, t in zip(rec["video_idx"], rec["start"])])
    with torch.no_grad():
        logits = module(clips)
    labels = ds.labels[rec["video_idx"]]
    target = logits.gather(1, labels[:, None]).squeeze(1)
    torch.testing.assert_close(rec["score"], target, rtol=1e-5, atol=1e-6)
    assert torch.equal(rec["predicted"], logits.argmax(1))
    others = logits.scatter(1, labels[:, None], float("-inf")).amax(1)
    torch.testing.assert_close(rec["margin"], target - others, rtol=1e-5, atol=1e-6)
    # the further positions are the callback's extra_starts of that epoch, after each trained clip
    extra = cb.extra_starts(1)
    for v in range(7):
        mine = (rec["video_idx"] == v).nonzero().flatten()
        assert rec["start"][mine[1:]].tolist() == extra[v].tolist()


def test_bootstrap_policy_phase_is_logged_as_decided():
    module = TinyVideoModule(lr=0.0)
    dm = TinyDataModule(num_videos=6, batch_size=3)
    # z = 0, chance 1/4: an epoch counts when its clean accuracy is above 1/4; exploitation starts after 2 in a row
    cb = StochasticSoftmaxCallback(mode="bootstrap", policy_args={"num_classes": 4, "z": 0.0, "patience": 2,
                                                                  "positions_per_video": 2}, log_every_epoch=False)
    trainer = L.Trainer(max_epochs=4, callbacks=[cb], accelerator="cpu", devices=1, logger=False,
                        enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False)
    trainer.fit(module, datamodule=dm)
    # recomputed here from each epoch's logged clean accuracy: the phases follow it
    streak, opened, expected = 0, None, []
    for e, m in enumerate(cb.metrics):
        expected.append(2 if opened is not None and e >= opened else 0)
        streak = streak + 1 if m["clean_top1"] > 0.25 else 0
        if opened is None and streak >= 2:
            opened = e + 1
    assert [m["phase"] for m in cb.metrics] == expected
    assert 2 in expected, "the gate should open on this data (fixed weights, accuracy 1/3)"
    assert cb.history.phases.tolist() == expected


def test_bootstrap_docstring_example_runs():
    import doctest

    from lightning_temporal.sampling import bootstrap
    res = doctest.testmod(bootstrap, verbose=False)
    assert res.attempted >= 4 and res.failed == 0
