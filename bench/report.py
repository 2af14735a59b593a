"""What every benchmark reports with its figures: the machine, JSON lines, Markdown tables.

Every JSON line carries the device, CPU model, jax version, date, command and the share of the
CPUs other processes used while it was measured (the machines are shared: a figure taken on a
busy machine says so).
"""

from __future__ import annotations

import datetime as dt
import json
import math
import os
import platform
import re
import shlex
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

BENCH = Path(__file__).resolve().parent
RESULTS = BENCH / "results"


def cpu_model() -> str:
    """The host CPU's model name (/proc/cpuinfo, else lscpu, else platform)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
        for line in out.splitlines():
            if line.startswith("Model name:"):
                return line.split(":", 1)[1].strip()
    except (OSError, subprocess.SubprocessError):
        pass
    return platform.processor() or "unknown CPU"


def machine_info(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """What every JSON line carries: device, CPU model, jax version, date, load, command."""
    import jax

    devs = jax.local_devices()
    return {
        "device": devs[0].device_kind,
        "platform": devs[0].platform,
        "device_count": len(devs),
        "cpu_model": cpu_model(),
        "host_cpus": os.cpu_count(),
        "jax": jax.__version__,
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        # The 2-core machines are shared: a load above ~0.5 at the start means the figures are
        # suspect (other processes were running).
        "load1_at_start": round(os.getloadavg()[0], 2),
        "command": " ".join(shlex.quote(a) for a in (sys.argv[:1] + list(argv or sys.argv[1:]))),
        "compilation_cache": jax.config.jax_compilation_cache_dir or None,
    }


def device_label(info: dict[str, Any]) -> str:
    """``cpu-Intel_R_Xeon_R_Processor`` / ``gpu-NVIDIA_H100_80GB_HBM3``: the results file's name."""
    kind = info["cpu_model"] if info["platform"] == "cpu" else info["device"]
    safe = "".join(c if c.isalnum() else "_" for c in kind).strip("_")
    while "__" in safe:
        safe = safe.replace("__", "_")
    return f"{info['platform']}-{safe}"


def results_path(info: dict[str, Any]) -> Path:
    """``bench/results/<device>-<date>.jsonl``: where a run's JSON lines go by default."""
    return RESULTS / f"{device_label(info)}-{info['date'][:10]}.jsonl"


class OthersCpu:
    """How much of the machine other processes used since the last call, as a fraction of all
    its cores (Linux /proc/stat; None elsewhere). A figure taken while other processes ran is
    suspect: every JSON line carries this, and a table row measured above ~0.1 should be redone."""

    def __init__(self) -> None:
        self.tick = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
        self.last = self._read()

    def _read(self) -> tuple[float, float, float] | None:
        try:
            with open("/proc/stat") as f:
                v = [int(x) for x in f.readline().split()[1:]]
        except (OSError, ValueError):
            return None
        busy = (sum(v) - v[3] - v[4]) / self.tick  # all but idle and iowait
        t = os.times()  # this process and its waited-for children (the PyTorch peer)
        own = t.user + t.system + t.children_user + t.children_system
        return busy, own, time.monotonic()

    def since_last(self) -> float | None:
        now = self._read()
        last, self.last = self.last, now
        if now is None or last is None or now[2] - last[2] < 1e-3:
            return None
        others = (now[0] - last[0]) - (now[1] - last[1])
        return round(max(0.0, others) / ((now[2] - last[2]) * (os.cpu_count() or 1)), 3)


class Log:
    """Appends JSON lines (machine info in each, and the other processes' CPU share since the
    previous line) and collects them."""

    def __init__(self, path: Path, info: dict[str, Any]) -> None:
        self.path, self.info, self.rows = path, info, []
        self.others = OthersCpu()
        path.parent.mkdir(parents=True, exist_ok=True)

    def emit(self, row: dict[str, Any]) -> dict[str, Any]:
        row = {**row, "others_cpu": self.others.since_last()}
        self.rows.append(row)
        with self.path.open("a") as f:
            f.write(json.dumps({**self.info, **row}, default=_json_default) + "\n")
        return row


def measured(
    argv: Sequence[str] | None, out: str | None, run: Callable[[Log], Any]
) -> dict[str, Any]:
    """A bench script's frame: the machine's two header lines, ``run(log)`` into ``out`` (default
    :func:`results_path`), then how long it took and the load at the end. Returns the machine."""
    info = machine_info(argv)
    path = Path(out) if out else results_path(info)
    where = info["cpu_model"] if info["platform"] == "cpu" else info["device"]
    print(f"# {where} x{info['device_count']} ({info['platform']}), jax {info['jax']}")
    print(f"# {info['command']}")
    t = time.perf_counter()
    run(Log(path, info))
    print(
        f"\nthis run took {time.perf_counter() - t:.0f} s (load at the end "
        f"{os.getloadavg()[0]:.2f}); wrote {path}"
    )
    return info


def _json_default(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    return str(o)


def table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A Markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def fmt(x: float | None, digits: int = 2) -> str:
    """A number for a table cell; "–" for none or NaN."""
    return "–" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"


def busy(*rows: dict[str, Any]) -> str:
    """The largest share of the CPUs other processes used while these rows were measured."""
    v = [r["others_cpu"] for r in rows if r.get("others_cpu") is not None]
    return f"{max(v):.0%}" if v else "–"


def human(seconds: float) -> str:
    if math.isnan(seconds):
        return "–"
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    if seconds < 2 * 86400:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"


def cpu_reference(results: Path = RESULTS) -> dict[str, Any] | None:
    """What vizjax measured on this project's CPU, for "what would it take there" columns: the
    newest ``cpu-*.jsonl`` results file's median effective GFLOP/s of vizjax rows per recipe
    (``works`` and ``main`` rows are classic; ``recipes`` rows name theirs, block1 excluded: its
    small convolutions run at another rate) and its whole-model totals by (recipe, size).
    None if there is no such file."""
    dated = []
    for p in results.glob("cpu-*.jsonl"):
        m = re.search(r"\d{4}-\d{2}-\d{2}", p.name)
        if m:
            dated.append((m.group(0), p.name.endswith(f"{m.group(0)}.jsonl"), p))
    if not dated:
        return None
    path = max(dated)[2]  # the newest date; a file named by its date alone before a variant
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    rates: dict[str, list[float]] = {}
    whole: dict[tuple[str, int], float] = {}
    for r in rows:
        table_, layer = r.get("table"), str(r.get("layer", ""))
        if table_ == "whole_model_total" and r.get("way") == "vizjax":
            whole[str(r.get("recipe")), int(r.get("size", 0))] = float(r["total_s"])
        if "eff_gflops" not in r or layer.startswith("block1"):
            continue
        if table_ in ("works", "main") and r.get("way") == "vizjax":
            rates.setdefault("classic", []).append(float(r["eff_gflops"]))
        elif table_ == "recipes":
            rates.setdefault(str(r["recipe"]), []).append(float(r["eff_gflops"]))
    if not rates and not whole:
        return None
    first = next((r for r in rows if r.get("cpu_model")), {})
    return {
        "file": path.name,
        "cpu_model": first.get("cpu_model", "?"),
        "date": str(first.get("date", "?"))[:10],
        "gflops": {k: float(np.median(v)) for k, v in rates.items()},
        "whole_model_s": whole,
    }
