"""Params: each representation gives a valid image; Lucid's constants; FFT round trip; MACO keeps
its magnitude."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vizjax.engine import param

KEY = jax.random.key(0)


@pytest.mark.parametrize(
    "p", [param.Pixel(), param.Pixel(start="uniform"), param.FFT(), param.Maco()]
)
@pytest.mark.parametrize("hw", [(32, 32), (31, 45)])
def test_to_rgb_shape_and_range(p, hw):
    start = jnp.full((*hw, 3), 127.0)
    rgb = jax.jit(lambda k: p.to_rgb(p.init(k, start), hw))(KEY)
    assert rgb.shape == (*hw, 3) and rgb.dtype == jnp.float32
    if not isinstance(p, param.Pixel):  # pixels are unconstrained; the spectra end in a sigmoid
        assert float(rgb.min()) >= 0.0 and float(rgb.max()) <= 255.0
    assert bool(jnp.all(jnp.isfinite(rgb)))


def test_pixel_starts_from_the_shared_start_or_its_own_uniform_noise():
    start = jax.random.normal(KEY, (8, 8, 3)) + 100
    np.testing.assert_array_equal(param.Pixel().init(KEY, start), start)
    u = param.Pixel(start="uniform").init(KEY, start)
    assert float(u.min()) >= 0 and float(u.max()) <= 255 and float(u.std()) > 50
    # A start photo wins over uniform noise.
    np.testing.assert_array_equal(param.Pixel(start="uniform").init(KEY, start, True), start)


def test_decorrelation_matrix_is_lucids():
    lucid = np.array([[0.26, 0.09, 0.02], [0.27, 0.00, -0.05], [0.27, -0.09, 0.03]])
    max_col_norm = np.max(np.linalg.norm(lucid, axis=0))
    np.testing.assert_allclose(param.COLOR_CORRELATION, lucid / max_col_norm, rtol=1e-6)
    # Horama ships the same matrix, transposed and normalized: its first row.
    np.testing.assert_allclose(
        param.COLOR_CORRELATION.T[0], [0.56282854, 0.58447580, 0.58447580], rtol=1e-6
    )


def test_fft_init_follows_lucid_statistics_and_scale():
    p = param.FFT()
    spec = p.init(KEY, jnp.zeros((64, 48, 3)))
    assert spec.shape == (2, 3, 64, 48 // 2 + 1)
    assert abs(float(spec.std()) - 0.01) < 1e-3
    freqs = param.rfft2d_freqs(64, 48)
    want = 1.0 / np.maximum(freqs, 1.0 / 64) * np.sqrt(64 * 48)
    np.testing.assert_allclose(p._scale(64, 48), want, rtol=1e-6)
    # Odd widths keep one more column, as Lucid does.
    assert param.rfft2d_freqs(31, 45).shape == (31, 45 // 2 + 2)


@pytest.mark.parametrize("hw", [(32, 32), (31, 45)])
def test_fft_round_trip_from_a_photo(hw):
    photo = jax.random.uniform(KEY, (*hw, 3), minval=10, maxval=245)
    p = param.FFT()
    back = p.to_rgb(p.init(KEY, photo, from_start=True), hw)
    np.testing.assert_allclose(back, photo, atol=1e-3)


def test_maco_keeps_its_magnitude_while_the_phase_moves():
    p = param.Maco()
    hw = (32, 32)
    phase = p.init(KEY, jnp.zeros((*hw, 3)))
    moved = phase + jax.random.normal(jax.random.key(1), phase.shape)
    mag = p.magnitude(*hw)
    for ph in (phase, moved):
        # to_rgb builds the spectrum as magnitude x (cos, sin) of the standardized phase.
        z = (ph - ph.mean()) / (ph.std() + 1e-4)
        spectrum = jax.lax.complex(jnp.cos(z) * mag, jnp.sin(z) * mag)
        np.testing.assert_allclose(jnp.abs(spectrum), mag, rtol=1e-5)
    a, b = p.to_rgb(phase, hw), p.to_rgb(moved, hw)
    assert float(jnp.abs(a - b).mean()) > 1.0  # the phase is what changes the picture
    # The magnitude is a fitted 1/f^a law of the shipped photo: natural images have a near 1-2.
    exponent, _ = param.natural_spectrum_law()
    assert 0.8 < exponent < 2.0
    assert mag[0, 0, 1] > mag[0, 8, 8] > 0


@pytest.mark.parametrize("channels", [1, 4])
def test_every_param_works_per_channel_for_non_rgb_models(channels):
    """A grayscale or multispectral model's image has its channel count; colour decorrelation
    (3 channels only) is skipped."""
    import jax

    from vizjax.engine.param import FFT, Maco, Pixel

    start = jnp.full((16, 12, channels), 127.0)
    for p in (Pixel(), FFT(), Maco()):
        params = p.init(jax.random.key(0), start)
        assert p.to_rgb(params, (16, 12)).shape == (16, 12, channels), p
    photo = FFT().init(jax.random.key(0), start, from_start=True)
    np.testing.assert_allclose(FFT().to_rgb(photo, (16, 12)), start, atol=0.5)
