"""Tests of vizjax.atlas under kill -9 at any moment: while writing, merging and upgrading a
format 1 atlas, the atlas stays readable with only complete rows, and a rerun finishes it."""

from __future__ import annotations

import shutil
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
from atlas_checks import (  # tests/atlas_checks.py (pytest puts tests/ on sys.path)
    EXPECTED_MERGE,
    FIXTURE_V1,
    assert_nan_equal,
    assert_rows_equal,
    done_filters,
    done_rows_h5,
    make_parts,
    referenced_only,
    run_python,
    v1_contents,
)
from atlas_scenarios import two_sessions  # tests/atlas_scenarios.py

from vizjax.atlas import merge_atlases, open_atlas, upgrade

# ---------------------------------------------------------------------------------------------
# a scenario killed at a chosen moment; kill -9 while writing


KILLED = """
import os, signal, sys
import vizjax.atlas as A
import vizjax.durable
import atlas_scenarios as T

out, what, point, nth = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
seen = 0

def fault(name):
    global seen
    if point in (name, "*"):
        seen += 1
        if seen == nth:
            os.kill(os.getpid(), signal.SIGKILL)

vizjax.durable._fault = fault
print("ready", flush=True)
if what == "write":
    T.two_sessions(out)
elif what == "merge":
    A.merge_atlases(out, sys.argv[5:])
elif what == "upgrade":
    A.upgrade(out)
print(seen, flush=True)
"""


def run_killed(what: str, out: Path, point: str, nth: int, *args: str) -> tuple[bool, int]:
    """Run a scenario in a subprocess that SIGKILLs itself at the ``nth`` fault ``point``
    (``"*"``: any point); ``(killed, points seen)``."""
    proc = run_python(KILLED, str(out), what, point, str(nth), *args, stdout=subprocess.PIPE)
    stdout, _ = proc.communicate(timeout=120)
    if proc.returncode == -signal.SIGKILL:
        return True, nth
    assert proc.returncode == 0
    return False, int(stdout.split()[-1])


@pytest.fixture(scope="module")
def clean_write(tmp_path_factory) -> dict:
    path = tmp_path_factory.mktemp("clean") / "atlas.h5"
    two_sessions(path)
    return done_rows_h5(path)


def check_after_kill_write(out: Path, clean: dict) -> None:
    if out.exists():
        assert_rows_equal(done_rows_h5(out), clean, subset=True)  # plain h5py, complete rows
        with open_atlas(out):
            pass
    two_sessions(out)  # the rerun
    assert_rows_equal(done_rows_h5(out), clean)
    referenced_only(out)


@pytest.mark.parametrize(
    "point,nth",
    [
        ("index.written", 1),  # the first index, written but not renamed
        ("segment.created", 1),
        ("segment.renamed", 2),  # a segment nobody refers to yet
        ("chunk.data", 5),  # some fields of a chunk written
        ("chunk.synced", 3),  # data durable, done bytes not written
        ("chunk.done", 2),
        ("index.written", 5),  # an index rewrite at a layer's end
        ("index.renamed", 4),
    ],
)
def test_kill_9_while_writing(tmp_path, clean_write, point, nth):
    out = tmp_path / "atlas.h5"
    killed, _ = run_killed("write", out, point, nth)
    assert killed
    check_after_kill_write(out, clean_write)


@pytest.mark.slow
def test_kill_9_at_random_moments_while_writing(tmp_path, clean_write):
    _, total = run_killed("write", tmp_path / "count.h5", "*", 10**9)
    rng = np.random.default_rng(1234)
    for i, nth in enumerate(
        rng.choice(np.arange(1, total + 1), size=min(40, total), replace=False)
    ):
        out = tmp_path / f"atlas{i}.h5"
        assert run_killed("write", out, "*", int(nth))[0]
        check_after_kill_write(out, clean_write)


@pytest.mark.slow
def test_kill_9_at_random_times_while_writing(tmp_path, clean_write):
    """SIGKILL from outside after a random delay: moments inside system calls too."""
    rng = np.random.default_rng(99)
    t0 = time.perf_counter()
    run_killed("write", tmp_path / "timing.h5", "none", 1)
    took = time.perf_counter() - t0  # an upper bound of the scenario's own time
    killed = 0
    for i in range(20):
        out = tmp_path / f"atlas{i}.h5"
        proc = run_python(KILLED, str(out), "write", "none", "1", stdout=subprocess.PIPE)
        assert proc.stdout.readline().strip() == b"ready"
        try:
            proc.wait(timeout=float(rng.uniform(0, took / 2)))
        except subprocess.TimeoutExpired:
            proc.kill()
            killed += 1
        proc.wait()
        check_after_kill_write(out, clean_write)
    assert killed >= 10


# ---------------------------------------------------------------------------------------------
# kill -9 while merging


@pytest.mark.parametrize(
    "point,nth", [("merge.linked", 2), ("merge.index", 1), ("index.written", 1)]
)
def test_kill_9_while_merging(tmp_path, point, nth):
    out, p1, p2 = make_parts(tmp_path)
    merge_atlases(out, [p1])  # the old out
    old = done_rows_h5(out)
    assert run_killed("merge", out, point, nth, str(p1), str(p2))[0]
    got = done_rows_h5(out)
    assert done_filters(got) in (done_filters(old), done_filters(EXPECTED_MERGE))  # old or new
    assert_rows_equal(got, EXPECTED_MERGE, subset=True)
    merge_atlases(out, [p1, p2])
    assert_rows_equal(done_rows_h5(out), EXPECTED_MERGE)
    referenced_only(out)


@pytest.mark.slow
def test_kill_9_at_every_merge_moment(tmp_path):
    out, p1, p2 = make_parts(tmp_path)
    _, total = run_killed("merge", tmp_path / "count.h5", "*", 10**9, str(p1), str(p2))
    for nth in range(1, total + 1):
        dst = tmp_path / f"m{nth}.h5"
        merge_atlases(dst, [p1])
        old = done_rows_h5(dst)
        assert run_killed("merge", dst, "*", nth, str(p1), str(p2))[0]
        got = done_rows_h5(dst)
        assert done_filters(got) in (done_filters(old), done_filters(EXPECTED_MERGE))
        assert_rows_equal(got, EXPECTED_MERGE, subset=True)
        merge_atlases(dst, [p1, p2])
        assert_rows_equal(done_rows_h5(dst), EXPECTED_MERGE)


# ---------------------------------------------------------------------------------------------
# kill -9 while upgrading a format 1 atlas


def test_kill_9_while_upgrading(tmp_path):
    path = tmp_path / "v1.h5"
    shutil.copy(FIXTURE_V1, path)
    want = v1_contents(path)
    assert run_killed("upgrade", path, "upgrade.rows", 2)[0]
    assert path.read_bytes() == FIXTURE_V1.read_bytes()  # still the format 1 atlas
    assert run_killed("upgrade", path, "index.renamed", 1)[0]
    assert_nan_equal(done_rows_h5(path), want)  # already format 2
    assert upgrade(path) is False
    referenced_only(path)
