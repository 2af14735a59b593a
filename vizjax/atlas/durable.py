"""Durable writes and the single-writer lock: fsync, atomic replace, pwrite, flock.

Every file vizjax writes goes tmp -> fsync -> rename; a killed process leaves either the old
file or the new one. :func:`fault` marks named moments of a write for the fault tests.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
from pathlib import Path

import numpy as np

from vizjax.errors import AtlasError

#: fdatasync where the OS has it (Linux); fsync elsewhere (macOS has no fdatasync).
_fdatasync = getattr(os, "fdatasync", os.fsync)


def _fault(point: str) -> None:
    """A named moment of a write (tests replace this to ``kill -9`` the process right there)."""


def fault(point: str) -> None:
    """Call the test hook ``_fault`` (looked up when called, so tests can replace it)."""
    _fault(point)


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
