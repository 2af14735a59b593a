"""The atlas: every filter's optimized images (and measures) of a run, in HDF5, crash-safe.

Format v2 (what this module writes; the fields are the table in :mod:`vizjax.schema`)::

    OUT.h5              the index: a small HDF5 file, only ever replaced whole (tmp, fsync, rename)
    OUT.h5.d/           the data folder (travels with OUT.h5)
      <layer>.<seq>.h5      a segment: rows of one layer added by one run, fixed layout
      exemplars.<layer>.h5  dataset exemplars of one layer (written whole, tmp + rename)
      ...                   sidecar files of other modules (:func:`sidecar_path`)
    OUT.h5.lock         flock of the single writer

The index holds the root attributes and, per layer, one *virtual dataset* (HDF5 VDS) per field
that concatenates the layer's segments row-wise, with source paths relative to the index' folder
(``OUT.h5.d/<file>``), so plain h5py reads an atlas as if it were one file, from any working
directory, also after the index and its folder are moved together.

Crash safety. A segment is created once, for the rows one run adds to one layer, with every
dataset contiguous, uncompressed, allocated early and never filled (the file is sparse: no disk is
spent before rows are written), then closed: its HDF5 metadata is never touched again. Rows are
written with ``os.pwrite`` at the offsets HDF5 reports, data first, ``fdatasync``, then the rows'
``done`` bytes, ``fdatasync``. So ``kill -9`` at any moment leaves valid HDF5 files in which every
row whose ``done`` is true is complete, a commit costs the chunk's bytes whatever the atlas' size,
and nothing is copied. The index is rewritten (small) when a run adds rows to a layer, when a
layer ends (the per-layer datasets), and for exemplars; segments a killed writer created but no
index refers to, and temp files, are deleted by the next writer.

Single writer. ``OUT.h5.lock`` is ``flock``ed by the writer for its lifetime; the kernel drops the
lock when the process dies, so a killed run never blocks the next one. Readers need no lock.

Format v1 (one HDF5 file, see :data:`vizjax.schema.V1_ROW_FIELDS`) stays readable: :func:`open_atlas`
presents it with v2 names and shapes; a writer (or :func:`upgrade`) converts it to v2 first.

Multi-host runs write one part per process (:func:`part_path`) and :func:`merge_atlases` joins them
without copying data (hard links).
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import fcntl
import functools
import json
import os
import re
import shutil
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import h5py
import numpy as np

from vizjax import schema
from vizjax.errors import AtlasError, VizjaxError

FORMAT = schema.FORMAT
FORMAT_VERSION = schema.FORMAT_VERSION
#: Settings that may differ between runs writing the same atlas (they choose *what* to compute and
#: how it is reported, not what a filter's image looks like). The start image is compared by its
#: sha256 (``init_sha256``), so the same photo at another path is the same run.
VOLATILE_KEYS: frozenset[str] = frozenset(
    {"batch", "layers", "filters", "quiet", "out", "progress", "init"}
)
#: Segment file names: ``<layer>.<seq>.h5`` with a zero-padded sequence number.
_SEGMENT_RE = re.compile(r"^(?P<layer>.+)\.(?P<seq>\d{6,})\.h5$")
_EXEMPLARS_RE = re.compile(r"^exemplars\..+\.h5$")
#: Layer names become file names: keep them to characters every file system takes.
_LAYER_RE = re.compile(r"^[A-Za-z0-9_\-]+$")
#: Rows copied at a time by upgrade and merge (bounds memory to a few dozen images).
_COPY_ROWS = 32


#: fdatasync where the OS has it (Linux); fsync elsewhere (macOS has no fdatasync).
_fdatasync = getattr(os, "fdatasync", os.fsync)


def _fault(point: str) -> None:
    """A named moment of a write (tests replace this to ``kill -9`` the process right there)."""


# --------------------------------------------------------------------------------------------------
# small helpers


def _text(value: Any) -> Any:
    """An HDF5 attribute value as plain Python (bytes decoded, numpy scalars unwrapped)."""
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, np.generic):
        return _text(value.item())
    if isinstance(value, np.ndarray):
        return value.tolist()
    return value


_ABSENT = object()  # a config key one side does not have


def _show(value: Any) -> str:
    """A config value as it appears in error messages."""
    if value is _ABSENT:
        return "(unset)"
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True)


def _config_diff(
    theirs: dict[str, Any], ours: dict[str, Any], volatile: frozenset[str]
) -> list[tuple[str, Any, Any]]:
    """``(key, their value, our value)`` for every non-volatile key whose values differ."""
    keys = sorted((set(theirs) | set(ours)) - volatile)
    return [
        (k, theirs.get(k, _ABSENT), ours.get(k, _ABSENT))
        for k in keys
        if theirs.get(k, _ABSENT) != ours.get(k, _ABSENT)
    ]


def _describe_diff(diff: list[tuple[str, Any, Any]], theirs: str, ours: str) -> str:
    return ", ".join(f"{k} {_show(a)} ({theirs}) vs {_show(b)} ({ours})" for k, a, b in diff)


def _utc_now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _vizjax_version() -> str:
    # Imported here, not at module level: vizjax/__init__ may import this module.
    try:
        from vizjax import __version__  # type: ignore[attr-defined]
    except ImportError:
        return "0+unknown"
    return str(__version__)


def _jax_version() -> str:
    # Prefer the already imported module; otherwise ask the installed distribution, which avoids
    # importing jax (slow) just to label a file.
    jax = sys.modules.get("jax")
    if jax is not None:
        return str(jax.__version__)
    try:
        from importlib.metadata import version

        return version("jax")
    except Exception:
        return "unknown"


def _fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(path: Path) -> None:
    """Make a rename in ``path`` durable; skipped where directories cannot be fsynced."""
    with contextlib.suppress(OSError):
        _fsync_path(path)


def _os_reason(e: OSError) -> str:
    return e.strerror or str(e)


#: errno values that mean "no room": a full disk, a quota, a file-size limit (RLIMIT_FSIZE).
_NO_SPACE = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}


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


def _replace_atomically(tmp: Path, path: Path) -> None:
    """fsync ``tmp``, rename it onto ``path`` and make the rename durable."""
    _fsync_path(tmp)
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def _pwrite_all(fd: int, data: memoryview, offset: int) -> None:
    """``os.pwrite`` until every byte is written (large writes may be short)."""
    while len(data):
        n = os.pwrite(fd, data, offset)
        data, offset = data[n:], offset + n


def _bytes_of(a: np.ndarray) -> memoryview:
    return memoryview(np.ascontiguousarray(a)).cast("B")


def data_dir(path: str | os.PathLike[str]) -> Path:
    """The data folder of the atlas index ``path``: ``OUT.h5`` -> ``OUT.h5.d``."""
    p = Path(path)
    return p.with_name(p.name + ".d")


def sidecar_path(path: str | os.PathLike[str], name: str) -> Path:
    """A file named ``name`` in the atlas' data folder, for small state of other modules.

    The folder is created if missing; nothing else is done with the file (the caller writes it,
    ideally tmp + rename). Names that the atlas uses itself (segments ``<layer>.<seq>.h5``,
    ``exemplars.<layer>.h5``, ``.tmp-*``) or that leave the folder are refused with ValueError.
    """
    if (
        not name
        or "/" in name
        or name in (".", "..")
        or name.startswith(".tmp-")
        or _SEGMENT_RE.match(name)
        or _EXEMPLARS_RE.match(name)
    ):
        raise ValueError(f"{name!r} is not a sidecar file name")
    folder = data_dir(path)
    folder.mkdir(parents=True, exist_ok=True)
    return folder / name


def part_path(out: str | os.PathLike[str], process_index: int, process_count: int) -> Path:
    """Where process ``process_index`` (0-based) of ``process_count`` writes its part of ``out``.

    ``part_path("atlas.h5", 0, 2)`` is ``atlas.part-1-of-2.h5``: the number in the name is 1-based,
    as in "part 1 of 2".
    """
    if not 0 <= process_index < process_count:
        raise ValueError(f"process_index {process_index} not in 0..{process_count - 1}")
    p = Path(out)
    return p.with_name(f"{p.stem}.part-{process_index + 1}-of-{process_count}{p.suffix}")


def _check_root(f: h5py.File, path: Path) -> int:
    """The format version of ``f``; AtlasError unless it is a vizjax atlas this version reads."""
    if _text(f.attrs.get("format")) != FORMAT:
        raise AtlasError(f"{path} exists and is not a vizjax atlas")
    version = _text(f.attrs.get("format_version"))
    if not isinstance(version, int) or isinstance(version, bool):
        raise AtlasError(f"{path} is damaged: format_version {version!r} is not an integer")
    if not 1 <= version <= FORMAT_VERSION:
        raise AtlasError(
            f"{path} has atlas format version {version}; this vizjax reads up to "
            f"{FORMAT_VERSION} (upgrade vizjax)"
        )
    return version


def _open_h5(path: Path) -> h5py.File:
    """``h5py.File(path, "r")``, with a file that is not HDF5 reported as 'not a vizjax atlas'."""
    try:
        return h5py.File(path, "r")
    except OSError as e:
        if path.is_dir() or (path.exists() and not h5py.is_hdf5(path)):
            raise AtlasError(f"{path} exists and is not a vizjax atlas") from e
        raise AtlasError(f"cannot read atlas {path}: {_os_reason(e)}") from e


# --------------------------------------------------------------------------------------------------
# the single-writer lock


class _Lock:
    """An exclusive ``flock`` on ``<atlas>.lock``; the file holds the owner's pid for messages."""

    def __init__(self, path: Path, atlas: Path) -> None:
        self.path, self.atlas, self.fd = path, atlas, -1

    def acquire(self) -> None:
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise AtlasError(f"cannot write atlas {self.atlas}: {_os_reason(e)}") from e
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            owner = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise AtlasError(
                    f"{self.atlas} is being written by another process (pid {owner})"
                ) from None
            raise AtlasError(f"cannot lock atlas {self.atlas}: {_os_reason(e)}") from e
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self.fd = fd

    def release(self) -> None:
        # The lock file itself stays: deleting it would let a second writer lock a fresh inode
        # while a third still holds the old one.
        if self.fd >= 0:
            with contextlib.suppress(OSError):
                os.ftruncate(self.fd, 0)
            os.close(self.fd)  # closing the description releases the flock
            self.fd = -1


def _acquire_lock(path: Path) -> _Lock:
    """Take the single-writer lock of ``path``; AtlasError if it has no directory or is locked."""
    parent = path.parent
    if not parent.is_dir():
        what = "is not a directory" if parent.exists() else "does not exist"
        raise AtlasError(f"cannot write atlas {path}: directory {parent} {what}")
    lock = _Lock(path.with_name(path.name + ".lock"), path)
    lock.acquire()
    return lock


#: Writers open in this process, by real path: write_exemplars uses an open writer's lock.
_OPEN_WRITERS: dict[str, AtlasWriter] = {}


# --------------------------------------------------------------------------------------------------
# segments


Geometry = tuple[int, int, tuple[int, int], int]  # (num_filters C, k K, (H, W), steps T)


def _dims(geometry: Geometry) -> dict[str, int]:
    c, k, (h, w), t = geometry
    return {"C": c, "K": k, "H": h, "W": w, "T": t}


def _geometry_text(geometry: Geometry) -> str:
    c, k, (h, w), t = geometry
    return f"{h}x{w} images, k={k}, {t} steps, {c} filters"


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


def _create_segment(path: Path, layer: str, geometry: Geometry, filters: np.ndarray) -> _Segment:
    """Create the segment ``path`` for ``filters`` (no row done); durable when this returns."""
    tmp = path.with_name(f".tmp-{path.name}")
    filters = np.asarray(filters, np.int32)
    m, dims = len(filters), _dims(geometry)
    offsets: dict[str, int] = {}
    try:
        with h5py.File(tmp, "w") as f:
            f.attrs["format"] = schema.SEGMENT_FORMAT
            f.attrs["format_version"] = FORMAT_VERSION
            f.attrs["layer"] = layer
            c, k, (h, w), t = geometry
            for key, v in (("num_filters", c), ("k", k), ("image_height", h), ("image_width", w)):
                f.attrs[key] = v
            f.attrs["steps"] = t
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
    _fault("segment.created")
    _replace_atomically(tmp, path)
    _fault("segment.renamed")
    return _Segment(path, layer, geometry, filters, np.zeros(m, bool), offsets)


def _open_segment(path: Path, layer: str, geometry: Geometry | None) -> _Segment:
    """Read a segment's rows and offsets; AtlasError if it is missing or does not fit its layer."""
    if not path.exists():
        raise AtlasError(
            f"atlas data file {path} is missing (an atlas is OUT.h5 plus its folder OUT.h5.d; "
            f"copy or move both)"
        )
    try:
        with h5py.File(path, "r") as f:
            a = {k: _text(v) for k, v in f.attrs.items()}
            seg_geometry: Geometry = (
                int(a["num_filters"]),
                int(a["k"]),
                (int(a["image_height"]), int(a["image_width"])),
                int(a["steps"]),
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
            _fault("chunk.data")  # some fields written, others not
    for seg, _ in plan:
        _fdatasync(seg.fd)
    _fault("chunk.synced")
    if not mark_done:
        return
    for seg, runs in plan:
        for start, idx in runs:
            _pwrite_all(seg.fd, memoryview(b"\x01" * len(idx)), seg.offsets["done"] + start)
        _fault("chunk.done")
    for seg, runs in plan:
        _fdatasync(seg.fd)
        for start, idx in runs:
            seg.done[start : start + len(idx)] = True


# --------------------------------------------------------------------------------------------------
# the index in memory


@dataclasses.dataclass
class _Layer:
    """One layer as the index has it: its rows are the concatenated runs of its segments."""

    num_filters: int
    k: int | None  # None (with image_shape and steps): a layer that has only exemplars so far
    image_shape: tuple[int, int] | None
    steps: int | None
    runs: list[tuple[_Segment, int, int]] = dataclasses.field(default_factory=list)
    derived: dict[str, np.ndarray] | None = None  # index datasets; None: compute when written
    exemplars: bool = False
    requested: set[int] = dataclasses.field(default_factory=set)
    _where: dict[int, tuple[_Segment, int]] | None = None

    @property
    def geometry(self) -> Geometry | None:
        if self.k is None:
            return None
        return (self.num_filters, self.k, self.image_shape, self.steps)  # type: ignore[return-value]

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
        self.dir = data_dir(path)
        self.root = root
        self.layers: dict[str, _Layer] = {}
        self._seq = self._max_seq()  # segment names are never reused, even of deleted files

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
            for name, g in f.get("layers", {}).items():
                try:
                    a = {k: _text(v) for k, v in g.attrs.items()}
                    layer = _Layer(int(a["num_filters"]), None, None, None)
                    if "k" in a:
                        layer.k, layer.steps = int(a["k"]), int(a["steps"])
                        layer.image_shape = (int(a["image_height"]), int(a["image_width"]))
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

    def cleanup(self) -> None:
        """Delete what no index refers to: temp files, and segments of killed writers or merges."""
        prefix = f"{self.path.name}.tmp-"
        stale = [p for p in self.path.parent.iterdir() if p.name.startswith(prefix)]
        if self.dir.is_dir():
            used = self.segments()
            stale += [
                p
                for p in self.dir.iterdir()
                if p.name.startswith(".tmp-") or (_SEGMENT_RE.match(p.name) and p.name not in used)
            ]
        for p in stale:
            with contextlib.suppress(OSError):
                p.unlink()

    # -- changing -----------------------------------------------------------------------------

    def new_segment_path(self, layer: str) -> Path:
        self._seq += 1
        self.dir.mkdir(exist_ok=True)
        return self.dir / f"{layer}.{self._seq:06d}.h5"

    def add_segment(self, name: str, filters: Sequence[int]) -> _Segment:
        """A new segment of layer ``name`` holding (not-done) rows for ``filters``."""
        layer = self.layers[name]
        assert layer.geometry is not None
        seg = _create_segment(
            self.new_segment_path(name), name, layer.geometry, np.asarray(filters)
        )
        layer.add_run(seg, 0, len(seg.filters))
        return seg

    def write_index(self, index_data: Mapping[str, Mapping[str, np.ndarray]] | None = None) -> None:
        """Write the index from memory (tmp, fsync, rename); per-layer datasets are recomputed
        for layers whose rows changed unless ``index_data[layer]`` gives them."""
        for name, layer in self.layers.items():
            if index_data and name in index_data:
                layer.derived = dict(index_data[name])
            elif layer.derived is None:
                layer.derived = self._derive(layer)
        tmp = self.path.with_name(f"{self.path.name}.tmp-{os.getpid()}")
        try:
            # libver v110: the oldest HDF5 that reads virtual datasets (1.10) reads the index.
            with h5py.File(tmp, "w", libver=("earliest", "v110")) as f:
                for k, v in self.root.items():
                    f.attrs[k] = v
                f.attrs["format_version"] = FORMAT_VERSION
                f.attrs["vizjax_version"] = _vizjax_version()
                layers = f.create_group("layers", track_order=True)
                for name, layer in self.layers.items():
                    self._write_layer(layers.create_group(name), name, layer)
            _fault("index.written")
            _replace_atomically(tmp, self.path)
        except BaseException:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise
        _fault("index.renamed")

    def _write_layer(self, g: h5py.Group, name: str, layer: _Layer) -> None:
        g.attrs["num_filters"] = layer.num_filters
        n = sum(b - a for _, a, b in layer.runs)
        geometry = layer.geometry
        if geometry is not None:
            _, k, (h, w), t = geometry
            g.attrs["k"], g.attrs["image_height"], g.attrs["image_width"] = k, h, w
            g.attrs["steps"] = t
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
            g["exemplars"] = h5py.ExternalLink(f"{self.dir.name}/exemplars.{name}.h5", "/")

    def _derive(self, layer: _Layer) -> dict[str, np.ndarray]:
        n = sum(b - a for _, a, b in layer.runs)
        if not n:
            return {d.name: schema.fill_array(d, 0, {}) for d in schema.INDEX_DATASETS}
        return schema.index_datasets(layer.filters(), layer.done(), layer.read("activation_matrix"))


# --------------------------------------------------------------------------------------------------
# chunks in


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
    the engine's :class:`vizjax.ascent.Results` before v2) is read as format 1 is: its ``dead`` is
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


# --------------------------------------------------------------------------------------------------
# the writer


class AtlasWriter:
    """Writes (or resumes) the atlas at ``path``; use as a context manager. One per atlas.

    ``attrs`` gives the root attributes ``model``, ``weights``, ``weights_sha256`` and
    ``preprocessing`` (strings); the writer adds ``format``, ``format_version``, ``vizjax_version``,
    ``jax_version``, ``created`` and ``config`` (``json.dumps(config, sort_keys=True)``).

    An existing atlas is resumed if it was written with the same weights and the same ``config``
    apart from ``volatile_keys``; otherwise entering raises :class:`AtlasError` naming the keys.
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
        config: dict[str, Any],
        *,
        volatile_keys: frozenset[str] = VOLATILE_KEYS,
    ) -> None:
        self.path = Path(path)
        self.volatile_keys = frozenset(volatile_keys)
        self._attrs = {str(k): str(v) for k, v in attrs.items()}
        self._config_json = json.dumps(config, sort_keys=True)
        # Compare configs as they come back from JSON (tuples become lists and so on).
        self._config: dict[str, Any] = json.loads(self._config_json)
        self._lock: _Lock | None = None
        self._store: _Store | None = None
        self._stale: set[str] = set()  # layers whose per-layer datasets are out of date

    # -- lifecycle -----------------------------------------------------------------------------

    def __enter__(self) -> AtlasWriter:
        if self.path.exists():
            # Refuse a foreign file or another run's atlas before creating the lock file beside
            # it (checked again under the lock below: the file may change in between).
            with _open_h5(self.path) as f:
                _check_root(f, self.path)
                self._check_run(dict(f.attrs))
        self._lock = _acquire_lock(self.path)
        try:
            self._store = self._open()
            _OPEN_WRITERS[os.path.realpath(self.path)] = self
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
        _OPEN_WRITERS.pop(os.path.realpath(self.path), None)
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
        if self.path.exists():
            with _open_h5(self.path) as f:
                version = _check_root(f, self.path)
                self._check_run(dict(f.attrs))
            if version == 1:
                _upgrade_locked(self.path)
            store = _Store.load(self.path)
            store.cleanup()
            return store
        root: dict[str, Any] = dict(self._attrs)
        root.update(
            format=FORMAT,
            format_version=FORMAT_VERSION,
            vizjax_version=_vizjax_version(),
            jax_version=_jax_version(),
            created=_utc_now(),
            config=self._config_json,
        )
        store = _Store(self.path, root)
        store.cleanup()  # a folder without an index holds nothing anybody refers to
        store.write_index()
        return store

    def _check_run(self, file_attrs: Mapping[str, Any]) -> None:
        sha_file = _text(file_attrs.get("weights_sha256", ""))
        sha_ours = self._attrs.get("weights_sha256", "")
        if sha_file != sha_ours:
            raise AtlasError(
                f"refusing to mix runs: weights_sha256 {sha_file} (file) vs {sha_ours} "
                f"(this run) in {self.path}; write to another --out"
            )
        try:
            theirs = json.loads(_text(file_attrs.get("config", "{}")))
        except (TypeError, ValueError) as e:
            raise AtlasError(f"{self.path} has an unreadable config attribute") from e
        diff = _config_diff(theirs, self._config, self.volatile_keys)
        if diff:
            raise AtlasError(
                f"refusing to mix runs: {_describe_diff(diff, 'file', 'this run')} in "
                f"{self.path}; write to another --out"
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
    ) -> list[int]:
        """Make sure ``layer`` has a row for each of ``filters``; return those not done yet.

        Takes the layer's channel count C, the filter indices this run wants, the image size
        ``(H, W)``, the number of optimization steps T and the images per filter K. Returns the
        requested filters that are not done, in request order (duplicates dropped). Filters without
        a row get a new segment and the index is rewritten, so a reader sees the layer's rows (not
        done) while they are computed. AtlasError if the layer exists with another geometry, a
        filter index is out of range or the layer name cannot be a file name.
        """
        store = self._require_open()
        if not _LAYER_RE.match(layer):
            raise AtlasError(f"layer name {layer!r}: use letters, digits, _ and - only")
        geometry: Geometry = (
            int(num_filters),
            int(k),
            (int(image_shape[0]), int(image_shape[1])),
            int(steps),
        )
        if min(geometry[0], geometry[1], *geometry[2]) < 1 or geometry[3] < 0:
            raise AtlasError(f"layer {layer}: bad geometry {_geometry_text(geometry)}")
        wanted = list(dict.fromkeys(int(f) for f in filters))
        bad = [f for f in wanted if not 0 <= f < geometry[0]]
        if bad:
            raise AtlasError(
                f"layer {layer} has filters 0..{geometry[0] - 1}; got {', '.join(map(str, bad))}"
            )
        state = store.layers.get(layer)
        if state is None:
            state = _Layer(geometry[0], geometry[1], geometry[2], geometry[3])
            store.layers[layer] = state
        elif state.geometry is None and state.num_filters == geometry[0] and not state.runs:
            state.k, state.image_shape, state.steps = geometry[1], geometry[2], geometry[3]
        elif state.geometry != geometry:
            have = state.geometry or (state.num_filters, 0, (0, 0), 0)
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


# --------------------------------------------------------------------------------------------------
# format 1 -> 2


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
        _fault("upgrade.rows")


def _v1_journal(path: Path, root: Mapping[str, Any]) -> list[Path]:
    """The chunk files a killed format 1 writer left in ``OUT.h5.journal`` (checked)."""
    journal = path.with_name(path.name + ".journal")
    if not journal.is_dir():
        return []
    files = sorted(journal.glob("*.npz"))
    config = json.loads(_text(root.get("config", "{}")))
    for p in files:
        try:
            with np.load(p, allow_pickle=False) as z:
                theirs = json.loads(str(z["config"]))
                sha = str(z["weights_sha256"])
        except (OSError, ValueError, KeyError) as e:
            raise AtlasError(f"journal file {p} is unreadable ({e}); delete it to upgrade") from e
        if _config_diff(theirs, config, VOLATILE_KEYS) or sha != root.get("weights_sha256"):
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
            store.layers[name] = _Layer(geometry[0], geometry[1], geometry[2], geometry[3])
            if not _LAYER_RE.match(name):
                raise AtlasError(f"layer name {name!r} of {path} cannot be a file name")
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

    Atomic: the segments are written into ``OUT.h5.d`` first, then the new index replaces the
    old file in one rename; killed before, the file is still the complete format 1 atlas (and the
    next writer deletes the half-made folder). Takes the writer lock.
    """
    p = Path(path)
    if not p.exists():
        raise AtlasError(f"no atlas at {p}")
    lock = _acquire_lock(p)
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


# --------------------------------------------------------------------------------------------------
# exemplars


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
    if not _LAYER_RE.match(layer):
        raise AtlasError(f"layer name {layer!r}: use letters, digits, _ and - only")
    data = _check_exemplars(arrays, attrs, what)
    c = len(data["paths"])
    state = store.layers.get(layer)
    if state is None:
        state = store.layers[layer] = _Layer(c, None, None, None)
    elif state.num_filters != c:
        raise AtlasError(f"{what}: {c} channels, the layer has {state.num_filters}")
    store.dir.mkdir(exist_ok=True)
    final = store.dir / f"exemplars.{layer}.h5"
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
        _fault("exemplars.written")
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
    attribute of :data:`vizjax.schema.EXEMPLAR_ATTRS`. Writes ``OUT.h5.d/exemplars.<layer>.h5``
    (tmp + rename, replacing earlier exemplars) and links it from the index at
    ``/layers/<layer>/exemplars``. Uses the lock of a writer open on ``path`` in this process,
    else takes it (AtlasError if another process writes the atlas). A format 1 atlas is upgraded.
    """
    p = Path(path)
    writer = _OPEN_WRITERS.get(os.path.realpath(p))
    if writer is not None:
        return writer.write_exemplars(layer, arrays, attrs)
    if not p.exists():
        raise AtlasError(f"no atlas at {p}")
    lock = _acquire_lock(p)
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


# --------------------------------------------------------------------------------------------------
# merge


def _link_or_copy(src: Path, dst: Path) -> None:
    """Hard-link ``src`` to ``dst`` (no data copied); copy where links are impossible."""
    tmp = dst.with_name(f".tmp-{dst.name}")
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    try:
        os.link(src, tmp)
    except OSError:  # another file system, or one without hard links
        shutil.copyfile(src, tmp)
    _replace_atomically(tmp, dst)


def _remove_new_files(folder: Path, before: set[str] | None) -> None:
    """Delete the files a failed merge added to ``folder`` (and the folder if it made it)."""
    if not folder.is_dir():
        return
    for name in set(os.listdir(folder)) - (before or set()):
        with contextlib.suppress(OSError):
            (folder / name).unlink()
    if before is None:
        with contextlib.suppress(OSError):
            folder.rmdir()


def merge_atlases(
    out: str | os.PathLike[str],
    parts: Sequence[str | os.PathLike[str]],
    *,
    volatile_keys: frozenset[str] = VOLATILE_KEYS,
) -> None:
    """Join the done rows of ``parts`` into one atlas at ``out``, copying no data.

    All parts must have the same weights and config (apart from ``volatile_keys``) and the same
    geometry per layer, else AtlasError. Format 2 parts' segment files are hard-linked into
    ``OUT.h5.d`` (copied where the file system cannot link) and one new index maps them; format 1
    parts' rows are copied into new segments. A filter done in several parts appears once: the
    row of the first part (in ``parts`` order) that has it done is mapped, the others are left
    out of the index' virtual datasets (the parts' files are never changed). Rows not done in any
    part are left out. ``out`` may be one of the parts (its own segments are reused in place).
    Root attributes come from the first part. Killed at any moment, ``out`` is the old atlas (or
    absent) or the new one: the index is replaced last, in one rename.
    """
    if not parts:
        raise AtlasError("merge needs at least one part")
    out = Path(out)
    for p in map(Path, parts):
        # The reader checks every part's structure first: a damaged part is refused in one line
        # before anything is linked or written.
        open_atlas(p).close()
    lock = _acquire_lock(out)
    # What out's folder holds now: a failed merge removes what it added (nothing refers to it).
    before = set(os.listdir(data_dir(out))) if data_dir(out).is_dir() else None
    index_written = False
    sources: list[tuple[Path, int, dict[str, Any], Any]] = []  # (path, version, root, data)
    v1_files: list[h5py.File] = []
    store: _Store | None = None
    try:
        for p in map(Path, parts):
            if not p.exists():
                raise AtlasError(f"no atlas at {p}")
            with _open_h5(p) as f:
                version = _check_root(f, p)
            if version == 2:
                s = _Store.load(p)
                sources.append((p, 2, s.root, s))
            else:
                f = _open_h5(p)
                v1_files.append(f)
                root = {k: _text(v) for k, v in f.attrs.items()}
                sources.append((p, 1, root, f))
        first_path, _, first_root, _ = sources[0]
        first_config = json.loads(first_root.get("config", "{}"))
        for p, _, root, _ in sources[1:]:
            diff = _config_diff(
                json.loads(root.get("config", "{}")), first_config, frozenset(volatile_keys)
            )
            sha_a, sha_0 = root.get("weights_sha256"), first_root.get("weights_sha256")
            if sha_a != sha_0:
                diff.append(("weights_sha256", sha_a, sha_0))
            if diff:
                raise AtlasError(
                    f"cannot merge {p} with {first_path}: "
                    f"{_describe_diff(diff, p.name, first_path.name)}"
                )

        store = _Store(out, dict(first_root))
        if out.exists():
            # Keep what out's folder holds while the old index still refers to it.
            with contextlib.suppress(AtlasError):
                old = _Store.load(out)
                old.cleanup()
                old.close()
        out_dir = store.dir.resolve() if store.dir.exists() else None
        linked: dict[str, _Segment] = {}  # source path -> segment in out's folder

        def local(seg: _Segment, name: str) -> _Segment:
            key = str(seg.path.resolve())
            if key not in linked:
                if out_dir is not None and seg.path.resolve().parent == out_dir:
                    linked[key] = seg  # already out's own
                else:
                    dst = store.new_segment_path(name)
                    _link_or_copy(seg.path, dst)
                    _fault("merge.linked")
                    linked[key] = dataclasses.replace(seg, path=dst, fd=-1, writable=False)
            return linked[key]

        chosen: dict[str, set[int]] = {}
        exemplar_src: dict[str, Path] = {}
        for p, version, _, data in sources:
            layers = (
                {n: (lay.geometry, lay) for n, lay in data.layers.items()}
                if version == 2
                else {n: (geo, None) for n, (geo, _, _) in _v1_layers(data).items()}
            )
            for name, (geometry, lay) in layers.items():
                state = store.layers.get(name)
                if state is None:
                    c = geometry[0] if geometry else lay.num_filters
                    state = store.layers[name] = _Layer(c, None, None, None)
                if geometry is not None:
                    if state.geometry is None and not state.runs:
                        state.k, state.image_shape, state.steps = geometry[1:]
                    if state.geometry != geometry:
                        raise AtlasError(
                            f"cannot merge {p}: layer {name} has {_geometry_text(geometry)}, "
                            f"another part has {_geometry_text(state.geometry or geometry)}"
                        )
                taken = chosen.setdefault(name, set())
                if version == 2:
                    if lay.exemplars and name not in exemplar_src:
                        exemplar_src[name] = data.dir / f"exemplars.{name}.h5"
                    for seg, a, b in lay.runs:
                        run_start = None
                        for r in range(a, b + 1):
                            ok = r < b and seg.done[r] and int(seg.filters[r]) not in taken
                            if ok:
                                taken.add(int(seg.filters[r]))
                                run_start = r if run_start is None else run_start
                            elif run_start is not None:
                                state.add_run(local(seg, name), run_start, r)
                                run_start = None
                else:
                    _, filters, done = _v1_layers(data)[name]
                    rows = [r for r in np.flatnonzero(done) if int(filters[r]) not in taken]
                    if rows:
                        taken.update(int(filters[r]) for r in rows)
                        seg = store.add_segment(name, filters[rows])
                        rows = np.asarray(rows)
                        _copy_v1_rows(name, data["layers"][name], seg, rows, np.arange(len(rows)))
        for name, src in exemplar_src.items():
            dst = store.dir / f"exemplars.{name}.h5"
            if src.exists() and src.resolve() != dst.resolve():
                _link_or_copy(src, dst)
            store.layers[name].exemplars = src.exists()
        _fault("merge.index")
        store.write_index()
        index_written = True
        # The old index' segments that the new one does not map are nobody's now.
        store.cleanup()
    except OSError as e:
        raise AtlasError(f"cannot write atlas {out}: {_os_reason(e)}") from e
    finally:
        if not index_written:
            _remove_new_files(data_dir(out), before)
        for f in v1_files:
            f.close()
        for _, version, _, data in sources:
            if version == 2:
                data.close()
        if store is not None:
            store.close()
        lock.release()


# --------------------------------------------------------------------------------------------------
# reader


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
    ``layer["raw"]`` or ``layer.raw`` (n, K, H, W, 3), read only where indexed.
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
            fields: tuple[schema.Field, ...] = schema.V1_ROW_FIELDS
        else:
            self.k = _int_attr(a, "k", 1, _MAX_DIM, default=1)
            self.image_shape = (
                _int_attr(a, "image_height", 0, _MAX_DIM, default=0),
                _int_attr(a, "image_width", 0, _MAX_DIM, default=0),
            )
            self.steps = _int_attr(a, "steps", 0, _MAX_DIM, default=0)
            self._segments = _segments_attr(a.get("segments", "[]"))
            fields = schema.ROW_FIELDS if "k" in a else ()
            for fname, _, _ in self._segments:
                p = data_dir(atlas.path) / fname
                if not p.exists():
                    raise AtlasError(
                        f"atlas data file {p} is missing (an atlas is {atlas.path.name} plus its "
                        f"folder {data_dir(atlas.path).name}; copy or move both)"
                    )
        self.filters: np.ndarray = _read_rows(_dataset(group, "filters"), "filters", "iu")
        self.done: np.ndarray = _read_rows(_dataset(group, "done"), "done", "b")
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
            self._check_segments(atlas.path, n)
        self._rows = {int(f): i for i, f in enumerate(self.filters)}

    def _check_segments(self, path: Path, n: int) -> None:
        """The index' ``segments`` map exactly its rows, each to a valid segment of this layer."""
        if sum(b - a for _, a, b in self._segments) != n:
            raise ValueError(
                f"segments map {sum(b - a for _, a, b in self._segments)} rows, not {n}"
            )
        geometry: Geometry = (self.num_filters, self.k, self.image_shape, self.steps)
        filters = []
        for fname, a, b in self._segments:
            seg = _open_segment(data_dir(path) / fname, self.name, geometry)
            if b > len(seg.filters):
                raise ValueError(
                    f"segments maps rows {a}:{b} of {fname}, it has {len(seg.filters)}"
                )
            filters.append(seg.filters[a:b])
        if n and not np.array_equal(np.concatenate(filters), self.filters):
            raise ValueError("filters differ from the segments' filters")

    @property
    def dims(self) -> dict[str, int]:
        """The schema symbols of this layer: K, H, W, T, C."""
        h, w = self.image_shape
        return {"K": self.k, "H": h, "W": w, "T": self.steps, "C": self.num_filters}

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
        elif self.format_version == 1 and name == "dead":
            inner = _h5_reader(g["objective"])

            def read(rows: Any, inner: Any = inner) -> np.ndarray:
                return inner(rows)[:, -1] == 0
        elif name in schema.INDEX_DATASET and name not in g:
            derived = self._derived

            def read(rows: Any, v: Any = derived[name]) -> np.ndarray:
                return v[rows]
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
        """The ``(H, W, 3)`` uint8 image ``k`` of filter ``f``; AtlasError if absent or not done."""
        if not 0 <= k < self.k:
            raise AtlasError(f"layer {self.name} has {self.k} images per filter; got k={k}")
        return self.field("images")[self._done_row(f)][k]

    def images_of(self, f: int) -> np.ndarray:
        """The ``(K, H, W, 3)`` uint8 images of filter ``f``."""
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
        images: cosine similarity of ``activation_matrix`` columns over the done rows' k=0
        images, highest first, ``[(filter, similarity), ...]``. Empty without a measured
        activation matrix; AtlasError if ``f`` is not done."""
        self._done_row(f)
        a = self.activation_matrix
        if a is None:
            return []
        m = a[:, 0, :].astype(np.float64)  # image x channel
        m = m[np.all(np.isfinite(m), axis=1)]
        norms = np.linalg.norm(m, axis=0)
        if not len(m) or norms[f] == 0:
            return []
        out = []
        for g in self.completed():
            g = int(g)
            if g != f and norms[g] > 0:
                out.append((g, float(m[:, f] @ m[:, g] / (norms[f] * norms[g]))))
        out.sort(key=lambda t: -t[1])
        return out[:k]

    def _exemplars_group(self) -> h5py.Group | None:
        if self.format_version == 1:
            return None
        try:
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

        Dims ``filter`` (coordinate: filter indices), ``k``, ``y``, ``x``, ``rgb``, ``channel``,
        ``step``; attrs ``config`` (JSON) and a per-layer fidelity summary. Needs the optional
        extra: ``pip install vizjax[xarray]``.
        """
        try:
            import xarray as xr
        except ImportError:
            raise VizjaxError(
                "to_xarray needs xarray: pip install vizjax[xarray] (or pip install xarray)"
            ) from None
        d = self.to_numpy()
        dims = {
            "images": ("filter", "k", "y", "x", "rgb"),
            "raw": ("filter", "k", "y", "x", "rgb"),
            "objective": ("filter", "step"),
            "final_activation": ("filter", "k"),
            "activation_matrix": ("filter", "k", "channel"),
            "robustness": ("filter", "k"),
            "hf_energy": ("filter", "k"),
        }
        data_vars = {
            name: (dims.get(name, ("filter",)), v) for name, v in d.items() if name != "filters"
        }
        fid = self.fidelity

        def summary(v: np.ndarray, how: Callable[[np.ndarray], Any]) -> float:
            v = np.asarray(v, np.float64)
            v = v[np.isfinite(v)]
            return float(how(v)) if v.size else float("nan")

        attrs = {
            "layer": self.name,
            "num_filters": self.num_filters,
            "config": json.dumps(self._atlas.config, sort_keys=True),
            "n_done": int(self.done.sum()),
            "n_dead": int(fid["dead"].sum()),
            "n_zero_start_grad": int(fid["zero_start_grad"].sum()),
            "n_nonfinite": int(fid["nonfinite"].sum()),
            "fraction_selective": summary(fid["selectivity"], np.mean),
            "median_specificity": summary(fid["specificity"], np.median),
            "mean_robustness": summary(fid["robustness"], np.mean),
            "mean_hf_energy": summary(fid["hf_energy"], np.mean),
            "mean_final_activation": summary(fid["final_activation"], np.mean),
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


class Atlas:
    """An atlas opened read-only (see :func:`open_atlas`); a context manager.

    ``attrs`` holds the root attributes as Python values, ``config`` the run's parsed settings,
    ``format_version`` 1 or 2 and ``layers`` the :class:`AtlasLayer` of every layer, in file order.
    """

    def __init__(self, path: Path, f: h5py.File, version: int) -> None:
        self.path = path
        self.format_version = version
        self._file = f
        self.attrs: dict[str, Any] = {k: _text(v) for k, v in f.attrs.items()}
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
        for name, g in layers.items():
            try:
                self.layers[name] = AtlasLayer(self, name, g)
            except (KeyError, ValueError, TypeError, OSError) as e:
                msg = " ".join(str(e).split())
                raise AtlasError(f"layer {name} of {path} is damaged ({msg})") from None

    def close(self) -> None:
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
