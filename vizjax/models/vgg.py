"""VGG16 and VGG19 (Simonyan & Zisserman, 2014), with Keras' layer names, as :class:`Network` tables.

Both are five blocks of 3x3 stride-1 'SAME' convolutions (+ ReLU), each block closed by a 2x2
stride-2 max-pool; VGG16 has (2, 2, 3, 3, 3) convolutions per block, VGG19 (2, 2, 4, 4, 4). Layer
names are Keras': ``block{b}_conv{c}`` and ``block{b}_pool``. Everything generic (output sizes,
receptive fields, the Flax module, the summary) lives in :mod:`vizjax.models.network`; this module keeps
VGG16's names importable as they were (``VGG16``, ``LAYERS``, ``CONV_LAYERS``, ``layer_index``...).
"""

from __future__ import annotations

import functools
from typing import Any

import jax.numpy as jnp
import numpy as np

from vizjax.errors import VizjaxError
from vizjax.models.network import (  # noqa: F401  (re-exported: VGG16's names as they were)
    CAFFE,
    IDENTITY,
    TORCH,
    WINOGRAD,
    ConvNet,
    Layer,
    Network,
    Preprocessing,
    ReceptiveField,
    max_pool2x2,
    param_count,
    prepare_winograd,
    redirected_relu,
)

#: Output channels of each block's convolutions (Simonyan & Zisserman, 2014, table 1). A weight
#: set may declare other widths (the tests' tiny network, tests/tiny_network.py); the layer names,
#: kinds and the receptive fields stay VGG's.
WIDTHS: tuple[int, ...] = (64, 128, 256, 512, 512)
#: Convolutions per block.
CONVS_PER_BLOCK = {"vgg16": (2, 2, 3, 3, 3), "vgg19": (2, 2, 4, 4, 4)}


@functools.lru_cache(maxsize=16)
def network(widths: tuple[int, ...] = WIDTHS, name: str = "vgg16") -> Network:
    """The :class:`Network` of VGG16 (or ``name="vgg19"``) whose blocks have ``widths`` output
    channels (5 positive integers)."""
    if len(widths) != 5 or not all(isinstance(c, int) and c > 0 for c in widths):
        raise VizjaxError(f"{name.upper()} widths must be 5 positive integers, not {widths!r}")
    rows, cin = [], 3
    for b, (n_convs, cout) in enumerate(zip(CONVS_PER_BLOCK[name], widths, strict=True), start=1):
        for c in range(1, n_convs + 1):
            rows.append(Layer(f"block{b}_conv{c}", "conv", 3, 1, 1, cin, cout))
            cin = cout
        rows.append(Layer(f"block{b}_pool", "pool", 2, 2, 0, cout, cout))
    return Network(name, tuple(widths), tuple(rows))


def widths_of(params: dict[str, Any]) -> tuple[int, ...]:
    """The block widths of a VGG parameter tree (``{"params": {...}}`` or the inner dict), read
    from each block's first bias."""
    p = params.get("params", params)
    return tuple(int(np.shape(p[f"block{b}_conv1"]["bias"])[0]) for b in range(1, 6))


# --------------------------------------------------------------------------------------------------
# VGG16's names, as they were before the model interface.

#: VGG16 with its own widths.
NETWORK = network()


def layer_table(widths: tuple[int, ...] = WIDTHS) -> tuple[tuple[str, str, int, int], ...]:
    """``(name, kind, input channels, output channels)`` per layer of a VGG16 of ``widths``."""
    return tuple((r.name, r.kind, r.cin, r.cout) for r in network(widths).layers)


def conv_shapes(
    widths: tuple[int, ...] = WIDTHS,
) -> dict[str, tuple[tuple[int, ...], tuple[int, ...]]]:
    """``{conv_name: ((3, 3, cin, cout), (cout,))}``: a VGG16's kernel and bias shapes."""
    return network(widths).conv_shapes()


LAYERS: tuple[tuple[str, str, int, int], ...] = layer_table()
LAYER_NAMES: tuple[str, ...] = NETWORK.layer_names
CONV_LAYERS: tuple[str, ...] = NETWORK.conv_layers
#: ``{conv_name: ((3, 3, cin, cout), (cout,))}`` -- the kernel and bias shapes of VGG16's weights.
CONV_SHAPES: dict[str, tuple[tuple[int, ...], tuple[int, ...]]] = conv_shapes()


def num_channels(layer: str, widths: tuple[int, ...] = WIDTHS) -> int:
    """Number of output channels (filters) of ``layer`` in a VGG16 of ``widths``."""
    return network(widths).num_channels(layer)


def layer_index(layer: str) -> int:
    """Position of ``layer`` in VGG16; a clear error lists the valid names otherwise."""
    return NETWORK.layer_index(layer)


def output_hw(layer: str, height: int, width: int) -> tuple[int, int]:
    """Spatial size of VGG16's ``layer`` output for a ``height x width`` input."""
    return NETWORK.output_hw(layer, height, width)


def min_input_size(layer: str) -> int:
    """Smallest square input for which VGG16's ``layer`` output is at least 1x1."""
    return NETWORK.min_input_size(layer)


def receptive_field(layer: str) -> ReceptiveField:
    """The receptive field of VGG16's ``layer`` (:meth:`Network.receptive_field`)."""
    return NETWORK.receptive_field(layer)


def VGG16(  # noqa: N802  (the module's name, as before the model interface)
    preprocessing: Preprocessing = TORCH,
    dtype: Any = jnp.float32,
    winograd: tuple[str, ...] = (),
    widths: tuple[int, ...] = WIDTHS,
) -> ConvNet:
    """VGG16's Flax module (:class:`vizjax.models.network.ConvNet`) for weights of ``widths``."""
    return ConvNet(network(widths), preprocessing, dtype, winograd)


def init_params(seed: int = 0, widths: tuple[int, ...] = WIDTHS) -> dict[str, Any]:
    """Random parameters of a VGG16 of ``widths`` (real shapes by default), ``{"params": ...}``."""
    return network(widths).init_params(seed)


def summary(params: dict[str, Any] | None = None) -> str:
    """VGG16's Keras-style summary (:meth:`Network.summary`), for ``params``' widths if given."""
    return (NETWORK if params is None else network(widths_of(params))).summary(params)
