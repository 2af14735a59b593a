"""Recipe comparison: the same filters under each recipe, with the fidelity measures of each.

Plain script (not a test); resumable (one atlas per recipe under ``--out``, rerun to continue)::

    python -m bench.fidelity                          # 3 layers x 32 filters x 4 recipes, 128 px
    python -m bench.fidelity --filters 8 --size 64    # a smaller look
    python -m bench.fidelity --steps lucid=128 maco=128

Prints one Markdown table (dead fraction, selectivity, median robustness, median HF energy with
the cat photo's, seconds per filter including compilation) and writes one PNG sheet per layer:
a row per recipe, the same first 8 filters in every row. The measures are those of
:mod:`vizjax.fidelity`, unchanged: a recipe is judged by them, never the other way round.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import time
from pathlib import Path

import numpy as np

from bench.report import cpu_model
from vizjax import fidelity, images
from vizjax.atlas import open_atlas
from vizjax.execution import Execution
from vizjax.recipe import PRESETS
from vizjax.run import run_atlas
from vizjax.weights import load_weights

LAYERS = ("block1_conv2", "block3_conv3", "block5_conv1")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--layers", default=",".join(LAYERS))
    p.add_argument("--filters", type=int, default=32, help="the first N filters of each layer")
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--recipes", default=",".join(PRESETS))
    p.add_argument(
        "--steps",
        nargs="*",
        default=[],
        metavar="RECIPE=N",
        help="shorten a recipe (the table says so), e.g. lucid=128",
    )
    p.add_argument("--sheet", type=int, default=8, help="filters per row of the PNG sheets")
    p.add_argument("--out", default="bench/results/fidelity")
    args = p.parse_args()

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    layers = args.layers.split(",")
    recipes = args.recipes.split(",")
    steps = {k: int(v) for k, v in (s.split("=") for s in args.steps)}
    w = load_weights()
    rows, sheets = [], {layer: [] for layer in layers}
    for name in recipes:
        recipe = PRESETS[name].replace(size=(args.size, args.size))
        if name in steps:
            recipe = recipe.replace(steps=steps[name])
        path = out / f"{name}-{args.size}px-{recipe.steps}steps.h5"
        for layer in layers:
            t0 = time.perf_counter()
            summary = run_atlas(
                path, [layer], f"0:{args.filters}", recipe, w, execution=Execution(), quiet=True
            )
            computed = summary["layers"][layer]["computed"]
            seconds = time.perf_counter() - t0
            with open_atlas(path) as a:
                la = a.layers[layer]
                s = fidelity.summarize(la.fidelity)
                sheets[layer].append(
                    (name, [la.image(f) for f in range(min(args.sheet, args.filters))])
                )
            row = {
                "recipe": name,
                "steps": recipe.steps,
                "layer": layer,
                **s,
                "seconds_per_filter": seconds / computed if computed else None,
            }
            rows.append(row)
            print(json.dumps(row), flush=True)
            with open(out / "results.jsonl", "a") as fh:
                fh.write(
                    json.dumps(
                        {
                            **row,
                            "size": args.size,
                            "date": dt.date.today().isoformat(),
                            "cpu": cpu_model(),
                        }
                    )
                    + "\n"
                )

    photo = fidelity.photo_hf_energy()
    print(
        f"\n`python -m bench.fidelity {_command_line(args)}`"
        f" ({dt.date.today().isoformat()}, {cpu_model()}); cat photo HF energy {photo:.3f}\n"
    )
    print(
        "| layer | recipe | steps | dead | selectivity | median robustness | median HF energy "
        "| s per filter |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        spf = r["seconds_per_filter"]
        print(
            f"| {r['layer']} | {r['recipe']} | {r['steps']} | {100 * r['dead_fraction']:.0f}% | "
            f"{_pct(r['selectivity'])} | {r['median_robustness']:.2f} | "
            f"{r['median_hf_energy']:.3f} | {'(resumed)' if spf is None else f'{spf:.1f}'} |"
        )
    for layer, entries in sheets.items():
        tiles = np.stack([im for _, ims in entries for im in ims])
        labels = [f"{name} {f}" for name, ims in entries for f in range(len(ims))]
        cols = len(entries[0][1])
        path = images.save_png(images.grid(tiles, labels, cols=cols), out / f"sheet_{layer}.png")
        print(f"wrote {path}")


def _command_line(args: argparse.Namespace) -> str:
    parts = []
    for k, v in vars(args).items():
        if v:
            parts.append(f"--{k} {' '.join(v) if isinstance(v, list) else v}")
    return " ".join(parts)


def _pct(x: float) -> str:
    return "n/a" if x != x else f"{100 * x:.0f}%"


if __name__ == "__main__":
    main()
