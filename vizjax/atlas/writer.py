"""The single writer of an atlas: create or resume, begin layers, commit chunks, set fields."""

from __future__ import annotations

import functools
import json
import os
import re
import shutil
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from vizjax import schema
from vizjax.atlas.exemplars import _write_exemplars
from vizjax.atlas.files import (
    FORMAT,
    FORMAT_VERSION,
    _check_root,
    _jax_version,
    _open_h5,
    _text,
    _utc_now,
    _vizjax_version,
    check_layer_name,
    data_dir,
    new_data_dir,
    remove_abandoned_folders,
)
from vizjax.atlas.identity import check_same_run, stored_config
from vizjax.atlas.index import _Layer, _Store
from vizjax.atlas.lock import _acquire_lock, _Lock
from vizjax.atlas.rows import ChunkResult, _chunk_arrays
from vizjax.atlas.segment import Geometry, _geometry_text, _Segment, _write_rows
from vizjax.atlas.v1 import _upgrade_locked
from vizjax.durable import _NO_SPACE, _os_reason, _replace_atomically
from vizjax.errors import AtlasError


def _writing(method: Callable[..., Any]) -> Callable[..., Any]:
    """A writer method whose OSError (a full disk, say) becomes one AtlasError line that says
    what is kept: every row committed before it (each commit is durable when it returns)."""

    @functools.wraps(method)
    def wrapper(self: AtlasWriter, *args: Any, **kwargs: Any) -> Any:
        try:
            return method(self, *args, **kwargs)
        except OSError as e:
            # HDF5 reports the OS error inside a long multi-line message ("errno = 28, ...").
            code = e.errno or next(map(int, re.findall(r"errno = (\d+)", str(e))), None)
            reason = os.strerror(code) if code else " ".join(_os_reason(e).split())
            if code in _NO_SPACE:
                raise AtlasError(
                    f"cannot write atlas {self.path}: no space left ({reason}); every row "
                    "written before is kept: free space and rerun the same command to resume"
                ) from None
            raise AtlasError(f"cannot write atlas {self.path}: {reason}") from None

    return wrapper


class AtlasWriter:
    """Writes (or resumes) the atlas at ``path``; use as a context manager. One per atlas.

    ``attrs`` gives the root attributes ``model``, ``weights``, ``weights_sha256`` and
    ``preprocessing`` (strings); the writer adds ``format``, ``format_version``, ``vizjax_version``,
    ``jax_version``, ``created`` and ``config`` (``json.dumps(config, sort_keys=True)``).

    ``config`` is the run's :meth:`vizjax.config.RunConfig.to_json`. An existing atlas is resumed
    if it was written with the same weights and a config with the same identity
    (:func:`vizjax.config.identity`, whatever version wrote it); otherwise entering raises
    :class:`AtlasError` naming, in one line, the settings that differ.
    A format 1 atlas that passes this check is upgraded to format 2 first (:func:`upgrade`).
    Entering also deletes what killed writers left behind (temp files, unreferenced segments).

    Every :meth:`write_chunk` is durable when it returns; the index is rewritten when a layer gets
    new rows (:meth:`begin_layer`), by :meth:`finish_layer`, and on exit for layers whose rows or
    fields changed since (their per-layer datasets are recomputed).
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        attrs: dict[str, str],
        config: Mapping[str, Any],
    ) -> None:
        self.path = Path(path)
        self._attrs = {str(k): str(v) for k, v in attrs.items()}
        self._config_json = json.dumps(dict(config), sort_keys=True)
        self._config: dict[str, Any] = json.loads(self._config_json)
        self._lock: _Lock | None = None
        self._store: _Store | None = None
        self._stale: set[str] = set()  # layers whose per-layer datasets are out of date
        self._new_id: str | None = None  # the id of the atlas this writer creates

    # -- lifecycle -----------------------------------------------------------------------------

    def __enter__(self) -> AtlasWriter:
        if self.path.exists():
            # Refuse a foreign file or another run's atlas before creating the lock file beside
            # it (checked again under the lock below: the file may change in between).
            with _open_h5(self.path) as f:
                version = _check_root(f, self.path)
                self._check_run(dict(f.attrs))
                folder = data_dir(self.path, f.attrs)
            if version == 2 and not folder.exists():
                # The lock would create the data folder: an index whose segments are missing is
                # refused first, leaving no empty folder behind.
                _Store.load(self.path).close()
            self._new_id = None
        else:
            self._new_id = _Store.new_id()
            folder = new_data_dir(self.path, self._new_id)
        self._lock = _acquire_lock(self.path, folder)
        try:
            self._store = self._open()
        except OSError as e:
            self._release()
            raise AtlasError(f"cannot write atlas {self.path}: {_os_reason(e)}") from e
        except BaseException:
            self._release()
            raise
        return self

    def __exit__(self, exc_type: object, *exc: object) -> None:
        try:
            if self._store is not None and self._stale:
                try:
                    self._store.write_index()
                except Exception:
                    if exc_type is None:
                        raise
                    # Already failing: the index on disk is valid (only its per-layer
                    # datasets are older), so keep the original error.
        finally:
            self._release()

    def _release(self) -> None:
        if self._store is not None:
            self._store.close()
            self._store = None
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    def _require_open(self) -> _Store:
        if self._store is None:
            raise RuntimeError("AtlasWriter is not open; use it as a context manager")
        return self._store

    def _open(self) -> _Store:
        assert self._lock is not None
        if self.path.exists():
            with _open_h5(self.path) as f:
                version = _check_root(f, self.path)
                self._check_run(dict(f.attrs))
                if self._new_id is not None or data_dir(self.path, f.attrs) != self._lock.folder:
                    # Created or replaced between the first look and the lock.
                    raise AtlasError(
                        f"{self.path} changed while this command started; rerun it to resume it"
                    )
            if version == 1:
                _upgrade_locked(self.path)
            store = _Store.load(self.path)
            store.cleanup()
            return store
        if self._new_id is None:  # removed between the first look and the lock
            raise AtlasError(f"{self.path} changed while this command started; rerun it")
        root: dict[str, Any] = dict(self._attrs)
        root.update(
            format=FORMAT,
            format_version=FORMAT_VERSION,
            vizjax_version=_vizjax_version(),
            jax_version=_jax_version(),
            created=_utc_now(),
            config=self._config_json,
            atlas_id=self._new_id,
            data_folder=self._lock.folder.name,
        )
        store = _Store(self.path, root)
        store.cleanup()  # temp files only (the folder is new)
        remove_abandoned_folders(self.path, keep=self._lock.folder)
        store.write_index(create=True)
        return store

    def _check_run(self, file_attrs: Mapping[str, Any]) -> None:
        check_same_run(
            self.path,
            stored_config(file_attrs, self.path),
            self._config,
            str(_text(file_attrs.get("weights_sha256", ""))),
            self._attrs.get("weights_sha256", ""),
        )

    # -- public API ----------------------------------------------------------------------------

    @_writing
    def begin_layer(
        self,
        layer: str,
        num_filters: int,
        filters: Sequence[int],
        image_shape: tuple[int, int],
        steps: int,
        k: int = 1,
        channels: int = 3,
    ) -> list[int]:
        """Make sure ``layer`` has a row for each of ``filters``; return those not done yet.

        Takes the layer's channel count C, the filter indices this run wants, the image size
        ``(H, W)``, the number of optimization steps T, the images per filter K and the images'
        channels D (the model's input channels: 3 for RGB). Returns the
        requested filters that are not done, in request order (duplicates dropped). Filters without
        a row get a new segment and the index is rewritten, so a reader sees the layer's rows (not
        done) while they are computed. AtlasError if the layer exists with another geometry, a
        filter index is out of range or the layer name cannot be a file name.
        """
        store = self._require_open()
        check_layer_name(layer)
        geometry: Geometry = (
            int(num_filters),
            int(k),
            (int(image_shape[0]), int(image_shape[1])),
            int(steps),
            int(channels),
        )
        if min(geometry[0], geometry[1], *geometry[2], geometry[4]) < 1 or geometry[3] < 0:
            raise AtlasError(f"layer {layer}: bad geometry {_geometry_text(geometry)}")
        wanted = list(dict.fromkeys(int(f) for f in filters))
        bad = [f for f in wanted if not 0 <= f < geometry[0]]
        if bad:
            raise AtlasError(
                f"layer {layer} has filters 0..{geometry[0] - 1}; got {', '.join(map(str, bad))}"
            )
        state = store.layers.get(layer)
        if state is None:
            state = _Layer(*geometry[:4], image_channels=geometry[4])
            store.layers[layer] = state
        elif state.geometry is None and state.num_filters == geometry[0] and not state.runs:
            state.k, state.image_shape, state.steps, state.image_channels = geometry[1:]
        elif state.geometry != geometry:
            have = state.geometry or (state.num_filters, 0, (0, 0), 0, 3)
            raise AtlasError(
                f"layer {layer} in {self.path} has {_geometry_text(have)}; this run "
                f"has {_geometry_text(geometry)}; write to another --out"
            )
        new = [f for f in wanted if state.where(f) is None]
        if new:
            store.add_segment(layer, new)
            store.write_index()
        state.requested.update(wanted)
        todo = []
        for f in wanted:
            seg, r = state.where(f)  # type: ignore[misc]
            if not seg.done[r]:
                todo.append(f)
        return todo

    @_writing
    def record_config(self, name: str, entries: Mapping[str, Any]) -> None:
        """Merge ``entries`` into the config's ``name`` mapping (one that does not identify the
        run, such as each layer's execution decisions, ``tuning``): an atlas resumed by another
        run keeps the decisions of the layers that run did not compute. Durable when it returns."""
        store = self._require_open()
        config = json.loads(str(store.root.get("config") or "{}"))
        config[name] = {**(config.get(name) or {}), **{k: dict(v) for k, v in entries.items()}}
        store.root["config"] = json.dumps(config, sort_keys=True)
        store.write_index()

    @_writing
    def write_chunk(self, layer: str, rows: ChunkResult | Mapping[str, Any]) -> None:
        """Write the finished rows of ``n`` filters of ``layer``; durable when this returns.

        ``rows`` is a Mapping or an object with attributes named like the schema's per-row fields
        (:data:`vizjax.schema.ROW_FIELDS`), each with the row axis first: ``filters`` (n,) is
        required, any other field missing gets its fill value (NaN / False); ``done`` is the
        writer's. ``dead`` defaults to ``final_activation == 0`` on all K images. With K = 1 the K
        axis may be left out. The filters must have been begun with :meth:`begin_layer`; rows
        already done are left as they are. Cost: the chunk's bytes and two ``fdatasync``.
        """
        store = self._require_open()
        state = store.layers.get(layer)
        if state is None or not state.requested or state.geometry is None:
            raise AtlasError(f"layer {layer} was not begun (call begin_layer first)")
        filters, arrays = _chunk_arrays(rows, state.geometry, f"chunk of layer {layer}")
        stray = [int(f) for f in filters if int(f) not in state.requested]
        if stray:
            raise AtlasError(
                f"chunk of layer {layer} has filters {stray} that were not begun with begin_layer"
            )
        keep, where, seen = [], [], set()
        for i, f in enumerate(filters):
            seg, r = state.where(int(f))  # type: ignore[misc]
            if not seg.done[r] and (seg.name, r) not in seen:
                keep.append(i)
                where.append((seg, r))
                seen.add((seg.name, r))
        if not keep:
            return
        if len(keep) < len(filters):
            arrays = {k: v[keep] for k, v in arrays.items()}
        # Rows that are not done belong to this atlas alone (merge links only done rows), so
        # they are written in place even in a segment hard-linked elsewhere.
        _write_rows(where, arrays, mark_done=True)  # OSError: see _writing
        state.derived = None
        self._stale.add(layer)

    @_writing
    def write_fields(
        self, layer: str, filters: Sequence[int], values: Mapping[str, np.ndarray]
    ) -> None:
        """Set fields (e.g. measures) of done rows of ``layer``; durable when this returns.

        ``values`` maps field names of the schema (not ``filters``/``done``) to arrays with the
        row axis first, aligned to ``filters``. Setting ``final_activation`` also sets ``dead``
        unless given. The values are written in place: a ``kill -9`` during the write can leave a
        field of a row partly written (partly NaN where it was not measured before), which
        ``isnan(...).any()`` finds, so rerun the measure. A segment hard-linked into another
        atlas (by :func:`merge_atlases`) is copied first, so the other atlas does not change.
        The per-layer datasets are recomputed on :meth:`finish_layer` or exit.
        """
        store = self._require_open()
        state = store.layers.get(layer)
        if state is None or state.geometry is None:
            raise AtlasError(f"layer {layer} is not in {self.path}")
        rows = {"filters": np.asarray(list(filters)), **values}
        flt, arrays = _chunk_arrays(rows, state.geometry, f"fields of layer {layer}", partial=True)
        where = []
        for f in flt:
            w = state.where(int(f))
            if w is None or not w[0].done[w[1]]:
                raise AtlasError(f"filter {int(f)} of layer {layer} is not done in {self.path}")
            where.append(w)
        if not arrays:
            return
        self._unshare({seg for seg, _ in where}, layer)
        where = [state.where(int(f)) for f in flt]  # type: ignore[misc]
        _write_rows(where, arrays, mark_done=False)  # type: ignore[arg-type]  # OSError: _writing
        state.derived = None
        self._stale.add(layer)

    def _unshare(self, segments: set[_Segment], layer: str) -> None:
        """Copy segments that have other hard links, and point the index at the copies."""
        store = self._require_open()
        state = store.layers[layer]
        shared = [s for s in segments if os.stat(s.path).st_nlink > 1]
        if not shared:
            return
        for seg in shared:
            copy = store.new_segment_path(layer)
            tmp = copy.with_name(f".tmp-{copy.name}")
            shutil.copyfile(seg.path, tmp)
            _replace_atomically(tmp, copy)
            seg.close()
            seg.path = copy
        state._where = None
        store.write_index()

    @_writing
    def finish_layer(
        self, layer: str, index_datasets: Mapping[str, np.ndarray] | None = None
    ) -> None:
        """Rewrite the index with the per-layer datasets of ``layer`` (selectivity, specificity).

        ``index_datasets`` maps names of :data:`vizjax.schema.INDEX_DATASETS` to arrays aligned
        to the layer's rows (:meth:`layer_rows`); None computes them from the stored
        ``activation_matrix`` (:func:`vizjax.schema.index_datasets`).
        """
        store = self._require_open()
        state = store.layers.get(layer)
        if state is None:
            raise AtlasError(f"layer {layer} is not in {self.path}")
        given = None
        if index_datasets is not None:
            unknown = set(index_datasets) - set(schema.INDEX_DATASET)
            if unknown:
                raise AtlasError(f"unknown index datasets {sorted(unknown)}")
            n = len(state.filters())
            given = store._derive(state)
            for name, v in index_datasets.items():
                v = np.asarray(v)
                if v.shape != (n,):
                    raise AtlasError(
                        f"index dataset {name} of layer {layer} has shape {v.shape}, "
                        f"expected ({n},) (one value per row)"
                    )
                given[name] = v.astype(schema.INDEX_DATASET[name].dtype)
        store.write_index({layer: given} if given is not None else None)
        self._stale.discard(layer)

    def layer_rows(self, layer: str) -> np.ndarray:
        """The filter index of each of ``layer``'s rows, in row order (n,) int32."""
        state = self._require_open().layers.get(layer)
        if state is None:
            raise AtlasError(f"layer {layer} is not in {self.path}")
        return state.filters()

    def write_exemplars(
        self, layer: str, arrays: Mapping[str, np.ndarray], attrs: Mapping[str, Any]
    ) -> Path:
        """See :func:`write_exemplars` (the same, with this writer's lock)."""
        return _write_exemplars(self._require_open(), layer, arrays, attrs)
