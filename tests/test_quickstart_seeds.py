"""benchmarks/quickstart_seeds.py: its uniform-sampling hit rate against a count over every start, its reading
of a run's metrics.csv, and a smoke run (--small, one seed) through the real CLI."""
import csv
import os

import pytest

from tests.bench import load_benchmark


def test_uniform_hit_rate_counts_the_overlapping_starts(tmp_path):
    qs = load_benchmark("quickstart_seeds")
    rows = [(40, 10, 15), (20, 0, 3), (16, 12, 16), (64, 60, 64), (8, 2, 4)]  # frames, event start, end
    path = tmp_path / "m.csv"
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "label", "num_frames", "event_start", "event_end"])
        w.writerows([f"v{i}.mp4", "a", *r] for i, r in enumerate(rows))
    span = 8
    want = []
    for frames, es, ee in rows:
        starts = range(max(1, frames - span + 1))
        want.append(sum(1 for t in starts if t < ee and t + span > es) / len(starts))
    assert qs.uniform_hit_rate(str(path), span) == pytest.approx(sum(want) / len(want))


def test_reads_the_last_validation_test_and_hit_rates(tmp_path):
    qs = load_benchmark("quickstart_seeds")
    path = tmp_path / "metrics.csv"
    keys = ["epoch", "val/top1", "val/gp0/top1", "tss/hit_rate", "test/top1", "test/gp1e06/top1"]
    rows = [[0, "", "", 0.3, "", ""], [1, 0.5, 0.25, 0.4, "", ""], [2, "", "", 0.6, "", ""],
            [3, 0.75, 0.5, 0.8, "", ""], ["", "", "", "", 0.7, 0.65]]
    with open(path, "w", newline="") as f:
        csv.writer(f).writerows([keys] + rows)
    got = qs.read_run(str(path))
    assert got["val γ_p=1"] == 0.75 and got["val γ_p=0"] == 0.5 and got["val γ_p=1e6"] is None
    assert got["test γ_p=1"] == 0.7 and got["test γ_p=1e6"] == 0.65
    assert got["hit rate, last epoch"] == 0.8 and got["hit rate, last 5 epochs"] == pytest.approx(0.525)


def test_small_smoke_run_prints_the_table(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("sys.argv", ["quickstart_seeds.py"])
    qs = load_benchmark("quickstart_seeds")
    (result,) = qs.main(["--seeds", "1", "--small", "--out", str(tmp_path / "runs")])
    out = capsys.readouterr().out
    assert "| figure | range over runs | seed 0 | goal |" in out and "load average" in out
    assert result["figures"]["test γ_p=1"] is not None and result["figures"]["hit rate, last epoch"] is not None
    assert os.path.isfile(os.path.join(result["log_dir"], "metrics.csv"))
