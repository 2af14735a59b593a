"""Faults of a real CLI run: kill -9 at named moments (and resume with another --batch), SIGINT and
SIGTERM, a full disk, progress lines for logs, --json, the atlas seen by a reader while a writer
resumes. The 20-kill campaign (scripts/fault_campaign.py) and a small one of the other writing
commands (scripts/fault_commands.py) run with ``-m slow``.

Runs are tiny (the tiny network's block1/block2, 32 px, 3 steps, classic recipe). A hook replaces
the writer's named steps (``vizjax.durable._fault``) in a child process to act at an exact moment.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from vizjax.atlas import AtlasWriter, open_atlas
from vizjax.cli import main

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parent.parent / "scripts"))
import atlas_scenarios as S  # noqa: E402
import fault_campaign  # noqa: E402
from tiny_network import ARGS as TINY  # noqa: E402

#: On the tiny network (tests/tiny_network.py): the faults are the writer's, not the model's.
RUN = [
    "atlas",
    *TINY,
    "--recipe",
    "classic",
    "--layer",
    "block1_conv1",
    "--layer",
    "block2_conv1",
    "--filters",
    "0:8",
    "--size",
    "32",
    "--steps",
    "3",
    "--batch",
    "4",  # a multiple of the test's 4 (fake) devices: 2 chunks per layer
    "--quiet",
]

#: The CLI in a child, doing ACTION ("kill" = SIGKILL, "TERM"/"INT" = that signal to itself,
#: "enospc" = every later os.pwrite fails with ENOSPC) at the NTH pass of the writer's POINT.
HOOK = r"""
import errno, os, signal, sys
import vizjax.atlas as A
import vizjax.durable
action, point, nth = sys.argv[1], sys.argv[2], int(sys.argv[3])
seen = {}
def full(*a, **k):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
def fault(p):
    seen[p] = seen.get(p, 0) + 1
    if p != point or seen[p] != nth:
        return
    if action == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    elif action == "enospc":
        os.pwrite = full
    else:
        os.kill(os.getpid(), getattr(signal, "SIG" + action))
vizjax.durable._fault = fault
from vizjax.cli import main
sys.exit(main(sys.argv[4:]))
"""


def hooked(action: str, point: str, nth: int, argv: list[str], **kw) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", HOOK, action, point, str(nth), *argv],
        capture_output=True,
        text=True,
        timeout=300,
        **kw,
    )


@pytest.fixture(scope="module")
def reference(tiny_weights, tmp_path_factory):
    """The uninterrupted run, as ``{layer: {filter: (raw, objective)}}``."""
    out = tmp_path_factory.mktemp("ref") / "a.h5"
    assert main([*RUN, "--out", str(out)]) == 0
    return fault_campaign.load(out)


#: The CLI in a child process.
VIZJAX = [sys.executable, "-m", "vizjax"]


def one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("vizjax: "), err
    assert "Traceback" not in err
    return lines[0]


def assert_equal_to(out: Path, reference) -> None:
    diff = fault_campaign.equal(fault_campaign.load(out), reference)
    assert not diff, diff
    assert not fault_campaign.leftovers(out.parent)


@pytest.mark.parametrize(
    ("point", "nth"),
    # chunk.data passes once per field (10) per chunk: the 11th is the 2nd chunk's first field.
    [
        ("chunk.data", 11),
        # Slow (scripts/test.sh --all, CI): two more moments; test_cli's kill -9 and the fault
        # campaign kill at others.
        pytest.param("chunk.done", 3, marks=pytest.mark.slow),
        pytest.param("index.written", 2, marks=pytest.mark.slow),
    ],
    ids=["mid-chunk data", "after layer 2's first chunk", "index rewrite of layer 2"],
)
def test_kill_9_then_resume_with_another_batch(tmp_path, reference, point, nth):
    """Killed at a named moment, the atlas opens; a rerun with a different --batch (how fast, not
    what) resumes instead of being refused as another run, and equals the uninterrupted run."""
    out = tmp_path / "a.h5"
    r = hooked("kill", point, nth, [*RUN, "--out", str(out)])
    assert r.returncode == -signal.SIGKILL, r.stderr
    assert fault_campaign.readable(out)
    resumed = [*RUN[:-3], "--batch", "8", "--quiet", "--out", str(out)]
    assert main(resumed) == 0
    assert_equal_to(out, reference)


@pytest.mark.parametrize("sig", ["TERM", pytest.param("INT", marks=pytest.mark.slow)])
def test_signal_stops_after_the_chunk_in_flight(tmp_path, reference, sig):
    out = tmp_path / "a.h5"
    # The signal arrives while the 3rd chunk (layer 2's first) is being committed, between its
    # data and its done bytes: that chunk is still committed, then the run stops.
    r = hooked(sig, "chunk.synced", 3, [*RUN, "--out", str(out), "--json"])
    assert r.returncode == 128 + getattr(signal, "SIG" + sig), r.stderr
    line = one_line(r.stderr)
    assert f"interrupted by SIG{sig}" in line and "12 filters computed" in line, line
    summary = json.loads(r.stdout)
    assert summary["interrupted"] == f"SIG{sig}"
    layers = summary["layers"]
    assert [(n, s["done"], s["computed"]) for n, s in layers.items()] == [
        ("block1_conv1", 8, 8),
        ("block2_conv1", 4, 4),
    ]
    with open_atlas(out) as a:
        done = {n: sorted(int(f) for f in layer.completed()) for n, layer in a.layers.items()}
    assert done == {"block1_conv1": list(range(8)), "block2_conv1": [0, 1, 2, 3]}
    assert main([*RUN, "--out", str(out)]) == 0  # the rerun resumes
    assert_equal_to(out, reference)


def test_full_disk_mid_chunk_keeps_committed_rows(tmp_path, reference):
    """ENOSPC from the first write of layer 2's 2nd chunk: one line, layer 1 and layer 2's first
    chunk kept, and a rerun (space freed) completes."""
    out = tmp_path / "a.h5"
    r = hooked("enospc", "chunk.done", 3, [*RUN, "--out", str(out)])
    assert r.returncode == 2, r.stderr
    line = one_line(r.stderr)
    assert "no space left" in line and "every row written before is kept" in line
    with open_atlas(out) as a:
        assert sorted(a.layers["block1_conv1"].completed().tolist()) == list(range(8))
        assert sorted(a.layers["block2_conv1"].completed().tolist()) == [0, 1, 2, 3]
    assert not fault_campaign.leftovers(tmp_path)
    assert main([*RUN, "--out", str(out)]) == 0
    assert_equal_to(out, reference)


@pytest.mark.slow
def test_file_size_limit_is_one_line(tmp_path):
    """RLIMIT_FSIZE (``ulimit -f``) smaller than layer 2's segment: one line, layer 1 kept.

    A run begins every layer (creates its segment) before computing any, so layer 1's rows are
    written by a first run; the limited run adds layer 2 and fails creating its segment."""
    out = tmp_path / "a.h5"
    # VGG16's own widths (not the tiny network's): the limit is set between their segment sizes.
    args = ["atlas", "--recipe", "classic", "--size", "16", "--steps", "2", "--batch", "64"]
    args += ["--quiet", "--out", str(out)]
    layer1 = ["--layer", "block1_conv1"]
    both = [*layer1, "--layer", "block2_conv1"]
    r = subprocess.run([*VIZJAX, *args, *layer1], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr

    # Layer 1's 64 rows fit (~0.27 MB), layer 2's 128 (~0.56 MB) do not. `ulimit -f` counts KiB
    # in bash. The limit is for the atlas: JAX's persistent compilation cache would hit it too.
    env = {**os.environ, "VIZJAX_COMPILATION_CACHE": "0"}
    env.pop("JAX_COMPILATION_CACHE_DIR", None)  # the tests' session cache (conftest)
    limited = ["bash", "-c", 'ulimit -f 390 && exec "$@"', "bash", *VIZJAX]
    r = subprocess.run(
        [*limited, *args, *both], capture_output=True, text=True, timeout=300, env=env
    )
    assert r.returncode == 2, r.stderr
    assert "no space left" in one_line(r.stderr)
    with open_atlas(out) as a:
        assert len(a.layers["block1_conv1"].completed()) == 64
        assert "block2_conv1" not in a.layers or not a.layers["block2_conv1"].done.any()
    assert not fault_campaign.leftovers(tmp_path)
    r = subprocess.run([*VIZJAX, *args, *both], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    with open_atlas(out) as a:
        assert len(a.layers["block1_conv1"].completed()) == 64
        assert len(a.layers["block2_conv1"].completed()) == 128


def test_progress_for_logs_quiet_and_json(tiny_weights, tmp_path, capsys, monkeypatch):
    """stderr not a terminal: progress lines (no carriage returns) with rate and ETA; --quiet
    prints nothing on stderr; --json prints the summary as JSON on stdout."""
    monkeypatch.setenv("VIZJAX_PROGRESS_SECONDS", "0")
    args = [*RUN[:-1], "--out", str(tmp_path / "a.h5")]
    assert main(args) == 0
    captured = capsys.readouterr()
    assert "\r" not in captured.err
    lines = captured.err.strip().splitlines()
    # One bar for the whole run: the current layer and its rank, all layers' filters.
    # The first line comes with an ETA: after a chunk that compiled nothing (the second).
    assert "block1_conv1 (layer 1/2): 8/16 filters, " in lines[0] and "filters/s, ETA " in lines[0]
    assert any(line.startswith("block2_conv1 (layer 2/2): 12/16 filters") for line in lines)
    assert any(line.startswith("2 layers: 16/16 filters") and "done in" in line for line in lines)
    assert captured.out.strip() == f"wrote {tmp_path / 'a.h5'}"
    assert main([*args, "--quiet"]) == 0
    assert capsys.readouterr().err == ""
    assert main([*args, "--json", "--quiet"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["interrupted"] is None and summary["out"] == str(tmp_path / "a.h5")
    assert summary["layers"]["block2_conv1"] == {
        "done": 8,
        "computed": 0,
        "zero_start_grad_computed": 0,
        "nonfinite_computed": 0,
        "seconds": summary["layers"]["block2_conv1"]["seconds"],
    }


def test_reader_sees_the_atlas_right_after_a_writer_reopens_it(tmp_path):
    """A second session reopens the atlas and adds rows: meanwhile a reader sees exactly the
    rows the first session committed, with their data, and the new rows as not done."""
    path = tmp_path / "a.h5"
    S.write_run(path, plan={"l1": (6, [0, 1, 2])})
    with AtlasWriter(path, S.ATTRS, S.CONFIG) as w:
        todo = w.begin_layer("l1", 6, [0, 1, 2, 3, 4, 5], S.HW, S.STEPS)
        assert todo == [3, 4, 5]
        with open_atlas(path) as a:  # the index was just rewritten with the new rows
            layer = a.layers["l1"]
            assert sorted(layer.completed().tolist()) == [0, 1, 2]
            assert sorted(layer.filters.tolist()) == [0, 1, 2, 3, 4, 5]
            for f in (0, 1, 2):
                want = S.expected_row("l1", f)
                np.testing.assert_array_equal(layer.raw[layer.row(f)], want["raw"])
                np.testing.assert_array_equal(layer.images[layer.row(f)], want["images"])
        w.write_chunk("l1", S.make_rows("l1", [3]))
        with open_atlas(path) as a:  # a committed chunk shows on reopening, before the writer ends
            layer = a.layers["l1"]
            assert sorted(layer.completed().tolist()) == [0, 1, 2, 3]
            np.testing.assert_array_equal(layer.raw[layer.row(3)], S.expected_row("l1", 3)["raw"])


@pytest.mark.slow
def test_fault_campaign_20_kills(tmp_path):
    res = fault_campaign.run_campaign(kills=20, seed=0, workdir=tmp_path)
    assert res["equal"] == res["kills"] == 20 and res["unreadable"] == 0, res
    assert os.path.exists(tmp_path / "ref" / "a.h5")


@pytest.mark.slow
def test_kill_9_of_merge_fidelity_exemplars_gallery_and_a_resumed_atlas(tiny_weights, tmp_path):
    """Issue 30: the small version of scripts/fault_commands.py, two kills per command (one at a
    named write step, one at a random time): after each kill the files as they were are intact
    (or the command's result is complete), and the rerun finishes with the reference result."""
    import fault_commands

    res = fault_commands.run_commands_campaign(kills=2, seed=1, workdir=tmp_path)
    assert not res["failures"], res["failures"]
    assert res["kills"] == 2 * len(fault_commands.COMMANDS)
    assert res["states"] == 2 * res["kills"]
