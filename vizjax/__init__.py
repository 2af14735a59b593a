"""vizjax: batched feature visualization (activation maximization) for VGG16 (and AlexNet, VGG19) in JAX.

The public API, imported lazily so that ``import vizjax`` (and the CLI's error paths) stay fast::

    load_weights, Weights                 vizjax.weights
    Recipe, PRESETS, preset               vizjax.recipe
    Execution                             vizjax.execution
    visualize, iter_chunks, Results       vizjax.ascent
    run_atlas                             vizjax.run
    open_atlas, merge_atlases             vizjax.atlas
    VGG16, LAYER_NAMES, CONV_LAYERS       vizjax.vgg
    Network, MODELS                       vizjax.network, vizjax.models
    VizjaxError                           vizjax.errors
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "load_weights": "weights",
    "Weights": "weights",
    "Recipe": "recipe",
    "PRESETS": "recipe",
    "preset": "recipe",
    "Execution": "execution",
    "visualize": "ascent",
    "iter_chunks": "ascent",
    "Results": "ascent",
    "run_atlas": "run",
    "open_atlas": "atlas",
    "merge_atlases": "atlas",
    "VGG16": "vgg",
    "LAYER_NAMES": "vgg",
    "CONV_LAYERS": "vgg",
    "Network": "network",
    "MODELS": "models",
    "VizjaxError": "errors",
}

__all__ = [*_EXPORTS, "__version__"]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"vizjax.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'vizjax' has no attribute {name!r}")
