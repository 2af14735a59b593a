"""What the pages show of an atlas: a layer's per-filter columns, read once (:class:`_LayerData`),
its figures as text, numbers for people, and the second atlas shown beside the first
(:class:`Beside`: which of its layers, and the recipe labels that tell the two apart).
Reads the atlas; writes nothing."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from vizjax import images
from vizjax.errors import VizjaxError


def _num(v: Any, digits: int = 4) -> str:
    """A number for people: 4 significant digits, '—' for NaN/None."""
    if v is None:
        return "—"
    v = float(v)
    return "—" if not math.isfinite(v) else f"{v:.{digits}g}"


# ---------------------------------------------------------------------------------------------
# What a layer shows.


class _LayerData:
    """The small per-filter columns of one layer, read once (images stay lazy in the atlas).

    ``recipe`` names the atlas' recipe when another atlas is shown beside it (the pictures' label
    becomes e.g. "classic, 20 steps"); ``beside`` marks the atlas shown beside the site's (its
    pictures go to ``<layer>/beside/``).
    """

    def __init__(self, layer: Any, recipe: str | None = None, beside: bool = False) -> None:
        self.layer = layer
        self.name: str = layer.name
        self.label = f"{recipe}, {layer.steps} steps" if recipe else None
        self.beside = beside
        rows = np.flatnonzero(layer.done)
        filters = layer.filters[rows].astype(int)
        order = np.argsort(filters, kind="stable")
        self.rows = rows[order]
        self.filters: list[int] = [int(f) for f in filters[order]]
        self.objective = np.asarray(layer.objective[self.rows], np.float64)
        self.final = np.asarray(layer.final_activation[self.rows], np.float64)  # (n, K)
        self.robustness = np.asarray(layer.robustness[self.rows], np.float64)  # (n, K)
        self.hf_energy = np.asarray(layer.hf_energy[self.rows], np.float64)  # (n, K)
        self.position = {f: i for i, f in enumerate(self.filters)}  # filter -> i
        fid = layer.fidelity  # columns over done rows in row order
        pos = {int(f): i for i, f in enumerate(fid["filter"])}
        take = [pos[f] for f in self.filters]
        self.fid = {k: np.asarray(v)[take] for k, v in fid.items()}
        self.measured = layer.activation_matrix is not None
        self.exemplar_attrs = layer.exemplar_attrs

    def __len__(self) -> int:
        return len(self.filters)

    def summary(self) -> dict[str, Any]:
        """Counts and the layer's figures (:func:`vizjax.analysis.fidelity.summarize`, as ``vizjax info``
        shows them) for the index and the layer page (NaN where not measured)."""
        from vizjax.analysis import fidelity

        s = fidelity.summarize(self.layer.fidelity)
        return {
            "done": len(self),
            "num_filters": self.layer.num_filters,
            "k": self.layer.k,
            "size": self.layer.image_shape,
            "channels": self.layer.image_channels,
            "steps": self.layer.steps,
            "dead": s["dead_count"],
            "zero_start_grad": s["zero_start_grad"],
            "nonfinite": s["nonfinite"],
            "final": s["mean_final_activation"],
            "selective": s["selectivity"] if math.isfinite(s["selectivity"]) else None,
            "specificity": s["median_specificity"],
            "robustness": s["median_robustness"],
            "hf_energy": s["median_hf_energy"],
            "exemplars": self.exemplar_attrs,
        }


def _view_text(s: dict[str, Any]) -> str | None:
    """How the pictures show images of other than 3 channels (:func:`vizjax.images.view`), or
    None for RGB."""
    d = s["channels"]
    return None if d == 3 else f"{d} input channel{'s' * (d > 1)}, pictured as {images.view(d)}"


def _summary_text(s: dict[str, Any]) -> str:
    parts = [
        f"{s['done']} of {s['num_filters']} filters",
        f"{s['dead']} dead",
        f"{s['zero_start_grad']} with zero start gradient",
    ]
    if s["nonfinite"]:
        parts.append(f"{s['nonfinite']} non-finite")
    parts.append(f"{s['size'][0]}x{s['size'][1]} px, {s['steps']} steps, K={s['k']}")
    if _view_text(s):
        parts.append(str(_view_text(s)))
    parts.append(f"mean final activation {_num(s['final'])}")
    return ", ".join(parts)


def _fidelity_text(s: dict[str, Any]) -> str | None:
    parts = []
    if s["selective"] is not None:
        parts.append(f"{100 * s['selective']:.0f}% selective")
    for key, label in (
        ("specificity", "median specificity"),
        ("robustness", "median robustness"),
        ("hf_energy", "median high-frequency energy"),
    ):
        if math.isfinite(s[key]):
            parts.append(f"{label} {_num(s[key], 3)}")
    return ", ".join(parts) or None


def _measures(d: _LayerData, i: int) -> list[tuple[str, str | None]]:
    """The fidelity rows of a filter page: ``[(name, text, or None if not measured)]``."""
    measures: list[tuple[str, str | None]] = []
    for name, v in (
        ("final activation", d.final[i]),
        ("robustness", d.robustness[i]),
        ("high-frequency energy", d.hf_energy[i]),
    ):
        ok = np.isfinite(v).any()
        measures.append((name, ", ".join(_num(x) for x in np.ravel(v)) if ok else None))
    selective = "yes" if d.fid["selectivity"][i] else "no"
    measures.append(("selective", selective if d.measured else None))
    spec = float(d.fid["specificity"][i])
    measures.append(("specificity", _num(spec) if math.isfinite(spec) else None))
    return measures


def _picture_text(d: _LayerData, i: int, k: int) -> str:
    """Robustness and high-frequency energy of image ``k`` of the ``i``-th filter, short enough
    for under a thumbnail: ``"r0.62 h0.40"`` ("—" where not measured)."""

    def fixed(v: float) -> str:
        return f"{v:.2f}" if math.isfinite(v) else "—"

    return f"r{fixed(d.robustness[i, k])} h{fixed(d.hf_energy[i, k])}"


# ---------------------------------------------------------------------------------------------
# A second atlas beside the first.


def recipe_name(atlas: Any) -> str:
    """The name of the recipe an atlas was made with (``config["recipe"]["name"]``; format 1
    atlases stored the preset's name alone), or "unknown recipe" for a config vizjax cannot read."""
    from vizjax.config import as_current

    try:
        return str(as_current(atlas.config)["recipe"]["name"])
    except (TypeError, ValueError, KeyError, AttributeError):
        return "unknown recipe"


class Beside:
    """The atlas shown beside the site's: ``file`` and ``recipe`` name it (``main_file`` and
    ``main_recipe`` name the site's), ``layers`` holds the data of each of the site's layers that
    it has finished filters of."""

    def __init__(self, atlas: Any, other: Any, names: list[str]) -> None:
        self.main_file, self.file = Path(atlas.path).name, Path(other.path).name
        self.main_recipe, self.recipe = recipe_name(atlas), recipe_name(other)
        if self.main_recipe == self.recipe:  # the labels alone would not tell them apart
            self.main_recipe = f"{self.main_file}: {self.main_recipe}"
            self.recipe = f"{self.file}: {self.recipe}"
        self.layers = {
            n: _LayerData(other.layers[n], self.recipe, beside=True)
            for n in names
            if n in other.layers and other.layers[n].done.any()
        }
        if not self.layers:
            raise VizjaxError(
                f"--beside {other.path} has no finished filters of the site's layers "
                f"({', '.join(names)}); it has: {', '.join(other.layers) or 'no layers'}"
            )
