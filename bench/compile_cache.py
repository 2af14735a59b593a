"""Compile time is user time: the same CLI command in two fresh processes, with the persistent
compilation cache (vizjax's default) and without it.

Plain script (not a test). Each run is a new Python process that calls ``vizjax.cli.main`` and
counts, through ``jax.monitoring``, the seconds spent tracing, lowering and compiling (a cache
hit's "compile" is the time to read the executable back) and the cache's hits and misses::

    python -m bench.compile_cache                       # block5_conv1, 8 filters, 128 px, classic
    python -m bench.compile_cache -- atlas --recipe classic --layer block3_conv3 --filters 0:4 --size 64

The cache lives in a fresh temporary directory (the user's own cache is not touched); every run
writes a fresh atlas. Prints a Markdown table and appends JSON lines to bench/results/.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
DEFAULT_COMMAND = (
    "atlas --recipe classic --layer block5_conv1 --filters 0:8 --size 128 --quiet".split()
)
EVENTS = {
    "trace_s": "/jax/core/compile/jaxpr_trace_duration",
    "lower_s": "/jax/core/compile/jaxpr_to_mlir_module_duration",
    "compile_s": "/jax/core/compile/backend_compile_duration",
    "saved_s": "/jax/compilation_cache/compile_time_saved_sec",
}


def child(stats: str, argv: list[str]) -> int:
    """Run ``vizjax argv`` in this process, then write what jax.monitoring saw to ``stats``."""
    from collections import Counter, defaultdict

    import jax.monitoring as monitoring

    durations: defaultdict[str, float] = defaultdict(float)
    events: Counter[str] = Counter()

    def on_duration(event: str, duration: float, **_: object) -> None:
        durations[event] += duration

    monitoring.register_event_duration_secs_listener(on_duration)
    monitoring.register_event_listener(lambda event, **_: events.update([event]))
    from vizjax.cli import main

    t = time.perf_counter()
    rc = main(argv)
    wall = time.perf_counter() - t
    out = {k: round(durations[e], 3) for k, e in EVENTS.items()}
    out.update(
        wall_s=round(wall, 3),
        rc=rc,
        cache_hits=events["/jax/compilation_cache/cache_hits"],
        cache_misses=events["/jax/compilation_cache/cache_misses"],
    )
    Path(stats).write_text(json.dumps(out))
    return rc


def run_once(argv: list[str], cache: str, out: Path) -> dict:
    """One fresh process; ``cache`` is VIZJAX_COMPILATION_CACHE's value."""
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as f:
        stats = f.name
    env = {**os.environ, "VIZJAX_COMPILATION_CACHE": cache}
    env.pop("JAX_COMPILATION_CACHE_DIR", None)
    cmd = [sys.executable, __file__, "--child", stats, "--", *argv, "--out", str(out)]
    t = time.perf_counter()
    proc = subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True, check=False)
    process_s = time.perf_counter() - t
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stderr[-3000:]}")
    res = json.loads(Path(stats).read_text())
    os.unlink(stats)
    return {**res, "process_s": round(process_s, 3)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--child", help=argparse.SUPPRESS)
    p.add_argument("command", nargs="*", help="vizjax arguments (after --), without --out")
    args = p.parse_args(argv)
    if args.child:
        return child(args.child, args.command)
    command = args.command or DEFAULT_COMMAND

    from bench.report import Log, machine_info, results_path

    info = machine_info(argv)
    log = Log(results_path(info), info)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        cache = Path(tmp) / "cache"
        runs = [("cache on, first process", str(cache)), ("cache on, second process", str(cache))]
        runs.append(("cache off", "0"))
        for i, (label, value) in enumerate(runs):
            r = run_once(command, value, Path(tmp) / f"atlas{i}.h5")
            size = sum(f.stat().st_size for f in cache.glob("*")) if cache.is_dir() else 0
            n = len(list(cache.glob("*"))) if cache.is_dir() else 0
            r.update(run=label, cache_files=n, cache_bytes=size)
            log.emit({"table": "compile_cache", "vizjax_command": " ".join(command), **r})
            rows.append(r)
    print(f"# {info['cpu_model']} ({info['platform']}), jax {info['jax']}, {info['date']}")
    print(f"# vizjax {' '.join(command)} --out NEW.h5\n")
    print(
        "| run | process s | trace s | lower s | compile s | cache hits | misses | "
        "cache files / MB |\n|---|---|---|---|---|---|---|---|"
    )
    for r in rows:
        print(
            f"| {r['run']} | {r['process_s']:.1f} | {r['trace_s']:.1f} | {r['lower_s']:.1f} | "
            f"{r['compile_s']:.1f} | {r['cache_hits']} | {r['cache_misses']} | "
            f"{r['cache_files']} / {r['cache_bytes'] / 2**20:.1f} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
