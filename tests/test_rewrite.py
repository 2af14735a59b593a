"""vizjax.models.rewrite: a model's 3x3 convolutions in Winograd form and its tiling max-pools as
reshape-and-max compute what the model computes (values and input gradients), in any layout, and
leave every other equation alone."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from vizjax.engine import adapter
from vizjax.engine.execution import Execution
from vizjax.models.flax_model import from_flax
from vizjax.models.network import IDENTITY
from vizjax.models.rewrite import count, pool_max, rewritten, winograd_kernels


class _Net(nn.Module):
    """A full-resolution 3x3 stem, a 2x2 pool, two 3x3 convolutions, a 3x3 tiling pool, a 5x5 and a
    strided conv, an overlapping pool."""

    @nn.compact
    def __call__(self, x):
        x = nn.relu(nn.Conv(8, (3, 3))(x))
        x = nn.max_pool(x, (2, 2), (2, 2))
        x = nn.relu(nn.Conv(8, (3, 3))(x))
        x = nn.relu(nn.Conv(16, (3, 3), use_bias=False)(x))
        x = nn.max_pool(x, (3, 3), (3, 3))
        x = nn.Conv(8, (5, 5))(x)
        x = nn.Conv(8, (3, 3), strides=(2, 2))(x)
        return nn.max_pool(x, (3, 3), (2, 2), padding="SAME")


def _net():
    x = jax.random.normal(jax.random.key(0), (2, 29, 31, 3))
    variables = _Net().init(jax.random.key(1), x)
    return (lambda v, y: _Net().apply(v, y)), variables, x


def _close(a, b, rtol=1e-5):
    a, b = np.asarray(a), np.asarray(b)
    assert a.shape == b.shape
    np.testing.assert_allclose(a, b, rtol=rtol, atol=rtol * np.abs(a).max())


def test_only_the_rewritable_equations_are_counted():
    f, v, x = _net()
    # two 3x3 stride-1 convolutions below full resolution, two tiling pools; the stem (full
    # resolution, as VGG's block 1), the 5x5, the strided 3x3 and the overlapping pool stay.
    assert count(f, v, x) == {"conv": 2, "pool": 2}


def test_values_and_input_gradients_equal_the_models_own():
    f, v, x = _net()
    g = rewritten(f)
    _close(jax.jit(f)(v, x), jax.jit(g)(v, x))
    r = jax.random.normal(jax.random.key(2), f(v, x).shape)

    def grad_of(h):
        return jax.jit(jax.grad(lambda y: jnp.sum(h(v, y) * r)))(x)

    _close(grad_of(f), grad_of(g), rtol=1e-4)


def test_under_vmap_as_the_engine_calls_it():
    f, v, x = _net()
    g = rewritten(f)
    per_image = jax.jit(jax.vmap(lambda y: g(v, y[None])[0]))(x)
    _close(f(v, x), per_image)


def _with_a_larger_conv(fn, x, k):
    """``fn(x, k)`` in a program that also convolves a 2x larger input (discarded): the full
    resolution is elsewhere, so ``fn``'s convolution is a candidate."""
    big = jnp.zeros((x.shape[0], *(2 * n for n in x.shape[1:3]), x.shape[3]), x.dtype)
    dn = ("NHWC", "HWIO", "NHWC")
    stem = lax.conv_general_dilated(big, jnp.ones((3, 3, x.shape[3], 1)), (1, 1), "SAME",
                                    dimension_numbers=dn)  # fmt: skip
    return fn(x, k) + 0 * jnp.sum(stem)


@pytest.mark.parametrize("layout", [("NCHW", "OIHW", "NCHW"), ("NHWC", "OIHW", "NCHW")])
def test_any_conv_layout(layout):
    x = jax.random.normal(jax.random.key(0), (2, 4, 9, 10))
    if layout[0] == "NHWC":
        x = jnp.transpose(x, (0, 2, 3, 1))
    k = jax.random.normal(jax.random.key(1), (5, 4, 3, 3))

    def conv(x, k):
        return lax.conv_general_dilated(x, k, (1, 1), "SAME", dimension_numbers=layout)

    assert count(conv, x, k)["conv"] == 0  # alone, it is the full resolution
    if layout[0] == "NHWC":
        assert count(lambda x, k: _with_a_larger_conv(conv, x, k), x, k)["conv"] == 1
        fn = rewritten(lambda x, k: _with_a_larger_conv(conv, x, k))
        _close(conv(x, k), fn(x, k))
    else:
        big = jnp.zeros((2, 4, 20, 20))

        def two(x, k):
            return conv(x, k) + 0 * jnp.sum(conv(big, k))

        assert count(two, x, k)["conv"] == 1
        _close(conv(x, k), rewritten(two)(x, k))


def test_dilated_grouped_and_unpadded_convs_are_left_alone():
    x = jax.random.normal(jax.random.key(0), (1, 9, 9, 4))
    k = jax.random.normal(jax.random.key(1), (3, 3, 2, 4))
    dn = ("NHWC", "HWIO", "NHWC")

    def grouped(x):
        return lax.conv_general_dilated(x, k, (1, 1), "SAME", dimension_numbers=dn,
                                        feature_group_count=2)  # fmt: skip

    def dilated(x):
        return lax.conv_general_dilated(x, k[:, :, :, :2].repeat(2, 2), (1, 1), "SAME",
                                        rhs_dilation=(2, 2), dimension_numbers=dn)  # fmt: skip

    def valid(x):
        return lax.conv_general_dilated(x, k.repeat(2, 2), (1, 1), "VALID", dimension_numbers=dn)

    for fn in (grouped, dilated, valid):
        # below full resolution (a larger convolution elsewhere), yet not 3x3 / stride 1 / pad 1
        def program(x, fn=fn):
            return _with_a_larger_conv(lambda y, _: fn(y), x, None)

        assert count(program, x) == {"conv": 0, "pool": 0}
        np.testing.assert_array_equal(program(x), rewritten(program)(x))


def test_calls_are_inlined_where_they_hold_a_rewrite():
    k = jax.random.normal(jax.random.key(1), (3, 3, 4, 4))
    dn = ("NHWC", "HWIO", "NHWC")
    inner = jax.jit(lambda x: jax.nn.relu(lax.conv_general_dilated(x, k, (1, 1), "SAME",
                                                                   dimension_numbers=dn)))  # fmt: skip

    def outer(x):  # the stem at 16x16 (kept), then 8x8 twice through a jitted call (swapped)
        y = inner(x).reshape(1, 8, 2, 8, 2, 4).mean(axis=(2, 4))
        return inner(inner(y)) + jax.jit(jnp.sin)(y)

    x = jax.random.normal(jax.random.key(0), (1, 16, 16, 4))
    assert count(outer, x)["conv"] == 2
    _close(outer(x), rewritten(outer)(x))


def test_full_resolution_convolutions_stay_xlas():
    """As the built-ins' block 1: a program whose 3x3 convolutions all see the input's size has
    nothing to swap."""
    k = jax.random.normal(jax.random.key(1), (3, 3, 4, 4))

    def same_size(x):
        y = lax.conv_general_dilated(
            x, k, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")
        )
        return lax.conv_general_dilated(
            y, k, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")
        )

    x = jax.random.normal(jax.random.key(0), (1, 8, 8, 4))
    assert count(same_size, x) == {"conv": 0, "pool": 0}
    np.testing.assert_array_equal(same_size(x), rewritten(same_size)(x))


def test_pool_max_drops_what_fills_no_window():
    x = jnp.arange(2 * 7 * 5 * 3, dtype=jnp.float32).reshape(2, 7, 5, 3)
    ref = lax.reduce_window(x, -jnp.inf, lax.max, (1, 3, 2, 1), (1, 3, 2, 1), "VALID")
    np.testing.assert_array_equal(pool_max(x, (1, 3, 2, 1)), ref)


def test_the_generic_adapter_takes_winograd_on_cpu_and_avoids_select_and_scatter():
    """The engine's forward of a generic model: on CPU (conv auto) its input gradient keeps XLA's
    convolution only for the layers Winograd does not cover, and select-and-scatter only for the
    overlapping pool; with conv="xla" the 3x3 convolutions stay XLA's. Read from the HLO text."""
    f, v, x = _net()
    model = from_flax(_Net(), v, preprocessing=IDENTITY, name="rewrite-test")
    layer = model.layers[-1]

    def hlo(fwd) -> str:
        def loss(y):
            return jnp.sum(fwd(model.params, y, (layer,))[layer])

        return jax.jit(jax.grad(loss)).lower(x).as_text()

    def engine(conv: str):
        return adapter.of(model).forward(IDENTITY, True, Execution(conv=conv), "cpu")

    own, auto, xla = hlo(model.apply), hlo(engine("auto")), hlo(engine("xla"))
    assert own.count("select_and_scatter") == 3
    assert auto.count("select_and_scatter") == xla.count("select_and_scatter") == 1
    convs = [t.count("stablehlo.convolution") for t in (own, auto, xla)]
    assert convs[0] == convs[2] > convs[1]


def test_kernels_transformed_ahead_give_the_same_values_and_gradients():
    """The engine transforms the 3x3 HWIO kernels once per run (Generic.prepare); the forward
    with them equals the forward that transforms in every call, and the model's own."""
    f, v, x = _net()
    kernels = winograd_kernels(v)
    shapes = [leaf.shape for leaf in jax.tree.leaves(v)]
    want = [(3, 3, 3, 8), (3, 3, 8, 8), (3, 3, 8, 8), (3, 3, 8, 16)]
    assert sorted(shapes[i] for i in kernels) == want
    g = rewritten(f)
    r = jax.random.normal(jax.random.key(2), f(v, x).shape)
    for ks in (None, kernels):
        _close(f(v, x), jax.jit(lambda y, ks=ks: g(v, y, kernels=ks))(x))
        own = jax.grad(lambda y: jnp.sum(f(v, y) * r))(x)
        _close(own, jax.jit(jax.grad(lambda y, ks=ks: jnp.sum(g(v, y, kernels=ks) * r)))(x), 1e-4)
    model = from_flax(_Net(), v, preprocessing=IDENTITY, name="rewrite-test")
    net = adapter.of(model)
    prepared = net.prepare(model.params, 0, Execution(), "cpu")
    assert isinstance(prepared, adapter.Prepared) and prepared.kernels.keys() == kernels.keys()
    assert net.prepare(model.params, 0, Execution(conv="xla"), "cpu") is model.params
    fwd = net.forward(IDENTITY, True, Execution(), "cpu")
    layer = model.layers[-1]
    _close(fwd(model.params, x, (layer,))[layer], fwd(prepared, x, (layer,))[layer])
