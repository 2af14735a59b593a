"""The command line end to end: bad input, pictures, kill -9 and resume, a second writer, and a
two-process jax.distributed run."""

import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from tiny_network import ARGS as TINY

from vizjax.atlas import data_dir, open_atlas
from vizjax.cli import main
from vizjax.images import LABEL_H

VIZJAX = [sys.executable, "-m", "vizjax"]
#: The classic recipe (cheap to compile) on the tiny network (tests/tiny_network.py) wherever
#: neither is what a test is about.
SMALL = ["--recipe", "classic", "--size", "32", "--steps", "3", "--quiet", *TINY]


def _fails(capsys, argv, expected):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("vizjax: ") and "\n" not in err and "Traceback" not in err, err
    assert expected in err, err
    return err


def test_bad_input_gives_one_clear_line(tiny_weights, tmp_path, capsys):
    out = str(tmp_path / "a.h5")
    atlas = ["atlas", "--out", out, *SMALL]
    err = _fails(capsys, [*atlas, "--layer", "block9_conv1"], "unknown layer 'block9_conv1'")
    assert "block5_conv3" in err  # lists the valid ones
    _fails(
        capsys,
        [*atlas, "--layer", "block1_conv1", "--filters", "8"],
        "filter index 8 out of range for block1_conv1 (0..7)",  # the tiny network's 8 filters
    )
    _fails(capsys, [*atlas, "--layer", "block1_conv1", "--filters", "6:10"], "goes past")
    _fails(
        capsys,
        ["atlas", "--out", out, "--layer", "block5_conv1", "--size", "8", *TINY],
        "too small for block5_conv1: it needs at least 16x16",
    )
    _fails(
        capsys,
        [*atlas, "--layer", "block1_conv1", "--steps", "0"],
        "steps must be a positive integer",
    )
    _fails(
        capsys,
        [*atlas, "--layer", "block1_conv1", "--init", str(tmp_path / "none.png")],
        "does not exist",
    )
    text = tmp_path / "cat.png"
    text.write_text("not a picture")
    _fails(capsys, [*atlas, "--layer", "block1_conv1", "--init", str(text)], "not a readable image")
    blocker = tmp_path / "file"
    blocker.write_text("")
    _fails(
        capsys,
        ["atlas", "--out", str(blocker / "a.h5"), "--layer", "block1_conv1", *SMALL],
        "cannot write atlas",
    )
    notatlas = tmp_path / "other.h5"
    notatlas.write_text("hello")
    _fails(
        capsys,
        ["atlas", "--out", str(notatlas), "--layer", "block1_conv1", *SMALL],
        "not a vizjax atlas",
    )
    _fails(
        capsys, [*atlas, "--layer", "block1_conv1", "--weights", "nope"], "unknown weights 'nope'"
    )
    _fails(capsys, ["info", str(notatlas)], "not a vizjax atlas")
    _fails(
        capsys,
        [
            "render",
            "--layer",
            "block1_pool",
            "--filter",
            "0",
            "--out",
            str(tmp_path / "x.png"),
            *SMALL,
        ],
        "pooling layer",
    )
    assert not Path(out).exists()


def _ok(command: str, *paths) -> None:
    """Run ``vizjax`` with the words of ``command`` followed by ``paths``; it must succeed."""
    assert main([*command.split(), *map(str, paths)]) == 0


def test_atlas_grid_render_info(tiny_weights, tmp_path, capsys):
    out = tmp_path / "a.h5"
    _ok(
        "atlas --weights tiny-vgg16 --recipe classic --layer block1_conv1 --filters 0:6 --size 32 "
        "--steps 3 --quiet --out",
        out,
    )
    _ok("grid --layer block1_conv1 --filters 0:6 --cols 4 --out", tmp_path / "g.png", out)
    with Image.open(tmp_path / "g.png") as im:  # 4 columns, 2 rows, 2 px padding, label strips
        assert im.size == (4 * 34 + 2, 2 * (32 + LABEL_H + 2) + 2)
    _ok(
        "render --weights tiny-vgg16 --recipe classic --layer block1_conv1 --filter 3 --size 40 "
        "--steps 2 --out",
        tmp_path / "r.png",
    )
    with Image.open(tmp_path / "r.png") as im:
        assert im.size == (40, 40) and im.mode == "RGB"
    capsys.readouterr()
    _ok("info", out)
    assert "block1_conv1: 6/6 requested filters done" in capsys.readouterr().out
    _ok("gallery --out", tmp_path / "g" / "index.html", out)
    assert (tmp_path / "g" / "index.html").read_text().count("<img") == 6
    # Rendering one filter gives the atlas row's image (same config, same start).
    with open_atlas(out) as a:
        row = a.layers["block1_conv1"].image(3)
    _ok(
        "render --weights tiny-vgg16 --recipe classic --layer block1_conv1 --filter 3 --size 32 "
        "--steps 3 --quiet --out",
        tmp_path / "r3.png",
    )
    # The atlas ran several filters per program (whole target layer), render one (its channel
    # only): the same math with another summation order, so a display value may round to the
    # neighbouring uint8 level.
    rendered = np.asarray(Image.open(tmp_path / "r3.png")).astype(int)
    assert np.abs(rendered - row).max() <= 1
    assert np.mean(rendered != row) < 0.01


RESUME = [
    "atlas",
    *TINY,
    "--recipe",
    "classic",
    "--layer",
    "block2_conv2",
    "--filters",
    "0:8",
    "--size",
    "48",
    "--steps",
    "8",
    "--batch",
    "1",
    "--quiet",
]


#: The CLI in a child that stops itself (SIGSTOP) when its Nth chunk's data is synced, before it
#: is marked done (so N - 1 chunks are committed): on the tiny network a run is over before a
#: parent polling the file could catch it mid-run.
STOP_AFTER = r"""
import os, signal, sys
import vizjax.durable
n, seen = int(sys.argv[1]), []
def fault(point):
    if point == "chunk.synced":
        seen.append(point)
        if len(seen) == n:
            os.kill(os.getpid(), signal.SIGSTOP)
vizjax.durable._fault = fault
from vizjax.cli import main
sys.exit(main(sys.argv[2:]))
"""


def _stopped(pid: int) -> bool:
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()[0] == "T"


# Slow (scripts/test.sh --all, CI): by default, tests/test_faults.py kills a CLI run with -9 and
# resumes it, and tests/test_atlas.py::test_second_writer_refused refuses a second writer.
@pytest.mark.slow
def test_kill_9_then_resume_equals_uninterrupted_and_second_writer_is_refused(
    tiny_weights, tmp_path, capsys
):
    out = tmp_path / "a.h5"
    proc = subprocess.Popen(
        [sys.executable, "-c", STOP_AFTER, "2", *RESUME, "--out", str(out)],
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 120
        while not _stopped(proc.pid):  # frozen mid-run: it still holds the writer lock
            assert proc.poll() is None, "the run finished before it could be stopped"
            assert time.monotonic() < deadline
            time.sleep(0.02)
        _fails(capsys, [*RESUME, "--out", str(out)], "being written by another process")
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    finally:
        proc.kill()
    assert proc.returncode == -signal.SIGKILL
    with open_atlas(out) as a:  # readable right after the kill
        assert len(a.layers["block2_conv2"].completed()) == 4  # one chunk of 4 (4 devices)
    done = subprocess.run([*VIZJAX, *RESUME, "--out", str(out)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    ref = tmp_path / "ref.h5"
    assert main([*RESUME, "--out", str(ref)]) == 0
    with open_atlas(out) as a, open_atlas(ref) as b:
        la, lb = a.layers["block2_conv2"], b.layers["block2_conv2"]
        assert sorted(la.completed().tolist()) == list(range(8))
        for f in range(8):
            i, j = la.row(f), lb.row(f)
            np.testing.assert_allclose(la.raw[i], lb.raw[j], rtol=1e-6)
            np.testing.assert_array_equal(la.objective[i], lb.objective[j])
    assert not list(tmp_path.glob("a.h5.tmp-*")) and not list(
        data_dir(tmp_path / "a.h5").glob(".tmp-*")
    )


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_under_jax_distributed_equal_one_process(tiny_weights, tmp_path):
    args = [
        "atlas",
        *TINY,
        "--recipe",
        "classic",
        "--layer",
        "block1_conv2",
        "--filters",
        "0:7",
        "--quiet",
        "--size",
        "32",
        "--steps",
        "3",
    ]
    port = _free_port()
    out = tmp_path / "multi.h5"
    procs = [
        subprocess.Popen(
            [
                *VIZJAX,
                *args,
                "--out",
                str(out),
                "--coordinator",
                f"127.0.0.1:{port}",
                "--num-processes",
                "2",
                "--process-id",
                str(i),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(2)
    ]
    for p in procs:
        _, err = p.communicate(timeout=240)
        assert p.returncode == 0, err[-2000:]
    single = tmp_path / "single.h5"
    assert main([*args, "--out", str(single)]) == 0
    with open_atlas(out) as a, open_atlas(single) as b:
        la, lb = a.layers["block1_conv2"], b.layers["block1_conv2"]
        assert sorted(la.completed().tolist()) == list(range(7))  # merge keeps part order
        for f in range(7):
            np.testing.assert_allclose(la.raw[la.row(f)], lb.raw[lb.row(f)], rtol=1e-5)
            np.testing.assert_allclose(la.objective[la.row(f)], lb.objective[lb.row(f)], rtol=1e-5)
    # Each process wrote its own share into its own part.
    for i, share in enumerate(([0, 2, 4, 6], [1, 3, 5])):
        with open_atlas(tmp_path / f"multi.part-{i + 1}-of-2.h5") as part:
            assert sorted(part.layers["block1_conv2"].completed().tolist()) == share


def test_python_dash_m_and_version():
    r = subprocess.run([*VIZJAX, "--version"], capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout.startswith("vizjax ")


def test_start_image_is_identified_by_content_not_path(tiny_weights, tmp_path, capsys):
    pixels = np.random.default_rng(0).integers(0, 255, (32, 40, 3), np.uint8)
    for name in ("a.png", "b.png"):
        Image.fromarray(pixels).save(tmp_path / name)
    Image.fromarray(255 - pixels).save(tmp_path / "other.png")
    out = str(tmp_path / "init.h5")
    args = [
        "atlas",
        *TINY,
        "--recipe",
        "classic",
        "--layer",
        "block1_conv1",
        "--filters",
        "0:2",
        "--steps",
        "2",
        "--quiet",
        "--out",
        out,
    ]
    assert main([*args, "--init", str(tmp_path / "a.png")]) == 0
    with open_atlas(out) as a:
        assert a.layers["block1_conv1"].image_shape == (32, 40)  # the start image's own size
    assert main([*args, "--init", str(tmp_path / "b.png")]) == 0  # same picture, other path
    _fails(capsys, [*args, "--init", str(tmp_path / "other.png")], "init_sha256")


def test_dtype_auto_is_bfloat16_on_accelerators_float32_on_cpu_and_a_resumed_atlas_own(
    tiny_weights, tmp_path, monkeypatch
):
    import jax

    from vizjax import cli
    from vizjax.engine.execution import default_dtype

    assert (default_dtype("cpu"), default_dtype("gpu"), default_dtype("tpu")) == (
        "float32",
        "bfloat16",
        "bfloat16",
    )
    out = tmp_path / "a.h5"
    args = cli.build_parser().parse_args(["atlas", "--out", str(out), "--layer", "block1_conv1"])
    assert args.dtype == "auto" and cli._execution(args).dtype == "float32"  # this CPU
    monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
    assert cli._execution(args).dtype == "bfloat16"
    explicit = ["atlas", "--out", str(out), "--dtype", "float32"]
    assert cli._execution(cli.build_parser().parse_args(explicit)).dtype == "float32"
    # An atlas made in float32 (on a CPU) and resumed on a "GPU" with auto keeps float32: the
    # run resumes instead of being refused as another run.
    monkeypatch.undo()
    assert (
        main(["atlas", "--out", str(out), "--layer", "block1_conv1", "--filters", "0:2", *SMALL])
        == 0
    )
    monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
    assert cli._execution(args).dtype == "float32"
    with open_atlas(out) as a:
        assert a.config["execution"]["dtype"] == "float32"


def test_a_reader_that_leaves_early_is_not_an_error(tiny_weights):
    # `vizjax layers | head -1`: the pipe closes before vizjax writes (its read end is closed at
    # once here, so the first write fails with EPIPE): no traceback, exit 0.
    p = subprocess.Popen(
        [*VIZJAX, "layers", *TINY], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    p.stdout.close()
    err = p.stderr.read()
    assert p.wait(timeout=120) == 0, err
    assert "Traceback" not in err and "BrokenPipe" not in err, err
