"""Tiny end-to-end run of the reproduction machinery (benchmarks/reproduce.py + benchmarks/runner.py)."""
import csv
import json
import math
import os

import pytest
import torch

from lightning_temporal import VideoClassifier, count_gmacs
from tests.bench import load_benchmark

runner = load_benchmark("runner")
run_experiment = runner.run_experiment


TINY_DATA = dict(size=16, num_train=8, num_val=4, num_test=4, min_frames=24, max_frames=32,
                 event_fraction=[0.2, 0.3])


def _train_rows(data):
    with open(os.path.join(data["root"], "train.csv")) as f:
        return list(csv.DictReader(f))


def _hits(starts, rows, span):
    """Per epoch, the fraction of trained clips [t, t + span) that overlap their video's event window."""
    rates = []
    for row in starts.tolist():
        hits = [t < int(r["event_end"]) and t + span > int(r["event_start"]) for t, r in zip(row, rows) if t >= 0]
        rates.append(sum(hits) / len(hits))
    return rates


def test_run_experiment_tss_end_to_end(tmp_path):
    """What the result says is recomputed here from the manifest and the model's architecture, not from the
    result itself: the exploration starts, each epoch's hit rate and their mean over exploitation, the GMACs."""
    data = dict(TINY_DATA, root=str(tmp_path / "data"))
    F = 8
    res = run_experiment({"method": "tss", "gamma_s": 1.0, "warmup_epochs": 1, "exploration_epochs": 1,
                          "max_epochs": 4, "clip_len": F, "crop_size": 16, "short_side": 16, "batch_size": 4,
                          "data": data, "gmacs_clips": 2, "backbone_kwargs": {"widths": [4, 4, 8, 8]},
                          "test_gamma_p": [0.0, 1e6]})
    assert res["epochs"] == 4
    assert res["phase_per_epoch"] == [0, 1, 2, 2]  # warm-up, exploration, exploitation
    rows = _train_rows(data)
    starts = torch.tensor(res["starts_per_epoch"])  # [E, V]
    # the exploration epoch (E = 1) trained every video on its middle grid slot (N - 1) // 2
    assert starts[1].tolist() == [(int(r["num_frames"]) - F + 1 - 1) // 2 for r in rows]
    rates = _hits(starts, rows, F)
    assert res["hit_rate_per_epoch"] == pytest.approx(rates, abs=1e-12)
    assert res["hit_rate"] == pytest.approx(sum(rates[2:]) / 2, abs=1e-12)  # the epochs >= W + E only
    assert sum(rates[2:]) / 2 != pytest.approx(sum(rates) / 4)  # (so that averaging the wrong epochs shows)
    # temperature keys as the module logs its metrics (test/gp1e06/top1)
    assert set(res["test"]) == {"gp0", "gp1e06"}
    for g in res["test"].values():
        assert set(g) == {"top1", "mean_class_acc"}
        # 4 test videos: an accuracy is a multiple of 1/4
        assert 0.0 <= g["top1"] <= 1.0 and g["top1"] * 4 == pytest.approx(round(g["top1"] * 4))
    # the GMACs of the network on one test clip (no SGS: every clip costs the same)
    model = VideoClassifier("simple3d", num_classes=4, backbone_kwargs={"widths": [4, 4, 8, 8]})
    assert res["gmacs"] == pytest.approx(count_gmacs(model.backbone, torch.zeros(1, 3, F, 16, 16)), rel=1e-9)
    json.dumps(res)  # serialisable (the cache and --out rely on it)


def test_hit_rate_matches_event_windows(tmp_path):
    """A uniform run's per-epoch hit rate equals the overlap fraction computed here from the sampled starts."""
    data = dict(TINY_DATA, root=str(tmp_path / "data"))
    res = run_experiment({"method": "uniform", "max_epochs": 2, "clip_len": 8, "crop_size": 16, "short_side": 16,
                          "batch_size": 4, "data": data, "gmacs_clips": 0, "track_videos": 0,
                          "backbone_kwargs": {"widths": [4, 4, 8, 8]}, "test_gamma_p": [1.0],
                          "warmup_epochs": 0, "exploration_epochs": 1})
    rates = _hits(torch.tensor(res["starts_per_epoch"]), _train_rows(data), 8)  # starts [E, V]
    assert res["hit_rate_per_epoch"] == pytest.approx(rates, abs=1e-12)


def test_unknown_config_key_is_named():
    with pytest.raises(ValueError, match="gama_s"):
        runner._merge({"gama_s": 1.0, "data": {"root": "x"}})
    with pytest.raises(ValueError, match="method"):
        runner._merge({"method": "oracle", "data": {"root": "x"}})


def test_reproduce_quick_writes_rows_and_tables(tmp_path, capsys):
    rep = load_benchmark("reproduce")
    rep.BASE.update(backbone_kwargs={"widths": [4, 4, 8, 8]}, crop_size=16, short_side=16, clip_len=8,
                    warmup_epochs=1, exploration_epochs=1, gmacs_clips=2)
    for d in rep.DATA.values():
        d.update(size=16, min_frames=24, max_frames=32, event_fraction=(0.2, 0.3))
    out = tmp_path / "quick.json"
    cache = tmp_path / "runs.jsonl"
    argv = ["--quick", "--out", str(out), "--data-root", str(tmp_path / "d"), "--cache", str(cache),
            "--max-epochs", "3", "--data-scale", "0.02"]
    rep.main(argv)
    printed = capsys.readouterr().out
    assert "| uniform |" in printed and "| tss g_s=1 |" in printed
    rows = json.load(open(out))["rows"]
    assert {r["method"] for r in rows} == {"uniform", "tss"}
    for r in rows:
        for key in ("method", "gamma_s", "gamma_p", "video_acc", "hit_rate", "epochs", "gmacs"):
            assert key in r
        assert 0.0 <= r["video_acc"] <= 1.0 and r["epochs"] == 3
    assert sorted({r["gamma_p"] for r in rows}) == [0.0, 1.0, 1e6]
    # a second call reuses the cached runs (no training: the cache holds both configs)
    n_lines = len(open(cache).read().splitlines())
    rep.main(argv)
    assert len(open(cache).read().splitlines()) == n_lines == 2


def test_mean_std_against_formula():
    rep = load_benchmark("reproduce")
    vals = [0.5, 0.75, 0.25]
    m = sum(vals) / 3
    sd = math.sqrt(sum((v - m) ** 2 for v in vals) / 2)
    assert rep.mean_std(vals, 100.0) == f"{100 * m:.1f} ± {100 * sd:.1f}"
    assert rep.mean_std([0.5], 100.0) == "50.0"
    assert rep.mean_std([None], 100.0) == "–"


def test_reproduce_sgs_tables_a3_a4(tmp_path, capsys):
    """A.3 trains one model per B (plus one without SGS); A.4 re-tests the B = 32 model with fewer bins."""
    rep = load_benchmark("reproduce")
    rep.BASE.update(backbone_kwargs={"widths": [4, 4, 8, 8]}, crop_size=16, short_side=16, gmacs_clips=2)
    for d in rep.DATA.values():
        d.update(size=16, min_frames=40, max_frames=48, event_fraction=(0.2, 0.3))
    out = tmp_path / "a.json"
    rep.main(["--tables", "A.3,A.4", "--seeds", "1", "--data-root", str(tmp_path / "d"), "--cache", "",
              "--max-epochs", "1", "--data-scale", "0.03", "--threads", "1", "--out", str(out)])
    printed = capsys.readouterr().out
    assert "Table A.3" in printed and "Table A.4" in printed
    rows = json.load(open(out))["rows"]
    a3 = {r["label"]: r for r in rows if r["table"] == "A.3"}
    a4 = {r["num_bins"]: r for r in rows if r["table"] == "A.4"}
    assert set(a3) == {"no SGS", "SGS B=4", "SGS B=8", "SGS B=16", "SGS B=32"}
    assert set(a4) == {4, 8, 16}
    assert all(r["clip_len"] == rep.SGS_CLIP_LEN for r in rows)
    for r in rows:
        assert 0.0 <= r["video_acc"] <= 1.0 and r["gmacs"] > 0
    # SGS keeps at most B temporal feature maps after res2, so no SGS model costs more than the plain CNN
    assert all(r["gmacs"] <= a3["no SGS"]["gmacs"] + 1e-9 for r in rows)


def test_run_experiment_records_learning_curves(tmp_path):
    data = dict(TINY_DATA, root=str(tmp_path / "data"))
    res = run_experiment({"method": "uniform", "max_epochs": 2, "clip_len": 8, "crop_size": 16, "short_side": 16,
                          "batch_size": 4, "data": data, "gmacs_clips": 0, "test_gamma_p": [1.0],
                          "backbone_kwargs": {"widths": [4, 4, 8, 8]}, "early_stopping": True, "val_every": 1,
                          "patience": 5})
    assert [c["epoch"] for c in res["train_curve"]] == [0, 1]
    assert [c["epoch"] for c in res["val_curve"]] == [0, 1]
    for c in res["train_curve"]:
        assert c["train/loss_epoch"] > 0 and 0.0 <= c["train/top1"] <= 1.0
    assert all(0.0 <= c["val/top1"] <= 1.0 for c in res["val_curve"])


def test_epochs_to_val_target_reads_the_first_crossing():
    rep = load_benchmark("reproduce")
    curve = [{"epoch": 1, "val/top1": 0.5}, {"epoch": 3, "val/top1": 0.8}, {"epoch": 5, "val/top1": 0.7},
             {"epoch": 7, "val/top1": 0.9}]
    assert rep.epochs_to_target({"val_curve": curve}, 0.75) == 4  # validated after epoch index 3 = 4 epochs
    assert rep.epochs_to_target({"val_curve": curve}, 0.95) is None
    assert rep.epochs_to_target({}, 0.5) is None  # runs cached before curves were recorded
