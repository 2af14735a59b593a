"""The accelerator paths, exercised on the CPU: the rolled step loop, ``auto`` chunking by compiled
memory analysis, bfloat16; and the persistent compilation cache.

A GPU day must find working code, and no GPU is lent to most sessions: what accelerators run
differently (``conv="xla"``, one rolled ``lax.scan`` per segment, the memory probe of
:func:`vizjax.ascent.auto_chunk`) is forced here on the CPU.
"""

import json
import os
import subprocess
import sys
import textwrap
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from vizjax import ascent, execution
from vizjax.execution import Execution
from vizjax.recipe import CLASSIC, preset

#: What ``auto`` settles on for accelerators (``vizjax.execution``): XLA's convolutions and the
#: whole recipe as one rolled loop.
ACCELERATOR = dict(conv="xla", unroll=1)


def _run(weights, layer, filters, recipe, ex):
    return ascent.visualize(
        layer, filters, recipe, weights.params, weights.preprocessing, execution=ex
    )


def _close(got, want, rtol):
    scale = float(np.abs(want).max())
    np.testing.assert_allclose(got, want, rtol=rtol, atol=rtol * max(scale, 1e-12))


@pytest.mark.parametrize(
    "ex",
    [
        # The accelerator loop, one rolled scan (slow: "accelerator" below rolls it too).
        pytest.param(Execution(segment=6, unroll=1), marks=pytest.mark.slow),
        Execution(segment=4, unroll=2),  # partial unroll, a shorter last segment (4 + 2)
        Execution(segment=6, **ACCELERATOR),  # exactly what a GPU runs, on the CPU
    ],
    ids=["rolled", "partial", "accelerator"],
)
def test_rolled_and_partial_loops_match_the_cpu_default(tiny_weights, ex):
    recipe = CLASSIC.replace(size=(32, 32), steps=6)
    want = _run(tiny_weights, "block2_conv2", [0, 3, 7], recipe, Execution())
    got = _run(tiny_weights, "block2_conv2", [0, 3, 7], recipe, ex)
    _close(got.objective, want.objective, 1e-5)
    _close(got.raw, want.raw, 1e-4)


def test_lucid_rolled_on_accelerator_settings_matches_segmented(tiny_weights):
    """Randomness (transforms, redirect-ReLU steps) follows the step number, not the loop shape."""
    recipe = preset("lucid").replace(size=(32, 32), steps=4, redirect_relu=2)
    want = _run(tiny_weights, "block1_conv2", [1, 5], recipe, Execution(segment=2))
    got = _run(tiny_weights, "block1_conv2", [1, 5], recipe, Execution(segment=4, **ACCELERATOR))
    _close(got.objective, want.objective, 1e-4)
    _close(got.raw, want.raw, 1e-3)


def test_bfloat16_on_accelerator_settings_stays_close_to_float32(tiny_weights):
    recipe = CLASSIC.replace(size=(32, 32), steps=3)
    f32 = _run(tiny_weights, "block2_conv2", [0, 1, 2, 3], recipe, Execution())
    bf16 = _run(
        tiny_weights,
        "block2_conv2",
        [0, 1, 2, 3],
        recipe,
        Execution(dtype="bfloat16", segment=3, **ACCELERATOR),
    )
    assert bf16.raw.dtype == np.float32  # the image and its update stay float32
    rel = np.abs(bf16.objective - f32.objective) / np.abs(f32.objective).max(axis=1, keepdims=True)
    assert rel.max() < 5e-2, rel.max()  # the README's bfloat16 tolerance
    assert not np.array_equal(bf16.objective, f32.objective)  # it really ran in bfloat16


# ---------------------------------------------------------------------------------------------
# auto chunking by compiled memory analysis (the accelerator branch), on CPU devices dressed up


class _Accelerator:
    """A CPU device that says it is a GPU with ``limit`` bytes (None: no memory stats)."""

    def __init__(self, device, limit):
        self._device, self._limit = device, limit
        self.platform = "gpu"

    def memory_stats(self):
        return None if self._limit is None else {"bytes_limit": self._limit, "bytes_in_use": 0}


def _probe_setup(weights, recipe, ex, n_devices=2):
    """Everything auto_chunk needs, on ``n_devices`` real CPU devices."""
    mesh = Mesh(np.array(jax.devices()[:n_devices]), ("filters",))
    program = ascent.compiled_program(
        "block1_conv2", weights.preprocessing, recipe.program(), ex.program(), mesh, weights.network
    )
    rep = NamedSharding(mesh, PartitionSpec())
    params = jax.device_put(weights.params, rep)
    prepare = getattr(program, "prepare", None)
    params = prepare(params) if prepare is not None else params
    start = jax.device_put(ascent.noise_image(recipe), rep)
    seed = jax.device_put(np.int32(0), rep)
    return mesh, program, params, start, seed


def _per_filter_bytes(program, params, start, seed, mesh):
    """The probe's cost, as auto_chunk's docstring defines it (one filter per device)."""
    d = mesh.devices.size
    filters = jax.device_put(
        jnp.zeros((d,), jnp.int32), NamedSharding(mesh, PartitionSpec("filters"))
    )
    state = jax.eval_shape(program.init, params, start, filters, seed)
    steps = program.plan[0][1]
    compiled = program.advance[steps].lower(params, start, filters, seed, state, np.int32(0))
    mem = compiled.compile().memory_analysis()
    return mem.temp_size_in_bytes + mem.output_size_in_bytes + mem.argument_size_in_bytes


def _auto_chunk_as_accelerator(monkeypatch, setup, n, limit):
    mesh, program, params, start, seed = setup
    fake = types.SimpleNamespace(
        devices=np.array([_Accelerator(d, limit) for d in mesh.devices.flat])
    )
    # The fake mesh's shardings are the real mesh's: only the platform and memory are pretend.
    monkeypatch.setattr(ascent, "NamedSharding", lambda m, spec: NamedSharding(mesh, spec))
    return ascent.auto_chunk(program, params, start, seed, n, fake, "block1_conv2")


@pytest.fixture(scope="module")
def probe(tiny_weights):
    recipe = CLASSIC.replace(size=(32, 32), steps=2)
    return _probe_setup(tiny_weights, recipe, Execution(segment=2, **ACCELERATOR))


def test_auto_chunk_takes_what_fits_in_device_memory(monkeypatch, probe):
    mesh, program, params, start, seed = probe
    per_filter = _per_filter_bytes(program, params, start, seed, mesh)
    assert per_filter > 0
    d = mesh.devices.size
    for fits in (1, 3, 7):
        # 80% of the free memory is the budget (+2 bytes against float rounding of the 80%).
        limit = int(np.ceil(fits * per_filter / 0.8)) + 2
        chunk = _auto_chunk_as_accelerator(monkeypatch, probe, 1000, limit)
        assert chunk == fits * d, (fits, chunk)
    # Less than one filter's worth still runs one filter per device (the run may then fail, but
    # auto never returns 0).
    assert _auto_chunk_as_accelerator(monkeypatch, probe, 1000, 1) == d


def test_auto_chunk_caps_and_never_exceeds_the_filters(monkeypatch, probe):
    d = probe[0].devices.size
    big = 1 << 50
    cap = ascent.AUTO_CAP_DEFAULT * d
    assert _auto_chunk_as_accelerator(monkeypatch, probe, 10 * cap, big) == cap
    assert _auto_chunk_as_accelerator(monkeypatch, probe, 10 * cap + 1, big) <= cap
    assert _auto_chunk_as_accelerator(monkeypatch, probe, 5, big) == 3 * d  # ceil(5 / 2) per device
    assert _auto_chunk_as_accelerator(monkeypatch, probe, 1, big) == d
    # A device that does not report its memory: the cap, not a guess.
    assert _auto_chunk_as_accelerator(monkeypatch, probe, 64, None) == 32 * d


def test_auto_chunk_probe_sees_bfloat16(tiny_weights):
    """The dtype reaches the compiled program: bfloat16 activations cost less memory per filter."""
    recipe = CLASSIC.replace(size=(64, 64), steps=2)
    sizes = {}
    for dtype in ("float32", "bfloat16"):
        ex = Execution(dtype=dtype, segment=2, **ACCELERATOR)
        mesh, program, params, start, seed = _probe_setup(tiny_weights, recipe, ex, 1)
        sizes[dtype] = _per_filter_bytes(program, params, start, seed, mesh)
    assert sizes["bfloat16"] < sizes["float32"], sizes


def test_auto_chunk_on_cpu_compiles_no_probe(probe):
    """The CPU branch is a rule measured on CPUs: whole devices, never more than the filters."""
    mesh, program, params, start, seed = probe
    d = mesh.devices.size
    for n in (1, 3, 1000):
        chunk = ascent.auto_chunk(program, params, start, seed, n, mesh, "block1_conv2")
        assert chunk % d == 0 and d <= chunk <= max(d, -(-n // d) * d), (n, chunk)


# ---------------------------------------------------------------------------------------------
# The persistent compilation cache


def test_cache_dir_follows_env(monkeypatch, tmp_path):
    monkeypatch.delenv(execution.CACHE_ENV, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert execution.compilation_cache_dir() == tmp_path / "xdg" / "vizjax" / "jax"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert execution.compilation_cache_dir() == tmp_path / "home" / ".cache" / "vizjax" / "jax"
    for off in ("0", "false", "no", "off", "OFF"):
        monkeypatch.setenv(execution.CACHE_ENV, off)
        assert execution.compilation_cache_dir() is None
    monkeypatch.setenv(execution.CACHE_ENV, str(tmp_path / "mine"))
    assert execution.compilation_cache_dir() == tmp_path / "mine"
    monkeypatch.setenv(execution.CACHE_ENV, "1")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert execution.compilation_cache_dir() == tmp_path / "xdg" / "vizjax" / "jax"


#: A fresh process: enable the cache the CLI's way, compile one program, report jax's events.
_CHILD = textwrap.dedent(
    """
    import json, sys
    import jax, jax.numpy as jnp, jax.monitoring as monitoring
    from vizjax.execution import enable_compilation_cache
    events = []
    monitoring.register_event_listener(lambda e, **_: events.append(e))
    path = enable_compilation_cache()
    # Cache even this small program (the real threshold keeps only programs slower than 1 s).
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
    f = jax.jit(lambda x: jnp.sin(x) @ jnp.cos(x).T + 1.0)
    f(jnp.ones((64, 64))).block_until_ready()
    print(json.dumps({"path": str(path) if path else None,
                      "hits": events.count("/jax/compilation_cache/cache_hits")}))
    """
)


def _child(env):
    env = {**os.environ, **env}
    env.pop("JAX_COMPILATION_CACHE_DIR", None)
    out = subprocess.run(
        [sys.executable, "-c", _CHILD], env=env, capture_output=True, text=True, check=True
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_second_process_reads_the_compiled_program_from_the_cache(tmp_path):
    cache = tmp_path / "cache"
    first = _child({execution.CACHE_ENV: str(cache)})
    assert first == {"path": str(cache), "hits": 0}
    assert any(cache.iterdir())  # XLA:CPU executables are serialized in this jax
    second = _child({execution.CACHE_ENV: str(cache)})
    assert second["hits"] >= 1
    off = _child({execution.CACHE_ENV: "0"})
    assert off == {"path": None, "hits": 0}


_DEFAULT_FLAGS_CHILD = textwrap.dedent(
    """
    import sys
    import numpy as np
    from vizjax import ascent
    from vizjax.execution import Execution
    from vizjax.recipe import preset
    from vizjax.weights import load_weights
    w = load_weights("tiny-vgg16")
    out = {}
    r = preset("classic").replace(size=(32, 32), steps=3)
    res = ascent.visualize("block2_conv2", [0, 1, 2, 3], r, w.params, w.preprocessing,
                           execution=Execution(unroll=1), measure=True)
    for k in ("raw", "objective", "robustness", "hf_energy"):
        out[k] = np.asarray(getattr(res, k))
    np.savez(sys.argv[1], **out)
    """
)


@pytest.mark.slow  # checks the test setup, not vizjax: CI (scripts/test.sh --all) runs it
def test_the_tests_compile_flags_change_only_rounding(tiny_weights, tmp_path):
    """tests/conftest.py compiles with cheaper XLA:CPU code generation (TEST_XLA_FLAGS): a run
    with a user's default flags, in a child process, gives the same numbers up to float rounding
    (the Winograd engine, a rolled step loop, the measures; the classic recipe, whose steps
    do not amplify rounding as Adam's do). Measured: 1e-7 of the pixel range, up to 3e-5 of a
    robustness (a ratio of two activations)."""
    from conftest import TEST_XLA_FLAGS

    flags = os.environ["XLA_FLAGS"].split()
    assert all(f in flags for f in TEST_XLA_FLAGS)  # in force in this process
    user = [f for f in flags if f not in TEST_XLA_FLAGS]
    env = {**os.environ, "XLA_FLAGS": " ".join(user)}
    env.pop("JAX_COMPILATION_CACHE_DIR", None)
    path = tmp_path / "default.npz"
    subprocess.run([sys.executable, "-c", _DEFAULT_FLAGS_CHILD, str(path)], env=env, check=True)
    theirs = np.load(path)
    r = preset("classic").replace(size=(32, 32), steps=3)
    res = ascent.visualize(
        "block2_conv2",
        [0, 1, 2, 3],
        r,
        tiny_weights.params,
        tiny_weights.preprocessing,
        execution=Execution(unroll=1),
        measure=True,
    )
    for k, tol in (("raw", 1e-5), ("objective", 1e-5), ("robustness", 1e-4), ("hf_energy", 1e-4)):
        _close(np.asarray(getattr(res, k)), theirs[k], tol)


def test_balanced_chunk_pads_the_least():
    # Typed-in cases: (filters, at most per device, devices) -> chunk.
    for n, cap, d, want in [
        (20, 8, 1, 7),  # 3 chunks of 7 (21 slots), not 8 + 8 + 4 padded to 8 (24)
        (512, 8, 1, 8),
        (64, 8, 1, 8),
        (9, 8, 1, 5),
        (5, 8, 1, 5),
        (1, 8, 4, 4),  # never below one filter per device
        (20, 8, 2, 10),  # one chunk of 20 across 2 devices
        (40, 8, 2, 14),  # 3 chunks of 7 per device
        (1000, 3, 4, 12),
    ]:
        chunk = ascent.balanced_chunk(n, cap, d)
        assert chunk == want, (n, cap, d, chunk)
        assert chunk % d == 0 and chunk <= cap * d
        chunks = -(-n // chunk)
        assert chunks == -(-n // (cap * d))  # no more programs called than at the cap
