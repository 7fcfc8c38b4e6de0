"""The decoding backends a decoding test runs against: PyAV always, torchcodec when it imports (else the
torchcodec case is skipped, with the import error as the reason).

A test module opts in with ``backend = backend_fixture(sys.modules[__name__])``: every test of the module then
runs once per backend, with the module's ``read_clip`` and ``VideoReader`` bound to that backend. A test marked
``@pytest.mark.pyav_only`` (it counts the PyAV path's own calls: packets fed, files opened) runs for PyAV only.
"""
from __future__ import annotations

import functools

import pytest

from lightning_temporal.data import torchcodec_backend, video

BACKENDS = [
    "pyav",
    pytest.param("torchcodec", marks=pytest.mark.skipif(
        not torchcodec_backend.torchcodec_available(),
        reason=f"torchcodec does not import here ({torchcodec_backend._IMPORT_ERROR})")),
]


def backend_fixture(module):
    @pytest.fixture(autouse=True, params=BACKENDS)
    def backend(request, monkeypatch):
        name = request.param
        if name != "pyav" and request.node.get_closest_marker("pyav_only"):
            pytest.skip("counts the PyAV path's own calls (packets fed, files opened)")
        if hasattr(module, "read_clip"):
            monkeypatch.setattr(module, "read_clip", functools.partial(video.read_clip, backend=name))
        if hasattr(module, "VideoReader"):
            monkeypatch.setattr(module, "VideoReader", functools.partial(video.VideoReader, backend=name))
        return name
    return backend
