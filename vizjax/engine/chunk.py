"""How many filters one compiled program takes at once: the chunk.

A chunk is always a whole number of filters per device (:func:`round_to_mesh`). ``batch="auto"``
picks it with :func:`auto_chunk`: on CPUs by a rule measured on CPUs
(:func:`cpu_filters_per_device`), on accelerators by the compiled program's memory analysis; and
:func:`balanced_chunk` spreads the filters evenly over as few chunks as that size allows. Which
chunk a filter ran in never changes its result (:mod:`vizjax.engine.ascent`).
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from vizjax import models
from vizjax.engine import adapter
from vizjax.engine.execution import Execution
from vizjax.models import vgg
from vizjax.models.generic import GenericModel
from vizjax.models.network import Network

#: Filters per device per chunk that ``batch="auto"`` allows on accelerators, which want big
#: batches and are limited by memory instead (see :func:`auto_chunk`).
AUTO_CAP_DEFAULT = 512


def cpu_filters_per_device(
    layer: str,
    height: int,
    width: int,
    network: Network | GenericModel = vgg.NETWORK,
    onednn: bool = False,
) -> int:
    """How many filters one CPU program should optimize at once (measured on 2-core CPUs).

    One image at a time is fastest while the images are large: the early layers' working set
    stays in cache. Only for small images (at most 96x96 px) whose target layer's output is small
    too (at most 64Ki values: block4-5 at 64 px) do the deep layers' matrix products get too small
    to keep the cores busy, and 8 filters per program are 1.1-1.25x faster. At 128 px one image
    is faster at every layer, block5 included (1.2-1.45x: bench/README.md, "The CPU chunk rule").

    With oneDNN's convolutions (``onednn``: :mod:`vizjax.models.onednn`, bfloat16 on AMX) one image
    leaves its kernels too little work at every layer: 4 filters per program, 8 where the target
    layer's output is small (at most 64Ki values: block5 at 128 px). Measured on a 2-core Xeon
    with AMX, 128 px, ms per filter-step at 1 / 4 / 8 filters: block5_conv1 lucent 50.8 / 31.1 /
    29.9, classic 30.0 / 17.9 / 14.2; block3_conv3 lucent 35.5 / 24.6 / 23.8; block1_conv2 lucent
    17.0 / 14.1 / 16.2 (performance page).
    """
    size = math.prod(adapter.of(network).output_shape(layer, height, width))
    if onednn:
        return 8 if size <= 65536 else 4
    small_image = height * width <= 96 * 96
    return 8 if small_image and size <= 65536 else 1


def round_to_mesh(n: int, mesh: Mesh) -> int:
    """``n`` rounded up to a multiple of the mesh's device count (every device the same share)."""
    d = mesh.devices.size
    return math.ceil(n / d) * d


def memory_budget(device: jax.Device) -> int | None:
    """Bytes one accelerator may still use, or None if it does not say."""
    stats = device.memory_stats() if hasattr(device, "memory_stats") else None
    if stats and "bytes_limit" in stats:
        return int(stats["bytes_limit"]) - int(stats.get("bytes_in_use", 0))
    return None


def auto_chunk(
    program: Any,
    params: Any,
    start: jax.Array,
    seed: jax.Array,
    n: int,
    mesh: Mesh,
    layer: str,
    network: Network | GenericModel | None = None,
    execution: Execution | None = None,
) -> int:
    """The chunk size ``batch="auto"`` picks (a multiple of the device count) for ``n`` filters
    of ``layer`` run by ``program`` (a :class:`vizjax.engine.ascent.Program`, whose first step segment
    the accelerator branch compiles to read its memory analysis).

    On accelerators: the largest chunk that fits in device memory, by XLA's compiled memory
    analysis of the step segment with one filter per device (its temporaries plus arguments are
    the per-filter cost, which scales linearly with the vmapped axis; the budget is 80% of the free
    device memory), capped at AUTO_CAP_DEFAULT filters per device. On CPU speed, not memory, is
    the limit: ``execution.per_device`` if given (the tuning table's, :mod:`vizjax.engine.tuning`),
    else :func:`cpu_filters_per_device` (oneDNN's rule where the run's convolutions are oneDNN's;
    at most 8 images, far below any memory limit), so no probe
    is compiled. Never more than the filters there are, and balanced: the fewest chunks
    that hold ``n`` filters at that size, made as even as they can be, so the last one is not
    mostly padding (20 filters at most 8 a chunk: 3 chunks of 7, not 8 + 8 + 4 padded to 8).
    """
    d = mesh.devices.size
    device = mesh.devices.flat[0]
    if device.platform == "cpu":
        network = network if network is not None else models.from_params(params)
        ex = execution or Execution()
        per_device = ex.per_device or cpu_filters_per_device(
            layer, start.shape[0], start.shape[1], network, adapter.uses_onednn(ex, "cpu")
        )
        return balanced_chunk(n, per_device, d)
    per_device = min(AUTO_CAP_DEFAULT, math.ceil(n / d))
    if per_device > 1:
        filters = jax.device_put(
            jnp.zeros((d,), jnp.int32), NamedSharding(mesh, PartitionSpec("filters"))
        )
        state = jax.eval_shape(program.init, params, start, filters, seed)
        first, steps = program.plan[0]
        probe = program.advance[steps].lower(params, start, filters, seed, state, np.int32(0))
        mem = probe.compile().memory_analysis()
        budget = memory_budget(device)
        if mem is not None and budget:
            per_filter = max(
                1, mem.temp_size_in_bytes + mem.output_size_in_bytes + mem.argument_size_in_bytes
            )
            per_device = max(1, min(per_device, int(0.8 * budget) // per_filter))
    return balanced_chunk(n, per_device, d)


def balanced_chunk(n: int, per_device: int, d: int) -> int:
    """The chunk (a multiple of ``d``) for ``n`` filters at most ``per_device`` per device: as
    few chunks as that allows, each as full as the others."""
    chunks = math.ceil(n / (per_device * d))
    return max(1, math.ceil(n / (chunks * d))) * d
