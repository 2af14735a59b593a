"""Transforms: shapes, determinism per key, identity at zero strength, Lucid's standard set."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vizjax import transform as T

KEY = jax.random.key(3)
IMG = jax.random.uniform(jax.random.key(4), (40, 36, 3)) * 255

ALL = [
    T.Pad(12),
    T.Jitter(8),
    T.Jitter(4, mode="roll"),
    T.Scale(),
    T.Scale(scales=(), low=0.9, high=1.1),
    T.Rotate(),
    T.Rotate(angles=(), degrees=1.0, order=1, fill="reflect"),
    T.Blur(),
    T.Crops(n=3, out=24),
]


@pytest.mark.parametrize("t", ALL, ids=lambda t: t.kind)
def test_shape_and_determinism_per_key(t):
    hw = IMG.shape[:2]
    run = jax.jit(lambda k: T.apply((t,), T.sample((t,), k, hw), IMG))
    a, b, c = run(KEY), run(KEY), run(jax.random.key(5))
    n = t.n if isinstance(t, T.Crops) else 1
    assert a.shape == (n, *t.out_hw(hw), 3)
    np.testing.assert_array_equal(a, b)
    if t.draws(hw):
        assert not np.array_equal(a, c)  # another key, another draw


@pytest.mark.parametrize(
    "t",
    [T.Jitter(0), T.Jitter(0, mode="roll"), T.Scale(scales=(1.0,)), T.Rotate(angles=(0.0,))],
    ids=lambda t: t.kind,
)
def test_identity_at_zero_strength(t):
    out = T.apply((t,), T.sample((t,), KEY, IMG.shape[:2]), IMG)[0]
    np.testing.assert_allclose(out, IMG, atol=1e-4)


def test_standard_transforms_are_lucids():
    pad, jit8, scale, rotate, jit4 = T.STANDARD
    assert (pad.width, pad.value) == (12, 127.5)  # Lucid pads 0.5 in [0, 1] units
    assert (jit8.d, jit4.d) == (8, 4) and jit8.mode == jit4.mode == "crop"
    np.testing.assert_allclose(scale.scales, [1 + (i - 5) / 50 for i in range(11)])
    assert list(rotate.angles) == list(range(-10, 11)) + 5 * [0]
    assert (rotate.pi, rotate.order, rotate.fill) == (3.14, 0, "constant")
    assert T.out_hw(T.STANDARD, (128, 128)) == (140, 140)  # +24 pad, -8 and -4 jitter
    out = T.apply(T.STANDARD, T.sample(T.STANDARD, KEY, (32, 32)), IMG[:32, :32])
    assert out.shape == (1, 44, 44, 3)


def test_translation_by_k_pixels_is_a_roll_on_the_interior():
    # Jitter(crop) at offset (dy, dx) shows image[dy:, dx:]: the same as rolling by (-dy, -dx).
    d = 6
    u = T.sample((T.Jitter(d),), KEY, IMG.shape[:2])
    dy, dx = (int(np.floor(float(v) * (d + 1))) for v in u)
    crop = T.apply((T.Jitter(d),), u, IMG)[0]
    rolled = jnp.roll(IMG, (-dy, -dx), axis=(0, 1))[: IMG.shape[0] - d, : IMG.shape[1] - d]
    np.testing.assert_array_equal(crop, rolled)
    # The roll jitter is exactly a roll.
    u = T.sample((T.Jitter(d, mode="roll"),), KEY, IMG.shape[:2])
    shift = [int(np.floor(float(v) * 2 * d)) - d for v in u]
    np.testing.assert_array_equal(
        T.apply((T.Jitter(d, mode="roll"),), u, IMG)[0], jnp.roll(IMG, shift, axis=(0, 1))
    )


def test_rotation_by_180_degrees_flips_the_image():
    t = T.Rotate(angles=(180.0,), pi=np.pi, order=1)
    out = T.apply((t,), T.sample((t,), KEY, IMG.shape[:2]), IMG)[0]
    np.testing.assert_allclose(out, IMG[::-1, ::-1], atol=1e-3)


def test_crops_must_come_last():
    with pytest.raises(ValueError, match="last"):
        T.apply((T.Crops(), T.Pad()), jnp.zeros(10**6), IMG)
