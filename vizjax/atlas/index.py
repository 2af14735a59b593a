"""The atlas index in memory (layers -> runs of segment rows) and its rewriting as virtual datasets."""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import uuid
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from vizjax import names, schema
from vizjax.atlas.files import (
    _SEGMENT_RE,
    FOLDER_ATTR,
    FORMAT_VERSION,
    _check_root,
    _open_h5,
    _text,
    _vizjax_version,
    data_dir,
    exemplars_name,
    segment_name,
)
from vizjax.atlas.segment import (
    RGB,
    Geometry,
    _create_segment,
    _dims,
    _open_segment,
    _Segment,
)
from vizjax.durable import _fsync_dir, _fsync_path, _replace_atomically, fault
from vizjax.errors import AtlasError


def _create_atomically(tmp: Path, path: Path) -> None:
    """Like :func:`~vizjax.durable._replace_atomically`, but AtlasError if ``path`` exists (a hard
    link never replaces a file; where the file system has no links, a plain rename)."""
    _fsync_path(tmp)
    try:
        os.link(tmp, path)
    except FileExistsError:
        raise AtlasError(
            f"{path} was created by another process meanwhile; rerun the command to resume it"
        ) from None
    except OSError:
        if path.exists():
            raise
        os.replace(tmp, path)
    else:
        tmp.unlink()
    _fsync_dir(path.parent)


@dataclasses.dataclass
class _Layer:
    """One layer as the index has it: its rows are the concatenated runs of its segments."""

    num_filters: int
    k: int | None  # None (with image_shape and steps): a layer that has only exemplars so far
    image_shape: tuple[int, int] | None
    steps: int | None
    image_channels: int = RGB  # D: the model's input channels
    runs: list[tuple[_Segment, int, int]] = dataclasses.field(default_factory=list)
    derived: dict[str, np.ndarray] | None = None  # index datasets; None: compute when written
    exemplars: bool = False
    requested: set[int] = dataclasses.field(default_factory=set)
    _where: dict[int, tuple[_Segment, int]] | None = None

    @property
    def geometry(self) -> Geometry | None:
        if self.k is None:
            return None
        shape, steps, d = self.image_shape, self.steps, self.image_channels
        return (self.num_filters, self.k, shape, steps, d)  # type: ignore[return-value]

    def rows(self) -> Iterator[tuple[_Segment, int]]:
        for seg, a, b in self.runs:
            for r in range(a, b):
                yield seg, r

    def filters(self) -> np.ndarray:
        parts = [seg.filters[a:b] for seg, a, b in self.runs]
        return np.concatenate(parts) if parts else np.zeros(0, np.int32)

    def done(self) -> np.ndarray:
        parts = [seg.done[a:b] for seg, a, b in self.runs]
        return np.concatenate(parts) if parts else np.zeros(0, bool)

    def where(self, f: int) -> tuple[_Segment, int] | None:
        if self._where is None:
            self._where = {int(seg.filters[r]): (seg, r) for seg, r in self.rows()}
        return self._where.get(int(f))

    def add_run(self, seg: _Segment, a: int, b: int) -> None:
        self.runs.append((seg, a, b))
        self._where = None
        self.derived = None

    def read(self, field: str) -> np.ndarray:
        """``field`` over the layer's rows, straight from the segments."""
        parts = [seg.read(field, a, b) for seg, a, b in self.runs]
        return np.concatenate(parts)


class _Store:
    """An atlas' index as the writer (or merge, upgrade) holds it in memory, and its rewriting.

    Only used with the lock held.
    """

    def __init__(self, path: Path, root: dict[str, Any]) -> None:
        self.path = path
        self.dir = data_dir(path, root)
        self.root = root
        # Recorded in the index (an index written before names none: its folder is OUT.h5.d,
        # named from now on), so the index may be renamed without its folder.
        root[FOLDER_ATTR] = self.dir.name
        # Which files of the data folder are this atlas' own: its segments carry its id, so a
        # cleanup never deletes the segments of another index (one moved away, say). An index
        # written before ids existed gets one derived from its creation (the same every time,
        # so the segments of a killed upgrade are found again).
        self.legacy = "atlas_id" not in root
        if self.legacy:
            seed = f"{root.get('created', '')}|{root.get('config', '')}".encode()
            root["atlas_id"] = hashlib.sha256(seed).hexdigest()[:32]
        self.layers: dict[str, _Layer] = {}
        self._seq = self._max_seq()  # segment names are never reused, even of deleted files

    @staticmethod
    def new_id() -> str:
        """A fresh atlas id (random: two atlases never share one)."""
        return uuid.uuid4().hex

    @property
    def id(self) -> str:
        return str(self.root["atlas_id"])

    # -- loading ----------------------------------------------------------------------------------

    @classmethod
    def load(cls, path: Path) -> _Store:
        """The v2 atlas at ``path``: root attributes, layers, their segments' rows."""
        segments: dict[str, _Segment] = {}
        with _open_h5(path) as f:
            if _check_root(f, path) != 2:
                raise AtlasError(
                    f"{path} is a format 1 atlas; upgrade it first (vizjax.atlas.upgrade)"
                )
            store = cls(path, {k: _text(v) for k, v in f.attrs.items()})
            for key, g in f.get("layers", {}).items():
                name = names.from_h5_key(key)
                try:
                    a = {k: _text(v) for k, v in g.attrs.items()}
                    layer = _Layer(int(a["num_filters"]), None, None, None)
                    if "k" in a:
                        layer.k, layer.steps = int(a["k"]), int(a["steps"])
                        layer.image_shape = (int(a["image_height"]), int(a["image_width"]))
                        layer.image_channels = int(a.get("image_channels", RGB))
                    spec = json.loads(a.get("segments", "[]"))
                    derived = {d.name: g[d.name][...] for d in schema.INDEX_DATASETS if d.name in g}
                    layer.exemplars = g.get("exemplars", getlink=True) is not None
                except (KeyError, ValueError, TypeError) as e:
                    raise AtlasError(f"layer {name} of {path} is damaged ({e})") from e
                for fname, start, stop in spec:
                    seg = segments.get(fname)
                    if seg is None:
                        seg = _open_segment(store.dir / fname, name, layer.geometry)
                        segments[fname] = seg
                    layer.add_run(seg, int(start), int(stop))
                if len(derived) == len(schema.INDEX_DATASETS):
                    layer.derived = derived
                store.layers[name] = layer
        return store

    def _max_seq(self) -> int:
        seqs = [0]
        if self.dir.is_dir():
            for p in self.dir.iterdir():
                m = _SEGMENT_RE.match(p.name.removeprefix(".tmp-"))
                if m:
                    seqs.append(int(m["seq"]))
        return max(seqs)

    def segments(self) -> dict[str, _Segment]:
        return {seg.name: seg for layer in self.layers.values() for seg, _, _ in layer.runs}

    def close(self) -> None:
        for seg in self.segments().values():
            seg.close()

    def cleanup(self, also: frozenset[str] = frozenset()) -> None:
        """Delete what this atlas' killed writers left: temp files, and its own segments (by atlas
        id, or one of the ids ``also``: the parts a merge links in) that no index refers to.
        Segments of other atlases in the folder are kept."""
        prefix = f"{self.path.name}.tmp-"  # where vizjax before 0.x wrote the index' temp file
        stale = [p for p in self.path.parent.iterdir() if p.name.startswith(prefix)]
        if self.dir.is_dir():
            used = set(self.segments()) | self._mapped_by_others()
            for p in self.dir.iterdir():
                if p.name.startswith(".tmp-"):
                    stale.append(p)
                elif _SEGMENT_RE.match(p.name) and p.name not in used and self._owns(p, also):
                    stale.append(p)
        for p in stale:
            with contextlib.suppress(OSError):
                p.unlink()

    def _mapped_by_others(self) -> set[str]:
        """Segments of this folder that other indexes beside this one map: a copy of the index
        (``cp a.h5 b.h5``) names the same folder, and a writer of one must not delete what only
        the other maps (their segments carry one id)."""
        names: set[str] = set()
        for p in self.path.parent.iterdir():
            if p.name == self.path.name or p.name.startswith(".") or not p.is_file():
                continue
            with contextlib.suppress(Exception):  # not HDF5, unreadable, damaged: not an index
                if not h5py.is_hdf5(p):
                    continue
                with h5py.File(p, "r") as f:
                    if _text(f.attrs.get(FOLDER_ATTR, "")) != self.dir.name:
                        continue
                    for g in f["layers"].values():
                        spec = json.loads(_text(g.attrs.get("segments", "[]")))
                        names.update(str(run[0]) for run in spec)
        return names

    def _owns(self, segment: Path, also: frozenset[str]) -> bool:
        """``segment`` carries this atlas' id or one of ``also`` (or none, and the index predates
        ids)."""
        try:
            with h5py.File(segment, "r") as f:
                owner = _text(f.attrs.get("atlas_id", ""))
        except OSError:
            return False  # not HDF5, or unreadable: not ours to judge, keep it
        return owner == self.id or owner in also or (not owner and self.legacy)

    # -- changing -----------------------------------------------------------------------------

    def new_segment_path(self, layer: str) -> Path:
        self._seq += 1
        self.dir.mkdir(exist_ok=True)
        return self.dir / segment_name(layer, self._seq)

    def add_segment(self, name: str, filters: Sequence[int]) -> _Segment:
        """A new segment of layer ``name`` holding (not-done) rows for ``filters``."""
        layer = self.layers[name]
        assert layer.geometry is not None
        seg = _create_segment(
            self.new_segment_path(name), name, layer.geometry, np.asarray(filters), self.id
        )
        layer.add_run(seg, 0, len(seg.filters))
        return seg

    def write_index(
        self,
        index_data: Mapping[str, Mapping[str, np.ndarray]] | None = None,
        create: bool = False,
    ) -> None:
        """Write the index from memory (tmp, fsync, rename); per-layer datasets are recomputed
        for layers whose rows changed unless ``index_data[layer]`` gives them. ``create``: the
        index must not exist yet (AtlasError if another process created one meanwhile: two new
        atlases at one name have two folders, so their locks do not exclude each other)."""
        for name, layer in self.layers.items():
            if index_data and name in index_data:
                layer.derived = dict(index_data[name])
            elif layer.derived is None:
                layer.derived = self._derive(layer)
        # The temp file lives in the data folder (vizjax's own, same file system: the rename is
        # atomic), never beside the user's files; a killed writer's is deleted by cleanup.
        self.dir.mkdir(exist_ok=True)
        tmp = self.dir / f".tmp-index-{os.getpid()}.h5"
        try:
            # libver v110: the oldest HDF5 that reads virtual datasets (1.10) reads the index.
            with h5py.File(tmp, "w", libver=("earliest", "v110")) as f:
                for k, v in self.root.items():
                    f.attrs[k] = v
                f.attrs["format_version"] = FORMAT_VERSION
                f.attrs["vizjax_version"] = _vizjax_version()
                layers = f.create_group("layers", track_order=True)
                for name, layer in self.layers.items():
                    self._write_layer(layers.create_group(names.h5_key(name)), name, layer)
            fault("index.written")
            if create:
                _create_atomically(tmp, self.path)
            else:
                _replace_atomically(tmp, self.path)
        except BaseException:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise
        fault("index.renamed")

    def _write_layer(self, g: h5py.Group, name: str, layer: _Layer) -> None:
        g.attrs["num_filters"] = layer.num_filters
        n = sum(b - a for _, a, b in layer.runs)
        geometry = layer.geometry
        if geometry is not None:
            _, k, (h, w), t, d = geometry
            g.attrs["k"], g.attrs["image_height"], g.attrs["image_width"] = k, h, w
            g.attrs["steps"], g.attrs["image_channels"] = t, d
        g.attrs["segments"] = json.dumps([[seg.name, a, b] for seg, a, b in layer.runs])
        for field in schema.ROW_FIELDS:
            if geometry is None:  # only exemplars: the rows are empty, shapes unknown
                if field.name in ("filters", "done"):
                    g.create_dataset(field.name, (0,), field.dtype)
                continue
            row = schema.row_shape(field, _dims(geometry))
            if not layer.runs:
                g.create_dataset(field.name, (0, *row), field.dtype)
                continue
            vl = h5py.VirtualLayout((n, *row), field.dtype)
            dst = 0
            for seg, a, b in layer.runs:
                # HDF5 reads "%" in a VDS source name as a printf-like pattern: escape it.
                source = f"{self.dir.name}/{seg.name}".replace("%", "%%")
                src = h5py.VirtualSource(source, field.name, shape=(len(seg.filters), *row))
                vl[dst : dst + b - a] = src[a:b]
                dst += b - a
            g.create_virtual_dataset(field.name, vl, fillvalue=field.fill)
        assert layer.derived is not None
        for d in schema.INDEX_DATASETS:
            values = np.asarray(layer.derived[d.name]).astype(d.dtype, copy=False)
            if values.shape != (n,):
                raise AtlasError(f"index dataset {d.name} of layer {name}: shape {values.shape}")
            g.create_dataset(d.name, data=values)
        if layer.exemplars:
            g["exemplars"] = h5py.ExternalLink(f"{self.dir.name}/{exemplars_name(name)}", "/")

    def _derive(self, layer: _Layer) -> dict[str, np.ndarray]:
        n = sum(b - a for _, a, b in layer.runs)
        if not n:
            return {d.name: schema.fill_array(d, 0, {}) for d in schema.INDEX_DATASETS}
        return schema.index_datasets(layer.filters(), layer.done(), layer.read("activation_matrix"))
