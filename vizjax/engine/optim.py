"""Optimizers: optax gradient transformations by name, including the seed article's step.

The ascent maximizes an objective; optax, like Lucid's TensorFlow optimizers, minimizes a loss. The
render feeds ``-grad(objective)`` to ``optimizer.update`` and adds the updates: every optimizer here
is the library's own, unchanged.

``classic`` is the seed article's update (Chollet): ``x += lr * g / (sqrt(mean(g^2)) + 1e-5)``,
written as a stateless optax transformation. Its sign flips are exact in floating point, so it
reproduces the article's arithmetic bit for bit.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import optax


def classic(learning_rate: float = 1.0, eps: float = 1e-5) -> optax.GradientTransformation:
    """The article's step as optax: ``updates = -lr * g / (sqrt(mean(g^2)) + eps)`` for a loss
    gradient ``g`` (the RMS is over every element of the pytree)."""

    def init(params: Any) -> optax.EmptyState:
        return optax.EmptyState()

    def update(updates: Any, state: optax.EmptyState, params: Any = None) -> tuple[Any, Any]:
        leaves = jax.tree.leaves(updates)
        # One leaf (the pixel image): exactly the article's jnp.mean of the squares.
        flat = leaves[0] if len(leaves) == 1 else jnp.concatenate([a.ravel() for a in leaves])
        rms = jnp.sqrt(jnp.mean(jnp.square(flat)))
        return jax.tree.map(lambda g: -(learning_rate * (g / (rms + eps))), updates), state

    return optax.GradientTransformation(init, update)


@dataclasses.dataclass(frozen=True)
class Optimizer:
    """An optimizer as a recipe states it.

    ``name``: ``classic`` (the article), ``adam`` (Lucid: Adam(0.05)), ``rmsprop`` (tf-keras-vis:
    Keras' RMSprop(1.0, rho=0.999), epsilon 1e-7 outside the square root), ``nadam`` (MACO/Horama:
    PyTorch's NAdam(lr)), ``sgd``. ``b1``/``b2`` are Adam's and NAdam's betas, ``decay`` RMSprop's rho,
    ``eps`` the denominator's epsilon (0 = the library default of the optimizer named).
    """

    name: str = "classic"
    lr: float = 1.0
    b1: float = 0.9
    b2: float = 0.999
    decay: float = 0.9
    eps: float = 0.0

    NAMES = ("classic", "adam", "rmsprop", "nadam", "sgd")

    def build(self) -> optax.GradientTransformation:
        eps = self.eps or None
        if self.name == "classic":
            return classic(self.lr, eps or 1e-5)
        if self.name == "adam":
            return optax.adam(self.lr, self.b1, self.b2, eps or 1e-8)
        if self.name == "rmsprop":
            # Keras: v = rho v + (1 - rho) g^2;  x -= lr g / (sqrt(v) + eps), v starts at 0.
            return optax.rmsprop(self.lr, decay=self.decay, eps=eps or 1e-7, eps_in_sqrt=False)
        if self.name == "nadam":
            return optax.nadam(self.lr, self.b1, self.b2, eps or 1e-8)
        if self.name == "sgd":
            return optax.sgd(self.lr)
        raise ValueError(f"unknown optimizer {self.name!r}; known: {', '.join(self.NAMES)}")
