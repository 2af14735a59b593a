"""Quality per second: each recipe at 16 ... 512 steps, its fidelity measures against its seconds.

Plain script (not a test), run from the repository root on a quiet machine; resumable (a finished
point is a line of ``OUT/results.jsonl`` and is not run again; a point cut short is run again from
scratch, in a temporary folder, since its time would otherwise be unknown)::

    python -m bench.frontier                                  # block5_conv1, 8 filters, 128 px
    python -m bench.frontier --recipes lucid,lucent --steps 32,128,512 --peer lucent
    python -m bench.frontier --plot-only                      # table and plot from what is there

Each point is a fresh :func:`vizjax.run.run_atlas` of the first ``--filters`` filters of the layer
with the recipe shortened to that many steps (compilation included in its seconds, as a user pays
it), measured by :func:`vizjax.analysis.fidelity.summarize` exactly as ``bench.fidelity`` measures its rows;
``--peer lucent`` adds Lucent's ``render_vis`` at the same step counts. Prints a Markdown table and
writes ``OUT/frontier_<layer>.png``: median robustness and median HF energy against seconds per
filter, one line per recipe, Lucent as its own line, the photo's value as a dashed level.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import tempfile
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from bench import peer
from bench.fidelity import lucent_rows, photo_row, recipe_rows
from bench.report import cpu_model
from vizjax.models.weights import load_weights

STEPS = (16, 32, 64, 128, 256, 512)
RECIPES = ("lucid", "lucent", "maco")


def _key(row: dict[str, Any]) -> tuple[Any, ...]:
    return (
        row["layer"],
        row["recipe"].split(" ")[0],
        int(row["steps"]),
        row["size"],
        row["filters"],
    )


def load_rows(path: Path) -> list[dict[str, Any]]:
    """The finished points so far (the last line wins for a point measured twice)."""
    if not path.exists():
        return []
    rows = {}
    for line in path.read_text().splitlines():
        if line.strip():
            row = json.loads(line)
            rows[_key(row)] = row
    return list(rows.values())


def plot(rows: list[dict[str, Any]], layer: str, path: Path) -> Path:
    """Robustness and HF energy against seconds per filter, one line per recipe."""
    import matplotlib
    import matplotlib.ticker

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4), constrained_layout=True)
    mine = [r for r in rows if r["layer"] == layer]
    photo = [r for r in mine if r["recipe"] == "photo"]
    names = sorted({r["recipe"].split(" ")[0] for r in mine if r["recipe"] != "photo"})
    for ax, key, label in (
        (axes[0], "median_robustness", "median robustness (higher is better)"),
        (axes[1], "median_hf_energy", "median HF energy (lower is better)"),
    ):
        for name in names:
            # Joined in step order (compilation can make a short run slower per filter).
            pts = [
                (r["seconds_per_filter"], r[key], r["steps"])
                for r in sorted(mine, key=lambda r: r["steps"])
                if r["recipe"].split(" ")[0] == name and r["seconds_per_filter"]
            ]
            if not pts:
                continue
            xs, ys, steps = zip(*pts, strict=True)
            ax.plot(xs, ys, marker="o", label=name)
            for x, y, s in pts:
                ax.annotate(str(s), (x, y), textcoords="offset points", xytext=(3, 3), fontsize=7)
        if photo:
            ax.axhline(photo[0][key], ls="--", c="gray", lw=1, label="photo")
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.set_xlabel("seconds per filter (compilation included)")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle(f"{layer}: quality against time ({cpu_model()})", fontsize=10)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def print_table(rows: list[dict[str, Any]]) -> None:
    print("| layer | recipe | steps | dead | median robustness | median HF energy | s per filter |")
    print("|---|---|---|---|---|---|---|")
    order = sorted(
        rows, key=lambda r: (r["layer"], r["recipe"] != "photo", r["recipe"], r["steps"])
    )
    for r in order:
        spf = r["seconds_per_filter"]
        print(
            f"| {r['layer']} | {r['recipe']} | {r['steps']} | {100 * r['dead_fraction']:.0f}% | "
            f"{r['median_robustness']:.3f} | {r['median_hf_energy']:.3f} | "
            f"{'–' if spf is None else f'{spf:.2f}'} |"
        )


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--layers", default="block5_conv1")
    p.add_argument("--filters", type=int, default=8, help="the first N filters of each layer")
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--recipes", default=",".join(RECIPES))
    p.add_argument("--steps", default=",".join(map(str, STEPS)))
    p.add_argument("--peer", choices=("lucent",), default=None, help="Lucent's own render too")
    p.add_argument("--plot-only", action="store_true", help="no new points: table and plots")
    p.add_argument("--out", default="bench/results/frontier")
    args = p.parse_args(argv)

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results = out / "results.jsonl"
    layers = args.layers.split(",")
    steps = [int(s) for s in args.steps.split(",")]
    done = {_key(r) for r in load_rows(results)}
    stamp = {"size": args.size, "filters": args.filters}

    def emit(row: dict[str, Any]) -> None:
        row = {**row, **stamp, "date": dt.date.today().isoformat(), "cpu": cpu_model()}
        print(json.dumps(row), flush=True)
        with open(results, "a") as fh:
            fh.write(json.dumps(row) + "\n")

    if not args.plot_only:
        w = load_weights()
        lucent = peer.lucent_python() if args.peer == "lucent" else None
        if args.peer == "lucent" and lucent is None:
            print("note: --peer lucent skipped: no Lucent environment (bench/peers/README)")
        npz = Path(tempfile.mkdtemp(prefix="vizjax-frontier-")) / "weights.npz"
        if lucent is not None:
            peer.export_weights(w, npz)
        for layer in layers:
            if (layer, "photo", 0, args.size, args.filters) not in done:
                emit(photo_row(w, layer, args.size))
            for n in steps:
                # A point is timed from scratch: a half-done atlas of it is started again.
                ns = SimpleNamespace(
                    size=args.size, filters=args.filters, sheet=0, lucent_steps=n, seed=0
                )
                if lucent is not None and (layer, "Lucent", n, args.size, args.filters) not in done:
                    emit(lucent_rows(w, layer, ns, npz, lucent)[0])
                for name in args.recipes.split(","):
                    if (layer, name, n, args.size, args.filters) in done:
                        continue
                    with tempfile.TemporaryDirectory(prefix="vizjax-frontier-") as tmp:
                        emit(recipe_rows(w, name, n, layer, ns, Path(tmp))[0])
    rows = [r for r in load_rows(results) if (r["size"], r["filters"]) == (args.size, args.filters)]
    print(f"\n`python -m bench.frontier` ({dt.date.today().isoformat()}, {cpu_model()})\n")
    print_table(rows)
    for layer in layers:
        if any(r["layer"] == layer for r in rows):
            print(f"wrote {plot(rows, layer, out / f'frontier_{layer}.png')}")


if __name__ == "__main__":
    main()
