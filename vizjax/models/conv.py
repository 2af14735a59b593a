"""3x3 'SAME' convolutions: XLA's own, and Winograd F(2x2, 3x3) for XLA:CPU.

Activation maximization runs VGG's convolutions forward and backward (w.r.t. the input) thousands
of times. On XLA:CPU, Winograd's minimal filtering (Lavin & Gray, 2015) computes each 2x2 output
tile from a 4x4 input tile with 16 multiplies per (Cin, Cout) pair instead of 36: the work becomes
16 batched matrix products over the tiles plus cheap additions. Its backward pass w.r.t. the input
is the same algorithm with the kernel flipped and its channels swapped (``custom_vjp``), so the
backward saves as much as the forward. F(2x2) is as accurate as XLA's direct convolution in
float32 (gradient error ~4e-7 vs a float64 reference, against ~1e-4 for XLA's conv backward);
measured speed-ups are in bench/README.md. On GPUs, cuDNN picks its own algorithms: use "xla".
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

# F(2x2, 3x3): Y = A^T [ (G g G^T) * (B^T d B) ] A, for 4x4 input tiles d and 3x3 kernels g.
_BT = np.array([[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]], np.float32)
_G = np.array([[1, 0, 0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0, 0, 1]], np.float32)
_AT = np.array([[1, 1, 1, 0], [0, 1, -1, -1]], np.float32)
_M, _T = 2, 4  # output tile, input tile


def conv3x3_xla(x: jax.Array, kernel: jax.Array) -> jax.Array:
    """``x (N, H, W, Cin)`` cross-correlated with ``kernel (3, 3, Cin, Cout)``, 'SAME', no bias."""
    return lax.conv_general_dilated(
        x, kernel, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")
    )


def _combine(matrix: np.ndarray, parts: list[jax.Array]) -> list[jax.Array]:
    """``[sum_j matrix[i, j] * parts[j] for i]`` written as plain adds (the entries are 0, +-1)."""
    out = []
    for row in matrix:
        acc = None
        for c, p in zip(row, parts, strict=True):
            if c == 0:
                continue
            term = p if c == 1 else -p if c == -1 else p * c
            acc = term if acc is None else acc + term
        out.append(acc)
    return out


def winograd_weights(kernel: jax.Array) -> jax.Array:
    """``(3, 3, Cin, Cout)`` -> ``U (16, Cin, Cout) = G g G^T`` per channel pair."""
    g = jnp.asarray(_G, kernel.dtype)
    u = jnp.einsum("ai,ijck,bj->abck", g, kernel, g)
    return u.reshape(_T * _T, *kernel.shape[2:])


def winograd_conv(x: jax.Array, u: jax.Array) -> jax.Array:
    """3x3 'SAME' convolution of ``x (N, H, W, Cin)`` given transformed weights ``u (16, Cin, Cout)``."""
    n, h, w, c = x.shape
    nh, nw = -(-h // _M), -(-w // _M)  # tiles per axis (the last may overhang; cropped below)
    xp = jnp.pad(x, ((0, 0), (1, nh * _M + 1 - h), (1, nw * _M + 1 - w), (0, 0)))
    # B^T d B via strided slices: row i of every tile is xp[:, i::2] (4 rows, then 4 columns).
    rows = _combine(_BT, [xp[:, i : i + _M * (nh - 1) + 1 : _M] for i in range(_T)])
    v = []
    for r in rows:
        v.extend(_combine(_BT, [r[:, :, j : j + _M * (nw - 1) + 1 : _M] for j in range(_T)]))
    v = jnp.stack(v).reshape(_T * _T, n * nh * nw, c)
    m = jnp.einsum("pnc,pck->pnk", v, u)  # 16 matrix products over all tiles
    m = m.reshape(_T, _T, n, nh, nw, -1)
    cols = _combine(_AT, [m[i] for i in range(_T)])  # A^T (.) A
    y = jnp.stack([jnp.stack(_combine(_AT, [r[j] for j in range(_T)])) for r in cols])
    y = y.transpose(2, 3, 0, 4, 1, 5).reshape(n, nh * _M, nw * _M, -1)
    return y[:, :h, :w]


@jax.custom_vjp
def conv3x3_winograd(x: jax.Array, kernel: jax.Array) -> jax.Array:
    """Same result as :func:`conv3x3_xla`, by Winograd F(2x2, 3x3), forward and backward."""
    return winograd_conv(x, winograd_weights(kernel))


def _flipped(kernel: jax.Array) -> jax.Array:
    # d(x * k)/dx is the 'SAME' correlation of dy with k rotated 180 degrees, in/out swapped.
    return jnp.swapaxes(kernel[::-1, ::-1], 2, 3)


def _forward(x: jax.Array, kernel: jax.Array):
    return conv3x3_winograd(x, kernel), (x, kernel)


def _backward(res, dy: jax.Array):
    x, kernel = res
    dx = winograd_conv(dy, winograd_weights(_flipped(kernel)))
    # The kernel's gradient, for completeness; XLA removes it when (as in vizjax) nobody uses it.
    _, kernel_vjp = jax.vjp(lambda k: conv3x3_xla(x, k), kernel)
    return dx, kernel_vjp(dy)[0]


conv3x3_winograd.defvjp(_forward, _backward)


def winograd_pair(kernel: jax.Array) -> tuple[jax.Array, jax.Array]:
    """The transformed weights of the forward and of the input gradient, ``(U, U_flipped)``, each
    ``(16, Cin, Cout)`` / ``(16, Cout, Cin)``: computed once per run instead of in every step."""
    return winograd_weights(kernel), winograd_weights(_flipped(kernel))


@jax.custom_vjp
def conv3x3_winograd_prepared(x: jax.Array, u: jax.Array, u_flipped: jax.Array) -> jax.Array:
    """:func:`conv3x3_winograd` from weights transformed ahead (:func:`winograd_pair`). Only the
    input gradient is defined: the weights' cotangents are zeros (the ascent never asks for them;
    differentiate :func:`conv3x3_winograd` for weight gradients)."""
    return winograd_conv(x, u)


def _prepared_forward(x: jax.Array, u: jax.Array, u_flipped: jax.Array):
    return winograd_conv(x, u), (u, u_flipped)


def _prepared_backward(res, dy: jax.Array):
    u, u_flipped = res
    return winograd_conv(dy, u_flipped), jnp.zeros_like(u), jnp.zeros_like(u_flipped)


conv3x3_winograd_prepared.defvjp(_prepared_forward, _prepared_backward)

IMPLS = {"xla": conv3x3_xla, "winograd": conv3x3_winograd}
