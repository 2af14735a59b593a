"""The receptive-field check by brute force, shared by the tests of every model."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np


def assert_fields_match(net, outputs, pixels, size: int) -> None:
    """``outputs[layer]`` (one image per lit pixel of ``pixels``, on a zero ``size`` square,
    through a network whose every dependence shows: non-negative kernels, zero biases, no
    preprocessing) changes exactly at the units whose computed field holds the pixel, for every
    layer of ``net``; and no layer passes trivially (its field covers part of the grid only)."""
    partial = set()
    for layer in net.layer_names:
        changed = np.asarray(jnp.any(outputs[layer] != 0, axis=-1))
        rf = net.receptive_field(layer)
        h, w = net.output_hw(layer, size, size)
        assert changed.shape[1:] == (h, w)
        y0, y1 = rf.span(np.arange(h))
        x0, x1 = rf.span(np.arange(w))
        for b, (py, px) in enumerate(pixels):
            expected = ((y0 <= py) & (py < y1))[:, None] & ((x0 <= px) & (px < x1))[None, :]
            np.testing.assert_array_equal(changed[b], expected, err_msg=f"{layer} pixel {b}")
            if 0 < expected.sum() < h * w:
                partial.add(layer)
    assert partial == set(net.layer_names)
