"""Any differentiable JAX network, as the engine needs it: :class:`GenericModel`.

The built-in table networks (:class:`vizjax.models.network.Network`: VGG16, VGG19, AlexNet) carry
their own fast paths; every other network (a Flax module, a Keras 3 model) comes through an adapter
(:mod:`vizjax.models.flax_model`, :mod:`vizjax.models.keras_model`) as a :class:`GenericModel`:

- ``apply(params, x, layers) -> {layer: activations}``: ``x`` is ``(B, H, W, C)`` float32, already
  preprocessed network input; the result holds exactly ``layers``, each ``(B, ..., C')`` with the
  filters on the LAST axis (``(B, H', W', C')`` maps or ``(B, T, C')`` token sequences). Pure and
  jittable, inference mode. Under ``jit`` XLA drops everything past the deepest requested layer.
- the layer names in execution order, their shapes from :func:`jax.eval_shape`
  (:meth:`GenericModel.layer_shapes`), the preprocessing (None: unknown, the user must say), the
  fixed input size if any, the input channel count;
- an identity for the atlas: ``kind``, ``name``, the architecture text's hash
  (:meth:`GenericModel.architecture_hash`), the weights' :meth:`GenericModel.fingerprint` and the
  input channels.

What it may import: :mod:`vizjax.errors` and :mod:`vizjax.models.network` (for
:class:`~vizjax.models.network.Preprocessing`).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from vizjax.errors import VizjaxError
from vizjax.models.network import Preprocessing

#: The input size a model without a fixed one is described at (``vizjax layers``).
DEFAULT_SIZE = 224

Apply = Callable[[Any, jax.Array, tuple[str, ...]], dict[str, jax.Array]]


@dataclasses.dataclass(frozen=True, eq=False)
class GenericModel:
    """Any differentiable JAX network, as the engine needs it (see the module docstring).

    Attributes:
      kind: ``"flax"`` or ``"keras"``.
      name: a readable identity of the architecture (``"flax:tests/flax_nets.py:resnet"``,
        ``"keras:resnet50"``), written into the atlas.
      apply: ``apply(params, x (B, H, W, C) float32, layers) -> {layer: (B, ..., C')}``.
      params: the pytree of arrays ``apply`` takes (weights and statistics).
      layers: every visualizable layer, in execution order.
      preprocessing: RGB 0-255 -> network input; None when unknown (the user must pass one).
      input_size: the fixed square input size the model requires, or None.
      channels: input channels (3 = RGB; 1 = grayscale; more = multispectral).
      architecture: a stable text description of the architecture, hashed into the identity.
      refused: layers the adapter knows but cannot visualize, with the reason (one line each):
        asking for one gives that reason instead of "unknown layer".
    """

    kind: str
    name: str
    apply: Apply
    params: Any
    layers: tuple[str, ...]
    preprocessing: Preprocessing | None
    input_size: int | None
    channels: int = 3
    architecture: str = ""
    refused: Mapping[str, str] = dataclasses.field(default_factory=dict)

    # Identity comparisons (eq=False) make the model hashable: compiled programs key on it.

    def layer_index(self, layer: str) -> int:
        """Position of ``layer`` in :attr:`layers`; a one-line error names a few that exist."""
        if layer in self.refused:
            raise VizjaxError(f"{layer!r} of {self.name}: {self.refused[layer]}")
        try:
            return self.layers.index(layer)
        except ValueError:
            n = len(self.layers)
            few = ", ".join(self.layers if n <= 6 else [*self.layers[:3], "...", *self.layers[-3:]])
            raise VizjaxError(
                f"unknown layer {layer!r} for {self.name}; it has {len(self.layers)} layers, "
                f"e.g. {few} ('vizjax layers --model ...' lists them)"
            ) from None

    def layer_shapes(
        self, size: int | tuple[int, int] | None = None
    ) -> dict[str, jax.ShapeDtypeStruct]:
        """Every layer's activation shape and dtype for ONE ``(size, size, channels)`` image (no
        batch axis; ``size`` may be ``(height, width)``), by :func:`jax.eval_shape` (nothing is
        computed). ``size`` defaults to the model's fixed input size, else :data:`DEFAULT_SIZE`.
        A size the model cannot take is a one-line error."""
        size = size or self.input_size or DEFAULT_SIZE
        hw = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
        return dict(_layer_shapes(self, hw))

    def num_channels(self, layer: str, size: int | tuple[int, int] | None = None) -> int:
        """Filters of ``layer``: the size of its activations' last axis."""
        self.layer_index(layer)
        return int(self.layer_shapes(size)[layer].shape[-1])

    def fingerprint(self) -> str:
        """sha256 (hex) of the params' bytes in tree order (with each leaf's path, dtype and shape):
        the weights' identity in the atlas."""
        return _fingerprint(self)

    def architecture_hash(self) -> str:
        """sha256 (hex) of :attr:`architecture` and :attr:`layers`: the architecture's identity."""
        text = self.architecture + "\n" + "\n".join(self.layers)
        return hashlib.sha256(text.encode()).hexdigest()

    def identity(self) -> dict[str, str]:
        """What an atlas records of the model: kind, name, architecture hash, weights' hash and
        input channels (as text)."""
        return {
            "kind": self.kind,
            "name": self.name,
            "architecture": self.architecture_hash(),
            "weights": self.fingerprint(),
            "channels": str(self.channels),
        }


@functools.lru_cache(maxsize=32)
def _layer_shapes(
    model: GenericModel, hw: tuple[int, int]
) -> tuple[tuple[str, jax.ShapeDtypeStruct], ...]:
    x = jax.ShapeDtypeStruct((1, *hw, model.channels), jnp.float32)
    try:
        out = jax.eval_shape(lambda p, x: model.apply(p, x, model.layers), model.params, x)
    except Exception as e:  # a model that cannot take this size says so in its own words
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise VizjaxError(
            f"{model.name} cannot take a {hw[0]}x{hw[1]}x{model.channels} input: {msg}"
        ) from None
    return tuple(
        (name, jax.ShapeDtypeStruct(out[name].shape[1:], out[name].dtype)) for name in model.layers
    )


@functools.lru_cache(maxsize=32)
def _fingerprint(model: GenericModel) -> str:
    h = hashlib.sha256()
    for path, leaf in jax.tree_util.tree_flatten_with_path(model.params)[0]:
        a = np.ascontiguousarray(np.asarray(leaf))
        h.update(f"{jax.tree_util.keystr(path)}:{a.dtype.str}:{a.shape}\n".encode())
        h.update(a.tobytes())
    return h.hexdigest()


@functools.lru_cache(maxsize=16)
def check_finite(model: GenericModel) -> None:
    """Refuse weights with NaN or Inf in one line, naming the first such array."""
    for path, leaf in jax.tree_util.tree_flatten_with_path(model.params)[0]:
        a = np.asarray(leaf)
        if np.issubdtype(a.dtype, np.inexact) and not np.all(np.isfinite(a)):
            raise VizjaxError(
                f"{model.name}: the weights hold NaN or Inf (at {jax.tree_util.keystr(path)})"
            )


def check_preprocessing(prep: Preprocessing, channels: int, name: str) -> None:
    """One line if ``prep`` cannot feed a ``channels``-channel model: one mean and std value, or one
    per channel; BGR only for 3 channels."""
    for what, values in (("mean", prep.mean), ("std", prep.std)):
        if len(values) not in (1, channels) and len(set(values)) > 1:
            raise VizjaxError(
                f"preprocessing {prep.name!r} has {len(values)} {what} values; {name} takes "
                f"{channels} input channel(s): give one value or {channels}"
            )
    if prep.bgr and channels != 3:
        raise VizjaxError(f"preprocessing {prep.name!r} flips RGB to BGR; {name} is not RGB")


@dataclasses.dataclass(frozen=True, eq=False)
class GenericWeights:
    """A generic model with the preprocessing a run feeds it, seen as a run's weights: what
    :class:`vizjax.models.weights.Weights` offers a run (``name``, ``params``, ``preprocessing``,
    ``source_sha256``, ``network``, ``model``), so a run, a plan and an atlas take either.

    ``params`` is the model itself (the engine resolves it: :func:`vizjax.engine.adapter.resolve`);
    ``source_sha256`` is the weights' :meth:`GenericModel.fingerprint`.
    """

    generic: GenericModel
    preprocessing: Preprocessing

    def __post_init__(self) -> None:
        check_preprocessing(self.preprocessing, self.generic.channels, self.generic.name)

    @property
    def name(self) -> str:
        return self.generic.name

    @property
    def model(self) -> str:
        return self.generic.name

    @property
    def params(self) -> GenericModel:
        return self.generic

    @property
    def network(self) -> GenericModel:
        return self.generic

    @property
    def source_sha256(self) -> str:
        return self.generic.fingerprint()

    @property
    def widths(self) -> tuple[int, ...]:
        return ()

    @property
    def manifest(self) -> dict[str, Any]:
        return {**self.generic.identity(), "preprocessing": dataclasses.asdict(self.preprocessing)}
