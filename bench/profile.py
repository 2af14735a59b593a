"""Where the ascent's step spends its time, by kind of XLA operation.

Runs one chunk of filters through :func:`vizjax.engine.ascent.visualize` (compiled and run twice
first), then ``repeats`` times under ``jax.profiler``, reads the trace with jax's own
``ProfileData`` and sums the durations of XLA:CPU's thunks by kind: the thunk's name without its
number (``ffi_call`` = oneDNN's convolutions, ``fft``, ``*_convert_fusion`` = elementwise work
with a bfloat16 conversion, ``ynn_fusion`` = XLA's YNNPACK kernels, ...). Thunks that XLA splits
over the CPU's threads are counted once per part, so the sum can exceed the wall time; read the
column as each kind's share, the wall time beside it.

    .venv/bin/python -m bench.profile [--layer block5_conv1] [--recipe lucent] [--dtype auto]
        [--conv auto] [--filters 8] [--steps 8] [--top 20]

Steps default to 8 in segments of 4: the default recipe's redirected ReLU then runs on every step
(Lucid's first 16), which a 64-step run does on a quarter of them.
"""

from __future__ import annotations

import argparse
import collections
import re
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jax

from bench import timing
from bench.generic import FULL, TINY, weights_of
from bench.report import Log, machine_info, results_path, table
from vizjax.engine import ascent, execution
from vizjax.engine.execution import Execution
from vizjax.engine.recipe import preset

#: Trace lines whose events are XLA:CPU's thunks (its intra-op thread pool).
THUNK_LINE = re.compile(r"XLAEigen")
#: Events on those lines that wrap the thunks, or wait, rather than being one.
WRAPPERS = ("ThunkExecutor::", "SlinkyThreadPool::", "Wait:", "Rendezvous")


def kinds(events: Sequence[tuple[str, str, float]]) -> collections.Counter:
    """Seconds per kind of thunk, from ``(line name, event name, seconds)`` of a trace."""
    out: collections.Counter = collections.Counter()
    for line, name, seconds in events:
        if THUNK_LINE.search(line) and not name.startswith(WRAPPERS):
            out[re.sub(r"\.\d+$", "", name)] += seconds
    return out


def trace_events(directory: Path) -> list[tuple[str, str, float]]:
    """``(line name, event name, seconds)`` of every event in the trace under ``directory``."""
    (path,) = directory.rglob("*.xplane.pb")
    data = jax.profiler.ProfileData.from_file(str(path))
    return [
        (line.name, event.name, event.duration_ns * 1e-9)
        for plane in data.planes
        for line in plane.lines
        for event in line.events
    ]


def profile(
    weights: Any, layer: str, filters: int, recipe: Any, ex: Execution, repeats: int = 3
) -> dict[str, Any]:
    """Seconds per kind of thunk per run, and the wall seconds per run, of ``filters`` filters."""
    chunk, _ = timing.auto_chunk(weights, layer, filters, recipe, ex)
    ex = ex.replace(batch=chunk)

    def run() -> None:
        ascent.visualize(
            layer, list(range(filters)), recipe, weights.params, weights.preprocessing, execution=ex
        )

    run()
    run()
    with tempfile.TemporaryDirectory() as tmp:
        jax.profiler.start_trace(tmp)
        t = time.perf_counter()
        for _ in range(repeats):
            run()
        wall = (time.perf_counter() - t) / repeats
        jax.profiler.stop_trace()
        per_kind = kinds(trace_events(Path(tmp)))
    if not per_kind:
        raise RuntimeError("no XLA:CPU thunks in the trace (is this jax's CPU runtime?)")
    return {
        "chunk": chunk,
        "wall_s": wall,
        "kinds_s": {k: v / repeats for k, v in per_kind.most_common()},
    }


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--layer", default="block5_conv1")
    p.add_argument("--recipe", default="lucent")
    p.add_argument("--dtype", default="auto", help="float32, bfloat16 or auto (this CPU's)")
    p.add_argument("--conv", default="auto")
    p.add_argument("--filters", type=int, default=8)
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--top", type=int, default=20, help="kinds to show")
    p.add_argument("--tiny", action="store_true", help="tiny VGG, 32 px: the code path only")
    p.add_argument("--out", default=None, help="JSON lines (default bench/results/...)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    settings = TINY if args.tiny else FULL
    layer = settings.layers[0] if args.tiny else args.layer
    weights = weights_of(settings)
    size = settings.size if args.tiny else 128
    recipe = preset(args.recipe).replace(size=(size, size), steps=args.steps)
    dtype = execution.default_dtype(jax.default_backend()) if args.dtype == "auto" else args.dtype
    ex = Execution(dtype=dtype, conv=args.conv, segment=min(4, args.steps))
    info = machine_info(sys.argv)
    log = Log(Path(args.out) if args.out else results_path(info), info)
    got = profile(weights, layer, args.filters, recipe, ex, args.repeats)
    filter_steps = args.filters * args.steps
    total = sum(got["kinds_s"].values())
    log.emit(
        {"table": "profile", "layer": layer, "recipe": args.recipe, "dtype": dtype}
        | {"conv": args.conv, "filters": args.filters, "steps": args.steps, "chunk": got["chunk"]}
        | {"wall_ms_per_filter_step": 1e3 * got["wall_s"] / filter_steps}
        | {
            "thunk_ms_per_filter_step": {
                k: 1e3 * v / filter_steps for k, v in got["kinds_s"].items()
            }
        }
    )
    print(
        f"\n## {layer}, {args.recipe}, {dtype}, conv {args.conv}: {args.filters} filters x "
        f"{args.steps} steps, chunk {got['chunk']}, the mean of {args.repeats} runs under the "
        f"profiler\n\nwall {1e3 * got['wall_s'] / filter_steps:.2f} ms per "
        f"filter-step; thunks {1e3 * total / filter_steps:.2f} ms (parts on each thread summed)\n"
    )
    rows = [
        [k, f"{1e3 * v / filter_steps:.2f}", f"{100 * v / total:.0f}%"]
        for k, v in list(got["kinds_s"].items())[: args.top]
    ]
    print(table(("kind", "ms per filter-step", "share"), rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
