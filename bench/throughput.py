"""Throughput of vizjax's engine against the seed's way and a PyTorch loop, in the same run.

Plain script (not a test), run from the repository root. Prints Markdown tables and appends one
JSON line per measurement to ``bench/results/<device>-<date>.jsonl`` (device, CPU model, jax
version and date in every line)::

    python -m bench.throughput --quick            # < 3 min on a 2-core CPU: main row, peak, scaling sample
    python -m bench.throughput                    # the three works vs the seed's way + scaling table
    python -m bench.throughput --peer torch       # ... and PyTorch on the same works, right after vizjax
    python -m bench.throughput --recipes          # per-step cost of the presets, 512-step compile, segments
    python -m bench.throughput --whole-model --size 224   # predicted whole-model atlas (default recipe)

What is timed and how: :mod:`bench.timing`; work and peak: :mod:`bench.work`. The settings of each
mode are one frozen :class:`Settings` (``FULL``, ``QUICK``, ``TINY``); the command line only
overrides fields of it.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import jax
import numpy as np

from bench import peer, timing, whole_model, work
from bench.report import Log, OthersCpu, busy, fmt, machine_info, results_path, table
from vizjax.engine import ascent, transform
from vizjax.engine.execution import Execution, auto_segment
from vizjax.engine.recipe import CLASSIC, DEFAULT_RECIPE, Recipe, preset
from vizjax.models import vgg

#: A work: (layer, image side, filters).
Work = tuple[str, int, int]
#: Re-exported for the tests and older notes: the PyTorch peer's agreement tolerance.
AGREE_RTOL = peer.AGREE_RTOL
torch_python = peer.torch_python
#: A recipe-table row that is not a preset: classic at the size lucid's transforms feed the
#: network (140 px for a 128 px image), to tell the cost of lucid's larger input from the rest.
CLASSIC_AT_LUCID_INPUT = "classic@lucid-input"


@dataclasses.dataclass(frozen=True)
class Scaling:
    """The scaling table: vizjax at fixed chunks vs the seed's way."""

    layers: tuple[str, ...]
    sizes: tuple[int, ...]
    chunks: tuple[int, ...]
    filters: int
    steps: int


@dataclasses.dataclass(frozen=True)
class Settings:
    """Everything a mode of this benchmark measures. ``size`` None: the section's default
    (128 px for the recipe tables, 224 px for the whole model)."""

    works: tuple[Work, ...]
    works_title: str
    scaling: Scaling
    matmul_n: int | None = None  # None: 4096 on a CPU, 8192 on an accelerator
    repeats: int = 3
    steps: int = 20  # classic steps of the works
    seed_filters: int = 4  # filters the seed's way is timed on (scaled to the work)
    size: int | None = None
    dtype: str = "float32"
    batch: int | str = "auto"
    recipe_names: tuple[str, ...] = (
        "classic",
        CLASSIC_AT_LUCID_INPUT,
        "lucid",
        "keras-vis",
        "maco",
    )
    recipe_layers: tuple[str, ...] = ("block3_conv3", "block5_conv1")
    recipe_filters: int = 2
    segment_steps: int = 32
    segment_filters: int = 2
    segment_table: tuple[tuple[int, int], ...] = (
        (1, 1),
        (4, 4),
        (8, 8),
        (16, 16),
        (32, 1),
        (32, 8),
        (32, 32),
    )
    wm_filters: int = 2
    wm_single_steps: int = 4

    def replace(self, **changes: Any) -> Settings:
        return dataclasses.replace(self, **changes)


#: The three works of issue 10, 20 classic steps each, and the scaling table over three layers.
FULL = Settings(
    works=(("block1_conv2", 64, 32), ("block3_conv3", 128, 16), ("block5_conv1", 128, 16)),
    works_title="works",
    scaling=Scaling(
        ("block1_conv2", "block3_conv3", "block5_conv1"), (64, 128, 224), (1, 8), 8, 10
    ),
)
#: Under 3 minutes on a 2-core CPU: the main row, the peak, a scaling sample.
QUICK = FULL.replace(
    works=(("block3_conv3", 128, 4),),
    works_title="main",
    scaling=Scaling(("block1_conv2", "block3_conv3"), (64,), (1, 8), 8, 10),
    matmul_n=2048,
)
#: Seconds, on any machine: every code path alive (the tests run it).
TINY = FULL.replace(
    works=(("block2_conv1", 32, 2),),
    works_title="main",
    scaling=Scaling(("block1_conv2",), (32,), (1, 2), 2, 2),
    matmul_n=128,
    repeats=1,
    steps=2,
    seed_filters=1,
    size=32,
    recipe_names=("classic", CLASSIC_AT_LUCID_INPUT, "lucid"),
    recipe_layers=("block2_conv1",),
    recipe_filters=1,
    segment_steps=4,
    segment_filters=1,
    segment_table=((2, 2), (4, 1)),
)


@dataclasses.dataclass
class Context:
    weights: Any
    log: Log
    peaks: dict[str, float]
    settings: Settings


def log_row(ctx: Context, row: dict[str, Any], eff_flops: float) -> dict[str, Any]:
    """Add the derived figures and write the JSON line."""
    n, steps = row["filters"], row["steps"]
    peak = ctx.peaks.get(row.get("dtype", "float32"), float("nan"))
    row = {
        **row,
        "filters_per_s": n / row["wall_s"],
        "ms_per_filter_step": 1e3 * row["wall_s"] / (n * steps),
        "eff_gflops": eff_flops / row["wall_s"] / 1e9,
        "peak_gflops": peak / 1e9,
        "eff_over_peak": eff_flops / row["wall_s"] / peak,
    }
    return ctx.log.emit(row)


# ---------------------------------------------------------------------------------------------
# Sections


def section_peak(matmul_n: int, log: Log) -> dict[str, float]:
    peaks = {d: work.measure_peak(d, matmul_n) for d in ("float32", "bfloat16")}
    for d, v in peaks.items():
        log.emit({"table": "peak", "dtype": d, "matmul_n": matmul_n, "gflops": v / 1e9})
    print(
        f"\nmatmul peak ({matmul_n}x{matmul_n}, median of 5): float32 "
        f"{peaks['float32'] / 1e9:.0f} GFLOP/s, bfloat16 {peaks['bfloat16'] / 1e9:.0f} GFLOP/s"
    )
    return peaks


def _torch_peer(use: bool, weights: Any) -> tuple[Path | None, Path | None]:
    """(PyTorch's interpreter, the exported weights) if ``--peer torch`` and it is there."""
    if not use:
        return None, None
    python = peer.torch_python()
    if python is None:
        print(
            "\nnote: --peer torch skipped: no PyTorch environment (make bench/.venv-torch as "
            "bench/README.md says, or set VIZJAX_TORCH_PYTHON)"
        )
        return None, None
    npz = Path(tempfile.mkdtemp(prefix="vizjax-bench-")) / "weights.npz"
    peer.export_weights(weights, npz)
    return python, npz


def _time_torch(
    ctx: Context, python: Path, npz: Path, base: dict, recipe: Recipe, final: Any, eff: float
) -> tuple[dict | None, dict]:
    """PyTorch on the work ``base`` describes; (its output, its logged row) or (None, {})."""
    s = ctx.settings
    try:
        start = np.asarray(ascent.noise_image(recipe))
        t = peer.run_torch(python, npz, start, base["layer"], base["filters"], s.steps, s.repeats)
    except RuntimeError as e:
        print(f"note: PyTorch failed on {base['layer']}: {e}")
        return None, {}
    t["agree"] = peer.agreement(final, np.asarray(t["final"]))
    row = {
        **base,
        "way": "torch",
        "dtype": "float32",
        "wall_s": t["wall_s"],
        "walls_s": t.get("walls_s"),
        "peer": t["peer"],
        "agree_max_rel": t["agree"],
        "final": t["final"],
        "threads": t.get("threads"),
    }
    return t, log_row(ctx, row, eff)


def section_works(ctx: Context, use_torch: bool) -> list[dict]:
    """Each work (layer, size, filters; ``steps`` classic steps): vizjax, then the seed's way
    and PyTorch (``--peer torch``) on the same filters, weights and start image, in this run."""
    s, w = ctx.settings, ctx.weights
    python, npz = _torch_peer(use_torch, w)
    rows, out = [], []
    for layer, size, n in s.works:
        recipe = CLASSIC.replace(size=(size, size), steps=s.steps)
        eff = work.eff_flops_per_step(layer, recipe) * n * s.steps
        base = {"table": s.works_title, "layer": layer, "size": size, "filters": n}
        base["steps"] = s.steps
        ex = Execution(dtype=s.dtype, batch=s.batch)
        v = timing.time_vizjax(w, layer, list(range(n)), recipe, ex, s.repeats)
        rv = log_row(ctx, {**base, "way": "vizjax", "dtype": s.dtype, **v}, eff)
        sw = timing.time_seed_way(w, layer, n, size, s.steps, s.dtype, s.seed_filters)
        rs = log_row(ctx, {**base, "way": "seed", "dtype": s.dtype, **sw}, eff)
        t, rt = (None, {})
        if python is not None and npz is not None:
            t, rt = _time_torch(ctx, python, npz, base, recipe, rv["final"], eff)
        agree = "–"
        if t:
            agree = f"{t['agree']:.1e}" + ("" if t["agree"] <= AGREE_RTOL else " (!)")
        rows.append(
            [
                layer,
                size,
                n,
                rv["chunk"],
                fmt(rv["compile_s"], 1),
                fmt(rv["wall_s"]),
                fmt(rs["wall_s"]),
                f"{rs['wall_s'] / rv['wall_s']:.2f}x",
                fmt(t["wall_s"]) if t else "–",
                f"**{t['wall_s'] / rv['wall_s']:.2f}x**" if t else "–",
                agree,
                f"{rv['eff_gflops']:.0f}",
                f"{rv['eff_over_peak']:.0%}",
                busy(rv, rs, rt),
            ]
        )
        out.append({"vizjax": rv, "seed": rs, "torch": t})
    hdr = ("layer", "px", "filters", "chunk", "compile s", "vizjax s", "seed's way s", "vs seed")
    hdr += ("PyTorch s", "vs PyTorch", "final act. rel. diff", "eff GFLOP/s", "of peak")
    hdr += ("others' CPU",)
    print(f"\n## {s.works_title}: {s.steps} classic steps, {s.dtype}, median of {s.repeats}")
    how = f"bench/peers/torch_loop.py, {s.repeats} runs after a warm-up" if python else "not run"
    print(f"(seed's way timed on ≤{s.seed_filters} filters and scaled; PyTorch: {how})\n")
    print(table(hdr, rows))
    return out


def section_scaling(ctx: Context) -> None:
    """vizjax at fixed chunks (and which one ``auto`` picks) vs the seed's way, classic, float32."""
    w, sc, rows = ctx.weights, ctx.settings.scaling, []
    n, steps = sc.filters, sc.steps
    for layer in sc.layers:
        for size in sc.sizes:
            recipe = CLASSIC.replace(size=(size, size), steps=steps)
            eff = work.eff_flops_per_step(layer, recipe) * n * steps
            base = {"table": "scaling", "layer": layer, "size": size, "filters": n}
            base.update(steps=steps, dtype="float32")
            seed = timing.time_seed_way(w, layer, n, size, steps, "float32", max(1, n // 4))
            s = log_row(ctx, {**base, "way": "seed", **seed}, eff)
            auto, _ = timing.auto_chunk(w, layer, n, recipe, Execution())
            for c in sc.chunks:
                if c > n:
                    continue
                ex = Execution(batch=c)
                v = timing.time_vizjax(w, layer, list(range(n)), recipe, ex, repeats=1)
                r = log_row(ctx, {**base, "way": "vizjax", **v, "auto_picks": auto}, eff)
                rows.append(
                    [
                        layer,
                        size,
                        f"{c}{' (auto)' if c == auto else ''}",
                        fmt(r["compile_s"], 1),
                        fmt(r["wall_s"]),
                        fmt(r["filters_per_s"]),
                        f"{r['eff_gflops']:.0f}",
                        f"{s['eff_gflops']:.0f}",
                        f"{s['wall_s'] / r['wall_s']:.2f}x",
                        busy(s, r),
                    ]
                )
            ascent.compiled_program.cache_clear()
            jax.clear_caches()
    print(f"\n## scaling: {n} filters, {steps} classic steps, float32, one run each")
    print("(seed's way timed on a quarter of the filters and scaled)\n")
    hdr = ("layer", "px", "chunk", "compile s", "wall s", "filters/s", "eff GFLOP/s")
    print(table((*hdr, "seed eff GFLOP/s", "vs seed", "others' CPU"), rows))


def recipe_row(name: str, size: int) -> Recipe:
    """The recipe a row of the recipe table times, at ``size`` px."""
    if name == CLASSIC_AT_LUCID_INPUT:
        lucid = preset("lucid").replace(size=(size, size))
        return CLASSIC.replace(size=transform.out_hw(lucid.transforms, lucid.size))
    return preset(name).replace(size=(size, size))


def timing_steps(recipe: Recipe, segment: int) -> int:
    """Steps to time a recipe on: all of them when they fit in two segments, else two segments
    (per-step cost does not depend on the step count once the program is fixed)."""
    return recipe.steps if recipe.steps <= 2 * segment else 2 * segment


def time_recipe(ctx: Context, layer: str, full: Recipe) -> dict[str, Any]:
    """One recipe at one layer: the first steps timed, and, for a longer recipe, the cost of a
    later step (the difference with a run of twice the steps: lucid's redirected ReLU runs for
    the first 16 steps only). ``full_ms`` is the full run's per-step cost."""
    s, w = ctx.settings, ctx.weights
    seg = auto_segment(full.steps, work.platform())
    steps = timing_steps(full, seg)
    recipe = full.replace(steps=steps)
    ex = Execution(dtype=s.dtype, segment=seg)
    filters = list(range(s.recipe_filters))
    v = timing.time_vizjax(w, layer, filters, recipe, ex, s.repeats)
    n = len(filters)
    late_ms = None
    if full.steps > steps:
        v2 = timing.time_vizjax(w, layer, filters, full.replace(steps=2 * steps), ex, s.repeats)
        if v2["wall_s"] > v["wall_s"]:
            late_ms = 1e3 * (v2["wall_s"] - v["wall_s"]) / (n * steps)
            v["late_ms_per_filter_step"] = late_ms
            v["full_ms_per_filter_step"] = (
                1e3 * v["wall_s"] / n + late_ms * (full.steps - steps)
            ) / full.steps
        else:
            # The longer run was not slower: noise exceeded a later step's cost (the tiny model,
            # a loaded machine), so no difference is reported; the longer run's mean stands in.
            v["late_ms_per_filter_step"] = None
            v["full_ms_per_filter_step"] = 1e3 * v2["wall_s"] / (n * 2 * steps)
    first_ms = 1e3 * v["wall_s"] / (n * steps)
    return {
        "v": v,
        "seg": seg,
        "steps": steps,
        "eff": work.eff_flops_per_step(layer, recipe) * n * steps,
        "first_ms": first_ms,
        "late_ms": late_ms,
        "full_ms": v.get("full_ms_per_filter_step", first_ms),
    }


def section_recipe_table(ctx: Context, size: int) -> None:
    """Per-step cost and filters/s of the presets, each against classic on the same input."""
    s = ctx.settings
    rows, classic_ms, same_input_ms = [], {}, {}
    for layer in s.recipe_layers:
        for name in s.recipe_names:
            full = recipe_row(name, size)
            net_hw = transform.out_hw(full.transforms, full.size)
            t = time_recipe(ctx, layer, full)
            ms = t["full_ms"]
            if name == "classic":
                classic_ms[layer] = ms
            if name in ("classic", CLASSIC_AT_LUCID_INPUT):
                same_input_ms[layer, net_hw] = ms
            ratio = ms / classic_ms[layer] if layer in classic_ms else float("nan")
            same = same_input_ms.get((layer, net_hw))
            row = {"table": "recipes", "recipe": name, "layer": layer, "size": size}
            row.update(filters=s.recipe_filters, steps=t["steps"], full_steps=full.steps)
            row.update(dtype=s.dtype, network_input=list(net_hw))
            row["vs_classic_same_input"] = None if same is None else ms / same
            r = log_row(ctx, {**row, **t["v"]}, t["eff"])
            rows.append(
                [
                    name,
                    layer,
                    f"{t['steps']} of {full.steps}",
                    t["seg"],
                    r["chunk"],
                    fmt(r["compile_s"], 1),
                    f"{t['first_ms']:.1f}",
                    "–" if t["late_ms"] is None else f"{t['late_ms']:.1f}",
                    f"{ms:.1f}",
                    fmt(ratio),
                    f"{net_hw[0]} px: " + ("–" if same is None else fmt(ms / same)),
                    f"{1e3 / (ms * full.steps):.3f}",
                    f"{r['eff_gflops']:.0f}",
                    busy(r),
                ]
            )
    print(
        f"\n## recipes at {size} px, {s.recipe_filters} filters, {s.dtype}, median of {s.repeats}"
    )
    print(
        "(timed on the steps shown, in the segments the full recipe runs in on this platform; "
        "a later step's cost is the difference with a run of twice those steps; the full run's "
        "per-step cost and filters/s are extrapolated from both)\n"
    )
    hdr = ("recipe", "layer", "steps timed", "segment", "chunk", "compile s")
    hdr += ("ms / filter-step (steps timed)", "ms / later step", "ms / filter-step (full run)")
    hdr += ("vs classic step", "network input: vs classic there", "filters/s (full steps)")
    print(table((*hdr, "eff GFLOP/s", "others' CPU"), rows))


def section_compile512(ctx: Context, size: int) -> None:
    """Compile seconds of the full 512-step lucid programs, as a run compiles them."""
    s, w, rows = ctx.settings, ctx.weights, []
    for layer in s.recipe_layers:
        lucid = preset("lucid").replace(size=(size, size))
        ex = Execution(dtype=s.dtype)
        chunk, _ = timing.auto_chunk(w, layer, vgg.num_channels(layer), lucid, ex)
        c = timing.aot_compile_seconds(w, layer, lucid, ex, chunk)
        row = {"table": "compile512", "recipe": "lucid", "layer": layer, "size": size}
        ctx.log.emit({**row, "steps": lucid.steps, "chunk": chunk, "dtype": s.dtype, **c})
        lengths = f"{c['segments']} x {c['segment_lengths']}"
        rows.append([layer, lucid.steps, chunk, lengths, f"{c['compile_s']:.1f}"])
    print(
        f"\n## compile seconds of the 512-step lucid program ({size} px, default execution, "
        "trace + lower + compile)\n"
    )
    print(table(("layer", "steps", "chunk", "segments x length", "compile s"), rows))


def section_segments(ctx: Context, size: int) -> None:
    """Segment length and unrolling: compile cost against per-step cost, at the deepest layer
    measured (block5_conv1 by default: where compile time hurts most)."""
    s, w, rows = ctx.settings, ctx.weights, []
    layer, n = s.recipe_layers[-1], s.segment_filters
    lucid = preset("lucid").replace(size=(size, size), steps=s.segment_steps)
    for seg, unroll in s.segment_table:
        ex = Execution(dtype=s.dtype, segment=seg, unroll=unroll)
        v = timing.time_vizjax(w, layer, list(range(n)), lucid, ex, s.repeats)
        eff = work.eff_flops_per_step(layer, lucid) * n * lucid.steps
        row = {"table": "segments", "recipe": "lucid", "layer": layer, "size": size}
        row.update(filters=n, steps=lucid.steps, dtype=s.dtype)
        r = log_row(ctx, {**row, **v}, eff)
        unrolled = unroll if unroll else f"{seg} (all)"
        rows.append(
            [seg, unrolled, fmt(r["compile_s"], 1), f"{r['ms_per_filter_step']:.1f}", busy(r)]
        )
    print(
        f"\n## segment/unroll: lucid, {layer}, {size} px, {n} filters, "
        f"{lucid.steps} steps, median of {s.repeats}\n"
    )
    hdr = ("segment (steps per call)", "unroll", "compile s", "ms / filter-step", "others' CPU")
    print(table(hdr, rows))


def section_whole_model(ctx: Context, recipe_name: str, size: int, layers: Sequence[str]) -> None:
    s, w = ctx.settings, ctx.weights
    recipe = preset(recipe_name).replace(size=(size, size))

    def emit(way: str) -> Callable[[dict[str, Any]], Any]:
        row = {"table": "whole_model", "way": way, "recipe": recipe_name, "size": size}
        return lambda r: ctx.log.emit({**row, **r})

    b = whole_model.predict_whole_model(
        w,
        recipe,
        Execution(dtype=s.dtype),
        sample_filters=s.wm_filters,
        layers=layers,
        log=emit("vizjax"),
    )
    one = whole_model.predict_whole_model(
        w,
        recipe,
        timing.ONE_AT_A_TIME.replace(dtype=s.dtype),
        sample_filters=1,
        sample_segments=s.wm_single_steps,
        layers=layers,
        log=emit("one-at-a-time"),
    )
    for way, p in (("vizjax", b), ("one-at-a-time", one)):
        ctx.log.emit(whole_model.totals_row(way, recipe, size, p))
    whole_model.print_whole_model(b, one, recipe, size)


# ---------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--quick",
        action="store_true",
        help="main row, peak, small scaling sample (< 3 min on 2 cores)",
    )
    p.add_argument("--tiny", action="store_true", help="seconds-long smoke run (tests)")
    p.add_argument(
        "--peer", choices=("torch",), default=None, help="also time bench/peers/torch_loop.py"
    )
    p.add_argument("--recipes", action="store_true", help="only the recipe tables")
    p.add_argument("--whole-model", action="store_true", help="only the whole-model prediction")
    p.add_argument(
        "--recipe-names",
        default=None,
        help="--recipes: the rows (default classic,classic@lucid-input,lucid,keras-vis,maco)",
    )
    p.add_argument(
        "--recipe-layers",
        default=None,
        help="--recipes: layers (default block3_conv3,block5_conv1)",
    )
    p.add_argument(
        "--recipe-table-only",
        action="store_true",
        help="--recipes: skip the 512-step compile and segment tables",
    )
    p.add_argument("--no-scaling", action="store_true")
    p.add_argument("--recipe", default=DEFAULT_RECIPE, help="--whole-model: the preset")
    p.add_argument(
        "--model",
        default="vgg16",
        help="--whole-model: the network (vgg16, alexnet; its default weights)",
    )
    p.add_argument("--size", type=int, default=None, help="--whole-model / --recipes: image side")
    p.add_argument(
        "--layers", default=None, help="--whole-model: measure only these (others estimated)"
    )
    p.add_argument("--steps", type=int, default=None, help="classic steps of the works (20)")
    p.add_argument("--dtype", default=None, help="float32 (default) or bfloat16")
    p.add_argument("--batch", default=None, help="auto (default) or filters per chunk")
    p.add_argument("--repeats", type=int, default=None, help="timed runs per row, median (3)")
    p.add_argument(
        "--seed-filters", type=int, default=None, help="filters the seed's way is timed on"
    )
    p.add_argument("--matmul-n", type=int, default=None)
    p.add_argument("--out", default=None, help="JSON lines file (default bench/results/...)")
    return p


def settings_of(args: argparse.Namespace) -> Settings:
    """The mode's preset with the fields the command line gives."""
    s = TINY if args.tiny else QUICK if args.quick else FULL
    split = {"recipe_names": args.recipe_names, "recipe_layers": args.recipe_layers}
    changes: dict[str, Any] = {k: tuple(v.split(",")) for k, v in split.items() if v}
    for key in ("steps", "dtype", "repeats", "seed_filters", "matmul_n", "size"):
        if getattr(args, key) is not None:
            changes[key] = getattr(args, key)
    if args.batch is not None:
        changes["batch"] = args.batch if args.batch == "auto" else int(args.batch)
    s = s.replace(**changes)
    if s.matmul_n is None:
        s = s.replace(matmul_n=4096 if work.platform() == "cpu" else 8192)
    return s


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    s = settings_of(args)
    t_start = time.perf_counter()
    info = machine_info(argv)
    out = Path(args.out) if args.out else results_path(info)
    log = Log(out, info)
    run_others = OthersCpu()
    where = info["cpu_model"] if info["platform"] == "cpu" else info["device"]
    print(
        f"# {where} x{info['device_count']} ({info['platform']}), jax {info['jax']}, "
        f"{info['date']}, load {info['load1_at_start']}"
    )
    print(f"# {info['command']}")
    from vizjax.models.weights import default_weights, load_weights

    ctx = Context(load_weights(default_weights(args.model)), log, {}, s)
    assert s.matmul_n is not None
    ctx.peaks.update(section_peak(s.matmul_n, log))
    if args.whole_model:
        layers = args.layers.split(",") if args.layers else ctx.weights.network.conv_layers
        section_whole_model(ctx, args.recipe, s.size or 224, layers)
    elif args.recipes:
        section_recipe_table(ctx, s.size or 128)
        if not args.recipe_table_only:
            section_compile512(ctx, s.size or 128)
            section_segments(ctx, s.size or 128)
    else:
        section_works(ctx, use_torch=args.peer == "torch")
        if not args.no_scaling:
            section_scaling(ctx)
    mem, kind = work.peak_memory()
    took = time.perf_counter() - t_start
    others = run_others.since_last()
    row = {"table": "run", "seconds": took, "mem_bytes": mem, "mem_kind": kind}
    log.emit({**row, "others_cpu_run": others})
    share = others if others is not None else float("nan")
    print(f"\nother processes used {share:.0%} of the CPUs during this run")
    print(
        f"\n{kind}: {mem / 2**30:.2f} GiB; this run took {took:.0f} s (load at the end "
        f"{os.getloadavg()[0]:.2f}); wrote {out}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
