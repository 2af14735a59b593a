"""Reading an atlas (format 1 or 2): :func:`open_atlas`, :class:`Atlas`, :class:`AtlasLayer`, lazy fields."""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from vizjax import names, schema
from vizjax.atlas.files import _SEGMENT_RE, _check_root, _open_h5, _text, data_dir
from vizjax.atlas.segment import RGB, Geometry, _open_segment
from vizjax.errors import AtlasError, VizjaxError


def _rows_key(key: Any, n: int) -> tuple[Any, Any, tuple[Any, ...]]:
    """Split a numpy index into ``(rows, how, rest)``: rows is a slice with step 1 or a sorted
    unique int array to read, how re-indexes what was read (None: as is), rest applies after."""
    if not isinstance(key, tuple):
        key = (key,)
    if not key or key[0] is Ellipsis:
        return slice(0, n), None, key
    first, rest = key[0], key[1:]
    if isinstance(first, (int, np.integer)):
        i = int(first) + (n if first < 0 else 0)
        if not 0 <= i < n:
            raise IndexError(f"row {int(first)} out of range for {n} rows")
        return slice(i, i + 1), 0, rest
    if isinstance(first, slice):
        start, stop, step = first.indices(n)
        if step == 1:
            return slice(start, max(start, stop)), None, rest
        first = np.arange(start, stop, step)
    idx = np.asarray(first)
    if idx.dtype == bool:
        if idx.shape != (n,):
            raise IndexError(f"boolean index of shape {idx.shape} for {n} rows")
        idx = np.flatnonzero(idx)
    idx = np.where(idx < 0, idx + n, idx).astype(np.int64)
    if idx.size and (idx.min() < 0 or idx.max() >= n):
        raise IndexError(f"row index out of range for {n} rows")
    uniq, inverse = np.unique(idx, return_inverse=True)
    return uniq, inverse.reshape(idx.shape), rest


class LazyField:
    """One per-row field of a layer, read on indexing: ``field[i]``, ``field[:, -1]``,
    ``field[mask]`` read only the rows asked for. ``np.asarray(field)`` reads all of it."""

    def __init__(
        self,
        name: str,
        shape: tuple[int, ...],
        dtype: np.dtype,
        read: Callable[[slice | np.ndarray], np.ndarray],
    ) -> None:
        self.name, self.shape, self.dtype, self._read = name, shape, np.dtype(dtype), read

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, key: Any) -> Any:
        rows, how, rest = _rows_key(key, self.shape[0])
        if isinstance(rows, slice) and rows.stop <= rows.start:
            data = np.zeros((0, *self.shape[1:]), self.dtype)
        elif isinstance(rows, np.ndarray) and not rows.size:
            data = np.zeros((0, *self.shape[1:]), self.dtype)
        else:
            data = self._read(rows)
        if isinstance(how, int):  # one row: its axis is gone
            return data[0][rest] if rest else data[0]
        if how is not None:
            data = data[how]
        if key is Ellipsis or (isinstance(key, tuple) and key and key[0] is Ellipsis):
            return data[rest]
        return data[(slice(None), *rest)] if rest else data

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        a = self[...]
        return a if dtype is None else a.astype(dtype)

    def __repr__(self) -> str:
        return f"LazyField({self.name!r}, shape={self.shape}, dtype={self.dtype})"


def _h5_reader(ds: h5py.Dataset) -> Callable[[slice | np.ndarray], np.ndarray]:
    name, file = ds.name, ds.file.filename

    def read(rows: slice | np.ndarray) -> np.ndarray:
        try:
            if isinstance(rows, slice):
                return ds[rows]
            if rows[-1] - rows[0] + 1 <= 2 * len(rows):  # dense: one hyperslab, then pick
                return ds[int(rows[0]) : int(rows[-1]) + 1][rows - rows[0]]
            return ds[rows.tolist()]
        except OSError as e:  # a damaged data file under the virtual dataset
            msg = " ".join(str(e).split())
            raise AtlasError(f"cannot read {name} of atlas {file} ({msg})") from None

    return read


def _moved(ds: h5py.Dataset, folder: str) -> bool:
    """``ds`` is a virtual dataset whose sources are in another folder than ``folder``: the atlas
    was renamed (index and data folder) after its index was written, so HDF5 would read fill
    values; the rows are then read from the segments themselves."""
    if not ds.is_virtual:
        return False
    names = {m.file_name.replace("%%", "%") for m in ds.virtual_sources()}
    return any(n.split("/", 1)[0] != folder for n in names)


def _segments_reader(
    atlas: Atlas, segments: list[tuple[str, int, int]], field: str
) -> Callable[[slice | np.ndarray], np.ndarray]:
    """Read ``field``'s rows from the segment files (rows concatenated as ``segments`` says)."""
    sizes = np.asarray([b - a for _, a, b in segments])
    stops = np.cumsum(sizes)
    starts = stops - sizes

    def read(rows: slice | np.ndarray) -> np.ndarray:
        idx = np.arange(rows.start, rows.stop) if isinstance(rows, slice) else np.asarray(rows)
        parts, where = [], []
        for (fname, a, _), start, stop in zip(segments, starts, stops, strict=True):
            mine = np.flatnonzero((idx >= start) & (idx < stop))
            if not mine.size:
                continue
            local = idx[mine] - start + a
            ds = atlas._segment_file(fname)[field]
            lo = int(local.min())
            parts.append(ds[lo : int(local.max()) + 1][local - lo])
            where.append(mine)
        out = np.concatenate(parts)
        order = np.empty(len(idx), np.int64)
        order[np.concatenate(where)] = np.arange(len(idx))
        return out[order]

    return read


#: Bound of the integer attributes of a layer (channels, K, H, W, steps) a reader accepts.
_MAX_DIM = 1 << 24


def _int_attr(a: Mapping[str, Any], key: str, lo: int, hi: int, default: int | None = None) -> int:
    """Layer attribute ``key`` as an int in ``lo..hi``; ValueError naming it otherwise."""
    v = a.get(key, default)
    if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
        raise ValueError(f"attribute {key} is {v!r}, expected an integer in {lo}..{hi}")
    return v


def _dataset(g: h5py.Group, name: str) -> h5py.Dataset:
    """Dataset ``name`` of ``g``; ValueError if it is missing or not a dataset."""
    ds = g.get(name)
    if ds is None:
        raise ValueError(f"{name} is missing")
    if not isinstance(ds, h5py.Dataset):
        raise ValueError(f"{name} is a {type(ds).__name__}, not a dataset")
    return ds


def _read_rows(ds: h5py.Dataset, name: str, kinds: str) -> np.ndarray:
    """A small 1-D per-row dataset (filters, done), checked and read."""
    if ds.ndim != 1 or ds.dtype.kind not in kinds:
        raise ValueError(f"{name} is {ds.dtype} {ds.shape}, expected one value per row")
    out = ds[...]
    return out.astype(np.int32) if kinds != "b" else out.astype(bool)


def _segments_attr(text: Any) -> list[tuple[str, int, int]]:
    """The ``segments`` layer attribute, checked: ``[[file, start, stop], ...]`` with segment
    file names (no folders) and ``0 <= start <= stop``."""
    try:
        spec = json.loads(text)
    except (TypeError, ValueError):
        raise ValueError("attribute segments is not JSON") from None
    out = []
    for item in spec if isinstance(spec, list) else [spec]:
        ok = isinstance(item, list) and len(item) == 3 and isinstance(item[0], str)
        ok = ok and all(isinstance(v, int) and not isinstance(v, bool) for v in item[1:])
        if (
            not ok
            or not _SEGMENT_RE.match(item[0])
            or "/" in item[0]
            or not 0 <= item[1] <= item[2]
        ):
            raise ValueError(f"attribute segments has an entry {item!r}")
        out.append((item[0], item[1], item[2]))
    return out


class AtlasLayer:
    """One layer of an open atlas (format 1 or 2, presented with format 2 names and shapes).

    ``filters`` (n,) and ``done`` (n,) are loaded; every per-row field of
    :data:`vizjax.schema.ROW_FIELDS` and every index dataset is a :class:`LazyField`:
    ``layer["raw"]`` or ``layer.raw`` (n, K, H, W, D), read only where indexed. ``image_channels``
    is D, the model's input channels (3: RGB, also for atlases that do not record it).
    """

    def __init__(self, atlas: Atlas, name: str, group: h5py.Group) -> None:
        self.name = name
        self._atlas = atlas
        self._group = group
        if not isinstance(group, h5py.Group):
            raise ValueError(f"it is a {type(group).__name__}, not a group")
        a = {k: _text(v) for k, v in group.attrs.items()}
        self.num_filters = _int_attr(a, "num_filters", 1, _MAX_DIM)
        self.format_version = atlas.format_version
        self._fields: dict[str, LazyField] = {}
        self._segments: list[tuple[str, int, int]] = []
        if atlas.format_version == 1:
            images = _dataset(group, "images")
            if images.ndim != 4 or images.shape[3] != 3:
                raise ValueError(f"images has shape {images.shape}, expected (n, H, W, 3)")
            objective = _dataset(group, "objective")
            if objective.ndim != 2 or objective.shape[1] < 1:
                raise ValueError(f"objective has shape {objective.shape}, expected (n, T+1)")
            h, w = images.shape[1:3]
            self.k, self.image_shape = 1, (int(h), int(w))
            self.steps = int(objective.shape[1]) - 1
            self.image_channels = RGB
            fields: tuple[schema.Field, ...] = schema.V1_ROW_FIELDS
        else:
            self.k = _int_attr(a, "k", 1, _MAX_DIM, default=1)
            self.image_shape = (
                _int_attr(a, "image_height", 0, _MAX_DIM, default=0),
                _int_attr(a, "image_width", 0, _MAX_DIM, default=0),
            )
            self.steps = _int_attr(a, "steps", 0, _MAX_DIM, default=0)
            self.image_channels = _int_attr(a, "image_channels", 1, _MAX_DIM, default=RGB)
            self._segments = _segments_attr(a.get("segments", "[]"))
            fields = schema.ROW_FIELDS if "k" in a else ()
            for fname, _, _ in self._segments:
                p = atlas.data_dir / fname
                if not p.exists():
                    raise AtlasError(
                        f"atlas data file {p} is missing (an atlas is {atlas.path.name} plus its "
                        f"folder {atlas.data_dir.name}; copy or move both, keeping the folder's name)"
                    )
        self._moved = (
            atlas.format_version == 2
            and bool(self._segments)
            and _moved(_dataset(group, "filters"), atlas.data_dir.name)
        )
        self.filters: np.ndarray = _read_rows(_dataset(group, "filters"), "filters", "iu")
        self.done: np.ndarray = _read_rows(_dataset(group, "done"), "done", "b")
        if self._moved:
            n = len(self.filters)
            self.filters = _segments_reader(atlas, self._segments, "filters")(slice(0, n))
            self.done = _segments_reader(atlas, self._segments, "done")(slice(0, n)).astype(bool)
        n = len(self.filters)
        if self.done.shape != (n,):
            raise ValueError(f"done has shape {self.done.shape}, filters ({n},)")
        # Every field's shape and dtype is checked here, on open, so a damaged or crafted file
        # is refused in one line instead of failing (or reading gigabytes) later.
        for field in fields:
            ds = _dataset(group, field.name)
            want = (n, *schema.row_shape(field, self.dims))
            if ds.shape != want or ds.dtype.kind != np.dtype(field.dtype).kind:
                raise ValueError(
                    f"{field.name} is {ds.dtype} {ds.shape}, expected {field.dtype} {want}"
                )
        for field in schema.INDEX_DATASETS if atlas.format_version == 2 else ():
            if field.name in group:
                ds = _dataset(group, field.name)
                if ds.shape != (n,) or ds.dtype.kind != np.dtype(field.dtype).kind:
                    raise ValueError(f"{field.name} is {ds.dtype} {ds.shape}, expected ({n},)")
        if n and (self.filters.min() < 0 or self.filters.max() >= self.num_filters):
            raise ValueError(f"filters outside 0..{self.num_filters - 1}")
        if len(np.unique(self.filters)) != n:
            raise ValueError("a filter has several rows")
        if atlas.format_version == 2 and "k" not in a and n:
            raise ValueError(f"{n} rows but no image geometry (k, image_height, ...)")
        if atlas.format_version == 2 and fields:
            self._check_segments(atlas.data_dir, n)
        self._rows = {int(f): i for i, f in enumerate(self.filters)}

    def _check_segments(self, folder: Path, n: int) -> None:
        """The index' ``segments`` map exactly its rows, each to a valid segment of this layer."""
        if sum(b - a for _, a, b in self._segments) != n:
            raise ValueError(
                f"segments map {sum(b - a for _, a, b in self._segments)} rows, not {n}"
            )
        geometry: Geometry = (
            self.num_filters,
            self.k,
            self.image_shape,
            self.steps,
            self.image_channels,
        )
        filters = []
        for fname, a, b in self._segments:
            seg = _open_segment(folder / fname, self.name, geometry)
            if b > len(seg.filters):
                raise ValueError(
                    f"segments maps rows {a}:{b} of {fname}, it has {len(seg.filters)}"
                )
            filters.append(seg.filters[a:b])
        if n and not np.array_equal(np.concatenate(filters), self.filters):
            raise ValueError("filters differ from the segments' filters")

    @property
    def dims(self) -> dict[str, int]:
        """The schema symbols of this layer: K, H, W, D, T, C."""
        h, w = self.image_shape
        d = self.image_channels
        return {"K": self.k, "H": h, "W": w, "D": d, "T": self.steps, "C": self.num_filters}

    # -- lazy fields --------------------------------------------------------------------------

    def field(self, name: str) -> LazyField:
        """The per-row field or index dataset ``name`` as a :class:`LazyField` (n, ...)."""
        if name in self._fields:
            return self._fields[name]
        spec = schema.ROW_FIELD.get(name) or schema.INDEX_DATASET.get(name)
        if spec is None:
            raise KeyError(name)
        n = len(self.filters)
        shape = (n, *schema.row_shape(spec, self.dims))
        g = self._group
        read: Callable[[slice | np.ndarray], np.ndarray]
        if self.format_version == 1 and name in ("images", "raw"):
            inner = _h5_reader(g[name])

            def read(rows: Any, inner: Any = inner) -> np.ndarray:
                return inner(rows)[:, None]
        elif self.format_version == 1 and name == "zero_start_grad":
            read = _h5_reader(g["dead"])
        elif self.format_version == 1 and name == "final_activation":
            inner = _h5_reader(g["objective"])  # format 1's objective: the channel mean

            def read(rows: Any, inner: Any = inner) -> np.ndarray:
                return inner(rows)[:, -1:]
        elif self.format_version == 1 and name == "dead":
            inner = _h5_reader(g["objective"])

            def read(rows: Any, inner: Any = inner) -> np.ndarray:
                return inner(rows)[:, -1] == 0
        elif name in schema.INDEX_DATASET and name not in g:
            derived = self._derived

            def read(rows: Any, v: Any = derived[name]) -> np.ndarray:
                return v[rows]
        elif self._moved and name in schema.ROW_FIELD:
            read = _segments_reader(self._atlas, self._segments, name)
        elif name in g and (self.format_version == 2 or name in ("filters", "done", "objective")):
            read = _h5_reader(g[name])
        else:  # a field this file does not have: its fill value

            def read(rows: Any, spec: Any = spec) -> np.ndarray:
                m = len(range(n)[rows]) if isinstance(rows, slice) else len(rows)
                return schema.fill_array(spec, m, self.dims)

        self._fields[name] = LazyField(name, shape, np.dtype(spec.dtype), read)
        return self._fields[name]

    def __getitem__(self, name: str) -> LazyField:
        try:
            return self.field(name)
        except KeyError:
            raise KeyError(f"layer {self.name} has no field {name!r}") from None

    def __getattr__(self, name: str) -> LazyField:
        if name in schema.ROW_FIELD or name in schema.INDEX_DATASET:
            return self.field(name)
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    @functools.cached_property
    def _derived(self) -> dict[str, np.ndarray]:
        return schema.index_datasets(self.filters, self.done, self.field("activation_matrix")[...])

    # -- rows ---------------------------------------------------------------------------------

    def completed(self) -> np.ndarray:
        """Filter indices whose rows are done, in row order."""
        return self.filters[self.done]

    def row(self, f: int) -> int:
        """Row of filter ``f``; AtlasError if the atlas has no row for it."""
        try:
            return self._rows[int(f)]
        except KeyError:
            raise AtlasError(
                f"filter {f} of layer {self.name} is not in {self._atlas.path}"
            ) from None

    def _done_row(self, f: int) -> int:
        r = self.row(f)
        if not self.done[r]:
            raise AtlasError(
                f"filter {f} of layer {self.name} is not done yet in {self._atlas.path}"
            )
        return r

    def image(self, f: int, k: int = 0) -> np.ndarray:
        """The ``(H, W, D)`` uint8 image ``k`` of filter ``f`` (D: :attr:`image_channels`; its
        picture: :func:`vizjax.images.picture`); AtlasError if absent or not done."""
        if not 0 <= k < self.k:
            raise AtlasError(f"layer {self.name} has {self.k} images per filter; got k={k}")
        return self.field("images")[self._done_row(f)][k]

    def images_of(self, f: int) -> np.ndarray:
        """The ``(K, H, W, D)`` uint8 images of filter ``f``."""
        return self.field("images")[self._done_row(f)]

    # -- analysis -----------------------------------------------------------------------------

    def to_numpy(self) -> dict[str, np.ndarray]:
        """Every per-row field and index dataset over the done rows (row axis first, no ``done``).

        Reads everything the layer holds (``raw`` included) into memory.
        """
        rows = np.flatnonzero(self.done)
        names = [f.name for f in schema.ROW_FIELDS if f.name != "done"]
        names += [d.name for d in schema.INDEX_DATASETS]
        return {name: self.field(name)[rows] for name in names}

    @functools.cached_property
    def activation_matrix(self) -> np.ndarray | None:
        """``(n_done, K, C)`` float32 mean activation of every channel on each done row's images,
        or None when it was not measured (all NaN, or no done rows)."""
        a = self.field("activation_matrix")[self.done]
        if not a.size or np.isnan(a).all():
            return None
        return a

    @functools.cached_property
    def fidelity(self) -> dict[str, np.ndarray]:
        """Per-filter measures over the done rows, one numpy column each: ``filter``,
        ``final_activation`` / ``robustness`` / ``hf_energy`` (means over K), ``dead``,
        ``zero_start_grad``, ``nonfinite``, ``selectivity``, ``specificity``."""
        rows = np.flatnonzero(self.done)
        col = {name: self.field(name)[rows] for name in ("final_activation", "robustness")}
        col["hf_energy"] = self.field("hf_energy")[rows]
        return {
            "filter": self.filters[rows],
            "final_activation": col["final_activation"].mean(axis=1),
            "dead": self.field("dead")[rows],
            "zero_start_grad": self.field("zero_start_grad")[rows],
            "nonfinite": self.field("nonfinite")[rows],
            "selectivity": self.field("selectivity")[rows],
            "specificity": self.field("specificity")[rows],
            "robustness": col["robustness"].mean(axis=1),
            "hf_energy": col["hf_energy"].mean(axis=1),
        }

    def nearest(self, f: int, k: int = 5) -> list[tuple[int, float]]:
        """The ``k`` done filters whose channels respond most like ``f``'s over the layer's
        images, highest first, ``[(filter, similarity), ...]`` (:func:`vizjax.analysis.fidelity.nearest`).
        Empty without a measured activation matrix; AtlasError if ``f`` is not done."""
        from vizjax.analysis import fidelity

        self._done_row(f)
        a = self.activation_matrix
        return [] if a is None else fidelity.nearest(a, self.completed(), f, k)

    def _exemplars_group(self) -> h5py.Group | None:
        if self.format_version == 1:
            return None
        try:
            link = self._group.get("exemplars", getlink=True)
            if self._moved and isinstance(link, h5py.ExternalLink):
                # The file the index names, in the folder where it is now.
                return self._atlas._segment_file(Path(link.filename).name)["/"]
            return self._group.get("exemplars")
        except (KeyError, OSError):  # linked file missing
            return None

    @property
    def exemplar_attrs(self) -> dict[str, Any] | None:
        """The exemplars' attributes (:data:`vizjax.schema.EXEMPLAR_ATTRS`), or None."""
        g = self._exemplars_group()
        return None if g is None else {k: _text(v) for k, v in g.attrs.items()}

    def exemplars(self, f: int) -> dict[str, Any] | None:
        """Dataset exemplars of channel ``f``, or None if the atlas has none for this layer:
        ``{"paths": list[str] (m,), "activation": (m,), "position": (m, 2), "box": (m, 4),
        "crops": (m, S, S, 3) uint8, "images_dir": str}`` with ``m <= top`` (empty slots cut)."""
        g = self._exemplars_group()
        if g is None:
            return None
        if not 0 <= int(f) < g["paths"].shape[0]:
            raise AtlasError(f"layer {self.name} has channels 0..{g['paths'].shape[0] - 1}")
        paths = [p.decode() if isinstance(p, bytes) else str(p) for p in g["paths"][int(f)]]
        m = sum(1 for p in paths if p)
        out: dict[str, Any] = {"paths": paths[:m]}
        for name in ("activation", "position", "box", "crops"):
            out[name] = g[name][int(f)][:m]
        out["images_dir"] = _text(g.attrs.get("images_dir", ""))
        return out

    def to_xarray(self) -> Any:
        """The done rows as an ``xarray.Dataset`` (read into memory).

        Dims ``filter`` (coordinate: filter indices), ``k``, ``y``, ``x``, ``rgb`` (the images'
        channels; named ``band`` where the model's input is not RGB: D != 3), ``channel`` (the
        layer's), ``step``; attrs ``config`` (JSON), ``image_channels`` (D) and the layer's figures
        (:func:`vizjax.analysis.fidelity.summarize`). Needs the optional extra: ``pip install
        vizjax[xarray]``.
        """
        try:
            import xarray as xr
        except ImportError:
            raise VizjaxError(
                "to_xarray needs xarray: pip install vizjax[xarray] (or pip install xarray)"
            ) from None
        d = self.to_numpy()
        colour = "rgb" if self.image_channels == RGB else "band"
        dims = {
            "images": ("filter", "k", "y", "x", colour),
            "raw": ("filter", "k", "y", "x", colour),
            "objective": ("filter", "step"),
            "final_activation": ("filter", "k"),
            "activation_matrix": ("filter", "k", "channel"),
            "robustness": ("filter", "k"),
            "hf_energy": ("filter", "k"),
        }
        data_vars = {
            name: (dims.get(name, ("filter",)), v) for name, v in d.items() if name != "filters"
        }
        from vizjax.analysis import fidelity

        attrs = {
            "layer": self.name,
            "num_filters": self.num_filters,
            "image_channels": self.image_channels,
            "config": json.dumps(self._atlas.config, sort_keys=True),
            **fidelity.summarize(self.fidelity),
        }
        coords = {
            "filter": d["filters"],
            "k": np.arange(self.k),
            "step": np.arange(self.steps + 1),
            "channel": np.arange(self.num_filters),
        }
        return xr.Dataset(data_vars, coords=coords, attrs=attrs)

    def __repr__(self) -> str:
        return (
            f"AtlasLayer({self.name!r}, {int(self.done.sum())}/{len(self.filters)} done "
            f"of {self.num_filters} filters)"
        )


def network_order(names: list[str], model: Any) -> list[str]:
    """``names`` (an atlas' layers, in the order they were written) in the order of ``model``'s
    layer table (``model``: the atlas' ``model`` attribute, e.g. ``"vgg16"``): a run over
    block1_conv2 and then block1_conv1 lists block1_conv1 first. Names the table lacks (an
    unknown model, a test's made-up layers) follow, in the order given."""
    if len(names) < 2 or not isinstance(model, str):
        return list(names)
    from vizjax import models  # the layer tables (and JAX): only where there is something to order

    if model not in models.MODELS:
        return list(names)
    rank = {n: i for i, n in enumerate(models.network(model).layer_names)}
    return sorted(names, key=lambda n: rank.get(n, len(rank)))


class Atlas:
    """An atlas opened read-only (see :func:`open_atlas`); a context manager.

    ``attrs`` holds the root attributes as Python values, ``config`` the run's parsed settings,
    ``format_version`` 1 or 2 and ``layers`` the :class:`AtlasLayer` of every layer, in the
    network's order (:func:`network_order`), whatever order the runs wrote them in.
    """

    def __init__(self, path: Path, f: h5py.File, version: int) -> None:
        self.path = path
        self.format_version = version
        self._file = f
        self._files: dict[str, h5py.File] = {}  # data files read directly (a renamed atlas)
        self.attrs: dict[str, Any] = {k: _text(v) for k, v in f.attrs.items()}
        #: The data folder (format 2): the one the index names, beside the index.
        self.data_dir: Path = data_dir(path, self.attrs)
        for attr in schema.ROOT_ATTRS:  # present ones must have their type (str for JSON)
            value = self.attrs.get(attr.name)
            kind = int if attr.type == "int" else str
            if value is not None and (not isinstance(value, kind) or "\x00" in str(value)):
                raise AtlasError(f"{path} is damaged (attribute {attr.name} is {value!r})")
        for key in ("config", "preprocessing"):
            try:
                value = json.loads(self.attrs.get(key, "{}"))
            except (TypeError, ValueError):
                value = None
            if not isinstance(value, dict):
                raise AtlasError(f"{path} has an unreadable {key} attribute (not a JSON object)")
            if key == "config":
                self.config: dict[str, Any] = value
        layers = f.get("layers", {})
        if not isinstance(layers, h5py.Group | dict):
            raise AtlasError(f"{path} is damaged (layers is a {type(layers).__name__})")
        self.layers: dict[str, AtlasLayer] = {}
        # v2 indexes store names through names.h5_key; v1 files took plain names only.
        v2 = self.format_version >= 2
        keys = {(names.from_h5_key(k) if v2 else k): k for k in layers}
        for name in network_order(list(keys), self.attrs.get("model")):
            g = layers[keys[name]]
            try:
                self.layers[name] = AtlasLayer(self, name, g)
            except (KeyError, ValueError, TypeError, OSError) as e:
                msg = " ".join(str(e).split())
                raise AtlasError(f"layer {name} of {path} is damaged ({msg})") from None

    def _segment_file(self, name: str) -> h5py.File:
        """The data file ``name`` of the atlas' folder, opened once (read-only)."""
        if name not in self._files:
            self._files[name] = h5py.File(self.data_dir / name, "r")
        return self._files[name]

    def close(self) -> None:
        for f in self._files.values():
            f.close()
        self._files.clear()
        self._file.close()

    def __enter__(self) -> Atlas:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Atlas({str(self.path)!r}, v{self.format_version}, layers={list(self.layers)})"


def open_atlas(path: str | os.PathLike[str]) -> Atlas:
    """Open the atlas at ``path`` (format 1 or 2) read-only; AtlasError if it is missing, not a
    vizjax atlas, or its data folder is incomplete.

    Safe while a writer writes it: the atlas shows the rows that were done when it was opened
    (their data was complete before their ``done`` byte); reopen to see newer rows.
    """
    p = Path(path)
    if not p.exists():
        raise AtlasError(f"no atlas at {p}")
    f = _open_h5(p)
    try:
        return Atlas(p, f, _check_root(f, p))
    except AtlasError:
        f.close()
        raise
    except (OSError, RuntimeError, KeyError, ValueError, TypeError) as e:
        # h5py reports damaged metadata (an attribute's heap, an object header) as any of these.
        f.close()
        msg = " ".join(str(e).split()) or type(e).__name__
        raise AtlasError(f"{p} is damaged ({msg})") from None
    except BaseException:
        f.close()
        raise
