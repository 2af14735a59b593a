"""A whole-model atlas (every filter of every conv layer) predicted from a few timed steps per layer."""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

import jax

from bench import timing, work
from bench.report import fmt, human, table
from vizjax import models
from vizjax.engine import ascent, cost
from vizjax.engine.execution import Execution, auto_segment
from vizjax.engine.recipe import Recipe


def predict_whole_model(
    weights: Any,
    recipe: Recipe,
    execution: Execution,
    *,
    sample_filters: int = 2,
    sample_segments: int = 1,
    rolled_sample_steps: int = 8,
    layers: Sequence[str] | None = None,
    deadline: float | None = None,
    log: Callable[[dict[str, Any]], Any] | None = None,
) -> dict[str, Any]:
    """Predicted wall time of an atlas of every filter of every conv layer with ``recipe``.

    Per layer: the chunk ``execution.batch`` picks for the whole layer, one chunk (at least
    ``sample_filters``) run for ``sample_segments`` segments of the recipe's own segment length
    (compile timed on the first call, then a second call timed), extrapolated to the recipe's full
    steps and the layer's filter count, plus its compile time. Layers not reached before
    ``deadline`` (a ``time.perf_counter()`` value) or not in ``layers`` are estimated by
    :mod:`vizjax.engine.cost` (the work model of the run's ETA and ``vizjax atlas --plan``) at the
    measured layers' median work rate, with their median compile time (marked ``estimated``).
    Returns ``{"layers": [...], "total_s", "compile_s", "measured": n}``. The model is the
    weights' (``layers`` default: all its convolutions).
    """
    network = models.from_params(weights.params)
    layers = network.conv_layers if layers is None else layers
    seg = execution.segment or auto_segment(recipe.steps, work.platform())
    if seg < recipe.steps:  # a host loop over segments: time whole segments of that length
        steps, ex = min(recipe.steps, seg * sample_segments), execution.replace(segment=seg)
    else:  # one segment (a rolled loop on accelerators): its cost per step does not depend on length
        steps, ex = min(recipe.steps, rolled_sample_steps), execution.replace(segment=0)
    out = []
    for layer in network.conv_layers:
        c = network.num_channels(layer)
        eff_step = work.eff_flops_per_step(layer, recipe, network)
        row = {
            "layer": layer,
            "filters_total": c,
            "eff_gflop_per_filter_step": eff_step / 1e9,
            "work_g_per_filter_step": cost.work_per_filter_step(layer, recipe, network) / 1e9,
        }
        if layer in layers and (deadline is None or time.perf_counter() < deadline):
            chunk, probe_s = timing.auto_chunk(weights, layer, c, recipe, ex)
            n = min(c, max(sample_filters, chunk))
            sample = recipe.replace(steps=steps)
            v = timing.time_vizjax(
                weights, layer, list(range(n)), sample, ex.replace(batch=chunk), repeats=1
            )
            v["compile_s"] += probe_s  # the auto probe is compile time too
            per_chunk = v["wall_s"] / math.ceil(n / chunk) * recipe.steps / steps
            row.update(
                estimated=False,
                chunk=chunk,
                sample_filters=n,
                sample_steps=steps,
                compile_s=v["compile_s"],
                wall_s=math.ceil(c / chunk) * per_chunk,
                ms_per_filter_step=1e3 * v["wall_s"] / (n * steps),
            )
            row["eff_gflops"] = eff_step * c * recipe.steps / row["wall_s"] / 1e9
            row["work_gps"] = row["work_g_per_filter_step"] * c * recipe.steps / row["wall_s"]
            ascent.compiled_program.cache_clear()
            jax.clear_caches()
        else:
            row.update(estimated=True)
        out.append(row)
        if log is not None and not row["estimated"]:
            log(row)
    measured = [r for r in out if not r["estimated"]]
    if measured:
        rate = statistics.median(r["work_gps"] for r in measured)
        comp = statistics.median(r["compile_s"] for r in measured)
        for r in out:
            if r["estimated"]:
                r["wall_s"] = r["work_g_per_filter_step"] * r["filters_total"] * recipe.steps / rate
                r["compile_s"] = comp
                r["ms_per_filter_step"] = 1e3 * r["work_g_per_filter_step"] / rate
    total = sum(r.get("wall_s", float("nan")) + r.get("compile_s", 0.0) for r in out)
    return {
        "layers": out,
        "total_s": total,
        "total_ahead_s": total_compiled_ahead(
            [(r.get("compile_s", 0.0), r.get("wall_s", float("nan"))) for r in out]
        ),
        "compile_s": sum(r.get("compile_s", 0.0) for r in out),
        "measured": len(measured),
        "steps": recipe.steps,
        "sample_steps": steps,
    }


def total_compiled_ahead(layers: list[tuple[float, float]]) -> float:
    """The wall time of a run over ``layers`` ((compile s, run s) each, in order) that compiles
    the next layer in one background thread while a layer runs (``--compile-ahead on``, as
    :func:`vizjax.run.run_atlas` does): the first layer's compile is paid, a later one only where
    it outlasts the layer before it. Compiles and runs are assumed not to slow each other (the
    accelerator runs, the host's cores compile)."""
    if not layers:
        return 0.0
    # The first layer compiles in the foreground while the background thread starts on the
    # second; each layer submits the next one when its turn comes.
    worker = end = 0.0  # when the background thread is free; when the last layer ended
    for i, (_, run_s) in enumerate(layers):
        start = end
        ready = layers[0][0] if i == 0 else max(start, worker)
        if i + 1 < len(layers):
            worker = max(worker, start) + layers[i + 1][0]
        end = ready + run_s
    return end


def print_whole_model(
    batched: dict[str, Any], single: dict[str, Any] | None, recipe: Recipe, size: int
) -> None:
    rows = []
    by = {r["layer"]: r for r in (single or {}).get("layers", [])}
    for r in batched["layers"]:
        s = by.get(r["layer"])
        rows.append(
            [
                r["layer"],
                r["filters_total"],
                r.get("chunk", "–"),
                f"{r['ms_per_filter_step']:.1f}" + (" (est.)" if r["estimated"] else ""),
                fmt(r["compile_s"], 1),
                human(r["wall_s"]),
                (f"{s['ms_per_filter_step']:.1f}" + (" (est.)" if s["estimated"] else ""))
                if s
                else "–",
                human(s["wall_s"] + s["compile_s"]) if s else "–",
            ]
        )
    n = sum(r["filters_total"] for r in batched["layers"])
    rows.append(
        [
            "**all**",
            n,
            "",
            "",
            fmt(batched["compile_s"], 0),
            f"**{human(batched['total_s'])}**",
            "",
            f"**{human(single['total_s'])}**" if single else "–",
        ]
    )
    print(
        f"\n## whole model: {recipe.name}, {n} filters, {size} px, {recipe.steps} steps "
        f"(timed on {batched['sample_steps']} steps, extrapolated; compile included in the total)\n"
    )
    print(
        table(
            (
                "layer",
                "filters",
                "chunk",
                "ms / filter-step",
                "compile s",
                "layer wall",
                "one-at-a-time ms / filter-step",
                "one-at-a-time layer",
            ),
            rows,
        )
    )
    if single:
        print(
            f"\npredicted whole-model atlas on this machine: vizjax {human(batched['total_s'])}, "
            f"one filter at a time with one step per call (the seed's way) {human(single['total_s'])} "
            f"({single['total_s'] / batched['total_s']:.1f}x longer)"
        )
    print(
        f"\nwith --compile-ahead on (the next layer compiles while a layer runs; the default on "
        f"GPUs/TPUs): {human(batched['total_ahead_s'])} instead of {human(batched['total_s'])}"
    )


def totals_row(way: str, recipe: Recipe, size: int, prediction: dict[str, Any]) -> dict[str, Any]:
    """The JSON line of one whole-model prediction's total."""
    return {
        "table": "whole_model_total",
        "way": way,
        "recipe": recipe.name,
        "size": size,
        "total_s": prediction["total_s"],
        "compile_s": prediction["compile_s"],
        "total_ahead_s": prediction.get("total_ahead_s"),
        "measured_layers": prediction["measured"],
    }
