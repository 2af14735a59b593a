"""Recipe comparison: the same filters under each recipe, with the fidelity measures of each.

Plain script (not a test), run from the repository root; resumable (one atlas per recipe under
``--out``, rerun to continue)::

    python -m bench.fidelity                          # 3 layers x 32 filters x 4 recipes, 128 px
    python -m bench.fidelity --filters 8 --size 64    # a smaller look
    python -m bench.fidelity --steps lucid=128 maco=128
    python -m bench.fidelity --peer lucent --recipes lucid,lucent   # Lucent's own render beside them

Prints one Markdown table (dead fraction, selectivity, median robustness, median HF energy,
seconds per filter including compilation) with a **photo** row per layer (the shipped cat photo at
the same size, measured the same way on its own 20 most active channels of the layer: what a
natural image scores) and, with ``--peer lucent``, a **Lucent** row: torch-lucent 0.1.8's
``render_vis`` with its defaults on the same filters and weights (bench/peers/lucent_render.py, in
``bench/.venv-lucent``; skipped with a note when absent), its images measured by vizjax's measures.
Writes one PNG sheet per layer: a row per recipe (and Lucent), the same first filters in each. The
measures are those of :mod:`vizjax.analysis.fidelity`, unchanged: a recipe is judged by them, never the
other way round.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench import peer
from bench.report import cpu_model
from vizjax import images, schema
from vizjax.analysis import fidelity
from vizjax.atlas import open_atlas
from vizjax.engine import ascent
from vizjax.engine.execution import Execution
from vizjax.engine.recipe import PRESETS
from vizjax.models.weights import Weights, load_weights
from vizjax.run import auto_dtype, run_atlas

LAYERS = ("block1_conv2", "block3_conv3", "block5_conv1")
#: The photo row: the cat's most active channels of each layer.
PHOTO_CHANNELS = 20


def measure_images(
    w: Weights, layer: str, filters: list[int], raw: np.ndarray
) -> dict[str, np.ndarray]:
    """vizjax's measures of images from elsewhere: ``raw (n, H, W, 3)`` RGB 0-255, image i made
    for filter ``filters[i]`` (distinct), through the engine's own measuring loop
    (:func:`vizjax.engine.ascent.iter_measures`, what ``vizjax fidelity`` runs on stored images)."""
    raw = np.asarray(raw, np.float32)[:, None]
    display = np.clip(np.round(raw), 0, 255).astype(np.uint8)
    row = {int(f): i for i, f in enumerate(filters)}

    def images(fs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        rows = [row[int(f)] for f in fs]
        return raw[rows], display[rows]

    parts = list(ascent.iter_measures(layer, filters, images, w.params, w.preprocessing, True))
    order = np.concatenate([fs for fs, _ in parts])
    out = {k: np.concatenate([m[k] for _, m in parts]) for k in parts[0][1]}
    assert list(order) == list(filters)  # chunks come back in request order
    out["filter"] = np.asarray(filters)
    out["dead"] = np.all(out["final_activation"] == 0, axis=-1)
    return out


def summarize_rows(table: dict[str, np.ndarray]) -> dict[str, Any]:
    """:func:`vizjax.analysis.fidelity.summarize` of measured images, as an atlas layer of these filters
    would give it (selectivity and specificity from :func:`vizjax.schema.index_datasets`)."""
    n = len(table["filter"])
    index = schema.index_datasets(table["filter"], np.ones(n, bool), table["activation_matrix"])
    columns = {k: np.asarray(table[k])[:, 0] for k in ("final_activation", "robustness")}
    return fidelity.summarize(
        {
            "filter": table["filter"],
            **columns,
            "hf_energy": np.asarray(table["hf_energy"])[:, 0],
            "dead": table["dead"],
            "zero_start_grad": np.zeros(n, bool),
            "nonfinite": ~np.isfinite(columns["final_activation"]),
            **index,
        }
    )


def photo_row(w: Weights, layer: str, size: int) -> dict[str, Any]:
    """The cat photo at ``size`` px on its own most active channels of ``layer``."""
    photo = images.load_image(images.sample_path(), (size, size))
    table = measure_images(w, layer, [0], photo[None])
    top = np.argsort(-table["activation_matrix"][0, 0])[:PHOTO_CHANNELS]
    table = measure_images(w, layer, [int(c) for c in top], np.repeat(photo[None], len(top), 0))
    s = summarize_rows(table)
    s["selectivity"] = float("nan")  # one image for every channel: not a question here
    return {"recipe": "photo", "steps": 0, "layer": layer, **s, "seconds_per_filter": None}


def recipe_rows(
    w: Weights,
    name: str,
    steps: int | None,
    layer: str,
    args: argparse.Namespace,
    out: Path,
    dtype: str = "float32",
) -> tuple[dict[str, Any], list[np.ndarray]]:
    recipe = PRESETS[name].replace(size=(args.size, args.size), seed=args.seed)
    if steps:
        recipe = recipe.replace(steps=steps)
    seed = f"-seed{args.seed}" if args.seed else ""
    tag = "" if dtype == "float32" else f"-{dtype}"
    path = out / f"{name}-{args.size}px-{recipe.steps}steps{seed}{tag}.h5"
    if dtype == "auto":
        dtype = auto_dtype(path)  # what `vizjax atlas --dtype auto` runs here (AMX: bfloat16)
    t0 = time.perf_counter()
    summary = run_atlas(
        path, [layer], f"0:{args.filters}", recipe, w, execution=Execution(dtype=dtype), quiet=True
    )
    computed = summary["layers"][layer]["computed"]
    seconds = time.perf_counter() - t0
    with open_atlas(path) as a:
        la = a.layers[layer]
        s = fidelity.summarize(la.fidelity)
        tiles = [la.image(f) for f in range(min(args.sheet, args.filters))]
    row = {"recipe": name, "steps": recipe.steps, "layer": layer, **s, "seed": args.seed}
    row["dtype"] = dtype
    row["seconds_per_filter"] = seconds / computed if computed else None
    return row, tiles


def lucent_rows(
    w: Weights, layer: str, args: argparse.Namespace, npz: Path, python: Path
) -> tuple[dict[str, Any], list[np.ndarray]]:
    filters = list(range(args.filters))
    steps = args.lucent_steps
    r = peer.run_lucent(python, npz, layer, filters, args.size, steps, args.seed, args.lucent_batch)
    raw = r["images"] * 255.0
    s = summarize_rows(measure_images(w, layer, filters, raw))
    row = {"recipe": f"Lucent (torch {r['torch']})", "steps": steps, "layer": layer, **s}
    row["seed"] = args.seed
    row["seconds_per_filter"] = r["seconds"] / len(filters)
    row["lucent_batch"] = args.lucent_batch or len(filters)
    tiles = [np.clip(np.round(x), 0, 255).astype(np.uint8) for x in raw[: args.sheet]]
    return row, tiles


def main(argv: list[str] | None = None) -> None:
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
    p.add_argument("--peer", choices=("lucent",), default=None, help="Lucent's own render too")
    p.add_argument("--lucent-steps", type=int, default=512)
    p.add_argument(
        "--lucent-batch",
        type=int,
        default=0,
        help="Lucent's filters per render_vis call (default: all in one batch)",
    )
    p.add_argument(
        "--seed",
        type=int,
        default=0,
        help="vizjax's recipe seed and Lucent's torch and numpy seeds",
    )
    p.add_argument("--sheet", type=int, default=8, help="filters per row of the PNG sheets")
    p.add_argument(
        "--dtypes",
        default="float32",
        help="vizjax's compute dtypes, comma-separated (auto: what --dtype auto runs here)",
    )
    p.add_argument("--out", default="bench/results/fidelity")
    args = p.parse_args(argv)

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    layers = args.layers.split(",")
    steps = {k: int(v) for k, v in (s.split("=") for s in args.steps)}
    w = load_weights()
    rows, sheets = [], {layer: [] for layer in layers}
    lucent = peer.lucent_python() if args.peer == "lucent" else None
    if args.peer == "lucent" and lucent is None:
        print(
            "note: --peer lucent skipped: no Lucent environment (bash bench/peers/"
            "make_lucent_venv.sh, or set VIZJAX_LUCENT_PYTHON)"
        )
    npz = Path(tempfile.mkdtemp(prefix="vizjax-fidelity-")) / "weights.npz"
    if lucent is not None:
        peer.export_weights(w, npz)

    def emit(row: dict[str, Any], tiles: list[np.ndarray] | None) -> None:
        rows.append(row)
        if tiles:
            sheets[row["layer"]].append((row["recipe"], tiles))
        print(json.dumps(row), flush=True)
        stamp = {"size": args.size, "date": dt.date.today().isoformat(), "cpu": cpu_model()}
        with open(out / "results.jsonl", "a") as fh:
            fh.write(json.dumps({**row, **stamp}) + "\n")

    for layer in layers:
        emit(photo_row(w, layer, args.size), None)
        if lucent is not None:
            emit(*lucent_rows(w, layer, args, npz, lucent))
        for name in args.recipes.split(","):
            for dtype in args.dtypes.split(","):
                emit(*recipe_rows(w, name, steps.get(name), layer, args, out, dtype))
    print_table(rows, args)
    for layer, entries in sheets.items():
        tiles = np.stack([im for _, ims in entries for im in ims])
        labels = [f"{name.split(' ')[0]} {f}" for name, ims in entries for f in range(len(ims))]
        cols = len(entries[0][1])
        path = images.save_png(images.grid(tiles, labels, cols=cols), out / f"sheet_{layer}.png")
        print(f"wrote {path}")


def print_table(rows: list[dict[str, Any]], args: argparse.Namespace) -> None:
    print(
        f"\n`python -m bench.fidelity {_command_line(args)}`"
        f" ({dt.date.today().isoformat()}, {cpu_model()})\n"
    )
    print(
        "| layer | recipe | steps | dead | selectivity | median robustness | median HF energy "
        "| s per filter |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        spf = r["seconds_per_filter"]
        spf_text = "–" if r["recipe"] == "photo" else "(resumed)" if spf is None else f"{spf:.1f}"
        print(
            f"| {r['layer']} | {r['recipe']}{_dtype_tag(r)} | {r['steps']} | {100 * r['dead_fraction']:.0f}% | "
            f"{_pct(r['selectivity'])} | {r['median_robustness']:.2f} | "
            f"{r['median_hf_energy']:.3f} | {spf_text} |"
        )


def _command_line(args: argparse.Namespace) -> str:
    parts = []
    for k, v in vars(args).items():
        if v:
            parts.append(f"--{k.replace('_', '-')} {' '.join(v) if isinstance(v, list) else v}")
    return " ".join(parts)


def _dtype_tag(row: dict[str, Any]) -> str:
    return f" ({row['dtype']})" if row.get("dtype", "float32") != "float32" else ""


def _pct(x: float) -> str:
    return "n/a" if x != x else f"{100 * x:.0f}%"


if __name__ == "__main__":
    main()
