"""oneDNN's convolutions against XLA's, alone and in the ascent's step.

Two tables: each of VGG16's 3x3 convolutions at 128 px (one image; and 8 at two shapes) by XLA
(float32, bfloat16) and by oneDNN (:mod:`vizjax.models.onednn`; float32, bfloat16), median of 15
calls after a warm-up; then ms per filter-step of the classic and default recipes at block3_conv3
and block5_conv1 (8 filters, 128 px, 8 steps in segments of 4, median of 3 runs) as float32 with
Winograd (the CPU rule), bfloat16 through oneDNN and float32 through oneDNN.

    .venv/bin/python -m bench.onednn [--no-steps]

Needs the ``onednn`` extra (``pip install -e '.[onednn]'``) and g++; on a CPU without AMX the
bfloat16 columns show oneDNN's non-AMX kernels.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import jax
import jax.numpy as jnp

from bench import timing
from bench.report import Log, machine_info, results_path, table
from bench.work import median_seconds
from vizjax.engine.execution import Execution
from vizjax.engine.recipe import preset
from vizjax.models import onednn
from vizjax.models.conv import conv3x3_xla

#: (images, px, Cin, Cout): VGG16's convolutions at 128 px, and two with 8 images.
SHAPES = [
    (1, 128, 3, 64),
    (1, 128, 64, 64),
    (1, 64, 64, 128),
    (1, 64, 128, 128),
    (1, 32, 128, 256),
    (1, 32, 256, 256),
    (1, 16, 256, 512),
    (1, 16, 512, 512),
    (1, 8, 512, 512),
    (8, 8, 512, 512),
    (8, 32, 256, 256),
]


def section_convs(log: Log) -> None:
    rows = []
    ways = [("xla", conv3x3_xla), ("onednn", onednn.conv3x3_onednn)]
    for n, px, c, o in SHAPES:
        flops = 2 * n * px * px * 9 * c * o
        row = [f"{n} x {px}x{px}, {c}->{o}"]
        for name, fn in ways:
            for dtype in ("float32", "bfloat16"):
                x = jnp.ones((n, px, px, c), dtype)
                w = jnp.ones((3, 3, c, o), dtype)
                s = median_seconds(jax.jit(fn), x, w, repeats=15)
                log.emit(
                    {"table": "onednn_conv", "way": name, "dtype": dtype, "shape": [n, px, c, o]}
                    | {"ms": 1e3 * s, "gflops": flops / s / 1e9}
                )
                row.append(f"{1e3 * s:.2f} ms ({flops / s / 1e9:.0f})")
        rows.append(row)
    print("\n## one 3x3 convolution: ms (GFLOP/s), median of 15 calls\n")
    hdr = ("shape", "XLA float32", "XLA bfloat16", "oneDNN float32", "oneDNN bfloat16")
    print(table(hdr, rows))


def section_steps(log: Log) -> None:
    from vizjax.models.weights import default_weights, load_weights

    w = load_weights(default_weights("vgg16"))
    ways = [("float32", "winograd"), ("bfloat16", "onednn"), ("float32", "onednn")]
    rows = []
    for layer in ("block3_conv3", "block5_conv1"):
        for name in ("classic", "lucent"):
            recipe = preset(name).replace(size=(128, 128), steps=8)
            row = [layer, name]
            for dtype, conv in ways:
                ex = Execution(dtype=dtype, conv=conv, segment=4)
                v = timing.time_vizjax(w, layer, list(range(8)), recipe, ex, repeats=3)
                ms = 1e3 * v["wall_s"] / (8 * recipe.steps)
                log.emit(
                    {"table": "onednn_step", "layer": layer, "recipe": name}
                    | {"dtype": dtype, "conv": conv, "ms_per_filter_step": ms}
                    | {"compile_s": v["compile_s"], "walls_s": v["walls_s"]}
                )
                row.append(f"{ms:.1f} ({v['compile_s']:.1f} s)")
            rows.append(row)
    print("\n## ms per filter-step (compile s), 8 filters, 128 px, median of 3\n")
    hdr = ("layer", "recipe", "float32 Winograd", "bfloat16 oneDNN", "float32 oneDNN")
    print(table(hdr, rows))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--no-steps", action="store_true", help="the convolutions only")
    p.add_argument("--out", default=None, help="JSON lines (default bench/results/...)")
    args = p.parse_args(argv)
    reason = onednn.unavailable()
    if reason is not None:
        print(f"bench.onednn: {reason}", file=sys.stderr)
        return 1
    info = machine_info(sys.argv)
    log = Log(Path(args.out) if args.out else results_path(info), info)
    print(
        f"# {info['cpu_model']} ({info['device']}), jax {info['jax']}, {info['date']}, "
        f"AMX: {onednn.has_amx()}"
    )
    section_convs(log)
    if not args.no_steps:
        section_steps(log)
    return 0


if __name__ == "__main__":
    sys.exit(main())
