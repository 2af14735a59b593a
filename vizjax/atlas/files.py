"""The atlas' files: their names (index, data folder, parts, sidecars) and what makes a file an
atlas this vizjax reads."""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from vizjax import names, schema
from vizjax.atlas.lock import LOCK_NAME
from vizjax.durable import _os_reason
from vizjax.errors import AtlasError

FORMAT = schema.FORMAT
FORMAT_VERSION = schema.FORMAT_VERSION
#: Segment file names: ``<layer>.<seq>.h5`` with a zero-padded sequence number.
_SEGMENT_RE = re.compile(r"^(?P<layer>.+)\.(?P<seq>\d{6,})\.h5$")
_EXEMPLARS_RE = re.compile(r"^exemplars\..+\.h5$")
#: Rows copied at a time by upgrade and merge (bounds memory to a few dozen images).
_COPY_ROWS = 32


def check_layer_name(layer: object) -> str:
    """``layer`` if it can be a layer name (any non-empty text without NUL: it is stored through
    :mod:`vizjax.names`), else AtlasError."""
    reason = names.problem(layer)
    if reason is not None:
        raise AtlasError(reason)
    return str(layer)


def segment_name(layer: str, seq: int) -> str:
    """The file name of segment ``seq`` of ``layer`` in the data folder: ``<stem>.<seq>.h5``."""
    return f"{names.file_stem(layer)}.{seq:06d}.h5"


def exemplars_name(layer: str) -> str:
    """The file name of ``layer``'s exemplars in the data folder: ``exemplars.<stem>.h5``."""
    return f"exemplars.{names.file_stem(layer)}.h5"


def _text(value: Any) -> Any:
    """An HDF5 attribute value as plain Python (bytes decoded, numpy scalars unwrapped)."""
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, np.generic):
        return _text(value.item())
    if isinstance(value, np.ndarray):
        return value.tolist()
    return value


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


#: The index' root attribute that names its data folder (a folder beside the index).
FOLDER_ATTR = "data_folder"
#: What a data folder's name may be: one plain name ending in ``.d`` (a crafted index cannot
#: point vizjax at another directory).
_FOLDER_RE = re.compile(r"^[^/\\\x00]+\.d$")


def new_data_dir(path: str | os.PathLike[str], atlas_id: str) -> Path:
    """The data folder a new atlas at ``path`` gets: ``OUT.h5`` -> ``OUT.<id[:8]>.d``.

    Named by the atlas' id, not only by the index' name: the index can be renamed (any name) and
    both moved to any folder, and plain h5py still finds the rows (the virtual datasets name the
    folder relative to the index); a new atlas at the old name gets a folder of its own.
    """
    p = Path(path)
    return p.with_name(f"{p.stem}.{atlas_id[:8]}.d")


def remove_abandoned_folders(path: str | os.PathLike[str], keep: Path) -> None:
    """Delete the data folders that killed creations of an atlas at ``path`` left.

    A new atlas' folder gets its lock, then its index is written through a temp file in the
    folder; a process killed in between leaves ``OUT.<id8>.d`` holding only ``.lock`` and a
    ``.tmp-index-*`` file, and the rerun, finding no index, makes a folder of its own. Such a
    folder goes when: its name is one vizjax gives a new atlas at ``path``; it holds a temp index
    and nothing else but the lock (no rows, exemplars or sidecars); no index beside names it; and
    its lock is free (the kernel drops a dead process' ``flock``: a live creator keeps its folder).
    """
    p = Path(path)
    pattern = re.compile(rf"^{re.escape(p.stem)}\.[0-9a-f]{{8}}\.d$")
    candidates = [
        d
        for d in p.parent.iterdir()
        if d != keep and pattern.match(d.name) and d.is_dir() and not d.is_symlink()
    ]
    if not candidates:
        return
    named = _folders_named_beside(p.parent)
    for d in candidates:
        try:
            names = os.listdir(d)
        except OSError:
            continue
        temp = [n for n in names if n.startswith(".tmp-index-")]
        # The temp index is written under the lock: a folder without one may be a live creator's
        # that has not taken its lock yet.
        if d.name in named or not temp or set(names) - {LOCK_NAME, *temp}:
            continue
        try:
            fd = os.open(d / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:  # a live creator
            os.close(fd)
            continue
        try:
            for n in names:
                with contextlib.suppress(FileNotFoundError):
                    (d / n).unlink()
            with contextlib.suppress(FileNotFoundError):
                (d / LOCK_NAME).unlink()
            d.rmdir()
        except OSError:
            pass
        finally:
            os.close(fd)


def _folders_named_beside(parent: Path) -> set[str]:
    """The data folder names that the HDF5 indexes in ``parent`` record."""
    names: set[str] = set()
    for f in parent.iterdir():
        if f.name.startswith(".") or not f.is_file():
            continue
        with contextlib.suppress(Exception):  # not HDF5, unreadable, damaged: names nothing
            if h5py.is_hdf5(f):
                with h5py.File(f, "r") as h:
                    names.add(str(_text(h.attrs.get(FOLDER_ATTR, ""))))
    return names


def legacy_data_dir(path: str | os.PathLike[str]) -> Path:
    """``OUT.h5.d``: the data folder of an index that names none (written before vizjax named
    folders by the atlas' id; renamed together with the index)."""
    p = Path(path)
    return p.with_name(p.name + ".d")


def data_dir(path: str | os.PathLike[str], attrs: Any = None) -> Path:
    """The data folder of the atlas index ``path``: the folder named by the index' root attribute
    ``data_folder`` (``attrs``, read from the file if None), beside the index whatever the index'
    name now is; :func:`legacy_data_dir` for an index without it (or no index)."""
    p = Path(path)
    if attrs is None:
        attrs = {}
        if p.is_file():
            try:
                with h5py.File(p, "r") as f:
                    attrs = {FOLDER_ATTR: f.attrs.get(FOLDER_ATTR, "")}
            except OSError:
                pass
    name = _text(attrs.get(FOLDER_ATTR, ""))
    if isinstance(name, str) and _FOLDER_RE.match(name) and name not in (".d", "..d"):
        return p.with_name(name)
    return legacy_data_dir(p)


def sidecar_path(path: str | os.PathLike[str], name: str) -> Path:
    """A file named ``name`` in the atlas' data folder, for small state of other modules.

    The folder is created if missing; nothing else is done with the file (the caller writes it,
    ideally tmp + rename). Names that the atlas uses itself (segments ``<layer>.<seq>.h5``,
    ``exemplars.<layer>.h5``, ``.tmp-*``, ``.lock``) or that leave the folder are refused with ValueError.
    """
    if (
        not name
        or "/" in name
        or name in (".", "..")
        or name.startswith(".tmp-")
        or name == LOCK_NAME
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
