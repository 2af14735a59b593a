"""vizjax: batched feature visualization (activation maximization) for VGG16 (and AlexNet, VGG19) in JAX.

The public API, imported lazily so that ``import vizjax`` (and the CLI's error paths) stay fast::

    load_weights, Weights                 vizjax.models.weights
    Recipe, PRESETS, preset               vizjax.engine.recipe
    Execution                             vizjax.engine.execution
    visualize, iter_chunks, Results       vizjax.engine.ascent
    run_atlas                             vizjax.run
    open_atlas, merge_atlases             vizjax.atlas
    VGG16, LAYER_NAMES, CONV_LAYERS       vizjax.models.vgg
    Network, MODELS                       vizjax.models.network, vizjax.models
    from_flax, from_nnx                   vizjax.models.flax_model
    GenericModel, GenericWeights          vizjax.models.generic
    from_keras                            vizjax.models.keras_model (needs vizjax[keras])
    VizjaxError                           vizjax.errors
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "load_weights": "models.weights",
    "Weights": "models.weights",
    "Recipe": "engine.recipe",
    "PRESETS": "engine.recipe",
    "preset": "engine.recipe",
    "Execution": "engine.execution",
    "visualize": "engine.ascent",
    "iter_chunks": "engine.ascent",
    "Results": "engine.ascent",
    "run_atlas": "run",
    "open_atlas": "atlas",
    "merge_atlases": "atlas",
    "VGG16": "models.vgg",
    "LAYER_NAMES": "models.vgg",
    "CONV_LAYERS": "models.vgg",
    "Network": "models.network",
    "MODELS": "models",
    "from_flax": "models.flax_model",
    "from_nnx": "models.flax_model",
    "GenericModel": "models.generic",
    "GenericWeights": "models.generic",
    "from_keras": "models.keras_model",
    "VizjaxError": "errors",
}

__all__ = [*_EXPORTS, "__version__"]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"vizjax.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'vizjax' has no attribute {name!r}")
