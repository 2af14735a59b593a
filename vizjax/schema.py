"""The atlas schema: the ONE table of what an atlas holds (format v2, and v1 for reading).

Everything that writes, reads, merges or upgrades atlases (:mod:`vizjax.atlas`) and the documentation's
schema section (:func:`markdown`, checked verbatim by a test) follow from the tables below, so the
documentation cannot drift from the files.

Shapes are written per row in symbols: ``K`` images per filter (diversity; 1 by default), ``H`` x
``W`` image size, ``D`` the image's channels (the model's input channels: 3 for RGB, 1 for
grayscale, more for multispectral), ``T`` optimization steps, ``C`` channels of the layer, ``top``
exemplars per channel, ``S`` the exemplar crop size. :func:`row_shape` turns them into numbers.

Pure data plus two pure functions over row fields (``dead`` and the per-layer index datasets),
which are defined here because the schema defines what they mean; no I/O.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import numpy as np

FORMAT = "vizjax-atlas"
#: The format this vizjax writes; it reads 1 and 2.
FORMAT_VERSION = 2
#: A segment file's ``format`` attribute (its own small header, see :data:`SEGMENT_ATTRS`).
SEGMENT_FORMAT = "vizjax-atlas-segment"


@dataclasses.dataclass(frozen=True)
class Field:
    """One dataset of the schema.

    ``shape`` is the shape of one row (the row axis, of length n, comes first in the file) in the
    symbols of this module; ``fill`` is the value of a float or bool field that was not computed
    (and of a virtual dataset's rows whose source is missing); ``since`` the first format version
    that has the field under this name and shape.
    """

    name: str
    dtype: str
    shape: tuple[str, ...]
    fill: Any
    meaning: str
    since: int = 2


@dataclasses.dataclass(frozen=True)
class Attr:
    """One HDF5 attribute of the schema."""

    name: str
    type: str
    meaning: str


#: Per-row fields of a layer, in the order they are written. Every segment has all of them; the
#: index presents each as a virtual dataset over the layer's segments.
ROW_FIELDS: tuple[Field, ...] = (
    Field("filters", "int32", (), -1, "filter index of the row", 1),
    Field("done", "bool", (), False, "the row is complete (its byte is written last)", 1),
    Field(
        "images",
        "uint8",
        ("K", "H", "W", "D"),
        0,
        "display images (pictures of D != 3 channels: `vizjax.images.picture`)",
    ),
    Field(
        "raw",
        "float32",
        ("K", "H", "W", "D"),
        np.nan,
        "the optimized images, 0-255 units (RGB for D = 3), before display conversion",
    ),
    Field(
        "objective",
        "float32",
        ("T+1",),
        np.nan,
        "the optimized objective before each step and after the last",
        1,
    ),
    Field(
        "zero_start_grad",
        "bool",
        (),
        False,
        "the gradient was exactly zero at the start (v1 called this `dead`)",
    ),
    Field("nonfinite", "bool", (), False, "NaN/Inf appeared during the ascent (flagged, kept)"),
    Field(
        "final_activation",
        "float32",
        ("K",),
        np.nan,
        "the filter's channel mean on each final image (untransformed)",
    ),
    Field(
        "dead",
        "bool",
        (),
        False,
        "final_activation is exactly 0 on all K images (the filter never turned on)",
    ),
    Field(
        "activation_matrix",
        "float32",
        ("K", "C"),
        np.nan,
        "mean activation of every channel of the layer on each image",
    ),
    Field(
        "robustness",
        "float32",
        ("K",),
        np.nan,
        "median over 8 jitter/scale/rotate draws of activation / unperturbed activation",
    ),
    Field(
        "hf_energy",
        "float32",
        ("K",),
        np.nan,
        "fraction of the luminance power spectrum (mean removed) above half Nyquist",
    ),
)
ROW_FIELD = {f.name: f for f in ROW_FIELDS}
#: Fields a writer sets itself: callers never pass ``done``; ``filters`` is fixed per segment.
WRITER_FIELDS = frozenset({"filters", "done"})

#: Regular (not virtual) datasets of a layer in the index, aligned to the layer's rows, computed
#: over its done rows by :func:`index_datasets` (or given by the caller) when the index is written.
INDEX_DATASETS: tuple[Field, ...] = (
    Field(
        "selectivity",
        "bool",
        (),
        False,
        "own image is the argmax of the filter's channel over the layer's k=0 images",
    ),
    Field(
        "specificity",
        "float32",
        (),
        np.nan,
        "own activation / mean activation of the filter over the other filters' k=0 images",
    ),
)
INDEX_DATASET = {f.name: f for f in INDEX_DATASETS}

#: Attributes of ``/layers/<layer>`` in the index.
LAYER_ATTRS: tuple[Attr, ...] = (
    Attr("num_filters", "int", "C, the layer's channel count"),
    Attr("k", "int", "K, images per filter"),
    Attr("image_height", "int", "H"),
    Attr("image_width", "int", "W"),
    Attr("steps", "int", "T"),
    Attr("image_channels", "int", "D, the model's input channels; 3 (RGB) where absent"),
    Attr(
        "segments",
        "JSON",
        'the rows this index maps, in order: `[["<layer>.<seq>.h5", start, stop], ...]`',
    ),
)

#: Root attributes of the index (and of a v1 file, with ``format_version`` 1).
ROOT_ATTRS: tuple[Attr, ...] = (
    Attr("format", "str", f'`"{FORMAT}"`'),
    Attr("format_version", "int", f"{FORMAT_VERSION}"),
    Attr("vizjax_version", "str", "the vizjax that wrote the index"),
    Attr("jax_version", "str", "the JAX of the run"),
    Attr("model", "str", "e.g. `vgg16`"),
    Attr("weights", "str", "weight set name"),
    Attr("weights_sha256", "str", "sha256 of the weights' source file"),
    Attr("preprocessing", "JSON", "the weights' input preprocessing"),
    Attr("created", "str", "ISO 8601 UTC time of the first run"),
    Attr("config", "JSON", "every setting of the first run (recipe, start, execution)"),
    Attr(
        "atlas_id",
        "str",
        "this atlas' id; its segments carry it, and only they are ever deleted by a writer",
    ),
    Attr(
        "data_folder",
        "str",
        "the data folder's name (beside the index; absent: `OUT.h5.d`, the index' name + `.d`)",
    ),
)

#: Attributes of a segment file's root: enough to check it against the layer it belongs to.
SEGMENT_ATTRS: tuple[Attr, ...] = (
    Attr("format", "str", f'`"{SEGMENT_FORMAT}"`'),
    Attr("format_version", "int", f"{FORMAT_VERSION}"),
    Attr("layer", "str", "the layer the rows belong to"),
    Attr("atlas_id", "str", "the id of the atlas that created it"),
    *(a for a in LAYER_ATTRS if a.name != "segments"),
)

#: Datasets of ``/layers/<layer>/exemplars`` (an external file); the row axis is the layer's C
#: channels (every channel, not only the filters the atlas visualized).
EXEMPLAR_FIELDS: tuple[Field, ...] = (
    Field("paths", "str", ("top",), "", 'image paths relative to images_dir ("" where fewer)'),
    Field("activation", "float32", ("top",), np.nan, "mean channel activation, descending"),
    Field(
        "position",
        "int32",
        ("top", "2"),
        -1,
        "(y, x) of the most active unit in the layer's output grid",
    ),
    Field(
        "box",
        "int32",
        ("top", "4"),
        -1,
        "(y0, x0, y1, x1) receptive-field box in the 224x224 resized image, clipped",
    ),
    Field("crops", "uint8", ("top", "S", "S", "3"), 0, "that box resized to S x S"),
)
EXEMPLAR_FIELD = {f.name: f for f in EXEMPLAR_FIELDS}
EXEMPLAR_ATTRS: tuple[Attr, ...] = (
    Attr("images_dir", "str", "the image folder, as given"),
    Attr("listing_sha256", "str", "sha256 of the sorted relative paths + sizes + mtimes"),
    Attr("n_images", "int", "images read"),
    Attr("n_skipped", "int", "images that could not be read"),
    Attr("top", "int", "exemplars kept per channel"),
    Attr("input_size", "int", "side of the resized network input (224)"),
    Attr("receptive_field", "int", "receptive field of the layer in px"),
    Attr("crop_size", "int", "S"),
)

#: Format v1 (one HDF5 file; still read by :func:`vizjax.atlas.open_atlas`).
V1_ROW_FIELDS: tuple[Field, ...] = (
    Field("filters", "int32", (), -1, "filter index of the row", 1),
    Field("images", "uint8", ("H", "W", "3"), 0, "the visualization, 0-255", 1),
    Field("raw", "float32", ("H", "W", "3"), 0, "the optimized image before conversion", 1),
    Field(
        "objective", "float32", ("T+1",), 0, "objective before the first and after every step", 1
    ),
    Field("dead", "bool", (), False, "zero gradient at the start (v2: `zero_start_grad`)", 1),
    Field("done", "bool", (), False, "the row holds committed data", 1),
)


# --------------------------------------------------------------------------------------------------
# shapes


def row_shape(field: Field, dims: Mapping[str, int]) -> tuple[int, ...]:
    """Per-row shape of ``field`` with the symbols of ``dims`` (e.g. ``{"K": 1, "H": 8, ...}``).

    Digits stand for themselves and ``"T+1"`` for ``dims["T"] + 1``.
    """
    out = []
    for s in field.shape:
        if s.isdigit():
            out.append(int(s))
        elif "+" in s:
            sym, plus = s.split("+")
            out.append(int(dims[sym]) + int(plus))
        else:
            out.append(int(dims[s]))
    return tuple(out)


def fill_array(field: Field, n: int, dims: Mapping[str, int]) -> np.ndarray:
    """``(n, *row_shape)`` of ``field``'s fill value."""
    return np.full((n, *row_shape(field, dims)), field.fill, dtype=np.dtype(field.dtype))


# --------------------------------------------------------------------------------------------------
# derived values


def derive_dead(final_activation: np.ndarray) -> np.ndarray:
    """``dead`` (n,) bool from ``final_activation`` (n, K): exactly 0 on every image (NaN: False)."""
    return np.all(np.asarray(final_activation) == 0, axis=1)


def index_datasets(
    filters: np.ndarray, done: np.ndarray, activation_matrix: np.ndarray
) -> dict[str, np.ndarray]:
    """The per-layer index datasets over the layer's rows.

    Takes ``filters`` (n,) int, ``done`` (n,) bool and ``activation_matrix`` (n, K, C) float32
    (rows not done or not measured may hold anything / NaN). Uses the k=0 images: row r of filter
    f is *selective* when its image is the argmax of channel f over the done rows' images, and its
    *specificity* is its own activation of f over the mean activation of f on the other done rows'
    images. Returns ``{"selectivity": (n,) bool, "specificity": (n,) float32}``, False/NaN where
    not computable (row not done, matrix not measured, fewer than two done rows, a zero mean).
    """
    filters = np.asarray(filters)
    n = len(filters)
    sel = np.zeros(n, bool)
    spec = np.full(n, np.nan, np.float32)
    rows = np.flatnonzero(np.asarray(done, bool))
    if len(rows) < 2:
        return {"selectivity": sel, "specificity": spec}
    a = np.asarray(activation_matrix)[rows, 0, :].astype(np.float64)  # (m, C): image x channel
    measured = np.all(np.isfinite(a), axis=1)
    for i, r in enumerate(rows):
        f = int(filters[r])
        if not measured[i] or not 0 <= f < a.shape[1]:
            continue
        col = a[measured, f]  # channel f over every measured image
        own = a[i, f]
        me = int(np.count_nonzero(measured[:i]))  # position of row r in ``col``
        if len(col) < 2:
            continue
        sel[r] = int(np.argmax(col)) == me and np.count_nonzero(col == own) == 1
        others = np.delete(col, me).mean()
        if others != 0:
            spec[r] = np.float32(own / others)
    return {"selectivity": sel, "specificity": spec}


# --------------------------------------------------------------------------------------------------
# documentation


def _shape_text(field: Field, row: str = "n") -> str:
    return "(" + ", ".join([row, *field.shape]) + (",)" if not field.shape else ")")


def _fill_text(fill: Any) -> str:
    if isinstance(fill, float) and np.isnan(fill):
        return "NaN"
    return '""' if fill == "" else str(fill)


def _field_table(
    fields: tuple[Field, ...], row: str = "n", since: bool = True, fill: bool = True
) -> list[str]:
    cols = ["name", "dtype", "shape", *(["fill"] if fill else []), "meaning"]
    cols += ["since"] if since else []
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for f in fields:
        cells = [f"`{f.name}`", f.dtype, _shape_text(f, row)]
        cells += [_fill_text(f.fill)] if fill else []
        cells.append(f.meaning)
        if since:
            cells.append(f"v{f.since}")
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _attr_list(attrs: tuple[Attr, ...]) -> str:
    return "; ".join(f"`{a.name}` ({a.type}: {a.meaning})" for a in attrs)


def markdown() -> str:
    """The schema section of docs/pages/atlas-format.md (both versions), generated from the tables of this module."""
    lines = [
        f"Schema (version {FORMAT_VERSION}). `OUT.h5` is a small index; the rows live in "
        "`OUT.<id>.d/<layer>.<seq>.h5` segment files (the data folder, beside the index, named "
        "by the atlas' id; `OUT.h5.d/` in atlases written before), which the index presents "
        "as one virtual "
        "dataset per field under `/layers/<layer>` (row axis n first; K images per filter, "
        "H x W pixels, D image channels, T steps, C channels of the layer):",
        "",
        *_field_table(ROW_FIELDS),
        "",
        "Per-layer datasets of the index (regular, aligned to the rows, computed over done rows):",
        "",
        *_field_table(INDEX_DATASETS),
        "",
        f"Layer attributes: {_attr_list(LAYER_ATTRS)}.",
        "",
        f"Root attributes: {_attr_list(ROOT_ATTRS)}.",
        "",
        "Dataset exemplars (optional), `/layers/<layer>/exemplars`, an external link to "
        "`OUT.<id>.d/exemplars.<layer>.h5`; rows are all C channels, S the crop size:",
        "",
        *_field_table(EXEMPLAR_FIELDS, row="C", since=False),
        "",
        f"Exemplar attributes: {_attr_list(EXEMPLAR_ATTRS)}.",
        "",
        "Schema (version 1, read by `open_atlas`, upgraded by `vizjax.atlas.upgrade`): one file, "
        "root attributes as above with `format_version` 1, and per layer `/layers/<layer>` "
        "(attribute `num_filters`) the datasets:",
        "",
        *_field_table(V1_ROW_FIELDS, since=False, fill=False),
    ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":  # python -m vizjax.schema > docs/pages/atlas-format.md's schema section
    print(markdown(), end="")
