"""How a run executes: dtype, convolution algorithm, loop structure, chunk size.

Kept apart from :class:`vizjax.engine.recipe.Recipe` (what makes the picture): none of these changes a
filter's picture beyond float rounding, except ``dtype`` (bfloat16 is ~1% off float32), which is
why ``dtype`` is part of an atlas' identity and the others are not.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os
from pathlib import Path
from typing import Any

from vizjax.errors import VizjaxError
from vizjax.models import onednn

DTYPES = ("float32", "bfloat16")
CONVS = ("auto", "xla", "winograd", "onednn")
SWITCHES = ("auto", "on", "off")


def _fast(default: Any) -> Any:
    """A setting that changes how fast a run goes, not its pictures (beyond float rounding): runs
    that differ in it may share an atlas (see :mod:`vizjax.config`)."""
    return dataclasses.field(default=default, metadata={"identity": False})


@dataclasses.dataclass(frozen=True)
class Execution:
    """Run settings.

    Attributes:
      dtype: compute dtype of weights and activations; the image and its optimizer state stay
        float32.
      conv: ``"xla"``, ``"winograd"`` (F(2x2, 3x3) for blocks 2-5; faster on CPU), ``"onednn"``
        (every 3x3 convolution through oneDNN: a CPU's AMX bfloat16 unit,
        :mod:`vizjax.models.onednn`) or ``"auto"`` (winograd on CPU, or onednn in bfloat16 on a
        CPU with AMX; xla on accelerators; the CLI's tuning table may choose otherwise).
      segment: steps per compiled call; the host calls it ``steps / segment`` times, carrying the
        state on the device. 0 = auto (:func:`auto_segment`).
      unroll: steps unrolled inside a segment's ``lax.scan``; 0 = auto (the whole segment on
        CPU, 1 on accelerators).
      batch: filters per chunk (one compiled program per chunk shape), or ``"auto"``.
      per_device: with ``batch="auto"`` on a CPU, the filters per device of a chunk; 0 = the
        rule (:func:`vizjax.engine.chunk.cpu_filters_per_device`). Set by the tuning table
        (:mod:`vizjax.engine.tuning`).
      compile_ahead: a multi-layer run compiles the next layer's programs in a background thread
        while a layer runs (:class:`vizjax.engine.ascent.CompileAhead`): ``"on"``, ``"off"`` or
        ``"auto"`` (on accelerators only: there the host's cores are idle while the device
        computes; on a CPU the compile would take the cores the run computes on).
    """

    dtype: str = "float32"
    conv: str = _fast("auto")
    segment: int = _fast(0)
    unroll: int = _fast(0)
    batch: int | str = _fast("auto")
    per_device: int = _fast(0)
    compile_ahead: str = _fast("auto")

    def __post_init__(self) -> None:
        if self.dtype not in DTYPES:
            raise VizjaxError(f"dtype must be one of {', '.join(DTYPES)}, got {self.dtype!r}")
        if self.conv not in CONVS:
            raise VizjaxError(f"conv must be one of {', '.join(CONVS)}, got {self.conv!r}")
        if self.segment < 0 or self.unroll < 0 or self.per_device < 0:
            raise VizjaxError("segment, unroll and per_device must be >= 0 (0 = auto)")
        if self.batch != "auto" and (not isinstance(self.batch, int) or self.batch <= 0):
            raise VizjaxError(f"batch must be a positive integer or 'auto', got {self.batch!r}")
        if self.compile_ahead not in SWITCHES:
            raise VizjaxError(
                f"compile_ahead must be one of {', '.join(SWITCHES)}, got {self.compile_ahead!r}"
            )

    def replace(self, **changes: Any) -> Execution:
        return dataclasses.replace(self, **changes)

    def program(self) -> Execution:
        """The settings that shape a compiled program (the chunk size is its input shape)."""
        return dataclasses.replace(self, batch="auto", per_device=0, compile_ahead="auto")

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


#: Platforms whose default compute dtype is bfloat16 (the CLI's ``--dtype auto``).
BFLOAT16_PLATFORMS = ("gpu", "cuda", "rocm", "tpu")


def default_dtype(platform: str) -> str:
    """The compute dtype a run gets when it does not choose one (the CLI's ``--dtype auto``):
    bfloat16 on GPUs and TPUs, float32 on CPUs.

    On accelerators bfloat16 runs at the matrix units' full rate and halves the activations'
    memory; its pictures are those of float32 within the seed-to-seed noise of the fidelity
    measures (the default recipe, 512 steps at 128 px, 8 filters each of block3_conv3 and
    block5_conv1: median robustness 0.779 / 0.789 against 0.785 / 0.780 in float32 and 0.786 /
    0.788 with another seed; README, "bfloat16"). On a CPU XLA computes it through float32
    conversions (2.4x the float32 time at block3_conv3 on the AMD EPYC), so float32 is the CPU's
    default, except where the CPU has AMX and oneDNN runs its convolutions
    (:func:`vizjax.models.onednn.amx_path`): bfloat16 on the matrix unit, 2-2.6x faster.
    """
    if platform in BFLOAT16_PLATFORMS:
        return "bfloat16"
    return "bfloat16" if platform == "cpu" and onednn.amx_path() else "float32"


#: Steps per compiled segment on CPU: XLA:CPU runs a ``lax.scan`` *rolled* around convolutions
#: 1.5-3.5x slower than the same steps unrolled (bench/README.md), and compile time grows with the
#: unrolled length, so recipes run as a host loop over short, fully unrolled segments. 32
#: unrolled lucid steps took 75 s at block5_conv1 (8
#: filters, 128 px, compile included) against 45 s as four segments of 8 (bench/README.md). Four,
#: not eight: the default recipe (lucent, 64 steps) on 20 filters each of block3_conv3 and
#: block5_conv1 took 177 s in segments of 4 against 195 s in segments of 8 (compile included;
#: 181 s in segments of 2, 269 s of 1); a step costs 60+ ms there, a call's dispatch well under 1.
#: The article's 20 classic steps too: 20 filters each of block1_conv1, block3_conv3 and
#: block5_conv1 took 64 s as five segments of 4 against 80 s as one program of 20, and the cat
#: (block5_conv3 at 451x300, one filter) 24 s against 38 s, the same images to the bit.
CPU_SEGMENT_MAX = 4
CPU_SEGMENT_LONG = 4


def auto_segment(steps: int, platform: str) -> int:
    """Steps per compiled call: all of them on accelerators (one rolled loop) and for short
    recipes on CPU (<= CPU_SEGMENT_MAX); otherwise the largest divisor of
    ``steps`` in 4..CPU_SEGMENT_LONG*2 closest to CPU_SEGMENT_LONG, else CPU_SEGMENT_LONG (the last
    segment is shorter)."""
    if platform != "cpu" or steps <= CPU_SEGMENT_MAX:
        return steps
    divisors = [d for d in range(4, 2 * CPU_SEGMENT_LONG + 1) if steps % d == 0]
    if divisors:
        return min(divisors, key=lambda d: (abs(d - CPU_SEGMENT_LONG), -d))
    return CPU_SEGMENT_LONG


#: XLA:CPU's LLVM optimization level for vizjax's command line. LLVM compiles only the fused
#: elementwise loops around the convolutions and matmuls (those call precompiled libraries): -O1
#: compiles them faster for the same speed. 2-core AMD EPYC, 2026-12-05, quiet, fresh caches,
#: block5_conv1 lucent 128 px, two runs each (compile s / ms per filter-step): XLA's default
#: 24.6, 22.7 / 91.5, 84.8; -O1 19.5, 20.7 / 81.0, 85.7. The tests have always compiled at -O1
#: (tests/conftest.py). -O0 runs the glue ~40x slower.
CPU_LLVM_LEVEL = 1
#: Modules whose presence means jax may run on an accelerator (GPU or TPU plugins).
ACCELERATOR_PLUGINS = (
    *("jax_cuda12_plugin", "jax_cuda13_plugin", "jax_rocm60_plugin", "jax_rocm7_plugin"),
    "libtpu",
)


def prefer_fast_cpu_compiles() -> bool:
    """Ask XLA:CPU for LLVM at :data:`CPU_LLVM_LEVEL` (in ``XLA_FLAGS``) where jax will run on the
    CPU: ``JAX_PLATFORMS=cpu``, or no accelerator plugin installed. Never over the user's own level.
    Call before jax starts its backend (the command line does, first); returns whether it did."""
    flags = os.environ.get("XLA_FLAGS", "")
    if "xla_backend_optimization_level" in flags:
        return False
    platforms = os.environ.get("JAX_PLATFORMS", "")
    if platforms.split(",")[0].strip() != "cpu":
        if platforms or any(importlib.util.find_spec(m) for m in ACCELERATOR_PLUGINS):
            return False
    os.environ["XLA_FLAGS"] = f"{flags} --xla_backend_optimization_level={CPU_LLVM_LEVEL}".strip()
    return True


def segments(steps: int, segment: int) -> list[tuple[int, int]]:
    """``[(first_step, n_steps), ...]`` covering ``steps`` in segments of ``segment``."""
    return [(s, min(segment, steps - s)) for s in range(0, steps, segment)]


_HOST_ALLOCATOR_TUNED = False


def keep_freed_host_memory() -> bool:
    """Ask glibc's malloc to keep freed memory for reuse instead of returning it to the OS.

    XLA:CPU allocates a program's temporary buffers on every call. glibc serves large
    allocations with fresh ``mmap``s (and trims freed heap), so every call page-faults its whole
    working set again: ~8,600 faults and 50-80 ms per call of a block5_conv1 step at 128 px on a
    2-core CPU (measured: 150-185 ms -> 100-120 ms per single-step call). Raising the mmap and trim
    thresholds (``mallopt``) keeps the pages. Process-wide, idempotent, Linux/glibc only; returns
    whether it applied. Set ``VIZJAX_MALLOC_TUNING=0`` to leave malloc alone.
    """
    global _HOST_ALLOCATOR_TUNED
    if _HOST_ALLOCATOR_TUNED:
        return True
    import ctypes
    import os
    import sys

    if os.environ.get("VIZJAX_MALLOC_TUNING", "1") == "0" or not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        m_trim_threshold, m_top_pad, m_mmap_threshold = -1, -2, -3
        ok = (
            libc.mallopt(m_mmap_threshold, 32 * 1024 * 1024)  # glibc's maximum on 64-bit
            and libc.mallopt(m_trim_threshold, 2**31 - 1)
            and libc.mallopt(m_top_pad, 256 * 1024 * 1024)
        )
    except (OSError, AttributeError):
        return False
    _HOST_ALLOCATOR_TUNED = bool(ok)
    return _HOST_ALLOCATOR_TUNED


# --------------------------------------------------------------------------------------------------
# Compile time is user time: compiled programs kept between processes.

#: ``0`` (or false/no/off) turns the persistent compilation cache off; a path puts it there.
CACHE_ENV = "VIZJAX_COMPILATION_CACHE"
#: Programs that compiled faster than this are not worth a disk entry (jax's own default).
CACHE_MIN_COMPILE_SECONDS = 1.0
#: The cache is trimmed (least recently used first) beyond this size, where the ``filelock``
#: package is installed (jax needs it for trimming and refuses the setting without it, which
#: would turn the whole cache off); without it the cache grows unbounded.
CACHE_MAX_BYTES = 4 << 30


def compilation_cache_dir() -> Path | None:
    """Where compiled programs are kept between processes: ``$VIZJAX_COMPILATION_CACHE`` if it is
    a path, else ``$XDG_CACHE_HOME/vizjax/jax`` (``~/.cache/vizjax/jax``); None when the variable
    is ``0``, ``false``, ``no`` or ``off``."""
    value = os.environ.get(CACHE_ENV, "").strip()
    if value.lower() in ("0", "false", "no", "off"):
        return None
    if value and value.lower() not in ("1", "true", "yes", "on"):
        return Path(value).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "vizjax" / "jax"


def enable_compilation_cache() -> Path | None:
    """Turn on JAX's persistent compilation cache (:func:`compilation_cache_dir`), so a process
    does not compile again what an earlier one compiled (the classic block5_conv1 program takes
    ~40 s on a 2-core CPU). Call it before anything compiles. Returns the directory in use, or
    None when turned off or not writable (never fatal: the run then compiles as usual). A cache
    directory set through jax's own ``JAX_COMPILATION_CACHE_DIR`` is kept."""
    import jax

    if jax.config.jax_compilation_cache_dir:
        return Path(jax.config.jax_compilation_cache_dir)
    path = compilation_cache_dir()
    if path is None:
        return None
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError:
        return None
    if not os.access(path, os.W_OK):
        return None
    jax.config.update("jax_compilation_cache_dir", str(path))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", CACHE_MIN_COMPILE_SECONDS)
    if importlib.util.find_spec("filelock") is not None:
        jax.config.update("jax_compilation_cache_max_size", CACHE_MAX_BYTES)
    return path
