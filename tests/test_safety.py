"""Data safety (issue 18): vizjax never replaces or deletes a file it did not write, checks every
setting before it creates anything, leaves no lock or temp file beside the user's files, keeps an
atlas an atlas when it is renamed, and stops every process of a multi-process run when one stops.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import io
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

sys.path.insert(0, str(Path(__file__).parent))
import synthetic_atlas  # noqa: E402
from atlas_scenarios import ATTRS, CONFIG, HW, STEPS, make_rows  # noqa: E402

from vizjax import images  # noqa: E402
from vizjax.atlas import AtlasWriter, data_dir, merge_atlases, open_atlas  # noqa: E402
from vizjax.cli import main  # noqa: E402
from vizjax.errors import AtlasError, VizjaxError  # noqa: E402
from vizjax.gallery import MARKER, write_site  # noqa: E402

VIZJAX = [sys.executable, "-m", "vizjax"]
TINY = ["--size", "32", "--steps", "1", "--recipe", "classic", "--quiet"]


def run_cli(argv: list[str]) -> tuple[int, str]:
    """``vizjax ARGV`` in-process: ``(exit status, stderr)``."""
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            rc = main(argv)
    except SystemExit as e:  # argparse
        rc = int(e.code or 0)
    return rc, err.getvalue()


def one_line(rc: int, err: str, expected: str = "") -> str:
    lines = err.strip().splitlines()
    assert rc == 2 and len(lines) == 1 and lines[0].startswith("vizjax: "), (rc, err)
    assert expected in lines[0], lines[0]
    return lines[0]


def snapshot(folder: Path) -> dict[str, tuple]:
    """Every path under ``folder``: its kind, mode and (files) sha256 of its bytes."""
    out: dict[str, tuple] = {}
    for dirpath, dirnames, filenames in os.walk(folder):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            st = p.lstat()
            if p.is_symlink():
                out[str(p.relative_to(folder))] = ("link", os.readlink(p))
            elif p.is_dir():
                out[str(p.relative_to(folder))] = ("dir", st.st_mode)
            else:
                digest = hashlib.sha256(p.read_bytes()).hexdigest()
                out[str(p.relative_to(folder))] = ("file", st.st_mode, digest)
    return out


def write_run(path: Path, filters=(0, 1), config=CONFIG, layer: str = "l1") -> Path:
    """A small atlas with ``filters`` of ``layer`` done (fake results, the real writer)."""
    with AtlasWriter(path, ATTRS, config) as w:
        todo = w.begin_layer(layer, 6, list(filters), HW, STEPS)
        if todo:
            w.write_chunk(layer, make_rows(layer, todo))
        w.finish_layer(layer)
    return path


# --------------------------------------------------------------------------------------------------
# Goal 3: an atlas stays an atlas when renamed or moved; a new run keeps other indexes' segments


def test_a_new_run_at_the_old_name_of_a_moved_index_keeps_its_segments(tmp_path):
    a = write_run(tmp_path / "a.h5", filters=(0, 1))
    folder = data_dir(a)
    old_segments = {p.name: p.read_bytes() for p in folder.glob("*.h5")}
    os.rename(a, tmp_path / "moved.h5")  # only the index: its data stays in its folder
    write_run(a, filters=(4,), config={**CONFIG, "lr": 0.5})  # another run, same name
    assert data_dir(a) != folder  # the new atlas has a folder of its own
    for name, data in old_segments.items():
        assert (folder / name).read_bytes() == data
    with h5py.File(tmp_path / "moved.h5", "r") as f:  # the renamed index reads with plain h5py
        assert sorted(f["layers/l1/filters"][...].tolist()) == [0, 1]
        assert f["layers/l1/done"][...].all()
    os.rename(a, tmp_path / "new.h5")
    os.rename(tmp_path / "moved.h5", a)  # the moved index comes back: still whole
    with open_atlas(a) as atlas:
        assert sorted(atlas.layers["l1"].completed().tolist()) == [0, 1]


# --------------------------------------------------------------------------------------------------
# Goal 4: no lock or temp file beside the user's files


def test_no_lock_or_temp_file_beside_the_users_files(tmp_path):
    (tmp_path / "a.h5.lock").write_text("")  # where vizjax before kept its lock: cleaned up
    write_run(tmp_path / "a.h5")
    write_run(tmp_path / "b.h5")
    merge_atlases(tmp_path / "m.h5", [tmp_path / "a.h5", tmp_path / "b.h5"])
    names = {"a.h5", "b.h5", "m.h5"} | {
        data_dir(tmp_path / n).name for n in ("a.h5", "b.h5", "m.h5")
    }
    assert set(os.listdir(tmp_path)) == names
    with pytest.raises(AtlasError):  # a refused merge leaves nothing either
        merge_atlases(tmp_path / "n.h5", [tmp_path / "a.h5", tmp_path / "missing.h5"])
    assert set(os.listdir(tmp_path)) == names
    for name in ("a.h5", "m.h5"):  # inside vizjax's own folders: segments and the lock
        assert not [n for n in os.listdir(data_dir(tmp_path / name)) if n.startswith(".tmp-")]


def test_a_killed_writers_temp_files_are_removed_by_the_next_run(tmp_path):
    a = write_run(tmp_path / "a.h5")
    (tmp_path / "a.h5.tmp-99").write_bytes(b"torn")  # an older vizjax's index temp file
    (data_dir(a) / ".tmp-index-99.h5").write_bytes(b"torn")
    write_run(a, filters=(2,))
    assert set(os.listdir(tmp_path)) == {"a.h5", data_dir(a).name}
    assert not [n for n in os.listdir(data_dir(a)) if n.startswith(".tmp-")]


# --------------------------------------------------------------------------------------------------
# Goal 2: merge, gallery, PNGs: only what vizjax wrote is replaced


def test_merge_into_an_atlas_of_the_same_run_is_fine_another_run_is_refused(tmp_path):
    part = write_run(tmp_path / "p.h5", filters=(0, 1))
    same = write_run(tmp_path / "same.h5", filters=(2,))
    merge_atlases(same, [same, part])
    with open_atlas(same) as atlas:
        assert sorted(atlas.layers["l1"].completed().tolist()) == [0, 1, 2]
    other = write_run(tmp_path / "o.h5", config={**CONFIG, "lr": 0.5})
    before = snapshot(tmp_path)
    with pytest.raises(AtlasError, match="refusing to replace .*o.h5, an atlas of another run"):
        merge_atlases(other, [part])
    assert snapshot(tmp_path) == before


def test_gallery_rewrites_its_own_folder_only(tmp_path):
    src = synthetic_atlas.make(tmp_path / "src.h5", exemplars=False)
    site = tmp_path / "site"
    write_site(src, site, layers=["block1_conv1"])
    assert (site / MARKER).is_file()
    write_site(src, site, layers=["block1_conv1"])  # its own: rewritten
    page = tmp_path / "one.html"
    write_site(src, page, layers=["block1_conv1"])
    write_site(src, page, layers=["block1_conv1"])
    user = tmp_path / "user"
    user.mkdir()
    (user / "index.html").write_text("<p>mine</p>")
    (tmp_path / "mine.html").write_text("<p>mine</p>")
    before = snapshot(tmp_path)
    with pytest.raises(VizjaxError, match=r"user/index.html is not a vizjax gallery"):
        write_site(src, user)
    with pytest.raises(VizjaxError, match="mine.html exists and is not a vizjax gallery page"):
        write_site(src, tmp_path / "mine.html", layers=["block1_conv1"])
    with pytest.raises(VizjaxError, match="src.h5 exists and is not a folder"):
        write_site(src, src)
    assert snapshot(tmp_path) == before


def test_a_png_is_replaced_only_if_vizjax_wrote_it(tmp_path):
    pic = np.zeros((4, 4, 3), np.uint8)
    ours = images.save_png(pic, tmp_path / "ours.png")
    images.save_png(pic + 1, ours)  # its own: replaced
    assert np.asarray(Image.open(ours))[0, 0, 0] == 1
    theirs = tmp_path / "theirs.png"
    Image.fromarray(pic).save(theirs)
    data = theirs.read_bytes()
    with pytest.raises(VizjaxError, match="theirs.png exists and is not a PNG vizjax wrote"):
        images.save_png(pic, theirs)
    assert theirs.read_bytes() == data


# --------------------------------------------------------------------------------------------------
# Goal 1: every setting checked before anything is created


@pytest.mark.parametrize(
    "argv, env, expected",
    [
        (["--set", "optimizer.b1=5"], {}, "optimizer.b1 must be in [0, 1)"),
        (["--set", "optimizer.decay=-0.1"], {}, "optimizer.decay must be in [0, 1)"),
        (
            ["--diversity", "2", "--set", "objective.diversity_layer=block9_conv9"],
            {},
            "objective.diversity_layer 'block9_conv9' is not a convolution layer",
        ),
        ([], {"VIZJAX_PROGRESS_SECONDS": "abc"}, "VIZJAX_PROGRESS_SECONDS must be a number"),
        (["--num-processes", "2", "--process-id", "1"], {}, "need --coordinator"),
        (
            ["--coordinator", "127.0.0.1:1", "--num-processes", "2", "--process-id", "2"],
            {},
            "--process-id must be in 0..1",
        ),
        ([], {"VIZJAX_WEIGHTS_DIR": "FILE"}, "is a file, not a directory"),
    ],
)
def test_atlas_settings_are_refused_before_anything_is_created(
    tmp_path, monkeypatch, argv, env, expected
):
    monkeypatch.chdir(tmp_path)
    for k, v in env.items():
        if v == "FILE":
            v = str(tmp_path / "weights-file")
            Path(v).write_text("not a folder")
        monkeypatch.setenv(k, v)
    before = snapshot(tmp_path)
    rc, err = run_cli(["atlas", "--out", "a.h5", "--layer", "block1_conv1", *TINY, *argv])
    one_line(rc, err, expected)
    assert snapshot(tmp_path) == before


def test_grid_cols_and_exemplars_settings_are_refused_first(tmp_path, monkeypatch):
    src = synthetic_atlas.make(tmp_path / "src.h5", exemplars=False)
    (tmp_path / "imgs").mkdir()
    before = snapshot(tmp_path)
    rc, err = run_cli(["grid", str(src), "--layer", "block1_conv1", "--cols", "-5", "--out", "g"])
    one_line(rc, err, "--cols: must be a positive integer")
    for flag in ("--top", "--batch"):
        rc, err = run_cli(["exemplars", str(src), "--images", str(tmp_path / "imgs"), flag, "0"])
        one_line(rc, err, "--top and --batch must be positive integers")
    assert snapshot(tmp_path) == before


# --------------------------------------------------------------------------------------------------
# Goal 6: every writing command x every kind of pre-existing target


def _target(kind: str, where: Path, name: str, template: Path) -> Path:
    """A pre-existing thing of ``kind`` named ``name`` in ``where`` (vizjax wrote none of it)."""
    p = where / name
    if kind == "text":
        p.write_text("my notes\n")
    elif kind == "image":
        Image.fromarray(np.full((8, 8, 3), 7, np.uint8)).save(p, format="PNG")
    elif kind == "html":
        p.write_text("<html><body>my page</body></html>")
    elif kind == "foreign_hdf5":
        with h5py.File(p, "w") as f:
            f["data"] = np.arange(10)
            f.attrs["owner"] = "someone else"
    elif kind == "atlas":  # an atlas of another run, with its data folder
        shutil.copyfile(template, p)
        shutil.copytree(data_dir(template), p.with_name(data_dir(template).name))
    elif kind in ("folder", "read_only_folder"):
        p.mkdir()
        (p / "index.html").write_text("<p>my site</p>")
        (p / "notes.txt").write_text("mine")
        if kind == "read_only_folder":
            p.chmod(0o555)
    return p


def _command(command: str, target: Path, inputs: Path) -> list[str]:
    src, t = str(inputs / "src.h5"), str(target)
    return {
        "atlas": ["atlas", "--out", t, "--layer", "block1_conv1", "--filters", "0:2", *TINY],
        "merge": ["merge", t, src],
        "gallery": ["gallery", src, "--out", t, "--quiet"],
        "gallery_page": ["gallery", src, "--layer", "block1_conv1", "--out", t, "--quiet"],
        "grid": ["grid", src, "--layer", "block1_conv1", "--filters", "0:4", "--out", t],
        "render": ["render", "--layer", "block1_conv1", "--filter", "0", "--out", t, *TINY],
        "exemplars": ["exemplars", t, "--images", str(inputs / "imgs"), "--quiet"],
        "fidelity": ["fidelity", t, "--quiet"],
        "article": ["article", "--out", t, "--quiet"],
    }[command]


KINDS = ["text", "image", "html", "foreign_hdf5", "atlas", "folder", "read_only_folder"]
COMMANDS = [
    "atlas",
    "merge",
    "gallery",
    "gallery_page",
    "grid",
    "render",
    "exemplars",
    "fidelity",
    "article",
]


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """A source atlas (synthetic; its weights' digest is not the real one), an image folder and a
    template of "another run's atlas"."""
    folder = tmp_path_factory.mktemp("inputs")
    synthetic_atlas.make(folder / "src.h5", exemplars=False)
    (folder / "imgs").mkdir()
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(folder / "imgs" / "a.png")
    write_run(folder / "other.h5", config={**CONFIG, "lr": 0.5})
    return folder


@settings(
    max_examples=90,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
    derandomize=True,  # the same examples in CI as here; no .hypothesis/ database written
    database=None,
)
@given(
    command=st.sampled_from(COMMANDS),
    kind=st.sampled_from(KINDS),
    name=st.sampled_from(["t", "t.h5", "t.png", "t.html", "my file é.h5", "site"]),
)
def test_every_writing_command_leaves_every_foreign_target_unchanged(
    command, kind, name, inputs, tmp_path, monkeypatch, default_weights
):
    """Property: pointed at anything it did not write, a writing command refuses in one line
    (exit 2) and every byte of the target, and of its folder, is unchanged; nothing is added."""
    monkeypatch.setattr("vizjax.cli.commands._weights", lambda args: default_weights)
    monkeypatch.setattr("vizjax.models.weights.load_weights", lambda *a, **k: default_weights)
    where = Path(tempfile.mkdtemp(dir=tmp_path))
    target = _target(kind, where, name, inputs / "other.h5")
    try:
        before = snapshot(where)
        rc, err = run_cli(_command(command, target, inputs))
        after = snapshot(where)
    finally:
        if kind == "read_only_folder":
            target.chmod(0o755)
    one_line(rc, err)
    assert after == before, (command, kind, name, err)


# --------------------------------------------------------------------------------------------------
# Goal 5: one process of a multi-process run stops -> every process ends, the atlas resumable


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _parts_done(out: Path, i: int) -> int:
    part = out.with_name(f"{out.stem}.part-{i + 1}-of-2{out.suffix}")
    if not part.exists():
        return 0
    try:
        with open_atlas(part) as a:
            layer = a.layers.get("block1_conv2")
            return 0 if layer is None else len(layer.completed())
    except AtlasError:
        return 0


def _multi_process_run(out, port: int, env=None) -> list[subprocess.Popen]:
    """Both processes of a 2-process classic run of 16 block1_conv2 filters, one per chunk."""
    args = ["atlas", "--recipe", "classic", "--layer", "block1_conv2", "--filters", "0:16"]
    args += ["--size", "32", "--steps", "16", "--batch", "1", "--quiet", "--out", str(out)]
    return [
        subprocess.Popen(
            [*VIZJAX, *args, "--coordinator", f"127.0.0.1:{port}"]
            + ["--num-processes", "2", "--process-id", str(i)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for i in range(2)
    ]


def _wait_for_a_chunk(out, procs, what):
    """Until process 1's part holds a done chunk; every process must still run."""
    deadline = time.monotonic() + 240
    while _parts_done(out, 1) < 1:
        assert all(p.poll() is None for p in procs), f"a process ended before {what}"
        assert time.monotonic() < deadline
        time.sleep(0.05)


def _resume_and_check(launch, out):
    """The same command again resumes the parts and merges them into the whole layer."""
    procs = launch(_free_port())
    for p in procs:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err[-2000:]
    with open_atlas(out) as a:
        assert sorted(a.layers["block1_conv2"].completed().tolist()) == list(range(16))


@pytest.mark.slow
def test_sigterm_to_one_process_ends_every_process_and_the_atlas_resumes(tmp_path):
    out = tmp_path / "multi.h5"
    launch = functools.partial(_multi_process_run, out)
    procs = launch(_free_port())
    try:
        _wait_for_a_chunk(out, procs, "the signal")
        procs[1].send_signal(signal.SIGTERM)
        errs = [p.communicate(timeout=120)[1] for p in procs]  # bounded: no barrier hang
    finally:
        for p in procs:
            p.kill()
    for i, (p, err) in enumerate(zip(procs, errs, strict=True)):
        lines = [ln for ln in err.splitlines() if ln.startswith("vizjax: ")]
        assert p.returncode == 128 + signal.SIGTERM, (i, err[-2000:])
        assert len(lines) == 1 and "rerun the same command to resume" in lines[0], err[-2000:]
    assert "process 1 of the run was interrupted by SIGTERM" in errs[0]
    _resume_and_check(launch, out)


@pytest.mark.slow
def test_kill_9_of_one_process_ends_the_others_in_one_line_and_the_atlas_resumes(tmp_path):
    """A process killed without a word: the coordination service counts it gone after the
    heartbeat timeout (3 s here), and the other stops after its chunk in flight, in one line."""
    out = tmp_path / "multi.h5"
    env = {**os.environ, "VIZJAX_HEARTBEAT_SECONDS": "3"}
    launch = functools.partial(_multi_process_run, out, env=env)
    procs = launch(_free_port())
    try:
        _wait_for_a_chunk(out, procs, "the kill")
        procs[1].kill()
        t0 = time.monotonic()
        err = procs[0].communicate(timeout=120)[1]  # bounded: no barrier hang
        took = time.monotonic() - t0
    finally:
        for p in procs:
            p.kill()
            p.communicate()
    lines = [ln for ln in err.splitlines() if ln.startswith("vizjax: ")]
    assert procs[0].returncode == 128 + signal.SIGKILL, err[-2000:]
    assert len(lines) == 1 and "process 1 of the run is gone" in lines[0], err[-2000:]
    assert "rerun the same command to resume" in lines[0]
    assert "Check failure" not in err and "Terminating process" not in err  # not jax's abort
    assert took < 60, took
    _resume_and_check(launch, out)


class _FakeClient:
    """The coordination service's key-value store, in memory (or gone: ``fail``)."""

    def __init__(self, fail: bool = False) -> None:
        self.kv: dict[str, str] = {}
        self.fail = fail

    def key_value_set(self, key: str, value: str) -> None:
        if self.fail:
            raise RuntimeError("UNAVAILABLE: failed to connect to all addresses")
        if key in self.kv:
            raise RuntimeError(f"ALREADY_EXISTS: {key}")
        self.kv[key] = value

    def key_value_try_get(self, key: str) -> str:
        if key not in self.kv:
            raise RuntimeError(f"NOT_FOUND: {key}")
        return self.kv[key]

    def key_value_dir_get(self, prefix: str) -> list[tuple[str, str]]:
        if self.fail:
            raise RuntimeError("UNAVAILABLE: failed to connect to all addresses")
        return [(k, v) for k, v in self.kv.items() if k.startswith(prefix)]


def test_waiting_for_the_other_processes_ends_when_one_stops_or_the_service_is_gone(monkeypatch):
    from vizjax import distributed
    from vizjax.errors import Interrupted
    from vizjax.interrupt import StopOnSignal

    client = _FakeClient()
    monkeypatch.setattr(distributed.jax, "process_count", lambda: 2)
    monkeypatch.setattr(distributed.jax, "process_index", lambda: 0)
    monkeypatch.setattr(distributed, "_client", lambda: client)
    stop = StopOnSignal(run="a.h5")
    client.kv["vizjax/a.h5/written/1"] = "1"
    distributed.wait_for_all("a.h5", "written", lambda: stop.check({}), poll_s=0.01)  # all there
    distributed.announce_stop("a.h5", signal.SIGTERM)  # as process 0 ...
    client.kv["vizjax/a.h5/stop"] = f"1 {int(signal.SIGTERM)}"  # ... but process 1 came first
    with pytest.raises(Interrupted, match="process 1 of the run was interrupted by SIGTERM"):
        distributed.wait_for_all("a.h5", "merged", lambda: stop.check({}), poll_s=0.01)
    with pytest.raises(VizjaxError, match="waited 0 s for the other processes at late"):
        distributed.wait_for_all("b.h5", "late", lambda: None, timeout_s=0.05, poll_s=0.01)
    client.fail = True
    with pytest.raises(VizjaxError, match="lost the other processes while waiting at gone"):
        distributed.wait_for_all("c.h5", "gone", lambda: None, poll_s=0.01)
    stop.signum = signal.SIGTERM  # this process was signalled: it tells the others and stops
    client.fail = False
    with pytest.raises(Interrupted, match="interrupted by SIGTERM"):
        stop.check({})
    assert client.kv["vizjax/a.h5/stop"] == f"1 {int(signal.SIGTERM)}"  # the first word stays


def test_a_process_gone_without_a_word_ends_the_wait(monkeypatch):
    from vizjax import distributed
    from vizjax.errors import Interrupted
    from vizjax.interrupt import StopOnSignal

    client = _FakeClient()
    monkeypatch.setattr(distributed.jax, "process_count", lambda: 3)
    monkeypatch.setattr(distributed.jax, "process_index", lambda: 0)
    monkeypatch.setattr(distributed, "_client", lambda: client)
    monkeypatch.setattr(distributed, "heartbeat_seconds", lambda: 0.05)
    monkeypatch.setattr(distributed, "_seen", {})
    stop = StopOnSignal(run="a.h5")

    def beat(*processes: int) -> None:
        for p in processes:
            key = f"vizjax/beat/{p}"
            client.kv[key] = str(int(client.kv.get(key, "0")) + 1)

    beat(1, 2)
    stop.check({})  # everybody's heartbeat seen once: nothing
    for _ in range(3):
        time.sleep(0.03)
        beat(1, 2)
        stop.check({})  # alive: their heartbeats change
    # Process 2 is killed with kill -9: no announcement, only its heartbeat stops.
    with pytest.raises(Interrupted, match="process 2 of the run is gone") as e:
        for _ in range(20):
            time.sleep(0.02)
            beat(1)
            stop.check({})
    assert e.value.signum == signal.SIGKILL
    with pytest.raises(Interrupted, match="process 2 of the run is gone"):
        distributed.wait_for_all("a.h5", "written", lambda: stop.check({}), poll_s=0.01)
    # A process that reached the point and then ended normally is not "gone" for this wait.
    client.kv["vizjax/a.h5/merged/1"] = client.kv["vizjax/a.h5/merged/2"] = "1"
    distributed.wait_for_all("a.h5", "merged", lambda: stop.check({}), poll_s=0.01)
    client.fail = True  # the service is gone: said by the wait, not by this check
    assert distributed.gone_peer() is None


def test_the_heartbeat_setting_is_checked_before_anything(monkeypatch):
    from vizjax import distributed

    monkeypatch.setenv("VIZJAX_HEARTBEAT_SECONDS", "7")
    assert distributed.heartbeat_seconds() == 7
    for bad in ("abc", "0", "-3", "1e9"):
        monkeypatch.setenv("VIZJAX_HEARTBEAT_SECONDS", bad)
        with pytest.raises(VizjaxError, match="VIZJAX_HEARTBEAT_SECONDS must be an integer"):
            distributed.check("127.0.0.1:1", 2, 0, False)
    distributed.check(None, None, None, False)  # one process: not read


def test_a_renamed_atlas_keeps_its_exemplars(tmp_path):
    a = synthetic_atlas.make(tmp_path / "a.h5")
    with open_atlas(a) as atlas:
        want = atlas.layers["block1_conv1"].exemplars(3)
    (tmp_path / "sub").mkdir()  # another name, another folder: the data folder keeps its name
    folder = data_dir(a)
    os.rename(a, tmp_path / "sub" / "b.h5")
    os.rename(folder, tmp_path / "sub" / folder.name)
    with h5py.File(tmp_path / "sub" / "b.h5", "r") as f:  # plain h5py through the external link
        assert f["layers/block1_conv1/exemplars"].attrs["top"] == 3
    with open_atlas(tmp_path / "sub" / "b.h5") as atlas:
        got = atlas.layers["block1_conv1"].exemplars(3)
        assert atlas.layers["block1_conv1"].exemplar_attrs["top"] == 3
    assert got["paths"] == want["paths"]
    np.testing.assert_array_equal(got["crops"], want["crops"])
