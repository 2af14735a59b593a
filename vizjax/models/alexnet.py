"""AlexNet (Krizhevsky et al., 2012) in torchvision's layout, as a :class:`Network` table.

torchvision's ``alexnet().features``: conv1 11x11 stride 4 padding 2 -> ReLU -> max-pool 3x3
stride 2 -> conv2 5x5 padding 2 -> ReLU -> pool 3x3/2 -> conv3, conv4, conv5 3x3 padding 1, each
with a ReLU -> pool 3x3/2. Channels 64, 192, 384, 256, 256 (2,469,696 parameters). Layer names
``conv1 ... conv5``, ``pool1``, ``pool2``, ``pool5``. Its weights are torchvision's, so its
preprocessing is :data:`vizjax.models.network.TORCH`.
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np

from vizjax.errors import VizjaxError
from vizjax.models.network import Layer, Network

#: Output channels of conv1 ... conv5 (torchvision's AlexNet).
WIDTHS: tuple[int, ...] = (64, 192, 384, 256, 256)
#: (kernel, stride, padding) of conv1 ... conv5, and which of them a pool follows.
_CONVS = ((11, 4, 2), (5, 1, 2), (3, 1, 1), (3, 1, 1), (3, 1, 1))
_POOL_AFTER = {1: "pool1", 2: "pool2", 5: "pool5"}


@functools.lru_cache(maxsize=8)
def network(widths: tuple[int, ...] = WIDTHS) -> Network:
    """AlexNet's :class:`Network` with ``widths`` output channels per convolution (5 positive
    integers; torchvision's by default)."""
    if len(widths) != 5 or not all(isinstance(c, int) and c > 0 for c in widths):
        raise VizjaxError(f"AlexNet widths must be 5 positive integers, not {widths!r}")
    rows, cin = [], 3
    for i, ((k, s, p), cout) in enumerate(zip(_CONVS, widths, strict=True), start=1):
        rows.append(Layer(f"conv{i}", "conv", k, s, p, cin, cout))
        cin = cout
        if i in _POOL_AFTER:
            rows.append(Layer(_POOL_AFTER[i], "pool", 3, 2, 0, cout, cout))
    return Network("alexnet", tuple(widths), tuple(rows))


def widths_of(params: dict[str, Any]) -> tuple[int, ...]:
    """The convolutions' widths of an AlexNet parameter tree, read from their biases."""
    p = params.get("params", params)
    return tuple(int(np.shape(p[f"conv{i}"]["bias"])[0]) for i in range(1, 6))
