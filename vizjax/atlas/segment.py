"""Segment files: the rows one run adds to one layer, at fixed byte offsets (see the package doc)."""

from __future__ import annotations

import contextlib
import dataclasses
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import h5py
import numpy as np

from vizjax import schema
from vizjax.atlas.files import FORMAT_VERSION, _text
from vizjax.durable import _bytes_of, _fdatasync, _pwrite_all, _replace_atomically, fault
from vizjax.errors import AtlasError

#: (num_filters C, k K, (H, W), steps T, image channels D)
Geometry = tuple[int, int, tuple[int, int], int, int]
#: The image channels of a layer that does not record them (written before they were): RGB.
RGB = 3


def _dims(geometry: Geometry) -> dict[str, int]:
    c, k, (h, w), t, d = geometry
    return {"C": c, "K": k, "H": h, "W": w, "T": t, "D": d}


def _geometry_text(geometry: Geometry) -> str:
    c, k, (h, w), t, d = geometry
    channels = "" if d == RGB else f"{d}-channel "
    return f"{h}x{w} {channels}images, k={k}, {t} steps, {c} filters"


def _row_bytes(field: schema.Field, dims: Mapping[str, int]) -> int:
    return int(np.dtype(field.dtype).itemsize * np.prod(schema.row_shape(field, dims)))


@dataclasses.dataclass(eq=False)
class _Segment:
    """A segment file: rows of one layer at fixed byte offsets (one contiguous dataset a field)."""

    path: Path
    layer: str
    geometry: Geometry
    filters: np.ndarray  # (m,) int32, fixed at creation
    done: np.ndarray  # (m,) bool, as last read or written by this process
    offsets: dict[str, int]  # field -> file offset of row 0
    fd: int = -1  # opened on first use
    writable: bool = False  # fd was opened read-write

    @property
    def name(self) -> str:
        return self.path.name

    def row_bytes(self, field: str) -> int:
        return _row_bytes(schema.ROW_FIELD[field], _dims(self.geometry))

    def open(self, write: bool) -> int:
        if self.fd < 0 or (write and not self.writable):
            self.close()
            self.fd = os.open(self.path, os.O_RDWR if write else os.O_RDONLY)
            self.writable = write
        return self.fd

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def read(self, field: str, start: int, stop: int) -> np.ndarray:
        """Rows ``start:stop`` of ``field`` straight from the file (rows not written read as 0)."""
        f = schema.ROW_FIELD[field]
        shape = schema.row_shape(f, _dims(self.geometry))
        rb = self.row_bytes(field)
        buf = os.pread(self.open(False), rb * (stop - start), self.offsets[field] + rb * start)
        return np.frombuffer(buf, np.dtype(f.dtype)).reshape(stop - start, *shape)


def _segment_dcpl() -> h5py.h5p.PropDCID:
    # Contiguous, allocated when created, never filled: every row has a fixed offset from the
    # start and the file stays sparse until rows are written (a fresh plist per dataset: HDF5
    # stores the fill value in it).
    dcpl = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
    dcpl.set_layout(h5py.h5d.CONTIGUOUS)
    dcpl.set_alloc_time(h5py.h5d.ALLOC_TIME_EARLY)
    return dcpl


def _create_segment(
    path: Path, layer: str, geometry: Geometry, filters: np.ndarray, atlas_id: str
) -> _Segment:
    """Create the segment ``path`` for ``filters`` (no row done) of the atlas ``atlas_id``;
    durable when this returns."""
    tmp = path.with_name(f".tmp-{path.name}")
    filters = np.asarray(filters, np.int32)
    m, dims = len(filters), _dims(geometry)
    offsets: dict[str, int] = {}
    try:
        with h5py.File(tmp, "w") as f:
            f.attrs["format"] = schema.SEGMENT_FORMAT
            f.attrs["format_version"] = FORMAT_VERSION
            f.attrs["layer"] = layer
            f.attrs["atlas_id"] = atlas_id
            c, k, (h, w), t, d = geometry
            for key, v in (("num_filters", c), ("k", k), ("image_height", h), ("image_width", w)):
                f.attrs[key] = v
            f.attrs["steps"] = t
            f.attrs["image_channels"] = d
            for field in schema.ROW_FIELDS:
                d = f.create_dataset(
                    field.name,
                    (m, *schema.row_shape(field, dims)),
                    field.dtype,
                    dcpl=_segment_dcpl(),
                    fill_time="never",
                    fillvalue=field.fill,
                )
                if field.name == "filters":
                    d[...] = filters
                offsets[field.name] = int(d.id.get_offset())
    except BaseException:  # a full disk, say: leave no temp file behind
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    fault("segment.created")
    _replace_atomically(tmp, path)
    fault("segment.renamed")
    return _Segment(path, layer, geometry, filters, np.zeros(m, bool), offsets)


def _open_segment(path: Path, layer: str, geometry: Geometry | None) -> _Segment:
    """Read a segment's rows and offsets; AtlasError if it is missing or does not fit its layer."""
    if not path.exists():
        raise AtlasError(
            f"atlas data file {path} is missing (an atlas is its index plus the data folder "
            f"{path.parent.name} beside it; copy or move both, keeping the folder's name)"
        )
    try:
        with h5py.File(path, "r") as f:
            a = {k: _text(v) for k, v in f.attrs.items()}
            seg_geometry: Geometry = (
                int(a["num_filters"]),
                int(a["k"]),
                (int(a["image_height"]), int(a["image_width"])),
                int(a["steps"]),
                int(a.get("image_channels", RGB)),
            )
            if a.get("format") != schema.SEGMENT_FORMAT or a.get("layer") != layer:
                raise ValueError("not a segment of this layer")
            if geometry is not None and seg_geometry != geometry:
                raise ValueError(f"{_geometry_text(seg_geometry)}, layer has another geometry")
            dims, offsets = _dims(seg_geometry), {}
            filters = f["filters"][...].astype(np.int32)
            done = f["done"][...].astype(bool)
            for field in schema.ROW_FIELDS:
                d = f[field.name]
                if not isinstance(d, h5py.Dataset):
                    raise ValueError(f"{field.name} is not a dataset")
                shape = (len(filters), *schema.row_shape(field, dims))
                if d.shape != shape or d.dtype != np.dtype(field.dtype):
                    raise ValueError(f"{field.name} has shape {d.shape} {d.dtype}")
                offset = d.id.get_offset()
                if offset is None or d.chunks is not None or d.compression:
                    raise ValueError(f"{field.name} is not contiguous and allocated")
                offsets[field.name] = int(offset)
    except (OSError, KeyError, ValueError, TypeError) as e:
        msg = " ".join(str(e).split())
        raise AtlasError(f"atlas data file {path} is damaged or foreign ({msg})") from None
    return _Segment(path, layer, seg_geometry, filters, done, offsets)


def _write_rows(
    where: Sequence[tuple[_Segment, int]],
    arrays: Mapping[str, np.ndarray],
    mark_done: bool,
) -> None:
    """Write row ``i`` of every array to segment row ``where[i]``; durable when this returns.

    Data first (pwrite, fdatasync), then, if ``mark_done``, the rows' done bytes (pwrite,
    fdatasync): a ``kill -9`` in between leaves the rows not done. Consecutive rows of a segment
    are one ``pwrite`` per field.
    """
    by_segment: dict[_Segment, list[tuple[int, int]]] = {}
    for i, (seg, r) in enumerate(where):
        by_segment.setdefault(seg, []).append((r, i))
    plan: list[tuple[_Segment, list[tuple[int, list[int]]]]] = []
    for seg, items in by_segment.items():
        items.sort()
        runs: list[tuple[int, list[int]]] = []
        for r, i in items:
            if runs and runs[-1][0] + len(runs[-1][1]) == r:
                runs[-1][1].append(i)
            else:
                runs.append((r, [i]))
        plan.append((seg, runs))

    for seg, runs in plan:
        fd = seg.open(True)
        for name, values in arrays.items():
            rb = seg.row_bytes(name)
            for start, idx in runs:
                block = values if idx == list(range(len(values))) else values[idx]
                _pwrite_all(fd, _bytes_of(block), seg.offsets[name] + rb * start)
            fault("chunk.data")  # some fields written, others not
    for seg, _ in plan:
        _fdatasync(seg.fd)
    fault("chunk.synced")
    if not mark_done:
        return
    for seg, runs in plan:
        for start, idx in runs:
            _pwrite_all(seg.fd, memoryview(b"\x01" * len(idx)), seg.offsets["done"] + start)
        fault("chunk.done")
    for seg, runs in plan:
        _fdatasync(seg.fd)
        for start, idx in runs:
            seg.done[start : start + len(idx)] = True
