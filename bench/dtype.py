"""bfloat16 against float32: are the pictures the same within seed noise, and which is faster here?

For each layer: the default recipe (``lucent``, 64 steps, 128 px) on 8 filters (``--filters``), measured
(:mod:`vizjax.analysis.fidelity`), as float32 seed 0, float32 seed 1 (the noise floor: another
start image) and bfloat16 seed 0 with each convolution given (``--convs``; ``onednn`` is
:mod:`vizjax.models.onednn`, the AMX path). Prints the medians of the measures, each run's wall
time (compiling included, except float32 seed 1, which reuses seed 0's program) and, filter by
filter, the median |difference| of bfloat16 from float32 (same seed) beside seed 1's from seed 0.

    .venv/bin/python -m bench.dtype [--layers block3_conv3,block5_conv1] [--convs onednn]

The design notes' bfloat16 table was made this way; ``--dtype auto`` may choose bfloat16 on a CPU
(the tuner, on a CPU with AMX) only while this says the pictures agree within seed noise.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from bench.report import Log, OthersCpu, machine_info, results_path, table
from vizjax.engine import ascent
from vizjax.engine.execution import Execution
from vizjax.engine.recipe import preset


def run(layer: str, n: int, recipe, weights, execution: Execution) -> tuple[object, float]:
    t = time.perf_counter()
    res = ascent.visualize(
        layer,
        range(n),
        recipe,
        weights.params,
        weights.preprocessing,
        execution=execution,
        measure=True,
    )
    return res, time.perf_counter() - t


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--layers", default="block3_conv3,block5_conv1")
    p.add_argument("--convs", default="onednn", help="bfloat16 runs: comma-separated --conv values")
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--filters", type=int, default=8, help="filters 0..N-1 of each layer")
    p.add_argument("--out", default=None, help="JSON lines (default bench/results/...)")
    args = p.parse_args(argv)
    from vizjax.models.weights import default_weights, load_weights

    weights = load_weights(default_weights("vgg16"))
    info = machine_info(sys.argv)
    log = Log(Path(args.out) if args.out else results_path(info), info)
    print(f"# {info['cpu_model']} ({info['device']}), jax {info['jax']}, {info['date']}")
    rows = []
    for layer in args.layers.split(","):
        base = preset("lucent").replace(size=(args.size, args.size))
        runs = [("float32, seed 0", base, Execution(dtype="float32"))]
        runs.append(("float32, seed 1", base.replace(seed=1), Execution(dtype="float32")))
        for conv in args.convs.split(","):
            runs.append((f"bfloat16 {conv}, seed 0", base, Execution(dtype="bfloat16", conv=conv)))
        got = {}
        for name, recipe, ex in runs:
            others = OthersCpu()
            res, wall = run(layer, args.filters, recipe, weights, ex)
            share = others.since_last()
            got[name] = res
            med = {
                "robustness": float(np.median(res.robustness[:, 0])),
                "hf_energy": float(np.median(res.hf_energy[:, 0])),
                "final": float(np.mean(res.objective[:, -1])),
            }
            log.emit(
                {"table": "dtype", "layer": layer, "filters": args.filters, "run": name}
                | {"wall_s": wall, **med}
            )
            rows.append([layer, name, f"{med['robustness']:.3f}", f"{med['hf_energy']:.3f}"])
            rows[-1] += [
                f"{med['final']:.1f}",
                f"{wall:.1f} s",
                "?" if share is None else f"{share:.0%}",
            ]
        f0, f1 = got["float32, seed 0"], got["float32, seed 1"]
        for name, res in got.items():
            if not name.startswith("bfloat16"):
                continue
            for m in ("robustness", "hf_energy"):
                d = float(np.median(np.abs(getattr(res, m) - getattr(f0, m))))
                noise = float(np.median(np.abs(getattr(f1, m) - getattr(f0, m))))
                log.emit(
                    {
                        "table": "dtype_delta",
                        "layer": layer,
                        "run": name,
                        "measure": m,
                        "median_abs_delta": d,
                        "seed_noise": noise,
                    }
                )
                print(f"{layer} {name}: median |d {m}| vs float32 {d:.3f}, seed 1 vs 0 {noise:.3f}")
    print()
    hdr = ("layer", "run", "median robustness", "median HF energy", "mean final activation")
    print(table((*hdr, "time", "others' CPU"), rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
