"""Tests of vizjax.atlas: schema, resume after kill -9, single writer, config checks, merge."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace

import h5py
import numpy as np
import pytest

import vizjax.atlas
from vizjax.atlas import AtlasWriter, merge_atlases, open_atlas, part_path
from vizjax.errors import AtlasError

HW = (8, 8)
STEPS = 3
ATTRS = {
    "model": "vgg16",
    "weights": "test-weights",
    "weights_sha256": "ab" * 32,
    "preprocessing": json.dumps({"name": "caffe", "bgr": True}),
}
CONFIG = {"steps": STEPS, "size": 8, "lr": 0.05, "batch": 2, "layers": ["l1"], "out": "x.h5"}
#: layer -> (num_filters, filters to compute), in network order.
PLAN = {"l1": (6, [0, 1, 2, 3, 4, 5]), "l2": (4, [0, 1, 2, 3])}


def make_chunk(layer: str, filters) -> SimpleNamespace:
    """Deterministic fake optimization results: each filter's arrays depend only on (layer, f)."""
    filters = np.asarray(list(filters), dtype=np.int64)
    rows = [np.random.default_rng([len(layer), ord(layer[-1]), int(f)]) for f in filters]
    h, w = HW
    return SimpleNamespace(
        filters=filters,
        images=np.stack([g.integers(0, 256, (h, w, 3), dtype=np.uint8) for g in rows])
        if rows
        else np.zeros((0, h, w, 3), np.uint8),
        raw=np.stack([g.standard_normal((h, w, 3)).astype(np.float32) for g in rows])
        if rows
        else np.zeros((0, h, w, 3), np.float32),
        objective=np.stack([g.standard_normal(STEPS + 1).astype(np.float32) for g in rows])
        if rows
        else np.zeros((0, STEPS + 1), np.float32),
        dead=filters % 3 == 0,
    )


def write_run(path, plan=PLAN, config=CONFIG, chunk=2, **kw) -> None:
    """An uninterrupted run: every layer of ``plan``, ``chunk`` filters at a time."""
    with AtlasWriter(path, ATTRS, config, **kw) as w:
        for layer, (n, filters) in plan.items():
            todo = w.begin_layer(layer, n, filters, HW, STEPS)
            for i in range(0, len(todo), chunk):
                w.write_chunk(layer, make_chunk(layer, todo[i : i + chunk]))


def read_all(path) -> tuple[dict, dict]:
    """``(root attrs, {layer: {dataset: array, "num_filters": n}})`` read with plain h5py."""
    with h5py.File(path, "r") as f:
        attrs = dict(f.attrs)
        layers = {
            name: {**{k: g[k][...] for k in g}, "num_filters": g.attrs["num_filters"]}
            for name, g in f["layers"].items()
        }
    return attrs, layers


def assert_same_atlas(a, b, ignore_attrs=("created",)) -> None:
    attrs_a, layers_a = read_all(a)
    attrs_b, layers_b = read_all(b)
    for k in ignore_attrs:
        attrs_a.pop(k), attrs_b.pop(k)
    assert attrs_a == attrs_b
    assert list(layers_a) == list(layers_b)
    for name in layers_a:
        assert layers_a[name].keys() == layers_b[name].keys()
        for k in layers_a[name]:
            np.testing.assert_array_equal(layers_a[name][k], layers_b[name][k], err_msg=k)


def run_python(code: str, **kw) -> subprocess.Popen:
    """Start ``python -c code`` with vizjax and this test module importable."""
    root = Path(vizjax.atlas.__file__).resolve().parent.parent
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(root), str(Path(__file__).parent), env.get("PYTHONPATH")) if p
    )
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(code)], env=env, **kw)


# ---------------------------------------------------------------------------------------------
# schema and reader


def test_round_trip_plain_h5py(tmp_path):
    out = tmp_path / "atlas.h5"
    write_run(out)
    with h5py.File(out, "r") as f:
        a = f.attrs
        assert a["format"] == "vizjax-atlas" and a["format_version"] == 1
        for k, v in ATTRS.items():
            assert a[k] == v
        assert json.loads(a["config"]) == CONFIG
        assert isinstance(a["vizjax_version"], str) and isinstance(a["jax_version"], str)
        assert len(a["created"]) == 20 and a["created"].endswith("Z")
        assert list(f["layers"]) == ["l1", "l2"]
        g = f["layers/l1"]
        assert g.attrs["num_filters"] == 6
        dtypes = {"filters": "int32", "images": "uint8", "raw": "float32"}
        dtypes |= {"objective": "float32", "dead": "bool", "done": "bool"}
        for k, dt in dtypes.items():
            assert g[k].dtype == np.dtype(dt), k
            assert g[k].maxshape[0] is None, k
        assert g["images"].shape == (6, 8, 8, 3) and g["objective"].shape == (6, STEPS + 1)
        for k in ("images", "raw"):
            assert g[k].chunks == (1, 8, 8, 3)
            assert g[k].compression == "gzip" and g[k].compression_opts == 4
        assert g["raw"].shuffle
        np.testing.assert_array_equal(g["filters"][...], range(6))
        assert g["done"][...].all()
        expect = make_chunk("l1", range(6))
        for k in ("images", "raw", "objective", "dead"):
            np.testing.assert_array_equal(g[k][...], getattr(expect, k), err_msg=k)


def test_round_trip_reader(tmp_path):
    out = tmp_path / "atlas.h5"
    write_run(out, plan={"l1": (6, [5, 1, 3]), "l2": (4, [0, 1, 2, 3])})
    with open_atlas(out) as atlas:
        assert atlas.attrs["format"] == "vizjax-atlas" and atlas.attrs["format_version"] == 1
        assert atlas.attrs["weights_sha256"] == ATTRS["weights_sha256"]
        assert atlas.config == CONFIG
        assert list(atlas.layers) == ["l1", "l2"]
        l1 = atlas.layers["l1"]
        assert l1.name == "l1" and l1.num_filters == 6
        assert l1.image_shape == HW and l1.steps == STEPS
        np.testing.assert_array_equal(l1.filters, [5, 1, 3])  # row order = request order
        np.testing.assert_array_equal(l1.completed(), [5, 1, 3])
        expect = make_chunk("l1", [5, 1, 3])
        assert l1.row(1) == 1
        np.testing.assert_array_equal(l1.image(3), expect.images[2])
        np.testing.assert_array_equal(l1.raw[0], expect.raw[0])
        np.testing.assert_array_equal(l1.objective[...], expect.objective)
        np.testing.assert_array_equal(l1.dead[...], expect.dead)
        with pytest.raises(AtlasError, match="filter 0 of layer l1 is not in"):
            l1.image(0)


def test_reader_refuses_missing_and_foreign_files(tmp_path):
    with pytest.raises(AtlasError, match="no atlas at"):
        open_atlas(tmp_path / "missing.h5")
    text = tmp_path / "notes.h5"
    text.write_text("hello")
    with pytest.raises(AtlasError, match="exists and is not a vizjax atlas"):
        open_atlas(text)


def test_not_done_rows_are_reported(tmp_path):
    out = tmp_path / "atlas.h5"
    with AtlasWriter(out, ATTRS, CONFIG, commit_every=1e9) as w:
        w.begin_layer("l1", 6, [0, 1, 2, 3], HW, STEPS)
        w.write_chunk("l1", make_chunk("l1", [0, 1]))
        # Rows are pre-allocated when the layer is begun; the chunk is only journaled so far.
        with open_atlas(out) as atlas:
            l1 = atlas.layers["l1"]
            np.testing.assert_array_equal(l1.filters, [0, 1, 2, 3])
            assert not l1.done.any() and l1.completed().size == 0
            with pytest.raises(AtlasError, match="not done yet"):
                l1.image(0)
        assert len(list((tmp_path / "atlas.h5.journal").glob("*.npz"))) == 1
        w.commit()
        with open_atlas(out) as atlas:
            np.testing.assert_array_equal(atlas.layers["l1"].completed(), [0, 1])
    assert not (tmp_path / "atlas.h5.journal").exists()


def test_commit_interval_adapts_to_commit_duration(tmp_path, monkeypatch):
    out = tmp_path / "atlas.h5"
    clock = SimpleNamespace(t=0.0)
    monkeypatch.setattr(vizjax.atlas, "_clock", lambda: clock.t)
    replace = vizjax.atlas._replace_atomically

    def slow_replace(tmp, path):  # every commit "takes" 2 s
        clock.t += 2.0
        replace(tmp, path)

    monkeypatch.setattr(vizjax.atlas, "_replace_atomically", slow_replace)

    def done() -> int:
        with open_atlas(out) as atlas:
            return atlas.layers["l1"].completed().size

    with AtlasWriter(out, ATTRS, CONFIG, commit_every=10) as w:
        w.begin_layer("l1", 6, range(6), HW, STEPS)  # commits the new rows: interval 20 * 2 s
        clock.t += 30
        w.write_chunk("l1", make_chunk("l1", [0, 1]))
        assert done() == 0  # 30 s < 40 s: only journaled
        clock.t += 11
        w.write_chunk("l1", make_chunk("l1", [2]))
        assert done() == 3  # 41 s since the last commit
        clock.t += 1
        w.write_chunk("l1", make_chunk("l1", [3, 4, 5]))
        assert done() == 6  # the layer is complete


def test_exit_on_exception_commits_journal(tmp_path):
    out = tmp_path / "atlas.h5"
    with pytest.raises(KeyboardInterrupt):
        with AtlasWriter(out, ATTRS, CONFIG, commit_every=1e9) as w:
            w.begin_layer("l1", 6, range(6), HW, STEPS)
            w.write_chunk("l1", make_chunk("l1", [0, 1]))
            raise KeyboardInterrupt
    with open_atlas(out) as atlas:
        np.testing.assert_array_equal(atlas.layers["l1"].completed(), [0, 1])
    # ... and the lock was released.
    with AtlasWriter(out, ATTRS, CONFIG) as w:
        assert w.begin_layer("l1", 6, range(6), HW, STEPS) == [2, 3, 4, 5]


# ---------------------------------------------------------------------------------------------
# resume


CRASH = """
import os, signal, sys
from test_atlas import ATTRS, CONFIG, HW, STEPS, make_chunk
from vizjax.atlas import AtlasWriter
w = AtlasWriter(sys.argv[1], ATTRS, CONFIG, commit_every=1e9).__enter__()
todo = w.begin_layer("l1", 6, range(6), HW, STEPS)
w.write_chunk("l1", make_chunk("l1", todo[:2]))
w.write_chunk("l1", make_chunk("l1", todo[2:3]))
os.kill(os.getpid(), signal.SIGKILL)
"""


def crash_run(out: Path) -> None:
    """A writer killed with SIGKILL after journaling filters 0, 1, 2 of l1 without a commit."""
    proc = run_python(CRASH.replace("sys.argv[1]", repr(str(out))))
    assert proc.wait(timeout=60) == -signal.SIGKILL
    assert len(list(out.with_name(out.name + ".journal").glob("*.npz"))) == 2


def test_resume_after_kill_equals_uninterrupted_run(tmp_path):
    out = tmp_path / "atlas.h5"
    crash_run(out)
    # A temp file such as a commit killed half-way leaves behind.
    (tmp_path / "atlas.h5.tmp-999999").write_bytes(b"torn")
    with open_atlas(out) as atlas:  # readable: rows pre-allocated, nothing committed
        assert atlas.layers["l1"].completed().size == 0

    with AtlasWriter(out, ATTRS, CONFIG) as w:
        assert not (tmp_path / "atlas.h5.tmp-999999").exists()
        assert w.begin_layer("l1", 6, range(6), HW, STEPS) == [3, 4, 5]
        w.write_chunk("l1", make_chunk("l1", [3, 4, 5]))
        assert w.begin_layer("l2", 4, range(4), HW, STEPS) == [0, 1, 2, 3]
        w.write_chunk("l2", make_chunk("l2", range(4)))
    assert not (tmp_path / "atlas.h5.journal").exists()

    write_run(tmp_path / "clean.h5")
    assert_same_atlas(out, tmp_path / "clean.h5")


CRASH_IN_COMMIT = """
import os, signal, sys
import vizjax.atlas as A
from test_atlas import ATTRS, CONFIG, HW, STEPS, make_chunk
replace, calls = A._replace_atomically, []

def replace_and_die(tmp, path):  # the 3rd replace is the chunk's commit
    calls.append(tmp)
    if len(calls) == 3 and WHEN == "before":
        os.kill(os.getpid(), signal.SIGKILL)
    replace(tmp, path)
    if len(calls) == 3:
        os.kill(os.getpid(), signal.SIGKILL)

A._replace_atomically = replace_and_die
w = A.AtlasWriter(OUT, ATTRS, CONFIG, commit_every=1e9).__enter__()  # creates the file
w.begin_layer("l1", 6, range(6), HW, STEPS)  # commits the rows
w.write_chunk("l1", make_chunk("l1", [0, 1]))
w.commit()
"""


@pytest.mark.parametrize("when", ["before", "after"])
def test_kill_during_commit(tmp_path, when):
    """Killed with the new file written but not renamed, or renamed but the journal not cleared."""
    out = tmp_path / "atlas.h5"
    code = CRASH_IN_COMMIT.replace("OUT", repr(str(out))).replace("WHEN", repr(when))
    proc = run_python(code)
    assert proc.wait(timeout=60) == -signal.SIGKILL
    assert len(list(tmp_path.glob("atlas.h5.journal/*.npz"))) == 1
    assert len(list(tmp_path.glob("atlas.h5.tmp-*"))) == (1 if when == "before" else 0)
    with open_atlas(out) as atlas:
        assert atlas.layers["l1"].completed().size == (0 if when == "before" else 2)

    with AtlasWriter(out, ATTRS, CONFIG) as w:
        assert not list(tmp_path.glob("atlas.h5.tmp-*"))
        assert w.begin_layer("l1", 6, range(6), HW, STEPS) == [2, 3, 4, 5]
        w.write_chunk("l1", make_chunk("l1", [2, 3, 4, 5]))
        w.begin_layer("l2", 4, range(4), HW, STEPS)
        w.write_chunk("l2", make_chunk("l2", range(4)))
    write_run(tmp_path / "clean.h5")
    assert_same_atlas(out, tmp_path / "clean.h5")


def test_journal_of_another_run_is_kept_and_refused(tmp_path):
    out = tmp_path / "atlas.h5"
    crash_run(out)
    out.unlink()  # the atlas is gone; only the journal tells what the run was
    journal = tmp_path / "atlas.h5.journal"
    with pytest.raises(AtlasError, match=r"journal .* another run \(steps 3 \(journal\) vs 9"):
        AtlasWriter(out, ATTRS, {**CONFIG, "steps": 9}).__enter__()
    assert len(list(journal.glob("*.npz"))) == 2
    # With the run's own settings the journal is applied and the layer rebuilt from it.
    with AtlasWriter(out, ATTRS, CONFIG) as w:
        assert w.begin_layer("l1", 6, range(6), HW, STEPS) == [3, 4, 5]
    with open_atlas(out) as atlas:
        l1 = atlas.layers["l1"]
        np.testing.assert_array_equal(l1.completed(), [0, 1, 2])
        np.testing.assert_array_equal(l1.image(2), make_chunk("l1", [2]).images[0])


def test_second_run_adds_filters_to_existing_layer(tmp_path):
    out = tmp_path / "atlas.h5"
    write_run(out, plan={"l1": (6, [4, 0])}, config={**CONFIG, "filters": [4, 0]})
    with AtlasWriter(out, ATTRS, {**CONFIG, "filters": None, "batch": 8}) as w:
        assert w.begin_layer("l1", 6, [0, 1, 4, 5], HW, STEPS) == [1, 5]
        w.write_chunk("l1", make_chunk("l1", [1, 5]))
    with open_atlas(out) as atlas:
        l1 = atlas.layers["l1"]
        np.testing.assert_array_equal(l1.filters, [4, 0, 1, 5])
        assert l1.done.all()
        for f in (0, 1, 4, 5):
            np.testing.assert_array_equal(l1.image(f), make_chunk("l1", [f]).images[0])
        assert atlas.config["filters"] == [4, 0]  # the file keeps the first run's settings


# ---------------------------------------------------------------------------------------------
# refusals


def test_shape_mismatches_refused(tmp_path):
    out = tmp_path / "atlas.h5"
    write_run(out, plan={"l1": (6, [0, 1])})
    with AtlasWriter(out, ATTRS, CONFIG) as w:
        with pytest.raises(AtlasError, match="layer l1 .* 8x8 images, 3 steps.* 16x16 images"):
            w.begin_layer("l1", 6, [2], (16, 16), STEPS)
        with pytest.raises(AtlasError, match="has filters 0..5; got 6"):
            w.begin_layer("l1", 6, [6], HW, STEPS)
        with pytest.raises(AtlasError, match="not begun"):
            w.write_chunk("l1", make_chunk("l1", [2]))
        w.begin_layer("l1", 6, [2, 3], HW, STEPS)
        bad = make_chunk("l1", [2])
        bad.objective = bad.objective[:, :2]
        with pytest.raises(AtlasError, match=r"objective has shape \(1, 2\), expected \(1, 4\)"):
            w.write_chunk("l1", bad)
        with pytest.raises(AtlasError, match="filters \\[5\\] that were not begun"):
            w.write_chunk("l1", make_chunk("l1", [5]))


def test_config_mismatch_refused(tmp_path):
    out = tmp_path / "atlas.h5"
    write_run(out, plan={"l1": (6, [0])}, config={**CONFIG, "steps": 20})
    with pytest.raises(
        AtlasError,
        match=r"refusing to mix runs: steps 20 \(file\) vs 3 \(this run\) .*another --out",
    ):
        AtlasWriter(out, ATTRS, CONFIG).__enter__()
    other_weights = {**ATTRS, "weights_sha256": "cd" * 32}
    with pytest.raises(AtlasError, match="refusing to mix runs: weights_sha256"):
        AtlasWriter(out, other_weights, {**CONFIG, "steps": 20}).__enter__()
    # Volatile keys may differ; and the refusals above released the lock.
    with AtlasWriter(out, ATTRS, {**CONFIG, "steps": 20, "batch": 64, "quiet": True}):
        pass


def test_non_atlas_files_refused(tmp_path):
    text = tmp_path / "notes.h5"
    text.write_text("not hdf5")
    with pytest.raises(AtlasError, match=r"notes.h5 exists and is not a vizjax atlas"):
        AtlasWriter(text, ATTRS, CONFIG).__enter__()
    other = tmp_path / "other.h5"
    with h5py.File(other, "w") as f:
        f["x"] = 1
    with pytest.raises(AtlasError, match="exists and is not a vizjax atlas"):
        AtlasWriter(other, ATTRS, CONFIG).__enter__()
    assert text.read_text() == "not hdf5"  # untouched

    future = tmp_path / "future.h5"
    write_run(future, plan={})
    with h5py.File(future, "r+") as f:
        f.attrs["format_version"] = 2
    with pytest.raises(AtlasError, match="format version 2"):
        AtlasWriter(future, ATTRS, CONFIG).__enter__()
    with pytest.raises(AtlasError, match="format version 2"):
        open_atlas(future)


def test_unwritable_path_refused(tmp_path):
    with pytest.raises(AtlasError, match="cannot write atlas .*directory .* does not exist"):
        AtlasWriter(tmp_path / "nope" / "atlas.h5", ATTRS, CONFIG).__enter__()
    (tmp_path / "file").write_text("")
    with pytest.raises(AtlasError, match="cannot write atlas .*is not a directory"):
        AtlasWriter(tmp_path / "file" / "atlas.h5", ATTRS, CONFIG).__enter__()


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores directory permissions")
def test_read_only_directory_refused(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        with pytest.raises(AtlasError, match="cannot write atlas .*Permission denied"):
            AtlasWriter(ro / "atlas.h5", ATTRS, CONFIG).__enter__()
    finally:
        ro.chmod(0o755)


def test_second_writer_in_same_process_refused(tmp_path):
    out = tmp_path / "atlas.h5"
    with AtlasWriter(out, ATTRS, CONFIG):
        with pytest.raises(
            AtlasError, match=rf"being written by another process \(pid {os.getpid()}\)"
        ):
            AtlasWriter(out, ATTRS, CONFIG).__enter__()
    with AtlasWriter(out, ATTRS, CONFIG):  # released on exit
        pass


LIVE_WRITER = """
import sys
from test_atlas import ATTRS, CONFIG, HW, STEPS, make_chunk
from vizjax.atlas import AtlasWriter
with AtlasWriter(sys.argv[1], ATTRS, CONFIG) as w:
    todo = w.begin_layer("l1", 6, range(6), HW, STEPS)
    w.write_chunk("l1", make_chunk("l1", todo[:2]))
    w.commit()
    print("ready", flush=True)
    sys.stdin.readline()
    w.write_chunk("l1", make_chunk("l1", todo[2:]))
"""


def test_other_process_writing(tmp_path):
    out = tmp_path / "atlas.h5"
    proc = run_python(
        LIVE_WRITER.replace("sys.argv[1]", repr(str(out))),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout.readline().strip() == "ready"
        with pytest.raises(
            AtlasError, match=rf"being written by another process \(pid {proc.pid}\)"
        ):
            AtlasWriter(out, ATTRS, CONFIG).__enter__()
        early = open_atlas(out)  # a reader while the writer is live
        np.testing.assert_array_equal(early.layers["l1"].completed(), [0, 1])
        proc.stdin.write("go\n")
        proc.stdin.flush()
        assert proc.wait(timeout=60) == 0
    finally:
        proc.kill()
        proc.wait()
    # The early reader still sees the version it opened; a new one sees the final file.
    np.testing.assert_array_equal(early.layers["l1"].completed(), [0, 1])
    np.testing.assert_array_equal(early.layers["l1"].image(1), make_chunk("l1", [1]).images[0])
    early.close()
    with open_atlas(out) as atlas:
        np.testing.assert_array_equal(atlas.layers["l1"].completed(), range(6))


# ---------------------------------------------------------------------------------------------
# merge


def test_part_path():
    assert part_path("out/atlas.h5", 0, 2) == Path("out/atlas.part-1-of-2.h5")
    assert part_path("atlas.h5", 1, 2).name == "atlas.part-2-of-2.h5"
    with pytest.raises(ValueError):
        part_path("atlas.h5", 2, 2)


def test_merge_of_parts_equals_single_run(tmp_path):
    out = tmp_path / "atlas.h5"
    p1, p2 = part_path(out, 0, 2), part_path(out, 1, 2)
    # Overlapping, unordered parts; part 2 also has a layer part 1 lacks.
    write_run(p1, plan={"l1": (6, [4, 0, 2, 5])}, config={**CONFIG, "filters": [4, 0, 2, 5]})
    write_run(
        p2, plan={"l1": (6, [1, 3, 5]), "l2": (4, [3, 2, 1, 0])}, config={**CONFIG, "batch": 1}
    )
    merge_atlases(out, [p1, p2])
    write_run(tmp_path / "single.h5")
    assert_same_atlas(out, tmp_path / "single.h5", ignore_attrs=("created", "config"))
    with open_atlas(out) as atlas:
        assert atlas.config["filters"] == [4, 0, 2, 5]  # root attributes of the first part


def test_merge_refuses_mixed_runs(tmp_path):
    p1, p2 = tmp_path / "a.h5", tmp_path / "b.h5"
    write_run(p1, plan={"l1": (6, [0])})
    write_run(p2, plan={"l1": (6, [1])}, config={**CONFIG, "lr": 0.1})
    with pytest.raises(AtlasError, match=r"cannot merge .*b.h5.*lr 0.1 \(b.h5\) vs 0.05 \(a.h5\)"):
        merge_atlases(tmp_path / "out.h5", [p1, p2])
    assert not (tmp_path / "out.h5").exists()
    with pytest.raises(AtlasError, match="no atlas at"):
        merge_atlases(tmp_path / "out.h5", [p1, tmp_path / "missing.h5"])
