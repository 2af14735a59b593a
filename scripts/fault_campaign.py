"""Fault campaign: SIGKILL a multi-layer chunked ``vizjax atlas`` run at seeded random moments,
resume each, and compare every resumed atlas with an uninterrupted run.

Moments are spread over (1) the writer's named steps (:func:`vizjax.durable._fault`: segment
creation, row data, fsync, done bytes, index rewrites), chosen as "the n-th time the run passes
point P" with n drawn from how often an uninterrupted run passes it; (2) a delay drawn over the
run's wall time (compilation, ascent, inside system calls); (3) the merge of a 2-process
``jax.distributed`` run (process 0 killed while linking parts or writing the merged index; the
other process, left waiting at the barrier, is killed too). After each kill the atlas (and each
part) must open with ``open_atlas``; the same command then resumes and must finish with every
filter equal (rtol 1e-5: chunks differ) to the uninterrupted run, leaving no temp files.

    .venv/bin/python scripts/fault_campaign.py [--kills 20] [--seed 0] [--dir DIR]

prints one line, e.g. ``20/20 resumed atlases equal the uninterrupted run; 0 unreadable`` and
exits 0 only if that is so. ``scripts/fault_campaign.sh`` runs it; ``pytest -m slow`` too.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

VIZJAX = [sys.executable, "-m", "vizjax"]
ARGS = [
    "atlas",
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
    "2",
    "--quiet",
]
LAYERS = ("block1_conv1", "block2_conv1")
POINTS = (
    "segment.created",
    "segment.renamed",
    "chunk.data",
    "chunk.synced",
    "chunk.done",
    "index.written",
    "index.renamed",
)
MERGE_POINTS = ("merge.linked", "merge.index")

#: A child that runs the CLI with a hook on the writer's named steps: it counts each point
#: (written to COUNTS as JSON at exit) and SIGKILLs itself at the NTH pass of POINT.
HOOKED = r"""
import atexit, json, os, signal, sys
import vizjax.atlas as A
import vizjax.durable
point, nth, counts_path = sys.argv[1], int(sys.argv[2]), sys.argv[3]
counts = {}
def fault(p):
    counts[p] = counts.get(p, 0) + 1
    if p == point and counts[p] == nth:
        os.kill(os.getpid(), signal.SIGKILL)
vizjax.durable._fault = fault
if counts_path != "-":
    atexit.register(lambda: open(counts_path, "w").write(json.dumps(counts)))
from vizjax.cli import main
sys.exit(main(sys.argv[4:]))
"""


def _hooked(point: str, nth: int, argv: list[str], counts: str = "-", **kw) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", HOOKED, point, str(nth), counts, *argv],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        **kw,
    )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _distributed(out: Path, port: int, pid: int) -> list[str]:
    return [*ARGS, "--out", str(out), "--coordinator", f"127.0.0.1:{port}"] + [
        "--num-processes",
        "2",
        "--process-id",
        str(pid),
    ]


def load(out: Path) -> dict[str, dict[int, tuple[np.ndarray, np.ndarray]]]:
    """``{layer: {filter: (raw, objective)}}`` of the done rows (raises if unreadable)."""
    from vizjax.atlas import open_atlas

    with open_atlas(out) as a:
        got = {}
        for name, layer in a.layers.items():
            rows = np.flatnonzero(layer.done)
            raw, obj = layer.raw[rows], layer.objective[rows]
            got[name] = {int(layer.filters[r]): (raw[i], obj[i]) for i, r in enumerate(rows)}
        return got


def equal(got: dict, want: dict) -> str:
    """'' if ``got`` has every filter of ``want`` with equal values, else what differs."""
    for layer, rows in want.items():
        have = got.get(layer, {})
        if sorted(have) != sorted(rows):
            return f"{layer}: filters {sorted(have)} vs {sorted(rows)}"
        for f, (raw, obj) in rows.items():
            r, o = have[f]
            if not (
                np.allclose(r, raw, rtol=1e-5, atol=1e-5 * np.abs(raw).max())
                and np.allclose(o, obj, rtol=1e-5, atol=1e-6)
            ):
                return f"{layer} filter {f} differs"
    return ""


def readable(*paths: Path) -> bool:
    from vizjax.atlas import open_atlas

    for p in paths:
        if p.exists():
            try:
                open_atlas(p).close()
            except Exception:
                return False
    return True


def leftovers(folder: Path) -> list[str]:
    return [str(p) for p in folder.rglob("*") if ".tmp-" in p.name]


def run_campaign(kills: int = 20, seed: int = 0, workdir: Path | None = None) -> dict:
    """Run the campaign; returns counts and one ``line`` summarizing it."""
    rng = random.Random(seed)
    work = Path(workdir or tempfile.mkdtemp(prefix="vizjax-faults-"))
    work.mkdir(parents=True, exist_ok=True)
    # The uninterrupted run, counting how often it passes each named point, and its duration.
    ref = work / "ref" / "a.h5"
    ref.parent.mkdir(exist_ok=True)
    t0 = time.monotonic()
    p = _hooked("none", 0, [*ARGS, "--out", str(ref)], counts=str(work / "counts.json"))
    _, err = p.communicate(timeout=600)
    if p.returncode:
        raise RuntimeError(f"the uninterrupted run failed: {err[-2000:]}")
    duration = time.monotonic() - t0
    counts = json.loads((work / "counts.json").read_text())
    want = load(ref)

    # The plan: mostly writer points (weighted by how much happens there), some timed kills,
    # some during a 2-process merge.
    plan: list[tuple[str, str, float]] = []
    n_merge, n_time = max(1, kills // 5), max(1, kills // 5)
    for _ in range(n_merge):  # each part's segments are linked (2 parts x 2 layers), then the index
        point = rng.choice(MERGE_POINTS)
        plan.append(("merge", point, rng.randint(1, 4) if point == "merge.linked" else 1))
    for _ in range(n_time):
        plan.append(("time", "", rng.uniform(0.3, 0.95) * duration))
    while len(plan) < kills:
        point = rng.choice([q for q in POINTS if counts.get(q)])
        plan.append(("point", point, rng.randint(1, counts[point])))
    rng.shuffle(plan)

    results = {"equal": 0, "unreadable": 0, "not_killed": 0, "failures": []}
    for i, (kind, point, when) in enumerate(plan):
        case = work / f"kill{i:02d}"
        shutil.rmtree(case, ignore_errors=True)
        case.mkdir()
        out = case / "a.h5"
        what = f"#{i} {kind} {point} {when:.3g}"
        if kind == "merge":
            port = _free_port()
            p0 = _hooked(point, int(when), _distributed(out, port, 0))
            p1 = subprocess.Popen(
                [*VIZJAX, *_distributed(out, port, 1)],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            p0.wait(timeout=600)
            killed = p0.returncode == -signal.SIGKILL
            p1.kill()  # it waits at the barrier for process 0, which is gone
            p1.wait()
            parts = [out.with_name(f"a.part-{k}-of-2.h5") for k in (1, 2)]
            ok_read = readable(out, *parts)
            port = _free_port()
            resumes = [
                subprocess.Popen(
                    [*VIZJAX, *_distributed(out, port, k)],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.PIPE,
                    text=True,
                )
                for k in (0, 1)
            ]
            errs = [r.communicate(timeout=600)[1] for r in resumes]
            resumed_ok = [r.returncode for r in resumes] == [0, 0]
            why = " | ".join(e.strip()[-300:] for e in errs if e.strip())
        else:
            if kind == "time":
                proc = subprocess.Popen(
                    [*VIZJAX, *ARGS, "--out", str(out)],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
                try:
                    proc.wait(timeout=when)
                except subprocess.TimeoutExpired:
                    proc.send_signal(signal.SIGKILL)
                    proc.wait()
            else:
                proc = _hooked(point, int(when), [*ARGS, "--out", str(out)])
                proc.communicate(timeout=600)
            killed = proc.returncode == -signal.SIGKILL
            ok_read = readable(out)
            r = subprocess.run(
                [*VIZJAX, *ARGS, "--out", str(out)], capture_output=True, text=True, timeout=600
            )
            resumed_ok = r.returncode == 0
            why = r.stderr.strip()[-300:]
        results["not_killed"] += not killed
        results["unreadable"] += not ok_read
        diff = equal(load(out), want) if resumed_ok and readable(out) else f"resume failed: {why}"
        stale = leftovers(case)
        if not diff and not stale and ok_read:
            results["equal"] += 1
        else:
            results["failures"].append(f"{what}: {diff or ''} {stale or ''}".strip())
        print(f"  {what}: killed={killed} readable={ok_read} {diff or 'equal'}", file=sys.stderr)
    results["kills"] = len(plan)
    results["line"] = (
        f"{results['equal']}/{len(plan)} resumed atlases equal the uninterrupted run; "
        f"{results['unreadable']} unreadable"
        + (
            f"; {results['not_killed']} runs finished before their kill"
            if results["not_killed"]
            else ""
        )
    )
    return results


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--kills", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--dir", type=Path, default=None, help="work folder (default: a temp folder)")
    args = ap.parse_args()
    os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=2")
    res = run_campaign(args.kills, args.seed, args.dir)
    for f in res["failures"]:
        print(f"  FAILED {f}", file=sys.stderr)
    print(res["line"])
    return 0 if res["equal"] == res["kills"] and not res["unreadable"] else 1


if __name__ == "__main__":
    sys.exit(main())
