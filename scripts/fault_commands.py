"""Fault campaign of the commands that change files an atlas already has: SIGKILL ``merge`` (into
an existing atlas), ``fidelity --force``, ``exemplars``, ``gallery`` (over an existing site) and a
resumed ``atlas`` at seeded moments, check what the kill left, rerun, check the result.

Each command starts from the same files (built once, uninterrupted: atlas A with block1_conv1,
atlas B of the same run with block2_conv1, a folder of images, A's gallery) and has a reference
result (the command run once without a kill). Kill moments are drawn, per command, from (1) the
named write steps it passes (:func:`vizjax.durable.fault`: segment and chunk writes, index
rewrites, merge links, exemplar files, every gallery file, every atomically written file), as
"the n-th pass of point P", n drawn from how often the reference run passes it, and (2) a delay
drawn over the reference run's wall time. After each kill, the state is checked:

- every input atlas opens and holds the rows it held before (merge: the target holds its old
  rows or the merged ones, nothing in between); the gallery's files are each whole (every PNG
  decodes, every page ends with ``</html>``);

then the same command is rerun and must exit 0 with the reference result (rows, measures,
exemplars, a site whose every link resolves), leaving no temp files. Runs on the tests' tiny
network (tests/tiny_network.py)::

    .venv/bin/python scripts/fault_commands.py [--kills 6] [--seed 0] [--dir DIR]

``--kills`` per command. Prints ``K kills (P at named points, T at random times): S states
checked, all good`` and exits 0 only if every state and every rerun was right.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parent.parent / "tests"))
from fault_campaign import HOOKED, equal, leftovers, load  # noqa: E402

COMMANDS = ("merge", "fidelity", "exemplars", "gallery", "atlas")
RUN = ["--recipe", "classic", "--filters", "0:8", "--size", "32", "--steps", "3", "--batch", "2"]


def _vizjax(argv: list[str], point: str = "none", nth: int = 0, counts: str = "-", **kw):
    return subprocess.Popen(
        [sys.executable, "-c", HOOKED, point, str(nth), counts, *argv],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        **kw,
    )


def _atlas_argv(out: Path, *layers: str) -> list[str]:
    return ["atlas", "--weights", "tiny-vgg16", *RUN, "--out", str(out), "--quiet"] + [
        a for layer in layers for a in ("--layer", layer)
    ]


def argv_of(command: str, case: Path) -> list[str]:
    """The command line of ``command`` in the case folder ``case`` (holding the start files)."""
    a = case / "a.h5"
    return {
        "merge": ["merge", str(case / "other.h5"), str(a)],
        "fidelity": ["fidelity", str(a), "--force", "--batch", "2", "--quiet"],
        "exemplars": [
            "exemplars",
            str(a),
            "--images",
            str(case.parent / "images"),
            "--input-size",
            "32",
            "--batch",
            "2",
            "--top",
            "3",
            "--quiet",
        ],
        "gallery": ["gallery", str(a), "--out", str(case / "site"), "--quiet"],
        "atlas": _atlas_argv(a, "block1_conv1", "block2_conv1"),
    }[command]


def _copy_atlas(src: Path, dst: Path) -> None:
    from vizjax.atlas import data_dir

    shutil.copy2(src, dst)
    folder = data_dir(src)
    shutil.copytree(folder, dst.parent / folder.name, symlinks=True)


def prepare(work: Path) -> Path:
    """The start files in ``work/start``: atlases A (block1_conv1) and B (block2_conv1, copied to
    other.h5 with its folder), images, A's gallery."""
    from PIL import Image

    start = work / "start"
    if (start / "done").exists():
        return start
    shutil.rmtree(start, ignore_errors=True)
    (start / "b").mkdir(parents=True)
    images = work / "images"
    images.mkdir(exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(6):
        Image.fromarray(rng.integers(0, 255, (40, 48, 3), dtype=np.uint8)).save(images / f"{i}.png")
    for argv in (
        _atlas_argv(start / "a.h5", "block1_conv1"),
        _atlas_argv(start / "b" / "a.h5", "block2_conv1"),
        ["gallery", str(start / "a.h5"), "--out", str(start / "site"), "--quiet"],
    ):
        p = _vizjax(argv)
        _, err = p.communicate(timeout=900)
        if p.returncode:
            raise RuntimeError(f"{argv[0]} failed while preparing: {err[-2000:]}")
    _copy_atlas(start / "b" / "a.h5", start / "other.h5")
    (start / "done").write_text("")
    return start


def new_case(start: Path, case: Path) -> None:
    shutil.rmtree(case, ignore_errors=True)
    shutil.copytree(start, case, symlinks=True)


# -- what a command's files hold -------------------------------------------------------------


def measures(path: Path) -> dict:
    from vizjax.atlas import open_atlas

    with open_atlas(path) as a:
        return {
            n: {k: np.asarray(v) for k, v in lay.fidelity.items()} for n, lay in a.layers.items()
        }


def exemplar_table(path: Path) -> dict:
    from vizjax.atlas import open_atlas

    out = {}
    with open_atlas(path) as a:
        for name, layer in a.layers.items():
            for f in layer.completed():
                ex = layer.exemplars(int(f))
                if ex:
                    out[(name, int(f))] = (list(ex["paths"]), np.asarray(ex["activation"]))
    return out


def site_whole(site: Path) -> str:
    """'' if every file of the site is whole (PNGs decode, pages end with </html>)."""
    from PIL import Image

    if not site.exists():
        return ""
    for p in site.rglob("*"):
        if ".tmp-" in p.name or not p.is_file():
            continue
        if p.suffix == ".png":
            try:
                with Image.open(p) as im:
                    im.load()
            except Exception as e:
                return f"{p.relative_to(site)} does not decode ({e})"
        elif p.suffix == ".html" and not p.read_text(errors="replace").rstrip().endswith("</html>"):
            return f"{p.relative_to(site)} is cut short"
    return ""


def site_complete(site: Path) -> str:
    """'' if every link of every page resolves to a file."""
    from vizjax import gallery

    for page in site.rglob("*.html"):
        for _, url in gallery.page_links(page):
            if "://" not in url and not gallery.resolve(page, url).is_file():
                return f"{page.relative_to(site)} links {url}, which is missing"
    return ""


def _same_measures(got: dict, want: dict) -> str:
    for layer, table in want.items():
        for k, v in table.items():
            g = got.get(layer, {}).get(k)
            ok = g is not None and g.shape == v.shape
            if ok and v.dtype.kind == "f":
                ok = np.allclose(g, v, rtol=1e-4, atol=1e-5, equal_nan=True)
            elif ok:
                ok = np.array_equal(g, v)
            if not ok:
                return f"{layer} measure {k} differs"
    return ""


def _same_exemplars(got: dict, want: dict) -> str:
    if sorted(got) != sorted(want):
        return f"exemplars of {len(got)} filters, {len(want)} expected"
    for key, (paths, act) in want.items():
        if got[key][0] != paths or not np.allclose(got[key][1], act, rtol=1e-4, atol=1e-6):
            return f"exemplars of {key} differ"
    return ""


def check_after_kill(command: str, case: Path, start_rows: dict, result_rows: dict) -> str:
    """What the kill left: '' if good (the files as they were, or the command's result)."""
    try:
        a = load(case / "a.h5")
    except Exception as e:
        return f"a.h5 unreadable: {e}"
    # Every row it had, unchanged (a resumed atlas may hold more layers).
    diff = equal(a, start_rows["a"])
    if diff:
        return f"a.h5: {diff}"
    if command == "merge":
        try:
            other = load(case / "other.h5")
        except Exception as e:
            return f"other.h5 unreadable: {e}"
        if equal(other, start_rows["other"]) and equal(other, result_rows["other"]):
            return "other.h5 holds neither its old rows nor the merged ones"
    if command == "gallery":
        return site_whole(case / "site")
    return ""


def check_result(command: str, case: Path, want: dict) -> str:
    """The rerun's result against the reference run's."""
    diff = equal(load(case / "a.h5"), want["a"])
    if not diff and command == "merge":
        diff = equal(load(case / "other.h5"), want["other"])
    if not diff and command == "fidelity":
        diff = _same_measures(measures(case / "a.h5"), want["measures"])
    if not diff and command == "exemplars":
        diff = _same_exemplars(exemplar_table(case / "a.h5"), want["exemplars"])
    if not diff and command == "gallery":
        diff = site_whole(case / "site") or site_complete(case / "site")
    return diff


def result_of(command: str, case: Path) -> dict:
    out = {"a": load(case / "a.h5")}
    if command == "merge":
        out["other"] = load(case / "other.h5")
    if command == "fidelity":
        out["measures"] = measures(case / "a.h5")
    if command == "exemplars":
        out["exemplars"] = exemplar_table(case / "a.h5")
    return out


def run_commands_campaign(
    kills: int = 6, seed: int = 0, workdir: Path | None = None, commands=COMMANDS
) -> dict:
    """``kills`` per command; returns counts, failures and one ``line``."""
    rng = random.Random(seed)
    work = Path(workdir or tempfile.mkdtemp(prefix="vizjax-fault-commands-"))
    work.mkdir(parents=True, exist_ok=True)
    if not os.environ.get("VIZJAX_WEIGHTS_DIR"):
        import tiny_network

        os.environ["VIZJAX_WEIGHTS_DIR"] = str(work / "weights")
        tiny_network.write(work / "weights")
    start = prepare(work)
    start_rows = {"a": load(start / "a.h5"), "other": load(start / "other.h5")}
    res = {"kills": 0, "at_points": 0, "at_times": 0, "states": 0, "not_killed": 0}
    res["failures"] = []
    for command in commands:
        ref = work / f"ref-{command}"
        new_case(start, ref)
        t0 = time.monotonic()
        p = _vizjax(argv_of(command, ref), counts=str(work / f"counts-{command}.json"))
        _, err = p.communicate(timeout=900)
        duration = time.monotonic() - t0
        if p.returncode:
            raise RuntimeError(f"the uninterrupted {command} failed: {err[-2000:]}")
        counts = json.loads((work / f"counts-{command}.json").read_text())
        want = result_of(command, ref)
        points = [q for q in sorted(counts) if counts[q]]
        plan = []
        for i in range(kills):
            if points and i % 2 == 0:
                q = rng.choice(points)
                plan.append((q, rng.randint(1, counts[q])))
            else:
                plan.append(("time", rng.uniform(0.3, 0.98) * duration))
        for i, (point, when) in enumerate(plan):
            case = work / f"{command}-{i:02d}"
            new_case(start, case)
            what = f"{command} #{i} {point} {when:.3g}"
            if point == "time":
                proc = _vizjax(argv_of(command, case))
                try:
                    proc.wait(timeout=when)
                except subprocess.TimeoutExpired:
                    proc.send_signal(signal.SIGKILL)
                proc.communicate()
                res["at_times"] += 1
            else:
                proc = _vizjax(argv_of(command, case), point, int(when))
                proc.communicate(timeout=900)
                res["at_points"] += 1
            res["kills"] += 1
            killed = proc.returncode == -signal.SIGKILL
            res["not_killed"] += not killed
            problem = check_after_kill(command, case, start_rows, want)
            res["states"] += 1
            if not problem:
                r = _vizjax(argv_of(command, case))
                _, err = r.communicate(timeout=900)
                if r.returncode:
                    problem = f"rerun failed: {err.strip()[-300:]}"
                else:
                    problem = check_result(command, case, want)
                    stale = leftovers(case)
                    problem = problem or (f"left {stale}" if stale else "")
                res["states"] += 1
            print(f"  {what}: killed={killed} {problem or 'good'}", file=sys.stderr, flush=True)
            if problem:
                res["failures"].append(f"{what}: {problem}")
            else:
                shutil.rmtree(case, ignore_errors=True)
    res["line"] = (
        f"{res['kills']} kills ({res['at_points']} at named points, {res['at_times']} at random "
        f"times) of {', '.join(commands)}: {res['states']} states checked, "
        + (f"{len(res['failures'])} FAILED" if res["failures"] else "all good")
        + (f"; {res['not_killed']} runs finished before their kill" if res["not_killed"] else "")
    )
    return res


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--kills", type=int, default=6, help="kills per command (6)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--dir", type=Path, default=None, help="work folder (default: a temp folder)")
    ap.add_argument("--command", action="append", choices=COMMANDS, help="only these (repeatable)")
    args = ap.parse_args()
    res = run_commands_campaign(args.kills, args.seed, args.dir, tuple(args.command or COMMANDS))
    for f in res["failures"]:
        print(f"  FAILED {f}", file=sys.stderr)
    print(res["line"])
    return 1 if res["failures"] else 0


if __name__ == "__main__":
    sys.exit(main())
