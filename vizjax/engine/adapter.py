"""The network as the engine runs it: one interface over both kinds of model.

The engine takes either a built-in table network's weights (``{"params": {...}}`` of VGG16, VGG19
or AlexNet; :func:`vizjax.models.from_params` tells which) or a
:class:`vizjax.models.generic.GenericModel` (a Flax or Keras network through its adapter). Both
become an adapter (:func:`of`: :class:`Table` or :class:`Generic`, the same methods), which says
what the engine asks of a network:

- ``layer_index``, ``num_channels``, ``output_shape`` (per image, filters on the last axis);
- ``check_layer`` / ``check_size``: one-line refusals before anything is compiled;
- ``forward(preprocessing, preprocess, execution, platform)``: ``fn(params, rgb (B, H, W, C),
  outputs, channel, redirect) -> {layer: (B, ..., C')}`` from RGB 0-255 pixels;
- ``prepare(params, deepest)``: the weights as the compiled program takes them.

:class:`Table` keeps the table networks' fast paths: the one-channel target convolution
(``channel=``), Winograd F(2x2, 3x3) and Lucid's redirected ReLU. :class:`Generic` computes the
requested layers whole and the objective picks the channel; its program is rewritten
(:mod:`vizjax.models.rewrite`) so that its 3x3 convolutions take Winograd where the built-ins do
and its non-overlapping max-pools avoid select-and-scatter. It has no redirected ReLU (the
recipe's ``redirect_relu`` is ignored there, and :func:`redirect_note` says so).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from vizjax import models
from vizjax.engine.execution import Execution
from vizjax.errors import VizjaxError
from vizjax.models import onednn, rewrite
from vizjax.models.generic import DEFAULT_SIZE, GenericModel, check_finite, check_preprocessing
from vizjax.models.network import IDENTITY, Network, Preprocessing, prepare_winograd

#: ``fn(params, rgb (B, H, W, C), outputs, channel, redirect) -> {layer: (B, ..., C')}``.
Forward = Callable[..., dict[str, jax.Array]]


def resolve(params: Any) -> tuple[Network | GenericModel, Any]:
    """``(network, params)``: a GenericModel stands for itself and its own params; anything else is
    a table network's weights (:func:`vizjax.models.from_params`)."""
    if isinstance(params, GenericModel):
        return params, params.params
    return models.from_params(params), params


def of(network: Network | GenericModel) -> Table | Generic:
    """The adapter of a table network (:class:`Table`) or a generic model (:class:`Generic`)."""
    return Generic(network) if isinstance(network, GenericModel) else Table(network)


def redirect_note(network: Network | GenericModel, redirect_relu: int) -> str | None:
    """The one line a run prints when a recipe asks for the redirected ReLU of a model that has
    none; None where nothing needs saying."""
    if redirect_relu and isinstance(network, GenericModel):
        return (
            f"vizjax: the redirected ReLU (redirect_relu={redirect_relu}) is off for "
            f"{network.name}: only the built-in table networks have it"
        )
    return None


def preprocessing_of(
    network: Network | GenericModel, preprocessing: Preprocessing | None
) -> Preprocessing:
    """The preprocessing a run uses: the one given, else a generic model's own; a model whose
    preprocessing nobody knows is a one-line error (never a guess)."""
    if isinstance(network, GenericModel):
        prep = preprocessing or network.preprocessing
        if prep is not None:
            check_preprocessing(prep, network.channels, network.name)
            return prep
    elif preprocessing is not None:
        return preprocessing
    raise VizjaxError(
        f"{of(network).name} does not say what input it expects: pass a preprocessing "
        "(--preprocess caffe|torch|tf|none or mean=..,std=..,scale=..)"
    )


@dataclasses.dataclass(frozen=True)
class Table:
    """A built-in table network (:class:`vizjax.models.network.Network`), with its fast paths."""

    network: Network
    fast: bool = dataclasses.field(default=True, init=False)

    @property
    def name(self) -> str:
        return self.network.name

    def layer_index(self, layer: str) -> int:
        return self.network.layer_index(layer)

    def num_channels(self, layer: str, hw: tuple[int, int] | None = None) -> int:
        return self.network.num_channels(layer)

    def output_shape(self, layer: str, h: int, w: int) -> tuple[int, ...]:
        return (*self.network.output_hw(layer, h, w), self.network.num_channels(layer))

    def check_layer(self, layer: str, hw: tuple[int, int] | None = None) -> None:
        """Filters belong to convolutions: refuse unknown names and pooling layers."""
        if self.network.layer(layer).kind != "conv":
            raise VizjaxError(f"{layer} is a pooling layer; choose a convolution (its filters)")

    def check_size(self, layer: str, h: int, w: int) -> None:
        need = self.network.min_input_size(layer)
        if min(h, w) < need:
            raise VizjaxError(
                f"image size {h}x{w} is too small for {layer}: it needs at least {need}x{need} px"
            )

    def winograd(self, execution: Execution, platform: str) -> tuple[str, ...]:
        on = execution.conv == "winograd" or (
            execution.conv == "auto" and platform == "cpu" and not _amx(execution, platform)
        )
        return self.network.winograd_layers if on else ()

    def module(
        self, preprocessing: Preprocessing, preprocess: bool, execution: Execution, platform: str
    ) -> Any:
        """The Flax :class:`~vizjax.models.network.ConvNet` a run asks for."""
        prep = preprocessing if preprocess else IDENTITY
        return self.network.module(
            prep,
            jnp.dtype(execution.dtype),
            self.winograd(execution, platform),
            onednn=uses_onednn(execution, platform),
        )

    def forward(
        self, preprocessing: Preprocessing, preprocess: bool, execution: Execution, platform: str
    ) -> Forward:
        model = self.module(preprocessing, preprocess, execution, platform)

        def fn(params, x, outputs, channel=None, redirect=None):
            return model.apply(params, x, outputs=outputs, channel=channel, redirect=redirect)

        return fn

    def prepare(self, params: Any, deepest: int, execution: Execution, platform: str) -> Any:
        """The weights plus the Winograd transforms of the convolutions up to ``deepest``."""
        wino = tuple(
            n for n in self.winograd(execution, platform) if self.layer_index(n) <= deepest
        )
        return prepare_winograd(params, wino)


@dataclasses.dataclass(frozen=True)
class Generic:
    """Any network through :class:`vizjax.models.generic.GenericModel` (no fast paths)."""

    model: GenericModel
    fast: bool = dataclasses.field(default=False, init=False)

    @property
    def name(self) -> str:
        return self.model.name

    def layer_index(self, layer: str) -> int:
        return self.model.layer_index(layer)

    def output_shape(self, layer: str, h: int, w: int) -> tuple[int, ...]:
        self.layer_index(layer)
        return tuple(self.model.layer_shapes((h, w))[layer].shape)

    def num_channels(self, layer: str, hw: tuple[int, int] | None = None) -> int:
        h, w = hw or (self.model.input_size or DEFAULT_SIZE,) * 2
        return self.output_shape(layer, h, w)[-1]

    def check_layer(self, layer: str, hw: tuple[int, int] | None = None) -> None:
        """A filter is an index on the last axis of a float activation that depends on the input:
        refuse a layer without a channel axis, an integer output, or a constant one."""
        self.layer_index(layer)
        h, w = hw or (self.model.input_size or DEFAULT_SIZE,) * 2
        shape = self.model.layer_shapes((h, w))[layer]
        if len(shape.shape) < 2:
            raise VizjaxError(
                f"{layer} of {self.name} has no channel axis (its output per image is "
                f"{tuple(shape.shape)}); choose a layer with (H, W, C) maps or (T, C) tokens"
            )
        if not jnp.issubdtype(shape.dtype, jnp.floating):
            raise VizjaxError(
                f"{layer} of {self.name} has an integer output ({shape.dtype}): nothing to "
                "differentiate; choose a float layer"
            )
        check_finite(self.model)
        if not _depends_on_input(self.model, layer, h, w):
            raise VizjaxError(
                f"{layer} of {self.name} does not depend on the input (its gradient is zero "
                "at a random image): nothing to visualize"
            )

    def check_size(self, layer: str, h: int, w: int) -> None:
        size = self.model.input_size
        if size is not None and (h, w) != (size, size):
            raise VizjaxError(
                f"{self.name} takes {size}x{size} inputs only; the network would see {h}x{w} "
                "(leave --size out: the image is then sized so that the network sees its size)"
            )
        self.model.layer_shapes((h, w))  # a one-line error if the model cannot take it

    def forward(
        self, preprocessing: Preprocessing, preprocess: bool, execution: Execution, platform: str
    ) -> Forward:
        prep = preprocessing if preprocess else IDENTITY
        dtype = jnp.dtype(execution.dtype)
        apply = self.model.apply
        conv = "onednn" if uses_onednn(execution, platform) else _winograd(execution, platform)

        def fn(params, x, outputs, channel=None, redirect=None):
            params, kernels = params if isinstance(params, Prepared) else (params, None)
            x = prep(x.astype(jnp.float32)).astype(dtype)
            if dtype != jnp.float32:
                params, kernels = jax.tree.map(
                    lambda p: p.astype(dtype) if jnp.issubdtype(p.dtype, jnp.floating) else p,
                    (params, kernels),
                )
            layers = tuple(outputs)
            run = rewrite.rewritten(lambda p, y: apply(p, y, layers), conv=conv)
            return run(params, x, kernels=kernels)

        return fn

    def prepare(self, params: Any, deepest: int, execution: Execution, platform: str) -> Any:
        """The weights, plus the Winograd transforms of their 3x3 kernels where the run's
        convolutions take Winograd (:func:`vizjax.models.rewrite.winograd_kernels`)."""
        if not _winograd(execution, platform):
            return params
        return Prepared(params, rewrite.winograd_kernels(params))


class Prepared(NamedTuple):
    """A generic model's weights as its compiled program takes them (:meth:`Generic.prepare`)."""

    params: Any
    kernels: rewrite.Kernels


def _amx(execution: Execution, platform: str) -> bool:
    """Whether ``conv="auto"`` means oneDNN: a bfloat16 run on a CPU with AMX where oneDNN runs
    (:func:`vizjax.models.onednn.amx_path`; XLA's own bfloat16 is slower than its float32)."""
    return (
        execution.conv == "auto"
        and platform == "cpu"
        and execution.dtype == "bfloat16"
        and onednn.amx_path()
    )


def uses_onednn(execution: Execution, platform: str) -> bool:
    """Whether a run's 3x3 convolutions are oneDNN's: ``conv="onednn"``, or :func:`_amx`."""
    return execution.conv == "onednn" or _amx(execution, platform)


def _winograd(execution: Execution, platform: str) -> bool:
    """Whether a run's 3x3 convolutions take Winograd: ``conv="winograd"``, or ``"auto"`` on CPU
    (the built-in networks' rule, :meth:`Table.winograd`) unless :func:`_amx` says oneDNN."""
    return execution.conv == "winograd" or (
        execution.conv == "auto" and platform == "cpu" and not _amx(execution, platform)
    )


@functools.lru_cache(maxsize=64)
def _depends_on_input(model: GenericModel, layer: str, h: int, w: int) -> bool:
    """Whether ``layer``'s gradient (of a random projection of it) at a random input is non-zero."""
    kx, kr = jax.random.split(jax.random.key(0))
    x = jax.random.uniform(kx, (1, h, w, model.channels), jnp.float32)
    shape = model.layer_shapes((h, w))[layer].shape
    r = jax.random.normal(kr, (1, *shape), jnp.float32)

    def f(x: jax.Array) -> jax.Array:
        return jnp.sum(model.apply(model.params, x, (layer,))[layer].astype(jnp.float32) * r)

    g = jax.jit(jax.grad(f))(x)
    return bool(jnp.any(g != 0))
