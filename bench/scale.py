"""The reading side of a whole-model atlas: seconds, peak memory and sizes of ``vizjax info``,
``gallery``, ``grid``, ``fidelity`` and ``open_atlas(...).layers[...].to_xarray()`` on one atlas.

Build the atlas first (it is not written here: minutes to hours), for example all 4,224 filters
of VGG16 at the smallest size and steps::

    vizjax atlas --all-layers --size 32 --steps 2 --recipe classic --out /tmp/scale/vgg.h5
    vizjax exemplars /tmp/scale/vgg.h5 --images IMAGES --layer block5_conv3 --input-size 64

then::

    python -m bench.scale /tmp/scale/vgg.h5 --out bench/results/scale-DATE.jsonl

Each command runs in its own process under ``/usr/bin/time -v`` (wall seconds, peak resident
memory); the gallery's size on disk, its page count and its heaviest HTML page are measured after
it. One JSON line per command is appended to ``--out``. Timings depend on the machine's load:
the line records ``os.getloadavg()`` before each command, and the CPU model.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def timed(argv: list[str]) -> dict[str, Any]:
    """Run ``argv`` under ``/usr/bin/time -v``: exit status, wall seconds, peak RSS in MB."""
    load = os.getloadavg()[0]
    t0 = time.perf_counter()
    p = subprocess.run(["/usr/bin/time", "-v", *argv], capture_output=True, text=True)
    wall = time.perf_counter() - t0
    m = re.search(r"Maximum resident set size \(kbytes\): (\d+)", p.stderr)
    return {
        "argv": argv,
        "rc": p.returncode,
        "wall_s": round(wall, 2),
        "peak_rss_mb": round(int(m.group(1)) / 1024, 1) if m else None,
        "load_1min_before": round(load, 2),
        "stderr_tail": p.stderr.split("\tCommand being timed")[0][-300:] if p.returncode else "",
    }


def site_sizes(site: Path) -> dict[str, Any]:
    """Bytes on disk, file and page counts, and the heaviest HTML page (its bytes, its images
    and how many of them load lazily, and any inlined ``data:`` images)."""
    from vizjax import gallery

    files = [p for p in site.rglob("*") if p.is_file()]
    pages = [p for p in files if p.suffix == ".html"]
    heaviest = max(pages, key=lambda p: p.stat().st_size)
    text = heaviest.read_text(errors="replace")
    imgs = re.findall(r"<img\b[^>]*>", text)
    return {
        "site_bytes": sum(p.stat().st_size for p in files),
        "files": len(files),
        "pages": len(pages),
        "heaviest_page": str(heaviest.relative_to(site)),
        "heaviest_page_bytes": heaviest.stat().st_size,
        "heaviest_page_imgs": len(imgs),
        "heaviest_page_lazy_imgs": sum('loading="lazy"' in t for t in imgs),
        "data_uris": sum(p.read_text(errors="replace").count("data:image") for p in pages),
        # Everything, every lazy image scrolled into view.
        "heaviest_page_all_images_bytes": gallery.page_weight(heaviest)["total"],
    }


XARRAY = """
import sys, time
from vizjax.atlas import open_atlas
t = time.perf_counter()
with open_atlas(sys.argv[1]) as a:
    ds = a.layers[sys.argv[2]].to_xarray()
    n = sum(v.nbytes for v in ds.data_vars.values())
print(n, time.perf_counter() - t)
"""


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("atlas")
    p.add_argument("--out", required=True, help="JSON lines file to append to")
    p.add_argument("--layer", default="block5_conv3", help="layer for grid, fidelity, to_xarray")
    p.add_argument("--vizjax", default=shutil.which("vizjax") or "vizjax")
    p.add_argument("--skip", action="append", default=[], help="a step to leave out")
    args = p.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="vizjax-scale-"))
    base = {
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "cpu": cpu_model(),
        "host_cpus": os.cpu_count(),
        "atlas": args.atlas,
    }
    v, atlas, layer = args.vizjax, args.atlas, args.layer
    steps = {
        "info": [v, "info", atlas],
        "gallery": [v, "gallery", atlas, "--out", str(work / "site"), "--quiet"],
        "grid": [
            v,
            "grid",
            atlas,
            "--layer",
            layer,
            "--filters",
            "all",
            "--out",
            str(work / "g.png"),
        ],
        "fidelity": [v, "fidelity", atlas, "--layer", layer, "--force", "--quiet"],
        "to_xarray": [sys.executable, "-c", XARRAY, atlas, layer],
    }
    with open(args.out, "a") as out:
        for name, cmd in steps.items():
            if name in args.skip:
                continue
            row = {**base, "step": name, **timed(cmd)}
            if name == "gallery" and row["rc"] == 0:
                row.update(site_sizes(work / "site"))
            if name == "grid" and row["rc"] == 0:
                row["grid_png_bytes"] = (work / "g.png").stat().st_size
            row["argv"] = " ".join(Path(a).name if a == sys.executable else a for a in cmd)
            if name == "to_xarray":
                row["argv"] = f"python -c 'open_atlas(ATLAS).layers[{layer!r}].to_xarray()'"
            print(json.dumps(row), flush=True)
            out.write(json.dumps(row) + "\n")
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
