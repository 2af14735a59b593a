#!/usr/bin/env python
"""Keras' own VGG16 architecture carrying vizjax's VGG16 weights against the built-in VGG16.

    python scripts/keras_vgg16_check.py

builds ``keras.applications.VGG16(weights=None, include_top=False)``, copies the default weights'
13 convolutions into it (kernels are HWIO in both), saves it as ``.keras``, loads it back with
:func:`vizjax.from_keras` and runs the seed article's recipe (``classic``: N(127, 10) start,
RMS-normalized steps; 4 steps at 64 px) on a few filters of block1_conv2 and block3_conv1 through
both networks, with XLA's convolution on both sides (``conv=xla``) and with the CPU default
(``auto``: the built-in uses Winograd on blocks 2-5). Prints the largest differences: the figure
of the README's "Your own model" section. tests/test_keras_model_atlas.py asserts the same.
Needs ``pip install 'vizjax[keras]'``.
"""

from __future__ import annotations

import os
import tempfile

os.environ.setdefault("KERAS_BACKEND", "jax")

import keras
import numpy as np

import vizjax
from vizjax.engine.execution import Execution
from vizjax.models import vgg
from vizjax.models.network import TORCH

FILTERS = {"block1_conv2": [0, 5, 17], "block3_conv1": [0, 100, 255]}


def main() -> None:
    w = vizjax.load_weights()
    net = keras.applications.VGG16(weights=None, include_top=False)
    for name in vgg.CONV_LAYERS:
        p = w.params["params"][name]
        net.get_layer(name).set_weights([np.asarray(p["kernel"]), np.asarray(p["bias"])])
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "vgg16.keras")
        net.save(path)
        model = vizjax.from_keras(path, preprocessing=TORCH)
    recipe = vizjax.preset("classic").replace(steps=4, size=(64, 64))
    for layer, filters in FILTERS.items():
        for conv in ("xla", "auto"):
            ex = Execution(conv=conv)
            a = vizjax.visualize(layer, filters, recipe, w.params, TORCH, execution=ex)
            b = vizjax.visualize(layer, filters, recipe, model, TORCH, execution=ex)
            print(
                f"{layer} filters {filters} conv={conv}: "
                f"raw max|diff| {np.abs(a.raw - b.raw).max():.3g} (0-255 units); "
                f"objective max|diff| {np.nanmax(np.abs(a.objective - b.objective)):.3g} "
                f"(max |objective| {np.nanmax(np.abs(a.objective)):.3g}); "
                f"uint8 images max|diff| {np.abs(a.images.astype(int) - b.images.astype(int)).max()}"
            )


if __name__ == "__main__":
    main()
