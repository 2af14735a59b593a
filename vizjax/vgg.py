"""VGG16 (Simonyan & Zisserman, 2014) in Flax, with Keras' layer names.

The model is written for one image ``(H, W, 3)`` or a plain batch ``(N, H, W, 3)``, NHWC, any H and
W. It takes RGB pixels on a 0-255 scale and applies the preprocessing of its weights itself, so
callers never need to know whether the weights came from Keras ('caffe') or torchvision ('torch').

``VGG16(...).apply(variables, image, layer="block3_conv3")`` runs the network up to and including
``layer`` and computes nothing after it; ``outputs=("block3_conv1", "block4_conv2")`` returns a dict
of several layers (what an objective asks for). With ``channel=f`` the target convolution computes
only its output channel ``f`` (shape ``(..., H', W', 1)``): the fast path for objectives that read
one channel, saving the most expensive part of the last layer's forward and backward pass. Lucid's
redirected ReLU gradient (:func:`redirected_relu`) is switched on by ``redirect=``.

Parameters are a plain dict ``{layer_name: {"kernel": (3, 3, Cin, Cout), "bias": (Cout,)}}`` (HWIO,
as in both Keras and Flax) wrapped as ``{"params": ...}``.
"""

from __future__ import annotations

import dataclasses
import functools
import json
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from vizjax.conv import IMPLS, conv3x3_winograd_prepared, winograd_pair
from vizjax.errors import VizjaxError

#: The variable collection holding Winograd-transformed weights (:func:`prepare_winograd`).
WINOGRAD = "winograd"

#: Output channels of each block's convolutions: VGG16's (Simonyan & Zisserman, 2014, table 1).
#: A weight set may declare other widths (the tests' tiny network, tests/tiny_network.py); the layer
#: names, kinds and the receptive fields stay VGG16's.
WIDTHS: tuple[int, ...] = (64, 128, 256, 512, 512)
_CONVS_PER_BLOCK = (2, 2, 3, 3, 3)


@functools.lru_cache(maxsize=8)
def layer_table(widths: tuple[int, ...] = WIDTHS) -> tuple[tuple[str, str, int, int], ...]:
    """``(name, kind, input channels, output channels)`` per layer, in network order, for a VGG16
    whose blocks have ``widths`` output channels (5 positive integers)."""
    if len(widths) != len(_CONVS_PER_BLOCK) or not all(
        isinstance(c, int) and c > 0 for c in widths
    ):
        raise VizjaxError(f"VGG16 widths must be 5 positive integers, not {widths!r}")
    rows, cin = [], 3
    for b, (n_convs, cout) in enumerate(zip(_CONVS_PER_BLOCK, widths, strict=True), start=1):
        for c in range(1, n_convs + 1):
            rows.append((f"block{b}_conv{c}", "conv", cin, cout))
            cin = cout
        rows.append((f"block{b}_pool", "pool", cout, cout))
    return tuple(rows)


def conv_shapes(
    widths: tuple[int, ...] = WIDTHS,
) -> dict[str, tuple[tuple[int, ...], tuple[int, ...]]]:
    """``{conv_name: ((3, 3, cin, cout), (cout,))}``: the kernel and bias shapes for ``widths``."""
    return {
        name: ((3, 3, cin, cout), (cout,))
        for name, kind, cin, cout in layer_table(widths)
        if kind == "conv"
    }


LAYERS: tuple[tuple[str, str, int, int], ...] = layer_table()
LAYER_NAMES: tuple[str, ...] = tuple(r[0] for r in LAYERS)
CONV_LAYERS: tuple[str, ...] = tuple(r[0] for r in LAYERS if r[1] == "conv")
#: ``{conv_name: ((3, 3, cin, cout), (cout,))}`` -- the kernel and bias shapes of VGG16's weights.
CONV_SHAPES: dict[str, tuple[tuple[int, ...], tuple[int, ...]]] = conv_shapes()


def num_channels(layer: str, widths: tuple[int, ...] = WIDTHS) -> int:
    """Number of output channels (filters) of ``layer`` in a network of ``widths``."""
    return layer_table(widths)[layer_index(layer)][3]


def widths_of(params: dict[str, Any]) -> tuple[int, ...]:
    """The block widths of a parameter tree (``{"params": {...}}`` or the inner dict), read from
    each block's first bias: what :class:`VGG16` needs to run ``params``."""
    p = params.get("params", params)
    return tuple(int(np.shape(p[f"block{b}_conv1"]["bias"])[0]) for b in range(1, 6))


def layer_index(layer: str) -> int:
    """Position of ``layer`` in the network; a clear error lists the valid names otherwise."""
    try:
        return LAYER_NAMES.index(layer)
    except ValueError:
        raise VizjaxError(
            f"unknown layer {layer!r}; valid layers: {', '.join(LAYER_NAMES)}"
        ) from None


def num_pools_through(layer: str) -> int:
    """How many 2x2 max-pools the signal passes through up to and including ``layer``."""
    return sum(1 for name, kind, *_ in LAYERS[: layer_index(layer) + 1] if kind == "pool")


def output_hw(layer: str, height: int, width: int) -> tuple[int, int]:
    """Spatial size of ``layer``'s output for an ``height x width`` input (VALID pools floor)."""
    h, w = height, width
    for _, kind, *_ in LAYERS[: layer_index(layer) + 1]:
        if kind == "pool":
            h, w = h // 2, w // 2
    return h, w


def min_input_size(layer: str) -> int:
    """Smallest square input for which ``layer``'s output is at least 1x1."""
    return 2 ** num_pools_through(layer)


@dataclasses.dataclass(frozen=True)
class Preprocessing:
    """How RGB 0-255 pixels become network input: optional RGB->BGR, then ``(x / scale - mean) / std``.

    ``mean`` and ``std`` are given in the channel order the network sees (after the flip).
    """

    name: str
    bgr: bool
    scale: float
    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    def __call__(self, rgb: jax.Array) -> jax.Array:
        x = rgb[..., ::-1] if self.bgr else rgb
        mean = jnp.asarray(self.mean, x.dtype)
        std = jnp.asarray(self.std, x.dtype)
        return (x / self.scale - mean) / std

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Preprocessing:
        return cls(
            name=str(d["name"]),
            bgr=bool(d["bgr"]),
            scale=float(d["scale"]),
            mean=tuple(float(v) for v in d["mean"]),  # type: ignore[arg-type]
            std=tuple(float(v) for v in d["std"]),  # type: ignore[arg-type]
        )


#: torchvision's ImageNet models: RGB / 255, then per-channel mean and std.
TORCH = Preprocessing("torch", False, 255.0, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
#: Keras' ``vgg16.preprocess_input`` ('caffe'): RGB->BGR, subtract the BGR ImageNet mean, no scaling.
CAFFE = Preprocessing("caffe", True, 1.0, (103.939, 116.779, 123.68), (1.0, 1.0, 1.0))
#: Feed pixels unchanged (the seed article's code never calls ``preprocess_input``).
IDENTITY = Preprocessing("none", False, 1.0, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0))


def conv3x3(x: jax.Array, kernel: jax.Array, bias: jax.Array, impl: str = "xla") -> jax.Array:
    """3x3 'SAME' cross-correlation of ``x (N, H, W, Cin)`` with ``kernel (3, 3, Cin, Cout)``, plus bias.

    ``impl`` picks the algorithm (:mod:`vizjax.conv`): ``"xla"`` or ``"winograd"``; same result.
    """
    return IMPLS[impl](x, kernel) + bias


def max_pool2x2(x: jax.Array) -> jax.Array:
    """2x2 max-pool, stride 2, VALID (odd trailing rows/columns are dropped, as in Keras).

    Written as a reshape and a max over the window axes rather than ``lax.reduce_window``: the same
    forward, but its gradient avoids XLA:CPU's slow select-and-scatter (+30% for the whole ascent
    step at block3_conv3, 128 px; bench/README.md). At exact ties the gradient is split evenly
    instead of going to one element; after a ReLU, ties are zeros whose gradient is zero anyway.
    """
    n, h, w, c = x.shape
    x = x[:, : h // 2 * 2, : w // 2 * 2]
    return jnp.max(x.reshape(n, h // 2, 2, w // 2, 2, c), axis=(2, 4))


@jax.custom_vjp
def redirected_relu(x: jax.Array, on: jax.Array) -> jax.Array:
    """ReLU whose gradient, while ``on`` (a 0-d bool), is Lucid's *redirected* gradient.

    Lucid (``lucid/misc/redirected_relu_grad.py``): where the true ReLU gradient of an example is
    zero everywhere (its unit never turned on, so the ascent cannot start), let through the
    gradient that pushes the ReLU's input *up* and block the one that would push a negative input
    further down; examples whose true gradient is non-zero keep it. Off, it is the plain ReLU
    gradient. The check is per example (leading axis), as Lucid does per batch entry.
    """
    return jnp.maximum(x, 0)


def _redirected_relu_fwd(x: jax.Array, on: jax.Array):
    return jnp.maximum(x, 0), (x, on)


def _redirected_relu_bwd(res, g: jax.Array):
    x, on = res
    relu_grad = jnp.where(x < 0, jnp.zeros_like(g), g)

    def redirect() -> jax.Array:
        # We differentiate the objective (ascent), Lucid the loss = -objective (descent): the
        # gradient that pushes a negative input lower is the negative one here.
        redirected = jnp.where((x < 0) & (g < 0), jnp.zeros_like(g), g)
        axes = tuple(range(1, g.ndim))
        passes = jnp.any(relu_grad != 0, axis=axes, keepdims=True)  # per example
        return jnp.where(passes, relu_grad, redirected)

    # A branch, not a select: after Lucid's first 16 steps the extra passes over every ReLU's
    # input cost nothing (XLA counts +11% bytes per lucid step at block5_conv1 with the select).
    grad = jax.lax.cond(on, redirect, lambda: relu_grad)
    return grad, np.zeros(np.shape(on), jax.dtypes.float0)


redirected_relu.defvjp(_redirected_relu_fwd, _redirected_relu_bwd)


class Conv3x3(nn.Module):
    """A VGG convolution (+ ReLU) whose parameters are named ``kernel`` and ``bias`` as in Keras."""

    cin: int
    features: int
    dtype: Any = jnp.float32
    impl: str = "xla"

    @nn.compact
    def __call__(
        self,
        x: jax.Array,
        channel: jax.Array | int | None = None,
        redirect: jax.Array | None = None,
    ) -> jax.Array:
        kernel = self.param(
            "kernel", nn.initializers.lecun_normal(), (3, 3, self.cin, self.features), jnp.float32
        )
        bias = self.param("bias", nn.initializers.zeros, (self.features,), jnp.float32)
        impl = self.impl
        if channel is not None:
            # Only the one output channel the objective reads: a (3, 3, Cin, 1) kernel.
            kernel = lax.dynamic_slice_in_dim(kernel, channel, 1, axis=3)
            bias = lax.dynamic_slice_in_dim(bias, channel, 1, axis=0)
            impl = "xla"  # one output channel: nothing for Winograd to save
        if impl == "winograd" and self.has_variable(WINOGRAD, "u"):
            # Transformed weights prepared once per run (see prepare_winograd).
            u = self.get_variable(WINOGRAD, "u").astype(self.dtype)
            uf = self.get_variable(WINOGRAD, "u_flipped").astype(self.dtype)
            y = conv3x3_winograd_prepared(x.astype(self.dtype), u, uf) + bias.astype(self.dtype)
        else:
            y = conv3x3(
                x.astype(self.dtype), kernel.astype(self.dtype), bias.astype(self.dtype), impl
            )
        return nn.relu(y) if redirect is None else redirected_relu(y, redirect)


class VGG16(nn.Module):
    """VGG16's convolutional part; see the module docstring.

    Attributes:
      preprocessing: applied to the RGB 0-255 input inside the forward.
      dtype: compute dtype of weights and activations (``jnp.float32`` or ``jnp.bfloat16``).
      winograd: the convolutions computed by Winograd F(2x2, 3x3) instead of XLA's convolution
        (:mod:`vizjax.conv`; same result, faster on CPU).
      widths: output channels per block (:data:`WIDTHS`; :func:`widths_of` reads them from a
        weight set).
    """

    preprocessing: Preprocessing = TORCH
    dtype: Any = jnp.float32
    winograd: tuple[str, ...] = ()
    widths: tuple[int, ...] = WIDTHS

    @nn.compact
    def __call__(
        self,
        image: jax.Array,
        layer: str | None = "block5_pool",
        channel: jax.Array | int | None = None,
        *,
        outputs: tuple[str, ...] | None = None,
        redirect: jax.Array | None = None,
    ) -> jax.Array | dict[str, jax.Array]:
        """Run up to ``layer`` (or the deepest of ``outputs``); ``image`` is ``(H, W, 3)`` or
        ``(N, H, W, 3)``, RGB 0-255.

        Returns ``layer``'s output (post-ReLU for convolutions) with the same leading shape as the
        input, or with ``outputs`` a dict of those layers' outputs. With ``channel`` the last layer
        computed must be a convolution and only that channel of it is computed (last axis of size
        1): the fast path for objectives that read one channel. ``redirect`` (a 0-d bool) switches
        every ReLU to :func:`redirected_relu`'s gradient while true.
        """
        names = (layer,) if outputs is None else tuple(outputs)
        if not names or any(n is None for n in names):
            raise VizjaxError("give a layer or a non-empty outputs=(...) of layer names")
        target = max(layer_index(n) for n in names)
        if channel is not None and LAYERS[target][1] != "conv":
            raise VizjaxError(f"channel= needs a convolution layer, not {LAYER_NAMES[target]!r}")
        single = image.ndim == 3
        x = image[None] if single else image
        x = self.preprocessing(x.astype(jnp.float32))
        found = {}
        for i, (name, kind, cin, cout) in enumerate(layer_table(self.widths)[: target + 1]):
            if kind == "conv":
                impl = "winograd" if name in self.winograd else "xla"
                conv = Conv3x3(cin, cout, self.dtype, impl, name=name)
                x = conv(x, channel if i == target else None, redirect)
            else:
                x = max_pool2x2(x)
            if name in names:
                found[name] = x[0] if single else x
        return found[names[0]] if outputs is None else found


def prepare_winograd(params: dict[str, Any], layers: tuple[str, ...]) -> dict[str, Any]:
    """``params`` plus, for each of ``layers``, its Winograd-transformed weights
    (:func:`vizjax.conv.winograd_pair`) in the ``"winograd"`` collection, so a network that runs
    many steps transforms its weights once, not in every step (the transform of blocks 2-4 cost
    ~0.1 s per compiled call on a 2-core CPU). Pure jnp: jit it."""
    p = params["params"]
    pairs = {name: winograd_pair(p[name]["kernel"]) for name in layers}
    return {
        **params,
        WINOGRAD: {name: {"u": u, "u_flipped": uf} for name, (u, uf) in pairs.items()},
    }


def init_params(seed: int = 0, widths: tuple[int, ...] = WIDTHS) -> dict[str, Any]:
    """Random parameters (LeCun normal kernels, zero biases) of a network of ``widths``, the real
    shapes by default (for tests and shape checks), as ``{"params": ...}``."""
    model = VGG16(widths=widths)
    variables = model.init(jax.random.key(seed), jnp.zeros((32, 32, 3)), "block5_pool")
    return jax.tree.map(np.asarray, dict(variables))


def param_count(params: dict[str, Any]) -> int:
    """Total number of scalars in a parameter tree."""
    return int(sum(np.size(a) for a in jax.tree.leaves(params)))


def summary(params: dict[str, Any] | None = None) -> str:
    """A table in the spirit of Keras' ``model.summary()``: layer, type, output shape, parameters."""
    counts, widths = {}, WIDTHS
    if params is not None:
        p = params.get("params", params)
        counts = {name: param_count(p[name]) for name in p}
        widths = widths_of(p)
    rule, thick = "_" * 65, "=" * 65
    lines = [rule, f"{'Layer (type)':<29}{'Output Shape':<26}{'Param #':<10}", thick]
    rows = [("input (InputLayer)", "(None, None, None, 3)", 0)]
    for name, kind, cin, cout in layer_table(widths):
        if kind == "conv":
            n = counts.get(name, 9 * cin * cout + cout)
            rows.append((f"{name} (Conv2D)", f"(None, None, None, {cout})", n))
        else:
            rows.append((f"{name} (MaxPooling2D)", f"(None, None, None, {cout})", 0))
    for i, (label, shape, n) in enumerate(rows):
        lines.append(f"{label:<29}{shape:<26}{n:<10,}")
        lines.append(rule if i < len(rows) - 1 else thick)
    total = sum(r[2] for r in rows)
    lines += [f"Total params: {total:,}", f"Trainable params: {total:,}", "Non-trainable params: 0"]
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------------
# Receptive fields (the exemplars' crops, the gallery).


@dataclasses.dataclass(frozen=True)
class ReceptiveField:
    """Where a unit of a layer looks, in input pixels, along one axis (VGG16 is square).

    Unit ``i`` of the layer's output grid depends exactly on input pixels
    ``offset + i * jump <= p < offset + i * jump + size`` (``offset`` may be negative: the SAME
    padding reaches outside the image).
    """

    size: int
    jump: int
    offset: int

    def span(self, i: int | np.ndarray) -> tuple[Any, Any]:
        """``(start, stop)`` of unit ``i``'s field, stop exclusive, not clipped."""
        start = self.offset + np.asarray(i) * self.jump
        return start, start + self.size

    def box(self, y: int, x: int, input_size: int) -> tuple[int, int, int, int]:
        """``(y0, x0, y1, x1)`` of unit ``(y, x)``'s field clipped to an ``input_size`` square."""
        y0, y1 = self.span(y)
        x0, x1 = self.span(x)
        clip = functools.partial(np.clip, a_min=0, a_max=input_size)
        return int(clip(y0)), int(clip(x0)), int(clip(y1)), int(clip(x1))


@functools.cache
def receptive_field(layer: str) -> ReceptiveField:
    """The receptive field of ``layer``'s units, derived from :data:`LAYERS`.

    The usual recurrence, one layer at a time, with ``(size, jump, offset)`` starting at
    ``(1, 1, 0)`` (one input pixel): a 3x3 stride-1 SAME convolution widens the field by two input
    steps (``size += 2 * jump``) and, padding one unit on each side, moves its start one step out
    (``offset -= jump``); a 2x2 stride-2 VALID pool widens it by one step (``size += jump``) and
    doubles the step (``jump *= 2``).
    """
    size, jump, offset = 1, 1, 0
    for _, kind, *_ in LAYERS[: layer_index(layer) + 1]:
        if kind == "conv":
            k, stride, pad = 3, 1, 1
        elif kind == "pool":
            k, stride, pad = 2, 2, 0
        else:  # a new kind of layer must say how it moves the field
            raise VizjaxError(f"no receptive-field rule for layer kind {kind!r}")
        size += (k - 1) * jump
        offset -= pad * jump
        jump *= stride
    return ReceptiveField(size=size, jump=jump, offset=offset)
