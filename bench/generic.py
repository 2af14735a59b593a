"""The generic adapter's price (issue 29, item 6): VGG16 through the generic path against the
built-in path, per filter-step, in ONE run on the same machine.

Two ways to run the same network on the same work:

- ``builtin``: the built-in VGG16 (its weights as a table network: the one-channel fast path,
  Winograd on CPU, the redirected ReLU);
- ``generic``: the same weights in the built-in VGG16 Flax module, wrapped by
  :func:`vizjax.models.flax_model.from_flax` as any user's module would be (no fast paths: the
  whole layer computed, XLA's own convolutions, no redirected ReLU).

Each (layer, recipe) is timed the way ``vizjax atlas --plan`` times a layer
(:func:`vizjax.plan.time_layer`: the chunk a run would use, a first segment to warm up, a second
one timed), so ``ms/filter-step`` = a step of one chunk / the chunk; each three times, the ways
interleaved, and the median shown (one segment is a second or less: single timings on a shared
VM jumped by 2x). The goal: generic within 1.3x of the built-in. Defaults: block3_conv3 and block5_conv1, classic and the default recipe
(lucent), 128 px, 64 filters.

    .venv/bin/python -m bench.generic                 # the measurement (quiet machine, ~10 min CPU)
    .venv/bin/python -m bench.generic --builtin-xla   # + the built-in without Winograd: the gap's cause
    .venv/bin/python -m bench.generic --tiny          # the code path on a tiny VGG (seconds)
"""

from __future__ import annotations

import argparse
import dataclasses
import types
from collections.abc import Sequence
from typing import Any

import numpy as np

from bench import report
from bench.report import Log, busy, fmt, table
from vizjax import models
from vizjax.engine import ascent
from vizjax.engine.execution import Execution
from vizjax.engine.recipe import PRESETS, Recipe
from vizjax.models import vgg
from vizjax.models.network import IDENTITY


@dataclasses.dataclass(frozen=True)
class Settings:
    layers: tuple[str, ...] = ("block3_conv3", "block5_conv1")
    recipes: tuple[str, ...] = ("classic", "lucent")
    size: int = 128
    filters: int = 64
    #: None: the real VGG16 weights (the default weight set); else random weights of these widths.
    widths: tuple[int, ...] | None = None
    #: Also time the built-in with XLA's convolution (no Winograd): a third column.
    builtin_xla: bool = False
    #: Timings of each (layer, recipe, way), interleaved; the table shows their median.
    repeats: int = 3

    def replace(self, **kw: Any) -> Settings:
        return dataclasses.replace(self, **kw)


FULL = Settings()
TINY = FULL.replace(layers=("block2_conv1",), size=32, filters=4, widths=(4, 4, 8, 8, 8), repeats=1)


def weights_of(s: Settings) -> Any:
    """The built-in VGG16 weights the run uses: the default weight set, or random tiny ones."""
    if s.widths is None:
        from vizjax.models.weights import default_weights, load_weights

        return load_weights(default_weights("vgg16"))
    params = vgg.network(s.widths).init_params(0)
    return types.SimpleNamespace(
        network=models.from_params(params), params=params, preprocessing=vgg.TORCH
    )


def as_generic(weights: Any) -> Any:
    """The same weights in the built-in Flax module, through the generic adapter (``from_flax``),
    as a weights-like record :func:`vizjax.plan.time_layer` takes."""
    from vizjax.models.flax_model import from_flax
    from vizjax.models.generic import GenericWeights

    module = weights.network.module(IDENTITY)  # the adapter applies the preprocessing itself
    model = from_flax(module, weights.params, preprocessing=weights.preprocessing, name="vgg16")
    return GenericWeights(model, weights.preprocessing)


def recipe_of(name: str, s: Settings) -> Recipe:
    return PRESETS[name].replace(size=(s.size, s.size))


def time_one(
    weights: Any, layer: str, recipe: Recipe, s: Settings, execution: Execution
) -> dict[str, Any]:
    """``vizjax.plan.time_layer`` on ``layer``: chunk, compile seconds, ms per filter-step."""
    from vizjax.plan import time_layer

    start = np.asarray(ascent.noise_image(recipe))
    t = time_layer(layer, list(range(s.filters)), recipe, weights, execution, start)
    return {**t, "ms_per_filter_step": 1e3 * t["step_s"] / t["chunk"]}


def run(s: Settings, log: Log) -> list[dict[str, Any]]:
    builtin = weights_of(s)
    ways = {"builtin": (builtin, Execution()), "generic": (as_generic(builtin), Execution())}
    if s.builtin_xla:  # the built-in without Winograd: how much of the gap is the convolution
        ways["builtin-xla"] = (builtin, Execution(conv="xla"))
    rows = []
    for layer in s.layers:
        for name in s.recipes:
            recipe = recipe_of(name, s)
            times: dict[str, list[dict[str, Any]]] = {way: [] for way in ways}
            for _ in range(s.repeats):  # the ways interleaved, so drift hits them alike
                for way, (w, ex) in ways.items():
                    times[way].append(time_one(w, layer, recipe, s, ex))
            got = {}
            for way, ts in times.items():
                ms = sorted(t["ms_per_filter_step"] for t in ts)
                median = next(t for t in ts if t["ms_per_filter_step"] == ms[len(ms) // 2])
                got[way] = log.emit(
                    {
                        "table": "generic",
                        "layer": layer,
                        "recipe": name,
                        "way": way,
                        "size": s.size,
                        "filters": s.filters,
                        **median,
                        "repeats_ms_per_filter_step": ms,
                    }
                )
            ratio = got["generic"]["ms_per_filter_step"] / got["builtin"]["ms_per_filter_step"]
            log.emit({"table": "generic_ratio", "layer": layer, "recipe": name, "ratio": ratio})
            rows.append((layer, name, got, ratio))
    xla = s.builtin_xla

    def cell(row: dict[str, Any]) -> str:
        return f"{fmt(row['ms_per_filter_step'])} ({row['chunk']})"

    header = ["layer", "recipe", "built-in ms/filter-step (chunk)"]
    header += ["built-in, XLA conv"] if xla else []
    header += ["generic ms/filter-step (chunk)", "generic / built-in"]
    header += ["generic / built-in XLA conv"] if xla else []
    body = []
    for layer, name, got, ratio in rows:
        b, g = got["builtin"], got["generic"]
        line = [layer, name, cell(b), *([cell(got["builtin-xla"])] if xla else []), cell(g)]
        line.append(fmt(ratio))
        if xla:
            line.append(fmt(g["ms_per_filter_step"] / got["builtin-xla"]["ms_per_filter_step"]))
        body.append([*line, busy(*got.values())])
    print(table([*header, "others' CPU"], body))
    return [r[-1] for r in rows]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench.generic", description=__doc__.split("\n")[0])
    p.add_argument("--tiny", action="store_true", help="tiny VGG, one layer: the code path only")
    p.add_argument("--layers", help="comma-separated (default block3_conv3,block5_conv1)")
    p.add_argument("--recipes", help="comma-separated (default classic,lucent)")
    p.add_argument("--size", type=int)
    p.add_argument("--filters", type=int)
    p.add_argument(
        "--builtin-xla", action="store_true", help="also the built-in without Winograd (--conv xla)"
    )
    p.add_argument("--repeats", type=int, help="timings per cell, median shown (default 3)")
    p.add_argument("--out", help="JSON lines file (default bench/results/<device>-<date>.jsonl)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    s = TINY if args.tiny else FULL
    if args.layers:
        s = s.replace(layers=tuple(args.layers.split(",")))
    if args.recipes:
        s = s.replace(recipes=tuple(args.recipes.split(",")))
    if args.size:
        s = s.replace(size=args.size)
    if args.filters:
        s = s.replace(filters=args.filters)
    if args.builtin_xla:
        s = s.replace(builtin_xla=True)
    if args.repeats:
        s = s.replace(repeats=args.repeats)
    report.measured(argv, args.out, lambda log: run(s, log))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
