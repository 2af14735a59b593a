"""Probe HDF5 files that vizjax did not write, in a child process, before reading them.

The HDF5 library trusts a file's internal structure: some damaged files (a few bytes flipped in
an attribute's heap or an object header) make it read out of bounds and crash the whole process
with SIGSEGV, which no ``try`` can catch. Commands that read files from elsewhere (``info``,
``merge``, ``gallery``, ``grid``, ``exemplars`` on an atlas; ``convert`` on a Keras file) therefore
first walk the file's structure in a short-lived child process: every attribute, every object
header and the first element of every dataset, as h5py reads them. If the child dies, the command
refuses the file in one line and the user's process never touches it; if the child merely meets a
Python exception, the command goes on and reports that error its usual way. The walk costs a
Python start-up plus h5py (~0.3 s); it is skipped for files vizjax itself is writing.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path

from vizjax.errors import VizjaxError

#: How long the walk of one command's files may take (a crafted file can loop inside HDF5).
TIMEOUT_S = 120.0

#: What the child runs: ``python -c _CHILD path...``. It prints each path before walking it, so the
#: parent can name the file that crashed HDF5. Only h5py is imported (fast, and no jax).
_CHILD = r"""
import sys
import h5py

def attrs(obj):
    for key in list(obj.attrs.keys()):
        try:
            obj.attrs[key]
        except Exception:
            pass

def visit(name, obj):
    attrs(obj)
    if isinstance(obj, h5py.Dataset):
        try:
            obj[(0,) * obj.ndim] if obj.ndim and obj.shape[0] else obj[()]
        except Exception:
            pass

for path in sys.argv[1:]:
    print(path, flush=True)
    try:
        with h5py.File(path, "r") as f:
            attrs(f)
            f.visititems(visit)
    except Exception:
        pass
print("", flush=True)
"""


def atlas_files(path: str | os.PathLike[str]) -> list[Path]:
    """The HDF5 files of an atlas: its index and every ``.h5`` file of its data folder.

    The folder's name is in the index, which is not read here (probing is what makes reading it
    safe): every folder that can be the index' is taken, ``OUT.h5.d`` and ``OUT.<8 hex>.d``.
    """
    p = Path(path)
    files = [p] if p.is_file() else []
    pattern = re.compile(rf"^(?:{re.escape(p.name)}|{re.escape(p.stem)}\.[0-9a-f]{{8}})\.d$")
    folders = (
        sorted(q for q in p.parent.iterdir() if pattern.match(q.name)) if p.parent.is_dir() else []
    )
    for folder in folders:
        if folder.is_dir():
            files += sorted(q for q in folder.iterdir() if q.suffix == ".h5" and q.is_file())
    return files


def check_hdf5(files: Iterable[str | os.PathLike[str]], timeout_s: float = TIMEOUT_S) -> None:
    """Walk ``files`` in a child process; one-line VizjaxError if HDF5 crashes or hangs on one.

    Files that do not exist or are not HDF5 are left to the caller's own checks.
    """
    paths = [str(f) for f in files if Path(f).is_file()]
    if not paths:
        return
    try:
        r = subprocess.run(
            [sys.executable, "-c", _CHILD, *paths],
            capture_output=True,
            text=True,
            timeout=timeout_s,
            stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired as e:
        out = e.stdout.decode() if isinstance(e.stdout, bytes) else (e.stdout or "")
        last = _last_path(out, paths)
        raise VizjaxError(
            f"{last} is damaged: reading its HDF5 structure did not finish in {timeout_s:.0f} s "
            "(checked in a separate process; nothing was read or written)"
        ) from None
    if r.returncode == 0:
        return
    last = _last_path(r.stdout, paths)
    if r.returncode < 0:
        try:
            how = signal.Signals(-r.returncode).name
        except ValueError:
            how = f"signal {-r.returncode}"
        raise VizjaxError(
            f"{last} is damaged: the HDF5 library crashed ({how}) reading it "
            "(checked in a separate process; nothing was read or written)"
        )
    # The child itself failed (say, h5py missing from its path): no verdict on the files.


def _last_path(stdout: str, paths: list[str]) -> str:
    lines = [line for line in stdout.splitlines() if line]
    return lines[-1] if lines else paths[0]
