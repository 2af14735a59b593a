"""How much work a step is, and how fast this machine can do work.

Work is counted as "effective FLOPs" = 2 x the analytic forward conv FLOPs up to the target layer
per image-step (of the image the network sees, times the views per step), so figures compare
across implementations whatever work they skip.
"""

from __future__ import annotations

import resource
import statistics
import time

import jax
import jax.numpy as jnp

from vizjax.engine import cost

#: The analytic FLOP count lives in vizjax.engine.cost (shared with the run's ETA and ``--plan``).
analytic_forward_flops = cost.forward_flops
#: Effective FLOPs of one filter's step: 2 x forward of every view the network sees.
eff_flops_per_step = cost.flops_per_filter_step


def measure_peak(dtype: str, n: int, repeats: int = 5) -> float:
    """FLOP/s of an n x n matmul in ``dtype``, after compile, median of ``repeats``."""
    a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32).astype(dtype)
    b = jax.random.normal(jax.random.key(1), (n, n), jnp.float32).astype(dtype)
    return 2.0 * n**3 / median_seconds(jax.jit(lambda a, b: a @ b), a, b, repeats=repeats)


def median_seconds(f, *args, repeats: int = 5) -> float:
    """Median seconds of ``f(*args)``, blocked on, after one call that compiles."""
    f(*args).block_until_ready()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        f(*args).block_until_ready()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def peak_memory() -> tuple[int, str]:
    """Peak device memory on accelerators, else the process's max RSS."""
    dev = jax.local_devices()[0]
    stats = dev.memory_stats() if hasattr(dev, "memory_stats") else None
    if stats and "peak_bytes_in_use" in stats:
        return int(stats["peak_bytes_in_use"]), "device peak"
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, "host max RSS"


def platform() -> str:
    """The platform of the first local device: "cpu", "gpu", "tpu"."""
    return jax.local_devices()[0].platform
