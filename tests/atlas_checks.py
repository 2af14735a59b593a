"""What the atlas tests (tests/test_atlas*.py) check a written atlas against, read with plain
h5py: its done rows, the segments its index refers to, two merged parts, a format 1 file's
contents; and a Python subprocess with the test modules importable."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import h5py
import numpy as np
from atlas_scenarios import ATTRS, CONFIG, FIELDS, HW, STEPS, expected_row, make_rows, write_run

import vizjax.atlas
from vizjax import schema
from vizjax.atlas import AtlasWriter, part_path

ROOT = Path(__file__).resolve().parent.parent
FIXTURE_V1 = Path(__file__).parent / "data" / "atlas-v1.h5"


def done_rows_h5(path) -> dict[str, dict[int, dict[str, np.ndarray]]]:
    """``{layer: {filter: {field: value}}}`` of the done rows, read with plain h5py."""
    out: dict[str, dict[int, dict[str, np.ndarray]]] = {}
    with h5py.File(path, "r") as f:
        for name, g in f["layers"].items():
            done = g["done"][...]
            filters = g["filters"][...]
            data = {k: g[k][...] for k in FIELDS}
            out[name] = {
                int(filters[r]): {k: v[r] for k, v in data.items()} for r in np.flatnonzero(done)
            }
            assert len(out[name]) == int(done.sum()), "a filter done twice"
    return out


def assert_rows_equal(got: dict, want: dict, subset: bool = False) -> None:
    """Every done row of ``got`` equals ``want``'s row of its filter (and the same filters are
    done unless ``subset``)."""
    for layer, rows in got.items():
        if not subset:
            assert sorted(rows) == sorted(want[layer]), layer
        for f, row in rows.items():
            for k, v in row.items():
                np.testing.assert_array_equal(v, want[layer][f][k], err_msg=f"{layer} {f} {k}")
    if not subset:
        assert sorted(k for k, v in got.items() if v) == sorted(k for k, v in want.items() if v)


def referenced_only(path: Path) -> None:
    """The data folder holds the segments the index refers to and nothing half-made."""
    with h5py.File(path, "r") as f:
        used = {s for g in f["layers"].values() for s, _, _ in json.loads(g.attrs["segments"])}
    folder = vizjax.atlas.data_dir(path)
    segs = {p.name for p in folder.iterdir() if re.match(r".+\.\d{6}\.h5$", p.name)}
    assert segs == used
    assert not [p for p in folder.iterdir() if p.name.startswith(".tmp-")]
    assert not list(path.parent.glob(path.name + ".tmp-*"))


def run_python(code: str, *args: str, **kw) -> subprocess.Popen:
    """Start ``python -c code args`` with vizjax and the modules of tests/ importable."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(ROOT), str(Path(__file__).parent), env.get("PYTHONPATH")) if p
    )
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(code), *args], env=env, **kw)


def make_parts(tmp_path: Path) -> tuple[Path, Path, Path]:
    """Two overlapping, unordered parts of ``atlas.h5``; filter 5 of l1 is done in both, with
    different data in the second so that which one wins shows."""
    out = tmp_path / "atlas.h5"
    p1, p2 = part_path(out, 0, 2), part_path(out, 1, 2)
    write_run(p1, plan={"l1": (6, [4, 0, 2, 5])}, config={**CONFIG, "filters": [4, 0, 2, 5]})
    with AtlasWriter(p2, ATTRS, {**CONFIG, "batch": 1}) as w:
        w.begin_layer("l1", 6, [1, 5, 3], HW, STEPS)
        w.write_chunk("l1", make_rows("l1", [1, 3]))
        other = make_rows("l1", [5])
        other["images"] = 255 - other["images"]
        w.write_chunk("l1", other)
        w.begin_layer("l2", 4, [3, 2, 1, 0], HW, STEPS)
        w.write_chunk("l2", make_rows("l2", [3, 2, 1, 0]))
    return out, p1, p2


EXPECTED_MERGE = {
    "l1": {f: expected_row("l1", f) for f in range(6)},
    "l2": {f: expected_row("l2", f) for f in range(4)},
}


def done_filters(rows: dict) -> dict[str, list[int]]:
    return {layer: sorted(r) for layer, r in rows.items()}


def v1_contents(path) -> dict:
    """A format 1 file's done rows in format 2 names and shapes, read with plain h5py."""
    out = {}
    with h5py.File(path, "r") as f:
        for name, g in f["layers"].items():
            rows = {}
            for r in np.flatnonzero(g["done"][...]):
                dims = {"K": 1, "H": 32, "W": 32, "D": 3, "T": 3, "C": int(g.attrs["num_filters"])}
                fields = {k: schema.fill_array(schema.ROW_FIELD[k], 1, dims)[0] for k in FIELDS}
                fields.update(
                    images=g["images"][r][None],
                    raw=g["raw"][r][None],
                    objective=g["objective"][r],
                    zero_start_grad=g["dead"][r],
                    dead=g["objective"][r][-1] == 0,
                    final_activation=g["objective"][r][-1:],  # the channel mean, as in v2
                )
                rows[int(g["filters"][r])] = fields
            out[name] = rows
    return out


def assert_nan_equal(got: dict, want: dict) -> None:
    assert got.keys() == want.keys()
    for layer in got:
        assert sorted(got[layer]) == sorted(want[layer])
        for f in got[layer]:
            for k in FIELDS:
                np.testing.assert_array_equal(got[layer][f][k], want[layer][f][k], err_msg=k)
