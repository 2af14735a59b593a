"""Transforms: shapes, determinism per key, identity at zero strength, Lucid's standard set."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vizjax.engine import transform as T

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
    T.LucentView(),
    T.LucentView(out=24),
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


# Lucent's view with every random part switched off: identity, then the pad alone.
_LUCENT_OFF = {"jitter": 1, "jitter2": 1, "scales": (1.0,), "angles": (0.0,)}


def test_lucent_view_identity_and_pad():
    u = jnp.zeros(6)
    np.testing.assert_allclose(T.LucentView(pad=0, **_LUCENT_OFF)(u, IMG), IMG, atol=1e-3)
    # pad 12, then the 64 x 60 canvas resized to the image's 40 x 36: the corners are the grey pad,
    # the image shrunk by (40 - 1) / (64 - 1) in the middle.
    v = np.asarray(T.LucentView(pad=12, **_LUCENT_OFF)(u, IMG))
    assert v.shape == IMG.shape
    np.testing.assert_allclose(v[0, 0], 127.5, rtol=1e-4)
    np.testing.assert_allclose(v[-1, -1], 127.5, rtol=1e-4)
    from scipy import ndimage

    row, col = 20 * 63 / 39 - 12, 18 * 59 / 35 - 12  # output (20, 18) -> canvas -> image
    img = np.asarray(IMG)
    want = [ndimage.map_coordinates(img[..., c], [[row], [col]], order=1)[0] for c in range(3)]
    np.testing.assert_allclose(v[20, 18], want, rtol=1e-4)


def test_lucent_view_fills_with_black_where_it_shifts_and_rotates():
    """Lucent's jitter translates with zero fill (Lucid crops) and its rotation leaves black
    corners (as do its scale's zero padding): the network sees black, never the image's edges."""
    white = jnp.full((32, 32, 3), 255.0)
    top = jnp.asarray([0.99, 0.99, 0.5, 0.5, 0.0, 0.0])  # jitter 7 px right and down, scale 1
    v = np.asarray(T.LucentView(pad=0, jitter=8, angles=(0.0,), jitter2=1)(top, white))
    # 7 of the canvas' 32 rows (and columns) are black, resized to 32 px: the first 6 or so.
    assert (v[:6, :, :] == 0).all() and (v[:, :6, :] == 0).all() and (v[10:, 10:] == 255).all()
    turn = jnp.asarray([0.0, 0.0, 0.5, 0.0, 0.0, 0.0])  # the first angle: -10 degrees
    r = np.asarray(T.LucentView(pad=0, jitter=1, scales=(1.0,), jitter2=1)(turn, white))
    assert (r[0, 0] == 0).all() and (r[16, 16] == 255).all()
    small = jnp.asarray([0.0, 0.0, 0.0, 0.5, 0.0, 0.0])  # the first scale, 0.9: zero border
    s = np.asarray(T.LucentView(pad=0, jitter=1, angles=(0.0,), jitter2=1)(small, white))
    assert (s[0] == 0).all() and (s[16, 16] == 255).all()


def _lucent_view_by_map_coordinates(t: T.LucentView, u, image):
    """LucentView's stages as plain gathers (jax.scipy.ndimage.map_coordinates, autodiff for the
    gradient): the reference the fast separable and custom-gradient sampling must equal."""
    h, w, _ = image.shape
    t1, t2 = T._index(u[0:2], t.jitter), T._index(u[4:6], t.jitter2)
    s, a = T._choice(u[2], t.scales), T._choice(u[3], t.angles)
    ph, pw = h + 2 * t.pad, w + 2 * t.pad
    mh, mw = (max(int(np.ceil(max(t.scales) * n)), n + 1) for n in (ph, pw))

    def inside(y, x, hh, ww):
        return (y >= -1e-3) & (y <= hh - 1 + 1e-3) & (x >= -1e-3) & (x <= ww - 1 + 1e-3)

    def sample(img, y, x, ok):
        return jnp.where(ok[..., None], T._resample(img, y, x, 1, "constant", 0.0), 0.0)

    canvas = jnp.pad(image, ((t.pad, t.pad), (t.pad, t.pad), (0, 0)), constant_values=t.pad_value)
    yy, xx = T._grid(ph, pw)
    y, x = yy - t1[1], xx - t1[0]
    canvas = sample(canvas, y, x, inside(y, x, ph, pw))
    sh, sw = jnp.ceil(s * ph), jnp.ceil(s * pw)
    offh, offw = (
        jnp.maximum(0.0, jnp.ceil((ph - sh) / 2)),
        jnp.maximum(0.0, jnp.ceil((pw - sw) / 2)),
    )
    ch, cw = sh + 2 * offh, sw + 2 * offw
    yy, xx = T._grid(mh, mw)
    y, x = yy - offh, xx - offw
    ok = inside(y, x, sh, sw)
    y, x = y * (ph - 1) / jnp.maximum(sh - 1, 1.0), x * (pw - 1) / jnp.maximum(sw - 1, 1.0)
    canvas = sample(canvas, y, x, ok)
    theta = jnp.pi * a / 180.0
    y, x = T._rotated(yy, xx, jnp.cos(theta), jnp.sin(theta), (ch - 1) / 2, (cw - 1) / 2)
    canvas = sample(canvas, y, x, inside(y, x, ch, cw) & inside(yy, xx, ch, cw))
    ii, jj = T._grid(h, w)
    y, x = ii * (ch - 1) / (h - 1) - t2[1], jj * (cw - 1) / (w - 1) - t2[0]
    return sample(canvas, y, x, inside(y, x, ch, cw))


@pytest.mark.parametrize("shape", [(40, 36, 3), (31, 31, 4)])
def test_lucent_view_equals_plain_bilinear_gathers_in_value_and_gradient(shape):
    """The separable stages and the rotation's own gradient are a faster way to the same numbers:
    values and input gradients equal the map_coordinates reference over many random draws."""
    t = T.LucentView()
    image = jax.random.uniform(jax.random.key(6), shape) * 255
    cot = jax.random.normal(jax.random.key(7), shape)
    us = jax.random.uniform(jax.random.key(8), (24, 6))
    us = us.at[0, 3].set(0.0).at[1, 3].set(0.81)  # -10 and +10 degrees among the draws

    def value_and_grad(f):
        def one(u):
            out, vjp = jax.vjp(lambda im: f(t, u, im), image)
            return out, vjp(cot)[0]

        return jax.jit(jax.vmap(one))(us)

    got, got_grad = value_and_grad(T.LucentView.__call__)
    want, want_grad = value_and_grad(_lucent_view_by_map_coordinates)
    np.testing.assert_allclose(got, want, atol=1e-3)  # of 255
    scale = float(jnp.max(jnp.abs(want_grad)))
    assert scale > 0.1
    np.testing.assert_allclose(got_grad, want_grad, atol=1e-5 * scale)


@pytest.mark.parametrize("degrees", [-10.0, -3.0, 0.0, 7.0, 10.0, 45.0])
def test_rotation_gradient_is_the_adjoint_of_its_sampling(degrees):
    """The rotation's gather-written gradient equals autodiff's scatter of the same sampling."""
    image = jax.random.uniform(jax.random.key(9), (23, 29, 3))
    cot = jax.random.normal(jax.random.key(10), (23, 29, 3))
    ok = jnp.ones((23, 29)).at[0].set(0.0)
    th = jnp.pi * degrees / 180
    args = (jnp.cos(th), jnp.sin(th), jnp.float32(10.5), jnp.float32(13.0), ok)
    _, custom = jax.vjp(lambda im: T._rotate(im, *args), image)
    _, plain = jax.vjp(lambda im: T._rotate_forward(im, *args), image)
    np.testing.assert_allclose(custom(cot)[0], plain(cot)[0], atol=1e-5)
