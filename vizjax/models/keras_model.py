"""Keras 3 models on the JAX backend, as a :class:`~vizjax.models.generic.GenericModel`.

:func:`from_keras` takes a ``keras.Model`` or a saved ``.keras`` file (loaded by :func:`load`, in
Keras' safe mode unless told to trust the file). Its layers are named by their Keras names, in the
model's order; a layer inside a nested model (a functional or Sequential model used as a layer,
e.g. ``keras.applications.VGG16`` inside a classifier) by the nested model's name, a ``/`` and its
own name (``vgg16/block3_conv1``). A layer is visualizable when its output is one floating tensor
with a channel axis: ``(B, H, W, C)`` maps or ``(B, T, C)`` sequences. Flatten, global pooling and
Dense heads (``(B, C)``), layers with several outputs and layers called more than once (shared
layers) are not: they are in the model's ``refused``, and asking for one says why.

``apply(params, x, layers)`` runs a functional sub-model whose outputs are the requested layers
(``keras.Model(model.input, [layer outputs])``, built once per layer tuple) through its
``stateless_call`` in inference mode (``training=False``: batch norm uses its moving statistics,
dropout is off): plain JAX operations, jittable and differentiable, never TensorFlow, and nothing
past the deepest requested layer. ``params`` is ``{variable path: array}`` of every variable of the
model (weights and statistics); the model's own variables are never changed.

Keras models do not say what input they expect, so ``preprocessing`` is None unless given (the
CLI's ``--preprocess``). The input size is the model's fixed one (``model.input_shape``) if it has
one, the channel count its input's last axis.

vizjax selects the JAX backend (``KERAS_BACKEND=jax``, unless set otherwise) before keras is first
imported; keras is imported only when a Keras model is asked for (``pip install 'vizjax[keras]'``).
Subclassed models (a ``call`` method instead of a layer graph) have no layers to read: they are
refused. What it may import: :mod:`vizjax.errors` and :mod:`vizjax.models` modules.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import sys
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from vizjax.errors import VizjaxError
from vizjax.models.generic import GenericModel
from vizjax.models.network import Preprocessing

#: How many layer names an error message shows.
_FEW = 6


def keras_module() -> Any:
    """The ``keras`` module on the JAX backend (imported on first use; one-line errors when keras
    3 is missing or was already imported with another backend)."""
    if "keras" not in sys.modules:
        backend = os.environ.setdefault("KERAS_BACKEND", "jax")
        if backend != "jax":
            raise VizjaxError(
                f"KERAS_BACKEND={backend}: vizjax runs Keras models on the JAX backend; "
                "set KERAS_BACKEND=jax (or leave it unset)"
            )
    try:
        import keras
    except ImportError:
        raise VizjaxError("Keras models need keras 3 (pip install 'vizjax[keras]')") from None
    major = str(getattr(keras, "__version__", "0")).split(".")[0]
    if not major.isdigit() or int(major) < 3:
        raise VizjaxError(
            f"Keras models need keras 3, not keras {keras.__version__} (pip install 'keras>=3')"
        )
    backend = keras.backend.backend()
    if backend != "jax":
        raise VizjaxError(
            f"keras was imported with the {backend} backend before vizjax; vizjax needs JAX: "
            "set KERAS_BACKEND=jax before the first 'import keras'"
        )
    return keras


def load(path: str | os.PathLike, *, safe_mode: bool = True) -> Any:
    """The ``keras.Model`` saved in ``path`` (a ``.keras`` file), loaded without its compile
    settings. In safe mode (the default) Keras refuses files that carry Python code (a ``Lambda``
    layer's function); ``safe_mode=False`` (the CLI's ``--trust-model-file``) loads them."""
    keras = keras_module()
    p = Path(path)
    if not p.is_file():
        raise VizjaxError(f"no Keras model file {str(p)!r}")
    if p.suffix != ".keras":
        raise VizjaxError(
            f"{str(p)!r} is not a .keras file: vizjax reads Keras 3's format "
            "(model.save('model.keras'))"
        )
    if not zipfile.is_zipfile(p):
        raise VizjaxError(f"{str(p)!r} is not a Keras model file (a .keras file is a zip archive)")
    with zipfile.ZipFile(p) as z:
        if "config.json" not in z.namelist():
            raise VizjaxError(f"{str(p)!r} is not a Keras model file (its zip has no config.json)")
    try:
        model = keras.saving.load_model(p, safe_mode=safe_mode, compile=False)
    except Exception as e:  # Keras' own words, on one line
        msg = " ".join(str(e).split()) or type(e).__name__
        if safe_mode and "safe_mode" in msg:
            raise VizjaxError(
                f"{str(p)!r} holds Python code (a Lambda layer's function) that Keras' safe mode "
                "does not load; if you trust the file, pass --trust-model-file"
            ) from None
        raise VizjaxError(f"Keras cannot load {str(p)!r}: {msg[:300]}") from None
    if not isinstance(model, keras.Model):
        raise VizjaxError(f"{str(p)!r} holds a {type(model).__name__}, not a keras.Model")
    return model


def from_keras(
    model_or_path: Any,
    *,
    safe_mode: bool = True,
    preprocessing: Preprocessing | None = None,
    name: str | None = None,
) -> GenericModel:
    """A Keras 3 model (a ``keras.Model`` or the path of a ``.keras`` file) as a
    :class:`GenericModel` (see the module docstring).

    Args:
      model_or_path: a functional or Sequential ``keras.Model`` with one image input
        ``(None, H, W, C)`` (H and W may be None), or a ``.keras`` file (:func:`load`).
      safe_mode: load a file in Keras' safe mode (no Python code from the file).
      preprocessing: what the model expects of RGB 0-255 pixels; None: unknown (the user says).
      name: the model's name in the atlas; default ``"keras:<model.name>"``.
    """
    keras = keras_module()
    if isinstance(model_or_path, str | os.PathLike):
        model = load(model_or_path, safe_mode=safe_mode)
    elif isinstance(model_or_path, keras.Model):
        model = model_or_path
    else:
        raise VizjaxError(
            f"from_keras takes a keras.Model or a .keras file, not {type(model_or_path).__name__}"
        )
    input_size, channels = _input(keras, model)
    params, keys = _params(model)
    layers, refused = _layers(keras, model)
    if not layers:
        raise VizjaxError(
            f"keras model {model.name!r} has no layer with a channel axis to visualize "
            "((B, H, W, C) maps or (B, T, C) sequences)"
        )
    name = name or f"keras:{model.name}"
    return GenericModel(
        kind="keras",
        name=name,
        apply=_applier(keras, model, name, keys, layers, refused),
        params=params,
        layers=layers,
        preprocessing=preprocessing,
        input_size=input_size,
        channels=channels,
        architecture=model.to_json(sort_keys=True),
        refused=refused,
    )


# --------------------------------------------------------------------------------------------------
# The model's input, variables and layers.


def _input(keras: Any, model: Any) -> tuple[int | None, int]:
    """``(fixed input size or None, input channels)`` of a model with one image input."""
    if not _has_graph(keras, model):
        raise VizjaxError(
            f"keras model {model.name!r} has no layer graph (a subclassed model, or a Sequential "
            "one never built): vizjax reads functional and Sequential models; give it a "
            "keras.Input((H, W, C)) first"
        )
    if len(model.inputs) != 1:
        raise VizjaxError(
            f"keras model {model.name!r} has {len(model.inputs)} inputs; vizjax feeds one image"
        )
    shape = tuple(model.inputs[0].shape)
    if len(shape) != 4 or shape[-1] is None:
        raise VizjaxError(
            f"keras model {model.name!r} takes {shape}; vizjax feeds images (None, H, W, C) "
            "with a known channel count C, channels last"
        )
    h, w = shape[1], shape[2]
    if h is not None and w is not None and h != w:
        raise VizjaxError(
            f"keras model {model.name!r} takes {h}x{w} images only; vizjax makes square ones"
        )
    return (h if h is not None and w is not None else None), int(shape[-1])


def _params(model: Any) -> tuple[dict[str, jax.Array], dict[int, str]]:
    """``({path: value}, {id(variable): path})`` of every variable of the model, in its order;
    one-line error on NaN or infinite weights."""
    params, keys = {}, {}
    for v in model.variables:
        if id(v) in keys:
            continue
        key = v.path
        while key in params:  # unique paths, even where two variables share one
            key += "'"
        keys[id(v)] = key
        params[key] = v.value
        a = np.asarray(v.value)
        if np.issubdtype(a.dtype, np.floating) and not np.isfinite(a).all():
            raise VizjaxError(f"keras model {model.name!r}: weight {key!r} holds NaN or infinity")
    return params, keys


def _has_graph(keras: Any, model: Any) -> bool:
    try:
        return bool(model.inputs) and _graph(keras, model) is not None
    except (AttributeError, ValueError):
        return False


def _graph(keras: Any, model: Any) -> Any:
    """The functional graph holding ``model``'s layers (a Sequential model keeps one inside)."""
    return getattr(model, "_functional", None) if isinstance(model, keras.Sequential) else model


def _node(keras: Any, model: Any, layer: Any) -> Any | None:
    """``layer``'s one call in ``model``'s graph (None for a layer called more than once)."""
    graph = _graph(keras, model)
    in_graph = {id(n) for nodes in graph._nodes_by_depth.values() for n in nodes}
    nodes = [n for n in layer._inbound_nodes if id(n) in in_graph]
    return nodes[0] if len(nodes) == 1 else None


def _refusal(node: Any) -> str | None:
    """Why a layer's call is not visualizable, or None when it is."""
    if node is None:
        return "a shared layer (called more than once): its output is not one tensor"
    if len(node.output_tensors) != 1:
        return f"{len(node.output_tensors)} outputs; vizjax visualizes one tensor"
    t = node.output_tensors[0]
    if not jnp.issubdtype(jnp.dtype(t.dtype), jnp.floating):
        return f"its output holds {t.dtype} numbers, not floats: nothing to differentiate"
    if len(t.shape) < 3:
        return (
            f"its output {tuple(t.shape)} has no channel axis beside the batch (vizjax "
            "visualizes (H, W, C) maps and (T, C) sequences)"
        )
    return None


def _nested(keras: Any, layer: Any, node: Any) -> bool:
    """Whether a layer is a model whose own layers are listed (one input, a layer graph)."""
    return (
        isinstance(layer, keras.Model)
        and node is not None
        and len(node.input_tensors) == 1
        and _has_graph(keras, layer)
        and len(layer.inputs) == 1
    )


def _layers(keras: Any, model: Any, prefix: str = "") -> tuple[tuple[str, ...], dict[str, str]]:
    """The visualizable layer names in the model's order, and ``{name: why not}`` for the rest."""
    names: list[str] = []
    refused: dict[str, str] = {}
    for layer in model.layers:
        if isinstance(layer, keras.layers.InputLayer):
            continue
        name = prefix + layer.name
        node = _node(keras, model, layer)
        if _nested(keras, layer, node):
            inner, inner_refused = _layers(keras, layer, name + "/")
            names += inner
            refused |= inner_refused
        why = _refusal(node)
        if why is None:
            names.append(name)
        else:
            refused[name] = why
    return tuple(names), refused


# --------------------------------------------------------------------------------------------------
# Running the model.


@dataclasses.dataclass(frozen=True)
class _Plan:
    """How one (nested) model computes some of its layers: a functional sub-model whose outputs
    are ``direct`` layers' tensors and the inputs of the nested models in ``children``."""

    sub: Any  # keras.Model, or None when every output is the model's own input
    outputs: tuple[str, ...]  # what each of sub's outputs is: a layer name or "child:<name>"
    trainable: tuple[str, ...]  # params keys of sub's trainable variables, in its order
    non_trainable: tuple[str, ...]
    children: tuple[tuple[str, Any, tuple[str, ...]], ...]  # (name, nested model, its layers)


def _applier(
    keras: Any,
    model: Any,
    name: str,
    keys: dict[int, str],
    layers: tuple[str, ...],
    refused: Mapping[str, str],
) -> Any:
    known = frozenset(layers)

    @functools.lru_cache(maxsize=64)
    def plan(nested: Any, layers: tuple[str, ...]) -> _Plan:
        direct = [n for n in layers if "/" not in n]
        groups: dict[str, list[str]] = {}
        for n in layers:
            if "/" in n:
                head, rest = n.split("/", 1)
                groups.setdefault(head, []).append(rest)
        graph_input = nested.inputs[0]
        tensors, outputs = [], []
        for n in direct:
            tensors.append(_node(keras, nested, nested.get_layer(n)).output_tensors[0])
            outputs.append(n)
        children = []
        for head, rest in groups.items():
            child = nested.get_layer(head)
            tensors.append(_node(keras, nested, child).input_tensors[0])
            outputs.append("child:" + head)
            children.append((head, child, tuple(rest)))
        if all(t is graph_input for t in tensors):
            return _Plan(None, tuple(outputs), (), (), tuple(children))
        # A dict of outputs: Keras unwraps a one-element list, never a dict.
        sub = keras.Model(graph_input, dict(zip(outputs, tensors, strict=True)))
        return _Plan(
            sub,
            tuple(outputs),
            tuple(keys[id(v)] for v in sub.trainable_variables),
            tuple(keys[id(v)] for v in sub.non_trainable_variables),
            tuple(children),
        )

    def run(nested: Any, params: Any, x: jax.Array, layers: tuple[str, ...]) -> dict[str, Any]:
        p = plan(nested, layers)
        if p.sub is None:
            found = dict.fromkeys(p.outputs, x)
        else:
            found, _ = p.sub.stateless_call(
                [params[k] for k in p.trainable],
                [params[k] for k in p.non_trainable],
                x,
                training=False,
            )
        out = {n: v for n, v in found.items() if not n.startswith("child:")}
        for head, child, rest in p.children:
            inner = run(child, params, found["child:" + head], rest)
            out |= {f"{head}/{n}": v for n, v in inner.items()}
        return out

    all_layers = layers

    def apply(params: Any, x: jax.Array, layers: tuple[str, ...]) -> dict[str, jax.Array]:
        """``{layer: activations (B, ..., C)}`` of ``x (B, H, W, C)``, preprocessed input."""
        layers = tuple(layers)
        for n in layers:
            if n in refused:
                raise VizjaxError(f"{n!r} of {name}: {refused[n]}")
            if n not in known:
                raise VizjaxError(_unknown(name, n, all_layers))
        out = run(model, params, x, tuple(dict.fromkeys(layers)))
        return {n: out[n] for n in layers}

    return apply


def _unknown(model_name: str, layer: str, layers: tuple[str, ...]) -> str:
    few = layers if len(layers) <= _FEW else (*layers[:3], "...", *layers[-3:])
    return (
        f"unknown layer {layer!r} for {model_name}; it has {len(layers)} visualizable "
        f"layers, e.g. {', '.join(few)} ('vizjax layers --model ...' lists them)"
    )
