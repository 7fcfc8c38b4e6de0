"""``benchmarks/`` use only public names of the package (ARCHITECTURE.md): no ``from lightning_temporal... import
_x``, no ``import lightning_temporal._x``, and no attribute ``._x`` read from a package module or from anything
taken from one (a class, an instance it returns, a data module's method). Checked by parsing each script with
``ast``, so a benchmark that is never run is checked too.

Also the public piece ``benchmarks/decode.py`` needs: :class:`~lightning_temporal.data.video.OpenFileCache`.
"""
from __future__ import annotations

import ast
import glob
import os
from typing import List

import numpy as np
import pytest

from lightning_temporal.data import video as video_mod
from lightning_temporal.data.video import OpenFileCache, read_clip
from tests.videos import reference_frames, write_video

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
PACKAGE = "lightning_temporal"


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def private_uses(source: str, filename: str = "<benchmark>") -> List[str]:
    """``"line N: what"`` for every use of an underscore name of the package in ``source``.

    Tainted names: those bound by an import from the package, and (to a fixed point) every name assigned from an
    expression that mentions a tainted name (``cli = run(...)``, ``dm = cli.datamodule``). An attribute
    ``x._y`` on an expression that mentions a tainted name is a private use; so is any underscore segment of an
    imported module path or name. Attributes of local objects (``self._x`` of the script's own classes) are not.
    """
    tree = ast.parse(source, filename)
    found, tainted = [], set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == PACKAGE and not node.level:
            if any(_private(p) for p in node.module.split(".")):
                found.append(f"line {node.lineno}: from {node.module} import ...")
            for alias in node.names:
                if _private(alias.name):
                    found.append(f"line {node.lineno}: from {node.module} import {alias.name}")
                tainted.add(alias.asname or alias.name)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] != PACKAGE:
                    continue
                if any(_private(p) for p in alias.name.split(".")):
                    found.append(f"line {node.lineno}: import {alias.name}")
                tainted.add(alias.asname or alias.name.split(".")[0])

    def mentions(expr) -> bool:
        return any(isinstance(n, ast.Name) and n.id in tainted for n in ast.walk(expr))

    def bound(target) -> List[str]:  # the names an assignment binds (not ``obj`` of ``obj.x = ...``)
        if isinstance(target, ast.Name):
            return [target.id]
        if isinstance(target, (ast.Tuple, ast.List)):
            return [name for t in target.elts for name in bound(t)]
        if isinstance(target, ast.Starred):
            return bound(target.value)
        return []

    def targets(node) -> List[str]:
        return [name for t in (node.targets if isinstance(node, ast.Assign) else [node.target]) for name in bound(t)]

    assigns = [n for n in ast.walk(tree) if isinstance(n, (ast.Assign, ast.AnnAssign, ast.AugAssign, ast.For,
                                                            ast.withitem, ast.NamedExpr))]
    while True:  # names bound from package objects are package objects too
        before = len(tainted)
        for n in assigns:
            if isinstance(n, ast.For) and mentions(n.iter):
                tainted.update(bound(n.target))
            elif isinstance(n, ast.withitem) and n.optional_vars is not None and mentions(n.context_expr):
                tainted.update(bound(n.optional_vars))
            elif isinstance(n, ast.NamedExpr) and mentions(n.value):
                tainted.add(n.target.id)
            elif isinstance(n, (ast.Assign, ast.AnnAssign, ast.AugAssign)) and n.value is not None \
                    and mentions(n.value):
                tainted.update(targets(n))
        if len(tainted) == before:
            break
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and _private(node.attr) and mentions(node.value):
            found.append(f"line {node.lineno}: {ast.unparse(node)}")
    return sorted(set(found), key=lambda s: int(s.split(":")[0].split()[1]))


BENCHMARKS = sorted(glob.glob(os.path.join(ROOT, "benchmarks", "*.py")))


@pytest.mark.parametrize("path", BENCHMARKS, ids=[os.path.basename(p) for p in BENCHMARKS])
def test_benchmark_uses_only_public_names(path):
    with open(path, encoding="utf-8") as f:
        uses = private_uses(f.read(), path)
    assert uses == [], f"{os.path.relpath(path, ROOT)} uses private names of the package: " + "; ".join(uses)


@pytest.mark.parametrize("source, found", [
    ("from lightning_temporal.data import video as v\nc = v._OpenFiles(0)\nv._OPEN = c", ["_OpenFiles", "_OPEN"]),
    ("from lightning_temporal.cli import run\ncli = run([])\ndm = cli.datamodule\np = dm._manifest_paths()",
     ["_manifest_paths"]),
    ("from lightning_temporal.callbacks.stochastic_softmax import _score_clean", ["import _score_clean"]),
    ("import lightning_temporal._private.x", ["import lightning_temporal._private"]),
    ("import lightning_temporal as lt\nm = lt.VideoClassifier('simple3d', 4)\nfor b in [m]:\n    b.temporal._compact",
     ["b.temporal._compact"]),
    ("from lightning_temporal.models import build_backbone\nnet = build_backbone('x')\nnet.temporal._compact(1)",
     ["net.temporal._compact"]),
])
def test_the_check_finds_private_uses(source, found):
    uses = private_uses(source)
    assert len(uses) == len(found) and all(f in u for f, u in zip(found, uses)), uses


def test_the_check_leaves_local_and_dunder_names_alone():
    source = ("from lightning_temporal.data.video import read_clip\nclass V:\n    def __init__(self):\n"
              "        self._x = 1\n        self.clip = read_clip('a.mp4', 0, 1)\n        self._y()\n"
              "v = V()\nv._x\nread_clip.__doc__\nimport os\nos._exit\n")
    assert private_uses(source) == []


def test_open_file_cache_holds_its_files_and_gives_the_process_cache_back(tmp_path):
    """Reads inside ``with cache:`` use that cache (a warm one keeps the file open between blocks, a cold one
    keeps none); outside, the process's cache is back; the frames are the same either way."""
    path = write_video(str(tmp_path / "v.mp4"), num_frames=30, gop=8)
    ref = reference_frames(path)
    cold, warm = OpenFileCache(0), OpenFileCache(2)
    process_cache = video_mod.__dict__["_OPEN"]
    try:
        for start in (3, 17, 9):
            with warm:
                np.testing.assert_array_equal(read_clip(path, start, 4).numpy(), ref[start:start + 4])
            with cold:
                np.testing.assert_array_equal(read_clip(path, start, 4).numpy(), ref[start:start + 4])
            assert (len(warm), len(cold)) == (1, 0)
        with warm, cold:  # nested: the innermost is used, each exit restores the one before
            read_clip(path, 0, 2)
            assert video_mod.__dict__["_OPEN"] is cold
        assert video_mod.__dict__["_OPEN"] is process_cache
        warm.clear()
        assert len(warm) == 0
    finally:
        warm.clear()
    with pytest.raises(ValueError, match="max_open"):
        OpenFileCache(-1)
