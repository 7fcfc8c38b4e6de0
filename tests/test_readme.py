"""The README a newcomer follows: its Python blocks run as shown (in order, in one namespace, as a reader pastes
them), its commands parse, it cites the two papers by title and points at nothing outside the repository.

The only stand-in: ``checkpoints/X3D_S.pyth``, which the fine-tuning block reads, is a PyTorchVideo X3D-S with
random weights saved in the hub's format (the real file is a download the README tells the reader to make).
"""
import os
import re
import shlex
import time
import warnings

import pytest

from lightning_temporal.cli import run

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
README = open(os.path.join(ROOT, "README.md"), encoding="utf-8").read()


def _blocks(language):
    return re.findall(rf"```{language}\n(.*?)```", README, flags=re.S)


def test_readme_python_blocks_run_as_shown(tmp_path, monkeypatch):
    from tests.pytorchvideo_ref import import_pytorchvideo, randomise_, save_hub_checkpoint

    hub = import_pytorchvideo()[0]
    (tmp_path / "checkpoints").mkdir()
    save_hub_checkpoint(randomise_(hub.x3d_s(pretrained=False)), tmp_path / "checkpoints" / "X3D_S.pyth")
    monkeypatch.chdir(tmp_path)
    blocks = _blocks("python")
    assert len(blocks) >= 5
    namespace = {"__name__": "readme"}
    for i, block in enumerate(blocks):
        start = time.process_time()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                exec(compile(block, f"README.md python block {i}", "exec"), namespace)
            except Exception as err:  # name the block that broke
                raise AssertionError(f"README python block {i} fails: {type(err).__name__}: {err}\n{block}") from err
        print(f"block {i}: {time.process_time() - start:.1f} s CPU")
        if "pretrained" in block:  # the fine-tuning block: a 7-class model from the 400-class file, said so
            assert namespace["model"].backbone.head.fc.out_features == 7
            assert [w for w in caught if "head.fc is re-initialised" in str(w.message)]
    # what the blocks promise
    assert namespace["trainer"].current_epoch == 4 and namespace["tss"].phase(3).value == "exploitation"
    assert namespace["tss"].metrics[-1]["records"] == 8  # the last epoch scored all 8 training clips
    lines = open(namespace["writer"].path).read().splitlines()
    assert len(lines) == 1 + 2 and lines[0].startswith("video_idx,video,label,pred,prob_")
    # the figure names the README gives: <video index, 6 digits>_<video file name>.png
    assert sorted(os.listdir(tmp_path / "predictions" / "curves")) == ["000000_test_00000.png", "000001_test_00001.png"]
    assert namespace["gmacs"] > 0 and namespace["net"].temporal.num_bins == 8


def test_readme_commands_parse(tmp_path, monkeypatch):
    """Every ``lightning-temporal`` command of the README is accepted by the CLI's parser (``--print_config``
    stops after parsing: no training here; ``tests/test_cli.py`` runs the same loop in miniature)."""
    monkeypatch.chdir(ROOT)
    monkeypatch.setattr("sys.argv", ["lightning-temporal"])
    commands = [ln.strip().lstrip("$ ").split("#")[0] for block in _blocks("bash") + _blocks("text")
                for ln in block.splitlines() if ln.strip().lstrip("$ ").startswith("lightning-temporal ")]
    assert {c.split()[1] for c in commands} >= {"fit", "test", "predict"}
    for command in commands:
        args = shlex.split(command)[1:]
        if "gama_p" in command:  # the README's example of a misspelled key
            with pytest.raises(ValueError, match="did you mean 'gamma_p'"):
                run(args)
            continue
        with pytest.raises(SystemExit) as done:
            run(args + ["--print_config"])
        assert done.value.code == 0, command


def test_readme_cites_the_papers_and_nothing_outside_the_repository():
    text = " ".join(README.split())
    assert "Temporal Stochastic Softmax for 3D CNNs: An Application in Facial Expression Recognition" in text
    assert "3D CNNs with Adaptive Temporal Feature Resolutions" in text
    for outside in ("SPEC", "CONTRACT", "/work/", "shared/"):
        assert outside not in README, outside
    # every repository path the README names exists
    paths = set(re.findall(r"\]\(([^)#]+)\)", README))
    paths |= {p for p in re.findall(r"`((?:recipes|benchmarks|tests|lightning_temporal)/[\w./-]+)`", README)
              if not p.endswith("/")}
    missing = [p for p in sorted(paths) if not p.startswith("http") and not os.path.exists(os.path.join(ROOT, p))]
    assert missing == []


def test_layout_table_names_every_module_and_only_existing_ones():
    """The README's package layout table matches the files: every module of the package is named in it (by its
    file name in its folder's row, or by its path), and every file name in it exists."""
    layout = README[README.index("## Package layout"):README.index("## Benchmarks")]
    rows = [line for line in layout.splitlines() if line.startswith("| `")]
    pkg = os.path.join(ROOT, "lightning_temporal")
    for folder, _, files in os.walk(pkg):
        rel = os.path.relpath(folder, ROOT).replace(os.sep, "/")
        for name in files:
            if not name.endswith(".py") or name == "__init__.py":
                continue
            row = [r for r in rows if f"`{rel}/" in r.split("|")[1] or f"`{rel}/{name}`" in r]
            assert row and any(f"`{name}`" in r or f"/{name}`" in r for r in row), f"{rel}/{name} not in the layout"
    named = set()
    for r in rows:
        head, what = r.split("|")[1], r.split("|")[2]
        if "`lightning_temporal" not in head:
            continue
        folder = re.findall(r"`(lightning_temporal(?:/\w+)?)/`", head)
        for name in re.findall(r"`(\w+\.py)`", head + what):
            named.add(os.path.join(folder[0] if folder else "lightning_temporal", name))
    assert [n for n in sorted(named) if not os.path.exists(os.path.join(ROOT, n))] == []
