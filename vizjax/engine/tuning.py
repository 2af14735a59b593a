"""The tuning table: which execution settings this machine's CPU runs fastest, measured on the
machine itself and kept beside the compilation cache.

Today's rules were measured on the project's own 2-core CPUs (:func:`vizjax.engine.chunk
.cpu_filters_per_device`, Winograd on every CPU, float32 on every CPU); another CPU may prefer
otherwise. Like FFTW's planner or cuDNN's benchmark mode, the first run that needs a (model,
layer, size, recipe kind) may time a few candidates on the machine (:func:`search`: each compiled
and one segment of one chunk timed, :func:`time_layer`, the same timing as ``vizjax atlas
--plan``), keep the fastest in the table (:class:`Table`) and every later run uses it:

- the convolution algorithm, Winograd or XLA's own, or oneDNN's where it can run (for a generic
  model: its rewritten 3x3 convolutions, :mod:`vizjax.models.rewrite`, or none);
- the filters per device of a chunk: the rule's choice and its neighbours (half, double);
- bfloat16 instead of float32, only on a CPU with AMX's bfloat16 unit (``amx_bf16``): elsewhere
  XLA:CPU computes bfloat16 through float32 conversions, 2.4x slower; there, with oneDNN's
  convolutions (:mod:`vizjax.models.onednn`, the ``onednn`` extra installed),
  bfloat16 runs on the AMX tiles: 2-2.6x float32's step on a 2-core Sapphire Rapids.

:func:`decide` applies it to one layer, with the precedence: the settings a user gave explicitly
(``--conv``, ``--batch``, ``--dtype``) > the table > today's rules. When it measures
(``mode``): ``"now"`` always; ``"auto"`` (the default) only where the layer's planned work is long
enough that the measuring pays (:func:`pays_off`); ``"off"`` (or ``VIZJAX_TUNING=0``) never, and
the table is not read either. The table is keyed by the CPU (its model name and flags, hashed)
and the jax and jaxlib versions (:class:`Machine`): another CPU's or another jax's decisions are
kept in the file but never used. A damaged file is ignored with one ``vizjax:`` line and written
anew by the next decision.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import hashlib
import json
import math
import os
import platform as _platform
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import jax
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec

from vizjax.durable import write_atomically
from vizjax.engine import ascent, cost
from vizjax.engine.chunk import cpu_filters_per_device
from vizjax.engine.execution import (
    Execution,
    auto_segment,
    compilation_cache_dir,
)
from vizjax.engine.recipe import DEFAULT_SIZE, Recipe
from vizjax.errors import VizjaxError
from vizjax.models import onednn
from vizjax.models.generic import GenericModel
from vizjax.models.network import Network

#: ``0`` (or off/false/no) turns tuning off; ``now`` measures every layer; ``auto`` (the default).
ENV = "VIZJAX_TUNING"
MODES = ("auto", "now", "off")
#: Where each setting of a layer's decision came from.
SOURCES = ("flag", "table", "measured", "rule")
FORMAT = "vizjax-tuning"
VERSION = 1
#: A candidate replaces the one before it only when it is this much faster: timings of one
#: segment vary by a few percent, and the rule is the measured default of two CPUs.
MARGIN = 0.05
#: ``auto`` measures a layer when its estimated run time is at least this many times the
#: estimated cost of measuring it (the measuring then costs at most a tenth of the run, and the
#: table keeps the result for every later run).
PAYS_OFF = 10.0
#: The priors of that estimate, before anything is timed here: work per second (the deeper
#: layers ran 160-230 "GFLOP/s" of :mod:`vizjax.engine.cost`'s work on the 2-core Xeon) and
#: compile seconds per unit of :func:`vizjax.engine.cost.compile_weight` (6 s for block1_conv1's
#: 1.5, 51 s for block5_conv1's 11.5 on a loaded 2-core CPU). A faster CPU runs and compiles
#: faster alike, so their ratio, which decides, moves less than either.
ASSUMED_RATE = 2e11
COMPILE_SECONDS_PER_WEIGHT = 4.0

#: Steps timed when a recipe runs as one loop over all its steps (see :func:`time_layer`).
SAMPLE_STEPS = 8


def mode(flag: str | None = None) -> str:
    """The tuning mode: ``flag`` (``--tune``) if given, else ``$VIZJAX_TUNING`` (``0``, off,
    false or no: ``"off"``; ``now``; anything else empty or ``auto``, 1, on, yes: ``"auto"``)."""
    if flag is not None:
        if flag not in MODES:
            raise VizjaxError(f"--tune must be one of {', '.join(MODES)}, got {flag!r}")
        return flag
    value = os.environ.get(ENV, "").strip().lower()
    if value in ("0", "off", "false", "no"):
        return "off"
    if value == "now":
        return "now"
    if value in ("", "1", "auto", "on", "true", "yes"):
        return "auto"
    raise VizjaxError(f"{ENV} must be auto, now or off (0), got {os.environ[ENV]!r}")


# --------------------------------------------------------------------------------------------------
# The machine: what the table is keyed by.


@dataclasses.dataclass(frozen=True)
class Machine:
    """The CPU (model name and feature flags) and the jax that compiles for it."""

    cpu: str
    flags: frozenset[str]
    jax: str
    jaxlib: str

    @property
    def key(self) -> str:
        """``<sha256 of the CPU's model name and sorted flags, 16 hex>-jax<v>-jaxlib<v>``."""
        text = self.cpu + "\n" + " ".join(sorted(self.flags))
        return f"{hashlib.sha256(text.encode()).hexdigest()[:16]}-jax{self.jax}-jaxlib{self.jaxlib}"

    @property
    def bfloat16_unit(self) -> bool:
        """Whether the CPU multiplies bfloat16 matrices natively (Intel AMX)."""
        return "amx_bf16" in self.flags


def parse_cpuinfo(text: str) -> tuple[str, frozenset[str]]:
    """``(model name, flags)`` of the first processor in ``/proc/cpuinfo``'s text."""
    name, flags = "", frozenset[str]()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "model name" and not name:
            name = value.strip()
        elif key in ("flags", "Features") and not flags:  # x86; ARM says Features
            flags = frozenset(value.split())
    return name, flags


@functools.cache
def this_machine() -> Machine:
    """This machine (Linux ``/proc/cpuinfo``; elsewhere the processor name without flags)."""
    try:
        name, flags = parse_cpuinfo(Path("/proc/cpuinfo").read_text(errors="replace"))
    except OSError:
        name, flags = "", frozenset()
    import jaxlib

    return Machine(
        name or _platform.processor() or "unknown CPU",
        flags,
        jax.__version__,
        getattr(jaxlib, "__version__", "?"),
    )


def table_path() -> Path:
    """``tuning.json`` beside the compilation cache's folder (``~/.cache/vizjax/tuning.json``,
    or beside ``$VIZJAX_COMPILATION_CACHE``); the default place when that cache is off."""
    cache = compilation_cache_dir()
    if cache is None:
        base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
        cache = Path(base) / "vizjax" / "jax"
    return cache.parent / "tuning.json"


# --------------------------------------------------------------------------------------------------
# A decision and the table of decisions.


@dataclasses.dataclass(frozen=True)
class Choice:
    """One candidate: the convolution, the filters per device of a chunk, the compute dtype."""

    conv: str
    per_device: int
    dtype: str

    @property
    def label(self) -> str:
        return f"{self.conv}/{self.per_device}/{self.dtype}"

    def replace(self, **changes: Any) -> Choice:
        return dataclasses.replace(self, **changes)


@dataclasses.dataclass(frozen=True)
class Decision:
    """A layer's settings and where each came from (``source``: field -> one of
    :data:`SOURCES`), with the timings behind them where they were measured (ms per
    filter-step by candidate label) and the table entry's key."""

    choice: Choice
    source: Mapping[str, str]
    key: str
    timings: Mapping[str, float] = dataclasses.field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        c = self.choice
        out: dict[str, Any] = {"conv": c.conv, "per_device": c.per_device, "dtype": c.dtype}
        out.update(source=dict(self.source), key=self.key)
        if self.timings:
            out["ms_per_filter_step"] = {k: round(v, 3) for k, v in self.timings.items()}
        return out

    def with_dtype(self, dtype: str) -> Decision:
        """The decision with the run's one dtype (:func:`vizjax.run.tuned`): where that is not
        the one chosen, it is the rule's."""
        if dtype == self.choice.dtype:
            return self
        source = {**self.source, "dtype": "rule"}
        return dataclasses.replace(self, choice=self.choice.replace(dtype=dtype), source=source)


def origin(record: Mapping[str, Any]) -> str:
    """Where a decision's (:meth:`Decision.to_json`) convolution and chunk came from, for a
    plan's column: ``table:xla``, ``measured:winograd``, ``rule:winograd``, ``flag:xla``, or two
    sources joined (``flag/table:winograd``: ``--conv`` given, the chunk from the table)."""
    words = dict.fromkeys(record["source"][k] for k in ("conv", "per_device"))
    return f"{'/'.join(words)}:{record['conv']}"


def entry_key(
    network: Network | GenericModel, layer: str, size: Sequence[int], recipe: Recipe, devices: int
) -> str:
    """``vgg16:64.128.256.512.512/block3_conv3/128x128/lucent-1a2b3c4d/1dev``: the model (its
    family and widths; a generic model's architecture hash), layer, image size, recipe kind (its
    name and a hash of what shapes its program, steps and seed apart) and device count."""
    if isinstance(network, GenericModel):
        model = f"{network.name}:{network.architecture_hash()[:12]}"
    else:
        model = f"{network.name}:{'.'.join(map(str, network.widths))}"
    shape = recipe.program().replace(steps=1, size=None).to_json()
    kind = hashlib.sha256(json.dumps(shape, sort_keys=True).encode()).hexdigest()[:8]
    return f"{model}/{layer}/{size[0]}x{size[1]}/{recipe.name}-{kind}/{devices}dev"


def _say(message: str) -> None:
    print(message, file=sys.stderr)


@dataclasses.dataclass(frozen=True)
class Table:
    """The tuning file's content (``data``: every machine's entries) as read from ``path``, and
    this ``machine``'s entries (:meth:`entries`)."""

    path: Path
    machine: Machine
    data: Mapping[str, Any]

    @classmethod
    def load(
        cls, path: Path | None = None, machine: Machine | None = None, warn: Callable = _say
    ) -> Table:
        """The table at ``path`` (default :func:`table_path`); an empty one if there is no file,
        and also, after one ``vizjax:`` line through ``warn``, if it is damaged or of another
        format version (it is written anew by the next :meth:`record`)."""
        path = Path(path) if path is not None else table_path()
        machine = machine or this_machine()
        empty = cls(path, machine, {"format": FORMAT, "version": VERSION, "machines": {}})
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            return empty
        except (OSError, ValueError) as e:
            warn(
                f"vizjax: the tuning table {path} cannot be read ({e}); ignoring it: the next "
                "decision writes it anew"
            )
            return empty
        ok = isinstance(data, dict) and data.get("format") == FORMAT
        ok = ok and isinstance(data.get("machines"), dict)
        if not ok or data.get("version") != VERSION:
            what = (
                "is not a vizjax tuning table"
                if not ok
                else (f"has format version {data.get('version')!r}, not {VERSION}")
            )
            warn(
                f"vizjax: the tuning table {path} {what}; ignoring it: the next decision "
                "writes it anew"
            )
            return empty
        return cls(path, machine, data)

    def entries(self) -> dict[str, dict[str, Any]]:
        """This machine's entries, by :func:`entry_key`."""
        mine = self.data["machines"].get(self.machine.key)
        return dict(mine.get("entries", {})) if isinstance(mine, dict) else {}

    def get(self, key: str) -> Choice | None:
        """The decision kept for ``key`` on this machine, or None (none, or an entry this version
        cannot read)."""
        e = self.entries().get(key)
        try:
            c = Choice(str(e["conv"]), int(e["per_device"]), str(e["dtype"]))  # type: ignore[index]
        except (TypeError, KeyError, ValueError):
            return None
        return c if c.per_device > 0 and c.dtype in ("float32", "bfloat16") else None

    def record(self, key: str, choice: Choice, timings: Mapping[str, float]) -> Table:
        """Keep ``choice`` (and the ``timings`` it won, ms per filter-step) for ``key``: the file
        is read again (another process may have added entries), the entry set, and the whole
        written atomically. Returns the table as written."""
        fresh = Table.load(self.path, self.machine, warn=lambda _: None)
        machines = dict(fresh.data["machines"])
        m = self.machine
        mine = dict(machines.get(m.key) or {})
        mine.update(cpu=m.cpu, flags_sha256=m.key.split("-")[0], jax=m.jax, jaxlib=m.jaxlib)
        entries = dict(mine.get("entries") or {})
        entries[key] = {
            "conv": choice.conv,
            "per_device": choice.per_device,
            "dtype": choice.dtype,
            "ms_per_filter_step": {k: round(v, 3) for k, v in timings.items()},
            "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        }
        mine["entries"] = entries
        machines[m.key] = mine
        data = {"format": FORMAT, "version": VERSION, "machines": machines}
        text = json.dumps(data, indent=1, sort_keys=True).encode()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        write_atomically(self.path, lambda f: f.write(text))
        return Table(self.path, self.machine, data)


# --------------------------------------------------------------------------------------------------
# The search.


def search(
    rule: Choice,
    measure: Callable[[Choice], float],
    *,
    convs: Sequence[str],
    per_devices: Sequence[int],
    bfloat16: bool,
    onednn_per_device: int = 0,
) -> tuple[Choice, dict[str, float]]:
    """The fastest candidate by ``measure`` (seconds per filter-step), found in stages so that few
    programs compile: the convolutions at the rule's chunk, then the chunks (``per_devices``)
    with the winning convolution, then bfloat16 (with ``bfloat16``) at the winner, and bfloat16
    through oneDNN (when ``"onednn"`` is among ``convs``: the AMX unit's path; at
    ``onednn_per_device`` filters per device, oneDNN's own rule, if given) if the winner's
    convolution is another. A candidate replaces the one before only when it is :data:`MARGIN`
    faster. Returns the choice and every timing taken (ms per filter-step by
    :attr:`Choice.label`)."""
    timings: dict[str, float] = {}

    def seconds(c: Choice) -> float:
        if c.label not in timings:
            timings[c.label] = 1e3 * measure(c)
        return timings[c.label]

    def best(incumbent: Choice, challengers: Sequence[Choice]) -> Choice:
        for c in challengers:
            if c != incumbent and seconds(c) < seconds(incumbent) * (1 - MARGIN):
                incumbent = c
        return incumbent

    seconds(rule)  # first: the rule's time, which every other is compared with in the end
    winner = best(rule, [rule.replace(conv=c) for c in convs])
    winner = best(winner, [winner.replace(per_device=p) for p in per_devices])
    if bfloat16:
        low = [winner.replace(dtype="bfloat16")]
        if "onednn" in convs and winner.conv != "onednn":
            pd = onednn_per_device or winner.per_device
            low.append(winner.replace(dtype="bfloat16", conv="onednn", per_device=pd))
        winner = best(winner, low)
    return winner, timings


def neighbours(per_device: int, most: int) -> list[int]:
    """The chunks tried beside the rule's ``per_device``: half and double, none above ``most``
    (the filters per device the run has) unless the rule's own is."""
    return [p for p in (per_device // 2, per_device * 2) if 1 <= p <= max(most, per_device)]


def convolutions(network: Network | GenericModel) -> list[str]:
    """The convolutions :func:`search` tries on ``network``: Winograd and XLA's own, and oneDNN's
    where this process can run it (:mod:`vizjax.models.onednn`)."""
    convs = ["winograd", "xla"]
    if onednn.unavailable() is None:
        convs.append("onednn")
    return convs


def candidates(network: Network | GenericModel, bfloat16: bool, chunks: int) -> int:
    """How many programs :func:`search` compiles at most (``chunks``: the neighbours tried)."""
    convs = convolutions(network)
    return len(convs) + chunks + int(bfloat16) * (1 + int("onednn" in convs))


def pays_off(
    layer: str, filters: int, recipe: Recipe, network: Network | GenericModel, compiles: int
) -> bool:
    """``auto``'s rule: measure ``layer`` when computing its ``filters`` is estimated to take at
    least :data:`PAYS_OFF` times as long as measuring ``compiles`` candidates (each compiled and
    two segments of a chunk of up to 8 filters run). Estimated from the cost model's work at
    :data:`ASSUMED_RATE` and the compile weight at :data:`COMPILE_SECONDS_PER_WEIGHT`."""
    step_s = cost.work_per_filter_step(layer, recipe, network) / ASSUMED_RATE
    run_s = filters * recipe.steps * step_s
    weight = cost.compile_weight(layer, network)  # type: ignore[arg-type]
    tuning_s = compiles * (weight * COMPILE_SECONDS_PER_WEIGHT + 2 * 8 * 8 * step_s)
    return run_s >= PAYS_OFF * tuning_s


def decide(
    layer: str,
    filters: int,
    recipe: Recipe,
    network: Network | GenericModel,
    execution: Execution,
    *,
    tune: str,
    table: Table | None,
    measure: Callable[[Choice], float],
    dtype_free: bool = False,
    may_measure: bool = True,
    devices: int = 1,
    platform: str = "cpu",
) -> tuple[Execution, Decision]:
    """``layer``'s execution for a run of ``filters`` filters, and the decision behind it.

    Precedence per setting: explicit in ``execution`` (``conv`` not auto, ``batch`` not auto,
    the dtype unless ``dtype_free``) > the ``table``'s entry > the rule. ``tune`` (a
    :data:`MODES` value) says whether to ``measure`` (a candidate -> seconds per filter-step)
    and record the result in the table; only on a CPU, and never without ``may_measure``. The execution returned is ``execution``
    itself where nothing comes from the table or a measurement (today's rules, unchanged).
    """
    size = tuple(recipe.size or DEFAULT_SIZE)
    key = entry_key(network, layer, size, recipe, devices)
    cpu = platform == "cpu"
    # bfloat16 on a CPU with AMX: oneDNN's convolutions (vizjax.engine.adapter._amx)
    amx = cpu and execution.dtype == "bfloat16" and onednn.amx_path()
    rule = Choice(  # today's rules (accelerators: XLA's convolutions, chunks by memory: 0)
        ("onednn" if amx else "winograd") if cpu else "xla",
        cpu_filters_per_device(layer, size[0], size[1], network, amx or execution.conv == "onednn")
        if cpu
        else 0,
        execution.dtype,  # the platform's default where the run leaves the dtype free
    )
    fixed = {
        "conv": execution.conv if execution.conv != "auto" else None,
        "per_device": math.ceil(int(execution.batch) / devices)
        if execution.batch != "auto"
        else None,
        "dtype": None if dtype_free else execution.dtype,
    }
    free = [k for k, v in fixed.items() if v is None]
    chosen, where, timings = rule, "rule", {}
    if cpu and tune != "off" and table is not None and free:
        kept = table.get(key)
        nearby = neighbours(rule.per_device, math.ceil(filters / devices))
        bf16 = table.machine.bfloat16_unit
        compiles = candidates(network, bf16, len(nearby))
        if may_measure and (
            tune == "now" or (kept is None and pays_off(layer, filters, recipe, network, compiles))
        ):
            convs = convolutions(network)
            _say(
                f"vizjax: tuning {layer} for this CPU: timing up to {compiles} candidates, "
                f"kept in {table.path} (--tune off skips it)"
            )
            # From float32 whatever this run's dtype: the table holds the unconstrained best.
            start = rule.replace(dtype="float32")
            chosen, timings = search(
                start,
                measure,
                convs=convs,
                per_devices=nearby,
                bfloat16=bf16,
                onednn_per_device=cpu_filters_per_device(layer, size[0], size[1], network, True),
            )
            try:
                table.record(key, chosen, timings)
            except OSError as e:  # never fatal: this run still uses what it measured
                _say(
                    f"vizjax: cannot write the tuning table {table.path} ({e.strerror or e}); "
                    "the decision is used by this run only"
                )
            where = "measured"
        elif kept is not None:
            chosen, where = kept, "table"
    source = {k: "flag" if fixed[k] is not None else where for k in fixed}
    final = Choice(
        fixed["conv"] or chosen.conv,  # type: ignore[arg-type]
        fixed["per_device"] or chosen.per_device,  # type: ignore[arg-type]
        fixed["dtype"] or chosen.dtype,  # type: ignore[arg-type]
    )
    decision = Decision(final, source, key, timings)
    if where == "rule":
        return execution, decision
    changes: dict[str, Any] = {}
    if fixed["conv"] is None:
        changes["conv"] = chosen.conv
    if fixed["per_device"] is None:
        changes["per_device"] = chosen.per_device
    if fixed["dtype"] is None:
        changes["dtype"] = chosen.dtype
    return execution.replace(**changes), decision


# --------------------------------------------------------------------------------------------------
# Timing one layer's program.


def time_layer(
    layer: str,
    filters: Sequence[int],
    recipe: Recipe,
    weights: Any,
    execution: Execution,
    start: np.ndarray,
    *,
    timer: Callable[[], float] = time.perf_counter,
    measures: bool = True,
    repeats: int = 1,
) -> dict[str, Any]:
    """Compile ``layer``'s program for the chunk a run would use and time a step of it.

    Returns ``{"chunk", "compile_s", "step_s"}``: the chunk (filters per compiled call), the
    seconds (by ``timer``) to trace and compile every entry point the run would call (init, each
    segment length, finish, and with ``measures`` the fidelity measures), and the seconds of one
    step of one chunk (a segment after a first one; the fastest of ``repeats``). On an
    accelerator, a recipe that runs as one rolled loop over all its steps is timed on
    :data:`SAMPLE_STEPS` steps.
    """
    mesh = ascent.local_mesh()
    platform = mesh.devices.flat[0].platform
    segment = execution.segment or auto_segment(recipe.steps, platform)
    if platform != "cpu" and segment >= recipe.steps > SAMPLE_STEPS:
        # One rolled loop over every step (accelerators): its cost per step and its compile do
        # not depend on its length, so time a short one instead of running a chunk twice.
        # (XLA:CPU unrolls a segment: there the real one is compiled and timed.)
        recipe = recipe.replace(steps=SAMPLE_STEPS)
    t0 = timer()
    job = ascent.prepare(
        layer, filters, recipe, weights.params, weights.preprocessing,
        execution=execution, start=start, mesh=mesh, measure=measures,
    )  # fmt: skip
    assert job is not None, "time_layer needs filters"
    program, params, x0, seed, chunk = job.program, job.params, job.start, job.seed, job.chunk
    real = np.asarray(list(filters)[:chunk], np.int32)
    fs = jax.device_put(ascent.padded(real, chunk), NamedSharding(mesh, PartitionSpec("filters")))
    init = program.init.lower(params, x0, fs, seed).compile()
    state = jax.eval_shape(program.init, params, x0, fs, seed)
    advance = {
        n: fn.lower(params, x0, fs, seed, state, np.int32(0)).compile()
        for n, fn in program.advance.items()
    }
    program.finish.lower(params, x0, fs, seed, state, np.int32(0)).compile()
    if job.measure is not None:
        # The run also measures each chunk's images (vizjax.analysis.fidelity): its compile counts.
        out = jax.eval_shape(program.finish, params, x0, fs, seed, state, np.int32(0))
        job.measure.lower(params, out["raw"], out["images"], fs).compile()
    compile_s = timer() - t0
    # A first segment warms up (allocations, caches); the next one is timed.
    first, n = program.plan[0]
    later = program.plan[1] if len(program.plan) > 1 else program.plan[0]
    state = init(params, x0, fs, seed)
    state, _ = jax.block_until_ready(advance[n](params, x0, fs, seed, state, np.int32(first)))
    step_s = float("inf")
    for _ in range(repeats):  # the fastest of ``repeats``: others' work only ever adds time
        t = timer()
        state, _ = jax.block_until_ready(
            advance[later[1]](params, x0, fs, seed, state, np.int32(later[0]))
        )
        step_s = min(step_s, (timer() - t) / later[1])
    ascent.compiled_program.cache_clear()  # one layer's programs at a time in memory
    return {"chunk": chunk, "compile_s": compile_s, "step_s": step_s}


def layer_measure(
    layer: str,
    filters: Sequence[int],
    recipe: Recipe,
    weights: Any,
    execution: Execution,
    start: np.ndarray,
    *,
    timer: Callable[[], float] = time.perf_counter,
) -> Callable[[Choice], float]:
    """The ``measure`` of :func:`decide` for ``layer``: a candidate's seconds per filter-step by
    :func:`time_layer` (the fidelity measures left out: no candidate changes them)."""
    devices = len(jax.local_devices())

    def measure(c: Choice) -> float:
        ex = execution.replace(conv=c.conv, dtype=c.dtype, batch=c.per_device * devices)
        t = time_layer(
            layer, filters, recipe, weights, ex, start, timer=timer, measures=False, repeats=3
        )
        return t["step_s"] / t["chunk"]

    return measure
