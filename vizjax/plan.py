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
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jax
import numpy as np

from vizjax import schema
from vizjax.engine import adapter, cost, tuning
from vizjax.engine.cost import duration_text as _duration
from vizjax.engine.recipe import Recipe
from vizjax.engine.tuning import time_layer
from vizjax.models import vgg
from vizjax.models.generic import GenericModel
from vizjax.models.network import Network
from vizjax.run import Request


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


def make_plan(req: Request) -> dict[str, Any]:
    """The plan of ``vizjax atlas`` for this checked request (see the module docstring).

    Returns ``{"out", "recipe", "size", "steps", "network_hw", "views", "device", "layers":
    [{"layer", "filters", "done", "todo", "chunk", "ms_per_filter_step", "compile_s",
    "compute_s", "seconds", "work", "bytes", "tuning"}], "compute_s", "compile_s", "seconds",
    "bytes", "warning"}``; ``seconds`` = compute + compile, ``warning`` the long-run line or None;
    ``tuning`` the layer's execution decision (:class:`vizjax.engine.tuning.Decision`'s JSON,
    None for a request that was not tuned), each layer timed with its own execution.
    """
    out, layers, recipe, weights = req.out, req.layers, req.recipe, req.weights
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
            "tuning": req.tuning[layer].to_json() if layer in req.tuning else None,
        }
        if todo:
            t = time_layer(layer, todo, recipe, weights, req.execution_of(layer), x0)
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
        "tuned",
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
                tuning.origin(r["tuning"]) if r["tuning"] else "-",
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
            "",
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
