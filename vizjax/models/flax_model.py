"""Flax modules as :class:`vizjax.models.generic.GenericModel`: :func:`from_flax` (linen) and
:func:`from_nnx` (NNX).

A user's module is used as it is, never edited. It must be callable as
``module.apply(variables, x, **apply_kwargs)`` with ``x`` a ``(B, H, W, C)`` float32 batch of
preprocessed images, return its output, and run in inference mode without changing its
variables: batch norm reads its running statistics from ``variables["batch_stats"]``
(``use_running_average=True``), dropout is off. If the module takes a flag for that
(``train=False``, ``deterministic=True``), give it: as a module attribute when the factory builds
it, or in ``apply_kwargs``; vizjax passes nothing the user did not say.

The layers are the outputs of the submodules' ``__call__``, read with Flax's own intermediates
mechanism (``capture_intermediates``), named by module path joined with ``/`` (a block
``Block_5`` inside ``Stage_3`` is ``Stage_3/Block_5``), in the order their calls finish; a
submodule called several times gives ``path``, ``path:1``, ``path:2``, ...; the module's own output
is ``output``. Only outputs that are single arrays count. Under ``jit`` nothing past the deepest
requested layer is computed (XLA drops the unused rest).

What it may import: :mod:`vizjax.errors` and its own package.
"""

from __future__ import annotations

import collections
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp

from vizjax.errors import VizjaxError
from vizjax.models.generic import DEFAULT_SIZE, GenericModel
from vizjax.models.network import Preprocessing

#: The name of the module's own output among the layers.
OUTPUT = "output"


def _name(path: tuple[str, ...], call: int) -> str:
    base = "/".join(path) if path else OUTPUT
    return base if call == 0 else f"{base}:{call}"


def _first_line(e: Exception) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0]


def from_flax(
    module: Any,
    variables: Mapping[str, Any],
    *,
    preprocessing: Preprocessing | None = None,
    input_size: int | None = None,
    channels: int = 3,
    name: str | None = None,
    apply_kwargs: Mapping[str, Any] | None = None,
) -> GenericModel:
    """A Flax linen ``module`` with its ``variables`` (``{"params": ..., "batch_stats": ...}``) as a
    :class:`~vizjax.models.generic.GenericModel` (see the module docstring).

    Args:
      preprocessing: what the module expects of RGB 0-255 pixels (None: unknown; a run must then
        be given one).
      input_size: the square input size the module requires, or None if it takes any.
      channels: the input channels (3 = RGB).
      name: the architecture's readable name in the atlas (default ``flax:<class name>``).
      apply_kwargs: extra keyword arguments of every ``module.apply`` (e.g. ``{"train": False}``).

    Raises a one-line VizjaxError if the module is not a linen module, cannot run on a
    ``(1, size, size, channels)`` input, or changes its variables when applied.
    """
    import flax.linen as nn

    if not isinstance(module, nn.Module):
        raise VizjaxError(
            f"expected a flax.linen Module, got {type(module).__name__} (a factory returns "
            "(module, variables) or (module, variables, preprocessing))"
        )
    if not isinstance(variables, Mapping) or "params" not in variables:
        raise VizjaxError(
            f"the variables of {type(module).__name__} must be a dict with 'params' "
            f"(module.init's result), got {type(variables).__name__}"
        )
    kwargs = dict(apply_kwargs or {})
    variables = jax.tree.map(jnp.asarray, dict(variables))
    size = input_size or DEFAULT_SIZE
    finished: list[tuple[tuple[str, ...], int]] = []
    calls: collections.Counter[tuple[str, ...]] = collections.Counter()

    def record(mdl: Any, method: str) -> bool:
        if method == "__call__":
            path = tuple(mdl.path)
            finished.append((path, calls[path]))
            calls[path] += 1
        return method == "__call__"

    def run(variables: Any, x: jax.Array, capture: Any) -> tuple[Any, Any]:
        return module.apply(
            variables, x, capture_intermediates=capture, mutable=["intermediates"], **kwargs
        )

    x = jax.ShapeDtypeStruct((1, size, size, channels), jnp.float32)
    try:
        out, state = jax.eval_shape(lambda v, x: run(v, x, record), variables, x)
    except Exception as e:  # the user's module, in its own words, on one line
        raise VizjaxError(
            f"{type(module).__name__}.apply(variables, x) failed on a {size}x{size}x{channels} "
            f"input (inference mode, variables unchanged): {_first_line(e)}"
        ) from None
    captured = state.get("intermediates", {})
    layers = []
    for path, call in finished:
        if not path:
            value = out
        else:
            node = captured
            for p in path:
                node = node[p]
            value = node["__call__"][call]
        if isinstance(value, jax.ShapeDtypeStruct) and len(value.shape) >= 1:
            layers.append(_name(path, call))
    by_name = {_name(p, c): (p, c) for p, c in finished}

    def apply(params: Any, x: jax.Array, names: tuple[str, ...]) -> dict[str, jax.Array]:
        wanted = {by_name[n][0] for n in names}

        def capture(mdl: Any, method: str) -> bool:
            return method == "__call__" and tuple(mdl.path) in wanted

        out, state = run(params, x, capture)
        found = state.get("intermediates", {})
        result = {}
        for n in names:
            path, call = by_name[n]
            if not path:
                result[n] = out
                continue
            node = found
            for p in path:
                node = node[p]
            result[n] = node["__call__"][call]
        return result

    extra = "".join(f"\n{k}={v!r}" for k, v in sorted(kwargs.items()))
    return GenericModel(
        kind="flax",
        name=name or f"flax:{type(module).__name__}",
        apply=apply,
        params=variables,
        layers=tuple(layers),
        preprocessing=preprocessing,
        input_size=input_size,
        channels=channels,
        architecture=repr(module) + extra,
    )


def from_nnx(
    model: Any,
    *,
    preprocessing: Preprocessing | None = None,
    input_size: int | None = None,
    channels: int = 3,
    name: str | None = None,
) -> GenericModel:
    """A Flax NNX module (weights inside it) as a GenericModel, like :func:`from_flax`.

    Layers are the submodules' ``__call__`` outputs, read with ``nnx.capture(...,
    method_outputs=nnx.Intermediate)`` (nothing in the module is edited), named by attribute path
    joined with ``/`` (``blocks/0/conv``), the module's own output ``output`` last. NNX lists a
    module's attributes by name, so the layers come in that order (a parent before its children),
    not always in execution order. The module must be in inference mode (``model.eval()``:
    batch norm on its running statistics, dropout off): one line otherwise.
    """
    from flax import nnx

    if not isinstance(model, nnx.Module):
        raise VizjaxError(f"expected a flax.nnx Module, got {type(model).__name__}")
    for path, node in nnx.iter_graph(model):
        if getattr(node, "use_running_average", True) is False or (
            getattr(node, "deterministic", True) is False
        ):
            where = "/".join(map(str, path)) or type(model).__name__
            raise VizjaxError(
                f"{where} ({type(node).__name__}) is in training mode: call model.eval() first "
                "(batch norm on its running statistics, dropout off)"
            )
    graphdef, rng_state, state = nnx.split(model, nnx.RngState, ...)

    def run(state: Any, x: jax.Array) -> tuple[Any, Any]:
        module = nnx.merge(graphdef, rng_state, state)
        return nnx.capture(module, nnx.Intermediate, method_outputs=nnx.Intermediate)(x)

    size = input_size or DEFAULT_SIZE
    x = jax.ShapeDtypeStruct((1, size, size, channels), jnp.float32)
    try:
        out, captured = jax.eval_shape(run, state, x)
    except Exception as e:
        raise VizjaxError(
            f"{type(model).__name__}(x) failed on a {size}x{size}x{channels} input: "
            f"{_first_line(e)}"
        ) from None
    found: dict[str, tuple[tuple[Any, ...], int]] = {}
    for path, value in nnx.to_flat_state(captured):
        *where, method = path
        if method != "__call__" or not where:  # the module's own output comes last
            continue
        for call, v in enumerate(_unbox(value)):
            if isinstance(v, jax.ShapeDtypeStruct) and len(v.shape) >= 1:
                found[_name(tuple(map(str, where)), call)] = (tuple(where), call)
    layers = [*found, OUTPUT]

    def apply(params: Any, x: jax.Array, names: tuple[str, ...]) -> dict[str, jax.Array]:
        out, captured = run(params, x)
        flat = dict(nnx.to_flat_state(captured))
        result = {}
        for n in names:
            if n == OUTPUT:
                result[n] = out
                continue
            where, call = found[n]
            value = flat[(*where, "__call__")]
            result[n] = _unbox(value)[call]
        return result

    architecture = (
        "\n".join(
            f"{'/'.join(map(str, p))}: {type(node).__name__}"
            for p, node in nnx.iter_graph(model)
            if isinstance(node, nnx.Module)
        )
        + "\n"
        + "\n".join(
            f"{'/'.join(map(str, p))}: {tuple(_unbox(v).shape)}"
            for p, v in nnx.to_flat_state(state)
        )
    )
    return GenericModel(
        kind="flax-nnx",
        name=name or f"flax:{type(model).__name__}",
        apply=apply,
        params=state,
        layers=tuple(layers),
        preprocessing=preprocessing,
        input_size=input_size,
        channels=channels,
        architecture=architecture,
    )


def _unbox(v: Any) -> Any:
    """An NNX variable's value (or the value itself)."""
    return v.get_value() if hasattr(v, "get_value") else v
