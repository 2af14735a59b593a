"""The batched engine against a plain reference, and its invariances (chunks, devices, padding)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from vizjax.engine import ascent, optim
from vizjax.engine.execution import Execution
from vizjax.engine.recipe import CLASSIC
from vizjax.models import vgg


def AscentConfig(size=None, steps=20, step_size=1.0, seed=0, preprocess=True):  # noqa: N802
    """The classic recipe with the settings these tests vary (the engine's API before recipes)."""
    return CLASSIC.replace(
        size=size,
        steps=steps,
        seed=seed,
        preprocess=preprocess,
        optimizer=optim.Optimizer("classic", lr=step_size),
    )


def _reference(params, prep, x0, layer, f, steps, step_size):
    """The classic recipe without vmap or scan: one filter, a Python loop over steps (each step's
    value and gradient jitted: op by op, block5's backward pass compiled ~100 programs)."""
    model = vgg.VGG16(preprocessing=prep, widths=vgg.widths_of(params))

    def obj(x, params):
        return jnp.mean(model.apply(params, x, layer)[..., f])  # full layer, then the channel

    step = jax.jit(jax.value_and_grad(obj))
    x = np.asarray(x0, np.float32)
    trace = []
    for _ in range(steps):
        value, g = step(x, params)
        g = np.asarray(g, np.float64)
        trace.append(float(value))
        x = (x + step_size * g / (np.sqrt(np.mean(g**2)) + 1e-5)).astype(np.float32)
    trace.append(float(step(x, params)[0]))
    return x, np.asarray(trace)


#: XLA's convolution where the convolution algorithm is not what a test is about: it compiles
#: ~4x faster than the Winograd one that ``conv="auto"`` picks on CPU for blocks 2-5 (which gives
#: the same images: tests/test_conv.py; and test_engine_matches_plain_reference runs the default).
XLA = Execution(conv="xla")


def _close(got, want, rtol):
    scale = float(np.abs(want).max())
    np.testing.assert_allclose(got, want, rtol=rtol, atol=rtol * max(scale, 1e-12))


@pytest.mark.parametrize(
    "layer,size,filters",
    [
        ("block1_conv2", 32, [0, 3, 7]),
        # Slow (scripts/test.sh --all, CI): the deepest layer, through four pools.
        pytest.param("block5_conv1", 32, [0, 10, 15], marks=pytest.mark.slow),
    ],
)
def test_engine_matches_plain_reference(tiny_weights, layer, size, filters):
    cfg = AscentConfig(size=(size, size), steps=5, step_size=1.0, seed=3)
    # The CPU default (Winograd from block 2, unrolled segments) in chunks of 2 padded over 4
    # devices. At block5, five one-step segments: one unrolled step compiled instead of five (a
    # fifth of the compile; the five-step segment equals them: tests/test_execution.py).
    ex = Execution(batch=2, segment=1 if layer.startswith("block5") else 0)
    res = ascent.visualize(
        layer, filters, cfg, tiny_weights.params, tiny_weights.preprocessing, execution=ex
    )
    x0 = np.asarray(ascent.noise_image(cfg))
    for i, f in enumerate(filters):
        raw, trace = _reference(
            tiny_weights.params,
            tiny_weights.preprocessing,
            x0,
            layer,
            f,
            cfg.steps,
            cfg.optimizer.lr,
        )
        _close(res.raw[i, 0], raw, 1e-4)
        _close(res.objective[i], trace, 1e-4)
        np.testing.assert_array_equal(res.images[i, 0], np.asarray(ascent.deprocess(res.raw[i, 0])))
    assert res.objective.shape == (len(filters), cfg.steps + 1)


def test_start_noise_and_deprocess_follow_the_article():
    cfg = AscentConfig(seed=0)
    x0 = np.asarray(ascent.noise_image(cfg))
    assert x0.shape == (128, 128, 3)
    assert abs(x0.mean() - 127) < 0.2 and abs(x0.std() - 10) < 0.2
    x = np.random.default_rng(0).normal(50, 30, (16, 16, 3)).astype(np.float32)
    z = (x - x.mean()) / (x.std() + 1e-5) * 0.1 + 0.5
    want = (np.clip(z, 0, 1) * 255).astype(np.uint8)
    got = np.asarray(ascent.deprocess(jnp.asarray(x)))
    assert np.abs(got.astype(int) - want.astype(int)).max() <= 1  # float32 vs float64 rounding


def test_results_do_not_depend_on_chunking_devices_or_padding(tiny_weights):
    cfg = AscentConfig(size=(32, 32), steps=4)
    filters = list(range(7))  # divides neither chunk 2, 3, 8 nor 4 devices
    args = ("block2_conv1", filters, cfg, tiny_weights.params, tiny_weights.preprocessing)
    one = ascent.local_mesh(jax.devices()[:1])
    assert len(jax.devices()) == 4

    def run(*a, batch, **kw):
        return ascent.visualize(*a, execution=XLA.replace(batch=batch), **kw)

    base = run(*args, batch=1, mesh=one)
    runs = {
        "chunk 8, 1 device": run(*args, batch=8, mesh=one),
        "chunk 8, 4 devices": run(*args, batch=8),
        "chunk 3, 4 devices": run(*args, batch=3),
        "auto, 4 devices": run(*args, batch="auto"),
        "reversed order": run(*args[:1], filters[::-1], *args[2:], batch=2),
    }
    for name, res in runs.items():
        order = np.argsort(res.filters)
        np.testing.assert_array_equal(res.filters[order], base.filters, err_msg=name)
        _close(res.raw[order], base.raw, 1e-5)
        _close(res.objective[order], base.objective, 1e-5)


def test_compiled_once_per_chunk_shape(tiny_weights):
    cfg = AscentConfig(size=(32, 32), steps=3, step_size=0.5)  # a config no other test compiles
    one = ascent.local_mesh(jax.devices()[:1])
    before = ascent.TRACES[("block1_conv1", 2)]
    chunks = list(
        ascent.iter_chunks(
            "block1_conv1",
            range(7),
            cfg,
            tiny_weights.params,
            tiny_weights.preprocessing,
            execution=Execution(batch=2),
            mesh=one,
        )
    )
    assert [len(c) for c in chunks] == [2, 2, 2, 1]
    assert ascent.TRACES[("block1_conv1", 2)] - before == 1
    ascent.visualize(
        "block1_conv1",
        range(4),
        cfg.replace(seed=9),
        tiny_weights.params,
        tiny_weights.preprocessing,
        execution=Execution(batch=2),
        mesh=one,
    )
    assert ascent.TRACES[("block1_conv1", 2)] - before == 1  # a new seed reuses the program


def test_objective_rises_for_live_filters_and_dead_ones_are_reported(tiny_weights):
    params = jax.tree.map(np.array, tiny_weights.params)
    conv = params["params"]["block2_conv1"]
    conv["kernel"][..., 5] = 0.0
    conv["bias"][5] = -1.0  # relu(-1) == 0 everywhere: zero gradient, a dead filter
    cfg = AscentConfig(size=(32, 32), steps=5)
    res = ascent.visualize("block2_conv1", range(8), cfg, params, tiny_weights.preprocessing)
    assert res.zero_start_grad.tolist() == [f == 5 for f in range(8)]
    live = ~res.zero_start_grad
    assert np.all(res.objective[live, -1] > res.objective[live, 0])
    assert np.all(np.diff(res.objective[live], axis=1) > 0)
    np.testing.assert_array_equal(res.raw[5, 0], np.asarray(ascent.noise_image(cfg)))
    assert np.all(res.objective[5] == 0)


#: bfloat16 keeps 8 mantissa bits; over the first 3 steps the objective trace stays within 5% of
#: float32 (measured: ~1% on these filters). README documents this tolerance.
BF16_RTOL = 5e-2


def test_bfloat16_stays_close_to_float32_on_first_steps(tiny_weights):
    cfg = AscentConfig(size=(32, 32), steps=3)
    args = ("block3_conv1", [0, 1, 2, 3], cfg)
    f32 = ascent.visualize(*args, tiny_weights.params, tiny_weights.preprocessing, execution=XLA)
    bf16 = ascent.visualize(
        *args,
        tiny_weights.params,
        tiny_weights.preprocessing,
        execution=XLA.replace(dtype="bfloat16"),
    )
    assert bf16.raw.dtype == np.float32  # the image and its update stay float32
    rel = np.abs(bf16.objective - f32.objective) / np.abs(f32.objective).max(axis=1, keepdims=True)
    assert rel.max() < BF16_RTOL, rel.max()
    assert not np.array_equal(bf16.objective, f32.objective)  # it really ran in bfloat16


def _article_objective(params, layer, f):
    """The article's network, written independently: raw pixels in (no preprocess_input),
    lax.conv by hand, 'SAME' 3x3 convs + ReLU, 2x2 max-pools."""
    p = params["params"]

    def forward(x):
        x = x[None]
        for name in vgg.LAYER_NAMES[: vgg.LAYER_NAMES.index(layer) + 1]:
            if name.endswith("pool"):
                x = lax.reduce_window(x, -jnp.inf, lax.max, (1, 2, 2, 1), (1, 2, 2, 1), "VALID")
            else:
                x = lax.conv_general_dilated(
                    x,
                    p[name]["kernel"],
                    (1, 1),
                    ((1, 1), (1, 1)),
                    dimension_numbers=("NHWC", "HWIO", "NHWC"),
                )
                x = jnp.maximum(x + p[name]["bias"], 0)
        return jnp.mean(x[0, :, :, f])

    return forward


def test_no_preprocess_mode_matches_the_articles_math(tiny_weights):
    layer, filters = "block3_conv1", [0, 5]
    cfg = AscentConfig(size=(40, 40), steps=4, preprocess=False)
    res = ascent.visualize(
        layer, filters, cfg, tiny_weights.params, tiny_weights.preprocessing, execution=XLA
    )
    x0 = np.asarray(ascent.noise_image(cfg), np.float64)
    for i, f in enumerate(filters):
        calc = jax.jit(jax.value_and_grad(_article_objective(tiny_weights.params, layer, f)))
        x, trace = x0.copy(), []
        for _ in range(cfg.steps):  # the article: grads /= sqrt(mean(grads**2)) + 1e-5; x += grads
            value, g = calc(jnp.asarray(x, jnp.float32))
            g = np.asarray(g, np.float64)
            x += g / (np.sqrt(np.mean(np.square(g))) + 1e-5) * cfg.optimizer.lr
            trace.append(float(value))
        trace.append(float(calc(jnp.asarray(x, jnp.float32))[0]))
        _close(res.raw[i, 0], x, 1e-4)
        _close(res.objective[i], np.asarray(trace), 1e-4)
    with_prep = ascent.visualize(
        layer,
        filters,
        cfg.replace(preprocess=True),
        tiny_weights.params,
        tiny_weights.preprocessing,
        execution=XLA,
    )
    assert not np.allclose(with_prep.objective, res.objective)


def test_bad_requests_raise_clear_errors(tiny_weights):
    args = (
        AscentConfig(size=(8, 8), steps=2),
        tiny_weights.params,
        tiny_weights.preprocessing,
    )
    with pytest.raises(
        vgg.VizjaxError, match="too small for block5_conv1: it needs at least 16x16"
    ):
        ascent.visualize("block5_conv1", [0], *args)
    with pytest.raises(
        vgg.VizjaxError, match=r"filter index 8 out of range for block1_conv1 \(0..7\)"
    ):
        ascent.visualize("block1_conv1", [8], *args)
    with pytest.raises(vgg.VizjaxError, match="pooling layer"):
        ascent.visualize("block1_pool", [0], *args)
    with pytest.raises(vgg.VizjaxError, match="steps must be a positive integer"):
        AscentConfig(steps=0)  # the recipe refuses it
