"""Transforms: random changes of one image that the visualization must survive (Lucid's ``transform``).

Each transform is a frozen dataclass called as ``t(u, image) -> image`` on ONE image ``(H, W, 3)``
in RGB 0-255 units (or the model's D channels), where ``u`` holds the ``t.draws(hw)`` uniform random
numbers in [0, 1) it consumes. The render draws them from ``fold_in(filter_key, step)`` -- so a
filter's picture never depends on its neighbours in a batch -- for all the steps of a compiled
segment at once, in one vectorized call: with keys drawn inside every unrolled step, XLA compiled a
copy of the threefry hash per draw per step (measured: ~1.1 s of compile time per Lucid step, most
of it random number generation). :func:`sample` draws them from a key for one call. Everything is
``jax.numpy``/``lax`` inside the compiled program: no host round trip. ``out_hw(hw)`` gives the
static output size (XLA needs static shapes).

:data:`STANDARD` is Lucid's ``standard_transforms`` with its exact settings: pad 12 with grey (0.5
of Lucid's [0, 1] range, 127.5 here), jitter 8, scale from [0.90, 0.92, ..., 1.10], rotate by one of
``list(range(-10, 11)) + 5 * [0]`` degrees (Lucid converts with 3.14 instead of pi, nearest-neighbour
sampling, zero fill: reproduced), jitter 4. One difference, forced by static shapes: Lucid's scale
resizes the whole canvas (the next transforms then see a different size); here the image is zoomed
about its centre inside a canvas of fixed size (edges extended), so every step has the same shape.

:class:`Crops` is MACO's augmentation (several random crops per step, resized, with noise): it
returns a batch ``(n, M, M, 3)`` and must come last.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import ClassVar

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.scipy import ndimage

Hw = tuple[int, int]


def _index(u: jax.Array, n: int) -> jax.Array:
    """A uniform integer in 0..n-1 from a uniform ``u`` in [0, 1)."""
    return jnp.minimum(jnp.floor(u * n).astype(jnp.int32), n - 1)


def _choice(u: jax.Array, values: Sequence[float]) -> jax.Array:
    """One of ``values`` (uniformly by index, so repeated values weigh more, as in Lucid)."""
    return jnp.asarray(np.asarray(values, np.float32))[_index(u, len(values))]


def _normal(u: jax.Array) -> jax.Array:
    """Standard normal deviates from uniforms in [0, 1) (inverse CDF, clipped away from 0)."""
    return jax.scipy.special.ndtri(jnp.clip(u, 1e-7, 1 - 1e-7))


def _resample(
    image: jax.Array, rows: jax.Array, cols: jax.Array, order: int, mode: str, cval: float
) -> jax.Array:
    """``image (H, W, 3)`` sampled at float pixel coordinates ``rows, cols (H', W')``."""
    return jax.vmap(
        lambda ch: ndimage.map_coordinates(ch, [rows, cols], order=order, mode=mode, cval=cval),
        in_axes=2,
        out_axes=2,
    )(image)


# LucentView's resampling, written so that its gradient is cheap on a CPU. Sampling at arbitrary
# coordinates is a gather, and autodiff makes its gradient a scatter-add, which XLA:CPU runs one
# element at a time: through jax.scipy.ndimage.map_coordinates the view's gradient cost ~8 ms per
# image-step, more than the rest of the default recipe's own work (measured, bench/results). The
# stages that are axis-aligned (jitter, scale, the final resize) are instead integer shifts or
# separable resamplings written as two small matrix products, whose gradients are matrix products
# too; the rotation keeps its gather and gets a gather for its gradient (:func:`_rotate`). Values
# are bilinear sampling with zero fill, equal to map_coordinates' up to float rounding (tested).

_EDGE = 1e-3  # float rounding at a canvas' last row and column


def _inside(y: jax.Array, n: jax.Array | float) -> jax.Array:
    """Whether coordinates ``y`` lie on a canvas of ``n`` rows (0..n-1, with rounding slack)."""
    return (y >= -_EDGE) & (y <= n - 1 + _EDGE)


def _shift(image: jax.Array, dy: jax.Array, dx: jax.Array, d: int) -> jax.Array:
    """``image`` translated down by ``dy`` and right by ``dx`` (integers in 0..d-1), zero fill."""
    h, w, c = image.shape
    zeros = jnp.pad(image, ((d, 0), (d, 0), (0, 0)))
    return lax.dynamic_slice(zeros, (d - dy, d - dx, 0), (h, w, c))


def _tent(y: jax.Array, n: int, ok: jax.Array) -> jax.Array:
    """The ``(len(y), n)`` matrix of bilinear weights that samples ``n`` rows at coordinates ``y``
    (rows past 0..n-1 count as zero), its row ``i`` zero where ``ok[i]`` is false."""
    rows = jnp.arange(n, dtype=jnp.float32)
    weights = jnp.maximum(0.0, 1.0 - jnp.abs(y[:, None] - rows[None, :]))
    return jnp.where(ok[:, None], weights, 0.0)


def _resize(image: jax.Array, ry: jax.Array, rx: jax.Array) -> jax.Array:
    """The separable resampling ``ry @ image @ rx.T`` of ``image (H, W, C)`` (see :func:`_tent`)."""
    return jnp.einsum("jb,ibc->ijc", rx, jnp.einsum("ia,abc->ibc", ry, image))


def _rotated(
    yy: jax.Array, xx: jax.Array, cos: jax.Array, sin: jax.Array, cy: jax.Array, cx: jax.Array
) -> tuple[jax.Array, jax.Array]:
    """Where output pixels ``(yy, xx)`` sample the input when rotating about ``(cy, cx)``."""
    dy, dx = yy - cy, xx - cx
    return cy - sin * dx + cos * dy, cx + cos * dx + sin * dy


def _grid(h: int, w: int) -> tuple[jax.Array, jax.Array]:
    return jnp.meshgrid(
        jnp.arange(h, dtype=jnp.float32), jnp.arange(w, dtype=jnp.float32), indexing="ij"
    )


def _rotate_forward(image: jax.Array, cos, sin, cy, cx, ok: jax.Array) -> jax.Array:
    h, w, _ = image.shape
    y, x = _rotated(*_grid(h, w), cos, sin, cy, cx)
    y0, x0 = jnp.floor(y), jnp.floor(x)
    out = jnp.zeros_like(image)
    for oy, wy in ((0, 1 - (y - y0)), (1, y - y0)):
        for ox, wx in ((0, 1 - (x - x0)), (1, x - x0)):
            i, j = (y0 + oy).astype(jnp.int32), (x0 + ox).astype(jnp.int32)
            valid = (i >= 0) & (i < h) & (j >= 0) & (j < w)
            pixel = image[jnp.clip(i, 0, h - 1), jnp.clip(j, 0, w - 1)]
            out = out + jnp.where(valid, wy * wx, 0.0)[..., None] * pixel
    return out * ok[..., None]


@jax.custom_vjp
def _rotate(image: jax.Array, cos, sin, cy, cx, ok: jax.Array) -> jax.Array:
    """``image (H, W, C)`` rotated about ``(cy, cx)`` (bilinear, zero fill), times the mask ``ok``.

    The gradient is a gather too: the output pixels that sample input pixel ``a`` lie within
    sqrt(2) of the inverse rotation of ``a`` (a rotation keeps distances), so within the 4 x 4
    integer window around it; each weighs in by the same bilinear weight as in the forward pass.
    Only ``image`` gets a gradient.
    """
    return _rotate_forward(image, cos, sin, cy, cx, ok)


def _rotate_fwd(image, cos, sin, cy, cx, ok):
    return _rotate_forward(image, cos, sin, cy, cx, ok), (cos, sin, cy, cx, ok)


def _rotate_bwd(res, g):
    cos, sin, cy, cx, ok = res
    h, w, _ = g.shape
    g = g * ok[..., None]
    ay, ax = _grid(h, w)
    qy, qx = _rotated(ay, ax, cos, -sin, cy, cx)  # the inverse rotation of each input pixel
    fy, fx = jnp.floor(qy), jnp.floor(qx)
    grad = jnp.zeros_like(g)
    for oy in (-1, 0, 1, 2):
        for ox in (-1, 0, 1, 2):
            ky, kx = fy + oy, fx + ox
            y, x = _rotated(ky, kx, cos, sin, cy, cx)
            weight = jnp.maximum(0.0, 1 - jnp.abs(y - ay)) * jnp.maximum(0.0, 1 - jnp.abs(x - ax))
            i, j = ky.astype(jnp.int32), kx.astype(jnp.int32)
            valid = (i >= 0) & (i < h) & (j >= 0) & (j < w)
            pixel = g[jnp.clip(i, 0, h - 1), jnp.clip(j, 0, w - 1)]
            grad = grad + jnp.where(valid, weight, 0.0)[..., None] * pixel
    zero = jnp.zeros_like(cos)
    return grad, zero, zero, jnp.zeros_like(cy), jnp.zeros_like(cx), jnp.zeros_like(ok)


_rotate.defvjp(_rotate_fwd, _rotate_bwd)


@dataclasses.dataclass(frozen=True)
class Pad:
    """Pad ``width`` pixels on every side with the constant ``value`` (Lucid: 0.5 -> 127.5)."""

    kind: ClassVar[str] = "pad"
    width: int = 12
    value: float = 127.5

    def draws(self, hw: Hw) -> int:
        return 0

    def __call__(self, u: jax.Array, image: jax.Array) -> jax.Array:
        w = self.width
        return jnp.pad(image, ((w, w), (w, w), (0, 0)), constant_values=self.value)

    def out_hw(self, hw: Hw) -> Hw:
        return hw[0] + 2 * self.width, hw[1] + 2 * self.width


@dataclasses.dataclass(frozen=True)
class Jitter:
    """Random translation by up to ``d`` pixels.

    ``mode="crop"`` (Lucid's ``jitter``): a random ``(H - d) x (W - d)`` crop, offsets uniform in
    0..d. ``mode="roll"`` (tf-keras-vis' ``Jitter``): a cyclic shift by integers uniform in
    ``[-d, d)`` along each axis, same size.
    """

    kind: ClassVar[str] = "jitter"
    d: int = 8
    mode: str = "crop"

    def draws(self, hw: Hw) -> int:
        return 2

    def __call__(self, u: jax.Array, image: jax.Array) -> jax.Array:
        h, w, c = image.shape
        if self.mode == "roll":
            shift = _index(u, max(2 * self.d, 1)) - self.d
            return jnp.roll(image, (shift[0], shift[1]), axis=(0, 1))
        off = _index(u, self.d + 1)
        return lax.dynamic_slice(image, (off[0], off[1], 0), (h - self.d, w - self.d, c))

    def out_hw(self, hw: Hw) -> Hw:
        return hw if self.mode == "roll" else (hw[0] - self.d, hw[1] - self.d)


@dataclasses.dataclass(frozen=True)
class Scale:
    """Zoom about the centre by a factor drawn from ``scales`` (or uniform in ``[low, high]`` when
    ``scales`` is empty); bilinear; the canvas keeps its size (edges extended)."""

    kind: ClassVar[str] = "scale"
    scales: tuple[float, ...] = tuple(1 + (i - 5) / 50.0 for i in range(11))
    low: float = 0.9
    high: float = 1.1

    def draws(self, hw: Hw) -> int:
        return 1

    def __call__(self, u: jax.Array, image: jax.Array) -> jax.Array:
        if self.scales:
            s = _choice(u[0], self.scales)
        else:
            s = self.low + (self.high - self.low) * u[0]
        h, w, _ = image.shape
        # Output pixel (i, j) shows input ((i - c) / s + c): a zoom by s about the centre c.
        ci, cj = (h - 1) / 2.0, (w - 1) / 2.0
        ii, jj = jnp.meshgrid(jnp.arange(h, dtype=jnp.float32), jnp.arange(w, dtype=jnp.float32))
        rows, cols = (ii.T - ci) / s + ci, (jj.T - cj) / s + cj
        return _resample(image, rows, cols, 1, "nearest", 0.0)

    def out_hw(self, hw: Hw) -> Hw:
        return hw


@dataclasses.dataclass(frozen=True)
class Rotate:
    """Rotate about the centre by an angle (degrees) drawn from ``angles``, or uniform in
    ``[-degrees, degrees]`` when ``angles`` is empty (tf-keras-vis' ``Rotate2D``).

    Lucid's settings by default: angles ``list(range(-10, 11)) + 5 * [0]``, converted with
    ``pi = 3.14``, nearest-neighbour sampling, zero fill (``tf.contrib.image.rotate``).
    tf-keras-vis: bilinear (``order=1``) with reflected edges.
    """

    kind: ClassVar[str] = "rotate"
    angles: tuple[float, ...] = tuple(float(a) for a in [*range(-10, 11), 0, 0, 0, 0, 0])
    degrees: float = 0.0
    pi: float = 3.14
    order: int = 0
    fill: str = "constant"

    def draws(self, hw: Hw) -> int:
        return 1

    def __call__(self, u: jax.Array, image: jax.Array) -> jax.Array:
        if self.angles:
            a = _choice(u[0], self.angles)
        else:
            a = self.degrees * (2.0 * u[0] - 1.0)
        theta = self.pi * a / 180.0
        h, w, _ = image.shape
        ci, cj = (h - 1) / 2.0, (w - 1) / 2.0
        ii, jj = jnp.meshgrid(jnp.arange(h, dtype=jnp.float32), jnp.arange(w, dtype=jnp.float32))
        y, x = ii.T - ci, jj.T - cj
        cos, sin = jnp.cos(theta), jnp.sin(theta)
        rows, cols = cos * y - sin * x + ci, sin * y + cos * x + cj
        mode = "mirror" if self.fill == "reflect" else self.fill
        return _resample(image, rows, cols, self.order, mode, 0.0)

    def out_hw(self, hw: Hw) -> Hw:
        return hw


@dataclasses.dataclass(frozen=True)
class Blur:
    """Lucid's 3x3 blur (centre 1, the rest 0.5, normalized at the borders)."""

    kind: ClassVar[str] = "blur"

    def draws(self, hw: Hw) -> int:
        return 0

    def __call__(self, u: jax.Array, image: jax.Array) -> jax.Array:
        return blur3x3(image)

    def out_hw(self, hw: Hw) -> Hw:
        return hw


def blur3x3(image: jax.Array) -> jax.Array:
    """Lucid's ``_tf_blur`` on ``(H, W, 3)``: per-channel 3x3 kernel, centre 1, rest 0.5, divided by
    the same convolution of ones (so borders are not darkened)."""
    k = np.full((3, 3), 0.5, np.float32)
    k[1, 1] = 1.0

    def conv(x: jax.Array) -> jax.Array:
        return jax.vmap(
            lambda ch: jax.scipy.signal.convolve2d(ch, jnp.asarray(k), mode="same"),
            in_axes=2,
            out_axes=2,
        )(x)

    return conv(image) / conv(jnp.ones_like(image))


@dataclasses.dataclass(frozen=True)
class Crops:
    """MACO's augmentation (Horama's ``optimization_step``): ``n`` random square crops, resized to
    ``out`` x ``out`` (bilinear; ``out=0``: the input size), plus N(0, noise) and U(-noise/2,
    noise/2) noise. Centres ~ 0.5 + 0.15 N(0, 1) of the image; side = ``U(box)`` of its size
    (outside the image: grey 127.5). Returns ``(n, out, out, C)``: it must be the last transform.
    """

    kind: ClassVar[str] = "crops"
    n: int = 4
    box: tuple[float, float] = (0.6, 0.8)
    out: int = 0
    noise: float = 2.55

    def draws(self, hw: Hw) -> int:
        oh, ow = self.out_hw(hw)
        return self.n * (3 + 2 * oh * ow * 3)

    def __call__(self, u: jax.Array, image: jax.Array) -> jax.Array:
        h, w, _ = image.shape
        oh, ow = self.out_hw((h, w))
        box, pixels = u[: 3 * self.n].reshape(self.n, 3), u[3 * self.n :]
        gauss, unif = pixels.reshape(2, self.n, oh, ow, 3)

        def one(b: jax.Array) -> jax.Array:
            centre = 0.5 + 0.15 * _normal(b[:2])
            side = self.box[0] + (self.box[1] - self.box[0]) * b[2]
            u_ = (jnp.arange(oh, dtype=jnp.float32) + 0.5) / oh - 0.5
            v_ = (jnp.arange(ow, dtype=jnp.float32) + 0.5) / ow - 0.5
            rows = (centre[0] + side * u_) * h - 0.5
            cols = (centre[1] + side * v_) * w - 0.5
            rr, cc = jnp.meshgrid(rows, cols, indexing="ij")
            return _resample(image, rr, cc, 1, "constant", 127.5)

        crops = jax.vmap(one)(box)
        # The draws are per RGB pixel: a model of C channels takes channel c's from c mod 3.
        pick = np.arange(image.shape[-1]) % 3
        return crops + self.noise * _normal(gauss[..., pick]) + self.noise * (unif[..., pick] - 0.5)

    def out_hw(self, hw: Hw) -> Hw:
        return (self.out, self.out) if self.out else hw


@dataclasses.dataclass(frozen=True)
class LucentView:
    """Lucent 0.1.8's ``standard_transforms`` followed by its ``fixed_image_size`` resize, as one
    sampling of the image (the view the network sees, ``out`` x ``out``; ``out=0``: the input size).

    Lucent, read from its ``optvis/transform.py`` and ``render.py``: pad ``pad`` px with grey;
    ``jitter(8)`` = translate by integers in 0..7 with zero fill (same size; Lucid crops instead);
    ``random_scale`` resizes the whole canvas to ``ceil(s * size)`` (bilinear, corners aligned) and
    zero-pads it back when smaller (Lucid zooms inside a fixed canvas here); ``random_rotate`` by
    an angle in degrees about the canvas centre, bilinear, zero fill (Lucid: nearest-neighbour);
    ``jitter(4)``; then the transformed canvas (152-168 px for a 128 px image) is resized to the
    fixed size (bilinear, corners aligned), so the network sees the picture shrunk by ~0.8 and
    never sees more pixels than the image has. Each stage resamples, as Lucent's do (the repeated
    bilinear sampling blurs the view a little; one composed sampling measured less robust). The
    canvas size after the scale varies per step: the later stages work on a canvas of the largest
    size it can take, zero past the real one, so shapes stay static. Values are in 0-255 units
    (black = 0).
    """

    kind: ClassVar[str] = "lucent"
    pad: int = 12
    pad_value: float = 127.5
    jitter: int = 8
    scales: tuple[float, ...] = tuple(1 + (i - 5) / 50.0 for i in range(11))
    angles: tuple[float, ...] = tuple(float(a) for a in [*range(-10, 11), 0, 0, 0, 0, 0])
    jitter2: int = 4
    out: int = 0

    def draws(self, hw: Hw) -> int:
        return 6  # jitter (2), scale, angle, jitter2 (2)

    def __call__(self, u: jax.Array, image: jax.Array) -> jax.Array:
        h, w, _ = image.shape
        oh, ow = self.out_hw((h, w))
        t1 = _index(u[0:2], self.jitter)  # np.random.choice(d): 0..d-1
        s = _choice(u[2], self.scales)
        a = _choice(u[3], self.angles)
        t2 = _index(u[4:6], self.jitter2)
        ph, pw = h + 2 * self.pad, w + 2 * self.pad  # the padded canvas, kept by jitter
        # The scaled canvas varies per step; stages after the scale work on a canvas of the
        # largest size it can take (static), with the part past the real canvas zero.
        mh, mw = (int(np.ceil(max(self.scales) * n)) for n in (ph, pw))
        mh, mw = max(mh, ph + 1), max(mw, pw + 1)

        # pad (grey), then jitter: translate by t1 with zero fill (kornia translate(dx, dy)).
        pad = self.pad
        canvas = jnp.pad(image, ((pad, pad), (pad, pad), (0, 0)), constant_values=self.pad_value)
        canvas = _shift(canvas, t1[1], t1[0], self.jitter)
        # random_scale: resized to ceil(s * P) (corners aligned), zero-padded by
        # ceil((P - S) / 2) on each side when smaller (np.ceil as Lucent's _roundup).
        sh, sw = jnp.ceil(s * ph), jnp.ceil(s * pw)
        offh = jnp.maximum(0.0, jnp.ceil((ph - sh) / 2))
        offw = jnp.maximum(0.0, jnp.ceil((pw - sw) / 2))
        ch, cw = sh + 2 * offh, sw + 2 * offw  # the canvas rotate and jitter2 see
        y = jnp.arange(mh, dtype=jnp.float32) - offh
        x = jnp.arange(mw, dtype=jnp.float32) - offw
        ry = _tent(y * (ph - 1) / jnp.maximum(sh - 1, 1.0), ph, _inside(y, sh))
        rx = _tent(x * (pw - 1) / jnp.maximum(sw - 1, 1.0), pw, _inside(x, sw))
        canvas = _resize(canvas, ry, rx)
        # random_rotate: about the canvas centre, bilinear, zero fill (kornia warp_affine).
        theta = jnp.pi * a / 180.0
        cy, cx = (ch - 1) / 2.0, (cw - 1) / 2.0
        cos, sin = jnp.cos(theta), jnp.sin(theta)
        yy, xx = _grid(mh, mw)
        y, x = _rotated(yy, xx, cos, sin, cy, cx)
        ok = _inside(y, ch) & _inside(x, cw) & _inside(yy, ch) & _inside(xx, cw)
        canvas = _rotate(canvas, cos, sin, cy, cx, ok.astype(jnp.float32))
        # jitter2, then fixed_image_size: the canvas resized to the output (corners aligned).
        y = jnp.arange(oh, dtype=jnp.float32) * (ch - 1) / max(oh - 1, 1) - t2[1]
        x = jnp.arange(ow, dtype=jnp.float32) * (cw - 1) / max(ow - 1, 1) - t2[0]
        return _resize(canvas, _tent(y, mh, _inside(y, ch)), _tent(x, mw, _inside(x, cw)))

    def out_hw(self, hw: Hw) -> Hw:
        return (self.out, self.out) if self.out else hw


Transform = Pad | Jitter | Scale | Rotate | Blur | Crops | LucentView
KINDS: dict[str, type] = {c.kind: c for c in (Pad, Jitter, Scale, Rotate, Blur, Crops, LucentView)}

#: Lucid's ``transform.standard_transforms``, exactly (see the module docstring).
STANDARD: tuple[Transform, ...] = (
    Pad(12, 127.5),
    Jitter(8),
    Scale(),
    Rotate(),
    Jitter(4),
)


def draws(transforms: Sequence[Transform], hw: Hw) -> int:
    """How many uniforms one call of :func:`apply` consumes for an ``hw`` image (static)."""
    total = 0
    for t in transforms:
        total += t.draws(hw)
        hw = t.out_hw(hw)
    return total


def sample(transforms: Sequence[Transform], key: jax.Array, hw: Hw) -> jax.Array:
    """The uniforms one call of :func:`apply` consumes, drawn from ``key``."""
    return jax.random.uniform(key, (draws(transforms, hw),), jnp.float32)


def apply(transforms: Sequence[Transform], u: jax.Array, image: jax.Array) -> jax.Array:
    """Apply ``transforms`` in order, each taking its share of the uniforms ``u``
    (``draws(transforms, hw)`` of them; see :func:`sample`).

    Returns ``(1, H', W', 3)`` -- or ``(n, M, M, 3)`` when the last is :class:`Crops` -- a batch of
    views of one image for the network.
    """
    used = 0
    for i, t in enumerate(transforms):
        if isinstance(t, Crops) and i != len(transforms) - 1:
            raise ValueError("crops must be the last transform")
        k = t.draws(image.shape[:2])
        image = t(u[used : used + k], image)
        used += k
    return image if image.ndim == 4 else image[None]


def out_hw(transforms: Sequence[Transform], hw: Hw) -> Hw:
    """The spatial size the network sees after ``transforms`` (static)."""
    for t in transforms:
        hw = t.out_hw(hw)
    return hw


def fitting_size(transforms: Sequence[Transform], fixed: int) -> Hw:
    """The image size whose views, after ``transforms`` (pads, jitters, crops), are the ``fixed x
    fixed`` input a model requires; ``fixed`` itself if no size near it gives that (the size
    check then says so in one line)."""
    for n in sorted(range(max(1, fixed - 128), fixed + 129), key=lambda n: abs(n - fixed)):
        try:
            if out_hw(transforms, (n, n)) == (fixed, fixed):
                return n, n
        except ValueError:
            continue
    return fixed, fixed


def views(transforms: Sequence[Transform]) -> int:
    """Views of one image per step (the crops' ``n``, else 1)."""
    return transforms[-1].n if transforms and isinstance(transforms[-1], Crops) else 1
