"""Bad-input campaign, atlases from elsewhere: damaged index attributes and datasets, damaged
files and segments, and files on which HDF5 crashes, given to `info`, `info --json`, `grid`,
`gallery` and `merge`: each refused in ONE ``vizjax: ...`` line, exit status 2, nothing written
(the campaign's rules: tests/test_bad_input.py). Each parametrized case is one distinct malformed
input, counted with the rest in the README's "Bad input and faults" section.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest
import synthetic_atlas  # tests/synthetic_atlas.py (pytest puts tests/ on sys.path)
from bad_input import _replace, assert_refused  # tests/bad_input.py

from vizjax import probe
from vizjax.atlas import data_dir

# --------------------------------------------------------------------------------------------------
# atlases from elsewhere (`info`, `info --json`, `grid`, `gallery`, `merge`)

L = "layers/block1_conv1"


def _attr(obj: str, key: str, value):
    return lambda f: f[obj].attrs.__setitem__(key, value)


def _del_attr(obj: str, key: str):
    return lambda f: f[obj].attrs.__delitem__(key)


def _group(path: str):
    def edit(f: h5py.File) -> None:
        del f[path]
        f.create_group(path)

    return edit


def _segment(atlas: Path) -> Path:
    return sorted(data_dir(atlas).glob("block1_conv1.*.h5"))[0]


def _segment_edit(edit):
    def apply(atlas: Path) -> None:
        with h5py.File(_segment(atlas), "r+") as f:
            edit(f)

    return apply


def _truncate(size):
    def apply(p: Path) -> None:
        with open(p, "r+b") as fh:
            fh.truncate(size(p.stat().st_size))

    return apply


def _flip_bytes(p: Path) -> None:
    b = bytearray(p.read_bytes())
    for i in np.random.default_rng(1).integers(512, len(b), 40):
        b[i] ^= 0xFF
    p.write_bytes(bytes(b))


def _first_segment_range(start: int, stop: int):
    def edit(f: h5py.File) -> None:
        name = json.loads(f[L].attrs["segments"])[0][0]
        f[L].attrs["segments"] = json.dumps([[name, start, stop]])

    return edit


#: name -> (edit of the open index file, words the refusal must contain).
INDEX_EDITS = {
    "format wrong": (_attr("/", "format", "something-else"), "not a vizjax atlas"),
    "format missing": (_del_attr("/", "format"), "not a vizjax atlas"),
    "format an int": (_attr("/", "format", 7), "not a vizjax atlas"),
    "format_version 99": (_attr("/", "format_version", 99), "upgrade vizjax"),
    "format_version 0": (_attr("/", "format_version", 0), "format version 0"),
    "format_version a string": (_attr("/", "format_version", "2"), "not an integer"),
    "format_version a float": (_attr("/", "format_version", 2.0), "not an integer"),
    "format_version missing": (_del_attr("/", "format_version"), "not an integer"),
    "config not JSON": (_attr("/", "config", "{not json"), "config attribute"),
    "config a JSON list": (_attr("/", "config", "[1, 2]"), "config attribute"),
    "config an int": (_attr("/", "config", 5), "config"),
    "preprocessing not JSON": (_attr("/", "preprocessing", "{{{"), "preprocessing"),
    "weights attribute binary": (_attr("/", "weights", np.void(b"\x00\x01")), "weights"),
    "layers a dataset": (
        lambda f: (f.__delitem__("layers"), f.create_dataset("layers", data=[0])),
        "damaged",
    ),
    "layer a dataset": (lambda f: (f.__delitem__(L), f.create_dataset(L, data=[0])), "not a group"),
    "images a group": (_group(f"{L}/images"), "images is a Group"),
    "nonfinite a group": (_group(f"{L}/nonfinite"), "nonfinite is a Group"),
    "images missing": (lambda f: f.__delitem__(f"{L}/images"), "images is missing"),
    "filters missing": (lambda f: f.__delitem__(f"{L}/filters"), "filters is missing"),
    "done missing": (lambda f: f.__delitem__(f"{L}/done"), "done is missing"),
    "objective missing": (lambda f: f.__delitem__(f"{L}/objective"), "objective is missing"),
    "dead missing": (lambda f: f.__delitem__(f"{L}/dead"), "dead is missing"),
    "filters float": (_replace(f"{L}/filters", data=np.linspace(0, 1, 12)), "filters is float"),
    "filters strings": (_replace(f"{L}/filters", data=np.array([b"x"] * 12)), "filters is"),
    "filters 2-D": (_replace(f"{L}/filters", data=np.zeros((12, 2), np.int32)), "filters is"),
    "filters shorter": (_replace(f"{L}/filters", data=np.arange(5, dtype=np.int32)), "shape"),
    "filters out of range": (
        _replace(f"{L}/filters", data=np.arange(1000, 1012, dtype=np.int32)),
        "filters outside",
    ),
    "filters negative": (
        _replace(f"{L}/filters", data=-np.arange(1, 13, dtype=np.int32)),
        "filters outside",
    ),
    "filters duplicated": (
        _replace(f"{L}/filters", data=np.zeros(12, np.int32)),
        "several rows",
    ),
    "done longer": (_replace(f"{L}/done", data=np.ones(40, bool)), "done has shape"),
    "done integers": (_replace(f"{L}/done", data=np.full(12, 7)), "done is int64"),
    "images flat": (_replace(f"{L}/images", data=np.zeros((12, 5, 5), np.uint8)), "images is"),
    "images float": (
        _replace(f"{L}/images", data=np.zeros((12, 2, 40, 40, 3), np.float64)),
        "images is float64",
    ),
    "images fewer rows": (
        _replace(f"{L}/images", data=np.zeros((3, 2, 40, 40, 3), np.uint8)),
        "images is",
    ),
    "images declare 1.2 TB": (
        _replace(
            f"{L}/images", shape=(12, 2, 100_000, 100_000, 3), dtype="u1", chunks=(1, 1, 64, 64, 3)
        ),
        "images is",
    ),
    "objective 1-D": (_replace(f"{L}/objective", data=np.zeros(12, np.float32)), "objective is"),
    "objective strings": (_replace(f"{L}/objective", data=np.array([b"a"] * 12)), "objective"),
    "dead float": (_replace(f"{L}/dead", data=np.zeros(12, np.float32)), "dead is float32"),
    "selectivity shorter": (_replace(f"{L}/selectivity", data=np.zeros(3, bool)), "selectivity"),
    "specificity strings": (
        _replace(f"{L}/specificity", data=np.array([b"s"] * 12)),
        "specificity",
    ),
    "num_filters missing": (_del_attr(L, "num_filters"), "num_filters"),
    "num_filters a string": (_attr(L, "num_filters", "lots"), "num_filters"),
    "num_filters 0": (_attr(L, "num_filters", 0), "num_filters"),
    "num_filters negative": (_attr(L, "num_filters", -4), "num_filters"),
    "num_filters 2**40": (_attr(L, "num_filters", 2**40), "num_filters"),
    "k a string": (_attr(L, "k", "two"), "attribute k"),
    "k 0": (_attr(L, "k", 0), "attribute k"),
    "k 4096": (_attr(L, "k", 4096), "images is"),
    "k a billion": (_attr(L, "k", 10**9), "attribute k"),
    "image_height negative": (_attr(L, "image_height", -40), "image_height"),
    "image_height a billion": (_attr(L, "image_height", 10**9), "image_height"),
    "steps negative": (_attr(L, "steps", -3), "attribute steps"),
    "segments not JSON": (_attr(L, "segments", "[[oops"), "segments"),
    "segments not a list of entries": (_attr(L, "segments", "[1, 2, 3]"), "segments"),
    "segments escape the folder": (
        _attr(L, "segments", json.dumps([["../../etc/passwd", 0, 12]])),
        "segments",
    ),
    "segments name a missing file": (
        _attr(L, "segments", json.dumps([["block1_conv1.999999.h5", 0, 12]])),
        "is missing",
    ),
    "segments map too many rows": (_first_segment_range(5, 500), "segments map"),
}
#: name -> (edit of the atlas (its index path), words the refusal must contain).
FILE_EDITS = {
    "index truncated to half": (_truncate(lambda n: n // 2), "cannot read atlas"),
    "index truncated to 1 KB": (_truncate(lambda n: 1024), "cannot read atlas"),
    "index empty": (_truncate(lambda n: 0), "not a vizjax atlas"),
    "index text": (lambda p: p.write_text("hello"), "not a vizjax atlas"),
    "index zeros": (lambda p: p.write_bytes(b"\0" * 4096), "not a vizjax atlas"),
    "index a folder": (lambda p: (p.unlink(), p.mkdir()), "not a vizjax atlas"),
    "index bytes flipped": (_flip_bytes, "atlas"),
    "segment missing": (lambda p: _segment(p).unlink(), "is missing"),
    "data folder missing": (lambda p: shutil.rmtree(data_dir(p)), "is missing"),
    "segment truncated": (lambda p: _truncate(lambda n: n // 3)(_segment(p)), "damaged"),
    "segment text": (lambda p: _segment(p).write_text("nope"), "damaged"),
    "segment a folder": (lambda p: (_segment(p).unlink(), _segment_dir(p)), "damaged"),
    "segment of another layer": (_segment_edit(_attr("/", "layer", "block9")), "damaged"),
    "segment of another geometry": (_segment_edit(_attr("/", "image_height", 41)), "damaged"),
    "segment images a group": (_segment_edit(_group("images")), "damaged"),
    "segment done missing": (_segment_edit(lambda f: f.__delitem__("done")), "damaged"),
}
ATLAS_CASES = {**INDEX_EDITS, **FILE_EDITS}


def _segment_dir(p: Path) -> None:
    (data_dir(p) / "block1_conv1.000001.h5").mkdir()


@pytest.fixture(scope="module")
def atlas_template(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("template")
    return synthetic_atlas.make(folder / "a.h5", exemplars=False)


def _make_damaged(template: Path, folder: Path, case: str) -> Path:
    shutil.copytree(template.parent, folder)
    path = folder / template.name
    edit, _ = ATLAS_CASES[case]
    if case in FILE_EDITS:
        edit(path)
    else:
        with h5py.File(path, "r+") as f:
            edit(f)
    return path


@pytest.mark.parametrize("case", list(ATLAS_CASES))
def test_damaged_atlas_is_refused_by_info(case, atlas_template, tmp_path, monkeypatch):
    path = _make_damaged(atlas_template, tmp_path / "atlas", case)
    expected = ATLAS_CASES[case][1]
    # The child-process probe is tested on its own below; here the reader's own checks speak.
    monkeypatch.setattr(probe, "check_hdf5", lambda files: None)
    assert_refused(["info", str(path)], tmp_path, expected)
    assert_refused(["info", "--json", str(path)], tmp_path, expected)


@pytest.mark.parametrize(
    "case",
    ["images a group", "filters duplicated", "segment truncated", "config a JSON list"],
)
def test_damaged_atlas_is_refused_by_grid_gallery_and_merge(
    case, atlas_template, tmp_path, monkeypatch
):
    path = _make_damaged(atlas_template, tmp_path / "atlas", case)
    monkeypatch.setattr(probe, "check_hdf5", lambda files: None)
    out = tmp_path / "out"
    out.mkdir()
    grid = ["grid", str(path), "--layer", "block1_conv1", "--out", str(out / "g.png")]
    assert_refused(grid, out)
    assert_refused(["gallery", str(path), "--out", str(out / "site"), "--quiet"], out)
    assert_refused(["merge", str(out / "m.h5"), str(path)], out)


def test_atlas_that_crashes_hdf5_is_refused_in_one_line(tmp_path):
    """tests/data/hdf5-crash.h5: an index with a few bytes changed on which HDF5 (h5py 3.16,
    HDF5 2.0) dies of SIGSEGV. vizjax walks it in a child process first, so the user gets one
    line (whether or not their HDF5 crashes on it) and their own process never touches it."""
    path = tmp_path / "a.h5"
    shutil.copy(Path(__file__).parent / "data" / "hdf5-crash.h5", path)
    for argv in (["info", str(path)], ["merge", str(tmp_path / "m.h5"), str(path)]):
        assert_refused(argv, tmp_path)


def test_a_crash_in_the_probe_names_the_file_and_signal(tmp_path, monkeypatch):
    """The mechanism itself, independent of any HDF5 version: a probe child that dies."""
    monkeypatch.setattr(probe, "_CHILD", "import os, signal; os.kill(os.getpid(), signal.SIGSEGV)")
    path = tmp_path / "x.h5"
    path.write_bytes(b"\x89HDF\r\n\x1a\n")
    with pytest.raises(Exception, match=r"x\.h5 is damaged: the HDF5 library crashed \(SIGSEGV\)"):
        probe.check_hdf5([path])
    monkeypatch.setattr(probe, "_CHILD", "import time; time.sleep(30)")
    with pytest.raises(Exception, match="did not finish in 1 s"):
        probe.check_hdf5([path], timeout_s=1)
