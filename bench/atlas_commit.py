"""What one atlas commit costs: seconds and extra disk, format v2 (in place) vs v1 (copy + rename).

A script, not a test. Synthetic data (never written anywhere but a temp folder, deleted at the
end): a layer of 256 and one of 4,096 filters at 224x224, K=1, every field of the schema. Each
atlas is first filled to half its rows, then ``--commits`` chunks of ``--chunk`` filters are
committed one by one and timed; the table gives the median. For v2 a commit is
``write_chunk`` (pwrite, fdatasync, done bytes, fdatasync); for v1 it is the old writer's
``write_chunk`` (journal) plus ``commit()`` (copy the file, apply, fsync, rename), taken from git
history (``git show <V1_COMMIT>:vizjax/atlas.py``). Extra disk is what a commit needs beyond the
finished atlas: v1's copy of the file, v2's temp files (none). Prints a Markdown table.

    python -m bench.atlas_commit                # both layers, v1 and v2
    python -m bench.atlas_commit --no-v1 --filters 256
"""

from __future__ import annotations

import argparse
import importlib.util
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import ModuleType, SimpleNamespace

import numpy as np

from vizjax import atlas, schema

#: The last commit with the format 1 writer.
V1_COMMIT = "c9ac794"
ROOT = Path(__file__).resolve().parent.parent
ATTRS = {"model": "vgg16", "weights": "bench", "weights_sha256": "0" * 64, "preprocessing": "{}"}
STEPS = 20
SIZE = (224, 224)


def rows(filters: np.ndarray, num_filters: int) -> dict[str, np.ndarray]:
    """Synthetic rows with every field: cheap to make, not constant (images differ per filter)."""
    n = len(filters)
    base = np.random.default_rng(0).integers(0, 256, (*SIZE, 3), np.uint8)
    images = np.stack([np.roll(base, int(f), axis=1) for f in filters])[:, None]
    rng = np.random.default_rng(int(filters[0]))
    # Optimized images are noisy floats: about as (in)compressible as this, for v1's gzip.
    raw = images.astype(np.float32) + rng.normal(0, 2, images.shape).astype(np.float32)
    return {
        "filters": filters,
        "images": images,
        "raw": raw,
        "objective": rng.standard_normal((n, STEPS + 1)).astype(np.float32),
        "zero_start_grad": np.zeros(n, bool),
        "nonfinite": np.zeros(n, bool),
        "final_activation": rng.random((n, 1)).astype(np.float32),
        "activation_matrix": rng.random((n, 1, num_filters)).astype(np.float32),
        "robustness": rng.random((n, 1)).astype(np.float32),
        "hf_energy": rng.random((n, 1)).astype(np.float32),
    }


def payload_bytes(n: int, num_filters: int) -> int:
    """Bytes of ``n`` rows of every schema field."""
    dims = {"K": 1, "H": SIZE[0], "W": SIZE[1], "D": 3, "T": STEPS, "C": num_filters}
    return n * sum(
        np.dtype(f.dtype).itemsize * int(np.prod(schema.row_shape(f, dims)))
        for f in schema.ROW_FIELDS
    )


def allocated(path: Path) -> int:
    """Bytes the file system allocated under ``path`` (sparse files count what is written)."""
    if path.is_file():
        return path.stat().st_blocks * 512
    if not path.exists():
        return 0
    return sum(p.stat().st_blocks * 512 for p in path.rglob("*") if p.is_file())


def bench_v2(folder: Path, num_filters: int, chunk: int, commits: int) -> dict:
    out = folder / "v2.h5"
    cfg = {"steps": STEPS}
    half = num_filters // 2
    times, extra = [], []
    with atlas.AtlasWriter(out, ATTRS, cfg) as w:
        w.begin_layer("layer", num_filters, range(num_filters), SIZE, STEPS)
        for i in range(0, half, 64):  # fill half the rows
            w.write_chunk("layer", rows(np.arange(i, min(i + 64, half)), num_filters))
        for c in range(commits):
            batch = rows(np.arange(half + c * chunk, half + (c + 1) * chunk), num_filters)
            before = allocated(out) + allocated(atlas.data_dir(out))
            t0 = time.perf_counter()
            w.write_chunk("layer", batch)
            times.append(time.perf_counter() - t0)
            after = allocated(out) + allocated(atlas.data_dir(out))
            # Whatever the commit allocated beyond the chunk's own rows (no temp files exist).
            extra.append(after - before - payload_bytes(chunk, num_filters))
    n_done = half + commits * chunk
    size = allocated(out) + allocated(atlas.data_dir(out))
    return {
        "seconds": statistics.median(times),
        "extra": statistics.median(extra),
        "size": size,
        "payload": payload_bytes(n_done, num_filters),
    }


def load_v1() -> ModuleType | None:
    """The format 1 writer from git history, or None where git or the commit is missing."""
    try:
        src = subprocess.run(
            ["git", "show", f"{V1_COMMIT}:vizjax/atlas.py"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        return None
    path = Path(tempfile.mkdtemp()) / "atlas_v1.py"
    path.write_text(src)
    spec = importlib.util.spec_from_file_location("atlas_v1", path)
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    sys.modules["atlas_v1"] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    shutil.rmtree(path.parent)
    return module


def bench_v1(v1: ModuleType, folder: Path, num_filters: int, chunk: int, commits: int) -> dict:
    out = folder / "v1.h5"
    cfg = {"steps": STEPS}
    half = num_filters // 2
    copies: list[int] = []
    replace = v1._replace_atomically

    def measured_replace(tmp: Path, path: Path) -> None:
        copies.append(tmp.stat().st_blocks * 512)  # the copy exists next to the atlas now
        replace(tmp, path)

    v1._replace_atomically = measured_replace

    def v1_rows(filters: np.ndarray) -> SimpleNamespace:
        r = rows(filters, num_filters)
        dead = r["zero_start_grad"]
        return SimpleNamespace(
            filters=filters,
            images=r["images"][:, 0],
            raw=r["raw"][:, 0],
            objective=r["objective"],
            dead=dead,
        )

    times = []
    with v1.AtlasWriter(out, ATTRS, cfg, commit_every=1e9) as w:
        w.begin_layer("layer", num_filters, range(num_filters), SIZE, STEPS)
        for i in range(0, half, 64):
            w.write_chunk("layer", v1_rows(np.arange(i, min(i + 64, half))))
        w.commit()
        for c in range(commits):
            t0 = time.perf_counter()
            w.write_chunk("layer", v1_rows(np.arange(half + c * chunk, half + (c + 1) * chunk)))
            w.commit()
            times.append(time.perf_counter() - t0)
    v1._replace_atomically = replace
    return {
        "seconds": statistics.median(times),
        "extra": statistics.median(copies[-commits:]),
        "size": allocated(out),
        "payload": None,
    }


def mb(n: float) -> str:
    return f"{n / 2**20:,.0f} MiB" if n >= 2**20 else f"{n / 2**10:,.0f} KiB"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--filters", type=int, nargs="+", default=[256, 4096])
    ap.add_argument("--chunk", type=int, default=8, help="filters per commit")
    ap.add_argument("--commits", type=int, default=5, help="commits timed (median)")
    ap.add_argument("--tmp", default=None, help="folder for the temp atlases (default: $TMPDIR)")
    ap.add_argument("--no-v1", action="store_true", help="skip the format 1 writer")
    args = ap.parse_args()

    need = 2 * payload_bytes(max(args.filters), max(args.filters))
    free = shutil.disk_usage(args.tmp or tempfile.gettempdir()).free
    if free < need:
        sys.exit(f"needs about {mb(need)} free in the temp folder, has {mb(free)} (--tmp)")
    v1 = None if args.no_v1 else load_v1()
    lines = [
        f"| filters (224 px, K=1) | format | commit of {args.chunk} filters, s (median of "
        f"{args.commits}) | extra disk per commit | atlas on disk at {{half}} + {args.commits * args.chunk} rows |",
        "|---|---|---|---|---|",
    ]
    lines[0] = lines[0].replace("{half}", "half")
    for n in args.filters:
        for fmt in (["v1"] if v1 else []) + ["v2"]:
            folder = Path(tempfile.mkdtemp(prefix="vizjax-bench-", dir=args.tmp))
            try:
                if fmt == "v2":
                    r = bench_v2(folder, n, args.chunk, args.commits)
                else:
                    r = bench_v1(v1, folder, n, args.chunk, args.commits)  # type: ignore[arg-type]
            finally:
                shutil.rmtree(folder, ignore_errors=True)
            size = mb(r["size"])
            if r["payload"]:
                size += f" ({100 * (r['size'] / r['payload'] - 1):+.1f}% vs the rows' bytes)"
            else:
                size += " (gzip)"
            if fmt == "v1":
                extra = f"{mb(r['extra'])} ({100 * r['extra'] / r['size']:.0f}% of the atlas)"
            else:  # allocated beyond the rows' own bytes (file system blocks), no temp files
                extra = f"{r['extra'] / 2**10:+,.0f} KiB"
            lines.append(f"| {n:,} | {fmt} | {r['seconds']:.3f} | {extra} | {size} |")
            print(lines[-1], file=sys.stderr, flush=True)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
