"""The atlas: one HDF5 file holding the optimized image of every filter of every layer of a run.

Schema (version 1; other tools read it with plain h5py)::

    /                     attrs: format="vizjax-atlas", format_version=1, vizjax_version,
                                 jax_version, model, weights, weights_sha256, preprocessing (JSON),
                                 created (ISO 8601 UTC), config (JSON of every setting of the run)
    /layers/<layer>       attrs: num_filters (the layer's channel count); groups in creation order
        filters   int32   (n,)             filter index of each row
        images    uint8   (n, H, W, 3)     the visualization, 0-255
        raw       float32 (n, H, W, 3)     the optimized image before conversion to uint8
        objective float32 (n, steps + 1)   objective value before the first and after every step
        dead      bool    (n,)             zero gradient at the start: the image never moved
        done      bool    (n,)             the row holds committed data (rows are pre-allocated)

Crash safety. HDF5 files updated in place can be left unreadable by ``kill -9``, so the atlas is
never modified in place: a commit copies it to ``OUT.h5.tmp-<pid>``, changes the copy, fsyncs it
and ``os.replace``s it onto ``OUT.h5``. Between commits every finished chunk is journaled to its own
small file in ``OUT.h5.journal/`` (temp name + fsync + rename), so work finished before a crash is
not lost: the next writer applies the journal when it opens the atlas. Readers always see a complete
file.

Single writer. ``OUT.h5.lock`` is ``flock``ed by the writer for its lifetime; the kernel drops the
lock when the process dies, so a killed run never blocks the next one.

Multi-host runs write one part per process (:func:`part_path`) and :func:`merge_atlases` joins them.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import fcntl
import json
import os
import shutil
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import h5py
import numpy as np

from vizjax.errors import AtlasError

FORMAT = "vizjax-atlas"
FORMAT_VERSION = 1
#: Settings that may differ between runs writing the same atlas (they choose *what* to compute and
#: how it is reported, not what a filter's image looks like). The start image is compared by its
#: sha256 (``init_sha256``), so the same photo at another path is the same run.
VOLATILE_KEYS: frozenset[str] = frozenset(
    {"batch", "layers", "filters", "quiet", "out", "progress", "init"}
)
#: A commit waits at least this many times as long as the previous commit took, so that copying a
#: large atlas never takes more than a small share of the run.
_COMMIT_COST_FACTOR = 20.0
#: Seconds for commit timing (a name of its own so tests can replace the clock).
_clock = time.monotonic
_DATASETS = ("filters", "images", "raw", "objective", "dead", "done")


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


def _check_root(f: h5py.File, path: Path) -> None:
    """Raise AtlasError unless ``f`` is a vizjax atlas this version can read."""
    if _text(f.attrs.get("format")) != FORMAT:
        raise AtlasError(f"{path} exists and is not a vizjax atlas")
    version = _text(f.attrs.get("format_version"))
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise AtlasError(
            f"{path} has atlas format version {version}; this vizjax reads up to "
            f"{FORMAT_VERSION} (upgrade vizjax)"
        )


def _open_h5(path: Path) -> h5py.File:
    """``h5py.File(path, "r")``, with a file that is not HDF5 reported as 'not a vizjax atlas'."""
    try:
        return h5py.File(path, "r")
    except OSError as e:
        if path.is_dir() or (path.exists() and not h5py.is_hdf5(path)):
            raise AtlasError(f"{path} exists and is not a vizjax atlas") from e
        raise AtlasError(f"cannot read atlas {path}: {_os_reason(e)}") from e


def _create_layer_group(
    layers: h5py.Group,
    name: str,
    num_filters: int,
    n: int,
    image_shape: tuple[int, int],
    steps: int,
) -> h5py.Group:
    """Create ``/layers/<name>`` with ``n`` zero-filled, not-done rows, resizable along axis 0."""
    h, w = image_shape
    g = layers.create_group(name)
    g.attrs["num_filters"] = int(num_filters)
    # One chunk per filter: a reader decompresses only the images it shows, a row is written once.
    img = {"chunks": (1, h, w, 3), "compression": "gzip", "compression_opts": 4}
    g.create_dataset("filters", (n,), "int32", maxshape=(None,), chunks=(256,))
    g.create_dataset("images", (n, h, w, 3), "uint8", maxshape=(None, h, w, 3), **img)
    g.create_dataset("raw", (n, h, w, 3), "float32", maxshape=(None, h, w, 3), shuffle=True, **img)
    g.create_dataset(
        "objective", (n, steps + 1), "float32", maxshape=(None, steps + 1), chunks=(64, steps + 1)
    )
    g.create_dataset("dead", (n,), "bool", maxshape=(None,), chunks=(256,))
    g.create_dataset("done", (n,), "bool", maxshape=(None,), chunks=(256,))
    return g


def _group_geometry(g: h5py.Group) -> tuple[int, tuple[int, int], int]:
    """``(num_filters, (H, W), steps)`` of a layer group."""
    images, objective = g["images"], g["objective"]
    return int(g.attrs["num_filters"]), tuple(images.shape[1:3]), int(objective.shape[1]) - 1


def _geometry_text(geometry: tuple[int, tuple[int, int], int]) -> str:
    """``(num_filters, (H, W), steps)`` for error messages."""
    num_filters, (h, w), steps = geometry
    return f"{h}x{w} images, {steps} steps, {num_filters} filters"


# --------------------------------------------------------------------------------------------------
# writer


class ChunkResult(Protocol):
    """What :meth:`AtlasWriter.write_chunk` takes: the results of ``n`` filters of one layer."""

    filters: np.ndarray  # (n,) int filter indices
    images: np.ndarray  # (n, H, W, 3) uint8
    raw: np.ndarray  # (n, H, W, 3) float32
    objective: np.ndarray  # (n, steps + 1) float32
    dead: np.ndarray  # (n,) bool


@dataclasses.dataclass
class _Layer:
    """What the writer knows of one layer: the file's rows plus this run's additions."""

    num_filters: int
    image_shape: tuple[int, int]
    steps: int
    # filter -> row, in row order; the rows from `in_file` on are not in the file yet.
    rows: dict[int, int]
    in_file: int
    done: set[int]  # committed to the atlas
    journaled: set[int] = dataclasses.field(default_factory=set)  # journaled, not committed
    requested: set[int] = dataclasses.field(default_factory=set)  # begun in this run

    def geometry(self) -> tuple[int, tuple[int, int], int]:
        return self.num_filters, self.image_shape, self.steps


@dataclasses.dataclass(frozen=True)
class _Entry:
    """A journal file: one chunk of one layer, not yet committed."""

    path: Path
    layer: str
    filters: tuple[int, ...]


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


def _replace_atomically(tmp: Path, path: Path) -> None:
    """fsync ``tmp``, rename it onto ``path`` and make the rename durable."""
    _fsync_path(tmp)
    os.replace(tmp, path)
    _fsync_dir(path.parent)


class AtlasWriter:
    """Writes (or resumes) the atlas at ``path``; use as a context manager.

    ``attrs`` gives the root attributes ``model``, ``weights``, ``weights_sha256`` and
    ``preprocessing`` (strings); the writer adds ``format``, ``format_version``, ``vizjax_version``,
    ``jax_version``, ``created`` and ``config`` (``json.dumps(config, sort_keys=True)``).

    An existing atlas is resumed if it was written with the same weights and the same ``config``
    apart from ``volatile_keys``; otherwise entering raises :class:`AtlasError`. Entering also
    applies the journal a killed run left behind and removes its temp files.

    Finished chunks are journaled at once (they survive ``kill -9``) and committed to the atlas when
    a layer is complete, when ``commit_every`` seconds (at least 20 times the last commit's
    duration) have passed since the last commit, on :meth:`commit`, and on exit (also on
    exception).
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        attrs: dict[str, str],
        config: dict[str, Any],
        *,
        volatile_keys: frozenset[str] = VOLATILE_KEYS,
        commit_every: float = 30.0,
    ) -> None:
        self.path = Path(path)
        self.volatile_keys = frozenset(volatile_keys)
        self.commit_every = float(commit_every)
        self._attrs = {str(k): str(v) for k, v in attrs.items()}
        self._config_json = json.dumps(config, sort_keys=True)
        # Compare configs as they come back from JSON (tuples become lists and so on).
        self._config: dict[str, Any] = json.loads(self._config_json)
        self._journal_dir = self.path.with_name(self.path.name + ".journal")
        self._tmp = self.path.with_name(f"{self.path.name}.tmp-{os.getpid()}")
        self._lock: _Lock | None = None
        self._layers: dict[str, _Layer] = {}
        self._pending: list[_Entry] = []
        self._dirty = False  # rows or layers exist only in memory
        self._seq = 0
        self._last_commit = _clock()
        self._interval = self.commit_every

    # -- lifecycle -----------------------------------------------------------------------------

    def __enter__(self) -> AtlasWriter:
        self._lock = _acquire_lock(self.path)
        try:
            if self.path.exists():
                self._load_existing()
            self._remove_stale_temps()
            self._recover_journal()
            if self._pending or self._dirty or not self.path.exists():
                self.commit()
        except BaseException:
            self._release()
            raise
        self._last_commit = _clock()
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            if self._lock is not None:
                self.commit()
        finally:
            self._release()

    def _release(self) -> None:
        if self._lock is None:
            return
        # An empty journal directory is just clutter; a non-empty one must stay for recovery.
        with contextlib.suppress(OSError):
            self._journal_dir.rmdir()
        self._lock.release()
        self._lock = None

    def _require_open(self) -> None:
        if self._lock is None:
            raise RuntimeError("AtlasWriter is not open; use it as a context manager")

    # -- public API ----------------------------------------------------------------------------

    def begin_layer(
        self,
        layer: str,
        num_filters: int,
        filters: Sequence[int],
        image_shape: tuple[int, int],
        steps: int,
    ) -> list[int]:
        """Make sure ``layer`` has a row for each of ``filters`` and return those not done yet.

        Takes the layer's channel count, the filter indices this run wants, the image size
        ``(H, W)`` and the number of optimization steps. Returns the requested filters that are
        neither committed nor journaled, in the given order. New rows are committed at once, so a
        reader sees the layer's full extent (with ``done`` False) while it is being computed.
        AtlasError if the layer already exists with another image size, step count or channel count,
        or if a filter index is out of range.
        """
        self._require_open()
        num_filters, steps = int(num_filters), int(steps)
        image_shape = (int(image_shape[0]), int(image_shape[1]))
        wanted = [int(f) for f in filters]
        bad = [f for f in wanted if not 0 <= f < num_filters]
        if bad:
            raise AtlasError(
                f"layer {layer} has filters 0..{num_filters - 1}; got {', '.join(map(str, bad))}"
            )
        state = self._layers.get(layer)
        if state is None:
            state = _Layer(num_filters, image_shape, steps, rows={}, in_file=0, done=set())
            self._layers[layer] = state
            self._dirty = True
        elif state.geometry() != (num_filters, image_shape, steps):
            raise AtlasError(
                f"layer {layer} in {self.path} has {_geometry_text(state.geometry())}; this run "
                f"has {_geometry_text((num_filters, image_shape, steps))}; write to another --out"
            )
        for f in wanted:
            if f not in state.rows:
                state.rows[f] = len(state.rows)
                self._dirty = True
        state.requested.update(wanted)
        if self._dirty:
            self.commit()
        return [
            f for f in dict.fromkeys(wanted) if f not in state.done and f not in state.journaled
        ]

    def write_chunk(self, layer: str, result: ChunkResult) -> None:
        """Journal one finished chunk of ``layer`` and commit if due.

        ``result`` has numpy-convertible attributes ``filters`` (n,), ``images`` uint8 (n, H, W, 3),
        ``raw`` float32 (n, H, W, 3), ``objective`` float32 (n, steps + 1) and ``dead`` bool (n,)
        (see :class:`ChunkResult`); its filters must have been requested with :meth:`begin_layer`.
        AtlasError on a shape that does not fit the layer.
        """
        self._require_open()
        state = self._layers.get(layer)
        if state is None or not state.requested:
            raise AtlasError(f"layer {layer} was not begun (call begin_layer first)")
        arrays = self._check_chunk(layer, state, result)
        if not len(arrays["filters"]):
            return
        entry = self._journal(layer, state, arrays)
        self._pending.append(entry)
        state.journaled.update(entry.filters)

        complete = state.requested <= (state.done | state.journaled)
        if complete or _clock() - self._last_commit >= self._interval:
            self.commit()

    def commit(self) -> None:
        """Apply the journal and any new rows to the atlas, atomically; no-op if nothing changed."""
        self._require_open()
        if not self._pending and not self._dirty and self.path.exists():
            return
        start = _clock()
        try:
            if self.path.exists():
                shutil.copyfile(self.path, self._tmp)
                mode = "r+"
            else:
                mode = "w"
            with h5py.File(self._tmp, mode) as f:
                if mode == "w":
                    self._write_root(f)
                self._sync_rows(f)
                committed = self._apply_journal(f)
            _replace_atomically(self._tmp, self.path)
        except OSError as e:
            with contextlib.suppress(OSError):
                self._tmp.unlink()
            raise AtlasError(f"cannot write atlas {self.path}: {_os_reason(e)}") from e
        except BaseException:
            with contextlib.suppress(OSError):
                self._tmp.unlink()
            raise

        # The atlas now holds everything: the journal entries may go (applying one twice is
        # harmless, since rows already done are skipped, so a crash before this point is fine).
        for entry in self._pending:
            with contextlib.suppress(FileNotFoundError):
                entry.path.unlink()
        self._pending.clear()
        for name, state in self._layers.items():
            state.in_file = len(state.rows)
            state.done |= committed.get(name, set())
            state.journaled -= state.done
        self._dirty = False
        now = _clock()
        self._interval = max(self.commit_every, _COMMIT_COST_FACTOR * (now - start))
        self._last_commit = now

    # -- opening -------------------------------------------------------------------------------

    def _load_existing(self) -> None:
        """Check the existing atlas against this run and load its layers' rows."""
        with _open_h5(self.path) as f:
            _check_root(f, self.path)
            sha_file = _text(f.attrs.get("weights_sha256", ""))
            sha_ours = self._attrs.get("weights_sha256", "")
            if sha_file != sha_ours:
                raise AtlasError(
                    f"refusing to mix runs: weights_sha256 {sha_file} (file) vs {sha_ours} "
                    f"(this run) in {self.path}; write to another --out"
                )
            try:
                theirs = json.loads(_text(f.attrs.get("config", "{}")))
            except (TypeError, ValueError) as e:
                raise AtlasError(f"{self.path} has an unreadable config attribute") from e
            diff = _config_diff(theirs, self._config, self.volatile_keys)
            if diff:
                raise AtlasError(
                    f"refusing to mix runs: {_describe_diff(diff, 'file', 'this run')} in "
                    f"{self.path}; write to another --out"
                )
            for name, g in f.get("layers", {}).items():
                try:
                    num_filters, image_shape, steps = _group_geometry(g)
                    filters = g["filters"][...].tolist()
                    done = g["done"][...]
                except (KeyError, ValueError) as e:
                    raise AtlasError(f"layer {name} of {self.path} is damaged ({e})") from e
                self._layers[name] = _Layer(
                    num_filters,
                    image_shape,
                    steps,
                    rows={flt: i for i, flt in enumerate(filters)},
                    in_file=len(filters),
                    done={flt for flt, d in zip(filters, done, strict=True) if d},
                )

    def _remove_stale_temps(self) -> None:
        # We hold the lock, so every temp file is a leftover of a killed writer (or merge).
        prefix = f"{self.path.name}.tmp-"
        stale = [p for p in self.path.parent.iterdir() if p.name.startswith(prefix)]
        if self._journal_dir.is_dir():
            stale += [p for p in self._journal_dir.iterdir() if p.name.startswith(".tmp-")]
        for p in stale:
            with contextlib.suppress(OSError):
                p.unlink()

    def _recover_journal(self) -> None:
        """Queue the chunks a killed run journaled but did not commit (the caller commits them)."""
        if not self._journal_dir.is_dir():
            return
        for p in sorted(self._journal_dir.glob("*.npz")):
            try:
                with np.load(p, allow_pickle=False) as z:
                    layer = str(z["layer"])
                    config = json.loads(str(z["config"]))
                    sha = str(z["weights_sha256"])
                    num_filters, steps = int(z["num_filters"]), int(z["steps"])
                    image_shape = (int(z["image_shape"][0]), int(z["image_shape"][1]))
                    filters = tuple(int(v) for v in z["filters"])
            except (OSError, ValueError, KeyError) as e:
                raise AtlasError(
                    f"journal file {p} is unreadable ({e}); delete it to continue without it"
                ) from e
            diff = _config_diff(config, self._config, self.volatile_keys)
            if sha != self._attrs.get("weights_sha256", ""):
                diff.append(("weights_sha256", sha, self._attrs.get("weights_sha256", "")))
            if diff:
                raise AtlasError(
                    f"journal {self._journal_dir} is from another run "
                    f"({_describe_diff(diff, 'journal', 'this run')}); resume with the same "
                    f"settings or delete it"
                )
            state = self._layers.get(layer)
            geometry = (num_filters, image_shape, steps)
            if state is None:
                # The atlas lost the layer (e.g. it was deleted): rebuild it from the journal.
                state = _Layer(num_filters, image_shape, steps, rows={}, in_file=0, done=set())
                self._layers[layer] = state
            elif state.geometry() != geometry:
                raise AtlasError(
                    f"journal file {p} does not fit layer {layer} of {self.path}; delete it"
                )
            for flt in filters:
                if flt not in state.rows:
                    state.rows[flt] = len(state.rows)
                    self._dirty = True
            self._pending.append(_Entry(p, layer, filters))
            state.journaled.update(f for f in filters if f not in state.done)

    # -- writing -------------------------------------------------------------------------------

    def _check_chunk(self, layer: str, state: _Layer, result: ChunkResult) -> dict[str, np.ndarray]:
        """The chunk's arrays in the atlas dtypes; AtlasError if a shape does not fit the layer."""
        h, w = state.image_shape
        a = {
            "filters": np.asarray(result.filters).astype(np.int32, copy=False),
            "images": np.asarray(result.images).astype(np.uint8, copy=False),
            "raw": np.asarray(result.raw).astype(np.float32, copy=False),
            "objective": np.asarray(result.objective).astype(np.float32, copy=False),
            "dead": np.asarray(result.dead).astype(bool, copy=False),
        }
        n = a["filters"].shape[0] if a["filters"].ndim == 1 else -1
        expected = {
            "filters": (n,),
            "images": (n, h, w, 3),
            "raw": (n, h, w, 3),
            "objective": (n, state.steps + 1),
            "dead": (n,),
        }
        for key, shape in expected.items():
            if a[key].shape != shape:
                raise AtlasError(
                    f"chunk of layer {layer}: {key} has shape {a[key].shape}, expected {shape} "
                    f"({_geometry_text(state.geometry())})"
                )
        stray = [int(f) for f in a["filters"] if int(f) not in state.requested]
        if stray:
            raise AtlasError(
                f"chunk of layer {layer} has filters {stray} that were not begun with begin_layer"
            )
        return a

    def _journal(self, layer: str, state: _Layer, arrays: dict[str, np.ndarray]) -> _Entry:
        """Write one chunk durably to the journal directory (temp name, fsync, rename)."""
        self._seq += 1
        stem = f"{time.time_ns():020d}-{os.getpid()}-{self._seq:06d}"
        tmp = self._journal_dir / f".tmp-{stem}.npz"
        final = self._journal_dir / f"{stem}.npz"
        try:
            self._journal_dir.mkdir(exist_ok=True)
            with open(tmp, "wb") as fh:
                # Uncompressed: the journal is short-lived and must not slow the run down.
                np.savez(
                    fh,
                    layer=np.array(layer),
                    config=np.array(self._config_json),
                    weights_sha256=np.array(self._attrs.get("weights_sha256", "")),
                    num_filters=np.array(state.num_filters),
                    image_shape=np.array(state.image_shape),
                    steps=np.array(state.steps),
                    **arrays,
                )
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, final)
            _fsync_dir(self._journal_dir)
        except OSError as e:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise AtlasError(
                f"cannot write atlas journal {self._journal_dir}: {_os_reason(e)}"
            ) from e
        return _Entry(final, layer, tuple(int(f) for f in arrays["filters"]))

    def _write_root(self, f: h5py.File) -> None:
        """Root attributes of a new atlas."""
        for k, v in self._attrs.items():
            f.attrs[k] = v
        f.attrs["format"] = FORMAT
        f.attrs["format_version"] = FORMAT_VERSION
        f.attrs["vizjax_version"] = _vizjax_version()
        f.attrs["jax_version"] = _jax_version()
        f.attrs["created"] = _utc_now()
        f.attrs["config"] = self._config_json
        f.create_group("layers", track_order=True)  # iterate layers in the order they were begun

    def _sync_rows(self, f: h5py.File) -> None:
        """Create missing layer groups and append rows that exist only in memory."""
        layers = f.require_group("layers")
        for name, state in self._layers.items():
            n = len(state.rows)
            if name not in layers:
                g = _create_layer_group(
                    layers, name, state.num_filters, n, state.image_shape, state.steps
                )
                start = 0
            else:
                g = layers[name]
                start = g["filters"].shape[0]
                if start == n:
                    continue
                for key in _DATASETS:
                    g[key].resize(n, axis=0)
            g["filters"][start:n] = np.fromiter(state.rows, np.int32, n)[start:]

    def _apply_journal(self, f: h5py.File) -> dict[str, set[int]]:
        """Write the pending chunks' rows (skipping rows already done); returns filters now done."""
        layers = f["layers"]
        rows: dict[str, dict[int, int]] = {}
        done: dict[str, np.ndarray] = {}
        committed: dict[str, set[int]] = {}
        for entry in self._pending:
            g = layers[entry.layer]
            if entry.layer not in rows:
                rows[entry.layer] = {int(v): i for i, v in enumerate(g["filters"][...])}
                done[entry.layer] = g["done"][...]
            row_of, done_rows = rows[entry.layer], done[entry.layer]
            with np.load(entry.path, allow_pickle=False) as z:
                chunk = {k: z[k] for k in ("images", "raw", "objective", "dead")}
            for i, flt in enumerate(entry.filters):
                r = row_of[flt]
                if done_rows[r]:
                    continue
                for key, values in chunk.items():
                    g[key][r] = values[i]
                done_rows[r] = True
                committed.setdefault(entry.layer, set()).add(flt)
        # Data first, then the flags that say it is there.
        f.flush()
        for name, done_rows in done.items():
            layers[name]["done"][...] = done_rows
        return committed


# --------------------------------------------------------------------------------------------------
# reader


class AtlasLayer:
    """One layer of an open atlas. ``filters`` and ``done`` are loaded; the image datasets are lazy
    (``layer.images[i]`` reads one row as numpy)."""

    def __init__(self, atlas_path: Path, name: str, group: h5py.Group) -> None:
        self.name = name
        self.num_filters = int(group.attrs["num_filters"])
        self.filters: np.ndarray = group["filters"][...]
        self.done: np.ndarray = group["done"][...]
        self._group = group
        self._path = atlas_path
        self._rows = {int(f): i for i, f in enumerate(self.filters)}

    @property
    def images(self) -> h5py.Dataset:
        return self._group["images"]

    @property
    def raw(self) -> h5py.Dataset:
        return self._group["raw"]

    @property
    def objective(self) -> h5py.Dataset:
        return self._group["objective"]

    @property
    def dead(self) -> h5py.Dataset:
        return self._group["dead"]

    @property
    def image_shape(self) -> tuple[int, int]:
        """``(H, W)`` of the layer's images."""
        return tuple(self._group["images"].shape[1:3])  # type: ignore[return-value]

    @property
    def steps(self) -> int:
        """Optimization steps (the objective has ``steps + 1`` values per filter)."""
        return int(self._group["objective"].shape[1]) - 1

    def completed(self) -> np.ndarray:
        """Filter indices whose rows are done, in row order."""
        return self.filters[self.done]

    def row(self, f: int) -> int:
        """Row of filter ``f``; AtlasError if the atlas has no row for it."""
        try:
            return self._rows[int(f)]
        except KeyError:
            raise AtlasError(f"filter {f} of layer {self.name} is not in {self._path}") from None

    def image(self, f: int) -> np.ndarray:
        """The ``(H, W, 3)`` uint8 image of filter ``f``; AtlasError if absent or not done yet."""
        r = self.row(f)
        if not self.done[r]:
            raise AtlasError(f"filter {f} of layer {self.name} is not done yet in {self._path}")
        return self._group["images"][r]

    def __repr__(self) -> str:
        return (
            f"AtlasLayer({self.name!r}, {int(self.done.sum())}/{len(self.filters)} done "
            f"of {self.num_filters} filters)"
        )


class Atlas:
    """An atlas opened read-only (see :func:`open_atlas`); a context manager.

    ``attrs`` holds the root attributes as Python values, ``config`` the run's parsed settings and
    ``layers`` the :class:`AtlasLayer` of every layer, in file order.
    """

    def __init__(self, path: Path, f: h5py.File) -> None:
        self.path = path
        self._file = f
        self.attrs: dict[str, Any] = {k: _text(v) for k, v in f.attrs.items()}
        try:
            self.config: dict[str, Any] = json.loads(self.attrs.get("config", "{}"))
        except (TypeError, ValueError) as e:
            raise AtlasError(f"{path} has an unreadable config attribute") from e
        self.layers: dict[str, AtlasLayer] = {}
        for name, g in f.get("layers", {}).items():
            try:
                self.layers[name] = AtlasLayer(path, name, g)
            except (KeyError, ValueError) as e:
                raise AtlasError(f"layer {name} of {path} is damaged ({e})") from e

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> Atlas:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Atlas({str(self.path)!r}, layers={list(self.layers)})"


def open_atlas(path: str | os.PathLike[str]) -> Atlas:
    """Open the atlas at ``path`` read-only; AtlasError if it is missing or not a vizjax atlas.

    Safe while another process writes it: commits replace the file atomically, and an open atlas
    keeps reading the version it opened.
    """
    p = Path(path)
    if not p.exists():
        raise AtlasError(f"no atlas at {p}")
    f = _open_h5(p)
    try:
        _check_root(f, p)
        return Atlas(p, f)
    except BaseException:
        f.close()
        raise


# --------------------------------------------------------------------------------------------------
# multi-host parts


def part_path(out: str | os.PathLike[str], process_index: int, process_count: int) -> Path:
    """Where process ``process_index`` (0-based) of ``process_count`` writes its part of ``out``.

    ``part_path("atlas.h5", 0, 2)`` is ``atlas.part-1-of-2.h5``: the number in the name is 1-based,
    as in "part 1 of 2".
    """
    if not 0 <= process_index < process_count:
        raise ValueError(f"process_index {process_index} not in 0..{process_count - 1}")
    p = Path(out)
    return p.with_name(f"{p.stem}.part-{process_index + 1}-of-{process_count}{p.suffix}")


def merge_atlases(
    out: str | os.PathLike[str],
    parts: Sequence[str | os.PathLike[str]],
    *,
    volatile_keys: frozenset[str] = VOLATILE_KEYS,
) -> None:
    """Join the done rows of ``parts`` into one atlas at ``out`` (written atomically).

    All parts must have the same weights and config (apart from ``volatile_keys``) and the same
    geometry per layer, else AtlasError. Each layer of the output holds the union of the parts'
    done rows sorted by filter index; a filter done in several parts is taken from the first (the
    results are deterministic, so they are equal). Root attributes come from the first part.
    """
    if not parts:
        raise AtlasError("merge needs at least one part")
    out = Path(out)
    lock = _acquire_lock(out)
    tmp = out.with_name(f"{out.name}.tmp-{os.getpid()}")
    atlases: list[Atlas] = []
    try:
        for p in parts:
            atlases.append(open_atlas(p))
        first = atlases[0]
        for a in atlases[1:]:
            diff = _config_diff(a.config, first.config, frozenset(volatile_keys))
            sha_a, sha_0 = a.attrs.get("weights_sha256"), first.attrs.get("weights_sha256")
            if sha_a != sha_0:
                diff.append(("weights_sha256", sha_a, sha_0))
            if diff:
                raise AtlasError(
                    f"cannot merge {a.path} with {first.path}: "
                    f"{_describe_diff(diff, a.path.name, first.path.name)}"
                )

        # layer -> filter -> (part, row); the first part with a done row wins.
        sources: dict[str, dict[int, tuple[AtlasLayer, int]]] = {}
        geometry: dict[str, tuple[int, tuple[int, int], int]] = {}
        for a in atlases:
            for name, layer in a.layers.items():
                geo = (layer.num_filters, layer.image_shape, layer.steps)
                if geometry.setdefault(name, geo) != geo:
                    raise AtlasError(
                        f"cannot merge {a.path}: layer {name} has {_geometry_text(geo)}, "
                        f"another part has {_geometry_text(geometry[name])}"
                    )
                src = sources.setdefault(name, {})
                for r in np.flatnonzero(layer.done):
                    src.setdefault(int(layer.filters[r]), (layer, int(r)))

        with h5py.File(tmp, "w") as f:
            for k, v in first.attrs.items():
                f.attrs[k] = v
            layers = f.create_group("layers", track_order=True)
            for name, src in sources.items():
                num_filters, image_shape, steps = geometry[name]
                order = sorted(src)
                g = _create_layer_group(layers, name, num_filters, len(order), image_shape, steps)
                g["filters"][...] = np.asarray(order, np.int32)
                # Row by row: memory stays at one image however large the parts are.
                for i, flt in enumerate(order):
                    layer, r = src[flt]
                    for key in ("images", "raw", "objective", "dead"):
                        g[key][i] = getattr(layer, key)[r]
                g["done"][...] = True
        _replace_atomically(tmp, out)
    except OSError as e:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise AtlasError(f"cannot write atlas {out}: {_os_reason(e)}") from e
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    finally:
        for a in atlases:
            a.close()
        lock.release()
