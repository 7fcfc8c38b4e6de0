"""The math, models, data and pooling modules load without Lightning (imports point one way, ARCHITECTURE.md).

Each check runs in a fresh interpreter: in this test process Lightning is already imported by other tests.
"""
import subprocess
import sys

import pytest

LIGHTNING = ("lightning", "lightning.pytorch", "pytorch_lightning", "lightning_fabric")


def _loaded_after(code: str) -> list:
    probe = code + "\nimport sys\nprint(' '.join(sorted(sys.modules)))\n"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    return out.stdout.split()


@pytest.mark.parametrize("module", ["lightning_temporal.sampling", "lightning_temporal.models",
                                    "lightning_temporal.data", "lightning_temporal.pooling",
                                    "lightning_temporal.evaluation"])
def test_pure_modules_do_not_import_lightning(module):
    loaded = _loaded_after(f"import {module}")
    assert module in loaded
    assert not [m for m in loaded if m in LIGHTNING or m.startswith(("lightning.", "pytorch_lightning."))]


def test_the_package_names_load_on_first_use():
    """``import lightning_temporal`` alone loads no Lightning; asking for the glue name loads it (PEP 562)."""
    assert "lightning" not in _loaded_after("import lightning_temporal")
    loaded = _loaded_after("import lightning_temporal as lt\nassert lt.VideoClassifier.__name__ == 'VideoClassifier'")
    assert "lightning" in loaded and "lightning_temporal.module" in loaded
