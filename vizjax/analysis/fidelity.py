"""Fidelity: cheap, well-defined measures of how good a filter's picture is, written for ONE image.

The engine (:mod:`vizjax.engine.ascent`) vmaps them over a chunk's images and compiles them beside the
ascent; the atlas stores them per filter (:mod:`vizjax.schema`). Definitions (fixed: a measure is
never tuned to flatter a recipe):

* ``activation_matrix (K, C)`` -- the mean activation of every channel of the layer on each of the
  filter's final images (0-255 in the model's D input channels, RGB for D = 3, as the network saw
  them, no transform). Its column ``f`` is ``final_activation``: the filter's channel mean on its
  own image. ``dead``: it is exactly 0 on every image (the filter never turned on). Across a
  layer's rows the atlas derives ``selectivity`` (the filter's own image is the argmax of its
  column over the layer's images) and ``specificity`` (own activation / mean activation of the
  filter over the other filters' images).
* ``robustness (K,)`` -- the median over 8 random perturbations of the filter's activation on its
  image, divided by the activation on the unmoved image (NaN when that is 0). The perturbations
  are two each of four kinds: (a) an affine map -- translation uniform in +-8 px on each axis,
  scale uniform in [0.9, 1.1], rotation uniform in +-10 degrees, about the centre, bilinear, edges
  reflected; (b) a wrap-around shift by whole pixels uniform in -8..8 on each axis; (c) a rotation
  uniform in +-10 degrees about the centre, bilinear, black corners; (d) resampling: zoomed by a
  factor uniform in [0.9, 1.1] and back (bilinear both ways, edges reflected), which keeps the
  geometry and loses what only works pixel-exact. Draw ``d`` of filter ``f`` uses
  ``fold_in(fold_in(fold_in(key(0), layer), f), d)``: the same perturbations for every recipe
  and atlas. Near 1: the picture shows the feature; near 0: an adversarial texture that only works
  pixel-exact. (Before 2026-11-30 all 8 were of kind (a); ``vizjax fidelity --force`` recomputes
  an older atlas' measures.)
* ``hf_energy (K,)`` -- the fraction of the display image's luminance power spectrum (mean
  removed; Y = 0.299 R + 0.587 G + 0.114 B, or the mean of the D channels where D != 3) at radial
  frequencies above half the Nyquist frequency (``sqrt(fy^2 + fx^2) > 0.25`` cycles per pixel).
  0 for a flat image, ~1 for a pixel checkerboard; natural photos are low (the shipped cat
  photo: :func:`photo_hf_energy`).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy import ndimage

#: Perturbations per image for ``robustness``.
DRAWS = 8
MAX_SHIFT = 8.0
SCALE = (0.9, 1.1)
MAX_DEGREES = 10.0

#: ``acts(images (B, H, W, D)) -> (B, h, w, C)`` (or ``(B, T, C)`` tokens): the layer's activations.
Acts = Callable[[jax.Array], jax.Array]


def channel_means(acts: Acts, image: jax.Array) -> jax.Array:
    """``(C,)`` mean activation of every channel of the layer on one image ``(H, W, D)``."""
    a = acts(image[None])[0].astype(jnp.float32)  # (h, w, C) maps or (T, C) tokens
    return jnp.mean(a, axis=tuple(range(a.ndim - 1)))


def _sample(image: jax.Array, rows: jax.Array, cols: jax.Array, mode: str) -> jax.Array:
    """``image (H, W, D)`` at float pixel coordinates (bilinear, each channel); ``mode`` fills the
    outside."""
    return jax.vmap(
        lambda ch: ndimage.map_coordinates(ch, [rows, cols], order=1, mode=mode, cval=0.0),
        in_axes=2,
        out_axes=2,
    )(image)


def _grid(h: int, w: int) -> tuple[jax.Array, jax.Array, float, float]:
    ii, jj = jnp.meshgrid(
        jnp.arange(h, dtype=jnp.float32), jnp.arange(w, dtype=jnp.float32), indexing="ij"
    )
    return ii, jj, (h - 1) / 2.0, (w - 1) / 2.0


def perturb(image: jax.Array, u: jax.Array) -> jax.Array:
    """``image (H, W, D)`` moved by the affine map that 4 uniforms ``u`` in [0, 1) pick (kind (a)
    of the module docstring): shift (2), scale, angle; edges reflected."""
    h, w, _ = image.shape
    ty, tx = MAX_SHIFT * (2 * u[0] - 1), MAX_SHIFT * (2 * u[1] - 1)
    s = SCALE[0] + (SCALE[1] - SCALE[0]) * u[2]
    theta = math.pi / 180 * MAX_DEGREES * (2 * u[3] - 1)
    ii, jj, ci, cj = _grid(h, w)
    # Output pixel p shows input c + R(-theta) (p - c - t) / s.
    y, x = (ii - ci - ty) / s, (jj - cj - tx) / s
    cos, sin = jnp.cos(theta), jnp.sin(theta)
    return _sample(image, cos * y + sin * x + ci, -sin * y + cos * x + cj, "mirror")


def wrap_shift(image: jax.Array, u: jax.Array) -> jax.Array:
    """Kind (b): a cyclic shift by whole pixels in -8..8 on each axis (2 uniforms)."""
    shift = jnp.floor(u[:2] * (2 * MAX_SHIFT + 1)).astype(jnp.int32) - int(MAX_SHIFT)
    return jnp.roll(image, (shift[0], shift[1]), axis=(0, 1))


def rotate_black(image: jax.Array, u: jax.Array) -> jax.Array:
    """Kind (c): rotated about the centre by +-10 degrees (1 uniform), black corners."""
    h, w, _ = image.shape
    theta = math.pi / 180 * MAX_DEGREES * (2 * u[0] - 1)
    ii, jj, ci, cj = _grid(h, w)
    y, x = ii - ci, jj - cj
    cos, sin = jnp.cos(theta), jnp.sin(theta)
    return _sample(image, cos * y + sin * x + ci, -sin * y + cos * x + cj, "constant")


def resample(image: jax.Array, u: jax.Array) -> jax.Array:
    """Kind (d): zoomed about the centre by s in [0.9, 1.1] (1 uniform), then by 1/s back."""
    h, w, _ = image.shape
    s = SCALE[0] + (SCALE[1] - SCALE[0]) * u[0]
    ii, jj, ci, cj = _grid(h, w)
    zoomed = _sample(image, (ii - ci) / s + ci, (jj - cj) / s + cj, "mirror")
    return _sample(zoomed, (ii - ci) * s + ci, (jj - cj) * s + cj, "mirror")


#: The four kinds, in the order draws cycle through them (draw d is of kind d % 4).
PERTURBATIONS = (perturb, wrap_shift, rotate_black, resample)


def robustness(acts: Acts, image: jax.Array, f: jax.Array, key: jax.Array) -> jax.Array:
    """Median over :data:`DRAWS` perturbations (two of each kind in :data:`PERTURBATIONS`) of
    channel ``f``'s mean activation, divided by the unperturbed one (NaN where that is 0).
    ``key``: the filter's measure key."""
    u = jax.random.uniform(key, (DRAWS, 4), jnp.float32)
    kinds = len(PERTURBATIONS)
    moved = [
        jax.vmap(lambda ud, p=p: p(image, ud))(u[k::kinds]) for k, p in enumerate(PERTURBATIONS)
    ]
    both = jnp.concatenate([image[None], *moved])
    per_image = jnp.take(acts(both), f, axis=-1).astype(jnp.float32)  # (B, h, w) or (B, T)
    a = jnp.mean(per_image, axis=tuple(range(1, per_image.ndim)))
    base = a[0]
    return jnp.where(base > 0, jnp.median(a[1:]) / jnp.where(base > 0, base, 1.0), jnp.nan)


def luminance(image: jax.Array) -> jax.Array:
    """``(H, W)`` luminance of a 0-1 ``(H, W, D)`` image: Y = 0.299 R + 0.587 G + 0.114 B for
    RGB (D = 3), the channels' mean otherwise (the one channel of a grayscale image)."""
    d = image.shape[-1]
    weights = jnp.asarray([0.299, 0.587, 0.114] if d == 3 else [1.0 / d] * d, jnp.float32)
    return image @ weights


def hf_energy(display: jax.Array) -> jax.Array:
    """Fraction of the luminance power above half Nyquist of a uint8 or 0-255 ``(H, W, D)``."""
    y = luminance(display.astype(jnp.float32) / 255.0)
    y = y - jnp.mean(y)
    power = jnp.square(jnp.abs(jnp.fft.fft2(y)))
    h, w = y.shape
    radius = np.sqrt(np.fft.fftfreq(h)[:, None] ** 2 + np.fft.fftfreq(w)[None, :] ** 2)
    total = jnp.sum(power)
    high = jnp.sum(jnp.where(jnp.asarray(radius > 0.25), power, 0.0))
    return jnp.where(total > 0, high / jnp.where(total > 0, total, 1.0), 0.0)


def measure_key(layer_index: int, f: jax.Array | int) -> jax.Array:
    """The robustness draws' key of filter ``f``: fixed seed 0, then the layer, then the filter."""
    return jax.random.fold_in(jax.random.fold_in(jax.random.key(0), layer_index), f)


def measure_one(
    acts: Acts, raw: jax.Array, display: jax.Array, f: jax.Array, key: jax.Array
) -> dict[str, jax.Array]:
    """Every measure of one filter's K images ``raw (K, H, W, D)`` (what the network saw; D its
    input channels) and ``display (K, H, W, D)`` uint8: ``activation_matrix (K, C)``, ``final_activation (K,)``,
    ``robustness (K,)``, ``hf_energy (K,)``."""
    matrix = jax.vmap(lambda x: channel_means(acts, x))(raw)
    keys = jax.vmap(lambda k: jax.random.fold_in(key, k))(jnp.arange(raw.shape[0]))
    return {
        "activation_matrix": matrix,
        "final_activation": jnp.take(matrix, f, axis=-1),
        "robustness": jax.vmap(lambda x, k: robustness(acts, x, f, k))(raw, keys),
        "hf_energy": jax.vmap(hf_energy)(display),
    }


@functools.lru_cache(maxsize=1)
def photo_hf_energy() -> float:
    """:func:`hf_energy` of the cat photo shipped with vizjax (451x300), the natural reference."""
    from vizjax import images

    return float(hf_energy(jnp.asarray(images.load_image(images.sample_path()))))


# --------------------------------------------------------------------------------------------------
# Layer figures (numpy, over an atlas layer's stored measures): the one definition that
# ``vizjax info``, the gallery, ``AtlasLayer.to_xarray`` and scripts/analyse_atlas.py show.


def summarize(table: dict[str, np.ndarray]) -> dict[str, float | int]:
    """Layer figures from an atlas layer's per-filter table (``AtlasLayer.fidelity``).

    ``done``; ``dead_count`` and ``dead_fraction`` (final activation exactly 0);
    ``zero_start_grad`` and ``nonfinite`` (counts); ``selectivity`` (fraction of the live filters
    whose own image is the argmax of their column); ``median_specificity``,
    ``median_robustness``, ``median_hf_energy`` (over live filters where defined);
    ``mean_final_activation`` (over the done filters, dead ones included). NaN where nothing is
    defined; measures not computed count as absent.
    """
    n = len(table["filter"])
    dead = np.asarray(table["dead"], bool)
    live = ~dead

    def median(name: str) -> float:
        v = np.asarray(table[name], np.float64)[live]
        v = v[np.isfinite(v)]
        return float(np.median(v)) if len(v) else float("nan")

    measured = live & np.isfinite(np.asarray(table["specificity"], np.float64))
    final = np.asarray(table["final_activation"], np.float64)
    return {
        "done": n,
        "dead_count": int(dead.sum()),
        "dead_fraction": float(dead.mean()) if n else float("nan"),
        "zero_start_grad": int(np.sum(table["zero_start_grad"])),
        "nonfinite": int(np.sum(table["nonfinite"])),
        "selectivity": float(np.mean(np.asarray(table["selectivity"], bool)[measured]))
        if measured.any()
        else float("nan"),
        "median_specificity": median("specificity"),
        "median_robustness": median("robustness"),
        "median_hf_energy": median("hf_energy"),
        "mean_final_activation": float(np.nanmean(final))
        if np.isfinite(final).any()
        else float("nan"),
    }


def _unit_columns(activation_matrix: np.ndarray, channels: np.ndarray) -> tuple[np.ndarray, ...]:
    """Columns ``channels`` of the k=0 images' activation matrix (images with a non-finite value
    dropped), scaled to unit length, and their norms (0: the channel never responds)."""
    a = np.asarray(activation_matrix, np.float64)[:, 0, :]  # images x channels
    a = a[np.all(np.isfinite(a), axis=1)][:, np.asarray(channels, int)]
    norms = np.linalg.norm(a, axis=0)
    return a / np.where(norms > 0, norms, np.inf), norms


def similarity(activation_matrix: np.ndarray, channels: np.ndarray) -> np.ndarray:
    """``(m, m)`` cosine similarity of the responses of ``channels`` (m,) over a layer's images.

    ``activation_matrix (n, K, C)``: a layer's done rows (``AtlasLayer.activation_matrix``); the
    k=0 image of each row counts. A channel that never responds is similar to nothing (0)."""
    u, _ = _unit_columns(activation_matrix, channels)
    return u.T @ u


def nearest(
    activation_matrix: np.ndarray, channels: np.ndarray, f: int, k: int = 5
) -> list[tuple[int, float]]:
    """The ``k`` of ``channels`` (the layer's done filters) whose responses are most like
    channel ``f``'s (:func:`similarity`), highest first, ``[(filter, similarity), ...]``; ``f``
    itself and channels that never respond are left out ([] if ``f`` never responds)."""
    others = [int(g) for g in channels if int(g) != int(f)]
    u, norms = _unit_columns(activation_matrix, [int(f), *others])
    if not len(u) or norms[0] == 0:
        return []
    sims = u[:, 0] @ u[:, 1:]
    out = [(g, float(s)) for g, s, nz in zip(others, sims, norms[1:] > 0, strict=True) if nz]
    out.sort(key=lambda t: -t[1])
    return out[:k]
