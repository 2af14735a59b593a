"""vizjax.models.network: a network described as layers, with its shapes, receptive fields and sizes
checked against typed-in values for VGG16 (Simonyan & Zisserman's configuration D)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vizjax.models import vgg
from vizjax.models.network import param_count

NET = vgg.NETWORK


def test_vgg16_layers_and_channels():
    assert NET.conv_layers[:3] == ("block1_conv1", "block1_conv2", "block2_conv1")
    assert len(NET.conv_layers) == 13
    channels = {"block1_conv2": 64, "block2_conv1": 128, "block3_conv3": 256, "block5_conv1": 512}
    for layer, n in channels.items():
        assert NET.num_channels(layer) == n
    assert NET.layer("block1_pool").kind != "conv"


@pytest.mark.parametrize(
    "layer,size,want",
    [
        ("block1_conv2", (128, 128), (128, 128)),
        ("block3_conv3", (128, 96), (32, 24)),
        ("block5_conv1", (128, 128), (8, 8)),
        ("block5_conv1", (224, 224), (14, 14)),
        ("block5_pool", (224, 224), (7, 7)),
    ],
)
def test_output_size(layer, size, want):
    assert NET.output_hw(layer, *size) == want


def test_receptive_field_of_vgg16():
    # By hand: each 3x3 convolution widens the field by 2 steps, each 2x2 pool by 1 step and
    # doubles the step (5, 6 after block1's pool, ..., 100 after block4's, 196 at block5_conv3).
    assert NET.receptive_field("block1_conv1").size == 3
    assert NET.receptive_field("block1_conv2").size == 5
    assert NET.receptive_field("block2_conv1").size == 10
    assert NET.receptive_field("block5_conv3").size == 196
    assert NET.receptive_field("block5_conv3").jump == 16


def test_smallest_input_of_a_layer():
    assert NET.min_input_size("block1_conv1") == 1
    assert NET.min_input_size("block2_conv1") == 2
    assert NET.min_input_size("block5_conv1") == 16  # four pools
    assert NET.output_hw("block5_conv1", 15, 15) == (0, 0)


def test_parameter_count_of_vgg16_features():
    shapes = NET.conv_shapes()
    params = {
        name: {"kernel": np.zeros(k, np.float32), "bias": np.zeros(b, np.float32)}
        for name, (k, b) in shapes.items()
    }
    assert param_count(params) == 14_714_688  # VGG16 without its classifier (Keras "notop")


def _first_max_gradient(x: np.ndarray, window: tuple[int, ...], g: np.ndarray) -> np.ndarray:
    """By brute force: each window's gradient to its first maximum in row-major order."""
    grad = np.zeros_like(x)
    for out in np.ndindex(*g.shape):
        corner = [o * w for o, w in zip(out, window, strict=True)]
        block = x[tuple(slice(c, c + w) for c, w in zip(corner, window, strict=True))]
        first = np.unravel_index(np.argmax(block), window)  # argmax: the first maximum
        grad[tuple(c + f for c, f in zip(corner, first, strict=True))] += g[out]
    return grad


@pytest.mark.parametrize("window", [(1, 2, 2, 1), (1, 1, 2, 2), (1, 3, 2, 1)])
def test_max_pool_gradient_goes_to_each_windows_first_maximum(window):
    """The pool's gradient goes whole to the first maximum of each window in row-major order
    (TensorFlow's and PyTorch's rule), ties included; trailing rows and columns get none."""
    from vizjax.models.network import pool_max

    x = np.array(jax.random.normal(jax.random.key(0), (2, 9, 7, 5)))
    x[0, :4, :4] = 0.0  # ties, as ReLU zeros make them
    x[1, 2:4, 2:4, 1] = 2.5
    y = pool_max(jnp.asarray(x), window)
    g = np.asarray(jax.random.normal(jax.random.key(1), y.shape))
    want = np.max(
        x[tuple(slice(0, s // w * w) for s, w in zip(x.shape, window, strict=True))].reshape(
            [n for s, w in zip(x.shape, window, strict=True) for n in (s // w, w)]
        ),
        axis=(1, 3, 5, 7),
    )
    np.testing.assert_array_equal(y, want)
    got = jax.vjp(lambda v: pool_max(v, window), jnp.asarray(x))[1](jnp.asarray(g))[0]
    np.testing.assert_array_equal(got, _first_max_gradient(x, window, g))
