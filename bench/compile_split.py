"""Where a layer's compile time goes: JAX's tracing and lowering, XLA's HLO passes, and code
generation (XLA's MLIR fusion emitters, then LLVM).

Each configuration runs in a fresh process with no persistent cache, compiling every entry point
a run of the recipe compiles (init, each segment length, finish; 8 filters' chunk), ahead of time
(``lower`` then ``compile``), with the command line's XLA flags (LLVM at -O1 on a CPU). XLA:CPU's own scoped timers (``TF_CPP_VMODULE=cpu_compiler=1,
fusion_compiler=1,ir_compiler=1``) give the HLO passes, the backend's whole code generation
("Compiling ... using JIT"), and within it the MLIR and LLVM modules' times (summed: LLVM modules
may compile in parallel threads, so their sum can exceed the wall time).

    .venv/bin/python -m bench.compile_split [--layers block3_conv3,block5_conv1]
        [--recipes classic,lucent] [--ways float32:auto,bfloat16:onednn]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

from bench.report import Log, machine_info, results_path, table

TIMER = re.compile(r"\] (.*?) time: .*?\((\d+) us\)")
PARTS = {
    "hlo_passes_s": re.compile(r"^Running HLO passes on "),
    "backend_s": re.compile(r"^Compiling \[.*\] for CPU using JIT"),
    "mlir_s": re.compile(r"^Compiled MLIR module"),
    "llvm_s": re.compile(r"^Compiled LLVM module"),
}


def split_log(text: str) -> dict[str, float]:
    """Seconds per part, summed over XLA's timer lines in ``text`` (a process' stderr)."""
    out = dict.fromkeys(PARTS, 0.0)
    for m in TIMER.finditer(text):
        for part, pattern in PARTS.items():
            if pattern.match(m.group(1)):
                out[part] += int(m.group(2)) / 1e6
    return out


def child(layer: str, recipe_name: str, dtype: str, conv: str, size: int) -> dict[str, float]:
    """In this process: trace + lower and compile every entry point, timed apart."""
    from vizjax.engine.execution import prefer_fast_cpu_compiles

    prefer_fast_cpu_compiles()  # as the command line does (LLVM -O1 on a CPU), before jax starts
    import jax
    import jax.numpy as jnp
    import numpy as np
    from jax.sharding import NamedSharding, PartitionSpec

    from bench.timing import prepared
    from vizjax.engine.execution import Execution
    from vizjax.engine.recipe import preset
    from vizjax.models.weights import default_weights, load_weights

    w = load_weights(default_weights("vgg16"))
    recipe = preset(recipe_name).replace(size=(size, size))
    ex = Execution(dtype=dtype, conv=conv)
    mesh, program, params, start, seed = prepared(w, layer, recipe, ex)
    filters = jax.device_put(
        jnp.zeros((8,), jnp.int32), NamedSharding(mesh, PartitionSpec("filters"))
    )
    state = jax.eval_shape(program.init, params, start, filters, seed)
    calls = [(program.init, (params, start, filters, seed))]
    calls += [
        (fn, (params, start, filters, seed, state, np.int32(0))) for fn in program.advance.values()
    ]
    calls.append((program.finish, (params, start, filters, seed, state, np.int32(0))))
    lower_s = compile_s = 0.0
    for fn, args in calls:
        t = time.perf_counter()
        lowered = fn.lower(*args)
        lower_s += time.perf_counter() - t
        t = time.perf_counter()
        lowered.compile()
        compile_s += time.perf_counter() - t
    return {"trace_lower_s": lower_s, "compile_s": compile_s, "entry_points": len(calls)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--layers", default="block3_conv3,block5_conv1")
    p.add_argument("--recipes", default="classic,lucent")
    p.add_argument("--ways", default="float32:auto", help="dtype:conv pairs, comma-separated")
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--out", default=None, help="JSON lines (default bench/results/...)")
    p.add_argument(
        "--child", nargs=4, metavar=("LAYER", "RECIPE", "DTYPE", "CONV"), help=argparse.SUPPRESS
    )
    args = p.parse_args(argv)
    if args.child:
        print(json.dumps(child(*args.child, args.size)))
        return 0
    info = machine_info(sys.argv)
    log = Log(Path(args.out) if args.out else results_path(info), info)
    print(f"# {info['cpu_model']} ({info['device']}), jax {info['jax']}, {info['date']}")
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="0", VIZJAX_COMPILATION_CACHE="0")
    env["TF_CPP_VMODULE"] = "cpu_compiler=1,fusion_compiler=1,ir_compiler=1"
    env["VIZJAX_TUNING"] = "0"
    rows = []
    for layer in args.layers.split(","):
        for name in args.recipes.split(","):
            for way in args.ways.split(","):
                dtype, conv = way.split(":")
                cmd = [sys.executable, "-m", "bench.compile_split", "--size", str(args.size)]
                cmd += ["--child", layer, name, dtype, conv]
                r = subprocess.run(cmd, env=env, capture_output=True, text=True)
                if r.returncode != 0:
                    print(r.stderr[-2000:], file=sys.stderr)
                    return 1
                got = json.loads(r.stdout.strip().splitlines()[-1]) | split_log(r.stderr)
                log.emit(
                    {"table": "compile_split", "layer": layer, "recipe": name}
                    | {"dtype": dtype, "conv": conv, "size": args.size, **got}
                )
                rows.append(
                    [layer, name, way, got["entry_points"], f"{got['trace_lower_s']:.1f}"]
                    + [f"{got[k]:.1f}" for k in ("compile_s", "hlo_passes_s", "backend_s")]
                    + [f"{got['mlir_s']:.1f}", f"{got['llvm_s']:.1f}"]
                )
    print(f"\n## compile seconds, {args.size} px, 8 filters' chunk, no cache\n")
    hdr = ("layer", "recipe", "dtype:conv", "entry points", "trace + lower", "compile")
    hdr += ("HLO passes", "code generation", "of which MLIR (sum)", "of which LLVM (sum)")
    print(table(hdr, rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
