"""Winograd F(2x2, 3x3) gives XLA's convolution, forward and backward, at any size."""

import jax
import numpy as np
import pytest

from vizjax.engine import ascent
from vizjax.engine.execution import Execution
from vizjax.engine.recipe import CLASSIC
from vizjax.models import conv


@pytest.mark.parametrize(
    "shape", [(1, 7, 9, 5, 4), (2, 16, 16, 64, 32), (1, 33, 35, 3, 8), (1, 1, 2, 4, 4)]
)
def test_winograd_matches_xla_forward_and_both_gradients(shape):
    n, h, w, c, k = shape
    rng = np.random.default_rng(sum(shape))
    x = rng.standard_normal((n, h, w, c)).astype(np.float32)
    kernel = rng.standard_normal((3, 3, c, k)).astype(np.float32)
    y_ref, vjp_ref = jax.vjp(conv.conv3x3_xla, x, kernel)
    y, vjp = jax.jit(lambda x, k: jax.vjp(conv.conv3x3_winograd, x, k))(x, kernel)
    assert y.shape == (n, h, w, k)
    np.testing.assert_allclose(y, y_ref, rtol=1e-5, atol=1e-5 * np.abs(y_ref).max())
    dy = rng.standard_normal(y.shape).astype(np.float32)
    for got, want in zip(vjp(dy), vjp_ref(dy), strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * np.abs(want).max())


def test_engine_gives_the_same_images_with_either_convolution(tiny_weights):
    cfg = CLASSIC.replace(size=(32, 32), steps=4)
    args = ("block4_conv1", [0, 7, 15], cfg, tiny_weights.params, tiny_weights.preprocessing)
    # One rolled step each (unrolled equals rolled: tests/test_execution.py): a quarter of the
    # compile, the same convolutions in the same engine.
    a = ascent.visualize(*args, execution=Execution(conv="xla", unroll=1))
    b = ascent.visualize(*args, execution=Execution(conv="winograd", unroll=1))
    np.testing.assert_allclose(b.raw, a.raw, rtol=1e-4, atol=1e-4 * np.abs(a.raw).max())
    np.testing.assert_allclose(
        b.objective, a.objective, rtol=1e-4, atol=1e-4 * np.abs(a.objective).max()
    )
