"""vizjax.engine.execution.prefer_fast_cpu_compiles: the command line asks XLA:CPU for LLVM -O1
where jax can only run on the CPU, never over the user's own level or on an accelerator."""

import importlib.util
import os

import pytest

from vizjax.engine import execution


@pytest.fixture
def env(monkeypatch):
    monkeypatch.delenv("XLA_FLAGS", raising=False)
    monkeypatch.delenv("JAX_PLATFORMS", raising=False)
    return monkeypatch


def test_a_cpu_only_install_gets_o1(env):
    env.setattr(importlib.util, "find_spec", lambda name: None)
    env.setenv("XLA_FLAGS", "--xla_force_host_platform_device_count=2")
    assert execution.prefer_fast_cpu_compiles()
    assert os.environ["XLA_FLAGS"] == (
        "--xla_force_host_platform_device_count=2 --xla_backend_optimization_level=1"
    )


def test_the_users_level_wins(env):
    env.setenv("XLA_FLAGS", "--xla_backend_optimization_level=3")
    assert not execution.prefer_fast_cpu_compiles()
    assert os.environ["XLA_FLAGS"] == "--xla_backend_optimization_level=3"


def test_an_accelerator_plugin_or_platform_keeps_xlas_default(env):
    env.setattr(importlib.util, "find_spec", lambda name: name == "jax_cuda12_plugin" or None)
    assert not execution.prefer_fast_cpu_compiles()
    env.setattr(importlib.util, "find_spec", lambda name: None)
    env.setenv("JAX_PLATFORMS", "cuda,cpu")
    assert not execution.prefer_fast_cpu_compiles()
    env.setattr(importlib.util, "find_spec", lambda name: name == "libtpu" or None)
    env.setenv("JAX_PLATFORMS", "cpu")  # the user asked for the CPU: plugins do not matter
    assert execution.prefer_fast_cpu_compiles()
