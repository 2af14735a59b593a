"""vizjax.durable: a file is written whole or not at all, a folder replaced in one rename, and one
process at a time holds a FileLock (the atlas, the exemplars' checkpoints and the weights write
through these; their crash tests kill -9 at named moments, tests/test_atlas_crash.py)."""

import os
import subprocess
import sys
import textwrap

import pytest

from vizjax import durable


class Busy(Exception):
    pass


def test_write_atomically_replaces_whole_and_leaves_no_temp(tmp_path):
    path = tmp_path / "a.json"
    path.write_bytes(b"old")
    durable.write_atomically(path, lambda f: f.write(b"new contents"))
    assert path.read_bytes() == b"new contents"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json"]


def test_a_failed_write_keeps_the_old_file_and_removes_its_temp(tmp_path):
    path = tmp_path / "a.json"
    path.write_bytes(b"old")

    def half(f):
        f.write(b"half of the ne")
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError):
        durable.write_atomically(path, half)
    assert path.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json"]


def test_replace_dir_atomically_moves_the_whole_folder(tmp_path):
    tmp = tmp_path / ".new"
    (tmp / "sub").mkdir(parents=True)
    (tmp / "sub" / "x.bin").write_bytes(b"x")
    (tmp / "y.bin").write_bytes(b"yy")
    target = tmp_path / "set"
    durable.replace_dir_atomically(tmp, target)
    assert not tmp.exists()
    assert (target / "sub" / "x.bin").read_bytes() == b"x" and (
        target / "y.bin"
    ).read_bytes() == b"yy"


def test_pwrite_all_writes_every_byte_at_its_offset(tmp_path):
    path = tmp_path / "rows.bin"
    path.write_bytes(b"\0" * 16)
    fd = os.open(path, os.O_RDWR)
    try:
        durable._pwrite_all(fd, memoryview(b"abcd"), 6)
    finally:
        os.close(fd)
    assert path.read_bytes() == b"\0" * 6 + b"abcd" + b"\0" * 6


def test_a_second_process_is_refused_the_lock_and_told_the_owner(tmp_path):
    lock_path = tmp_path / "lock"
    with durable.FileLock(lock_path, Busy):
        assert lock_path.read_text().strip() == str(os.getpid())
        child = textwrap.dedent(
            f"""
            from pathlib import Path
            from vizjax import durable
            class Busy(Exception):
                pass
            try:
                durable.FileLock(Path({str(lock_path)!r}), Busy).acquire()
            except Busy as e:
                print("busy", e)
            else:
                print("taken")
            """
        )
        out = subprocess.run([sys.executable, "-c", child], capture_output=True, text=True)
        assert out.stdout.split() == ["busy", str(os.getpid())], out.stderr
    # Released: the file stays (a fresh inode would let two processes in) and holds no owner.
    assert lock_path.exists() and lock_path.read_text() == ""
    with durable.FileLock(lock_path, Busy):
        pass


def test_a_killed_owner_leaves_the_lock_free(tmp_path):
    lock_path = tmp_path / "lock"
    child = textwrap.dedent(
        f"""
        import os, signal
        from pathlib import Path
        from vizjax import durable
        durable.FileLock(Path({str(lock_path)!r}), RuntimeError).acquire()
        os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    done = subprocess.run([sys.executable, "-c", child], capture_output=True)
    assert done.returncode == -9
    with durable.FileLock(lock_path, Busy):  # the kernel dropped the dead process's flock
        pass
