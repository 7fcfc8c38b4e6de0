"""Load a script of ``benchmarks/`` as a module, for the tests of the benchmarks."""
import importlib.util
import os

BENCHMARKS = os.path.join(os.path.dirname(__file__), "..", "benchmarks")


def load_benchmark(name: str):
    """A fresh module object from ``benchmarks/<name>.py`` on every call (tests may change its settings)."""
    spec = importlib.util.spec_from_file_location(name, os.path.join(BENCHMARKS, f"{name}.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod
