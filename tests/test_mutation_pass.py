"""benchmarks/mutation_pass.py on a tiny stand-in repository: a mutation the test catches is killed, one it does
not catch survives, a moved text is "not applicable", the file is restored every time (also when the test run
raises), and at least 25 entries of the real list apply here."""
import os

import pytest

from tests.bench import load_benchmark

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))


@pytest.fixture
def repo(tmp_path):
    (tmp_path / "calc.py").write_text("def add(a, b):\n    return a + b\n\n\ndef unused():\n    return 1\n")
    (tmp_path / "test_calc.py").write_text("from calc import add\n\n\ndef test_add():\n    assert add(2, 3) == 5\n")
    return tmp_path


def test_killed_survived_and_not_applicable(repo, monkeypatch):
    mp = load_benchmark("mutation_pass")
    monkeypatch.setattr(mp, "ROOT", str(repo))
    original = (repo / "calc.py").read_text()
    mutations = [
        dict(id="A", file="calc.py", old="return a + b", new="return a - b", tests=["test_calc.py"], what="sub"),
        dict(id="B", file="calc.py", old="return 1", new="return 2", tests=["test_calc.py"], what="unused"),
        dict(id="C", file="calc.py", old="return a * b", new="return 0", tests=["test_calc.py"], what="moved"),
    ]
    outcomes = [mp.apply_and_test(m, timeout=120)["outcome"] for m in mutations]
    assert outcomes == ["killed", "SURVIVED", "not applicable"]
    assert (repo / "calc.py").read_text() == original


def test_the_file_is_restored_when_the_run_is_interrupted(repo, monkeypatch):
    mp = load_benchmark("mutation_pass")
    monkeypatch.setattr(mp, "ROOT", str(repo))
    original = (repo / "calc.py").read_text()

    def interrupted(tests, timeout):
        assert "a - b" in (repo / "calc.py").read_text()  # planted while the tests run
        raise KeyboardInterrupt

    monkeypatch.setattr(mp, "run_tests", interrupted)
    with pytest.raises(KeyboardInterrupt):
        mp.apply_and_test(dict(id="A", file="calc.py", old="return a + b", new="return a - b",
                               tests=["test_calc.py"], what="sub"), timeout=120)
    assert (repo / "calc.py").read_text() == original


def test_the_listed_mutations_apply_to_this_repository():
    """At least 25 entries apply (text found exactly once); none is ambiguous (found twice). An entry whose code
    moved to another file is reported "not applicable" by the pass, and should be updated then."""
    mp = load_benchmark("mutation_pass")
    assert len({m["id"] for m in mp.MUTATIONS}) == len(mp.MUTATIONS)
    applicable = 0
    for m in mp.MUTATIONS:
        path = os.path.join(ROOT, m["file"])
        count = open(path, encoding="utf-8").read().count(m["old"]) if os.path.isfile(path) else 0
        assert count <= 1, m["id"]
        applicable += count
        assert m["old"] != m["new"] and m["tests"], m["id"]
        paths = [t for t in m["tests"] if t.endswith(".py")]
        assert paths and all(os.path.exists(os.path.join(ROOT, t.split("::")[0])) for t in paths), m["id"]
    assert applicable >= 25
