"""The networks: the models vizjax knows by name, their layer tables and their weights.

This package holds what a network is, apart from how pictures are made of it:
:mod:`~vizjax.models.network` (a convolutional network as a table of layers, its Flax module,
preprocessing), :mod:`~vizjax.models.conv` (3x3 convolutions, XLA's and Winograd's),
:mod:`~vizjax.models.vgg` and :mod:`~vizjax.models.alexnet` (the built-in tables),
:mod:`~vizjax.models.weights` (weights on disk) and :mod:`~vizjax.models.keras_weights` (Keras
HDF5 weight files); any other network comes as a :mod:`~vizjax.models.generic` model through
:mod:`~vizjax.models.flax_model` or :mod:`~vizjax.models.keras_model`, and
:mod:`~vizjax.models.rewrite` gives its program the built-ins' Winograd convolutions and
tiling max-pools. This module itself is the registry: ``vgg16`` (the default), ``vgg19``,
``alexnet``.

Each :class:`Model` says how to build its :class:`vizjax.models.network.Network` for given
widths, how to read the widths back from a parameter tree, and which weights and preprocessing it
comes with. :func:`from_params` recognizes a parameter tree's model by its layer names (the three
have disjoint sets), so the engine needs nothing but the weights to know which network it runs.

What it may import: :mod:`vizjax.errors` and :mod:`vizjax.durable` only; never the engine, the
atlas or the CLI (``tests/test_layout.py`` checks it).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from vizjax.errors import VizjaxError
from vizjax.models import alexnet, vgg
from vizjax.models.network import CAFFE, TORCH, Network, Preprocessing

DEFAULT_MODEL = "vgg16"


@dataclasses.dataclass(frozen=True)
class Model:
    """One model: its table builder, its weights' widths reader, and its weights.

    Attributes:
      name: ``--model``'s value.
      build: widths -> :class:`Network`.
      widths_of: a parameter tree -> its widths.
      widths: the real network's widths.
      default_weights: the weight set ``--model`` uses without ``--weights`` (None: there is none
        offline; ``missing`` says how to make one).
      preprocessing: its released weights' input preprocessing.
      missing: one sentence, how to get weights when there are no default ones.
    """

    name: str
    build: Callable[[tuple[int, ...]], Network]
    widths_of: Callable[[dict[str, Any]], tuple[int, ...]]
    widths: tuple[int, ...]
    default_weights: str | None
    preprocessing: Preprocessing
    missing: str = ""

    @property
    def network(self) -> Network:
        """The real network (its own widths)."""
        return self.build(self.widths)


MODELS: dict[str, Model] = {
    "vgg16": Model("vgg16", vgg.network, vgg.widths_of, vgg.WIDTHS, "vgg16-torchvision", TORCH),
    "vgg19": Model(
        "vgg19",
        lambda widths: vgg.network(widths, "vgg19"),
        vgg.widths_of,
        vgg.WIDTHS,
        None,
        CAFFE,
        "no VGG19 weights ship offline: convert Keras' release file with "
        "'vizjax convert vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5 --model vgg19 "
        "--out weights/vgg19-keras', then pass --weights vgg19-keras",
    ),
    "alexnet": Model(
        "alexnet", alexnet.network, alexnet.widths_of, alexnet.WIDTHS, "alexnet-torchvision", TORCH
    ),
}


def get(name: str) -> Model:
    """The model called ``name``; a one-line error lists the known ones otherwise."""
    try:
        return MODELS[name]
    except (KeyError, TypeError):
        raise VizjaxError(f"unknown model {name!r}; known models: {', '.join(MODELS)}") from None


def network(name: str = DEFAULT_MODEL, widths: tuple[int, ...] | None = None) -> Network:
    """``name``'s :class:`Network` with ``widths`` (default: the real network's)."""
    m = get(name)
    return m.build(m.widths if widths is None else tuple(widths))


def identify(params: dict[str, Any]) -> str:
    """The name of the model whose convolution names a parameter tree has exactly."""
    p = params.get("params", params)
    names = set(p)
    for m in MODELS.values():
        if names == set(m.network.conv_layers):
            return m.name
    raise VizjaxError(
        f"the weights' layers ({', '.join(sorted(names)[:4])}...) are not those of any known "
        f"model ({', '.join(MODELS)})"
    )


def from_params(params: dict[str, Any], name: str | None = None) -> Network:
    """The :class:`Network` that runs ``params`` (``{"params": {...}}`` or the inner dict): the
    model their layer names identify, with their widths. With ``name``, a one-line error if
    they are another model's weights."""
    found = identify(params)
    if name is not None and get(name).name != found:
        raise VizjaxError(f"these weights are {found}'s, not {name}'s (--model {name})")
    m = MODELS[found]
    return m.build(m.widths_of(params))
