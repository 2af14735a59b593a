"""Any model's program with the table networks' CPU-friendly convolutions and pools.

The built-in networks are written with their fast kernels; a user's Flax module or Keras model
calls ``lax.conv_general_dilated`` and ``lax.reduce_window`` like every JAX network does. This
module traces the model's function to a jaxpr (:func:`jax.make_jaxpr`) and evaluates it again,
equation by equation, swapping two kinds of equation for the built-in's kernels:

- a 3x3, stride-1, zero-padded-by-one 2-D convolution (any layout, no dilation, no groups) below
  the program's full resolution (the built-ins' rule: after the first downsampling) goes through
  Winograd F(2x2, 3x3), forward and backward (``conv=True``; the engine asks for it where
  the built-ins use Winograd: ``conv="auto"`` on CPU, or ``"winograd"``). A kernel that is one of
  the function's inputs, in HWIO layout (Flax's and Keras'), can come transformed ahead
  (:func:`winograd_kernels`, once per run, as the built-ins' weights do): XLA does not hoist the
  transform out of the ascent's loop, and at 512 channels it costs more than the convolution;
- a max-pool whose windows do not overlap (window == stride, no padding, no dilation) becomes a
  reshape and a max (:func:`vizjax.models.network.pool_max`, the built-ins' own): the same values,
  and a gradient that avoids XLA:CPU's slow select-and-scatter.

Everything else is bound as it was. Calls (``jit`` / ``pjit`` / ``closed_call``) whose body holds
such an equation are inlined; other higher-order equations (``custom_jvp``, ``custom_vjp``,
``scan``, ``cond``, ``remat``) are kept whole, their insides unchanged. The result equals the
model's own to float rounding (Winograd's; tested in tests/test_rewrite.py) and is differentiable
like any JAX function.

With ``conv="onednn"`` every such convolution (float32 or bfloat16), at every resolution, is
oneDNN's instead (:mod:`vizjax.models.onednn`: a CPU's AMX unit in bfloat16).

What it may import: :mod:`vizjax.models.conv`, :mod:`vizjax.models.onednn`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.extend import core

from vizjax.models.conv import conv3x3_winograd, conv3x3_winograd_prepared, winograd_pair
from vizjax.models.network import pool_max
from vizjax.models.onednn import conv3x3_onednn

_CALLS = frozenset({"pjit", "jit", "closed_call", "core_call"})
_HWIO = (3, 2, 0, 1)  # ConvDimensionNumbers.rhs_spec of an HWIO kernel
ONEDNN_DTYPES = (jnp.dtype("float32"), jnp.dtype("bfloat16"))
#: ``{flat leaf index: (U, U_flipped)}``: kernels transformed ahead (:func:`winograd_kernels`).
Kernels = Mapping[int, tuple[jax.Array, jax.Array]]


def rewritten(
    fn: Callable[..., Any], conv: bool | str = True, pool: bool = True
) -> Callable[..., Any]:
    """``fn`` (any JAX function of arrays / pytrees of arrays) with its 3x3 convolutions in
    Winograd form (``conv`` true or ``"winograd"``), or every one of them through oneDNN
    (``conv="onednn"``, :mod:`vizjax.models.onednn`), and its non-overlapping max-pools as
    reshape-and-max (``pool``).

    The result takes ``fn``'s arguments plus ``kernels=`` (:func:`winograd_kernels` of the first
    argument's leaves, or None: transformed in every call)."""
    if not (conv or pool):
        return lambda *args, kernels=None: fn(*args)

    def wrapped(*args: Any, kernels: Kernels | None = None) -> Any:
        closed, shape = jax.make_jaxpr(fn, return_shape=True)(*args)
        flat = jax.tree.leaves(args)
        origin = dict(zip(closed.jaxpr.invars, range(len(flat)), strict=True))
        rw = _Rewrite(_Swaps.of(closed.jaxpr, conv, pool), kernels or {})
        out = rw.eval(closed.jaxpr, closed.consts, flat, origin)
        return jax.tree.unflatten(jax.tree.structure(shape), out)

    return wrapped


def winograd_kernels(params: Any) -> dict[int, tuple[jax.Array, jax.Array]]:
    """The Winograd transforms ``(U, U_flipped)`` of every leaf of ``params`` shaped like a 3x3 HWIO
    kernel (``(3, 3, Cin, Cout)``, floating), by flat leaf index: :func:`rewritten`'s ``kernels``.
    A leaf of that shape that is no convolution's kernel is transformed for nothing (never used)."""
    return {
        i: winograd_pair(leaf)
        for i, leaf in enumerate(jax.tree.leaves(params))
        if leaf.ndim == 4 and leaf.shape[:2] == (3, 3) and jnp.issubdtype(leaf.dtype, jnp.floating)
    }


def count(fn: Callable[..., Any], *args: Any) -> dict[str, int]:
    """How many equations of ``fn(*args)``'s program :func:`rewritten` would swap:
    ``{"conv": n, "pool": m}`` (what the tests check)."""
    closed = jax.make_jaxpr(fn)(*args)
    swaps = _Swaps.of(closed.jaxpr, True, True)
    found = {"conv": 0, "pool": 0}
    for eqn in _equations(closed.jaxpr):
        kind = swaps.kind(eqn)
        if kind:
            found[kind] += 1
    return found


def _equations(jaxpr: core.Jaxpr) -> Iterator[core.JaxprEqn]:
    """The equations of ``jaxpr`` and, in place of each call, of its body (what gets inlined)."""
    for eqn in jaxpr.eqns:
        if eqn.primitive.name in _CALLS:
            yield from _equations(eqn.params["jaxpr"].jaxpr)
        else:
            yield eqn


def _area(eqn: core.JaxprEqn) -> int:
    """The spatial size (H * W) of a 2-D convolution's input."""
    x = eqn.invars[0].aval
    return int(np.prod([x.shape[d] for d in eqn.params["dimension_numbers"].lhs_spec[2:]]))


@dataclasses.dataclass(frozen=True)
class _Swaps:
    """Which equations to swap. Convolutions at the program's full resolution (the largest input
    area of its convolutions: VGG's block 1, with 3 and 64 channels) stay XLA's: the built-ins'
    rule (:attr:`vizjax.models.network.Network.winograd_layers`), where XLA measured faster."""

    conv: bool | str
    pool: bool
    full_area: int

    @classmethod
    def of(cls, jaxpr: core.Jaxpr, conv: bool | str, pool: bool) -> _Swaps:
        areas = [_area(e) for e in _equations(jaxpr) if e.primitive.name == "conv_general_dilated"
                 and len(e.invars[0].aval.shape) == 4]  # fmt: skip
        return cls(conv, pool, max(areas, default=0))

    def kind(self, eqn: core.JaxprEqn) -> str | None:
        """``"conv"`` / ``"pool"`` where the equation is one to swap, else None."""
        name = eqn.primitive.name
        if self.conv and name == "conv_general_dilated" and _winograd_conv(eqn):
            if self.conv == "onednn":  # oneDNN at every resolution (the built-ins' AMX path)
                return "onednn" if eqn.invars[0].aval.dtype in ONEDNN_DTYPES else None
            return "conv" if _area(eqn) < self.full_area else None
        if self.pool and name == "reduce_window_max" and _tiling_pool(eqn):
            return "pool"
        return None

    def any_in(self, jaxpr: core.Jaxpr) -> bool:
        return any(self.kind(e) for e in _equations(jaxpr))


def _winograd_conv(eqn: core.JaxprEqn) -> bool:
    p = eqn.params
    x, k = (v.aval for v in eqn.invars)
    dn = p["dimension_numbers"]
    if len(x.shape) != 4 or x.dtype != k.dtype or not jnp.issubdtype(x.dtype, jnp.floating):
        return False
    kh, kw = (k.shape[d] for d in dn.rhs_spec[2:])
    return (
        (kh, kw) == (3, 3)
        and tuple(p["window_strides"]) == (1, 1)
        and tuple(map(tuple, p["padding"])) == ((1, 1), (1, 1))
        and tuple(p["lhs_dilation"]) == (1, 1)
        and tuple(p["rhs_dilation"]) == (1, 1)
        and p["feature_group_count"] == 1
        and p["batch_group_count"] == 1
        and p["preferred_element_type"] in (None, x.dtype)
    )


def _tiling_pool(eqn: core.JaxprEqn) -> bool:
    p = eqn.params
    return (
        tuple(p["window_dimensions"]) == tuple(p["window_strides"])
        and all(tuple(q) == (0, 0) for q in p["padding"])
        and all(d == 1 for d in p["base_dilation"])
        and all(d == 1 for d in p["window_dilation"])
        and any(w > 1 for w in p["window_dimensions"])
    )


def conv_any_layout(
    x: jax.Array,
    kernel: jax.Array,
    dn: Any,
    prepared: tuple[jax.Array, jax.Array] | None = None,
    onednn: bool = False,
) -> jax.Array:
    """The Winograd 3x3 'SAME' convolution in the layout ``dn`` (``ConvDimensionNumbers``);
    ``prepared``: the kernel's ``(U, U_flipped)`` (HWIO kernels only), else transformed here.
    With ``onednn``, oneDNN's convolution instead (:func:`vizjax.models.onednn.conv3x3_onednn`)."""
    lhs, rhs, out = dn.lhs_spec, dn.rhs_spec, dn.out_spec
    x = jnp.transpose(x, (lhs[0], lhs[2], lhs[3], lhs[1]))  # NHWC
    if onednn:
        y = conv3x3_onednn(x, jnp.transpose(kernel, (rhs[2], rhs[3], rhs[1], rhs[0])))
    elif prepared is not None and tuple(rhs) == _HWIO:
        y = conv3x3_winograd_prepared(x, *prepared)
    else:
        kernel = jnp.transpose(kernel, (rhs[2], rhs[3], rhs[1], rhs[0]))  # HWIO
        y = conv3x3_winograd(x, kernel)  # NHWC
    inverse = [0] * 4
    for axis, source in zip(out, (0, 3, 1, 2), strict=True):
        inverse[axis] = source
    return jnp.transpose(y, inverse)


class _Rewrite:
    """The evaluation of a jaxpr with the swaps; ``origin`` maps the variables that are the
    wrapped function's inputs to their flat index (followed into inlined calls), so that a
    convolution whose kernel is an input uses its transform from ``kernels``."""

    def __init__(self, swaps: _Swaps, kernels: Kernels) -> None:
        self.swaps, self.kernels = swaps, kernels

    def eval(
        self, jaxpr: core.Jaxpr, consts: Sequence[Any], args: Sequence[Any], origin: dict[Any, int]
    ) -> list[Any]:
        env: dict[Any, Any] = {}

        def read(v: Any) -> Any:
            return v.val if isinstance(v, core.Literal) else env[v]

        for v, x in zip(jaxpr.constvars, consts, strict=True):
            env[v] = x
        for v, x in zip(jaxpr.invars, args, strict=True):
            env[v] = x
        for eqn in jaxpr.eqns:
            ins = [read(v) for v in eqn.invars]
            kind = self.swaps.kind(eqn)
            if kind == "onednn":
                outs = [conv_any_layout(*ins, eqn.params["dimension_numbers"], onednn=True)]
            elif kind == "conv":
                k = eqn.invars[1]
                ready = None if isinstance(k, core.Literal) else self.kernels.get(origin.get(k, -1))
                outs = [conv_any_layout(*ins, eqn.params["dimension_numbers"], ready)]
            elif kind == "pool":
                outs = [pool_max(ins[0], tuple(eqn.params["window_dimensions"]))]
            elif eqn.primitive.name in _CALLS and self.swaps.any_in(eqn.params["jaxpr"].jaxpr):
                sub = eqn.params["jaxpr"]
                inner = {
                    w: origin[v]
                    for w, v in zip(sub.jaxpr.invars, eqn.invars, strict=True)
                    if not isinstance(v, core.Literal) and v in origin
                }
                outs = self.eval(sub.jaxpr, sub.consts, ins, inner)
            else:
                bound = eqn.primitive.get_bind_params(eqn.params)  # (subfuns, params) before 0.7
                subfuns, params = bound if isinstance(bound, tuple) else ((), bound)
                with eqn.ctx.manager:
                    res = eqn.primitive.bind(*subfuns, *ins, **params)
                outs = list(res) if eqn.primitive.multiple_results else [res]
            for v, x in zip(eqn.outvars, outs, strict=True):
                if not isinstance(v, core.DropVar):
                    env[v] = x
        return [read(v) for v in jaxpr.outvars]
