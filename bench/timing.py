"""vizjax timed through its public API, and the seed's way of running, on the same work.

Every vizjax row is :func:`vizjax.engine.ascent.visualize` on the chunk ``batch="auto"`` picks, called
once to compile (``compile s`` = that first call minus a steady one) and then ``repeats`` times
(median). The persistent compilation cache is left off (unless JAX_COMPILATION_CACHE_DIR is set),
so ``compile s`` is the cold figure.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec

from bench import work
from vizjax import models
from vizjax.engine import ascent
from vizjax.engine import chunk as chunking
from vizjax.engine.execution import Execution, auto_segment
from vizjax.engine.recipe import CLASSIC, Recipe
from vizjax.models import vgg


def prepared(weights: Any, layer: str, recipe: Recipe, execution: Execution) -> tuple:
    """What :func:`vizjax.engine.ascent.iter_chunks` sets up before its first chunk."""
    mesh = ascent.local_mesh()
    program = ascent.compiled_program(
        layer,
        weights.preprocessing,
        recipe.program(),
        execution.program(),
        mesh,
        models.from_params(weights.params),
    )
    rep = NamedSharding(mesh, PartitionSpec())
    params = jax.device_put(weights.params, rep)
    prepare = getattr(program, "prepare", None)  # Winograd weights, transformed once per run
    params = prepare(params) if prepare is not None else params
    start = jax.device_put(ascent.noise_image(recipe), rep)
    seed = jax.device_put(np.int32(recipe.seed), rep)
    return mesh, program, params, start, seed


def auto_chunk(
    weights: Any, layer: str, n: int, recipe: Recipe, execution: Execution
) -> tuple[int, float]:
    """(the chunk ``execution.batch`` gives for ``n`` filters, seconds it took to decide): on an
    accelerator ``auto`` compiles a memory probe, which is user time too."""
    d = len(jax.local_devices())
    if execution.batch != "auto":
        return math.ceil(int(execution.batch) / d) * d, 0.0
    t = time.perf_counter()
    mesh, program, params, start, seed = prepared(weights, layer, recipe, execution)
    chunk = chunking.auto_chunk(program, params, start, seed, n, mesh, layer, execution=execution)
    return chunk, time.perf_counter() - t


def time_vizjax(
    weights: Any,
    layer: str,
    filters: Sequence[int],
    recipe: Recipe,
    execution: Execution = ascent.DEFAULT_EXECUTION,
    repeats: int = 3,
) -> dict[str, Any]:
    """vizjax on ``filters``: compile seconds, median wall seconds, the chunk, final objectives."""
    chunk, auto_s = auto_chunk(weights, layer, len(filters), recipe, execution)
    ex = execution.replace(batch=chunk)

    def once() -> tuple[float, ascent.Results]:
        t = time.perf_counter()
        res = ascent.visualize(
            layer, filters, recipe, weights.params, weights.preprocessing, execution=ex
        )
        return time.perf_counter() - t, res

    first, res = once()
    walls = [once()[0] for _ in range(repeats)]
    wall = statistics.median(walls)
    return {
        "wall_s": wall,
        "walls_s": walls,
        # The first call compiles (init, every segment length, finish) and runs once.
        "compile_s": max(0.0, first - wall) + auto_s,
        "auto_chunk_s": auto_s,
        "chunk": chunk,
        "batch": str(execution.batch),
        "segment": execution.segment or auto_segment(recipe.steps, work.platform()),
        "unroll": execution.unroll,
        "final": res.objective[:, -1],
        "dead": int(res.zero_start_grad.sum()),
    }


def aot_compile_seconds(
    weights: Any, layer: str, recipe: Recipe, execution: Execution, chunk: int
) -> dict[str, Any]:
    """Seconds to trace, lower and compile every entry point of the program a run of ``recipe``
    compiles (init, each segment length, finish), without running it: how long a user waits
    before the first chunk of a long recipe starts. In-memory caches are cleared first."""
    jax.clear_caches()
    ascent.compiled_program.cache_clear()
    t = time.perf_counter()
    mesh, program, params, start, seed = prepared(weights, layer, recipe, execution)
    filters = jax.device_put(
        jnp.zeros((chunk,), jnp.int32), NamedSharding(mesh, PartitionSpec("filters"))
    )
    program.init.lower(params, start, filters, seed).compile()
    state = jax.eval_shape(program.init, params, start, filters, seed)
    for fn in program.advance.values():
        fn.lower(params, start, filters, seed, state, np.int32(0)).compile()
    program.finish.lower(params, start, filters, seed, state, np.int32(0)).compile()
    return {
        "compile_s": time.perf_counter() - t,
        "plan": [list(p) for p in program.plan[:3]] + (["..."] if len(program.plan) > 3 else []),
        "segments": len(program.plan),
        "segment_lengths": sorted(program.advance),
    }


def time_seed_way(
    weights: Any, layer: str, n: int, size: int, steps: int, dtype: str, max_filters: int
) -> dict[str, Any]:
    """The seed's way (classic recipe): one filter at a time, one jitted step per dispatch (the
    whole target layer, then one channel; XLA's convolutions), a Python loop over steps with the
    objective brought to the host every step, as Keras' ``K.function`` does in the article. Timed
    on ``min(n, max_filters)`` filters, scaled to ``n``."""
    model = vgg.VGG16(preprocessing=weights.preprocessing, dtype=jnp.dtype(dtype))
    params = jax.device_put(weights.params)

    @jax.jit
    def step(params: Any, x: jax.Array, f: jax.Array) -> tuple[jax.Array, jax.Array]:
        def obj(x: jax.Array) -> jax.Array:
            out = model.apply(params, x, layer)
            return jnp.mean(jnp.take(out, f, axis=-1).astype(jnp.float32))

        value, g = jax.value_and_grad(obj)(x)
        return x + g / (jnp.sqrt(jnp.mean(g * g)) + 1e-5), value

    x0 = ascent.noise_image(CLASSIC.replace(size=(size, size)))
    t = time.perf_counter()
    jax.block_until_ready(step(params, x0, 0))
    compile_s = time.perf_counter() - t
    m = min(n, max_filters)
    t = time.perf_counter()
    for f in range(m):
        x = x0
        for _ in range(steps):
            x, value = step(params, x, f)
            float(value)  # the host round trip per step
    return {"wall_s": (time.perf_counter() - t) * n / m, "compile_s": compile_s, "filters_timed": m}


#: One filter per program and one step per compiled call: the seed's way of *running*, with
#: vizjax's own step (any recipe).
ONE_AT_A_TIME = Execution(segment=1, unroll=1, batch=1)
