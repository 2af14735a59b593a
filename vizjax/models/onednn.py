"""3x3 'SAME' convolutions computed by oneDNN, Intel's CPU library, called from XLA:CPU.

XLA:CPU (jaxlib 0.10) runs bfloat16 convolutions through float32 conversions, so a CPU's bfloat16
matrix unit (Intel AMX, ``amx_bf16`` in ``/proc/cpuinfo``) sits idle: on a Sapphire Rapids Xeon
PyTorch multiplies bfloat16 matrices 5-6x faster than XLA. oneDNN is the library PyTorch uses for
that; here it is called directly, as an XLA FFI custom call (``onednn_conv3x3.cc`` beside this
file), inside the same compiled program as the rest of the ascent.

The handler is compiled once per machine with the C++ compiler (``$CXX``, else ``g++``) against
the oneDNN wheels (``pip install 'vizjax[onednn]'``: ``onednn-cpu-gomp`` and its headers) and
jaxlib's FFI headers, into ``$XDG_CACHE_HOME/vizjax/onednn/`` (``~/.cache/vizjax/onednn``), keyed
by the source, the jaxlib version and the library, and loaded by every later process.
:func:`unavailable` says why it cannot be used (no wheel, no compiler, not x86-64 Linux).

Only the forward convolution is a custom call: the gradient w.r.t. the input of a stride-1 'SAME'
3x3 convolution is the same convolution with the kernel flipped and its channels swapped
(``custom_vjp``), so the backward pass runs on oneDNN too. The weights are frozen; their
cotangent is zeros, which XLA removes.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import jax
import jax.numpy as jnp

from vizjax.errors import VizjaxError

SOURCE = Path(__file__).with_name("onednn_conv3x3.cc")
#: ``0`` (or off/false/no) keeps a run left to choose in float32 on a CPU with AMX.
ENV = "VIZJAX_AMX"
#: The FFI target's name, registered for the CPU platform.
TARGET = "vizjax_onednn_conv3x3"


def _prefixes() -> list[Path]:
    seen: list[Path] = []
    for p in (sys.prefix, sys.base_prefix, sys.exec_prefix):
        if Path(p) not in seen:
            seen.append(Path(p))
    return seen


def _find_onednn() -> tuple[Path, Path] | str:
    """(include dir, lib dir) of the oneDNN wheels in this environment, or why not found."""
    for prefix in _prefixes():
        inc, lib = prefix / "include", prefix / "lib"
        if (inc / "oneapi" / "dnnl" / "dnnl.hpp").exists() and (lib / "libdnnl.so").exists():
            return inc, lib
    return "oneDNN is not installed here (pip install 'vizjax[onednn]')"


def cache_dir() -> Path:
    """Where the compiled handler is kept: ``$XDG_CACHE_HOME/vizjax/onednn``."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "vizjax" / "onednn"


def _build(inc: Path, lib: Path) -> Path | str:
    """The handler's shared library, compiled now if no earlier process did; or why it failed."""
    import jaxlib

    key = hashlib.sha256(
        SOURCE.read_bytes() + jaxlib.__version__.encode() + str(lib.resolve()).encode()
    ).hexdigest()[:16]
    out = cache_dir() / f"conv3x3-{key}.so"
    if out.exists():
        return out
    cxx = os.environ.get("CXX") or shutil.which("g++") or shutil.which("c++")
    if not cxx:
        return "no C++ compiler to build the oneDNN handler (set $CXX or install g++)"
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(suffix=".so", dir=out.parent)
        os.close(fd)
    except OSError as e:
        return f"cannot write the oneDNN handler into {out.parent}: {e.strerror or e}"
    cmd = [cxx, "-O2", "-std=c++17", "-shared", "-fPIC", str(SOURCE)]
    cmd += [f"-I{inc}", f"-I{jax.ffi.include_dir()}", f"-L{lib}", "-ldnnl"]
    cmd += [f"-Wl,-rpath,{lib}", "-o", tmp]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        Path(tmp).unlink(missing_ok=True)
        last = (r.stderr.strip().splitlines() or ["?"])[-1]
        return f"building the oneDNN handler failed ({Path(cxx).name}): {last}"
    os.replace(tmp, out)  # another process building the same key writes the same bytes
    return out


@functools.cache
def unavailable() -> str | None:
    """Why oneDNN convolutions cannot run in this process (None: they can; the handler is then
    built if needed, loaded and registered)."""
    if sys.platform != "linux" or platform.machine() not in ("x86_64", "AMD64"):
        return f"oneDNN convolutions are built for x86-64 Linux only, not {platform.machine()}"
    found = _find_onednn()
    if isinstance(found, str):
        return found
    built = _build(*found)
    if isinstance(built, str):
        return built
    try:
        lib = ctypes.cdll.LoadLibrary(str(built))
    except OSError as e:
        return f"cannot load the oneDNN handler {built}: {e}"
    jax.ffi.register_ffi_target(TARGET, jax.ffi.pycapsule(lib.VizjaxConv3x3), platform="cpu")
    return None


@functools.cache
def has_amx() -> bool:
    """Whether this CPU has AMX's bfloat16 unit (``amx_bf16`` in Linux's ``/proc/cpuinfo``)."""
    try:
        text = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        return False
    return any(
        line.startswith("flags") and "amx_bf16" in line.split() for line in text.splitlines()
    )


def amx_path() -> bool:
    """Whether a CPU run that leaves the dtype and convolution to vizjax computes in bfloat16
    through oneDNN: the CPU has AMX, oneDNN runs here, and ``$VIZJAX_AMX`` is not ``0``.

    Measured on a 2-core Sapphire Rapids Xeon (2026-12-05, performance page): the default recipe's
    step 1.9-2.3x and classic's 2.4-2.6x faster than float32, the pictures' measures within the
    seed-to-seed noise (``python -m bench.dtype``)."""
    if os.environ.get(ENV, "").strip().lower() in ("0", "off", "false", "no"):
        return False
    return has_amx() and unavailable() is None


def _call(x: jax.Array, kernel: jax.Array) -> jax.Array:
    reason = unavailable()
    if reason is not None:
        raise VizjaxError(f"--conv onednn: {reason}")
    out = jax.ShapeDtypeStruct((*x.shape[:-1], kernel.shape[-1]), x.dtype)
    # vmap: x gains leading batch axes (the handler folds them into N); an unbatched kernel gets
    # a leading axis of 1, which the handler accepts.
    return jax.ffi.ffi_call(TARGET, out, vmap_method="expand_dims")(x, kernel)


@jax.custom_vjp
def conv3x3_onednn(x: jax.Array, kernel: jax.Array) -> jax.Array:
    """``x (..., H, W, Cin)`` cross-correlated with ``kernel (3, 3, Cin, Cout)``, 'SAME', no bias,
    by oneDNN; float32 or bfloat16 (both operands one dtype). Call :func:`unavailable` first."""
    return _call(x, kernel)


def _fwd(x: jax.Array, kernel: jax.Array):
    return _call(x, kernel), kernel


def _bwd(kernel: jax.Array, g: jax.Array):
    flipped = jnp.swapaxes(kernel[::-1, ::-1], 2, 3)
    return _call(g.astype(kernel.dtype), flipped), jnp.zeros_like(kernel)


conv3x3_onednn.defvjp(_fwd, _bwd)
