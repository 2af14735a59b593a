"""Render: the optimization of ONE filter's image(s), written for one filter (Lucid's ``render``,
without its drawing, saving and printing).

The loop is split so the engine can run it as one program or as a host loop over compiled
segments (:mod:`vizjax.engine.execution`): :func:`init` makes the :class:`State`, :func:`advance` runs
``n`` steps in a ``lax.scan``, :func:`finish` evaluates the final images. Step ``i``:

1. randomness: ``k_i = fold_in(filter_key, i)`` (``filter_key = fold_in(fold_in(key(seed), layer),
   f)``; the initial value draws from ``fold_in(filter_key, INIT_KEY)``); image ``k``'s transform
   uniforms come from ``fold_in(fold_in(k_i, 0), k)``, its modifier uniforms from
   ``fold_in(fold_in(k_i, 1), k)`` -- drawn for every step of a segment before its loop
   (:func:`draws`; see :mod:`vizjax.engine.transform` for why);
2. modifiers (tf-keras-vis) change the pixels themselves;
3. ``rgb = to_rgb(params)`` for each of the K images; each is transformed into V views; the network
   computes the activations the objective reads (``redirect`` on while ``i <=
   recipe.redirect_relu``);
4. ``value = objective(acts, f)``; the optimizer gets ``-grad(value)`` (optax minimizes).


Flags: ``zero_start_grad`` -- the gradient was exactly zero at step 0 (with the classic recipe the
image never moves); ``nonfinite`` -- a NaN/Inf appeared in the objective or the update; the image is
then kept at its last finite value, so one absurd filter never poisons the others.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax
from jax import lax

from vizjax.engine import objectives, transform
from vizjax.engine.recipe import Recipe

#: ``net(views (B, h, w, D), redirect) -> {layer: (B, h', w', C)}`` (D: the model's input channels): the network as the objective
#: needs it (the engine closes over weights, dtype and the filter's channel on the fast path).
Net = Callable[[jax.Array, "jax.Array | None"], dict[str, jax.Array]]


#: ``fold_in`` data of the initial value's randomness (steps use their own number).
INIT_KEY = 0xFFFF_FFFF


class State(NamedTuple):
    """The optimization state of one filter (a pytree: vmapped and sharded by the engine)."""

    params: Any  # K images' params, leading axis K
    opt_state: Any
    zero_start_grad: jax.Array  # () bool
    nonfinite: jax.Array  # () bool


def deprocess(x: jax.Array) -> jax.Array:
    """Chollet's display transform: standardize, x0.1, +0.5, clip to [0, 1], x255, uint8 (truncating)."""
    x = x - jnp.mean(x)
    x = x / (jnp.std(x) + 1e-5)
    x = jnp.clip(x * 0.1 + 0.5, 0.0, 1.0)
    return (x * 255.0).astype(jnp.uint8)


def display(recipe: Recipe, image: jax.Array) -> jax.Array:
    """``(H, W, D)`` 0-255 float -> ``(H, W, D)`` uint8 display image, as the recipe says; D is the
    model's input channels (:func:`vizjax.images.picture` shows other than 3)."""
    if recipe.display == "deprocess":
        return deprocess(image)
    return jnp.round(jnp.clip(image, 0.0, 255.0)).astype(jnp.uint8)


def _image_keys(key: jax.Array, k: int) -> jax.Array:
    return jax.vmap(lambda i: jax.random.fold_in(key, i))(jnp.arange(k))


def draws(
    recipe: Recipe, key: jax.Array, steps: jax.Array, hw: tuple[int, int]
) -> tuple[jax.Array, jax.Array]:
    """The uniforms of steps ``steps (n,)``: ``(n, K, transform draws)`` and ``(n, K, modifier
    draws)``, each from one vectorized threefry call whatever ``n`` is."""
    k = recipe.images

    def per_step(i: jax.Array, salt: int, count: int) -> jax.Array:
        keys = _image_keys(jax.random.fold_in(jax.random.fold_in(key, i), salt), k)
        return jax.vmap(lambda kk: jax.random.uniform(kk, (count,), jnp.float32))(keys)

    nt = transform.draws(recipe.transforms, hw)
    nm = transform.draws(recipe.modifiers, hw)
    return (
        jax.vmap(lambda i: per_step(i, 0, nt))(steps),
        jax.vmap(lambda i: per_step(i, 1, nm))(steps),
    )


def init(recipe: Recipe, start: jax.Array, key: jax.Array, from_start: bool) -> State:
    """The state before step 0. ``start (H, W, D)``: the run's start image (shared); ``key``: the
    filter's key. Image 0 of a pixel param starts at ``start``; images 1..K-1 (diversity) add
    N(0, noise) pixel noise to it so they can part ways (other params draw from their keys)."""
    k = recipe.images
    keys = _image_keys(jax.random.fold_in(key, INIT_KEY), k)
    params = jax.vmap(lambda kk: recipe.param.init(kk, start, from_start))(keys)
    if k > 1 and isinstance(params, jax.Array) and params.shape[1:] == start.shape:
        noise = jax.vmap(lambda kk: jax.random.normal(kk, start.shape, jnp.float32))(keys)
        scale = jnp.where(jnp.arange(k) == 0, 0.0, max(recipe.noise_std, 1.0))
        params = params + scale[:, None, None, None] * noise
    opt_state = recipe.optimizer.build().init(params)
    false = jnp.zeros((), bool)
    return State(params, opt_state, false, false)


def _evaluate(
    recipe: Recipe,
    objective: objectives.Objective,
    net: Net,
    params: Any,
    f: jax.Array,
    u: jax.Array,
    hw: tuple[int, int],
    redirect: jax.Array | None,
) -> jax.Array:
    """The objective of the K images ``params`` with one step's transform uniforms ``u (K, n)``."""
    k = recipe.images
    rgb = jax.vmap(lambda p: recipe.param.to_rgb(p, hw))(params)  # (K, H, W, D)
    views = jax.vmap(lambda uk, x: transform.apply(recipe.transforms, uk, x))(u, rgb)
    v = views.shape[1]
    acts = net(views.reshape(k * v, *views.shape[2:]), redirect)
    acts = {name: a.reshape(k, v, *a.shape[1:]) for name, a in acts.items()}
    acts[objectives.INPUT] = rgb
    return objective(acts, f)


def advance(
    recipe: Recipe,
    objective: objectives.Objective,
    net: Net,
    state: State,
    f: jax.Array,
    key: jax.Array,
    first: jax.Array | int,
    n: int,
    hw: tuple[int, int],
    unroll: int = 1,
) -> tuple[State, jax.Array]:
    """Steps ``first .. first + n - 1`` of one filter (``n`` static, ``first`` may be traced):
    the new state and the objective before each step, ``(n,)`` float32. The values are returned,
    not kept in the state, so no compiled program's shapes depend on the recipe's step count: runs
    that differ only in ``steps`` share their programs (and the persistent compilation cache)."""
    opt = recipe.optimizer.build()
    redirect_steps = recipe.redirect_relu

    def step(s: State, xs: tuple[jax.Array, jax.Array, jax.Array]) -> tuple[State, None]:
        i, ut, um = xs
        params = s.params
        if recipe.modifiers:
            params = jax.vmap(lambda uk, x: transform.apply(recipe.modifiers, uk, x)[0])(um, params)
        redirect = (i <= redirect_steps) if redirect_steps else None

        def climb(p: Any) -> jax.Array:
            return _evaluate(recipe, objective, net, p, f, ut, hw, redirect)

        # The gradient of the objective (the redirected ReLU's rule is written for ascent); optax
        # minimizes, so it gets the negated gradient (an exact negation).
        value, grads = jax.value_and_grad(climb)(params)
        updates, opt_state = opt.update(jax.tree.map(jnp.negative, grads), s.opt_state, params)
        new = optax.apply_updates(params, updates)
        leaves = jax.tree.leaves(new)
        finite = jnp.isfinite(value) & jnp.all(
            jnp.stack([jnp.all(jnp.isfinite(x)) for x in leaves])
        )
        # Keep the last finite image (and optimizer state) of a filter that blew up.
        new = jax.tree.map(lambda a, b: jnp.where(finite, a, b), new, params)
        opt_state = jax.tree.map(lambda a, b: jnp.where(finite, a, b), opt_state, s.opt_state)
        zero = jnp.all(jnp.stack([jnp.all(g == 0) for g in jax.tree.leaves(grads)]))
        return (
            State(
                new,
                opt_state,
                jnp.where(i == 0, zero, s.zero_start_grad),
                s.nonfinite | ~finite,
            ),
            value,
        )

    steps = first + jnp.arange(n)
    ut, um = draws(recipe, key, steps, hw)
    return lax.scan(step, state, (steps, ut, um), unroll=unroll)


def finish(
    recipe: Recipe,
    objective: objectives.Objective,
    net: Net,
    state: State,
    f: jax.Array,
    key: jax.Array,
    hw: tuple[int, int],
    last: jax.Array | int,
) -> dict[str, jax.Array]:
    """The results of one filter after ``last`` steps (``recipe.steps``; may be traced):
    ``raw (K, H, W, D)`` float32 0-255 (D: the model's input channels; RGB for 3), ``images (K,
    H, W, D)`` uint8, ``final`` (the objective of the final images at step ``last``'s randomness,
    redirect off: the last entry of the objective trace whose others :func:`advance` returns),
    ``zero_start_grad`` and ``nonfinite`` (0-d bools)."""
    ut, _ = draws(recipe, key, jnp.reshape(jnp.asarray(last, jnp.int32), (1,)), hw)
    final = _evaluate(recipe, objective, net, state.params, f, ut[0], hw, None)
    rgb = jax.vmap(lambda p: recipe.param.to_rgb(p, hw))(state.params)
    return {
        "raw": rgb,
        "images": jax.vmap(lambda x: display(recipe, x))(rgb),
        "final": final,
        "zero_start_grad": state.zero_start_grad,
        "nonfinite": state.nonfinite | ~jnp.isfinite(final),
    }
