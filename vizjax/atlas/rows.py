"""Rows in: a chunk of results converted and checked against the schema."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

import numpy as np

from vizjax import schema
from vizjax.atlas.segment import Geometry, _dims, _geometry_text
from vizjax.errors import AtlasError


class ChunkResult(Protocol):
    """What :meth:`AtlasWriter.write_chunk` takes (or a Mapping with these keys): ``filters`` (n,)
    and any of the per-row fields of :data:`vizjax.schema.ROW_FIELDS` with the row axis first."""

    filters: np.ndarray


def _chunk_arrays(
    rows: Any, geometry: Geometry, what: str, *, partial: bool = False
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """``(filters, {field: (n, *row) array})`` of a chunk, converted and checked against the
    schema; missing fields get their fill value unless ``partial`` (then only given ones).

    A chunk shaped like format 1 (``images`` (n, H, W, 3), ``dead`` = zero gradient at the start,
    the engine's :class:`vizjax.engine.ascent.Results` before v2) is read as format 1 is: its ``dead`` is
    ``zero_start_grad`` and ``dead`` is ``objective[:, -1] == 0``.
    """
    if isinstance(rows, Mapping):
        unknown = set(rows) - set(schema.ROW_FIELD)
        if unknown:
            raise AtlasError(f"{what}: unknown fields {sorted(unknown)}")

        def get(name: str) -> Any:
            return rows.get(name)
    else:

        def get(name: str) -> Any:
            return getattr(rows, name, None)

    given = {f.name: get(f.name) for f in schema.ROW_FIELDS}
    if given["done"] is not None and not isinstance(rows, Mapping):
        given["done"] = None  # an engine result may carry its own flags; the writer sets done
    elif given["done"] is not None:
        raise AtlasError(f"{what}: done is set by the writer")
    if given["filters"] is None:
        raise AtlasError(f"{what}: no filters")
    filters = np.asarray(given.pop("filters"))
    given.pop("done")
    if filters.ndim != 1:
        raise AtlasError(f"{what}: filters has shape {filters.shape}, expected (n,)")
    n, dims = len(filters), _dims(geometry)
    a = {k: np.asarray(v) for k, v in given.items() if v is not None}
    images = a.get("images")
    if "zero_start_grad" not in a and images is not None and images.ndim == 4:
        if "dead" in a:
            a["zero_start_grad"] = a.pop("dead")
        if "objective" in a and "final_activation" not in a:
            a["dead"] = a["objective"][:, -1] == 0
    if "final_activation" in a and "dead" not in a:
        a["dead"] = schema.derive_dead(np.asarray(a["final_activation"]).reshape(n, -1))

    out: dict[str, np.ndarray] = {}
    for field in schema.ROW_FIELDS:
        if field.name in schema.WRITER_FIELDS:
            continue
        expected = (n, *schema.row_shape(field, dims))
        if field.name not in a:
            if not partial:
                out[field.name] = schema.fill_array(field, n, dims)
            continue
        v = a[field.name]
        # K = 1 may come without its axis (one image per filter).
        if dims["K"] == 1 and field.shape[:1] == ("K",) and v.shape == (n, *expected[2:]):
            v = v[:, None]
        if v.shape != expected:
            raise AtlasError(
                f"{what}: {field.name} has shape {v.shape}, expected {expected} "
                f"({_geometry_text(geometry)})"
            )
        out[field.name] = v.astype(field.dtype, copy=False)
    return filters.astype(np.int64), out
