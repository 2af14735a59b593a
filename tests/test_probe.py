"""probe: HDF5 files from elsewhere are walked in a child process first; a crash or a hang of
the child refuses the file in one line, anything else leaves the verdict to the caller."""

import h5py
import numpy as np
import pytest

from vizjax import probe
from vizjax.errors import VizjaxError


def _h5(path):
    with h5py.File(path, "w") as f:
        f.attrs["format"] = "x"
        f.create_dataset("g/d", data=np.arange(6).reshape(2, 3))
        f.create_dataset("empty", shape=(0,), dtype="f4")
    return path


def test_atlas_files_are_the_index_and_the_h5_files_of_its_folder(tmp_path):
    index = _h5(tmp_path / "a.h5")
    folder = tmp_path / "a.h5.d"
    folder.mkdir()
    for name in ("l.000002.h5", "l.000001.h5", "notes.txt"):
        (folder / name).write_text("")
    (folder / "sub.h5").mkdir()  # a folder named like a file is not a file
    assert probe.atlas_files(index) == [index, folder / "l.000001.h5", folder / "l.000002.h5"]
    assert probe.atlas_files(tmp_path / "none.h5") == []


def test_healthy_missing_and_non_hdf5_files_pass(tmp_path):
    text = tmp_path / "t.h5"
    text.write_text("not hdf5")
    probe.check_hdf5([_h5(tmp_path / "a.h5"), tmp_path / "missing.h5", text])
    probe.check_hdf5([])


def test_a_crash_names_the_file_and_the_signal(tmp_path, monkeypatch):
    good, bad = _h5(tmp_path / "good.h5"), _h5(tmp_path / "bad.h5")
    # A child that crashes like HDF5 does on a damaged file, on the second path it walks.
    crash = (
        "import os, signal, sys\n"
        "for p in sys.argv[1:]:\n"
        "    print(p, flush=True)\n"
        "    if p.endswith('bad.h5'):\n"
        "        os.kill(os.getpid(), signal.SIGSEGV)\n"
    )
    monkeypatch.setattr(probe, "_CHILD", crash)
    with pytest.raises(VizjaxError) as e:
        probe.check_hdf5([good, bad])
    msg = str(e.value)
    assert msg.startswith(f"{bad} is damaged: the HDF5 library crashed (SIGSEGV)")
    assert "\n" not in msg and "nothing was read or written" in msg


def test_a_hang_is_refused_after_the_timeout(tmp_path, monkeypatch):
    f = _h5(tmp_path / "slow.h5")
    monkeypatch.setattr(
        probe, "_CHILD", "import sys, time\nprint(sys.argv[1], flush=True)\ntime.sleep(30)\n"
    )
    with pytest.raises(VizjaxError, match=r"slow\.h5 is damaged: .* did not finish in 1 s"):
        probe.check_hdf5([f], timeout_s=1.0)


def test_a_child_that_fails_by_itself_gives_no_verdict(tmp_path, monkeypatch):
    monkeypatch.setattr(probe, "_CHILD", "import sys\nsys.exit(1)\n")
    probe.check_hdf5([_h5(tmp_path / "a.h5")])  # no error: the caller's own checks decide


def test_last_path_is_the_last_one_printed():
    assert probe._last_path("a\nb\n", ["a", "b", "c"]) == "b"
    assert probe._last_path("", ["a", "b"]) == "a"
