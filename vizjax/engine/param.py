"""Params: how one image is represented while it is optimized (Lucid's ``param``).

A param is a frozen dataclass with two pure functions, written for ONE image:

* ``init(key, start, from_start) -> params`` -- the optimized pytree. ``start`` is the run's start
  image ``(H, W, 3)`` in RGB 0-255 units (the shared noise N(127, 10) drawn from ``key(seed)``, or
  a photo); ``from_start`` says whether a photo was given. Params that do not start from the
  image only read its shape.
* ``to_rgb(params, (H, W)) -> (H, W, 3)`` float32 in RGB 0-255 units, what the network sees.

A model with other than 3 input channels (grayscale, multispectral) gets images of its own channel
count ``(H, W, C)`` (the start image's): every param works per channel, and colour decorrelation
(Lucid's ImageNet colour correlation) applies only where there are 3.

Kinds:

* :class:`Pixel` -- the pixels themselves (the seed article's, and tf-keras-vis'). Starts from the
  run's start image, or from per-image uniform noise.
* :class:`FFT` -- Lucid's ``fft_image`` with decorrelated colour and a sigmoid
  (``lucid/optvis/param/spatial.py`` and ``color.py``): a real+imaginary spectrum ~ N(0, std),
  scaled by ``1 / max(freq, 1/max(h, w)) ** decay * sqrt(h * w)``, inverse real FFT, ``/ 4``,
  multiplied by the square root of ImageNet's colour correlation (normalised by its largest column
  norm), then a sigmoid to [0, 1] (x255). A start photo seeds it: its spectrum (inverting every
  step) is the initial value.
* :class:`Maco` -- MACO (Fel et al., 2023, "Unlocking Feature Visualization for Deeper Networks with
  MAgnitude Constrained Optimization"; reference implementation serre-lab/Horama): only the phase
  of the spectrum is optimized; the magnitude is fixed to a natural-image spectrum. Horama
  downloads ImageNet's mean spectrum; vizjax fits a ``A_c / f ** a`` law to the decorrelated
  spectrum of the photo it ships (``vizjax/data/chelsea.png``), so nothing is downloaded.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import ClassVar

import jax
import jax.numpy as jnp
import numpy as np

#: Square root of ImageNet's colour correlation (Lucid's ``color_correlation_svd_sqrt``).
COLOR_CORRELATION_SVD_SQRT = np.asarray(
    [[0.26, 0.09, 0.02], [0.27, 0.00, -0.05], [0.27, -0.09, 0.03]], np.float32
)
#: ... divided by its largest column norm, as Lucid's ``_linear_decorelate_color`` does.
COLOR_CORRELATION = COLOR_CORRELATION_SVD_SQRT / np.max(
    np.linalg.norm(COLOR_CORRELATION_SVD_SQRT, axis=0)
)


def decorrelated_to_rgb(t: jax.Array) -> jax.Array:
    """Colours from Lucid's decorrelated space to RGB: ``t (..., 3) @ COLOR_CORRELATION.T``."""
    return t @ jnp.asarray(COLOR_CORRELATION.T)


def rfft2d_freqs(h: int, w: int) -> np.ndarray:
    """Frequencies of the real 2-D FFT bins, ``(h, w // 2 + 1)`` (+1 column when ``w`` is odd).

    Lucid keeps one extra column for odd widths and crops the extra pixel after the inverse FFT.
    """
    fy = np.fft.fftfreq(h)[:, None]
    fx = np.fft.fftfreq(w)[: w // 2 + 2] if w % 2 == 1 else np.fft.fftfreq(w)[: w // 2 + 1]
    return np.sqrt(fx * fx + fy * fy)


def _irfft_image(spectrum: jax.Array, h: int, w: int) -> jax.Array:
    """``(3, h, wf)`` complex spectrum -> ``(h, w, 3)`` real image (cropped for odd ``w``)."""
    wf = spectrum.shape[-1]
    img = jnp.fft.irfft2(spectrum, s=(h, 2 * (wf - 1)))
    return jnp.transpose(img, (1, 2, 0))[:h, :w]


@dataclasses.dataclass(frozen=True)
class Pixel:
    """The image's pixels, RGB 0-255 units, optimized directly.

    Attributes:
      start: ``"shared"`` starts every image from the run's start image (the seed article: noise
        N(noise_mean, noise_std) drawn once from ``key(seed)``, or a photo); ``"uniform"`` draws
        each image's own U(low, high) noise from its key (tf-keras-vis).
      low, high: the uniform start's range.
    """

    kind: ClassVar[str] = "pixel"
    start: str = "shared"
    low: float = 0.0
    high: float = 255.0

    def init(self, key: jax.Array, start: jax.Array, from_start: bool = False) -> jax.Array:
        if self.start == "uniform" and not from_start:
            return jax.random.uniform(key, start.shape, jnp.float32, self.low, self.high)
        return start.astype(jnp.float32)

    def to_rgb(self, params: jax.Array, hw: tuple[int, int]) -> jax.Array:
        return params


@dataclasses.dataclass(frozen=True)
class FFT:
    """Lucid's ``image(h, fft=True, decorrelate=True)``; see the module docstring."""

    kind: ClassVar[str] = "fft"
    std: float = 0.01
    decay: float = 1.0
    decorrelate: bool = True

    def _scale(self, h: int, w: int) -> np.ndarray:
        freqs = rfft2d_freqs(h, w)
        scale = 1.0 / np.maximum(freqs, 1.0 / max(w, h)) ** self.decay
        return (scale * np.sqrt(w * h)).astype(np.float32)

    def init(self, key: jax.Array, start: jax.Array, from_start: bool = False) -> jax.Array:
        """``(2, 3, h, wf)`` real and imaginary parts; from a photo when ``from_start``."""
        h, w, c = start.shape
        scale = self._scale(h, w)
        if not from_start:
            return self.std * jax.random.normal(key, (2, c, *scale.shape), jnp.float32)
        # Invert to_rgb: sigmoid -> colour matrix -> /4 -> irfft -> scale.
        rgb = jnp.clip(start.astype(jnp.float32) / 255.0, 1e-3, 1 - 1e-3)
        t = jnp.log(rgb) - jnp.log1p(-rgb)
        if self.decorrelate and c == 3:
            t = t @ jnp.asarray(np.linalg.inv(COLOR_CORRELATION.T))
        t = 4.0 * t
        wf = scale.shape[1]
        spec = jnp.fft.rfft2(jnp.transpose(t, (2, 0, 1)), s=(h, 2 * (wf - 1))) / scale
        return jnp.stack([spec.real, spec.imag]).astype(jnp.float32)

    def to_rgb(self, params: jax.Array, hw: tuple[int, int]) -> jax.Array:
        h, w = hw
        scale = jnp.asarray(self._scale(h, w))
        spectrum = scale * jax.lax.complex(params[0], params[1])
        t = _irfft_image(spectrum, h, w) / 4.0
        if self.decorrelate and params.shape[1] == 3:  # colour decorrelation: RGB only
            t = decorrelated_to_rgb(t)
        return 255.0 * jax.nn.sigmoid(t)


def _standardize(t: jax.Array) -> jax.Array:
    """Horama's ``standardize``: zero mean, unit standard deviation (+1e-4)."""
    t = t - jnp.mean(t)
    return t / (jnp.std(t) + 1e-4)


@functools.lru_cache(maxsize=1)
def natural_spectrum_law() -> tuple[float, tuple[float, float, float]]:
    """``(a, (A_0, A_1, A_2))`` of ``|F_c(f)| ~ A_c / f ** a`` fitted to the shipped photo.

    The photo's colours are taken to Lucid's decorrelated space (the inverse of
    :data:`COLOR_CORRELATION`), its spectrum's magnitude is averaged in 24 log-spaced radial
    frequency bands between 1/64 and 1/2 cycles per pixel, and ``log |F|`` is fitted by least
    squares as ``log A_c - a log f`` (one exponent, one amplitude per channel).
    """
    from PIL import Image

    from vizjax import images

    with Image.open(images.sample_path()) as im:
        rgb = np.asarray(im.convert("RGB"), np.float64) / 255.0
    t = rgb @ np.linalg.inv(COLOR_CORRELATION.T.astype(np.float64))
    t = t - t.mean(axis=(0, 1))
    h, w, _ = t.shape
    mag = np.abs(np.fft.rfft2(t, axes=(0, 1)))  # (h, w // 2 + 1, 3)
    f = np.sqrt(np.fft.fftfreq(h)[:, None] ** 2 + np.fft.rfftfreq(w)[None, :] ** 2)
    edges = np.geomspace(1 / 64, 0.5, 25)
    logf, logm = [], []
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        sel = (f >= lo) & (f < hi)
        logf.append(np.log(np.sqrt(lo * hi)))
        logm.append(np.log(mag[sel].mean(axis=0)))
    logf, logm = np.asarray(logf), np.asarray(logm)  # (24,), (24, 3)
    # Shared slope, per-channel intercepts: [logf, e_0, e_1, e_2] @ [-a, c_0, c_1, c_2].
    design = np.concatenate(
        [np.repeat(logf, 3)[:, None], np.tile(np.eye(3), (len(logf), 1))], axis=1
    )
    coef, *_ = np.linalg.lstsq(design, logm.reshape(-1), rcond=None)
    return float(-coef[0]), tuple(float(np.exp(c)) for c in coef[1:])  # type: ignore[return-value]


@dataclasses.dataclass(frozen=True)
class Maco:
    """MACO: phase-only spectrum with a fixed natural magnitude; see the module docstring.

    ``to_rgb``: standardize the phase, spectrum = magnitude x (cos, sin) of it, inverse real FFT,
    standardize, decorrelated colours to RGB, sigmoid (x255) -- Horama's ``maco_preconditioner``.
    The initial phase is N(0, phase_std).
    """

    kind: ClassVar[str] = "maco"
    phase_std: float = 1.0

    @staticmethod
    def magnitude(h: int, w: int, channels: int = 3) -> np.ndarray:
        """The fixed magnitude ``(3, h, w // 2 + 1)`` (+1 column for odd ``w``) from the law; for
        other than 3 channels, the mean amplitude for each."""
        a, amps = natural_spectrum_law()
        f = np.maximum(rfft2d_freqs(h, w), 1.0 / max(h, w))
        if channels != 3:
            amps = (float(np.mean(amps)),) * channels
        return np.stack([amp / f**a for amp in amps]).astype(np.float32)

    def init(self, key: jax.Array, start: jax.Array, from_start: bool = False) -> jax.Array:
        h, w, c = start.shape
        shape = self.magnitude(h, w, c).shape
        return self.phase_std * jax.random.normal(key, shape, jnp.float32)

    def to_rgb(self, phase: jax.Array, hw: tuple[int, int]) -> jax.Array:
        h, w = hw
        c = phase.shape[0]
        mag = jnp.asarray(self.magnitude(h, w, c))
        p = _standardize(phase)
        spectrum = jax.lax.complex(jnp.cos(p) * mag, jnp.sin(p) * mag)
        t = _standardize(_irfft_image(spectrum, h, w))
        return 255.0 * jax.nn.sigmoid(decorrelated_to_rgb(t) if c == 3 else t)


Param = Pixel | FFT | Maco
KINDS: dict[str, type] = {c.kind: c for c in (Pixel, FFT, Maco)}
