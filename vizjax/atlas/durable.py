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


#: The lock file's name inside the atlas' data folder (vizjax's own folder, not beside the
#: user's files).
LOCK_NAME = ".lock"


class _Lock:
    """An exclusive ``flock`` on ``<atlas>.d/.lock``; the file holds the owner's pid for messages.

    ``made_dir``: the data folder did not exist before the lock created it (so a command that
    fails before writing the index removes it again, leaving nothing behind).
    """

    def __init__(self, path: Path, atlas: Path) -> None:
        self.path, self.atlas, self.fd = path, atlas, -1
        self.made_dir = False

    def acquire(self) -> None:
        folder = self.path.parent
        try:
            if not folder.is_dir():
                folder.mkdir()
                self.made_dir = True
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            if self.made_dir:
                self._remove_made_dir()
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
        _remove_legacy_lock(self.atlas)

    def release(self) -> None:
        # The lock file itself stays while the atlas exists: deleting it would let a second writer
        # lock a fresh inode while a third still holds the old one. Without an index (a command
        # that failed before writing one), a data folder holding only the lock goes, with it.
        if self.fd >= 0:
            with contextlib.suppress(OSError):
                os.ftruncate(self.fd, 0)
            if not self.atlas.exists():
                self._remove_made_dir()
            os.close(self.fd)  # closing the description releases the flock
            self.fd = -1

    def _remove_made_dir(self) -> None:
        folder = self.path.parent
        with contextlib.suppress(OSError):
            if set(os.listdir(folder)) <= {LOCK_NAME}:
                with contextlib.suppress(FileNotFoundError):
                    self.path.unlink()
                folder.rmdir()


def _remove_legacy_lock(path: Path) -> None:
    """Delete ``OUT.h5.lock`` beside the index (where vizjax before 0.x kept its lock) unless an
    old writer still holds it: it is vizjax's own file, and the user's folder should not keep it."""
    legacy = path.with_name(path.name + ".lock")
    try:
        fd = os.open(legacy, os.O_RDWR)
    except OSError:
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return
    with contextlib.suppress(OSError):
        legacy.unlink()
    os.close(fd)


def _acquire_lock(path: Path) -> _Lock:
    """Take the single-writer lock of the atlas ``path`` (the file ``.lock`` in its data folder,
    which is created if missing); AtlasError if ``path`` has no directory or is locked."""
    parent = path.parent
    if not parent.is_dir():
        what = "is not a directory" if parent.exists() else "does not exist"
        raise AtlasError(f"cannot write atlas {path}: directory {parent} {what}")
    folder = path.with_name(path.name + ".d")
    if folder.exists() and not folder.is_dir():
        raise AtlasError(f"cannot write atlas {path}: {folder} exists and is not a folder")
    lock = _Lock(folder / LOCK_NAME, path)
    lock.acquire()
    return lock
