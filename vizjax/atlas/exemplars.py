"""Dataset exemplars stored in an atlas: one file per layer in the data folder, linked from the index."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from vizjax import schema
from vizjax.atlas.files import _check_root, _open_h5, check_layer_name, data_dir, exemplars_name
from vizjax.atlas.index import _Layer, _Store
from vizjax.atlas.lock import _acquire_lock
from vizjax.atlas.v1 import _upgrade_locked
from vizjax.durable import _os_reason, _replace_atomically, fault
from vizjax.errors import AtlasError


def _check_exemplars(
    arrays: Mapping[str, np.ndarray], attrs: Mapping[str, Any], what: str
) -> dict[str, np.ndarray]:
    missing = [f.name for f in schema.EXEMPLAR_FIELDS if f.name not in arrays]
    unknown = sorted(set(arrays) - set(schema.EXEMPLAR_FIELD))
    if missing or unknown:
        raise AtlasError(f"{what}: missing fields {missing}, unknown fields {unknown}")
    missing = [a.name for a in schema.EXEMPLAR_ATTRS if a.name not in attrs]
    if missing:
        raise AtlasError(f"{what}: missing attributes {missing}")
    paths = np.asarray(arrays["paths"], dtype=object)
    if paths.ndim != 2:
        raise AtlasError(f"{what}: paths has shape {paths.shape}, expected (C, top)")
    c, top = paths.shape
    s = int(np.asarray(arrays["crops"]).shape[2]) if np.asarray(arrays["crops"]).ndim == 5 else -1
    dims = {"top": top, "S": s}
    out = {"paths": paths}
    for field in schema.EXEMPLAR_FIELDS[1:]:
        v = np.asarray(arrays[field.name])
        expected = (c, *schema.row_shape(field, dims))
        if v.shape != expected:
            raise AtlasError(f"{what}: {field.name} has shape {v.shape}, expected {expected}")
        out[field.name] = v.astype(field.dtype, copy=False)
    if int(attrs["top"]) != top or int(attrs["crop_size"]) != s:
        raise AtlasError(f"{what}: attributes top/crop_size do not match the arrays ({top}, {s})")
    return out


def _write_exemplars(
    store: _Store, layer: str, arrays: Mapping[str, np.ndarray], attrs: Mapping[str, Any]
) -> Path:
    what = f"exemplars of layer {layer}"
    check_layer_name(layer)
    data = _check_exemplars(arrays, attrs, what)
    c = len(data["paths"])
    state = store.layers.get(layer)
    if state is None:
        state = store.layers[layer] = _Layer(c, None, None, None)
    elif state.num_filters != c:
        raise AtlasError(f"{what}: {c} channels, the layer has {state.num_filters}")
    store.dir.mkdir(exist_ok=True)
    final = store.dir / exemplars_name(layer)
    tmp = store.dir / f".tmp-{final.name}"
    try:
        with h5py.File(tmp, "w") as f:
            for k, v in attrs.items():
                f.attrs[k] = v
            f.create_dataset(
                "paths",
                data=[[str(p) for p in row] for row in data["paths"]],
                dtype=h5py.string_dtype(),
            )
            for name in ("activation", "position", "box"):
                f.create_dataset(name, data=data[name])
            crops = data["crops"]
            f.create_dataset(
                "crops",
                data=crops,
                chunks=(1, *crops.shape[1:]) if crops.size else None,
                compression="gzip" if crops.size else None,
            )
        fault("exemplars.written")
        _replace_atomically(tmp, final)
    except OSError as e:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise AtlasError(f"cannot write {final}: {_os_reason(e)}") from e
    state.exemplars = True
    store.write_index()
    return final


def write_exemplars(
    path: str | os.PathLike[str],
    layer: str,
    arrays: Mapping[str, np.ndarray],
    attrs: Mapping[str, Any],
) -> Path:
    """Store the dataset exemplars of ``layer`` in the atlas at ``path``; returns their file.

    ``arrays`` holds every field of :data:`vizjax.schema.EXEMPLAR_FIELDS` (row axis C, every
    channel of the layer: ``paths`` (C, top) str, ``activation`` (C, top), ``position``
    (C, top, 2), ``box`` (C, top, 4), ``crops`` (C, top, S, S, 3) uint8) and ``attrs`` every
    attribute of :data:`vizjax.schema.EXEMPLAR_ATTRS`. Writes ``exemplars.<layer>.h5`` in the data folder
    (tmp + rename, replacing earlier exemplars) and links it from the index at
    ``/layers/<layer>/exemplars``. Takes the atlas' writer lock (AtlasError if a writer has it:
    with a writer open, call its :meth:`AtlasWriter.write_exemplars`). A format 1 atlas is upgraded.
    """
    p = Path(path)
    if not p.exists():
        raise AtlasError(f"no atlas at {p}")
    lock = _acquire_lock(p, data_dir(p))
    try:
        upgrade_needed = False
        with _open_h5(p) as f:
            upgrade_needed = _check_root(f, p) == 1
        if upgrade_needed:
            _upgrade_locked(p)
        store = _Store.load(p)
        try:
            store.cleanup()
            return _write_exemplars(store, layer, arrays, attrs)
        finally:
            store.close()
    except OSError as e:
        raise AtlasError(f"cannot write atlas {p}: {_os_reason(e)}") from e
    finally:
        lock.release()
