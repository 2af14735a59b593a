"""The chunk: how many filters one compiled program takes (:mod:`vizjax.engine.chunk`). ``auto`` on
accelerators sizes it by the compiled program's memory analysis, forced here on CPU devices dressed
up as GPUs (no GPU is lent to most sessions); on CPUs by a measured rule; and the filters are
spread evenly over as few chunks as that size allows.
"""

import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from vizjax.engine import ascent, chunk
from vizjax.engine.execution import Execution
from vizjax.engine.recipe import CLASSIC

#: What ``auto`` settles on for accelerators (``vizjax.engine.execution``): XLA's convolutions and the
#: whole recipe as one rolled loop.
ACCELERATOR = dict(conv="xla", unroll=1)


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
    monkeypatch.setattr(chunk, "NamedSharding", lambda m, spec: NamedSharding(mesh, spec))
    return chunk.auto_chunk(program, params, start, seed, n, fake, "block1_conv2")


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
        got = _auto_chunk_as_accelerator(monkeypatch, probe, 1000, limit)
        assert got == fits * d, (fits, got)
    # Less than one filter's worth still runs one filter per device (the run may then fail, but
    # auto never returns 0).
    assert _auto_chunk_as_accelerator(monkeypatch, probe, 1000, 1) == d


def test_auto_chunk_caps_and_never_exceeds_the_filters(monkeypatch, probe):
    d = probe[0].devices.size
    big = 1 << 50
    cap = chunk.AUTO_CAP_DEFAULT * d
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


def test_the_cpu_rule_batches_only_small_images_of_deep_layers():
    # Typed-in cases (layer, px) -> filters per program, from the measured table in bench/README.md.
    for layer, px, want in [
        ("block5_conv1", 64, 8),
        ("block4_conv3", 64, 8),
        ("block5_conv1", 96, 8),
        ("block3_conv3", 64, 8),  # 16x16x256: exactly 64Ki values
        ("block3_conv3", 128, 1),
        ("block5_conv1", 128, 1),
        ("block5_conv3", 128, 1),
        ("block5_conv1", 224, 1),
        ("block1_conv2", 64, 1),
    ]:
        assert chunk.cpu_filters_per_device(layer, px, px) == want, (layer, px)


def test_auto_chunk_on_cpu_compiles_no_probe(probe):
    """The CPU branch is a rule measured on CPUs: whole devices, never more than the filters."""
    mesh, program, params, start, seed = probe
    d = mesh.devices.size
    for n in (1, 3, 1000):
        got = chunk.auto_chunk(program, params, start, seed, n, mesh, "block1_conv2")
        assert got % d == 0 and d <= got <= max(d, -(-n // d) * d), (n, got)


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
        got = chunk.balanced_chunk(n, cap, d)
        assert got == want, (n, cap, d, got)
        assert got % d == 0 and got <= cap * d
        chunks = -(-n // got)
        assert chunks == -(-n // (cap * d))  # no more programs called than at the cap


def test_with_onednns_convolutions_more_filters_share_a_program():
    """oneDNN (bfloat16 on AMX) leaves one image too little work: 4 filters per program at 128 px,
    8 where the target's output is small; XLA's rule is one image at 128 px."""
    assert chunk.cpu_filters_per_device("block3_conv3", 128, 128) == 1
    assert chunk.cpu_filters_per_device("block3_conv3", 128, 128, onednn=True) == 4
    assert chunk.cpu_filters_per_device("block5_conv1", 128, 128, onednn=True) == 8
