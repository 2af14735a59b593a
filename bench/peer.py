"""PyTorch peers in their own environments: the hand-written loop (the strongest in
shared/NOTES-measured.md) and Lucent's own render.

bench/peers/torch_loop.py runs in ``bench/.venv-torch`` (or ``$VIZJAX_TORCH_PYTHON``) on the same
weights (exported to .npz), start image and filters as vizjax; its final activations are compared.
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from bench.report import BENCH

TORCH_LOOP = BENCH / "peers" / "torch_loop.py"
#: Where bench/README.md says to make PyTorch's environment (git-ignored).
TORCH_VENV_PYTHON = BENCH / ".venv-torch" / "bin" / "python"
LUCENT_RENDER = BENCH / "peers" / "lucent_render.py"
#: Made by bench/peers/make_lucent_venv.sh (git-ignored).
LUCENT_VENV_PYTHON = BENCH / ".venv-lucent" / "bin" / "python"
#: Final activations of two implementations of the same work must agree within this.
AGREE_RTOL = 1e-3


def _interpreter(variable: str, default: Path) -> Path | None:
    """A peer's Python: ``$variable`` if it names an executable, else ``default`` if it is one."""
    env = os.environ.get(variable)
    for p in ([Path(env)] if env else []) + [default]:
        if p.is_file() and os.access(p, os.X_OK):
            return p
    return None


def torch_python() -> Path | None:
    """PyTorch's interpreter: $VIZJAX_TORCH_PYTHON, else bench/.venv-torch, else None."""
    return _interpreter("VIZJAX_TORCH_PYTHON", TORCH_VENV_PYTHON)


def export_weights(weights: Any, path: Path) -> None:
    """The weights and their preprocessing as the .npz torch_loop.py reads."""
    arrays = {
        f"{n}/{k}": np.asarray(v) for n, d in weights.params["params"].items() for k, v in d.items()
    }
    prep = weights.preprocessing
    arrays["preprocessing/mean"] = np.asarray(prep.mean, np.float32)
    arrays["preprocessing/std"] = np.asarray(prep.std, np.float32)
    arrays["preprocessing/scale"] = np.asarray(prep.scale, np.float32)
    arrays["preprocessing/bgr"] = np.asarray(prep.bgr)
    np.savez(path, **arrays)


def run_torch(
    python: Path, npz: Path, start: np.ndarray, layer: str, n: int, steps: int, repeats: int
) -> dict[str, Any]:
    """torch_loop.py in its own environment on the same weights, start image and filters."""
    with tempfile.TemporaryDirectory() as tmp:
        x0 = Path(tmp) / "start.npy"
        np.save(x0, np.asarray(start, np.float32))
        cmd = [str(python), str(TORCH_LOOP), "--weights", str(npz), "--start", str(x0)]
        cmd += ["--layer", layer, "--filters", str(n), "--steps", str(steps)]
        cmd += ["--repeats", str(repeats)]
        out = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"torch_loop.py failed ({out.returncode}): {out.stderr.strip()[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def agreement(a: np.ndarray, b: np.ndarray) -> float:
    """Largest relative difference of two implementations' final activations (0 where both 0)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    scale = np.maximum(np.maximum(np.abs(a), np.abs(b)), 1e-6 * max(np.abs(b).max(), 1e-30))
    return float(np.max(np.abs(a - b) / scale))


def lucent_python() -> Path | None:
    """Lucent's interpreter: $VIZJAX_LUCENT_PYTHON, else bench/.venv-lucent, else None."""
    return _interpreter("VIZJAX_LUCENT_PYTHON", LUCENT_VENV_PYTHON)


def run_lucent(
    python: Path,
    npz: Path,
    layer: str,
    filters: list[int],
    size: int,
    steps: int,
    seed: int = 0,
    batch: int = 0,
) -> dict[str, Any]:
    """Lucent's ``render_vis`` on ``filters`` of ``layer`` (bench/peers/lucent_render.py), in
    batches of ``batch`` filters (0: one batch): ``{"images" (n, H, W, 3) float32 in [0, 1],
    "seconds", "torch"}``."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "lucent.npz"
        cmd = [str(python), str(LUCENT_RENDER), "--weights", str(npz), "--layer", layer]
        cmd += ["--filters", ",".join(map(str, filters)), "--size", str(size)]
        cmd += [
            "--steps",
            str(steps),
            "--seed",
            str(seed),
            "--batch",
            str(batch),
            "--out",
            str(out),
        ]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise RuntimeError(f"lucent_render.py failed: {proc.stderr.strip()[-2000:]}")
        with np.load(out) as z:
            return {"images": z["images"], "seconds": float(z["seconds"]), "torch": str(z["torch"])}


def main(argv: list[str] | None = None) -> int:
    import argparse

    p = argparse.ArgumentParser(description="Export vizjax's default weights for the peers.")
    p.add_argument("--export", required=True, help="the .npz to write")
    args = p.parse_args(argv)
    from vizjax.models.weights import load_weights

    export_weights(load_weights(), Path(args.export))
    print(f"wrote {args.export}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
