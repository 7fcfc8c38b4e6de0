"""The README's "Training throughput" figures are ``benchmarks/dataloader.py``'s ``readme_block`` of the full run
in ``benchmarks/results/dataloader.json`` (and ``dataloader.md`` its report), and that run covers what the README
says: 240p-1080p sources, 112² and 224² clips with the recipes' settings, 0, 2 and all workers."""
import os

import pytest
import yaml

from lightning_temporal.data.video import set_open_cache_size
from tests.bench import load_benchmark

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
README = open(os.path.join(ROOT, "README.md"), encoding="utf-8").read()


@pytest.fixture(scope="module")
def bench():
    return load_benchmark("dataloader")


@pytest.fixture(scope="module")
def results(bench):
    return bench.read_results()


def test_the_readme_block_is_the_results_file(bench, results):
    assert bench.readme_block(results) in README


def test_the_markdown_report_is_the_results_file(bench, results):
    with open(os.path.join(ROOT, "benchmarks", "results", "dataloader.md"), encoding="utf-8") as f:
        assert f.read() == bench.markdown(results)


def test_the_run_is_full(bench, results):
    s = results["settings"]
    assert not s["quick"] and s["rounds"] >= 3 and s["gop"] == 32
    assert [src["name"] for src in results["sources"]] == ["240p", "480p", "720p", "1080p"]
    assert [(src["height"], src["width"]) for src in results["sources"]] == list(bench.SOURCES.values())
    assert all(src["frames"] == round(s["seconds"] * s["fps"]) for src in results["sources"])
    previous = set_open_cache_size(0)  # the default: the files a process keeps open
    set_open_cache_size(previous)
    assert s["clips"] > previous  # every clip of an epoch from another file, more files than stay open
    workers = {0, 2, results["machine"]["nproc"]}
    assert sorted(s["workers"]) == sorted(workers)
    assert [(c["source"], c["clip"]) for c in results["cells"]] == [
        (src, clip) for src in ("240p", "480p", "720p", "1080p") for clip in ("112", "224")]
    for cell in results["cells"]:
        assert sorted(r["workers"] for r in cell["loaders"]) == sorted(workers)


@pytest.mark.parametrize("clip, recipes", [("112", ("afew_tss", "unbc_tss_eer")),
                                           ("224", ("kinetics_r3d50_sgs", "minikinetics_r3d18_sgs"))])
def test_the_clip_settings_are_the_recipes(bench, results, clip, recipes):
    want = results["settings"]["clips_settings"][clip]
    assert tuple(want.values()) == bench.CLIPS[clip]
    for name in recipes:
        with open(os.path.join(ROOT, "recipes", f"{name}.yaml"), encoding="utf-8") as f:
            data = yaml.safe_load(f)["data"]["init_args"]
        got = {"clip_len": data["clip_len"], "stride": data.get("stride", 1), "crop_size": data["crop_size"],
               "short_side": data["short_side"]}
        assert got == want, name
        assert data.get("flip", True)  # TrainTransform flips, as the benchmark's does


def test_the_readme_thp_line_is_the_two_results_files(bench, results):
    """The huge-page sentence compares the full run with a run of the same script under THP_MEM_ALLOC_ENABLE=1."""
    thp = bench.read_results(os.path.join(ROOT, "benchmarks", "results", "dataloader_thp.json"))
    assert results["machine"]["THP_MEM_ALLOC_ENABLE"] == "" and thp["machine"]["THP_MEM_ALLOC_ENABLE"] == "1"
    same = ("rounds", "clips", "batch", "seconds", "gop", "clips_settings")
    assert {k: thp["settings"][k] for k in same} == {k: results["settings"][k] for k in same}
    assert bench.thp_line(results, thp) in README
    with open(os.path.join(ROOT, "benchmarks", "results", "dataloader_thp.md"), encoding="utf-8") as f:
        assert f.read() == bench.markdown(thp)
