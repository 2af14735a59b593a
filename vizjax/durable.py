"""Durable files: what every module that writes uses, so a crash leaves the old file or the new.

A file is written to a temp name in its folder, fsynced, renamed over the target, and the rename
made durable (:func:`write_atomically`, :func:`replace_atomically`; a folder:
:func:`replace_dir_atomically`); rows go in place with ``pwrite`` + ``fdatasync``; one process at a
time holds a :class:`FileLock` (``flock``: the kernel drops it when the process dies, so a killed
run never blocks the next). The atlas, the exemplars' checkpoints and the prepared weights all
write through here. :func:`fault` marks named moments of a write for the fault tests.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import numpy as np

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


def write_atomically(path: Path, write: Callable[[IO[bytes]], Any]) -> None:
    """Write ``path`` whole or not at all: ``write(f)`` into a temp file beside it, then
    :func:`replace_atomically`. The temp file is removed if writing fails."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            write(f)
        fault("file.written")
        _replace_atomically(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def replace_dir_atomically(tmp: Path, path: Path) -> None:
    """fsync every file and folder under ``tmp``, rename it onto ``path`` (which must not exist
    or be an empty folder) and make the rename durable."""
    for root, _, files in os.walk(tmp):
        for name in files:
            _fsync_path(Path(root) / name)
        _fsync_dir(Path(root))
    os.replace(tmp, path)
    _fsync_dir(path.parent)


class FileLock:
    """An exclusive ``flock`` on ``path`` (created if missing), taken without waiting; the file
    holds the owner's pid. ``busy(pid)`` makes the exception raised when another process holds
    it; OSError otherwise. Release it (or let the process die) to let the next one in."""

    def __init__(self, path: Path, busy: Callable[[str], Exception]) -> None:
        self.path, self.busy, self.fd = path, busy, -1

    def acquire(self) -> FileLock:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            owner = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise self.busy(owner) from None
            raise
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self.fd = fd
        return self

    def release(self) -> None:
        # The file stays: deleting it would let a second process lock a fresh inode while a
        # third still holds the old one.
        if self.fd >= 0:
            with contextlib.suppress(OSError):
                os.ftruncate(self.fd, 0)
            os.close(self.fd)  # closing the description releases the flock
            self.fd = -1

    def __enter__(self) -> FileLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()
