"""Objectives: what the ascent maximizes for one filter (Lucid's ``objectives``).

An objective is a frozen dataclass called as ``obj(acts, f) -> scalar`` for ONE filter ``f``:

* ``acts[layer]`` has shape ``(K, V, h, w, C)``: the layer's activations for the filter's K images
  (K > 1 with diversity) seen through V views each (V > 1 with MACO's crops); a token layer of a
  generic model has ``(K, V, T, C)``. A filter is an index on the LAST axis. On the one-channel
  fast path the target layer has ``C == 1`` and holds channel ``f`` only (:func:`channel_of`).
* ``acts["input"]`` is ``(K, H, W, 3)``: the images themselves (RGB 0-255, before transforms),
  which the regularizers read.

``layers()`` says which activations it reads (the network computes those, up to the deepest).
Objectives combine like numbers -- ``Channel(L) - 1e-2 * TotalVariation() + 0.5 * Neuron(L)`` --
into :class:`Sum` and :class:`Scaled` trees, still frozen dataclasses (hashable: part of a
compiled program's cache key).

Regularizers are normalized by the number of elements (tf-keras-vis' convention) on the 0-255
image, so their weights do not depend on the image size: ``L1 = mean|x - c|``, ``L2 = sqrt(mean((x
- c)^2))``, ``TotalVariation = (sum|dy| + sum|dx|) / (H W 3)``, ``Blur = 0.5 mean((x -
stopgrad(blur(x)))^2)`` (Lucid's ``blur_input_each_step``: its gradient pulls the image towards its
blur). They are penalties: subtract them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp

from vizjax.engine.transform import blur3x3

Acts = Mapping[str, jax.Array]
INPUT = "input"


def channel_of(acts: Acts, layer: str, f: jax.Array | int) -> jax.Array:
    """Channel ``f`` of ``acts[layer]`` (``(..., h, w)``), also on the one-channel fast path."""
    a = acts[layer]
    # A last axis of 1 is the fast path's single channel (or a one-channel layer: then f is 0).
    return a[..., 0] if a.shape[-1] == 1 else jnp.take(a, f, axis=-1)


class Objective:
    """Base of every objective: arithmetic and the layers read. Subclasses define ``__call__``."""

    def __call__(self, acts: Acts, f: jax.Array | int) -> jax.Array:
        raise NotImplementedError

    def layers(self) -> frozenset[str]:
        return frozenset()

    def channel_only(self, layer: str) -> bool:
        """True if this objective reads nothing of ``layer`` but channel ``f`` (fast path)."""
        return layer not in self.layers()

    def __add__(self, other: Objective) -> Objective:
        return Sum((self, other))

    def __sub__(self, other: Objective) -> Objective:
        return Sum((self, Scaled(-1.0, other)))

    def __mul__(self, weight: float) -> Objective:
        return Scaled(float(weight), self)

    __rmul__ = __mul__

    def __neg__(self) -> Objective:
        return Scaled(-1.0, self)


@dataclasses.dataclass(frozen=True)
class Sum(Objective):
    terms: tuple[Objective, ...]

    def __call__(self, acts: Acts, f: jax.Array | int) -> jax.Array:
        return sum((t(acts, f) for t in self.terms[1:]), self.terms[0](acts, f))

    def layers(self) -> frozenset[str]:
        return frozenset().union(*(t.layers() for t in self.terms))

    def channel_only(self, layer: str) -> bool:
        return all(t.channel_only(layer) for t in self.terms)


@dataclasses.dataclass(frozen=True)
class Scaled(Objective):
    weight: float
    term: Objective

    def __call__(self, acts: Acts, f: jax.Array | int) -> jax.Array:
        return self.weight * self.term(acts, f)

    def layers(self) -> frozenset[str]:
        return self.term.layers()

    def channel_only(self, layer: str) -> bool:
        return self.term.channel_only(layer)


@dataclasses.dataclass(frozen=True)
class Channel(Objective):
    """Mean activation of channel ``f`` of ``layer`` (over images, views and positions)."""

    layer: str

    def __call__(self, acts: Acts, f: jax.Array | int) -> jax.Array:
        return jnp.mean(channel_of(acts, self.layer, f).astype(jnp.float32))

    def layers(self) -> frozenset[str]:
        return frozenset({self.layer})

    def channel_only(self, layer: str) -> bool:
        return True


@dataclasses.dataclass(frozen=True)
class Neuron(Objective):
    """Channel ``f`` at the centre unit of ``layer`` (Lucid: for even sizes the bottom-right of the
    central 2x2), averaged over images and views. Every axis between ``(K, V)`` and the channel is
    a position: ``(h, w)`` maps take the centre unit, ``(T,)`` token sequences the centre token
    ``T // 2``."""

    layer: str

    def __call__(self, acts: Acts, f: jax.Array | int) -> jax.Array:
        a = channel_of(acts, self.layer, f)  # (K, V, *positions)
        centre = tuple(n // 2 for n in a.shape[2:])
        return jnp.mean(a[(slice(None), slice(None), *centre)].astype(jnp.float32))

    def layers(self) -> frozenset[str]:
        return frozenset({self.layer})

    def channel_only(self, layer: str) -> bool:
        return True


@dataclasses.dataclass(frozen=True)
class DeepDream(Objective):
    """Mean of the squared activations of every channel of ``layer`` (Mordvintsev et al., 2015);
    the filter index is not used."""

    layer: str

    def __call__(self, acts: Acts, f: jax.Array | int) -> jax.Array:
        return jnp.mean(jnp.square(acts[self.layer].astype(jnp.float32)))

    def layers(self) -> frozenset[str]:
        return frozenset({self.layer})


@dataclasses.dataclass(frozen=True)
class Diversity(Objective):
    """Mean pairwise cosine similarity of the K images' Gram matrices at ``layer`` (Lucid's
    ``diversity`` divides the pairwise sum by K instead of K (K - 1)); subtract it to push the
    images apart. 0 when K == 1."""

    layer: str

    def __call__(self, acts: Acts, f: jax.Array | int) -> jax.Array:
        a = acts[self.layer].astype(jnp.float32)
        k, c = a.shape[0], a.shape[-1]
        if k < 2:
            return jnp.zeros((), jnp.float32)
        flat = a.reshape(k, -1, c)
        grams = jnp.einsum("kpc,kpd->kcd", flat, flat)
        norms = jnp.sqrt(jnp.sum(jnp.square(grams), axis=(1, 2), keepdims=True))
        grams = grams / jnp.maximum(norms, 1e-10)
        sims = jnp.einsum("icd,jcd->ij", grams, grams)
        return (jnp.sum(sims) - jnp.trace(sims)) / (k * (k - 1))

    def layers(self) -> frozenset[str]:
        return frozenset({self.layer})


@dataclasses.dataclass(frozen=True)
class L1(Objective):
    """``mean|x - constant|`` over the images (a penalty: subtract it)."""

    constant: float = 0.0

    def __call__(self, acts: Acts, f: jax.Array | int) -> jax.Array:
        return jnp.mean(jnp.abs(acts[INPUT] - self.constant))


@dataclasses.dataclass(frozen=True)
class L2(Objective):
    """``sqrt(mean((x - constant)^2) + 1e-6)`` over the images (a penalty)."""

    constant: float = 0.0

    def __call__(self, acts: Acts, f: jax.Array | int) -> jax.Array:
        return jnp.sqrt(jnp.mean(jnp.square(acts[INPUT] - self.constant)) + 1e-6)


@dataclasses.dataclass(frozen=True)
class TotalVariation(Objective):
    """``(sum|dy| + sum|dx|) / (H W 3)`` per image, averaged over images (a penalty)."""

    def __call__(self, acts: Acts, f: jax.Array | int) -> jax.Array:
        x = acts[INPUT]
        tv = jnp.sum(jnp.abs(jnp.diff(x, axis=-3)), axis=(-3, -2, -1)) + jnp.sum(
            jnp.abs(jnp.diff(x, axis=-2)), axis=(-3, -2, -1)
        )
        return jnp.mean(tv) / (x.shape[-3] * x.shape[-2] * x.shape[-1])


@dataclasses.dataclass(frozen=True)
class Blur(Objective):
    """``0.5 mean((x - stopgrad(blur(x)))^2)`` (a penalty; Lucid's blur_input_each_step)."""

    def __call__(self, acts: Acts, f: jax.Array | int) -> jax.Array:
        x = acts[INPUT]
        blurred = jax.lax.stop_gradient(jax.vmap(blur3x3)(x.reshape(-1, *x.shape[-3:])))
        return 0.5 * jnp.mean(jnp.square(x.reshape(blurred.shape) - blurred))


@dataclasses.dataclass(frozen=True)
class Spec:
    """An objective as a recipe states it (flat, so ``--set objective.tv=1.0`` can change it).

    ``kind``: ``channel`` (default), ``neuron`` or ``deepdream`` at the target layer; ``minimize``
    turns it into its negative (what suppresses the filter). The rest are penalty weights of the
    regularizers (``l1``/``l2`` about ``constant``, ``tv``, ``blur``) and of ``diversity`` (used when
    a recipe asks for K > 1 images per filter; at ``diversity_layer``, default the target layer).
    """

    kind: str = "channel"
    minimize: bool = False
    l1: float = 0.0
    l2: float = 0.0
    constant: float = 0.0
    tv: float = 0.0
    blur: float = 0.0
    diversity: float = 0.0
    diversity_layer: str = ""

    KINDS = ("channel", "neuron", "deepdream")

    def build(self, layer: str, k: int = 1) -> Objective:
        """The objective for filters of ``layer`` with ``k`` images per filter."""
        main: Objective = {"channel": Channel, "neuron": Neuron, "deepdream": DeepDream}[self.kind](
            layer
        )
        obj = -main if self.minimize else main
        penalties: list[tuple[float, Objective]] = [
            (self.l1, L1(self.constant)),
            (self.l2, L2(self.constant)),
            (self.tv, TotalVariation()),
            (self.blur, Blur()),
        ]
        if k > 1:
            penalties.append((self.diversity, Diversity(self.diversity_layer or layer)))
        for weight, term in penalties:
            if weight:
                obj = obj + Scaled(-weight, term)
        return obj


def describe(obj: Any) -> str:
    """A short readable form of an objective tree, e.g. ``Channel(block5_conv1) - 1.0*TV``."""
    if isinstance(obj, Sum):
        return " + ".join(describe(t) for t in obj.terms).replace("+ -", "- ")
    if isinstance(obj, Scaled):
        return (
            f"-{describe(obj.term)}" if obj.weight == -1 else f"{obj.weight:g}*{describe(obj.term)}"
        )
    fields = [str(getattr(obj, f.name)) for f in dataclasses.fields(obj)]
    return f"{type(obj).__name__}({', '.join(fields)})"
