"""The tuner on the standard layers (issue 32, item 1): what this machine's CPU runs fastest, and
by how much against today's rules, for each CPU the project meets.

For each (layer, size, recipe) it runs :func:`vizjax.engine.tuning.decide` with ``tune="now"``
(the same search ``vizjax atlas --tune now`` runs: the convolution at the rule's chunk, then the
chunks beside the rule's with the winning convolution, then bfloat16 on a CPU with AMX; each
candidate compiled and one segment of one chunk timed, as ``--plan`` times a layer), keeps the
decision in the machine's tuning table (``--table``; default: the one ``vizjax atlas`` reads) and
appends one JSON line per decision to bench/results/: the decision, every candidate's ms per
filter-step, and the rule's time over the decision's.

Defaults: block1_conv2 at 64 px, block3_conv3 and block5_conv1 at 128 px; classic and the default
recipe (lucent); the real VGG16 weights; 64 filters (the chunks tried are capped by it).

    .venv/bin/python -m bench.tuning          # the measurement (quiet machine, several minutes)
    .venv/bin/python -m bench.tuning --tiny   # the code path on a tiny VGG (seconds)
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from bench import report
from bench.generic import Settings as WeightSettings
from bench.generic import weights_of
from bench.report import Log, busy, fmt
from vizjax.engine import ascent, tuning
from vizjax.engine.execution import Execution
from vizjax.engine.recipe import PRESETS


@dataclasses.dataclass(frozen=True)
class Settings:
    #: (layer, image side) pairs.
    layers: tuple[tuple[str, int], ...] = (
        ("block1_conv2", 64),
        ("block3_conv3", 128),
        ("block5_conv1", 128),
    )
    recipes: tuple[str, ...] = ("classic", "lucent")
    filters: int = 64
    #: None: the real VGG16 weights; else random weights of these widths.
    widths: tuple[int, ...] | None = None
    #: Steps of every recipe (None: the recipe's own; the timing needs two segments).
    steps: int | None = None

    def replace(self, **kw: Any) -> Settings:
        return dataclasses.replace(self, **kw)


FULL = Settings()
TINY = FULL.replace(
    layers=(("block2_conv1", 32),), recipes=("classic",), filters=8, widths=(4, 8, 8, 8, 8), steps=8
)


def run(s: Settings, log: Log, table_path: Path | None) -> list[dict[str, Any]]:
    import jax

    weights = weights_of(WeightSettings(widths=s.widths))
    table = tuning.Table.load(table_path)
    devices = len(jax.local_devices())
    rows = []
    for layer, side in s.layers:
        for name in s.recipes:
            recipe = PRESETS[name].replace(size=(side, side))
            if s.steps:
                recipe = recipe.replace(steps=s.steps)
            start = np.asarray(ascent.noise_image(recipe))
            filters = list(range(s.filters))
            measure = tuning.layer_measure(layer, filters, recipe, weights, Execution(), start)
            t = time.perf_counter()
            _, d = tuning.decide(
                layer,
                s.filters,
                recipe,
                weights.network,
                Execution(),
                tune="now",
                table=table,
                measure=measure,
                dtype_free=True,
                devices=devices,
                platform=jax.local_devices()[0].platform,
            )
            table = tuning.Table.load(table.path, table.machine)
            ms = dict(d.timings)
            rule = next(iter(ms), None)  # the rule's candidate is timed first
            best = ms.get(d.choice.label)
            rows.append(
                log.emit(
                    {
                        "table": "tuning",
                        "layer": layer,
                        "recipe": name,
                        "size": side,
                        "filters": s.filters,
                        "key": d.key,
                        "machine_key": table.machine.key,
                        "amx_bf16": table.machine.bfloat16_unit,
                        "conv": d.choice.conv,
                        "per_device": d.choice.per_device,
                        "dtype": d.choice.dtype,
                        "rule": rule,
                        "ms_per_filter_step": ms,
                        "rule_over_decision": ms[rule] / best if rule and best else None,
                        "tuning_s": round(time.perf_counter() - t, 1),
                    }
                )
            )
    body = [
        [
            r["layer"],
            r["size"],
            r["recipe"],
            r["rule"],
            f"{r['conv']}/{r['per_device']}/{r['dtype']}",
            ", ".join(f"{k} {fmt(v)}" for k, v in r["ms_per_filter_step"].items()),
            fmt(r["rule_over_decision"]),
            fmt(r["tuning_s"], 0),
            busy(r),
        ]
        for r in rows
    ]
    header = ["layer", "px", "recipe", "rule", "decision", "ms/filter-step", "rule / decision"]
    print(report.table([*header, "tuning s", "others' CPU"], body))
    return rows


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench.tuning", description=__doc__.split("\n")[0])
    p.add_argument("--tiny", action="store_true", help="tiny VGG, one layer: the code path only")
    p.add_argument("--recipes", help="comma-separated (default classic,lucent)")
    p.add_argument("--filters", type=int)
    p.add_argument("--table", help="tuning table (default: the one vizjax atlas reads)")
    p.add_argument("--out", help="JSON lines file (default bench/results/<device>-<date>.jsonl)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    s = TINY if args.tiny else FULL
    if args.recipes:
        s = s.replace(recipes=tuple(args.recipes.split(",")))
    if args.filters:
        s = s.replace(filters=args.filters)
    report.measured(
        argv, args.out, lambda log: run(s, log, Path(args.table) if args.table else None)
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
