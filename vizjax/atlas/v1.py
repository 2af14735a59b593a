"""Format 1 atlases (one HDF5 file): read their rows, upgrade them to format 2."""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from vizjax.atlas.files import _COPY_ROWS, _check_root, _open_h5, _text, data_dir
from vizjax.atlas.identity import run_differences, stored_config
from vizjax.atlas.index import _Layer, _Store
from vizjax.atlas.lock import _acquire_lock
from vizjax.atlas.rows import _chunk_arrays
from vizjax.atlas.segment import Geometry, _Segment, _write_rows
from vizjax.durable import _os_reason, fault
from vizjax.errors import AtlasError


def _v1_layers(f: h5py.File) -> dict[str, tuple[Geometry, np.ndarray, np.ndarray]]:
    """``{layer: (geometry, filters, done)}`` of an open format 1 file."""
    out = {}
    for name, g in f.get("layers", {}).items():
        h, w = g["images"].shape[1:3]
        geometry = (
            int(g.attrs["num_filters"]),
            1,
            (int(h), int(w)),
            int(g["objective"].shape[1]) - 1,
            3,  # format 1 held RGB images only
        )
        out[name] = (geometry, g["filters"][...].astype(np.int32), g["done"][...].astype(bool))
    return out


def _v1_rows(g: h5py.Group, rows: np.ndarray) -> dict[str, np.ndarray]:
    """Format 1 rows (sorted indices) with format 2 names and shapes (see :func:`open_atlas`)."""
    objective = g["objective"][rows]
    return {
        "images": g["images"][rows][:, None],
        "raw": g["raw"][rows][:, None],
        "objective": objective,
        "zero_start_grad": g["dead"][rows],
        "final_activation": objective[:, -1:],  # format 1's objective is the channel mean
        "dead": objective[:, -1] == 0,
    }


def _copy_v1_rows(
    name: str, g: h5py.Group, segment: _Segment, src_rows: np.ndarray, dst_rows: np.ndarray
) -> None:
    """Copy format 1 rows ``src_rows`` (sorted) of ``g`` into ``segment`` rows ``dst_rows``,
    done; a few rows at a time, so memory stays small however large the layer."""
    for i in range(0, len(src_rows), _COPY_ROWS):
        rows = np.asarray(src_rows[i : i + _COPY_ROWS])
        chunk = {"filters": g["filters"][rows], **_v1_rows(g, rows)}
        _, arrays = _chunk_arrays(chunk, segment.geometry, f"layer {name}")
        where = [(segment, int(r)) for r in dst_rows[i : i + _COPY_ROWS]]
        _write_rows(where, arrays, mark_done=True)
        fault("upgrade.rows")


def _v1_journal(path: Path, root: Mapping[str, Any]) -> list[Path]:
    """The chunk files a killed format 1 writer left in ``OUT.h5.journal`` (checked)."""
    journal = path.with_name(path.name + ".journal")
    if not journal.is_dir():
        return []
    files = sorted(journal.glob("*.npz"))
    config = stored_config(root, path)
    for p in files:
        try:
            with np.load(p, allow_pickle=False) as z:
                theirs = json.loads(str(z["config"]))
                sha = str(z["weights_sha256"])
        except (OSError, ValueError, KeyError) as e:
            raise AtlasError(f"journal file {p} is unreadable ({e}); delete it to upgrade") from e
        if run_differences(theirs, config, sha, str(root.get("weights_sha256", ""))):
            raise AtlasError(f"journal {journal} is from another run; delete it to upgrade {path}")
    return files


def _upgrade_locked(path: Path) -> None:
    """Convert the format 1 atlas ``path`` (lock held) to format 2: one segment per layer with
    the file's rows (and those of a format 1 journal), then the index replaces the file."""
    with _open_h5(path) as f:
        if _check_root(f, path) != 1:
            return
        root = {k: _text(v) for k, v in f.attrs.items()}
        layers = _v1_layers(f)
    store = _Store(path, root)
    store.cleanup()  # no layers yet: a killed upgrade's segments go too (nothing refers to them)
    journal = _v1_journal(path, root)
    extra: dict[str, dict[int, tuple[Path, int]]] = {}  # layer -> filter -> (journal file, row)
    for p in journal:
        with np.load(p, allow_pickle=False) as z:
            for i, flt in enumerate(z["filters"]):
                extra.setdefault(str(z["layer"]), {})[int(flt)] = (p, i)
    with _open_h5(path) as f:
        for name, (geometry, filters, done) in layers.items():
            store.layers[name] = _Layer(*geometry[:4], image_channels=geometry[4])
            jfilters = [flt for flt in extra.get(name, {}) if flt not in set(filters.tolist())]
            all_filters = np.concatenate([filters, np.asarray(jfilters, np.int32)])
            if not len(all_filters):
                continue
            seg = store.add_segment(name, all_filters)
            rows = np.flatnonzero(done)
            _copy_v1_rows(name, f["layers"][name], seg, rows, rows)
            for r, flt in enumerate(all_filters.tolist()):
                src = extra.get(name, {}).get(flt)
                if src is None or seg.done[r]:
                    continue
                with np.load(src[0], allow_pickle=False) as z:
                    v1 = {
                        "filters": z["filters"][src[1] : src[1] + 1],
                        "images": z["images"][src[1] : src[1] + 1],
                        "raw": z["raw"][src[1] : src[1] + 1],
                        "objective": z["objective"][src[1] : src[1] + 1],
                        "dead": z["dead"][src[1] : src[1] + 1],
                    }
                _, arrays = _chunk_arrays(v1, seg.geometry, f"journal of layer {name}")
                _write_rows([(seg, r)], arrays, mark_done=True)
    for layer in store.layers.values():
        layer.derived = None
    store.write_index()  # the switch: from here on the atlas is format 2
    store.close()
    for p in journal:
        p.unlink()
    with contextlib.suppress(OSError):
        path.with_name(path.name + ".journal").rmdir()


def upgrade(path: str | os.PathLike[str]) -> bool:
    """Convert the format 1 atlas at ``path`` to format 2 in place; False if it already is 2.

    Atomic: the segments are written into the data folder first, then the new index replaces the
    old file in one rename; killed before, the file is still the complete format 1 atlas (and the
    next writer deletes the half-made folder). Takes the writer lock.
    """
    p = Path(path)
    if not p.exists():
        raise AtlasError(f"no atlas at {p}")
    lock = _acquire_lock(p, data_dir(p))
    try:
        with _open_h5(p) as f:
            if _check_root(f, p) == 2:
                return False
        _upgrade_locked(p)
        return True
    except OSError as e:
        raise AtlasError(f"cannot upgrade atlas {p}: {_os_reason(e)}") from e
    finally:
        lock.release()
