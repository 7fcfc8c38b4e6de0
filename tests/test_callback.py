"""StochasticSoftmaxCallback on one process: arguments, clean/augmented scoring, records, history, logs, state."""
from __future__ import annotations

import doctest
import math
import types
import warnings

import lightning as L
import pytest
import torch
from torch import nn

import lightning_temporal.callbacks.stochastic_softmax as ss
from lightning_temporal.callbacks.stochastic_softmax import StochasticSoftmaxCallback
from lightning_temporal.distributed import gather_records
from lightning_temporal.sampling.phases import Phase, PhaseSchedule
from lightning_temporal.sampling.policies import StochasticSoftmaxPolicy
from tests.tiny_lightning import TinyDataModule, TinyVideoModule, clip_span


def _fit(module, dm, callbacks, max_epochs, **kw):
    kw.setdefault("enable_checkpointing", False)
    trainer = L.Trainer(max_epochs=max_epochs, callbacks=callbacks, accelerator="cpu", devices=1, logger=False,
                        enable_progress_bar=False, enable_model_summary=False, **kw)
    trainer.fit(module, datamodule=dm)
    return trainer


# ---------------------------------------------------------------------------------------------- arguments
@pytest.mark.parametrize("kwargs, match", [
    (dict(gamma_s=-1.0), "gamma_s must be a finite number >= 0"),
    (dict(gamma_s=float("nan")), "gamma_s must be a finite number >= 0"),
    (dict(warmup_epochs=-1), "warmup_epochs must be an int >= 0"),
    (dict(exploration_epochs=-2), "exploration_epochs must be an int >= 1"),
    (dict(exploration_epochs=0), "exploration_epochs must be an int >= 1"),
    (dict(exploration_epochs=2.5), "exploration_epochs must be an int >= 1"),
    (dict(scoring="noisy"), r"scoring must be one of \('clean', 'augmented'\)"),
    (dict(mode="oracle"), r"mode must be one of \('tss', 'prior', 'reinforce', 'uniform', 'bootstrap'\)"),
    (dict(clip_len=0), "clip_len must be an int >= 1"),
    (dict(track_videos=-3), "track_videos must be a count >= 0"),
    (dict(track_videos=[1, -2]), "video indices >= 0"),
    (dict(keep_history="some"), "keep_history must be one of"),
    (dict(mode="reinforce", reinforce_lr=0.0), "reinforce_lr must be a finite number > 0"),
    (dict(mode="reinforce", reinforce_baseline_momentum=1.0), r"reinforce_baseline_momentum must be in \[0, 1\)"),
    (dict(frame_scores=[[1.0]]), "frame_scores is only used by mode='prior'"),
])
def test_init_rejects_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        StochasticSoftmaxCallback(**kwargs)


def test_exploration_epochs_one_is_the_middle_slot():
    # E = 1 has no grid spacing: the sampling package defines its single slot as the middle position.
    cb = StochasticSoftmaxCallback(warmup_epochs=0, exploration_epochs=1)
    assert [cb.phase(e).value for e in (0, 1)] == ["exploration", "exploitation"]


def test_class_docstring_example_runs():
    finder = doctest.DocTestFinder()
    tests = finder.find(ss.StochasticSoftmaxCallback, "StochasticSoftmaxCallback", globs={})
    runner = doctest.DocTestRunner()
    for t in tests:
        runner.run(t)
    res = runner.summarize(verbose=False)
    assert res.attempted >= 4 and res.failed == 0


def test_phases_per_mode():
    cb = StochasticSoftmaxCallback(warmup_epochs=2, exploration_epochs=3)
    assert [ss.PHASE_CODES[cb.phase(e)] for e in range(7)] == [0, 0, 1, 1, 1, 2, 2]
    assert [cb.records_scores(e) for e in range(6)] == [False, False, True, True, True, True]
    rf = StochasticSoftmaxCallback(mode="reinforce", warmup_epochs=2)
    assert [rf.records_scores(e) for e in range(4)] == [False, False, True, True]
    for mode in ("prior", "uniform"):
        assert not any(StochasticSoftmaxCallback(mode=mode).records_scores(e) for e in range(10))


# ------------------------------------------------------------------------------------------- clean scoring
class ModeRecordingModule(TinyVideoModule):
    """Dropout + BatchNorm, a submodule frozen in eval mode by the user, and a log of every call."""

    def __init__(self):
        super().__init__(dropout=0.5, batchnorm=True, record=True)
        self.frozen = nn.BatchNorm3d(3)
        self.frozen.eval()  # the user keeps it in eval mode during training: must stay so

    def forward(self, x):
        return super().forward(self.frozen(x))


def test_clean_scoring_runs_in_eval_no_grad_before_training_forward_and_restores_modes():
    module = ModeRecordingModule()
    cb = StochasticSoftmaxCallback(warmup_epochs=1, exploration_epochs=2, track_videos=0)
    dm = TinyDataModule(num_videos=8, batch_size=3)
    _fit(module, dm, [cb], max_epochs=4)
    steps_per_epoch = math.ceil(8 / 3)
    calls = module.calls
    train_calls = [c for c in calls if c[0] == "train"]
    score_calls = [c for c in calls if c[0] == "score"]
    assert len(train_calls) == 4 * steps_per_epoch
    # nothing is scored in the warm-up epoch, every step afterwards is scored exactly once
    assert len(score_calls) == 3 * steps_per_epoch
    assert all(c[4] >= steps_per_epoch for c in score_calls)
    for i, c in enumerate(calls):
        what, modes, grad, n, step = c
        if what == "score":
            assert not grad, "clean scoring must run under torch.no_grad()"
            assert not any(modes.values()), f"not every submodule in eval mode while scoring: {modes}"
            nxt = calls[i + 1]  # the training forward of the same step comes right after
            assert nxt[0] == "train" and nxt[4] == step and nxt[3] == n
        else:
            assert grad
            assert modes["frozen"] is False, "a submodule frozen by the user was switched to train mode"
            assert all(v for k, v in modes.items() if k != "frozen"), f"train mode not restored: {modes}"
    # the model still trains in train mode (the frozen BN stays frozen) after fit
    assert module.training and module.drop.training and not module.frozen.training


class DoubledScores(TinyVideoModule):
    """A subclass with its own clip scoring (e.g. a different head at scoring time)."""

    def score_clips(self, clips):
        self._note("score", clips.shape[0])
        return 2.0 * self(clips) + 1.0


def _expected_target_logit(fn, dm, vid, start):
    ds = dm.dataset
    clips = torch.stack([ds[(int(v), int(t))]["clean"] for v, t in zip(vid, start)])
    labels = ds.labels[vid]
    with torch.no_grad():
        return fn(clips).gather(1, labels.view(-1, 1)).squeeze(1)


def test_subclass_score_clips_is_used_and_recorded():
    module = DoubledScores(lr=0.0)  # lr 0: weights fixed, so the scores can be recomputed after fit
    cb = StochasticSoftmaxCallback(warmup_epochs=0, exploration_epochs=2)
    dm = TinyDataModule(num_videos=9, batch_size=4)
    _fit(module, dm, [cb], max_epochs=1)
    rec = cb.last_records
    assert sorted(rec["video_idx"].tolist()) == list(range(9))
    expected = _expected_target_logit(module.score_clips, dm, rec["video_idx"], rec["start"])
    torch.testing.assert_close(rec["score"], expected, rtol=1e-5, atol=1e-6)
    plain = _expected_target_logit(module.forward, dm, rec["video_idx"], rec["start"])
    assert not torch.allclose(rec["score"], plain)  # the override, not forward, was used
    # exploration hard fill wrote each score over [t - r, t + r] of its video
    radius = cb.policy.radius
    for v, t, f in zip(rec["video_idx"].tolist(), rec["start"].tolist(), rec["score"]):
        n = int(dm.num_positions[v])
        lo, hi = max(0, t - int(radius[v])), min(n - 1, t + int(radius[v]))
        row = cb.policy.table[v]
        assert torch.all(row[lo:hi + 1] == f)
        assert torch.all(row[:lo] == 0) and torch.all(row[hi + 1:] == 0)


class NoScoreClips(L.LightningModule):
    """A LightningModule that does not define score_clips: the callback falls back to forward."""

    def __init__(self):
        super().__init__()
        self.net = TinyVideoModule()
        self.forward_calls = []

    def forward(self, x):
        self.forward_calls.append((self.training, torch.is_grad_enabled()))
        return self.net(x)

    def training_step(self, batch, batch_idx):
        return nn.functional.cross_entropy(self(batch["clip"]), batch["label"])

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.0)


def test_fallback_to_forward_without_score_clips():
    module = NoScoreClips()
    cb = StochasticSoftmaxCallback(warmup_epochs=0, exploration_epochs=2)
    dm = TinyDataModule(num_videos=6, batch_size=3)
    _fit(module, dm, [cb], max_epochs=1)
    assert module.forward_calls == [(False, False), (True, True)] * 2
    rec = cb.last_records
    expected = _expected_target_logit(module.net, dm, rec["video_idx"], rec["start"])
    torch.testing.assert_close(rec["score"], expected, rtol=1e-5, atol=1e-6)


def test_augmented_scoring_reuses_training_logits():
    module = TinyVideoModule(record=True)
    cb = StochasticSoftmaxCallback(warmup_epochs=1, exploration_epochs=2, scoring="augmented")
    dm = TinyDataModule(num_videos=8, batch_size=3, clean=False)  # no clean copy needed
    _fit(module, dm, [cb], max_epochs=2)
    assert not any(c[0] == "score" for c in module.calls)
    # the last epoch's training logits (3 steps) at the target label
    last = module.train_logits[-3:]
    vid = torch.cat([x[0] for x in last])
    target = torch.cat([x[3].gather(1, x[2].view(-1, 1)).squeeze(1) for x in last])
    rec = cb.last_records
    assert torch.equal(rec["video_idx"], vid)
    assert torch.equal(rec["score"], target)


def test_clean_scoring_without_clean_copy_fails_at_first_batch():
    cb = StochasticSoftmaxCallback(warmup_epochs=3, exploration_epochs=2)
    dm = TinyDataModule(num_videos=4, batch_size=2, clean=False)
    with pytest.raises(KeyError, match=r"batch\['clean'\].*scoring='augmented'"):
        _fit(TinyVideoModule(), dm, [cb], max_epochs=1)


def test_augmented_scoring_needs_logits_in_outputs():
    class LossOnly(TinyVideoModule):
        def training_step(self, batch, batch_idx):
            return super().training_step(batch, batch_idx)["loss"]

    cb = StochasticSoftmaxCallback(warmup_epochs=0, exploration_epochs=2, scoring="augmented")
    with pytest.raises(KeyError, match="'logits': logits.detach"):
        _fit(LossOnly(), TinyDataModule(num_videos=4, batch_size=2), [cb], max_epochs=1)


def test_missing_clip_sampler_is_a_clear_error():
    class NoSampler(L.LightningDataModule):
        def train_dataloader(self):
            x = torch.rand(4, 3, 4, 6, 6)
            return torch.utils.data.DataLoader(list(zip(x, torch.zeros(4, dtype=torch.long))), batch_size=2)

    with pytest.raises(RuntimeError, match="TemporalDataModule.*clip_sampler"):
        _fit(TinyVideoModule(), NoSampler(), [StochasticSoftmaxCallback()], max_epochs=1)


class NaNOnEvenSteps(TinyVideoModule):
    def score_clips(self, clips):
        logits = self(clips)
        if self.trainer.global_step % 2 == 0:
            logits = logits.clone()
            logits[:, :] = float("nan") if self.trainer.global_step % 4 == 0 else float("inf")
        return logits


def test_nonfinite_scores_are_counted_warned_and_never_written():
    module = NaNOnEvenSteps(record=True)
    cb = StochasticSoftmaxCallback(warmup_epochs=0, exploration_epochs=3)
    dm = TinyDataModule(num_videos=10, batch_size=3)  # steps of 3, 3, 3, 1 clips
    with pytest.warns(RuntimeWarning, match=r"epoch 0: 6 non-finite clip score\(s\)"):
        _fit(module, dm, [cb], max_epochs=1)
    bad_videos = torch.cat([x[0] for i, x in enumerate(module.train_logits) if i % 2 == 0])
    assert bad_videos.numel() == 6  # steps 0 and 2 of 3 clips each
    m = cb.metrics[-1]
    assert m["nonfinite"] == 6 and m["records"] == 4
    assert torch.isfinite(cb.policy.table.values).all()
    for v in bad_videos.tolist():  # their tables were never written
        assert torch.all(cb.policy.table[v] == 0)
    good = sorted(set(range(10)) - set(bad_videos.tolist()))
    assert all(bool((cb.policy.table[v] != 0).any()) for v in good)


# ------------------------------------------------------------------------------- history, metrics, logs
def _entropy(p):
    p = p.double()
    return float(-(p[p > 0] * p[p > 0].log()).sum())


def test_history_metrics_and_logs_against_direct_computation():
    W, E, epochs, V, gamma = 1, 3, 6, 10, 2.0
    cb = StochasticSoftmaxCallback(gamma_s=gamma, warmup_epochs=W, exploration_epochs=E, track_videos=V)
    dm = TinyDataModule(num_videos=V, batch_size=4, clip_len=3, stride=2)
    trainer = _fit(TinyVideoModule(), dm, [cb], max_epochs=epochs)
    h = cb.history
    span = clip_span(3, 2)
    assert cb.span == span == 5 and cb.policy.table.clip_len == span
    assert h.epochs.tolist() == list(range(epochs))
    assert h.phases.tolist() == [0, 1, 1, 1, 2, 2]
    assert h.starts.shape == (epochs, V) and h.starts.dtype == torch.int32
    n = dm.num_positions
    assert bool((h.starts >= 0).all()) and bool((h.starts < n.to(torch.int32)).all())
    # exploration: each video visits the E grid slots floor((N-1) k / (E-1)) once each, in its own order
    for v in range(V):
        N = int(n[v])
        grid = sorted((N - 1) * k // (E - 1) for k in range(E))
        assert sorted(h.starts[W:W + E, v].tolist()) == grid
    # snapshots: the table after each epoch's update; the distribution each epoch drew from
    assert h.tracked.tolist() == list(range(V))
    for v in range(V):
        N = int(n[v])
        s, p = h.scores[v], h.probabilities[v]
        assert s.shape == p.shape == (epochs, N)
        assert torch.equal(s[-1], cb.policy.table[v])
        assert torch.equal(s[0], torch.zeros(N))  # nothing written in warm-up
        torch.testing.assert_close(p[0], torch.full((N,), 1.0 / N))
        for e in range(W, W + E):  # one-hot at the drawn grid slot
            assert torch.equal(p[e], nn.functional.one_hot(h.starts[e, v].long(), N).float())
        for e in range(W + E, epochs):
            torch.testing.assert_close(p[e], torch.softmax(gamma * s[e - 1].double(), 0).float())
        assert torch.equal(h.starts_of(v), h.starts[:, v])
    # per-epoch numbers against element-by-element computations
    ev = dm.train_manifest.events
    for e, m in enumerate(cb.metrics):
        assert m["epoch"] == e and m["phase"] == h.phases[e]
        assert m["records"] == (0 if e < W else V)
        assert m["nonfinite"] == 0 and m["duplicates"] == 0
        hits = [int(h.starts[e, v]) < int(ev[v, 1]) and int(h.starts[e, v]) + span > int(ev[v, 0]) for v in range(V)]
        assert m["hit_rate"] == pytest.approx(sum(hits) / V, abs=1e-12)
        ent = sum(_entropy(h.probabilities[v][e]) for v in range(V)) / V
        assert m["entropy"] == pytest.approx(ent, rel=1e-5, abs=1e-6)
        score_ent = sum(_entropy(torch.softmax(gamma * h.scores[v][e].double(), 0)) for v in range(V)) / V
        assert m["score_entropy"] == pytest.approx(score_ent, rel=1e-5)
    assert cb.metrics[0]["entropy"] == pytest.approx(sum(math.log(int(x)) for x in n) / V, rel=1e-6)
    assert cb.metrics[-1]["entropy"] < cb.metrics[0]["entropy"]
    # logged through pl_module.log
    logged = trainer.callback_metrics
    for k in ("phase", "entropy", "score_entropy", "hit_rate", "records", "nonfinite", "duplicates"):
        assert float(logged[f"tss/{k}"]) == pytest.approx(cb.metrics[-1][k], rel=1e-6)


def test_keep_history_tracked_keeps_only_tracked_columns():
    cb = StochasticSoftmaxCallback(warmup_epochs=1, exploration_epochs=2, track_videos=2, keep_history="tracked",
                                   log_every_epoch=False)
    dm = TinyDataModule(num_videos=7, batch_size=4, events=False)
    _fit(TinyVideoModule(), dm, [cb], max_epochs=2)
    h = cb.history
    assert h.tracked.tolist() == [0, 6] and h.columns.tolist() == [0, 6]
    assert h.starts.shape == (2, 2)
    assert "hit_rate" not in cb.metrics[-1]  # no event windows in the manifest


def test_prior_mode_draws_from_frame_scores_without_scoring():
    module = TinyVideoModule(record=True)
    cb = StochasticSoftmaxCallback(mode="prior", gamma_s=50.0)
    dm = TinyDataModule(num_videos=12, batch_size=4, frame_scores=True)
    _fit(module, dm, [cb], max_epochs=3)
    assert not any(c[0] == "score" for c in module.calls)
    assert [m["phase"] for m in cb.metrics] == [2, 2, 2]
    # prior = mean frame score over the clip's span = fraction of the clip inside the event; with gamma 50 every
    # drawn clip overlaps its event window
    assert [m["hit_rate"] for m in cb.metrics] == [1.0, 1.0, 1.0]
    ev, span = dm.train_manifest.events, cb.span
    v = 3
    t = torch.arange(int(dm.num_positions[v]))
    inside = (torch.minimum(t + span, ev[v, 1]) - torch.maximum(t, ev[v, 0])).clamp(min=0).float() / span
    torch.testing.assert_close(cb.policy.table[v], inside)


def _hit_rates(starts, events, span):
    """Per epoch, the fraction of trained clips [t, t + span) that overlap their video's event window."""
    rates = []
    for row in starts.tolist():
        hits = [t < int(events[v, 1]) and t + span > int(events[v, 0]) for v, t in enumerate(row) if t >= 0]
        rates.append(sum(hits) / len(hits))
    return rates


def test_uniform_mode_hit_rate_is_lower_than_prior():
    """On the same videos, uniform sampling (nothing learned, nothing scored) hits the event windows less often
    than prior-guided sampling at a high temperature, whose prior is 1 inside the window and 0 outside."""
    rates = {}
    for mode in ("uniform", "prior"):
        module = TinyVideoModule(record=True)
        cb = StochasticSoftmaxCallback(mode=mode, gamma_s=50.0)
        dm = TinyDataModule(num_videos=12, batch_size=4, frame_scores=True)
        _fit(module, dm, [cb], max_epochs=3)
        assert not any(c[0] == "score" for c in module.calls) and all(m["records"] == 0 for m in cb.metrics)
        h = cb.history
        # the logged hit rate, recomputed from the starts the history kept and the manifest's event windows
        want = _hit_rates(h.starts, dm.train_manifest.events, cb.span)
        assert [m["hit_rate"] for m in cb.metrics] == pytest.approx(want, abs=1e-12)
        rates[mode] = (sum(want) / len(want), h)
    assert [m for m in rates["uniform"][1].phases.tolist()] == [0, 0, 0]      # every epoch is warm-up
    assert [m for m in rates["prior"][1].phases.tolist()] == [2, 2, 2]        # every epoch is exploitation
    assert rates["prior"][0] == 1.0
    assert rates["uniform"][0] < 0.9
    # uniform starts do not follow the prior: some clips miss the window, and the starts vary between epochs
    assert not torch.equal(rates["uniform"][1].starts[0], rates["uniform"][1].starts[1])


def test_reinforce_mode_updates_logits_after_warmup():
    """The logits theta after fit equal REINFORCE applied element by element, from zero, to the clips of the
    epochs after warm-up, each scored independently here as the target logit of its clean clip."""
    W, lr, m = 1, 5.0, 0.7  # m != 0.5: a swap of m and 1 - m must show
    module = TinyVideoModule(lr=0.0)  # weights fixed: the clip scores can be recomputed after fit
    cb = StochasticSoftmaxCallback(mode="reinforce", warmup_epochs=W, reinforce_lr=lr, reinforce_baseline_momentum=m)
    dm = TinyDataModule(num_videos=6, batch_size=3)
    _fit(module, dm, [cb], max_epochs=4)
    assert [cb.phase(e) for e in range(4)] == [Phase.WARMUP] + [Phase.EXPLOITATION] * 3
    assert [x["records"] for x in cb.metrics] == [0, 6, 6, 6]
    n = dm.num_positions.tolist()
    theta = [[0.0] * k for k in n]
    base, seen = [0.0] * len(n), [False] * len(n)
    starts = cb.history.starts
    for epoch in range(W, 4):  # each video once per epoch: its update does not depend on the order of videos
        vid = torch.arange(len(n))
        f = _expected_target_logit(module, dm, vid, starts[epoch].long()).tolist()
        for v in range(len(n)):
            t = int(starts[epoch, v])
            b = base[v] if seen[v] else f[v]
            reward = f[v] - b
            base[v], seen[v] = (m * b + (1 - m) * f[v]) if seen[v] else f[v], True
            z = [math.exp(x) for x in theta[v]]
            theta[v] = [th + lr * reward * ((j == t) - z[j] / sum(z)) for j, th in enumerate(theta[v])]
    for v in range(len(n)):
        torch.testing.assert_close(cb.policy.table[v], torch.tensor(theta[v]), atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(cb.policy.baseline, torch.tensor(base), atol=1e-5, rtol=1e-5)
    assert max(abs(x) for row in theta for x in row) > 0.05  # the reference moved: a zero table would fail


# ------------------------------------------------------------------------------------------------- state
def _setup_only(cb, dm):
    dm.setup("fit")
    trainer = types.SimpleNamespace(datamodule=dm)
    cb.setup(trainer, None, "fit")
    return dm


def test_state_loaded_before_setup_is_applied_when_the_policy_is_built():
    a = StochasticSoftmaxCallback(warmup_epochs=1, exploration_epochs=2, track_videos=2)
    dm = TinyDataModule(num_videos=8, batch_size=4)
    _fit(TinyVideoModule(), dm, [a], max_epochs=4)
    state = a.state_dict()
    b = StochasticSoftmaxCallback(warmup_epochs=1, exploration_epochs=2, track_videos=2)
    b.load_state_dict(state)  # no policy yet: stashed
    assert b.policy is None and b.state_dict()["policy"] is state["policy"]
    dm2 = _setup_only(b, TinyDataModule(num_videos=8, batch_size=4))
    assert dm2.clip_sampler.policy is b.policy
    assert torch.equal(b.policy.table.values, a.policy.table.values)
    assert bool((b.policy.table.values != 0).any())
    assert torch.equal(b.policy.slot_orders, a.policy.slot_orders)
    assert torch.equal(b.history.starts, a.history.starts)
    assert b.metrics == a.metrics
    # and the installed policy draws the same next plan as the trained one
    dm.clip_sampler.set_epoch(4)
    dm2.clip_sampler.set_epoch(4)
    assert torch.equal(torch.stack(dm.clip_sampler.epoch_plan()), torch.stack(dm2.clip_sampler.epoch_plan()))


def test_load_state_rejects_other_mode_or_other_videos():
    a = StochasticSoftmaxCallback(warmup_epochs=0, exploration_epochs=2)
    _setup_only(a, TinyDataModule(num_videos=5))
    state = a.state_dict()
    with pytest.raises(ValueError, match="mode='tss'.*resume with the same mode"):
        StochasticSoftmaxCallback(mode="uniform").load_state_dict(state)
    c = StochasticSoftmaxCallback(warmup_epochs=0, exploration_epochs=2)
    c.load_state_dict(state)
    with pytest.raises(ValueError, match="another training manifest: it had 5 videos, this one has 6"):
        _setup_only(c, TinyDataModule(num_videos=6))


# ---------------------------------------------------------------------- gather order and DDP duplicates
class FakeTwoRankStrategy:
    """Stands in for rank 0 of a 2-process strategy: all_gather stacks our tensor with rank 1's.

    ``groups`` holds rank 1's tensors of each ``gather_records`` call, in order; each call makes one all_gather
    of the sizes, then one per field (padded to the longest rank, as the real collective requires).
    """

    world_size = 2
    root_device = torch.device("cpu")

    def __init__(self, *groups):
        self.queue = []
        for fields in groups:
            self.queue.append(torch.tensor([fields[0].shape[0]]))
            self.queue.extend(fields)

    def all_gather(self, t):
        o = self.queue.pop(0)
        other = torch.zeros_like(t)
        other[:o.shape[0]] = o
        return torch.stack([t, other])


def test_gather_records_returns_global_plan_order():
    r0 = [torch.tensor([10, 12, 14]), torch.tensor([0.0, 2.0, 4.0])]
    r1 = [torch.tensor([11, 13]), torch.tensor([1.0, 3.0])]
    (vid, score), rank, ordinal = gather_records(FakeTwoRankStrategy(r1), r0)
    assert vid.tolist() == [10, 11, 12, 13, 14]  # plan[r::2] dealt back in plan order
    assert score.tolist() == [0.0, 1.0, 2.0, 3.0, 4.0]
    assert rank.tolist() == [0, 1, 0, 1, 0] and ordinal.tolist() == [0, 0, 1, 1, 2]
    # one process: unchanged
    (v1,), rk, od = gather_records(types.SimpleNamespace(world_size=1), [torch.tensor([3, 1])])
    assert v1.tolist() == [3, 1] and rk.tolist() == [0, 0] and od.tolist() == [0, 1]


def test_epoch_end_applies_padding_duplicates_in_global_plan_order():
    # 5 videos on 2 ranks: the plan is padded with its first video, which both ranks score in one epoch.
    cb = StochasticSoftmaxCallback(warmup_epochs=0, exploration_epochs=2, log_every_epoch=False)
    dm = _setup_only(cb, TinyDataModule(num_videos=5))
    span, n = cb.span, dm.num_positions
    epoch = 2  # exploitation: Eq. S.2, where the order of repeated records matters
    plan_v = torch.tensor([3, 0, 4, 1, 2, 3])  # plan index 0..5; index 5 is the padding copy of video 3
    plan_t = torch.tensor([1, 0, 2, 1, 0, 1])
    plan_f = torch.tensor([5.0, -1.0, 2.0, 0.5, 1.5, -7.0])
    # rank 0 holds plan[0::2] (its ordinals 0, 1, 2), rank 1 plan[1::2]
    cb._records.scored = [(plan_v[0::2], plan_t[0::2], plan_f[0::2], torch.arange(3))]
    cb._records.seen = [(plan_v[0::2], plan_t[0::2])]
    strategy = FakeTwoRankStrategy([plan_v[1::2], plan_t[1::2]],  # seen
                                   [plan_v[1::2], plan_t[1::2], plan_f[1::2], torch.arange(3),  # scored
                                    torch.full((3,), -1), torch.full((3,), float("nan"))])  # no logits kept
    trainer = types.SimpleNamespace(current_epoch=epoch, world_size=2, strategy=strategy)
    cb.on_train_epoch_end(trainer, None)
    assert not strategy.queue  # every expected collective was made
    assert cb.last_records["video_idx"].tolist() == plan_v.tolist()
    assert cb.metrics[-1]["duplicates"] == 1 and cb.metrics[-1]["records"] == 6
    # reference: the same policy fed the plan's records in plan order, and Eq. S.2 element by element
    ref = StochasticSoftmaxPolicy(n, span, 1.0, PhaseSchedule(0, 2), 0)
    ref.update(epoch, plan_v, plan_t, plan_f)
    assert torch.equal(cb.policy.table.values, ref.table.values)
    w = torch.zeros(int(n[3]))
    for f in (5.0, -7.0):  # video 3: its original record first, then the padding copy
        for i in range(-(span - 1), span):
            if 0 <= 1 + i < w.numel():
                w[1 + i] = w[1 + i] + (span - abs(i)) / span * (f - w[1 + i])
    torch.testing.assert_close(cb.policy.table[3], w)
    assert cb.history.starts[-1].tolist() == [0, 1, 0, 1, 2]


def test_sampler_found_on_the_train_dataloader_without_datamodule():
    from tests.tiny_lightning import collate_tiny

    dm = TinyDataModule(num_videos=6, batch_size=3)
    dm.setup("fit")
    loader = torch.utils.data.DataLoader(dm.dataset, batch_size=3, sampler=dm.clip_sampler, collate_fn=collate_tiny)
    cb = StochasticSoftmaxCallback(warmup_epochs=0, exploration_epochs=2, clip_len=dm.clip_len)
    trainer = L.Trainer(max_epochs=1, callbacks=[cb], accelerator="cpu", devices=1, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(TinyVideoModule(), train_dataloaders=loader)
    assert dm.clip_sampler.policy is cb.policy
    assert cb.metrics[-1]["records"] == 6 and "hit_rate" not in cb.metrics[-1]  # no manifest: no event windows


def test_mid_epoch_checkpoint_with_a_loader_that_forgets_its_position_warns(tmp_path):
    from lightning.pytorch.callbacks import ModelCheckpoint

    cb = StochasticSoftmaxCallback(warmup_epochs=0, exploration_epochs=2)
    ckpt = ModelCheckpoint(dirpath=tmp_path, every_n_train_steps=1, save_top_k=-1)
    with pytest.warns(RuntimeWarning, match="middle of training epoch 0 but the train loader \\(DataLoader\\) does "
                                            "not save its position"):
        _fit(TinyVideoModule(), TinyDataModule(num_videos=6, batch_size=3, resumable=False), [cb, ckpt],
             max_epochs=1, enable_checkpointing=True)
    with warnings.catch_warnings():  # a ClipLoader saves its position: nothing to warn about
        warnings.simplefilter("error", RuntimeWarning)
        _fit(TinyVideoModule(), TinyDataModule(num_videos=6, batch_size=3), [
            StochasticSoftmaxCallback(warmup_epochs=0, exploration_epochs=2),
            ModelCheckpoint(dirpath=tmp_path / "b", every_n_train_steps=1, save_top_k=-1)], max_epochs=1,
             enable_checkpointing=True)


def test_prior_mode_without_frame_scores_is_a_clear_error():
    cb = StochasticSoftmaxCallback(mode="prior")
    with pytest.raises(ValueError, match="12 training video\\(s\\) have no frame scores \\(first: video 0\\)"):
        _setup_only(cb, TinyDataModule(num_videos=12, frame_scores=False))
    # frame scores given directly must match the videos' frame counts
    dm = TinyDataModule(num_videos=3)
    bad = [torch.zeros(int(n) + 1) for n in dm.train_manifest.num_frames]
    with pytest.raises(ValueError, match="do not match the videos' frame counts"):
        _setup_only(StochasticSoftmaxCallback(mode="prior", frame_scores=bad), dm)


def test_sampler_not_sharded_for_the_trainer_is_a_clear_error():
    class WrongShards(TinyDataModule):
        def setup(self, stage):
            super().setup(stage)
            self.clip_sampler.num_replicas, self.clip_sampler.rank = 2, 1  # as if for another world size

    with pytest.raises(RuntimeError, match="num_replicas=2, rank=1 but the trainer runs world_size=1"):
        _fit(TinyVideoModule(), WrongShards(num_videos=4), [StochasticSoftmaxCallback()], max_epochs=1)
