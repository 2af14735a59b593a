"""``--model``'s value -> the model: :func:`load`.

- a built-in name (``vgg16``, ``vgg19``, ``alexnet``): returned as the name (the table networks
  keep their own weights and fast paths);
- ``path/to/model.keras``: a Keras 3 model file (:func:`vizjax.models.keras_model.from_keras`),
  loaded in Keras' safe mode (no code from the file runs) unless ``trust``;
- ``package.module:factory`` or ``path/to/file.py:factory``: a zero-argument callable returning
  ``(module, variables)`` or ``(module, variables, preprocessing)`` for a Flax linen module, or an
  NNX module (in eval mode) alone or as ``(module, preprocessing)`` (:func:`~vizjax.models.flax_model.from_nnx`)
  (:func:`vizjax.models.flax_model.from_flax`; ``preprocessing`` a
  :class:`~vizjax.models.network.Preprocessing` or one of the names ``caffe``, ``torch``, ``tf``,
  ``none``), or a ready :class:`~vizjax.models.generic.GenericModel` (for options such as a fixed
  ``input_size``).

Everything that can go wrong with the user's code or file is one VizjaxError line: a missing
file or module, a factory that raises or returns something else, NaN or Inf in the weights.

What it may import: :mod:`vizjax.errors` and its own package.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import importlib.util
import sys
from pathlib import Path
from typing import Any

from vizjax import models
from vizjax.errors import VizjaxError
from vizjax.models.generic import GenericModel, check_finite
from vizjax.models.network import PREPROCESSINGS, Preprocessing

EXPECTED = "(module, variables) or (module, variables, preprocessing)"


def _first_line(e: BaseException) -> str:
    text = (str(e).strip().splitlines() or [""])[0]
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


def load(spec: str, *, trust: bool = False) -> GenericModel | str:
    """The model ``spec`` names (see the module docstring): a built-in model's name, or a
    :class:`~vizjax.models.generic.GenericModel`. ``trust`` loads a ``.keras`` file outside
    Keras' safe mode (it may then run code the file holds)."""
    if spec in models.MODELS:
        return spec
    if spec.endswith(".keras"):
        return _keras(spec, trust)
    target, colon, factory = spec.rpartition(":")
    if not colon or not target or not factory.isidentifier():
        raise VizjaxError(
            f"unknown model {spec!r}: give a built-in name ({', '.join(models.MODELS)}), a "
            "file.keras, package.module:factory or path/to/file.py:factory"
        )
    if target.endswith(".py") or "/" in target or "\\" in target:
        module = _import_file(Path(target))
        label = f"{Path(target).stem}:{factory}"
    else:
        module = _import_module(target)
        label = f"{target}:{factory}"
    fn = getattr(module, factory, None)
    if not callable(fn):
        raise VizjaxError(f"{target} has no callable {factory!r} (the factory --model names)")
    try:
        made = fn()
    except Exception as e:
        raise VizjaxError(f"the factory {label} raised {_first_line(e)}") from None
    model = _as_model(made, f"flax:{label}", label)
    check_finite(model)
    return model


def _keras(spec: str, trust: bool) -> GenericModel:
    path = Path(spec)
    if not path.is_file():
        raise VizjaxError(f"no Keras model file {spec}")
    try:
        from vizjax.models import keras_model
    except ImportError as e:
        raise VizjaxError(
            f"cannot load {spec}: .keras models need vizjax.models.keras_model and Keras 3 "
            f"(pip install 'vizjax[keras]'): {e}"
        ) from None
    model = keras_model.from_keras(str(path), safe_mode=not trust)
    check_finite(model)
    return model


def _import_file(path: Path) -> Any:
    if not path.is_file():
        raise VizjaxError(f"no Python file {path} (--model path/to/file.py:factory)")
    name = "vizjax_user_" + hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:12]
    if name in sys.modules:  # imported before in this process (a test, a notebook)
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise VizjaxError(f"cannot import {path} as Python")
    module = importlib.util.module_from_spec(spec)
    # The file's own folder first on the path while it runs, so it can import its neighbours.
    sys.path.insert(0, str(path.resolve().parent))
    sys.modules[name] = module  # dataclasses (flax modules) look their module up while defined
    try:
        spec.loader.exec_module(module)
    except Exception as e:
        del sys.modules[name]
        raise VizjaxError(f"importing {path} failed: {_first_line(e)}") from None
    finally:
        with contextlib.suppress(ValueError):
            sys.path.remove(str(path.resolve().parent))
    return module


def _import_module(name: str) -> Any:
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as e:
        raise VizjaxError(f"no Python module {name!r} ({_first_line(e)})") from None
    except Exception as e:
        raise VizjaxError(f"importing {name} failed: {_first_line(e)}") from None


def _as_model(made: Any, name: str, label: str) -> GenericModel:
    """A factory's result as a GenericModel (one line if it is none of the accepted forms)."""
    if isinstance(made, GenericModel):
        return made
    from vizjax.models import flax_model

    if _is_nnx(made) or (isinstance(made, tuple) and len(made) == 2 and _is_nnx(made[0])):
        module, prep = (made, None) if _is_nnx(made) else made
        return flax_model.from_nnx(module, preprocessing=_preprocessing(prep, label), name=name)
    if not isinstance(made, tuple) or len(made) not in (2, 3):
        raise VizjaxError(f"the factory {label} returned {_describe(made)}; expected {EXPECTED}")
    module, variables = made[:2]
    prep = _preprocessing(made[2] if len(made) == 3 else None, label)
    return flax_model.from_flax(module, variables, preprocessing=prep, name=name)


def _is_nnx(value: Any) -> bool:
    from flax import nnx

    return isinstance(value, nnx.Module)


def _preprocessing(prep: Any, label: str) -> Preprocessing | None:
    """A factory's preprocessing: None, a vizjax Preprocessing or a known name."""
    if isinstance(prep, str):
        if prep not in PREPROCESSINGS:
            raise VizjaxError(
                f"the factory {label} returned preprocessing {prep!r}; known: "
                f"{', '.join(PREPROCESSINGS)} (or a vizjax Preprocessing)"
            )
        prep = PREPROCESSINGS[prep]
    if prep is not None and not isinstance(prep, Preprocessing):
        raise VizjaxError(
            f"the factory {label} returned {_describe(prep)} as its preprocessing; expected a "
            f"name ({', '.join(PREPROCESSINGS)}) or a vizjax Preprocessing"
        )
    return prep


def _describe(value: Any) -> str:
    if isinstance(value, tuple):
        return f"a tuple of {len(value)} ({', '.join(type(v).__name__ for v in value)})"
    return f"a {type(value).__name__}"
