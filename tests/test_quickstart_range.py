"""The README's quickstart figures come from the measured runs in ``benchmarks/results/quickstart_seeds.json``:
the range table is the one ``benchmarks/quickstart_seeds.py`` prints for that file, the runs cover at least 5
seeds with one torch thread and torch's default threads too, the claims written beside the table hold on every
run, and the quickstart recipe's header states the same CPU time as the README. Also: ``pytest`` (the README's
test command) collects the package's docstring examples."""
import os
import re
import sys

import pytest

from tests.bench import load_benchmark

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    tomllib = pytest.importorskip("tomli")

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
RESULTS = os.path.join(ROOT, "benchmarks", "results", "quickstart_seeds.json")
README = open(os.path.join(ROOT, "README.md"), encoding="utf-8").read()
README_TEXT = " ".join(README.split())  # prose, line breaks as spaces


@pytest.fixture(scope="module")
def measured():
    qs = load_benchmark("quickstart_seeds")
    data = qs.read_results(RESULTS)
    return qs, data["settings"], data["runs"]


def test_the_runs_cover_five_seeds_and_both_thread_settings(measured):
    _, settings, runs = measured
    assert not settings["small"]
    one = {r["seed"] for r in runs if r["threads"] == 1}
    default = {r["seed"] for r in runs if r["threads"] == settings["threads_default"]}
    assert len(one) >= 5 and settings["threads_default"] != 1 and len(default) >= 1
    assert all(None not in r["figures"].values() for r in runs)


def test_the_readme_table_is_the_measured_one(measured):
    qs, settings, runs = measured
    assert qs.readme_table(runs, settings["threads_default"]) in README


def test_the_claims_beside_the_table_hold_on_every_run(measured):
    _, _, runs = measured
    for r in runs:
        f = r["figures"]
        # softmax and max pooling beat mean pooling
        assert f["test γ_p=1"] > f["test γ_p=0"] and f["test γ_p=1e6"] > f["test γ_p=0"], r["seed"]
        # TSS keeps more of its training clips on the event than uniform sampling would
        assert min(f["hit rate, last epoch"], f["hit rate, last 5 epochs"]) > r["uniform_hit"], r["seed"]
    # mean pooling varies the most between runs
    width = {k: max(r["figures"][k] for r in runs) - min(r["figures"][k] for r in runs)
             for k in ("test γ_p=1", "test γ_p=0", "test γ_p=1e6")}
    assert width["test γ_p=0"] == max(width.values())


def _span(values, fmt="{:.1f}"):
    lo, hi = fmt.format(min(values)), fmt.format(max(values))
    return lo if lo == hi else f"{lo}–{hi}"


def readme_phrases(runs, threads_default):
    """The figures the README's prose gives, as it writes them, from the measured runs."""
    one = [r for r in runs if r["threads"] == 1]
    default = [r for r in runs if r["threads"] == threads_default]
    wall = f"{_span([r['wall_s'] / 60 for r in one])} min with one thread"
    if default:
        wall += f" and {_span([r['wall_s'] / 60 for r in default])} min with {threads_default} threads"
    seed0 = next(r for r in one if r["seed"] == 0)
    hr = seed0["hit_rate_per_epoch"]
    return {
        "CPU": f"{_span([r['cpu_s'] / 60 for r in one])} min of CPU time",
        "LOAD": _span([r["load_at_end"][0] for r in runs], "{:.0f}"),
        "WALL": wall,
        "HR0": _span(hr[:20], "{:.2f}"),
        "UNI": f"{seed0['uniform_hit']:.2f}",
        "HR1": f"{hr[29]:.2f}",
    }


def test_readme_states_the_measured_times_and_hit_rates(measured):
    _, settings, runs = measured
    phrases = readme_phrases(runs, settings["threads_default"])
    for key, phrase in phrases.items():
        assert phrase in README_TEXT, (key, phrase)
    seed0 = next(r for r in runs if r["threads"] == 1 and r["seed"] == 0)
    hr = seed0["hit_rate_per_epoch"]
    assert len(hr) == 30
    assert max(abs(h - seed0["uniform_hit"]) for h in hr[:20]) < 0.1  # "at the uniform level through epoch 19"
    assert hr[29] > seed0["uniform_hit"] + 0.2                         # "then rose"


def test_the_recipe_header_states_the_readme_fit_time(measured):
    _, settings, runs = measured
    phrase = readme_phrases(runs, settings["threads_default"])["CPU"]
    header = "".join(line for line in open(os.path.join(ROOT, "recipes", "quickstart.yaml"), encoding="utf-8")
                     if line.startswith("#"))
    assert phrase.replace("–", "-") in header
    assert not re.search(r"\b\d+\s*-\s*\d+ minutes", header)  # no other time claim left in the header


def test_pytest_collects_the_docstring_examples():
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
        options = tomllib.load(f)["tool"]["pytest"]["ini_options"]
    assert options["testpaths"] == ["tests", "lightning_temporal"]
    assert "--doctest-modules" in options["addopts"].split()
    assert open(os.path.join(ROOT, ".ci", "run")).read().rstrip().endswith("pytest -q")
