"""render: one filter's loop on a toy network (the image itself is the "layer"), so every value is
known by hand: the randomness of each step, the classic step, segments, and the flags."""

import jax
import jax.numpy as jnp
import numpy as np

from vizjax.engine import optim, render, transform
from vizjax.engine.recipe import CLASSIC, PRESETS

LAYER = "block1_conv1"
HW = (16, 16)


def identity_net(views, redirect):
    """A "network" whose layer is its input: channel f is colour f of the (transformed) image."""
    return {LAYER: views}


def _run(recipe, net=identity_net, f=0, segments=None, key=None):
    """init, advance over ``segments`` (default: all steps at once), finish; jitted like the engine."""
    key = jax.random.key(3) if key is None else key
    objective = recipe.objective.build(LAYER, recipe.images)
    start = 127.0 + 10.0 * jax.random.normal(jax.random.key(0), (*HW, 3), jnp.float32)
    state = render.init(recipe, start, key, from_start=False)
    first, values = 0, []
    for n in segments or [recipe.steps]:
        state, v = jax.jit(
            lambda s, i, n=n: render.advance(recipe, objective, net, s, f, key, i, n, HW)
        )(state, first)
        values.append(v)
        first += n
    out = jax.jit(lambda s: render.finish(recipe, objective, net, s, f, key, HW, first))(state)
    out = jax.device_get(out)
    out["objective"] = np.concatenate([*values, np.asarray(out.pop("final"))[None]])
    return start, state, out


def test_every_step_draws_its_own_transforms():
    """Step i's uniforms come from fold_in(filter_key, i): no two steps reuse the same draws, a
    step's draws do not depend on the segment it runs in, and each image of a filter has its own."""
    r = PRESETS["lucid"].with_diversity(2)
    key = jax.random.fold_in(jax.random.key(0), 7)
    n = transform.draws(r.transforms, (32, 32))
    ut, um = render.draws(r, key, jnp.arange(5), (32, 32))
    assert ut.shape == (5, 2, n) and um.shape == (5, 2, 0)  # lucid has no modifiers
    ut = np.asarray(ut)
    for i in range(5):
        for j in range(i):
            assert not np.allclose(ut[i], ut[j]), f"steps {j} and {i} share their draws"
        assert not np.allclose(ut[i, 0], ut[i, 1])  # the two images are transformed differently
        for k in range(2):  # the documented chain, written out
            kk = jax.random.fold_in(jax.random.fold_in(jax.random.fold_in(key, i), 0), k)
            np.testing.assert_array_equal(ut[i, k], jax.random.uniform(kk, (n,), jnp.float32))
    later, _ = render.draws(r, key, jnp.asarray([3, 4]), (32, 32))  # a segment starting at 3
    np.testing.assert_array_equal(np.asarray(later), ut[3:])
    other, _ = render.draws(r, jax.random.fold_in(jax.random.key(0), 8), jnp.arange(5), (32, 32))
    assert not np.allclose(np.asarray(other), ut)  # another filter, other draws


def test_modifiers_draw_per_step_and_apart_from_the_transforms():
    r = PRESETS["keras-vis"]
    key = jax.random.key(1)
    ut, um = render.draws(r, key, jnp.arange(3), (32, 32))
    assert ut.shape[2] == 0 and um.shape[:2] == (3, 1) and um.shape[2] > 0
    um = np.asarray(um)
    assert not np.allclose(um[0], um[1]) and not np.allclose(um[1], um[2])
    kk = jax.random.fold_in(jax.random.fold_in(jax.random.fold_in(key, 2), 1), 0)
    np.testing.assert_array_equal(um[2, 0], jax.random.uniform(kk, (um.shape[2],), jnp.float32))


def test_jitter_moves_the_views_differently_at_every_step():
    """End to end through the loop: with a jitter transform, the objective of an image that does
    not change (sgd with lr 0) still varies from step to step, because every step sees a new crop."""
    r = CLASSIC.replace(
        steps=6,
        transforms=(transform.Jitter(4),),
        optimizer=optim.Optimizer("sgd", lr=1e-30),
    )

    def corner_net(views, redirect):  # the objective: the top-left pixel's red value of the view
        return {LAYER: views[:, :1, :1, :]}

    _, _, out = _run(r, net=corner_net)
    trace = out["objective"]
    assert len(np.unique(np.round(trace, 3))) >= 4, trace  # not one crop reused 7 times


def test_the_classic_step_on_a_linear_objective():
    """mean(red) has the gradient 1/(H*W) on every red pixel and 0 elsewhere, so the article's
    step g / (sqrt(mean(g^2)) + 1e-5) adds the same amount to every red pixel: 1 / (1/sqrt(3) +
    1e-5 * H * W) per step with lr 1, and moves no other colour."""
    r = CLASSIC.replace(steps=4)
    start, state, out = _run(r)
    per_step = 1.0 / (1.0 / np.sqrt(3.0) + 1e-5 * HW[0] * HW[1])  # 1.7006 at 16x16
    raw = out["raw"][0]
    np.testing.assert_allclose(raw[..., 0] - start[..., 0], 4 * per_step, rtol=1e-5)
    np.testing.assert_array_equal(raw[..., 1:], np.asarray(start)[..., 1:])
    want = float(np.mean(start[..., 0])) + per_step * np.arange(5)
    np.testing.assert_allclose(out["objective"], want, rtol=1e-6)
    assert not out["zero_start_grad"] and not out["nonfinite"]
    np.testing.assert_array_equal(out["images"][0], np.asarray(render.deprocess(raw)))
    # Channel f reads colour f: the blue image rises in blue only.
    _, _, blue = _run(r, f=2)
    assert np.all(blue["raw"][0][..., 2] > np.asarray(start)[..., 2])
    np.testing.assert_array_equal(blue["raw"][0][..., :2], np.asarray(start)[..., :2])


def test_segments_continue_where_the_last_one_stopped():
    """The steps are numbered absolutely: 2 + 3 steps give the 5 steps' images and trace (a
    jitter and Adam, cheap to compile; the engine test does the presets)."""
    r = CLASSIC.replace(
        steps=5, transforms=(transform.Jitter(2),), optimizer=optim.Optimizer("adam", lr=0.5)
    )
    _, _, whole = _run(r)
    _, _, parts = _run(r, segments=[2, 3])
    np.testing.assert_allclose(parts["raw"], whole["raw"], rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(parts["objective"], whole["objective"], rtol=1e-5, atol=1e-6)


def test_a_zero_gradient_is_flagged_and_the_image_never_moves():
    def dead_net(views, redirect):
        return {LAYER: jnp.maximum(views - 1e4, 0.0)}  # a ReLU that never turns on

    start, _, out = _run(CLASSIC.replace(steps=3), net=dead_net)
    assert out["zero_start_grad"] and not out["nonfinite"]
    np.testing.assert_array_equal(out["raw"][0], np.asarray(start))
    np.testing.assert_array_equal(out["objective"], np.zeros(4, np.float32))


def test_a_nonfinite_step_keeps_the_last_finite_image():
    def blows_up(views, redirect):  # finite until the red mean passes 130, NaN after
        red = jnp.mean(views[..., 0])
        return {LAYER: jnp.where(red > 130.0, jnp.nan, 1.0) * views}

    start, _, out = _run(CLASSIC.replace(steps=6), net=blows_up)
    assert out["nonfinite"] and not out["zero_start_grad"]
    trace = out["objective"]
    assert np.isfinite(trace[0]) and np.isnan(trace[-1])
    red = out["raw"][0][..., 0].mean()
    assert np.all(np.isfinite(out["raw"])) and 127.0 < red <= 132.0  # stopped near 130, not NaN


def test_init_starts_image_zero_at_the_start_and_noises_the_others():
    r = CLASSIC.with_diversity(3).replace(steps=7)
    start = jnp.full((*HW, 3), 100.0, jnp.float32)
    state = render.init(r, start, jax.random.key(0), from_start=False)
    params = np.asarray(state.params)
    assert params.shape == (3, *HW, 3)
    np.testing.assert_array_equal(params[0], np.asarray(start))
    for k in (1, 2):
        assert 8.0 < float(np.std(params[k] - 100.0)) < 12.0  # N(0, noise_std = 10)
    assert not np.allclose(params[1], params[2])
    assert not state.zero_start_grad and not state.nonfinite


def test_display_clips_or_deprocesses_as_the_recipe_says():
    x = jnp.asarray([[[-20.0, 100.4, 300.0]]])
    np.testing.assert_array_equal(
        render.display(PRESETS["lucid"], x), np.array([[[0, 100, 255]]], np.uint8)
    )
    got = np.asarray(render.display(CLASSIC, x))
    assert got.dtype == np.uint8 and got[0, 0, 0] < got[0, 0, 1] < got[0, 0, 2]


def test_display_images_keep_the_models_channels():
    """A grayscale or multispectral model's display image has its channels (the picture of it is
    vizjax.images.picture's: tests/test_images.py)."""
    import jax.numpy as jnp

    for d in (1, 4):
        x = jnp.arange(12.0 * d).reshape(3, 4, d) * 5.0
        for recipe in (CLASSIC, PRESETS["lucid"]):
            got = np.asarray(render.display(recipe, x))
            assert got.shape == (3, 4, d) and got.dtype == np.uint8
