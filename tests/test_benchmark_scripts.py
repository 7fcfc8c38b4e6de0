"""The timing benchmarks run end to end at tiny sizes, and their built-in correctness checks hold (no timing is
asserted): the sampler benchmark's minimal implementations compute the package's math, the GPU script's every
part runs on CPU (``--smoke``), the evaluation and clean-scoring benchmarks print their tables."""
from __future__ import annotations

import argparse
import re

import pytest

from tests.bench import load_benchmark


pytestmark = pytest.mark.usefixtures("one_thread")


def _table_rows(out: str, first_cell: str) -> list:
    return [line for line in out.splitlines() if line.startswith(f"| {first_cell}")]


def test_sampler_minimal_implementations_compute_the_package_math():
    sampler = load_benchmark("sampler")
    rows = sampler.sampler_part1(videos=300, frames=40, clip_len=8, rounds=3)
    checked = {(r["policy"], r["phase"]): r["check"] for r in rows if r["check"]}
    assert set(checked) == {("uniform", "-"), ("stochastic softmax", "exploration (hard fill)"),
                            ("stochastic softmax", "exploitation (Eq. S.2)")}
    for key, check in checked.items():
        # the same draws from the same generator (float64 prefix sums may differ by ties only)
        agree = float(re.search(r"plans agree on ([0-9.]+)%", check).group(1))
        assert agree >= 99.0, (key, check)
        if key[0] == "stochastic softmax":
            assert "tables after one update equal" in check, (key, check)
    for r in rows:
        assert set(r["plan"]) >= {"package"} and all(v >= 0 for v in r["plan"]["package"])
        assert ("minimal" in r["plan"]) == (r["policy"] in ("uniform", "stochastic softmax"))


def test_gpu_script_smoke_runs_every_part(capsys):
    gpu = load_benchmark("gpu")
    assert gpu._model("r3d18_a1", True).backbone.temporal is not None  # the SGS rows really have SGS
    assert gpu._model("x3d_s", False).backbone.temporal is None
    gpu.main(["--smoke", "--skip-ddp"])
    # the DDP part's code on one process (the script's --smoke runs it on 2 gloo processes)
    gpu.ddp_run(gpu._settings(argparse.Namespace(smoke=True)), smoke=True, devices=1)
    out = capsys.readouterr().out
    rows = _table_rows(out, "r3d18_a1") + _table_rows(out, "x3d_s")
    assert [r.split("|")[2].strip() for r in rows] == ["no", "yes", "no", "yes"]
    assert all(float(r.split("|")[4]) > 0 for r in rows)  # clips/s
    assert len(_table_rows(out, "cpu")) == len(_table_rows(out, "wall")) == 1  # TSS overhead and its bound
    assert re.search(r"load average [0-9.]+", out)
    epochs = [line.split("|")[2].strip() for line in out.splitlines() if re.match(r"\| \d \|", line)]
    assert epochs == ["warmup", "exploration", "exploration", "exploitation"]
    assert "score tables identical on all 1 ranks: True" in out and "72 of 72 positions written" in out


def test_clean_scoring_benchmark_times_both_variants_in_the_same_rounds():
    clean = load_benchmark("clean_scoring")
    rows = clean.clean_scoring_overhead(videos=8, batch=4, frames=8, size=8, rounds=3)
    assert [r["setting"] for r in rows] == ["batch by batch, same rounds, CPU", "batch by batch, same rounds, wall"]
    for r in rows:
        assert r["tss_s"] > r["scoring_s"] > 0 and r["uniform_s"] > 0
    # ratio and bound are medians of per-round values of the same rounds (CPU, wall), here on made-up rounds
    parts = load_benchmark("measure").Parts()
    parts.rounds = [{"uniform": (1.0, 2.0), "tss": (1.5, 2.2), "scoring": (0.4, 0.1)},
                    {"uniform": (2.0, 1.0), "tss": (2.2, 1.9), "scoring": (0.6, 0.8)},
                    {"uniform": (1.0, 1.0), "tss": (1.1, 1.2), "scoring": (0.2, 0.1)}]
    cpu, wall = clean._rows(parts, "uniform", "tss", "scoring", "made up")
    assert (cpu["ratio"], cpu["bound"], cpu["uniform_s"], *cpu["ratio_range"]) == pytest.approx((1.1, 1.3, 1.0, 1.1, 1.5))
    assert (wall["ratio"], wall["bound"], wall["rest"]) == pytest.approx((1.2, 1.1, 1.1))


def test_evaluation_benchmark_prints_both_modes(tmp_path, capsys):
    evaluation = load_benchmark("evaluation")
    evaluation.main(["--videos", "2", "--frames", "40", "--size", "32", "--crop", "24", "--clip-len", "8",
                     "--rounds", "3", "--workers", "1", "--root", str(tmp_path)])
    out = capsys.readouterr().out
    assert len(_table_rows(out, "decode")) == len(_table_rows(out, "model")) == 1
    e2e = _table_rows(out, "(a)") + _table_rows(out, "(b)")
    assert len(e2e) == 2 and all("dense >= 4x" in r for r in e2e)


def test_tss_bootstrap_report_counts_the_extra_clean_scoring(tmp_path, capsys):
    """The report's compute column: 3 forward-equivalents per trained clip + 1 per clean-scored clip, per video."""
    import json

    tb = load_benchmark("tss_bootstrap")
    runs = []
    for method, scored in (("uniform", [0, 0, 0]), ("tss", [0, 4, 4]), ("bootstrap", [12, 12, 12])):
        runs.append({"key": method, "variant": "default", "seed": 0, "method": method, "epochs": 3,
                     "config": {"data": {"num_train": 4}, "max_epochs": 3,
                                "policy_args": {"normalise": True} if method == "bootstrap" else {}}, "test": {"gp1": {"top1": 0.5}},
                     "hit_rate_per_epoch": [0.3, 0.6 if method == "bootstrap" else 0.4, 0.7],
                     "phase_per_epoch": [0, 0, 2], "scored_per_epoch": scored, "hit_rate": 0.7})
    cache = tmp_path / "runs.jsonl"
    cache.write_text("".join(json.dumps(r) + "\n" for r in runs))
    tb.main(["--report", "--cache", str(cache), "--out", str(tmp_path / "out")])
    rows = {r["method"]: r for r in json.loads((tmp_path / "out.json").read_text())["rows"]}
    assert rows["uniform"]["forward_equivalents_per_video"] == [3, 6, 9]
    assert rows["tss"]["forward_equivalents_per_video"] == [3, 7, 11]
    assert rows["bootstrap"]["forward_equivalents_per_video"] == [6, 12, 18]
    assert rows["bootstrap"]["first_epoch_hit_above_0.5"] == 1 and rows["tss"]["first_epoch_hit_above_0.5"] == 2
    assert "| 3 | default | bootstrap | 1 |" in (tmp_path / "out.md").read_text()


def test_tss_bootstrap_first_run_of_epochs_above_a_level():
    tb = load_benchmark("tss_bootstrap")
    assert tb._first_run_above([0.6, 0.4, 0.6, 0.7, 0.8, 0.2]) == 2
    assert tb._first_run_above([0.6, 0.6, None, 0.7, 0.8]) is None


def test_dataloader_benchmark_quick_measures_every_cell(tmp_path):
    """``benchmarks/dataloader.py --quick`` end to end: one row per source x clip x worker count, the split and
    every loader delivered the same clips (the benchmark checks that every round), the CPU of a loader is this
    process's plus its workers', and the report and README block render from the results file."""
    bench = load_benchmark("dataloader")
    out, md = tmp_path / "d.json", tmp_path / "d.md"
    bench.main(["--quick", "--out", str(out), "--markdown", str(md)])
    res = bench.read_results(str(out))
    rows = bench.rows_of(res)
    assert sorted((r["source"], r["clip"], r["workers"]) for r in rows) == [
        ("240p", c, w) for c in ("112", "224") for w in (0, 2)]
    for r in rows:  # rounds = 1 in quick mode: each figure is that round's
        assert r["clips_per_s"] > 0 and r["decode_ms"] > 0 and r["transform_ms"] > 0 and r["collate_ms"] > 0
        assert r["cpu_ms_per_clip"] == pytest.approx(r["main_cpu_ms_per_clip"] + r["worker_cpu_ms_per_clip"])
        assert (r["worker_cpu_ms_per_clip"] > 0) == (r["workers"] > 0)
    assert res["sources"][0]["height"] == 240 and res["sources"][0]["frames"] == 65
    assert md.read_text() == bench.markdown(res)
    block = bench.readme_block(res)
    assert len([line for line in block.splitlines() if line.startswith("| 240p |")]) == 2
    assert "w=2: clips/s, CPU ms/clip" in block and "GOP 32" in block


def test_dataloader_benchmark_sources_have_the_stated_gop(tmp_path):
    """The generated sources are H.264 with a keyframe every ``gop`` frames and no other, and B-frames."""
    import av

    bench = load_benchmark("dataloader")
    path = bench.write_source(str(tmp_path / "s.mp4"), 240, 426, 70, 32)
    with av.open(path) as c:
        stream = c.streams.video[0]
        assert stream.codec_context.name == "h264" and (stream.height, stream.width) == (240, 426)
        packets = sorted((p.pts, p.is_keyframe, p.dts) for p in c.demux(stream) if p.pts is not None)
    assert len(packets) == 70
    assert [i for i, (_, key, _) in enumerate(packets) if key] == [0, 32, 64]
    assert any(dts != pts for pts, _, dts in packets)  # reordered frames: B-frames
