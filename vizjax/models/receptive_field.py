"""Receptive fields of any model, measured: the support of a unit's input gradient.

The table networks compute their fields from the table (:meth:`Network.receptive_field`); a
generic model (a Flax or Keras network) has no table, so its field is measured. For a function
``layer_of(x)`` of ONE input image ``(size, size, channels)`` (already preprocessed) to the layer's
activations ``(H', W', C)``, :func:`measure` takes ``jax.grad`` of a unit (the sum of its
channels) with respect to the input, at a few random inputs, and reads the bounding box of the
pixels where the gradient is nonzero at any of them. Two neighbouring units give the stride
(``jump``: the distance between their boxes), the centre unit the size and, with the jump, the
``offset``: the same :class:`~vizjax.models.network.ReceptiveField` the tables give, so the
exemplars crop generic models' units exactly as they crop VGG16's.

Why several random inputs: a ReLU that is off, or a max-pool that picked another input, cuts the
gradient of a path, so one input shows a subset of the field; the union over a few inputs (of
both signs, all units summed over channels) closes it. The measured field is the part of the true
field inside the image: a box that touches the image's edge is not trusted, and the input is
doubled (up to ``max_size``) until the centre unit's field fits. It is checked against VGG16's
and AlexNet's tables in the tests.

Token layers ``(T, C)`` (a ViT's) have no grid to step along: :func:`measure_tokens` gives the
bounding box of the middle token's field, :func:`token_boxes` every token's (a patch embedding's
token: its patch; after attention has mixed them, usually the whole image).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from vizjax.errors import VizjaxError
from vizjax.models.network import ReceptiveField

#: Random inputs whose gradient supports are joined.
SAMPLES = 8


@dataclasses.dataclass(frozen=True)
class Measured:
    """A measured field: ``field`` along y (the one the exemplars use), ``field_x`` along x,
    ``input_size`` the side of the input it was measured at, ``exact`` False where the field
    reaches past the image even at ``max_size`` (then ``size`` is what the image showed)."""

    field: ReceptiveField
    field_x: ReceptiveField
    input_size: int
    exact: bool


def _support(
    layer_of: Callable[[jax.Array], jax.Array],
    size: int,
    channels: int,
    units: list[tuple[int, ...]],
    seed: int,
) -> np.ndarray:
    """``(len(units), size, size)`` bool: the input pixels where the gradient of each unit (the
    sum over its channels) is nonzero at any of :data:`SAMPLES` random inputs."""

    def unit_grad(x: jax.Array, unit: tuple[int, ...]) -> jax.Array:
        g = jax.grad(lambda x: jnp.sum(layer_of(x)[unit]))(x)
        return jnp.any(g != 0, axis=-1)

    @jax.jit
    def supports(xs: jax.Array) -> jax.Array:
        per_unit = [jnp.any(jax.vmap(lambda x, u=u: unit_grad(x, u))(xs), axis=0) for u in units]
        return jnp.stack(per_unit)

    xs = jax.random.normal(jax.random.key(seed), (SAMPLES, size, size, channels), jnp.float32)
    return np.asarray(supports(xs))


def _box(mask: np.ndarray) -> tuple[int, int, int, int] | None:
    """``(y0, x0, y1, x1)`` (stop exclusive) of the True pixels of a 2-D mask; None if none."""
    ys, xs = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if not len(ys):
        return None
    return int(ys[0]), int(xs[0]), int(ys[-1]) + 1, int(xs[-1]) + 1


def _axis_field(a: tuple[int, int], b: tuple[int, int], i: int, n: int) -> tuple[int, int, int]:
    """``(size, jump, offset)`` along one axis from the spans ``a`` of unit ``i`` and ``b`` of unit
    ``i + 1`` (stop exclusive) in an input of length ``n``; spans clipped by the edge are not used
    where an unclipped edge tells the same."""
    (a0, a1), (b0, b1) = a, b
    if a0 > 0 and b0 > 0:
        jump = b0 - a0
    elif a1 < n and b1 < n:
        jump = b1 - a1
    else:
        jump = b0 - a0
    return a1 - a0, jump, a0 - i * jump


def measure(
    layer_of: Callable[[jax.Array], jax.Array],
    size: int,
    channels: int = 3,
    *,
    max_size: int | None = None,
    seed: int = 0,
) -> Measured:
    """The receptive field of a spatial layer's units, measured (see the module docstring).

    ``layer_of(x)``: one preprocessed image ``(size, size, channels)`` -> the layer's activations
    ``(H', W', C)``; it must accept any size from ``size`` up to ``max_size`` (default ``size``:
    a model with a fixed input size is measured at that size only). VizjaxError if the layer's
    output does not depend on its input.
    """
    max_size = max_size or size
    while True:
        shape = jax.eval_shape(layer_of, jax.ShapeDtypeStruct((size, size, channels), jnp.float32))
        if len(shape.shape) != 3:
            raise VizjaxError(f"a spatial layer has (H, W, C) activations; got {shape.shape}")
        h, w = shape.shape[:2]
        # The centre unit and its lower-right neighbour (or upper-left, on a grid of one row).
        i, j = max(0, (h - 1) // 2), max(0, (w - 1) // 2)
        i2, j2 = min(i + 1, h - 1), min(j + 1, w - 1)
        masks = _support(layer_of, size, channels, [(i, j), (i2, j2)], seed)
        centre, nxt = _box(masks[0]), _box(masks[1])
        if centre is None or nxt is None:
            raise VizjaxError("the layer's output does not depend on the input (zero gradient)")
        fits = centre[0] > 0 and centre[1] > 0 and centre[2] < size and centre[3] < size
        if fits or size * 2 > max_size:
            break
        size *= 2
    fy = _axis_field((centre[0], centre[2]), (nxt[0], nxt[2]), i, size)
    fx = _axis_field((centre[1], centre[3]), (nxt[1], nxt[3]), j, size)
    if i2 == i:  # one row of units: no neighbour to step to; a unit then covers the input
        fy = (fy[0], max(fy[0], 1), fy[2])
    if j2 == j:
        fx = (fx[0], max(fx[0], 1), fx[2])
    return Measured(ReceptiveField(*fy), ReceptiveField(*fx), size, fits)


def measure_tokens(
    layer_of: Callable[[jax.Array], jax.Array], size: int, channels: int = 3, *, seed: int = 0
) -> tuple[int, int, int, int]:
    """``(y0, x0, y1, x1)``: the input box of the middle token of a ``(T, C)`` layer (stop
    exclusive), from its gradient's support. VizjaxError if the token does not depend on the input."""
    shape = jax.eval_shape(layer_of, jax.ShapeDtypeStruct((size, size, channels), jnp.float32))
    if len(shape.shape) != 2:
        raise VizjaxError(f"a token layer has (T, C) activations; got {shape.shape}")
    box = _box(_support(layer_of, size, channels, [(shape.shape[0] // 2,)], seed)[0])
    if box is None:
        raise VizjaxError("the layer's output does not depend on the input (zero gradient)")
    return box


def token_boxes(
    layer_of: Callable[[jax.Array], jax.Array],
    size: int,
    channels: int = 3,
    *,
    seed: int = 0,
    samples: int = 2,
) -> np.ndarray:
    """``(T, 4)`` int32: every token's input box ``(y0, x0, y1, x1)`` (stop exclusive) of a
    ``(T, C)`` layer, from the support of its gradient at ``samples`` random inputs (one backward
    pass per token and input: the exemplars crop a token's images with it). A token whose
    gradient is zero everywhere gets the whole image."""
    shape = jax.eval_shape(layer_of, jax.ShapeDtypeStruct((size, size, channels), jnp.float32))
    if len(shape.shape) != 2:
        raise VizjaxError(f"a token layer has (T, C) activations; got {shape.shape}")

    @jax.jit
    def supports(xs: jax.Array) -> jax.Array:
        def per_input(x: jax.Array) -> jax.Array:
            y, vjp = jax.vjp(layer_of, x)

            def one(t: jax.Array) -> jax.Array:
                cotangent = jnp.zeros_like(y).at[t].set(1.0)
                return jnp.any(vjp(cotangent)[0] != 0, axis=-1)

            return jax.lax.map(one, jnp.arange(y.shape[0]))  # (T, size, size)

        return jnp.any(jax.lax.map(per_input, xs), axis=0)

    xs = jax.random.normal(jax.random.key(seed), (samples, size, size, channels), jnp.float32)
    masks = np.asarray(supports(xs))
    boxes = np.tile(np.asarray([0, 0, size, size], np.int32), (len(masks), 1))
    for t, mask in enumerate(masks):
        box = _box(mask)
        if box is not None:
            boxes[t] = box
    return boxes
