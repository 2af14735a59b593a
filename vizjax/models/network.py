"""The model interface: a convolutional network described by its layer table, and everything that
follows from the table alone.

A :class:`Network` is a frozen, hashable description (a name, the widths it was built with, and
one :class:`Layer` row per layer: kind, kernel, stride, padding, channels), so it can be a static
argument of compiled programs. The families build their tables (:mod:`vizjax.models.vgg` for VGG16 and
VGG19, :mod:`vizjax.models.alexnet`); :mod:`vizjax.models` is the registry by name. From the table alone
come output sizes and receptive fields for any input size, parameter shapes and counts, the
Keras-style summary, which convolutions Winograd computes, and the Flax module :class:`ConvNet`.

:class:`ConvNet` is written for one image ``(H, W, 3)`` or a plain batch ``(N, H, W, 3)``, NHWC,
RGB pixels on a 0-255 scale; it applies its weights' :class:`Preprocessing` itself.
``apply(variables, image, layer=name)`` runs up to and including ``layer`` and computes nothing
after it; ``outputs=(...)`` returns a dict of several layers (what an objective asks for). With
``channel=f`` the target convolution computes only its output channel ``f`` (shape
``(..., H', W', 1)``): the fast path for objectives that read one channel. Lucid's redirected ReLU
gradient (:func:`redirected_relu`) is switched on by ``redirect=``. Parameters are a plain dict
``{layer_name: {"kernel": (k, k, Cin, Cout), "bias": (Cout,)}}`` (HWIO, as in Keras and Flax)
wrapped as ``{"params": ...}``.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import json
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from vizjax.errors import VizjaxError
from vizjax.models.conv import IMPLS, conv3x3_winograd_prepared, winograd_pair
from vizjax.models.onednn import conv3x3_onednn

#: The variable collection holding Winograd-transformed weights (:func:`prepare_winograd`).
WINOGRAD = "winograd"


# --------------------------------------------------------------------------------------------------
# The layer table.


@dataclasses.dataclass(frozen=True)
class Layer:
    """One row of a network's table: a convolution (followed by a ReLU) or a max-pool.

    ``kernel`` x ``kernel`` window, ``stride``, ``padding`` on each side (zeros for a convolution;
    pools have none here), ``cin`` input and ``cout`` output channels (equal for a pool).
    """

    name: str
    kind: str  # "conv" or "pool"
    kernel: int
    stride: int
    padding: int
    cin: int
    cout: int

    def out_size(self, n: int) -> int:
        """Output length along one axis for an input of length ``n`` (floor, as Keras and
        torchvision do); 0 or less when the input is too small."""
        return (n + 2 * self.padding - self.kernel) // self.stride + 1

    def param_shapes(self) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """``((k, k, cin, cout), (cout,))``: a convolution's kernel and bias shapes."""
        return (self.kernel, self.kernel, self.cin, self.cout), (self.cout,)


@dataclasses.dataclass(frozen=True)
class ReceptiveField:
    """Where a unit of a layer looks, in input pixels, along one axis (the networks are square).

    Unit ``i`` of the layer's output grid depends exactly on input pixels
    ``offset + i * jump <= p < offset + i * jump + size`` (``offset`` may be negative: the
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


@dataclasses.dataclass(frozen=True)
class Network:
    """A network by its layer table (see the module docstring); built by a family's function
    (:func:`vizjax.models.vgg.network`, :func:`vizjax.models.alexnet.network`), named in :mod:`vizjax.models`.

    Attributes:
      name: the model's name (``"vgg16"``, ``"vgg19"``, ``"alexnet"``).
      widths: the output channels the family built it with (VGG: per block; AlexNet: per conv).
      layers: the table, in network order.
    """

    name: str
    widths: tuple[int, ...]
    layers: tuple[Layer, ...]

    @property
    def layer_names(self) -> tuple[str, ...]:
        return tuple(r.name for r in self.layers)

    @property
    def conv_layers(self) -> tuple[str, ...]:
        return tuple(r.name for r in self.layers if r.kind == "conv")

    def layer_index(self, layer: str) -> int:
        """Position of ``layer`` in the network; a clear error lists the valid names otherwise."""
        try:
            return self.layer_names.index(layer)
        except ValueError:
            raise VizjaxError(
                f"unknown layer {layer!r} for {self.name}; valid layers: "
                f"{', '.join(self.layer_names)}"
            ) from None

    def layer(self, layer: str) -> Layer:
        return self.layers[self.layer_index(layer)]

    def num_channels(self, layer: str) -> int:
        """Number of output channels (filters) of ``layer``."""
        return self.layer(layer).cout

    def conv_shapes(self) -> dict[str, tuple[tuple[int, ...], tuple[int, ...]]]:
        """``{conv_name: ((k, k, cin, cout), (cout,))}``: the kernel and bias shapes."""
        return {r.name: r.param_shapes() for r in self.layers if r.kind == "conv"}

    def output_hw(self, layer: str, height: int, width: int) -> tuple[int, int]:
        """Spatial size of ``layer``'s output for a ``height x width`` input (``floor((n + 2p -
        k) / s) + 1`` per layer; 0 once the input is too small)."""
        h, w = height, width
        for r in self.layers[: self.layer_index(layer) + 1]:
            h, w = max(0, r.out_size(h)), max(0, r.out_size(w))
        return h, w

    def min_input_size(self, layer: str) -> int:
        """Smallest square input for which ``layer``'s output is at least 1x1."""
        n = 1
        while self.output_hw(layer, n, n)[0] < 1:
            n += 1
        return n

    def receptive_field(self, layer: str) -> ReceptiveField:
        """The receptive field of ``layer``'s units, from the table.

        The usual recurrence, one layer at a time, with ``(size, jump, offset)`` starting at
        ``(1, 1, 0)`` (one input pixel): a ``k x k`` window widens the field by ``k - 1`` input
        steps (``size += (k - 1) * jump``), ``p`` padding moves its start ``p`` steps out
        (``offset -= p * jump``), and a stride multiplies the step (``jump *= stride``).
        """
        size, jump, offset = 1, 1, 0
        for r in self.layers[: self.layer_index(layer) + 1]:
            size += (r.kernel - 1) * jump
            offset -= r.padding * jump
            jump *= r.stride
        return ReceptiveField(size=size, jump=jump, offset=offset)

    @property
    def winograd_layers(self) -> tuple[str, ...]:
        """Convolutions computed by Winograd F(2x2, 3x3) when a run asks for it: the 3x3 stride-1
        'SAME' ones after the first pool. For VGG16 that is blocks 2-5, where it measured faster on
        XLA:CPU (+28% at block3_conv3, +36% at block5_conv1, 128 px; bench/README.md); on block1
        (3 and 64 input channels at full resolution) XLA's own convolution was faster."""
        first_pool = next((i for i, r in enumerate(self.layers) if r.kind == "pool"), 0)
        return tuple(
            r.name
            for r in self.layers[first_pool:]
            if r.kind == "conv" and (r.kernel, r.stride, r.padding) == (3, 1, 1)
        )

    def module(
        self,
        preprocessing: Preprocessing,
        dtype: Any = jnp.float32,
        winograd: tuple[str, ...] = (),
        onednn: bool = False,
    ) -> ConvNet:
        """The Flax module of this network (see :class:`ConvNet`)."""
        return ConvNet(self, preprocessing, dtype, winograd, onednn)

    def init_params(self, seed: int = 0) -> dict[str, Any]:
        """Random parameters (LeCun normal kernels, zero biases), numpy, as ``{"params": ...}``."""
        rng = np.random.default_rng(seed)
        out = {}
        for name, (kshape, bshape) in self.conv_shapes().items():
            fan_in = kshape[0] * kshape[1] * kshape[2]
            out[name] = {
                "kernel": (rng.standard_normal(kshape) / np.sqrt(fan_in)).astype(np.float32),
                "bias": np.zeros(bshape, np.float32),
            }
        return {"params": out}

    def summary(self, params: dict[str, Any] | None = None) -> str:
        """A table in the spirit of Keras' ``model.summary()``: layer, type, output shape,
        parameters (counted from ``params`` when given, else from the table)."""
        counts = {}
        if params is not None:
            p = params.get("params", params)
            counts = {name: param_count(p[name]) for name in p}
        rule, thick = "_" * 65, "=" * 65
        lines = [
            f"Model: {self.name}",
            rule,
            f"{'Layer (type)':<29}{'Output Shape':<26}{'Param #':<10}",
            thick,
        ]
        rows = [("input (InputLayer)", "(None, None, None, 3)", 0)]
        for r in self.layers:
            if r.kind == "conv":
                kshape, bshape = r.param_shapes()
                n = counts.get(r.name, int(np.prod(kshape)) + bshape[0])
                rows.append((f"{r.name} (Conv2D)", f"(None, None, None, {r.cout})", n))
            else:
                rows.append((f"{r.name} (MaxPooling2D)", f"(None, None, None, {r.cout})", 0))
        for i, (label, shape, n) in enumerate(rows):
            lines.append(f"{label:<29}{shape:<26}{n:<10,}")
            lines.append(rule if i < len(rows) - 1 else thick)
        total = sum(r[2] for r in rows)
        lines += [
            f"Total params: {total:,}",
            f"Trainable params: {total:,}",
            "Non-trainable params: 0",
        ]
        return "\n".join(lines)


def param_count(params: dict[str, Any]) -> int:
    """Total number of scalars in a parameter tree."""
    return int(sum(np.size(a) for a in jax.tree.leaves(params)))


# --------------------------------------------------------------------------------------------------
# Preprocessing.


@dataclasses.dataclass(frozen=True)
class Preprocessing:
    """How RGB 0-255 pixels become network input: optional RGB->BGR, then ``(x / scale - mean) / std``.

    ``mean`` and ``std`` are given in the channel order the network sees (after the flip), one
    value per input channel (3 for RGB; a model with other than 3 channels has as many, or one
    value for every channel).
    """

    name: str
    bgr: bool
    scale: float
    mean: tuple[float, ...]
    std: tuple[float, ...]

    def __call__(self, rgb: jax.Array) -> jax.Array:
        x = rgb[..., ::-1] if self.bgr else rgb
        # Equal values for every channel (none, tf) are one value: they fit any channel count.
        mean = jnp.asarray(self.mean[:1] if len(set(self.mean)) == 1 else self.mean, x.dtype)
        std = jnp.asarray(self.std[:1] if len(set(self.std)) == 1 else self.std, x.dtype)
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
#: Keras' ``preprocess_input`` of the 'tf' mode (Inception, MobileNet...): ``x / 127.5 - 1``.
TF = Preprocessing("tf", False, 127.5, (1.0, 1.0, 1.0), (1.0, 1.0, 1.0))
#: The preprocessings known by name (``--preprocess caffe|torch|tf|none``).
PREPROCESSINGS = {p.name: p for p in (CAFFE, TORCH, TF, IDENTITY)}


def parse_preprocessing(text: str) -> Preprocessing:
    """``--preprocess``'s value: a name of :data:`PREPROCESSINGS`, or the explicit form
    ``mean=M,std=S,scale=K[,bgr=1]`` where ``M`` and ``S`` are one value (every channel) or one per
    channel separated by ``/`` (``mean=0.485/0.456/0.406,std=0.229/0.224/0.225,scale=255``)."""
    text = text.strip()
    if text in PREPROCESSINGS:
        return PREPROCESSINGS[text]
    fields: dict[str, str] = {}
    for part in text.split(","):
        key, eq, value = part.partition("=")
        if not eq or key.strip() not in ("mean", "std", "scale", "bgr"):
            raise VizjaxError(
                f"bad --preprocess {text!r}: use {'|'.join(PREPROCESSINGS)} or "
                "mean=M,std=S,scale=K (M, S: one value or one per channel, joined by '/')"
            )
        fields[key.strip()] = value.strip()
    try:
        mean = tuple(float(v) for v in fields.get("mean", "0").split("/"))
        std = tuple(float(v) for v in fields.get("std", "1").split("/"))
        scale = float(fields.get("scale", "1"))
        bgr = fields.get("bgr", "0").lower() in ("1", "true", "yes")
    except ValueError:
        raise VizjaxError(f"bad --preprocess {text!r}: mean, std and scale are numbers") from None
    if scale == 0 or any(v == 0 for v in std):
        raise VizjaxError(f"bad --preprocess {text!r}: scale and std must not be 0")
    return Preprocessing("explicit", bgr, scale, mean, std)


# --------------------------------------------------------------------------------------------------
# The layers' computations.


def conv(x: jax.Array, kernel: jax.Array, layer: Layer, impl: str = "xla") -> jax.Array:
    """``x (N, H, W, Cin)`` cross-correlated with ``kernel (k, k, Cin, Cout)`` at ``layer``'s
    stride and zero padding, no bias. 3x3 stride-1 'SAME' convolutions go through
    :data:`vizjax.models.conv.IMPLS` (``impl``: ``"xla"`` or ``"winograd"``; same result) or, with
    ``"onednn"``, through :func:`vizjax.models.onednn.conv3x3_onednn`."""
    if (layer.kernel, layer.stride, layer.padding) == (3, 1, 1):
        if impl == "onednn":
            return conv3x3_onednn(x, kernel)
        return IMPLS[impl](x, kernel)
    p = layer.padding
    return lax.conv_general_dilated(
        x,
        kernel,
        (layer.stride, layer.stride),
        ((p, p), (p, p)),
        dimension_numbers=("NHWC", "HWIO", "NHWC"),
    )


def max_pool2x2(x: jax.Array) -> jax.Array:
    """2x2 max-pool, stride 2, VALID of ``x (N, H, W, C)`` (odd trailing rows/columns are dropped,
    as in Keras): :func:`pool_max` over ``(1, 2, 2, 1)`` windows."""
    return pool_max(x, (1, 2, 2, 1))


@functools.partial(jax.custom_vjp, nondiff_argnums=(1,))
def pool_max(x: jax.Array, window: tuple[int, ...]) -> jax.Array:
    """VALID max over non-overlapping windows (window == stride per axis); trailing elements that
    fill no window are dropped, as ``reduce_window`` does.

    Written as a reshape and a max over the window axes rather than ``lax.reduce_window``: the same
    forward, but its gradient avoids XLA:CPU's slow select-and-scatter (+30% for the whole ascent
    step at block3_conv3, 128 px; bench/README.md). The gradient goes to the first maximal element
    of each window in row-major order, as TensorFlow's (so Lucid's) and PyTorch's do; autodiff of
    the max would split it among ties with a division, a pass that cost ~7% of the default
    recipe's bfloat16 step at block5_conv1 (XLA profile, ``python -m bench.profile``). Ties are
    zeros after a ReLU, where only the redirected ReLU's first steps let a gradient through.
    """
    return _window_max(x, window)


def _window_max(x: jax.Array, window: tuple[int, ...]) -> jax.Array:
    windows, axes = _pool_windows(x, window)
    return jnp.max(windows, axis=axes)


def _pool_windows(x: jax.Array, window: tuple[int, ...]) -> tuple[jax.Array, tuple[int, ...]]:
    """``x`` without what fills no window, each pooled axis split in two (``(x0, w0)``; an axis
    whose window is 1 stays whole, so that XLA:CPU sees a plain reduction), and the window axes."""
    x = x[tuple(slice(0, s // w * w) for s, w in zip(x.shape, window, strict=True))]
    shape: list[int] = []
    axes: list[int] = []
    for s, w in zip(x.shape, window, strict=True):
        shape += [s] if w == 1 else [s // w, w]
        if w > 1:
            axes.append(len(shape) - 1)
    return x.reshape(shape), tuple(axes)


def _pool_max_fwd(x: jax.Array, window: tuple[int, ...]):
    y = _window_max(x, window)
    return y, (x, y)


def _pool_max_bwd(window: tuple[int, ...], res: tuple[jax.Array, jax.Array], g: jax.Array):
    x, y = res
    windows, axes = _pool_windows(x, window)
    pooled = [w for w in window if w > 1]
    taken = jnp.zeros(y.shape, bool)
    parts = []
    for offset in itertools.product(*(range(w) for w in pooled)):  # row-major
        index = [slice(None)] * windows.ndim
        for axis, o in zip(axes, offset, strict=True):
            index[axis] = o
        first = (windows[tuple(index)] == y) & ~taken
        taken = taken | first
        parts.append(jnp.where(first, g, jnp.zeros_like(g)))
    k = len(pooled)
    grad = jnp.stack(parts).reshape(*pooled, *y.shape)  # (w_a, w_b, ..., y0, y1, ...)
    order, j = [], 0
    for i, w in enumerate(window):
        order.append(k + i)
        if w > 1:
            order.append(j)
            j += 1
    grad = grad.transpose(order).reshape([s * w for s, w in zip(y.shape, window, strict=True)])
    return (jnp.pad(grad, [(0, s - t) for s, t in zip(x.shape, grad.shape, strict=True)]),)


pool_max.defvjp(_pool_max_fwd, _pool_max_bwd)


def max_pool(x: jax.Array, layer: Layer) -> jax.Array:
    """``layer``'s VALID max-pool of ``x (N, H, W, C)``. Non-overlapping 2x2 windows are
    :func:`max_pool2x2`; others (AlexNet's 3x3 stride 2) are the max of the ``k * k`` strided
    slices, for the same reason (no select-and-scatter in the gradient)."""
    if layer.padding:
        raise VizjaxError(f"{layer.name}: padded pools are not supported")
    if (layer.kernel, layer.stride) == (2, 2):
        return max_pool2x2(x)
    k, s = layer.kernel, layer.stride
    oh, ow = layer.out_size(x.shape[1]), layer.out_size(x.shape[2])
    views = [
        x[:, i : i + s * (oh - 1) + 1 : s, j : j + s * (ow - 1) + 1 : s]
        for i in range(k)
        for j in range(k)
    ]
    return functools.reduce(jnp.maximum, views)


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


# --------------------------------------------------------------------------------------------------
# The Flax module.


class Conv(nn.Module):
    """A convolution (+ ReLU) whose parameters are named ``kernel`` and ``bias`` as in Keras."""

    layer: Layer
    dtype: Any = jnp.float32
    impl: str = "xla"

    @nn.compact
    def __call__(
        self,
        x: jax.Array,
        channel: jax.Array | int | None = None,
        redirect: jax.Array | None = None,
    ) -> jax.Array:
        kshape, bshape = self.layer.param_shapes()
        kernel = self.param("kernel", nn.initializers.lecun_normal(), kshape, jnp.float32)
        bias = self.param("bias", nn.initializers.zeros, bshape, jnp.float32)
        impl = self.impl
        if channel is not None:
            # Only the one output channel the objective reads: a (k, k, Cin, 1) kernel.
            kernel = lax.dynamic_slice_in_dim(kernel, channel, 1, axis=3)
            bias = lax.dynamic_slice_in_dim(bias, channel, 1, axis=0)
            impl = "xla"  # one output channel: nothing for Winograd to save
        if impl == "winograd" and self.has_variable(WINOGRAD, "u"):
            # Transformed weights prepared once per run (see prepare_winograd).
            u = self.get_variable(WINOGRAD, "u").astype(self.dtype)
            uf = self.get_variable(WINOGRAD, "u_flipped").astype(self.dtype)
            y = conv3x3_winograd_prepared(x.astype(self.dtype), u, uf) + bias.astype(self.dtype)
        else:
            y = conv(x.astype(self.dtype), kernel.astype(self.dtype), self.layer, impl)
            y = y + bias.astype(self.dtype)
        return nn.relu(y) if redirect is None else redirected_relu(y, redirect)


class ConvNet(nn.Module):
    """A :class:`Network`'s convolutional part; see the module docstring.

    Attributes:
      network: the layer table.
      preprocessing: applied to the RGB 0-255 input inside the forward.
      dtype: compute dtype of weights and activations (``jnp.float32`` or ``jnp.bfloat16``).
      winograd: the convolutions computed by Winograd F(2x2, 3x3) instead of XLA's convolution
        (:mod:`vizjax.models.conv`; same result, faster on CPU); a subset of
        :attr:`Network.winograd_layers`.
      onednn: every other 3x3 stride-1 'SAME' convolution computed by oneDNN
        (:mod:`vizjax.models.onednn`: Intel AMX's bfloat16 unit where the CPU has one).
    """

    network: Network
    preprocessing: Preprocessing = TORCH
    dtype: Any = jnp.float32
    winograd: tuple[str, ...] = ()
    onednn: bool = False

    @nn.compact
    def __call__(
        self,
        image: jax.Array,
        layer: str | None = None,
        channel: jax.Array | int | None = None,
        *,
        outputs: tuple[str, ...] | None = None,
        redirect: jax.Array | None = None,
    ) -> jax.Array | dict[str, jax.Array]:
        """Run up to ``layer`` (default: the last) or the deepest of ``outputs``; ``image`` is
        ``(H, W, 3)`` or ``(N, H, W, 3)``, RGB 0-255.

        Returns ``layer``'s output (post-ReLU for convolutions) with the same leading shape as the
        input, or with ``outputs`` a dict of those layers' outputs. With ``channel`` the last layer
        computed must be a convolution and only that channel of it is computed (last axis of size
        1): the fast path for objectives that read one channel. ``redirect`` (a 0-d bool) switches
        every ReLU to :func:`redirected_relu`'s gradient while true.
        """
        net = self.network
        if outputs is None and layer is None:
            layer = net.layer_names[-1]
        names = (layer,) if outputs is None else tuple(outputs)
        if not names or any(n is None for n in names):
            raise VizjaxError("give a layer or a non-empty outputs=(...) of layer names")
        target = max(net.layer_index(n) for n in names)
        if channel is not None and net.layers[target].kind != "conv":
            raise VizjaxError(
                f"channel= needs a convolution layer, not {net.layers[target].name!r}"
            )
        for name in self.winograd:
            if name not in net.winograd_layers:
                raise VizjaxError(f"{name} is not a 3x3 stride-1 convolution Winograd computes")
        single = image.ndim == 3
        x = image[None] if single else image
        x = self.preprocessing(x.astype(jnp.float32))
        found = {}
        for i, r in enumerate(net.layers[: target + 1]):
            if r.kind == "conv":
                impl = "winograd" if r.name in self.winograd else "onednn" if self.onednn else "xla"
                x = Conv(r, self.dtype, impl, name=r.name)(
                    x, channel if i == target else None, redirect
                )
            else:
                x = max_pool(x, r)
            if r.name in names:
                found[r.name] = x[0] if single else x
        return found[names[0]] if outputs is None else found


def prepare_winograd(params: dict[str, Any], layers: tuple[str, ...]) -> dict[str, Any]:
    """``params`` plus, for each of ``layers``, its Winograd-transformed weights
    (:func:`vizjax.models.conv.winograd_pair`) in the ``"winograd"`` collection, so a network that runs
    many steps transforms its weights once, not in every step (the transform of blocks 2-4 cost
    ~0.1 s per compiled call on a 2-core CPU). Pure jnp: jit it."""
    p = params["params"]
    pairs = {name: winograd_pair(p[name]["kernel"]) for name in layers}
    return {
        **params,
        WINOGRAD: {name: {"u": u, "u_flipped": uf} for name, (u, uf) in pairs.items()},
    }
