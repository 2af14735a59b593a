"""Throughput of vizjax's engine against the seed's way and a PyTorch loop, in the same run.

Plain script (not a test). Prints Markdown tables and appends one JSON line per measurement to
``bench/results/<device>-<date>.jsonl`` (device, CPU model, jax version and date in every line)::

    python bench/throughput.py --quick            # < 3 min on a 2-core CPU: main row, peak, scaling sample
    python bench/throughput.py                    # the three works vs the seed's way + scaling table
    python bench/throughput.py --peer torch       # ... and PyTorch on the same works, right after vizjax
    python bench/throughput.py --recipes          # per-step cost of the presets, 512-step compile, segments
    python bench/throughput.py --whole-model --recipe lucid --size 224   # predicted whole-model atlas

Timing: every vizjax row is the public API (:func:`vizjax.ascent.visualize`) on the chunk
``batch="auto"`` picks, called once to compile (``compile s`` = that first call minus a steady
one) and then ``--repeats`` times (median). Work is counted as "effective FLOPs" = 2 x the analytic
forward conv FLOPs up to the target layer per image-step (of the image the network sees, times the
views per step), so figures compare across implementations whatever work they skip.

The persistent compilation cache is left off here (unless JAX_COMPILATION_CACHE_DIR is set), so
``compile s`` is the cold figure.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import math
import os
import platform
import resource
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec

from vizjax import ascent, cost, transform, vgg
from vizjax.execution import Execution, auto_segment
from vizjax.recipe import CLASSIC, Recipe, preset

BENCH = Path(__file__).resolve().parent
RESULTS = BENCH / "results"
TORCH_LOOP = BENCH / "peers" / "torch_loop.py"
#: Where bench/README.md says to make PyTorch's environment (git-ignored).
TORCH_VENV_PYTHON = BENCH / ".venv-torch" / "bin" / "python"

#: The three works of issue 10: (layer, size, filters), 20 classic steps each.
WORKS = (("block1_conv2", 64, 32), ("block3_conv3", 128, 16), ("block5_conv1", 128, 16))
#: Final activations of two implementations of the same work must agree within this.
AGREE_RTOL = 1e-3


# ---------------------------------------------------------------------------------------------
# The machine


def cpu_model() -> str:
    """The host CPU's model name (/proc/cpuinfo, else lscpu, else platform)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
        for line in out.splitlines():
            if line.startswith("Model name:"):
                return line.split(":", 1)[1].strip()
    except (OSError, subprocess.SubprocessError):
        pass
    return platform.processor() or "unknown CPU"


def machine_info(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """What every JSON line carries: device, CPU model, jax version, date, load, command."""
    devs = jax.local_devices()
    return {
        "device": devs[0].device_kind,
        "platform": devs[0].platform,
        "device_count": len(devs),
        "cpu_model": cpu_model(),
        "host_cpus": os.cpu_count(),
        "jax": jax.__version__,
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        # The 2-core machines are shared: a load above ~0.5 at the start means the figures are
        # suspect (other processes were running).
        "load1_at_start": round(os.getloadavg()[0], 2),
        "command": " ".join(shlex.quote(a) for a in (sys.argv[:1] + list(argv or sys.argv[1:]))),
        "compilation_cache": jax.config.jax_compilation_cache_dir or None,
    }


def device_label(info: dict[str, Any]) -> str:
    """``cpu-Intel_R_Xeon_R_Processor`` / ``gpu-NVIDIA_H100_80GB_HBM3``: the results file's name."""
    kind = info["cpu_model"] if info["platform"] == "cpu" else info["device"]
    safe = "".join(c if c.isalnum() else "_" for c in kind).strip("_")
    while "__" in safe:
        safe = safe.replace("__", "_")
    return f"{info['platform']}-{safe}"


class OthersCpu:
    """How much of the machine other processes used since the last call, as a fraction of all
    its cores (Linux /proc/stat; None elsewhere). A figure taken while other processes ran is
    suspect: every JSON line carries this, and a table row measured above ~0.1 should be redone."""

    def __init__(self) -> None:
        self.tick = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
        self.last = self._read()

    def _read(self) -> tuple[float, float, float] | None:
        try:
            with open("/proc/stat") as f:
                v = [int(x) for x in f.readline().split()[1:]]
        except (OSError, ValueError):
            return None
        busy = (sum(v) - v[3] - v[4]) / self.tick  # all but idle and iowait
        t = os.times()  # this process and its waited-for children (the PyTorch peer)
        own = t.user + t.system + t.children_user + t.children_system
        return busy, own, time.monotonic()

    def since_last(self) -> float | None:
        now = self._read()
        last, self.last = self.last, now
        if now is None or last is None or now[2] - last[2] < 1e-3:
            return None
        others = (now[0] - last[0]) - (now[1] - last[1])
        return round(max(0.0, others) / ((now[2] - last[2]) * (os.cpu_count() or 1)), 3)


class Log:
    """Appends JSON lines (machine info in each, and the other processes' CPU share since the
    previous line) and collects them."""

    def __init__(self, path: Path, info: dict[str, Any]) -> None:
        self.path, self.info, self.rows = path, info, []
        self.others = OthersCpu()
        path.parent.mkdir(parents=True, exist_ok=True)

    def emit(self, row: dict[str, Any]) -> dict[str, Any]:
        row = {**row, "others_cpu": self.others.since_last()}
        self.rows.append(row)
        with self.path.open("a") as f:
            f.write(json.dumps({**self.info, **row}, default=_json_default) + "\n")
        return row


def _json_default(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    return str(o)


def table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A Markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# Work and peak


#: The analytic FLOP count lives in vizjax.cost (shared with the run's ETA and ``--plan``).
analytic_forward_flops = cost.forward_flops
#: Effective FLOPs of one filter's step: 2 x forward of every view the network sees.
eff_flops_per_step = cost.flops_per_filter_step


def measure_peak(dtype: str, n: int, repeats: int = 5) -> float:
    """FLOP/s of an n x n matmul in ``dtype``, after compile, median of ``repeats``."""
    a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32).astype(dtype)
    b = jax.random.normal(jax.random.key(1), (n, n), jnp.float32).astype(dtype)
    f = jax.jit(lambda a, b: a @ b)
    f(a, b).block_until_ready()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        f(a, b).block_until_ready()
        times.append(time.perf_counter() - t)
    return 2.0 * n**3 / statistics.median(times)


def peak_memory() -> tuple[int, str]:
    """Peak device memory on accelerators, else the process's max RSS."""
    dev = jax.local_devices()[0]
    stats = dev.memory_stats() if hasattr(dev, "memory_stats") else None
    if stats and "peak_bytes_in_use" in stats:
        return int(stats["peak_bytes_in_use"]), "device peak"
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, "host max RSS"


# ---------------------------------------------------------------------------------------------
# vizjax, timed through its public API


def _prepared(weights: Any, layer: str, recipe: Recipe, execution: Execution) -> tuple:
    """What :func:`vizjax.ascent.iter_chunks` sets up before its first chunk."""
    mesh = ascent.local_mesh()
    program = ascent.compiled_program(
        layer, weights.preprocessing, recipe.program(), execution.program(), mesh
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
    mesh, program, params, start, seed = _prepared(weights, layer, recipe, execution)
    chunk = ascent.auto_chunk(program, params, start, seed, n, mesh, layer)
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
        "segment": execution.segment or auto_segment(recipe.steps, _platform()),
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
    mesh, program, params, start, seed = _prepared(weights, layer, recipe, execution)
    filters = jax.device_put(
        jnp.zeros((chunk,), jnp.int32), NamedSharding(mesh, PartitionSpec("filters"))
    )
    program.init.lower(params, start, filters, seed).compile()
    state = jax.eval_shape(program.init, params, start, filters, seed)
    for fn in program.advance.values():
        fn.lower(params, start, filters, seed, state, np.int32(0)).compile()
    program.finish.lower(params, start, filters, seed, state).compile()
    return {
        "compile_s": time.perf_counter() - t,
        "plan": [list(p) for p in program.plan[:3]] + (["..."] if len(program.plan) > 3 else []),
        "segments": len(program.plan),
        "segment_lengths": sorted(program.advance),
    }


def _platform() -> str:
    return jax.local_devices()[0].platform


# ---------------------------------------------------------------------------------------------
# The seed's way and one-filter-at-a-time


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


# ---------------------------------------------------------------------------------------------
# PyTorch, the strongest peer in shared/NOTES-measured.md


def torch_python() -> Path | None:
    """PyTorch's interpreter: $VIZJAX_TORCH_PYTHON, else bench/.venv-torch, else None."""
    env = os.environ.get("VIZJAX_TORCH_PYTHON")
    for p in ([Path(env)] if env else []) + [TORCH_VENV_PYTHON]:
        if p.is_file() and os.access(p, os.X_OK):
            return p
    return None


def export_weights(weights: Any, path: Path) -> None:
    """The weights and their preprocessing as the .npz torch_loop.py reads."""
    arrays = {
        f"{n}/{k}": np.asarray(v) for n, d in weights.params["params"].items() for k, v in d.items()
    }
    prep = weights.preprocessing
    arrays["preprocessing/mean"] = np.asarray(prep.mean, np.float32)
    arrays["preprocessing/std"] = np.asarray(prep.std, np.float32)
    arrays["preprocessing/scale"] = np.asarray(prep.scale, np.float32)
    arrays["preprocessing/bgr"] = np.asarray(prep.bgr)
    np.savez(path, **arrays)


def run_torch(
    python: Path, npz: Path, start: np.ndarray, layer: str, n: int, steps: int, repeats: int
) -> dict[str, Any]:
    """torch_loop.py in its own environment on the same weights, start image and filters."""
    with tempfile.TemporaryDirectory() as tmp:
        x0 = Path(tmp) / "start.npy"
        np.save(x0, np.asarray(start, np.float32))
        cmd = [str(python), str(TORCH_LOOP), "--weights", str(npz), "--start", str(x0)]
        cmd += ["--layer", layer, "--filters", str(n), "--steps", str(steps)]
        cmd += ["--repeats", str(repeats)]
        out = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"torch_loop.py failed ({out.returncode}): {out.stderr.strip()[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def agreement(a: np.ndarray, b: np.ndarray) -> float:
    """Largest relative difference of two implementations' final activations (0 where both 0)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    scale = np.maximum(np.maximum(np.abs(a), np.abs(b)), 1e-6 * max(np.abs(b).max(), 1e-30))
    return float(np.max(np.abs(a - b) / scale))


# ---------------------------------------------------------------------------------------------
# Sections


@dataclasses.dataclass
class Context:
    weights: Any
    log: Log
    peaks: dict[str, float]
    args: argparse.Namespace


def _fmt(x: float | None, digits: int = 2) -> str:
    return "–" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"


def section_peak(args: argparse.Namespace, log: Log) -> dict[str, float]:
    peaks = {d: measure_peak(d, args.matmul_n) for d in ("float32", "bfloat16")}
    for d, v in peaks.items():
        log.emit({"table": "peak", "dtype": d, "matmul_n": args.matmul_n, "gflops": v / 1e9})
    print(
        f"\nmatmul peak ({args.matmul_n}x{args.matmul_n}, median of 5): float32 "
        f"{peaks['float32'] / 1e9:.0f} GFLOP/s, bfloat16 {peaks['bfloat16'] / 1e9:.0f} GFLOP/s"
    )
    return peaks


def section_works(ctx: Context, works: Sequence[tuple[str, int, int]], title: str) -> list[dict]:
    """Each work (layer, size, filters; ``--steps`` classic steps): vizjax, then the seed's way
    and PyTorch (``--peer torch``) on the same filters, weights and start image, in this run."""
    args, w = ctx.args, ctx.weights
    peer = None
    if args.peer == "torch":
        peer = torch_python()
        if peer is None:
            print(
                "\nnote: --peer torch skipped: no PyTorch environment (make bench/.venv-torch as "
                "bench/README.md says, or set VIZJAX_TORCH_PYTHON)"
            )
    npz = None
    if peer is not None:
        npz = Path(tempfile.mkdtemp(prefix="vizjax-bench-")) / "weights.npz"
        export_weights(w, npz)
    rows, out = [], []
    for layer, size, n in works:
        recipe = CLASSIC.replace(size=(size, size), steps=args.steps)
        eff = eff_flops_per_step(layer, recipe) * n * args.steps
        base = {"table": title, "layer": layer, "size": size, "filters": n, "steps": args.steps}
        v = time_vizjax(
            w,
            layer,
            list(range(n)),
            recipe,
            Execution(dtype=args.dtype, batch=args.batch),
            args.repeats,
        )
        rv = log_row(ctx, {**base, "way": "vizjax", "dtype": args.dtype, **v}, eff)
        s = time_seed_way(w, layer, n, size, args.steps, args.dtype, args.seed_filters)
        rs = log_row(ctx, {**base, "way": "seed", "dtype": args.dtype, **s}, eff)
        t, rt = None, {}
        if peer is not None:
            try:
                t = run_torch(
                    peer,
                    npz,
                    np.asarray(ascent.noise_image(recipe)),
                    layer,
                    n,
                    args.steps,
                    args.repeats,
                )
            except RuntimeError as e:
                print(f"note: PyTorch failed on {layer}: {e}")
        if t is not None:
            t["agree"] = agreement(rv["final"], np.asarray(t["final"]))
            rt = log_row(
                ctx,
                {
                    **base,
                    "way": "torch",
                    "dtype": "float32",
                    "wall_s": t["wall_s"],
                    "walls_s": t.get("walls_s"),
                    "peer": t["peer"],
                    "agree_max_rel": t["agree"],
                    "final": t["final"],
                    "threads": t.get("threads"),
                },
                eff,
            )
        rows.append(
            [
                layer,
                size,
                n,
                rv["chunk"],
                _fmt(rv["compile_s"], 1),
                _fmt(rv["wall_s"]),
                _fmt(rs["wall_s"]),
                f"{rs['wall_s'] / rv['wall_s']:.2f}x",
                _fmt(t["wall_s"]) if t else "–",
                f"**{t['wall_s'] / rv['wall_s']:.2f}x**" if t else "–",
                f"{t['agree']:.1e}" + ("" if t["agree"] <= AGREE_RTOL else " (!)") if t else "–",
                f"{rv['eff_gflops']:.0f}",
                f"{rv['eff_over_peak']:.0%}",
                _busy(rv, rs, rt),
            ]
        )
        out.append({"vizjax": rv, "seed": rs, "torch": t})
    hdr = (
        "layer",
        "px",
        "filters",
        "chunk",
        "compile s",
        "vizjax s",
        "seed's way s",
        "vs seed",
        "PyTorch s",
        "vs PyTorch",
        "final act. rel. diff",
        "eff GFLOP/s",
        "of peak",
        "others' CPU",
    )
    print(f"\n## {title}: {args.steps} classic steps, {args.dtype}, median of {args.repeats}")
    print(
        f"(seed's way timed on ≤{args.seed_filters} filters and scaled; PyTorch: "
        f"{'bench/peers/torch_loop.py, ' + str(args.repeats) + ' runs after a warm-up' if peer else 'not run'})\n"
    )
    print(table(hdr, rows))
    return out


def _busy(*rows: dict[str, Any]) -> str:
    """The largest share of the CPUs other processes used while these rows were measured."""
    v = [r["others_cpu"] for r in rows if r.get("others_cpu") is not None]
    return f"{max(v):.0%}" if v else "–"


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


def section_scaling(
    ctx: Context,
    layers: Sequence[str],
    sizes: Sequence[int],
    chunks: Sequence[int],
    n: int,
    steps: int,
) -> None:
    """vizjax at fixed chunks (and which one ``auto`` picks) vs the seed's way, classic, float32."""
    w, rows = ctx.weights, []
    for layer in layers:
        for size in sizes:
            recipe = CLASSIC.replace(size=(size, size), steps=steps)
            eff = eff_flops_per_step(layer, recipe) * n * steps
            base = {
                "table": "scaling",
                "layer": layer,
                "size": size,
                "filters": n,
                "steps": steps,
                "dtype": "float32",
            }
            s = log_row(
                ctx,
                {
                    **base,
                    "way": "seed",
                    **time_seed_way(w, layer, n, size, steps, "float32", max(1, n // 4)),
                },
                eff,
            )
            auto, _ = auto_chunk(w, layer, n, recipe, Execution())
            for c in chunks:
                if c > n:
                    continue
                v = time_vizjax(w, layer, list(range(n)), recipe, Execution(batch=c), repeats=1)
                r = log_row(ctx, {**base, "way": "vizjax", **v, "auto_picks": auto}, eff)
                rows.append(
                    [
                        layer,
                        size,
                        f"{c}{' (auto)' if c == auto else ''}",
                        _fmt(r["compile_s"], 1),
                        _fmt(r["wall_s"]),
                        _fmt(r["filters_per_s"]),
                        f"{r['eff_gflops']:.0f}",
                        f"{s['eff_gflops']:.0f}",
                        f"{s['wall_s'] / r['wall_s']:.2f}x",
                        _busy(s, r),
                    ]
                )
            ascent.compiled_program.cache_clear()
            jax.clear_caches()
    print(f"\n## scaling: {n} filters, {steps} classic steps, float32, one run each")
    print("(seed's way timed on a quarter of the filters and scaled)\n")
    print(
        table(
            (
                "layer",
                "px",
                "chunk",
                "compile s",
                "wall s",
                "filters/s",
                "eff GFLOP/s",
                "seed eff GFLOP/s",
                "vs seed",
                "others' CPU",
            ),
            rows,
        )
    )


#: A recipe-table row that is not a preset: classic at the size lucid's transforms feed the
#: network (140 px for a 128 px image), to tell the cost of lucid's larger input from the rest.
CLASSIC_AT_LUCID_INPUT = "classic@lucid-input"


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


def section_recipes(ctx: Context) -> None:
    """Per-step cost and filters/s of the presets; compile s of 512-step lucid; segment/unroll."""
    args, w, plat = ctx.args, ctx.weights, _platform()
    n = args.recipe_filters
    rows, classic_ms, same_input_ms = [], {}, {}
    for layer in args.recipe_layers.split(","):
        for name in args.recipe_names.split(","):
            full = recipe_row(name, args.size)
            net_hw = transform.out_hw(full.transforms, full.size)
            seg = auto_segment(full.steps, plat)
            steps = timing_steps(full, seg)
            recipe = full.replace(steps=steps)
            ex = Execution(dtype=args.dtype, segment=seg)
            v = time_vizjax(w, layer, list(range(n)), recipe, ex, args.repeats)
            eff = eff_flops_per_step(layer, recipe) * n * steps
            # Early steps may cost more than later ones (lucid's redirected ReLU runs for the
            # first 16 steps only): time twice as many steps with the same segment program and
            # take the difference as the cost of a later step; the full run's per-step cost is
            # then the first steps' time plus the later steps' cost times the steps left.
            late_ms = None
            if full.steps > steps:
                v2 = time_vizjax(
                    w, layer, list(range(n)), full.replace(steps=2 * steps), ex, args.repeats
                )
                late_ms = 1e3 * (v2["wall_s"] - v["wall_s"]) / (n * steps)
                v["late_ms_per_filter_step"] = late_ms
                v["full_ms_per_filter_step"] = (
                    1e3 * v["wall_s"] / n + late_ms * (full.steps - steps)
                ) / full.steps
            first_ms = 1e3 * v["wall_s"] / (n * steps)
            ms = v.get("full_ms_per_filter_step", first_ms)
            if name == "classic":
                classic_ms[layer] = ms
            if name in ("classic", CLASSIC_AT_LUCID_INPUT):
                same_input_ms[layer, net_hw] = ms
            ratio = ms / classic_ms[layer] if layer in classic_ms else float("nan")
            same = same_input_ms.get((layer, net_hw))
            r = log_row(
                ctx,
                {
                    "table": "recipes",
                    "recipe": name,
                    "layer": layer,
                    "size": args.size,
                    "filters": n,
                    "steps": steps,
                    "full_steps": full.steps,
                    "dtype": args.dtype,
                    "network_input": list(net_hw),
                    "vs_classic_same_input": None if same is None else ms / same,
                    **v,
                },
                eff,
            )
            rows.append(
                [
                    name,
                    layer,
                    f"{steps} of {full.steps}",
                    seg,
                    r["chunk"],
                    _fmt(r["compile_s"], 1),
                    f"{first_ms:.1f}",
                    "–" if late_ms is None else f"{late_ms:.1f}",
                    f"{ms:.1f}",
                    _fmt(ratio),
                    f"{net_hw[0]} px: " + ("–" if same is None else _fmt(ms / same)),
                    f"{1e3 / (ms * full.steps):.3f}",
                    f"{r['eff_gflops']:.0f}",
                    _busy(r),
                ]
            )
    print(f"\n## recipes at {args.size} px, {n} filters, {args.dtype}, median of {args.repeats}")
    print(
        "(timed on the steps shown, in the segments the full recipe runs in on this platform; "
        "a later step's cost is the difference with a run of twice those steps; the full run's "
        "per-step cost and filters/s are extrapolated from both)\n"
    )
    print(
        table(
            (
                "recipe",
                "layer",
                "steps timed",
                "segment",
                "chunk",
                "compile s",
                "ms / filter-step (steps timed)",
                "ms / later step",
                "ms / filter-step (full run)",
                "vs classic step",
                "network input: vs classic there",
                "filters/s (full steps)",
                "eff GFLOP/s",
                "others' CPU",
            ),
            rows,
        )
    )

    if args.recipe_table_only:
        return
    # Compile seconds of the full 512-step lucid programs, as a run compiles them.
    rows = []
    for layer in args.recipe_layers.split(","):
        lucid = preset("lucid").replace(size=(args.size, args.size))
        ex = Execution(dtype=args.dtype)
        chunk, _ = auto_chunk(w, layer, vgg.num_channels(layer), lucid, ex)
        c = aot_compile_seconds(w, layer, lucid, ex, chunk)
        ctx.log.emit(
            {
                "table": "compile512",
                "recipe": "lucid",
                "layer": layer,
                "size": args.size,
                "steps": lucid.steps,
                "chunk": chunk,
                "dtype": args.dtype,
                **c,
            }
        )
        rows.append(
            [
                layer,
                lucid.steps,
                chunk,
                f"{c['segments']} x {c['segment_lengths']}",
                f"{c['compile_s']:.1f}",
            ]
        )
    print(
        f"\n## compile seconds of the 512-step lucid program ({args.size} px, default execution, trace + lower + compile)\n"
    )
    print(table(("layer", "steps", "chunk", "segments x length", "compile s"), rows))

    # Segment length and unrolling: compile cost against per-step cost, at the deepest layer
    # measured (block5_conv1 by default: where compile time hurts most).
    layer = args.recipe_layers.split(",")[-1]
    lucid = preset("lucid").replace(size=(args.size, args.size), steps=args.segment_steps)
    rows = []
    for seg, unroll in args.segment_table:
        ex = Execution(dtype=args.dtype, segment=seg, unroll=unroll)
        v = time_vizjax(w, layer, list(range(args.segment_filters)), lucid, ex, args.repeats)
        eff = eff_flops_per_step(layer, lucid) * args.segment_filters * lucid.steps
        r = log_row(
            ctx,
            {
                "table": "segments",
                "recipe": "lucid",
                "layer": layer,
                "size": args.size,
                "filters": args.segment_filters,
                "steps": lucid.steps,
                "dtype": args.dtype,
                **v,
            },
            eff,
        )
        rows.append(
            [
                seg,
                unroll if unroll else f"{seg} (all)",
                _fmt(r["compile_s"], 1),
                f"{r['ms_per_filter_step']:.1f}",
                _busy(r),
            ]
        )
    print(
        f"\n## segment/unroll: lucid, {layer}, {args.size} px, {args.segment_filters} filters, "
        f"{lucid.steps} steps, median of {args.repeats}\n"
    )
    hdr = ("segment (steps per call)", "unroll", "compile s", "ms / filter-step", "others' CPU")
    print(table(hdr, rows))


def predict_whole_model(
    weights: Any,
    recipe: Recipe,
    execution: Execution,
    *,
    sample_filters: int = 2,
    sample_segments: int = 1,
    rolled_sample_steps: int = 8,
    layers: Sequence[str] = vgg.CONV_LAYERS,
    deadline: float | None = None,
    log: Callable[[dict[str, Any]], Any] | None = None,
) -> dict[str, Any]:
    """Predicted wall time of an atlas of every filter of every conv layer with ``recipe``.

    Per layer: the chunk ``execution.batch`` picks for the whole layer, one chunk (at least
    ``sample_filters``) run for ``sample_segments`` segments of the recipe's own segment length
    (compile timed on the first call, then a second call timed), extrapolated to the recipe's full
    steps and the layer's filter count, plus its compile time. Layers not reached before
    ``deadline`` (a ``time.perf_counter()`` value) or not in ``layers`` are estimated by
    :mod:`vizjax.cost` (the work model of the run's ETA and ``vizjax atlas --plan``) at the
    measured layers' median work rate, with their median compile time (marked ``estimated``).
    Returns ``{"layers": [...], "total_s", "compile_s", "measured": n}``.
    """
    seg = execution.segment or auto_segment(recipe.steps, _platform())
    if seg < recipe.steps:  # a host loop over segments: time whole segments of that length
        steps, ex = min(recipe.steps, seg * sample_segments), execution.replace(segment=seg)
    else:  # one segment (a rolled loop on accelerators): its cost per step does not depend on length
        steps, ex = min(recipe.steps, rolled_sample_steps), execution.replace(segment=0)
    out = []
    for layer in vgg.CONV_LAYERS:
        c = vgg.num_channels(layer)
        eff_step = eff_flops_per_step(layer, recipe)
        row = {
            "layer": layer,
            "filters_total": c,
            "eff_gflop_per_filter_step": eff_step / 1e9,
            "work_g_per_filter_step": cost.work_per_filter_step(layer, recipe) / 1e9,
        }
        if layer in layers and (deadline is None or time.perf_counter() < deadline):
            chunk, probe_s = auto_chunk(weights, layer, c, recipe, ex)
            n = min(c, max(sample_filters, chunk))
            sample = recipe.replace(steps=steps)
            v = time_vizjax(
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
        "compile_s": sum(r.get("compile_s", 0.0) for r in out),
        "measured": len(measured),
        "steps": recipe.steps,
        "sample_steps": steps,
    }


def human(seconds: float) -> str:
    if math.isnan(seconds):
        return "–"
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    if seconds < 2 * 86400:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"


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
                _fmt(r["compile_s"], 1),
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
            _fmt(batched["compile_s"], 0),
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


def section_whole_model(ctx: Context) -> None:
    args, w = ctx.args, ctx.weights
    recipe = preset(args.recipe).replace(size=(args.size, args.size))
    layers = args.layers.split(",") if args.layers else vgg.CONV_LAYERS

    def emit(way: str) -> Callable[[dict[str, Any]], Any]:
        return lambda r: ctx.log.emit(
            {"table": "whole_model", "way": way, "recipe": args.recipe, "size": args.size, **r}
        )

    b = predict_whole_model(
        w,
        recipe,
        Execution(dtype=args.dtype),
        sample_filters=args.wm_filters,
        layers=layers,
        log=emit("vizjax"),
    )
    s = predict_whole_model(
        w,
        recipe,
        ONE_AT_A_TIME.replace(dtype=args.dtype),
        sample_filters=1,
        sample_segments=args.wm_single_steps,
        layers=layers,
        log=emit("one-at-a-time"),
    )
    for way, p in (("vizjax", b), ("one-at-a-time", s)):
        ctx.log.emit(
            {
                "table": "whole_model_total",
                "way": way,
                "recipe": args.recipe,
                "size": args.size,
                "total_s": p["total_s"],
                "compile_s": p["compile_s"],
                "measured_layers": p["measured"],
            }
        )
    print_whole_model(b, s, recipe, args.size)


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
    p.add_argument("--recipe", default="lucid", help="--whole-model: the preset")
    p.add_argument("--size", type=int, default=None, help="--whole-model / --recipes: image side")
    p.add_argument(
        "--layers", default=None, help="--whole-model: measure only these (others estimated)"
    )
    p.add_argument("--steps", type=int, default=20, help="classic steps of the works")
    p.add_argument("--dtype", default="float32")
    p.add_argument("--batch", default="auto")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--seed-filters", type=int, default=4, help="filters the seed's way is timed on")
    p.add_argument("--matmul-n", type=int, default=None)
    p.add_argument("--out", default=None, help="JSON lines file (default bench/results/...)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.batch = args.batch if args.batch == "auto" else int(args.batch)
    t_start = time.perf_counter()
    cpu = _platform() == "cpu"
    args.matmul_n = args.matmul_n or (2048 if (args.quick or args.tiny) else 4096 if cpu else 8192)
    # Recipe tables.
    args.recipe_filters = 2
    args.recipe_layers = args.recipe_layers or "block3_conv3,block5_conv1"
    args.recipe_names = (
        args.recipe_names or f"classic,{CLASSIC_AT_LUCID_INPUT},lucid,keras-vis,maco"
    )
    args.segment_steps, args.segment_filters = 32, 2
    args.segment_table = [(1, 1), (4, 4), (8, 8), (16, 16), (32, 1), (32, 8), (32, 32)]
    args.wm_filters, args.wm_single_steps = 2, 4
    if args.tiny:
        args.matmul_n, args.repeats, args.steps, args.seed_filters = 128, 1, 2, 1
        args.recipe_filters, args.recipe_layers = 1, "block2_conv1"
        args.recipe_names = f"classic,{CLASSIC_AT_LUCID_INPUT},lucid"
        args.segment_steps, args.segment_filters, args.segment_table = 4, 1, [(2, 2), (4, 1)]
        args.size = args.size or 32
    info = machine_info(argv)
    out = (
        Path(args.out) if args.out else RESULTS / f"{device_label(info)}-{info['date'][:10]}.jsonl"
    )
    log = Log(out, info)
    run_others = OthersCpu()
    print(
        f"# {info['cpu_model'] if cpu else info['device']} x{info['device_count']} ({info['platform']}), "
        f"jax {info['jax']}, {info['date']}, load {info['load1_at_start']}"
    )
    print(f"# {info['command']}")
    from vizjax.weights import load_weights

    weights = load_weights()
    peaks = section_peak(args, log)
    ctx = Context(weights, log, peaks, args)
    if args.whole_model:
        args.size = args.size or 224
        section_whole_model(ctx)
    elif args.recipes:
        args.size = args.size or 128
        section_recipes(ctx)
    elif args.tiny:
        section_works(ctx, [("block2_conv1", 32, 2)], "main")
        if not args.no_scaling:
            section_scaling(ctx, ["block1_conv2"], [32], [1, 2], 2, 2)
    elif args.quick:
        section_works(ctx, [("block3_conv3", 128, 4)], "main")
        if not args.no_scaling:
            section_scaling(ctx, ["block1_conv2", "block3_conv3"], [64], [1, 8], 8, 10)
    else:
        section_works(ctx, WORKS, "works")
        if not args.no_scaling:
            section_scaling(
                ctx, ["block1_conv2", "block3_conv3", "block5_conv1"], [64, 128, 224], [1, 8], 8, 10
            )
    mem, kind = peak_memory()
    took = time.perf_counter() - t_start
    others = run_others.since_last()
    log.emit(
        {
            "table": "run",
            "seconds": took,
            "mem_bytes": mem,
            "mem_kind": kind,
            "others_cpu_run": others,
        }
    )
    print(
        f"\nother processes used {others if others is not None else float('nan'):.0%} of the CPUs during this run"
    )
    print(
        f"\n{kind}: {mem / 2**30:.2f} GiB; this run took {took:.0f} s (load at the end "
        f"{os.getloadavg()[0]:.2f}); wrote {out}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
