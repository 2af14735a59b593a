"""The atlas' single-writer lock: ``.lock`` in the atlas' own data folder (never beside the user's
files), a :class:`vizjax.durable.FileLock`."""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path

from vizjax.durable import FileLock, _os_reason
from vizjax.errors import AtlasError

#: The lock file's name inside the atlas' data folder (vizjax's own folder, not beside the
#: user's files).
LOCK_NAME = ".lock"


class _Lock:
    """The writer's :class:`~vizjax.durable.FileLock` on ``<data folder>/.lock``, which creates the
    data folder if missing. ``made_dir``: the folder did not exist before (so a command that fails
    before writing the index removes it again, leaving nothing behind)."""

    def __init__(self, path: Path, atlas: Path) -> None:
        self.path, self.atlas = path, atlas
        self.made_dir = False
        self._lock = FileLock(path, self._busy)

    @property
    def folder(self) -> Path:
        """The data folder the lock is in."""
        return self.path.parent

    def _busy(self, owner: str) -> AtlasError:
        return AtlasError(f"{self.atlas} is being written by another process (pid {owner})")

    def acquire(self) -> None:
        folder = self.path.parent
        try:
            if not folder.is_dir():
                folder.mkdir()
                self.made_dir = True
            self._lock.acquire()
        except OSError as e:
            if self.made_dir:
                self._remove_made_dir()
            raise AtlasError(f"cannot write atlas {self.atlas}: {_os_reason(e)}") from e
        _remove_legacy_lock(self.atlas)

    def release(self) -> None:
        # Without an index (a command that failed before writing one), a data folder holding only
        # the lock goes with it.
        if self._lock.fd >= 0 and not self.atlas.exists():
            self._remove_made_dir()
        self._lock.release()

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


def _acquire_lock(path: Path, folder: Path) -> _Lock:
    """Take the single-writer lock of the atlas ``path`` (the file ``.lock`` in its data folder
    ``folder``, created if missing); AtlasError if ``path`` has no directory or is locked."""
    parent = path.parent
    if not parent.is_dir():
        what = "is not a directory" if parent.exists() else "does not exist"
        raise AtlasError(f"cannot write atlas {path}: directory {parent} {what}")
    if folder.exists() and not folder.is_dir():
        raise AtlasError(f"cannot write atlas {path}: {folder} exists and is not a folder")
    lock = _Lock(folder / LOCK_NAME, path)
    lock.acquire()
    return lock
