"""The evaluation and sampler benchmarks write their results files (tiny sizes here; no timing is asserted), and
the README's figures from them are the committed results files (``benchmarks/results/evaluation.json``,
``benchmarks/results/sampler.json``)."""
from __future__ import annotations

import json
import os
import re

import pytest

from tests.bench import load_benchmark

pytestmark = pytest.mark.usefixtures("one_thread")

ROOT = os.path.join(os.path.dirname(__file__), "..")
RESULTS = os.path.join(ROOT, "benchmarks", "results")


def _readme() -> str:
    with open(os.path.join(ROOT, "README.md")) as f:
        return " ".join(f.read().split())  # one line: a figure may sit across a line break


def test_evaluation_benchmark_writes_its_profile_and_goal(tmp_path, capsys):
    out = tmp_path / "evaluation"
    result = load_benchmark("evaluation").main(
        ["--videos", "2", "--frames", "40", "--size", "32", "--crop", "24", "--clip-len", "8", "--rounds", "1",
         "--workers", "1", "--root", str(tmp_path / "videos"), "--out", str(out)])
    assert json.loads((tmp_path / "evaluation.json").read_text())["end_to_end"] == result["end_to_end"]
    md = (tmp_path / "evaluation.md").read_text()
    assert "Table 2: end to end" in md and "Table 3: the dense model part profiled" in md
    for path in ("in_process", "workers"):
        e = result["end_to_end"][path]
        ratio = e["clips_s_per_video"]["cpu"] / e["dense_s_per_video"]["cpu"]
        assert e["speedup_cpu"]["median"] == pytest.approx(ratio)  # one round: the median is that round's ratio
    prof = result["dense_profile"]
    assert sum(prof["ms_per_video"].values()) == pytest.approx(prof["total_ms_per_video"])
    assert prof["ms_per_video"]["convolution"] > 0 and prof["conv_gmacs_per_video"] > 0
    goal, parts = result["goal"], {k: v["cpu"] for k, v in result["parts_ms_per_video"].items()}
    clips_ms = parts["decode"] + parts["transform"] + parts["model clips"] + parts["pool clips"]
    assert goal["dense_budget_ms"] == pytest.approx(clips_ms / 4)
    assert goal["model_budget_ms"] == pytest.approx(goal["dense_budget_ms"] - goal["decode_transform_ms"])
    conv = parts["model dense"] * prof["ms_per_video"]["convolution"] / prof["total_ms_per_video"]
    assert goal["bound_conv_only"] == pytest.approx(
        clips_ms / (parts["decode"] + parts["transform"] + conv + parts["pool dense"]))

def test_sampler_benchmark_writes_the_rows_it_was_asked_for(tmp_path, capsys):
    sampler = load_benchmark("sampler")
    rows = sampler.main(["--videos", "300", "--frames", "40", "--clip-len", "8", "--rounds", "3",
                         "--skip-training", "--policies", "uniform,tss", "--out", str(tmp_path / "sampler")])
    saved = json.loads((tmp_path / "sampler.json").read_text())
    assert [(r["policy"], r["phase"]) for r in saved["rows"]] == [(r["policy"], r["phase"]) for r in rows] == [
        ("uniform", "-"), ("stochastic softmax", "exploration (hard fill)"),
        ("stochastic softmax", "exploitation (Eq. S.2)")]
    assert all("plans agree on 100.0000%" in r["check"] for r in rows)  # same generator, same draws
    md = (tmp_path / "sampler.md").read_text()
    assert md.count("| stochastic softmax |") == 2 and "load average" in md
    with pytest.raises(ValueError, match=r"policies \['tsss'\] are not rows of part 1"):
        sampler.sampler_part1(30, 40, 8, 1, policies=["tsss"])


def test_readme_evaluation_figures_are_the_results_file():
    """The README's dense vs clip-wise figures: Table 2 (a) of ``evaluation.json`` (median and range of the
    per-round CPU ratios) and the goal's arithmetic on Table 1's parts."""
    with open(os.path.join(RESULTS, "evaluation.json")) as f:
        result = json.load(f)
    e = result["end_to_end"]["in_process"]["speedup_cpu"]
    goal = result["goal"]
    text = _readme()
    m = re.search(r"dense evaluation took ([0-9.]+)× less CPU than clip-wise end to end in one process \(median "
                  r"of (\d+) rounds, ([0-9.]+)–([0-9.]+)\)", text)
    assert m, "the README's dense vs clip-wise sentence"
    assert m.groups() == (f"{e['median']:.2f}", str(result["settings"]["rounds"]), f"{e['min']:.2f}",
                          f"{e['max']:.2f}")
    m = re.search(r"take (\d+) ms of the (\d+) ms CPU per video that 4× allows, and the convolutions of the dense "
                  r"pass (\d+) ms: .* at most ([0-9.]+)×", text)
    assert m, "the README's sentence on the goal"
    assert m.groups() == (f"{goal['decode_transform_ms']:.0f}", f"{goal['dense_budget_ms']:.0f}",
                          f"{goal['conv_ms']:.0f}", f"{goal['bound_conv_only']:.2f}")
    assert goal["bound_conv_only"] < 4  # the README says the goal is out of reach on this path


def test_readme_epoch_plan_figures_are_the_results_file():
    """The README's epoch plan figures: the rows of ``sampler.json`` (1M videos), package CPU s and the median
    per-round ratio to the minimal implementation."""
    with open(os.path.join(RESULTS, "sampler.json")) as f:
        result = json.load(f)
    assert result["settings"]["videos"] == 1_000_000
    rows = {r["phase"].split(" ")[0]: r for r in result["rows"]}
    text = _readme()
    m = re.search(r"an exploitation plan \(one softmax draw per video from its table\) takes ([0-9.]+) s CPU, "
                  r"([0-9.]+)× a minimal implementation of the same math .* \(median of (\d+) rounds\); the warm-up "
                  r"\(uniform\) and exploration plans take (\d+) and (\d+) ms, ([0-9.]+)× and ([0-9.]+)×", text)
    assert m, "the README's epoch plan sentence"
    ex, ur, gr = rows["exploitation"]["plan"], rows["-"]["plan"], rows["exploration"]["plan"]
    assert m.groups() == (f"{ex['package'][0]:.2f}", f"{ex['ratio'][0]:.2f}", str(result["settings"]["rounds"]),
                          f"{ur['package'][0] * 1e3:.0f}", f"{gr['package'][0] * 1e3:.0f}", f"{ur['ratio'][0]:.2f}",
                          f"{gr['ratio'][0]:.2f}")
