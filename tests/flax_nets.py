"""Networks vizjax did not write, for its generic-model tests: a Flax linen ResNet (skip
connections, batch norm in inference mode) and a small ViT (patch embedding, self-attention, MLP
blocks), each tiny, with deterministic weights. Not part of vizjax; not a test module.

The factories are what ``--model tests/flax_nets.py:resnet`` calls: zero arguments, returning
``(module, variables)`` or ``(module, variables, preprocessing)``.
"""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from vizjax.models.network import TORCH, Preprocessing


class Block(nn.Module):
    """A basic residual block: conv-BN-ReLU-conv-BN, plus the (projected) input, ReLU."""

    width: int
    stride: int = 1
    train: bool = False

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        norm = lambda: nn.BatchNorm(use_running_average=not self.train)  # noqa: E731
        y = nn.Conv(self.width, (3, 3), (self.stride, self.stride), use_bias=False)(x)
        y = nn.relu(norm()(y))
        y = norm()(nn.Conv(self.width, (3, 3), use_bias=False)(y))
        if x.shape[-1] != self.width or self.stride != 1:
            x = norm()(nn.Conv(self.width, (1, 1), (self.stride, self.stride), use_bias=False)(x))
        return nn.relu(x + y)


class Stage(nn.Module):
    width: int
    blocks: int
    stride: int
    train: bool = False

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        for i in range(self.blocks):
            x = Block(self.width, self.stride if i == 0 else 1, self.train)(x)
        return x


class ResNet(nn.Module):
    widths: Sequence[int] = (8, 16)
    blocks: int = 2
    classes: int = 10
    train: bool = False

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        x = nn.Conv(self.widths[0], (3, 3), use_bias=False)(x)
        x = nn.relu(nn.BatchNorm(use_running_average=not self.train)(x))
        for i, w in enumerate(self.widths):
            x = Stage(w, self.blocks, 1 if i == 0 else 2, self.train)(x)
        return nn.Dense(self.classes)(jnp.mean(x, axis=(1, 2)))


class EncoderBlock(nn.Module):
    heads: int = 2
    mlp: int = 32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        y = nn.LayerNorm()(x)
        x = x + nn.MultiHeadDotProductAttention(num_heads=self.heads, deterministic=True)(y, y)
        y = nn.LayerNorm()(x)
        y = nn.Dense(x.shape[-1])(nn.gelu(nn.Dense(self.mlp, name="MlpIn")(y)))
        return x + y


class ViT(nn.Module):
    """Patches -> tokens (+ learned positions) -> encoder blocks -> mean token -> classes."""

    patch: int = 8
    dim: int = 16
    depth: int = 2
    tokens: int = 16  # (32 / 8) ** 2: the input size is fixed at 32 px
    classes: int = 10

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        x = nn.Conv(self.dim, (self.patch, self.patch), (self.patch, self.patch))(x)
        x = x.reshape(x.shape[0], -1, self.dim)
        pos = self.param("pos", nn.initializers.normal(0.02), (self.tokens, self.dim))
        x = x + pos
        for _ in range(self.depth):
            x = EncoderBlock()(x)
        return nn.Dense(self.classes)(nn.LayerNorm()(x).mean(axis=1))


def _statistics(variables: dict, seed: int) -> dict:
    """Random running statistics (a trained net's are not 0 and 1), so batch norm matters."""
    rng = np.random.default_rng(seed)

    def draw(path, a):
        if jax.tree_util.keystr(path).endswith("['var']"):
            return rng.uniform(0.5, 1.5, a.shape).astype(np.float32)
        return (0.1 * rng.standard_normal(a.shape)).astype(np.float32)

    stats = jax.tree_util.tree_map_with_path(draw, variables["batch_stats"])
    return {**variables, "batch_stats": stats}


def resnet():
    """The tiny ResNet at 32 px (any size works), with its weights and torchvision's
    preprocessing."""
    module = ResNet()
    variables = jax.jit(module.init)(jax.random.key(0), jnp.zeros((1, 32, 32, 3)))
    return module, _statistics(variables, 0), TORCH


def resnet_no_preprocessing():
    module, variables, _ = resnet()
    return module, variables


def vit():
    """The tiny ViT (32 px only), with its weights, no preprocessing (the caller says)."""
    module = ViT()
    return module, jax.jit(module.init)(jax.random.key(1), jnp.zeros((1, 32, 32, 3)))


def gray():
    """A one-channel (grayscale) ResNet, as a GenericModel (a plain factory's module is RGB)."""
    from vizjax.models.flax_model import from_flax

    module = ResNet(widths=(8,), blocks=1)
    variables = jax.jit(module.init)(jax.random.key(2), jnp.zeros((1, 32, 32, 1)))
    return from_flax(module, _statistics(variables, 2), preprocessing=GRAY, channels=1)


#: A one-channel model's preprocessing: 0-255 -> about [-2, 2].
GRAY = Preprocessing("gray", False, 255.0, (0.5,), (0.25,))


# --------------------------------------------------------------------------------------------------
# Bad models, for the one-line refusals (tests/test_loader.py).


class Vector(nn.Module):
    @nn.compact
    def __call__(self, y: jax.Array) -> jax.Array:
        return y.mean(axis=(1, 2))  # (B, C): no channel axis per image


class Index(nn.Module):
    @nn.compact
    def __call__(self, y: jax.Array) -> jax.Array:
        return jnp.argmax(y, axis=-1)[..., None]  # integer


class Constant(nn.Module):
    @nn.compact
    def __call__(self, y: jax.Array) -> jax.Array:
        c = self.param("c", nn.initializers.ones, (y.shape[-1],))
        return jnp.broadcast_to(c, y.shape)  # does not depend on the input


class Odd(nn.Module):
    """One good layer (``conv``) and one of each kind a run refuses."""

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        y = nn.Conv(4, (3, 3), name="conv")(x)
        v = Vector(name="vector")(y)
        i = Index(name="index")(y)
        c = Constant(name="constant")(y)
        return y.mean() + 0 * (v.sum() + i.sum() + c.sum())


def odd():
    module = Odd()
    return module, jax.jit(module.init)(jax.random.key(3), jnp.zeros((1, 8, 8, 3))), TORCH


def nan_weights():
    module, variables, prep = odd()
    kernel = np.array(variables["params"]["conv"]["kernel"])
    kernel[0, 0, 0, 0] = np.nan
    params = {**variables["params"], "conv": {**variables["params"]["conv"], "kernel": kernel}}
    return module, {"params": params}, prep


def raises():
    raise RuntimeError("the checkpoint is not here")


def wrong():
    return "a model"


def vit_model():
    """The ViT as a ready GenericModel: its fixed 32 px input size said (a plain factory cannot)."""
    from vizjax.models.flax_model import from_flax

    module, variables = vit()
    return from_flax(module, variables, input_size=32, preprocessing=TORCH, name="flax:vit")


def resnet_other_weights():
    """The same ResNet with other weights (another seed)."""
    module = ResNet()
    variables = jax.jit(module.init)(jax.random.key(9), jnp.zeros((1, 32, 32, 3)))
    return module, _statistics(variables, 9), TORCH


def resnet_wider():
    """Another architecture under the same factory shape."""
    module = ResNet(widths=(8, 24))
    variables = jax.jit(module.init)(jax.random.key(0), jnp.zeros((1, 32, 32, 3)))
    return module, _statistics(variables, 0), TORCH


# --------------------------------------------------------------------------------------------------
# Flax NNX: the weights live in the module.


class NnxBlock(nnx.Module):
    def __init__(self, width: int, rngs: nnx.Rngs):
        self.conv = nnx.Conv(width, width, (3, 3), rngs=rngs)
        self.norm = nnx.BatchNorm(width, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        return nnx.relu(x + self.norm(self.conv(x)))


class NnxNet(nnx.Module):
    def __init__(self, rngs: nnx.Rngs):
        self.stem = nnx.Conv(3, 8, (3, 3), rngs=rngs)
        self.blocks = nnx.List([NnxBlock(8, rngs), NnxBlock(8, rngs)])
        self.head = nnx.Linear(8, 10, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        x = self.stem(x)
        for block in self.blocks:
            x = block(x)
        return self.head(x.mean(axis=(1, 2)))


def nnx_net():
    """The NNX net in inference mode, with torchvision's preprocessing."""
    model = NnxNet(nnx.Rngs(4))
    model.eval()
    return model, "torch"


def nnx_net_training():
    return NnxNet(nnx.Rngs(4)), "torch"
