"""The atlas' data folder (issue 18, goal 3): named by the atlas' id and recorded in the index, so
the index can be renamed (any name) and both parts moved to any folder, and plain h5py still
reads the rows; a new atlas at an old name gets a folder of its own. Atlases written before
(``OUT.h5`` + ``OUT.h5.d``, no ``data_folder`` attribute) are still read, resumed and merged."""

from __future__ import annotations

import hashlib
import os
import shutil
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from atlas_scenarios import ATTRS, CONFIG, HW, STEPS, make_rows  # noqa: E402

import vizjax.atlas.writer  # noqa: E402
from vizjax.atlas import AtlasWriter, data_dir, merge_atlases, open_atlas  # noqa: E402
from vizjax.atlas.files import FOLDER_ATTR, legacy_data_dir  # noqa: E402
from vizjax.atlas.index import _Store  # noqa: E402
from vizjax.errors import AtlasError  # noqa: E402


def write_run(path: Path, filters=(0, 1), config=CONFIG) -> Path:
    with AtlasWriter(path, ATTRS, config) as w:
        todo = w.begin_layer("l1", 6, list(filters), HW, STEPS)
        if todo:
            w.write_chunk("l1", make_rows("l1", todo))
        w.finish_layer("l1")
    return path


def write_legacy(path: Path, monkeypatch, filters=(0, 1)) -> Path:
    """An atlas as vizjax wrote it before data folders were named by id: ``OUT.h5.d``, and no
    ``data_folder`` attribute in the index."""
    with monkeypatch.context() as m:
        m.setattr(vizjax.atlas.writer, "new_data_dir", lambda p, _id: legacy_data_dir(p))
        write_run(path, filters)
    with h5py.File(path, "r+") as f:
        del f.attrs[FOLDER_ATTR]
    assert data_dir(path) == legacy_data_dir(path) and legacy_data_dir(path).is_dir()
    return path


def plain(path: Path) -> dict[str, np.ndarray]:
    """What plain h5py reads from the index (no vizjax)."""
    with h5py.File(path, "r") as f:
        g = f["layers/l1"]
        return {k: g[k][...] for k in ("filters", "done", "images", "raw")}


def through_vizjax(path: Path) -> dict[str, np.ndarray]:
    with open_atlas(path) as a:
        layer = a.layers["l1"]
        return {k: np.asarray(getattr(layer, k)[...]) for k in ("filters", "done", "images", "raw")}


def digests(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.iterdir()}


def test_a_new_atlas_names_its_folder_by_its_id(tmp_path):
    a = write_run(tmp_path / "a.h5")
    with h5py.File(a, "r") as f:
        atlas_id, folder = f.attrs["atlas_id"], f.attrs[FOLDER_ATTR]
    assert folder == f"a.{atlas_id[:8]}.d" and data_dir(a) == tmp_path / folder
    assert sorted(os.listdir(tmp_path)) == sorted(["a.h5", folder])


@pytest.mark.parametrize("new_name", ["b.h5", "any name %b 100%.hdf5", "noext"])
def test_renamed_and_moved_index_reads_with_plain_h5py(tmp_path, new_name):
    a = write_run(tmp_path / "a.h5", filters=(0, 1, 2))
    want = through_vizjax(a)
    assert want["images"].any() and want["done"].all()
    folder = data_dir(a)
    other = tmp_path / "elsewhere"
    other.mkdir()
    b = other / new_name
    os.rename(a, b)  # the index: any name, another folder
    os.rename(folder, other / folder.name)  # its folder goes with it, keeping its name
    got = plain(b)
    assert got["images"].any()  # not the fill value: HDF5 found the segments
    for k, v in want.items():
        np.testing.assert_array_equal(got[k], v, err_msg=k)
        np.testing.assert_array_equal(through_vizjax(b)[k], v, err_msg=k)
    write_run(b, filters=(0, 1, 2, 3))  # resumed under its new name, in the same folder
    assert sorted(plain(b)["filters"].tolist()) == [0, 1, 2, 3]
    assert sorted(os.listdir(other)) == sorted([new_name, folder.name])


def test_a_new_run_at_the_old_name_leaves_the_renamed_atlas_byte_identical(tmp_path):
    a = write_run(tmp_path / "a.h5", filters=(0, 1))
    folder = data_dir(a)
    before = digests(folder)
    os.rename(a, tmp_path / "b.h5")  # the index only: the folder needs no new name
    want = plain(tmp_path / "b.h5")
    write_run(a, filters=(4,), config={**CONFIG, "lr": 0.5})  # another run at the old name
    write_run(a, filters=(4, 5), config={**CONFIG, "lr": 0.5})  # ... resumed (its cleanup ran)
    assert data_dir(a) != folder
    assert digests(folder) == before
    for k, v in plain(tmp_path / "b.h5").items():
        np.testing.assert_array_equal(v, want[k], err_msg=k)
    assert sorted(plain(a)["filters"].tolist()) == [4, 5]


def test_an_index_created_meanwhile_is_never_replaced(tmp_path):
    """Two new atlases at one name have two folders (two locks): the second index to be written
    is refused instead of replacing the first."""
    a = write_run(tmp_path / "a.h5")
    before = a.read_bytes()
    root = {**ATTRS, "atlas_id": _Store.new_id(), "config": "{}"}
    root[FOLDER_ATTR] = vizjax.atlas.files.new_data_dir(a, root["atlas_id"]).name
    store = _Store(a, root)
    with pytest.raises(AtlasError, match="created by another process meanwhile"):
        store.write_index(create=True)
    assert a.read_bytes() == before
    assert not [p for p in store.dir.iterdir() if p.name.startswith(".tmp-")]


def test_a_crafted_folder_name_is_not_followed(tmp_path):
    a = write_run(tmp_path / "a.h5")
    for bad in ("../x.d", "/etc.d", "..d", "x"):
        with h5py.File(a, "r+") as f:
            f.attrs[FOLDER_ATTR] = bad
        assert data_dir(a) == legacy_data_dir(a)


def test_an_old_atlas_is_read_resumed_renamed_and_merged(tmp_path, monkeypatch):
    a = write_legacy(tmp_path / "a.h5", monkeypatch)
    want = through_vizjax(a)
    np.testing.assert_array_equal(plain(a)["images"], want["images"])
    # Renamed the old way (both parts): vizjax reads at once (from the segments)...
    os.rename(a, tmp_path / "b.h5")
    os.rename(legacy_data_dir(a), legacy_data_dir(tmp_path / "b.h5"))
    b = tmp_path / "b.h5"
    for k, v in through_vizjax(b).items():
        np.testing.assert_array_equal(v, want[k], err_msg=k)
    # ... a writer resumes it and records its folder in the index ...
    write_run(b, filters=(0, 1, 2))
    with h5py.File(b, "r") as f:
        assert f.attrs[FOLDER_ATTR] == "b.h5.d"
    assert sorted(plain(b)["filters"].tolist()) == [0, 1, 2]
    # ... so from then on the index alone can be renamed, and plain h5py still reads it.
    os.rename(b, tmp_path / "c.h5")
    got = plain(tmp_path / "c.h5")
    assert got["images"].any() and sorted(got["filters"].tolist()) == [0, 1, 2]
    # Merged with a new-style part into a new atlas (its own folder, the parts unchanged).
    old = write_legacy(tmp_path / "old.h5", monkeypatch, filters=(3,))
    new = write_run(tmp_path / "new.h5", filters=(4,))
    parts = {p: digests(data_dir(p)) for p in (old, new)}
    merge_atlases(tmp_path / "m.h5", [old, new])
    assert data_dir(tmp_path / "m.h5").name.startswith("m.")
    assert sorted(plain(tmp_path / "m.h5")["filters"].tolist()) == [3, 4]
    assert {p: digests(data_dir(p)) for p in (old, new)} == parts


def test_a_copied_index_keeps_the_segments_only_the_other_maps(tmp_path):
    """``cp a.h5 b.h5`` (the index alone): both name one folder, their segments one id; a writer
    of either deletes none of the segments the other maps."""
    a = write_run(tmp_path / "a.h5", filters=(0, 1))
    b = tmp_path / "b.h5"
    shutil.copyfile(a, b)
    write_run(a, filters=(0, 1, 2))  # a new segment that only a.h5 maps
    want = through_vizjax(a)
    write_run(b, filters=(0, 1, 3))  # b's writer cleans up: a's new segment stays
    for k, v in through_vizjax(a).items():
        np.testing.assert_array_equal(v, want[k], err_msg=k)
    assert sorted(plain(a)["filters"].tolist()) == [0, 1, 2]
    assert sorted(plain(b)["filters"].tolist()) == [0, 1, 3]
    write_run(a, filters=(0, 1, 2, 4))  # and the other way round
    assert sorted(plain(b)["filters"].tolist()) == [0, 1, 3]


def _abandoned(folder: Path, *extra: str) -> Path:
    """What a creation killed between its lock and its first index leaves (fault campaign)."""
    folder.mkdir()
    (folder / ".lock").write_text("")
    (folder / ".tmp-index-4242.h5").write_bytes(b"half an HDF5 file")
    for name in extra:
        (folder / name).write_bytes(b"x")
    return folder


def test_a_new_atlas_removes_what_killed_creations_at_its_name_left(tmp_path):
    out = tmp_path / "a.h5"
    gone = _abandoned(tmp_path / "a.0123abcd.d")
    rows = _abandoned(tmp_path / "a.89abcdef.d", "l1.000001.h5")  # holds a segment: kept
    other = _abandoned(tmp_path / "b.0123abcd.d")  # another atlas' name: kept
    named = _abandoned(tmp_path / "a.fedcba98.d")  # an index beside names it: kept
    with h5py.File(tmp_path / "renamed.h5", "w") as f:
        f.attrs[FOLDER_ATTR] = named.name
    live = _abandoned(tmp_path / "a.77777777.d")  # a creator still holds its lock: kept
    starting = tmp_path / "a.66666666.d"  # a creator before its lock (no temp index yet): kept
    starting.mkdir()
    import fcntl

    fd = os.open(live / ".lock", os.O_RDWR)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    try:
        write_run(out)
    finally:
        os.close(fd)
    assert not gone.exists()
    for kept in (rows, other, named, live):
        assert sorted(os.listdir(kept)) >= [".lock", ".tmp-index-4242.h5"], kept
    assert starting.is_dir()
    assert through_vizjax(out)["done"].sum() == 2
    # A resume creates nothing, so it removes nothing either.
    gone2 = _abandoned(tmp_path / "a.00000000.d")
    write_run(out, filters=(2,))
    assert gone2.exists()


def test_a_refused_rerun_after_the_folder_was_deleted_leaves_nothing(tmp_path):
    """Issue 30: resuming, measuring or merging into an index whose data folder was deleted is
    refused in one line, and creates no empty data folder and no lock."""
    a = write_run(tmp_path / "a.h5")
    shutil.rmtree(data_dir(a))
    part = tmp_path / "p"
    part.mkdir()
    p = write_run(part / "a.h5", filters=(2,))
    before = sorted(os.listdir(tmp_path))
    with pytest.raises(AtlasError, match=r"atlas data file .* is missing"):
        AtlasWriter(a, ATTRS, CONFIG).__enter__()
    assert sorted(os.listdir(tmp_path)) == before
    with pytest.raises(AtlasError, match=r"atlas data file .* is missing"):
        merge_atlases(a, [p])
    assert sorted(os.listdir(tmp_path)) == before
    # An index that maps no segment (no layer begun) still resumes without its folder.
    b = tmp_path / "b.h5"
    with AtlasWriter(b, ATTRS, CONFIG):
        pass
    shutil.rmtree(data_dir(b), ignore_errors=True)
    with AtlasWriter(b, ATTRS, CONFIG) as w:
        assert w.begin_layer("l1", 6, [0], HW, STEPS) == [0]
        w.write_chunk("l1", make_rows("l1", [0]))
    with open_atlas(b) as atlas:
        assert atlas.layers["l1"].completed().tolist() == [0]
