"""The cost model: how much work a run is, so that a plan, an ETA and the bench agree.

Work is counted in analytic FLOPs. One *filter-step* (one filter's image, one ascent step) runs
the network forward up to the target layer and back to the image (the input gradient: a
convolution's costs as much as its forward; no weight gradients), on every view the recipe shows
the network per step (maco's 4 crops; K images with ``--diversity K``), at the size the network
sees after the recipe's transforms (lucid pads 128 px by 12 a side, then its jitters crop 8 and
4 px: the network sees 140 px). So a
layer's filter-step costs ``2 x forward x views`` and a filter ``steps`` times that.

One term is not a FLOP count: the image side of a step (the parameterization's FFT, the
transforms' resampling, the optimizer, the first convolution's 3 input channels, which XLA:CPU
runs far below its FLOP rate) costs, per pixel of each view, about as much as
:data:`IMAGE_FLOPS_PER_PIXEL` FLOPs of the deeper convolutions. Without it block1_conv1, the
first layer of a whole-model run, ran at 1/10 of the other layers' FLOP rate (bench/README.md's
whole-model table: 21 ms per filter-step for 0.8 GFLOP at 224 px, against 130-220 GFLOP/s
elsewhere), and an ETA taken after it was ~10x too long; with it, every layer of that table runs
at 160-230 "GFLOP/s" except block1_conv2 (300: the one-channel fast path skips most of its
target layer).

Left out: the one-channel fast path, the fidelity measures after the ascent, writing the atlas.
Compilation is not work: it is timed apart (see :class:`vizjax.progress.WorkMeter`).

A generic model (:class:`vizjax.models.generic.GenericModel`, a Flax or Keras network) has no
table to count from: its FLOPs are XLA's own count of the compiled program (:func:`xla_flops`,
:func:`model_flops`), the forward plus the input gradient of one view, so no model needs a
hand-written cost. XLA counts a multiply-add as 2 FLOPs but only the taps inside the input (a
'SAME' convolution's zero padding is not counted), plus 1 FLOP per element of every elementwise
op (bias, ReLU, pool comparisons, preprocessing): on VGG16 at 140 px its forward is within 5% of
:func:`forward_flops` (+2.8% at block1_conv1, -2.5% at block3_conv3, -4.5% at block5_conv1) and its
forward + input gradient 1.91-2.04x that (tests/test_cost.py).

Everything here is arithmetic on layer names and recipes, except :func:`xla_flops`, which compiles.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp

from vizjax.engine import transform
from vizjax.engine.recipe import DEFAULT_SIZE, Recipe
from vizjax.models import vgg
from vizjax.models.generic import GenericModel
from vizjax.models.network import Network

#: Above this predicted time a plan (and a run, once it has measured its speed) says so first.
LONG_RUN_SECONDS = 3 * 3600.0


#: FLOP-equivalents of the image side of a step per pixel of each view the network sees (see the
#: module docstring). Measured on the 2-core Xeon that wrote bench/README.md: block1_conv1's
#: 21.3 ms per filter-step at 224 px (lucid, 236 px views) at the ~180 GFLOP/s of the deeper
#: layers is 3.8 GFLOP, 0.8 of it convolutions: 3.0e9 / 236**2 ~ 5.5e4 per pixel.
IMAGE_FLOPS_PER_PIXEL = 5.5e4


def forward_flops(
    layer: str, height: int, width: int, network: Network | GenericModel = vgg.NETWORK
) -> float:
    """FLOPs of ``network``'s forward pass (VGG16's by default) on one ``height x width`` image,
    up to and including ``layer``: ``2 * H' * W' * k * k * Cin * Cout`` summed over the
    convolutions, ``H' x W'`` each one's output size (its stride and padding from the layer
    table; a multiply-add is 2 FLOPs; pools, ReLUs and biases are not counted). A generic model:
    XLA's count (:func:`model_flops`)."""
    if isinstance(network, GenericModel):
        return model_flops(network, layer, height, width, gradient=False)
    total, h, w = 0.0, height, width
    for r in network.layers[: network.layer_index(layer) + 1]:
        h, w = r.out_size(h), r.out_size(w)
        if r.kind == "conv":
            total += 2.0 * h * w * r.kernel * r.kernel * r.cin * r.cout
    return total


def network_hw(recipe: Recipe) -> tuple[int, int]:
    """The size of each view the network sees: the recipe's image size (default 128x128) after
    its transforms (padding, crops)."""
    return transform.out_hw(recipe.transforms, tuple(recipe.size or DEFAULT_SIZE))


def views_per_step(recipe: Recipe) -> int:
    """Views the network sees per filter-step: the transforms' crops times the K images."""
    return transform.views(recipe.transforms) * recipe.images


def flops_per_filter_step(
    layer: str, recipe: Recipe, network: Network | GenericModel = vgg.NETWORK
) -> float:
    """FLOPs of one filter-step at ``layer``: forward + input gradient (2 x forward; a generic
    model: XLA's count of that program) of every view the network sees."""
    h, w = network_hw(recipe)
    if isinstance(network, GenericModel):
        return model_flops(network, layer, h, w) * views_per_step(recipe)
    return 2.0 * forward_flops(layer, h, w, network) * views_per_step(recipe)


def work_per_filter_step(
    layer: str, recipe: Recipe, network: Network | GenericModel = vgg.NETWORK
) -> float:
    """Work of one filter-step: :func:`flops_per_filter_step` plus the image side
    (:data:`IMAGE_FLOPS_PER_PIXEL` per pixel of each view)."""
    h, w = network_hw(recipe)
    return flops_per_filter_step(
        layer, recipe, network
    ) + IMAGE_FLOPS_PER_PIXEL * h * w * views_per_step(recipe)


def filter_work(layer: str, recipe: Recipe, network: Network | GenericModel = vgg.NETWORK) -> float:
    """Work of one filter of ``layer``: every step of the recipe."""
    return work_per_filter_step(layer, recipe, network) * recipe.steps


def run_work(
    plan: Mapping[str, int], recipe: Recipe, network: Network | GenericModel = vgg.NETWORK
) -> float:
    """Work of a run: ``plan`` maps each layer to the number of its filters to compute."""
    return sum(n * filter_work(layer, recipe, network) for layer, n in plan.items())


def xla_flops(fn: Callable[..., Any], *args: Any) -> float:
    """The FLOPs XLA counts in the compiled program of ``fn(*args)`` (``args``: arrays or
    :class:`jax.ShapeDtypeStruct`; nothing runs). Compiled, not only lowered: XLA removes the
    part of a model past the layer asked for only when it compiles. 0.0 where the backend
    reports no count (the work is then the image side alone; the ETA still scales by it)."""
    analysis = jax.jit(fn).lower(*args).compile().cost_analysis()
    if isinstance(analysis, list | tuple):  # older JAX: one dict per program
        analysis = analysis[0] if analysis else None
    flops = float((analysis or {}).get("flops", 0.0))
    return flops if math.isfinite(flops) and flops > 0 else 0.0


@functools.lru_cache(maxsize=64)
def model_flops(
    model: GenericModel, layer: str, height: int, width: int, gradient: bool = True
) -> float:
    """XLA's FLOPs of ``model`` up to ``layer`` on one ``height x width`` view: the forward and
    the input gradient (what a filter-step asks of the network per view), or with ``gradient``
    False the forward alone. Compiles once per (model, layer, size): seconds."""
    model.layer_index(layer)  # an unknown layer: the one line that names a few
    params = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype), model.params)
    x = jax.ShapeDtypeStruct((1, height, width, model.channels), jnp.float32)

    def forward(p: Any, x: jax.Array) -> jax.Array:
        return model.apply(p, x, (layer,))[layer]

    if not gradient:
        return xla_flops(forward, params, x)
    return xla_flops(jax.grad(lambda x, p: jnp.sum(forward(p, x))), x, params)


def eta_seconds(
    work_left: float, rate: float | None, compiles_left: int = 0, compile_s: float = 0.0
) -> float | None:
    """Seconds left: the work left at ``rate`` (work per second measured so far), plus
    ``compile_s`` for each layer still to compile. None while no rate is known."""
    if not rate or rate <= 0:
        return None
    return work_left / rate + compiles_left * compile_s


def duration_text(seconds: float) -> str:
    """``"41 s"``, ``"3m07s"``, ``"2h05m"``: a duration as the progress lines and plans show it."""
    s = int(round(seconds))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


def long_run_warning(seconds: float, steps: int, size: tuple[int, int], platform: str) -> str:
    """The one line a plan or a run prints first when it will take more than
    :data:`LONG_RUN_SECONDS`: how long, and what would shorten it (time is about proportional to
    steps x pixels x filters)."""
    hint = [
        f"fewer steps (--steps {max(1, steps // 4)} is ~4x shorter)",
        f"a smaller size (--size {max(32, size[0] // 2)} is ~4x shorter)",
        "a subset of filters (--filters 0:16)",
    ]
    if platform == "cpu":
        hint.append("an accelerator (a GPU)")
    return (
        f"vizjax: this run will take about {duration_text(seconds)} on this machine; to shorten it "
        f"use {', '.join(hint[:-1])} or {hint[-1]}"
    )
