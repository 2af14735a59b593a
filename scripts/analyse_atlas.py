#!/usr/bin/env python
"""An example analysis of a vizjax atlas, written as a downstream reader would write it.

    python scripts/analyse_atlas.py ATLAS --out DIR

writes PNG plots into DIR (needs ``pip install vizjax[analysis]``: matplotlib and scipy):

- ``objective_curves.png``: per layer, every filter's objective over the ascent steps and
  their median;
- ``final_activation.png``: per layer, the distribution of the filters' final activations
  (dead filters, which never turned on, counted apart);
- ``robustness.png``: per layer, the distribution of robustness (activation under random
  jitter/scale/rotation over the unperturbed one), where the atlas measured it;
- ``similarity_<layer>.png``: the cosine similarity of the filters' responses over the layer's
  images (``activation_matrix`` columns), rows and columns ordered by hierarchical clustering so
  that groups of filters that respond alike form blocks, where the atlas measured it.

and prints each layer's figures (:func:`vizjax.analysis.fidelity.summarize`, the numbers ``vizjax info``
and the gallery show). It uses only the public reader (:func:`vizjax.open_atlas`),
:mod:`vizjax.analysis.fidelity` and numpy; anything an atlas lacks (older atlases have no measures) is
skipped with a line saying so.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from vizjax.analysis.fidelity import similarity, summarize


def _finite(v: np.ndarray) -> np.ndarray:
    v = np.asarray(v, np.float64).ravel()
    return v[np.isfinite(v)]


def summary_line(name: str, s: dict) -> str:
    """One layer's figures (:func:`vizjax.analysis.fidelity.summarize`) as the script prints them."""
    return (
        f"{name}: {s['done']} done, {s['dead_count']} dead, selectivity {s['selectivity']:.4g}, "
        f"median specificity {s['median_specificity']:.4g}, "
        f"median robustness {s['median_robustness']:.4g}, "
        f"median hf energy {s['median_hf_energy']:.4g}, "
        f"mean final activation {s['mean_final_activation']:.4g}"
    )


def cluster_order(sim: np.ndarray) -> np.ndarray:
    """Leaf order of an average-linkage clustering on the distance ``1 - sim``."""
    from scipy.cluster.hierarchy import leaves_list, linkage
    from scipy.spatial.distance import squareform

    if len(sim) < 3:
        return np.arange(len(sim))
    d = np.clip(1.0 - sim, 0.0, 2.0)
    np.fill_diagonal(d, 0.0)
    return leaves_list(linkage(squareform(d, checks=False), method="average"))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("atlas")
    p.add_argument("--out", required=True, help="folder for the PNG plots")
    args = p.parse_args(argv)

    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    from vizjax import open_atlas

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []

    def save(fig, name: str) -> None:
        fig.tight_layout()
        fig.savefig(out / name, dpi=110)
        plt.close(fig)
        written.append(out / name)

    with open_atlas(args.atlas) as atlas:
        layers = {name: layer for name, layer in atlas.layers.items() if layer.done.any()}
        if not layers:
            print(f"{args.atlas}: no finished filters", file=sys.stderr)
            return 1
        n = len(layers)
        fid = {name: layer.fidelity for name, layer in layers.items()}
        figures = {name: summarize(f) for name, f in fid.items()}
        for name, s in figures.items():
            print(summary_line(name, s))

        # Objective curves: one panel per layer.
        fig, axes = plt.subplots(1, n, figsize=(4 * n, 3.2), squeeze=False)
        for ax, (name, layer) in zip(axes[0], layers.items(), strict=True):
            obj = np.asarray(layer.objective[layer.done], np.float64)  # (n_done, T+1)
            steps = np.arange(obj.shape[1])
            ax.plot(steps, obj.T, color="tab:blue", alpha=min(1.0, 8 / len(obj)), lw=0.7)
            ax.plot(steps, np.nanmedian(obj, axis=0), color="black", lw=2, label="median")
            ax.set(title=f"{name} ({len(obj)} filters)", xlabel="step", ylabel="objective")
            ax.legend(loc="upper left", fontsize=8)
        save(fig, "objective_curves.png")

        # Final activations, dead filters apart.
        fig, axes = plt.subplots(1, n, figsize=(4 * n, 3.2), squeeze=False)
        for ax, (name, f) in zip(axes[0], fid.items(), strict=True):
            alive = _finite(f["final_activation"][~f["dead"]])
            ax.hist(alive, bins=30, color="tab:green")
            ax.set(
                title=f"{name}: {figures[name]['dead_count']} dead of {len(f['dead'])}",
                xlabel="final activation (mean over K images)",
                ylabel="filters",
            )
        save(fig, "final_activation.png")

        # Robustness, where measured.
        measured = {name: _finite(f["robustness"]) for name, f in fid.items()}
        measured = {name: v for name, v in measured.items() if v.size}
        if measured:
            fig, axes = plt.subplots(1, len(measured), figsize=(4 * len(measured), 3.2))
            for ax, (name, v) in zip(np.atleast_1d(axes), measured.items(), strict=True):
                ax.hist(v, bins=30, color="tab:orange")
                ax.axvline(1.0, color="black", lw=1, ls="--")
                median = figures[name]["median_robustness"]  # over the live filters
                ax.set(title=f"{name}: median {median:.2f}", xlabel="robustness")
            save(fig, "robustness.png")
        else:
            print("robustness: not measured in this atlas, no plot")

        # Similarity heatmaps ordered by clustering, where the activation matrix was measured.
        for name, layer in layers.items():
            a = layer.activation_matrix
            if a is None:
                print(f"{name}: no activation matrix in this atlas, no similarity heatmap")
                continue
            filters = np.sort(layer.completed())
            sim = similarity(a, filters)
            order = cluster_order(sim)
            fig, ax = plt.subplots(figsize=(6, 5.2))
            # Post-ReLU responses are >= 0, so similarities lie in [0, 1]: use the range there is.
            lo = float(np.min(sim)) if np.min(sim) < 1 else 0.0
            im = ax.imshow(sim[np.ix_(order, order)], cmap="viridis", vmin=lo, vmax=1)
            ticks = np.arange(len(order)) if len(order) <= 40 else []
            ax.set_xticks(ticks, [str(filters[i]) for i in order[ticks]], rotation=90, fontsize=6)
            ax.set_yticks(ticks, [str(filters[i]) for i in order[ticks]], fontsize=6)
            ax.set_title(f"{name}: cosine similarity of filter responses (clustered)")
            fig.colorbar(im, ax=ax, shrink=0.8)
            save(fig, f"similarity_{name}.png")

    for path in written:
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
