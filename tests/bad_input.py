"""Shared by the bad-input tests (tests/test_bad_input.py, tests/test_bad_input_atlas.py): a
command run in-process, the check that it was refused in one ``vizjax: ...`` line with nothing
written, and an HDF5 edit that replaces a dataset."""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

import h5py

from vizjax.cli import main


class Reached(Exception):
    """Raised instead of writing: the input passed every check (a valid case)."""


def run_cli(argv: list[str]) -> tuple[int | None, str]:
    """``vizjax ARGV`` in-process: ``(exit status, stderr)``; ``None`` if it got past validation."""
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            rc = main(argv)
    except Reached:
        return None, err.getvalue()
    except SystemExit as e:  # argparse
        rc = e.code
    return rc, err.getvalue()


def assert_refused(argv: list[str], folder: Path, expected: str = "") -> str:
    """The command exits 2 with one ``vizjax:`` line (containing ``expected``) and ``folder``
    (where its output would go) holds nothing new."""
    before = sorted(p.name for p in folder.iterdir()) if folder.exists() else []
    rc, err = run_cli(argv)
    lines = err.strip().splitlines()
    assert rc == 2 and len(lines) == 1 and lines[0].startswith("vizjax: "), (rc, err)
    assert "Traceback" not in err and expected in err, err
    after = sorted(p.name for p in folder.iterdir()) if folder.exists() else []
    assert after == before, f"{argv} left {sorted(set(after) - set(before))}"
    return lines[0]


def _replace(path: str, **kw):
    def edit(f: h5py.File) -> None:
        del f[path]
        f.create_dataset(path, **kw)

    return edit
