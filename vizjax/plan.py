"""A plan: what ``vizjax atlas`` would do and how long it would take here, without doing it.

``vizjax atlas ... --plan`` calls :func:`make_plan`: per layer, the filters to do (those already
done in an existing atlas at ``--out`` are read, read-only, and left out), the time this machine
will take (each layer's own compiled program, timed for a couple of segments of one chunk and
scaled to the layer's steps and chunks; compiling timed apart), the atlas' size on disk (from the
schema's field sizes) and the total. Nothing is written: no atlas, no lock, no folder.

Why time each layer instead of extrapolating one: per filter-step, XLA runs each layer's program
at its own efficiency (bench/README.md); :mod:`vizjax.engine.cost` gives the work, which the run's ETA
divides by the rate it measures, and which this plan reports beside the timings.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jax
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec

from vizjax import schema
from vizjax.engine import adapter, ascent, cost
from vizjax.engine.chunk import auto_chunk, round_to_mesh
from vizjax.engine.cost import duration_text as _duration
from vizjax.engine.execution import Execution, auto_segment, keep_freed_host_memory
from vizjax.engine.recipe import Recipe
from vizjax.models import vgg
from vizjax.models.generic import GenericModel
from vizjax.models.network import Network
from vizjax.run import Request

#: Steps timed when a recipe runs as one loop over all its steps (see :func:`time_layer`).
SAMPLE_STEPS = 8


def atlas_bytes(
    layer: str, rows: int, recipe: Recipe, network: Network | GenericModel = vgg.NETWORK
) -> int:
    """Bytes on disk of ``rows`` filters of ``layer`` in an atlas: every per-row field of
    :data:`vizjax.schema.ROW_FIELDS` at the recipe's image size, K images and steps (the layer's
    channel count from the weights' ``network``)."""
    h, w = recipe.size or (128, 128)
    c = adapter.of(network).num_channels(layer, cost.network_hw(recipe))
    d = network.channels if isinstance(network, GenericModel) else 3
    dims = {"C": c, "K": recipe.images, "H": h, "W": w, "D": d, "T": recipe.steps}
    per_row = sum(
        np.dtype(f.dtype).itemsize * math.prod(schema.row_shape(f, dims)) for f in schema.ROW_FIELDS
    )
    return int(per_row * rows)


def done_in_atlas(out: str | Path, layers: Sequence[str]) -> dict[str, set[int]]:
    """The filters of each of ``layers`` already done in the atlas at ``out`` (read-only; empty
    sets if there is no file)."""
    from vizjax.atlas import open_atlas

    if not Path(out).exists():
        return {layer: set() for layer in layers}
    with open_atlas(out) as a:
        return {
            layer: {int(f) for f in a.layers[layer].completed()} if layer in a.layers else set()
            for layer in layers
        }


def time_layer(
    layer: str,
    filters: Sequence[int],
    recipe: Recipe,
    weights: Any,
    execution: Execution,
    start: np.ndarray,
) -> dict[str, Any]:
    """Compile ``layer``'s program for the chunk a run would use and time a step of it.

    Returns ``{"chunk", "compile_s", "step_s"}``: the chunk (filters per compiled call), the
    seconds to trace and compile every entry point the run would call (init, each segment
    length, finish, the measures), and the seconds of one step of one chunk (a segment after a first one).
    On an accelerator, a recipe that runs as one rolled loop over all its steps is timed on
    :data:`SAMPLE_STEPS` steps.
    """
    mesh = ascent.local_mesh()
    platform = mesh.devices.flat[0].platform
    if platform == "cpu":
        keep_freed_host_memory()
    segment = execution.segment or auto_segment(recipe.steps, platform)
    if platform != "cpu" and segment >= recipe.steps > SAMPLE_STEPS:
        # One rolled loop over every step (accelerators): its cost per step and its compile do
        # not depend on its length, so time a short one instead of running a chunk twice.
        # (XLA:CPU unrolls a segment: there the real one is compiled and timed.)
        recipe = recipe.replace(steps=SAMPLE_STEPS)
    program = ascent.compiled_program(
        layer, weights.preprocessing, recipe.program(), execution.program(), mesh, weights.network
    )
    rep = NamedSharding(mesh, PartitionSpec())
    shard = NamedSharding(mesh, PartitionSpec("filters"))
    t0 = time.perf_counter()
    network, raw = adapter.resolve(weights.params)  # a generic model stands for its own params
    params = program.prepare(jax.device_put(raw, rep))
    x0 = jax.device_put(np.asarray(start, np.float32), rep)
    seed = jax.device_put(np.int32(recipe.seed), rep)
    if execution.batch == "auto":
        chunk = auto_chunk(program, params, x0, seed, len(filters), mesh, layer, network)
    else:
        chunk = round_to_mesh(int(execution.batch), mesh)
    real = np.asarray(list(filters)[:chunk], np.int32)
    padded = ascent.padded(real, chunk)
    fs = jax.device_put(padded, shard)
    init = program.init.lower(params, x0, fs, seed).compile()
    state = jax.eval_shape(program.init, params, x0, fs, seed)
    advance = {
        n: fn.lower(params, x0, fs, seed, state, np.int32(0)).compile()
        for n, fn in program.advance.items()
    }
    program.finish.lower(params, x0, fs, seed, state, np.int32(0)).compile()
    # The run also measures each chunk's images (vizjax.analysis.fidelity): its compile counts too.
    out = jax.eval_shape(program.finish, params, x0, fs, seed, state, np.int32(0))
    measure = ascent.compiled_measure(
        layer,
        weights.preprocessing,
        recipe.preprocess,
        execution.program(),
        mesh,
        weights.network,
    )
    measure.lower(params, out["raw"], out["images"], fs).compile()
    compile_s = time.perf_counter() - t0
    # A first segment warms up (allocations, caches); the next one is timed.
    first, n = program.plan[0]
    later = program.plan[1] if len(program.plan) > 1 else program.plan[0]
    state = init(params, x0, fs, seed)
    state, _ = jax.block_until_ready(advance[n](params, x0, fs, seed, state, np.int32(first)))
    t = time.perf_counter()
    jax.block_until_ready(advance[later[1]](params, x0, fs, seed, state, np.int32(later[0])))
    step_s = (time.perf_counter() - t) / later[1]
    ascent.compiled_program.cache_clear()  # one layer's programs at a time in memory
    return {"chunk": chunk, "compile_s": compile_s, "step_s": step_s}


def make_plan(req: Request) -> dict[str, Any]:
    """The plan of ``vizjax atlas`` for this checked request (see the module docstring).

    Returns ``{"out", "recipe", "size", "steps", "network_hw", "views", "device", "layers":
    [{"layer", "filters", "done", "todo", "chunk", "ms_per_filter_step", "compile_s",
    "compute_s", "seconds", "work", "bytes"}], "compute_s", "compile_s", "seconds", "bytes",
    "warning"}``; ``seconds`` = compute + compile, ``warning`` the long-run line or None.
    """
    out, layers, recipe, weights, execution = (
        req.out,
        req.layers,
        req.recipe,
        req.weights,
        req.execution,
    )
    x0, wanted = req.start, req.wanted
    done = done_in_atlas(out, layers)
    rows = []
    for layer in layers:
        todo = [f for f in wanted[layer] if f not in done[layer]]
        row: dict[str, Any] = {
            "layer": layer,
            "filters": len(wanted[layer]),
            "done": len(wanted[layer]) - len(todo),
            "todo": len(todo),
            "work": len(todo) * cost.filter_work(layer, recipe, weights.network),
            "bytes": atlas_bytes(layer, len(wanted[layer]), recipe, weights.network),
            "chunk": None,
            "ms_per_filter_step": None,
            "compile_s": 0.0,
            "compute_s": 0.0,
        }
        if todo:
            t = time_layer(layer, todo, recipe, weights, execution, x0)
            chunks = math.ceil(len(todo) / t["chunk"])
            row.update(
                chunk=t["chunk"],
                ms_per_filter_step=1e3 * t["step_s"] / t["chunk"],
                compile_s=t["compile_s"],
                compute_s=chunks * recipe.steps * t["step_s"],
            )
        row["seconds"] = row["compile_s"] + row["compute_s"]
        rows.append(row)
    total = sum(r["seconds"] for r in rows)
    platform = jax.local_devices()[0].platform
    warning = (
        cost.long_run_warning(total, recipe.steps, recipe.size, platform)  # type: ignore[arg-type]
        if total > cost.LONG_RUN_SECONDS
        else None
    )
    return {
        "out": str(out),
        "recipe": recipe.name,
        "size": list(recipe.size),  # type: ignore[arg-type]
        "steps": recipe.steps,
        "network_hw": list(cost.network_hw(recipe)),
        "views": cost.views_per_step(recipe),
        "device": f"{len(jax.local_devices())} x {jax.local_devices()[0].device_kind}",
        "layers": rows,
        "compute_s": sum(r["compute_s"] for r in rows),
        "compile_s": sum(r["compile_s"] for r in rows),
        "seconds": total,
        "bytes": sum(r["bytes"] for r in rows),
        "warning": warning,
    }


def _size(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"  # pragma: no cover


def format_plan(plan: dict[str, Any]) -> str:
    """The plan as text: the long-run warning first (if any), a header, a line per layer, the
    total."""
    h, w = plan["size"]
    nh, nw = plan["network_hw"]
    lines = [plan["warning"]] if plan["warning"] else []
    lines.append(
        f"plan for {plan['out']}: recipe {plan['recipe']}, {h}x{w} px (the network sees "
        f"{plan['views']} x {nh}x{nw}), {plan['steps']} steps, on {plan['device']}; nothing "
        "was written"
    )
    head = (
        "layer",
        "filters",
        "done",
        "to do",
        "chunk",
        "ms/filter-step",
        "compile",
        "time",
        "disk",
    )
    table = [head]
    for r in plan["layers"]:
        ms = r["ms_per_filter_step"]
        table.append(
            (
                r["layer"],
                str(r["filters"]),
                str(r["done"]),
                str(r["todo"]),
                str(r["chunk"] or "-"),
                f"{ms:.1f}" if ms is not None else "-",
                _duration(r["compile_s"]),
                _duration(r["compute_s"]),
                _size(r["bytes"]),
            )
        )
    n = sum(r["filters"] for r in plan["layers"])
    table.append(
        (
            "total",
            str(n),
            str(sum(r["done"] for r in plan["layers"])),
            str(sum(r["todo"] for r in plan["layers"])),
            "",
            "",
            _duration(plan["compile_s"]),
            _duration(plan["compute_s"]),
            _size(plan["bytes"]),
        )
    )
    widths = [max(len(row[i]) for row in table) for i in range(len(head))]
    for row in table:
        cells = [
            c.ljust(wd) if i == 0 else c.rjust(wd)
            for i, (c, wd) in enumerate(zip(row, widths, strict=True))
        ]
        lines.append("  ".join(cells))
    lines.append(
        f"predicted: {_duration(plan['seconds'])} on this machine ({_duration(plan['compute_s'])} "
        f"computing, {_duration(plan['compile_s'])} compiling), {_size(plan['bytes'])} on disk"
    )
    return "\n".join(lines)
