"""Throughput of vizjax's batched ascent vs the seed's way, with FLOP counts and the machine's peak.

Plain script (not a test). Prints tables and appends JSON lines to
``bench/results/<device>-<date>.jsonl``::

    python bench/throughput.py                 # main work (block3_conv3, 128 px, 20 steps) + scaling table
    python bench/throughput.py --quick         # a small subset of the scaling table
    python bench/throughput.py --no-scaling    # only the main work
    python bench/throughput.py --layer block5_conv1 --filters 512 --dtypes bfloat16 --no-scaling

Work is counted as "effective FLOPs" = 2 x the analytic forward conv FLOPs up to the target layer per
image-step (block3_conv3 at 128 px: 12.19 GFLOP), so figures compare across implementations whatever
work they skip; XLA's own count of the compiled program (cost analysis) is printed beside it.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import resource
import statistics
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from vizjax import ascent, vgg
from vizjax.config import AscentConfig
from vizjax.weights import load_weights

RESULTS = Path(__file__).resolve().parent / "results"


def analytic_forward_flops(layer: str, h: int, w: int) -> float:
    """2*H*W*9*Cin*Cout summed over the convolutions up to and including ``layer``."""
    total = 0.0
    for _name, kind, cin, cout in vgg.LAYERS[: vgg.layer_index(layer) + 1]:
        if kind == "pool":
            h, w = h // 2, w // 2
        else:
            total += 2.0 * h * w * 9 * cin * cout
    return total


def measure_peak(dtype: str, n: int, repeats: int = 5) -> float:
    """FLOP/s of an n x n matmul in ``dtype``, timed like the ascent (after compile, median)."""
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


def peak_memory_bytes() -> tuple[int, str]:
    dev = jax.local_devices()[0]
    stats = dev.memory_stats() if hasattr(dev, "memory_stats") else None
    if stats and "peak_bytes_in_use" in stats:
        return int(stats["peak_bytes_in_use"]), "device peak"
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, "host max RSS"


def xla_flops(compiled) -> float | None:
    cost = compiled.cost_analysis()
    if isinstance(cost, list | tuple):
        cost = cost[0] if cost else None
    return float(cost["flops"]) if cost and "flops" in cost else None


def run_batched(w, layer, n, size, steps, dtype, batch, repeats):
    """vizjax's engine on n filters; returns timing and FLOP figures."""
    cfg = AscentConfig(size=(size, size), steps=steps, dtype=dtype)
    mesh = ascent.local_mesh()
    fn = ascent.compiled_ascent(layer, w.preprocessing, cfg.replace(size=None), mesh)
    rep = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
    shd = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("filters"))
    params = jax.device_put(w.params, rep)
    x0 = jax.device_put(ascent.noise_image(cfg), rep)
    d = mesh.devices.size
    chunk = ascent.auto_chunk(fn, params, x0, n, mesh, layer) if batch == "auto" else int(batch)
    chunk = -(-chunk // d) * d
    filters = np.arange(n, dtype=np.int32) % vgg.num_channels(layer)
    t = time.perf_counter()
    compiled = fn.lower(params, x0, jax.device_put(filters[:chunk], shd)).compile()
    compile_s = time.perf_counter() - t
    chunks = []
    for s in range(0, n, chunk):
        c = filters[s : s + chunk]
        chunks.append(jax.device_put(np.concatenate([c, np.full(chunk - len(c), c[-1])]), shd))
    jax.block_until_ready(compiled(params, x0, chunks[0]))  # warm-up
    walls = []
    for _ in range(repeats):
        t = time.perf_counter()
        outs = [compiled(params, x0, c) for c in chunks]
        jax.block_until_ready(outs)
        walls.append(time.perf_counter() - t)
    flops = xla_flops(compiled)
    return {
        "wall_s": statistics.median(walls),
        "compile_s": compile_s,
        "chunk": chunk,
        "xla_flops_per_image_step": flops / (chunk * steps) if flops else None,
    }


def run_seed_way(w, layer, n, size, steps, dtype, max_filters):
    """The seed's way: one filter at a time, one jitted step per dispatch, a Python loop over steps,
    the objective and gradient brought to the host every step (as Keras' K.function does)."""
    cfg = AscentConfig(size=(size, size), steps=steps, dtype=dtype)
    model = ascent.make_model(w.preprocessing, cfg)
    params = jax.device_put(w.params)

    @jax.jit
    def step(params, x, f):
        def obj(x):  # the article's objective: the whole layer, then one channel's mean
            out = model.apply(params, x, layer)
            return jnp.mean(jnp.take(out, f, axis=-1).astype(jnp.float32))

        value, g = jax.value_and_grad(obj)(x)
        return x + g / (jnp.sqrt(jnp.mean(g * g)) + 1e-5), value

    x0 = ascent.noise_image(cfg)
    t = time.perf_counter()
    jax.block_until_ready(step(params, x0, 0))
    compile_s = time.perf_counter() - t
    m = min(n, max_filters)
    t = time.perf_counter()
    for f in range(m):
        x = x0
        for _ in range(steps):
            x, value = step(params, x, f)
            float(value)  # host round trip per step
    wall = (time.perf_counter() - t) * n / m  # extrapolated to n filters when m < n
    return {"wall_s": wall, "compile_s": compile_s, "filters_timed": m}


def device_label() -> str:
    dev = jax.local_devices()[0]
    kind = dev.device_kind
    if dev.platform == "cpu":
        try:
            with open("/proc/cpuinfo") as f:
                kind = next(
                    line.split(":", 1)[1].strip() for line in f if line.startswith("model name")
                )
        except (OSError, StopIteration):
            kind = platform.processor() or "cpu"
    return f"{dev.platform}-{kind}".replace(" ", "_").replace("/", "_")


def row(work, res, eff, peak):
    n, steps = work["filters"], work["steps"]
    return {
        **work,
        **res,
        "filters_per_s": n / res["wall_s"],
        "filter_steps_per_s": n * steps / res["wall_s"],
        "eff_gflops": eff * n * steps / res["wall_s"] / 1e9,
        "peak_gflops": peak / 1e9,
        "eff_over_peak": eff * n * steps / res["wall_s"] / peak,
    }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    cpu = jax.local_devices()[0].platform == "cpu"
    p.add_argument("--layer", default="block3_conv3")
    p.add_argument("--filters", type=int, default=64 if cpu else 512)
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--dtypes", default="float32,bfloat16")
    p.add_argument("--batch", default="auto")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument(
        "--seed-filters",
        type=int,
        default=16 if cpu else 64,
        help="filters the seed's way is timed on (extrapolated to --filters)",
    )
    p.add_argument("--quick", action="store_true", help="small scaling table")
    p.add_argument("--no-scaling", action="store_true")
    p.add_argument("--scaling-filters", type=int, default=16 if cpu else 512)
    p.add_argument("--scaling-steps", type=int, default=10 if cpu else 20)
    p.add_argument("--matmul-n", type=int, default=4096 if cpu else 8192)
    p.add_argument("--out", default=None, help="JSON lines file (default bench/results/...)")
    args = p.parse_args(argv)

    w = load_weights()
    devs = jax.local_devices()
    meta = {
        "device": devs[0].device_kind,
        "platform": devs[0].platform,
        "device_count": len(devs),
        "jax": jax.__version__,
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "host_cpus": os.cpu_count(),
    }
    out = Path(args.out) if args.out else RESULTS / f"{device_label()}-{meta['date'][:10]}.jsonl"
    out.parent.mkdir(parents=True, exist_ok=True)
    peaks = {d: measure_peak(d, args.matmul_n) for d in ("float32", "bfloat16")}
    print(
        f"# {meta['device']} x{meta['device_count']} ({meta['platform']}), jax {meta['jax']}, "
        f"{meta['date']}"
    )
    print(
        "# measured matmul peak ({0}x{0}): float32 {1:.0f} GFLOP/s, bfloat16 {2:.0f} GFLOP/s".format(
            args.matmul_n, peaks["float32"] / 1e9, peaks["bfloat16"] / 1e9
        )
    )
    rows = []

    def emit(r):
        rows.append(r)
        with out.open("a") as f:
            f.write(json.dumps({**meta, **r}) + "\n")

    # -- main work: batched vs the seed's way -----------------------------------------------
    eff = 2 * analytic_forward_flops(args.layer, args.size, args.size)
    print(
        f"\n## {args.layer}, {args.filters} filters, {args.size} px, {args.steps} steps; "
        f"effective work {eff / 1e9:.2f} GFLOP per image-step (2 x analytic forward)"
    )
    hdr = (
        "dtype",
        "way",
        "chunk",
        "compile s",
        "wall s",
        "filters/s",
        "filter-steps/s",
        "eff GFLOP/s",
        "XLA GFLOP/img-step",
        "of peak",
        "speed-up",
    )
    print("| " + " | ".join(hdr) + " |\n|" + "---|" * len(hdr))
    for dtype in args.dtypes.split(","):
        work = {
            "table": "main",
            "layer": args.layer,
            "filters": args.filters,
            "size": args.size,
            "steps": args.steps,
            "dtype": dtype,
        }
        b = row(
            {**work, "way": "vizjax"},
            run_batched(
                w, args.layer, args.filters, args.size, args.steps, dtype, args.batch, args.repeats
            ),
            eff,
            peaks[dtype],
        )
        s = row(
            {**work, "way": "seed"},
            run_seed_way(
                w, args.layer, args.filters, args.size, args.steps, dtype, args.seed_filters
            ),
            eff,
            peaks[dtype],
        )
        b["speedup_vs_seed"] = s["wall_s"] / b["wall_s"]
        b["mem_bytes"], b["mem_kind"] = peak_memory_bytes()
        for r in (b, s):
            emit(r)
            xla = r.get("xla_flops_per_image_step")
            print(
                f"| {dtype} | {r['way']} | {r.get('chunk', 1)} | {r['compile_s']:.1f} | "
                f"{r['wall_s']:.2f} | {r['filters_per_s']:.2f} | {r['filter_steps_per_s']:.1f} | "
                f"{r['eff_gflops']:.0f} | {xla / 1e9 if xla else float('nan'):.2f} | "
                f"{r['eff_over_peak']:.0%} | {r.get('speedup_vs_seed', 1.0):.2f}x |"
            )
    mem, kind = peak_memory_bytes()
    print(f"\n{kind}: {mem / 2**30:.2f} GiB")

    if args.no_scaling:
        print(f"\nwrote {out}")
        return 0

    # -- scaling table ------------------------------------------------------------------------
    layers = (
        ["block1_conv2", "block3_conv3"]
        if args.quick
        else ["block1_conv2", "block3_conv3", "block5_conv1"]
    )
    sizes = [64, 128] if args.quick else [64, 128, 224]
    chunks = ["1", "8", "auto"] if args.quick else ["1", "8", "32", "128", "auto"]
    n, steps = args.scaling_filters, args.scaling_steps
    print(f"\n## scaling: {n} filters, {steps} steps, float32 (chunks larger than {n} not run)")
    hdr = (
        "layer",
        "size",
        "chunk",
        "compile s",
        "wall s",
        "filters/s",
        "eff GFLOP/s",
        "seed eff GFLOP/s",
        "vs seed",
    )
    print("| " + " | ".join(hdr) + " |\n|" + "---|" * len(hdr))
    for layer in layers:
        for size in sizes:
            eff = 2 * analytic_forward_flops(layer, size, size)
            work = {
                "table": "scaling",
                "layer": layer,
                "filters": n,
                "size": size,
                "steps": steps,
                "dtype": "float32",
            }
            s = row(
                {**work, "way": "seed"},
                run_seed_way(w, layer, n, size, steps, "float32", min(n, 4)),
                eff,
                peaks["float32"],
            )
            emit(s)
            for c in chunks:
                if c != "auto" and int(c) > n:
                    continue
                b = row(
                    {**work, "way": "vizjax", "batch": c},
                    run_batched(w, layer, n, size, steps, "float32", c, 1),
                    eff,
                    peaks["float32"],
                )
                b["speedup_vs_seed"] = s["wall_s"] / b["wall_s"]
                emit(b)
                print(
                    f"| {layer} | {size} | {c}→{b['chunk']} | {b['compile_s']:.1f} | "
                    f"{b['wall_s']:.2f} | {b['filters_per_s']:.2f} | {b['eff_gflops']:.0f} | "
                    f"{s['eff_gflops']:.0f} | {b['speedup_vs_seed']:.2f}x |"
                )
            ascent.compiled_ascent.cache_clear()
            jax.clear_caches()
    print(f"\nwrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
