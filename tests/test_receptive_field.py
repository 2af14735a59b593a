"""Measured receptive fields (the support of a unit's input gradient) equal the tables' analytic
fields on VGG16's and AlexNet's layers (tiny widths, random weights), and token layers get the box
of their middle token."""

import jax.numpy as jnp
import pytest

from vizjax.errors import VizjaxError
from vizjax.models import alexnet, receptive_field, vgg
from vizjax.models.network import IDENTITY, ReceptiveField


def _layer_of(net, layer, seed=0):
    """One image -> ``layer``'s activations of ``net`` with random weights (no preprocessing)."""
    variables = net.init_params(seed)
    module = net.module(IDENTITY)
    return lambda x: module.apply(variables, x, layer=layer)


VGG = vgg.network((4, 4, 8, 8, 8))
ALEX = alexnet.network((8, 8, 8, 8, 8))


@pytest.mark.parametrize(
    ("net", "layer", "size"),
    [
        (VGG, "block1_conv1", 16),
        (VGG, "block2_conv2", 32),
        (VGG, "block3_conv3", 64),
        (VGG, "block5_conv1", 192),
        (ALEX, "conv1", 31),
        (ALEX, "pool2", 95),
        (ALEX, "conv5", 195),
    ],
)
def test_measured_field_equals_the_tables(net, layer, size):
    m = receptive_field.measure(_layer_of(net, layer), size)
    want = net.receptive_field(layer)
    assert m.exact and m.field == want and m.field_x == want, (m, want)


def test_a_too_small_input_is_doubled_until_the_field_fits():
    m = receptive_field.measure(_layer_of(VGG, "block2_conv2"), 12, max_size=48)
    assert m.exact and m.input_size == 24 and m.field == VGG.receptive_field("block2_conv2")
    # Without room to grow, the field is what the image shows, marked not exact.
    small = receptive_field.measure(_layer_of(VGG, "block2_conv2"), 12)
    assert not small.exact and small.field.size < 14


def test_token_layer_box_and_a_layer_that_ignores_its_input():
    # Patches of 4x4 px as tokens, then one mixing step over the first three tokens.
    def tokens(x):
        p = x.reshape(4, 4, 4, 4, 3).transpose(0, 2, 1, 3, 4).reshape(16, 48)
        return p @ jnp.ones((48, 5)) + 0.1 * jnp.roll(p, 1, axis=0) @ jnp.ones((48, 5))

    # Token 8 is patch (2, 0) plus its predecessor, patch (1, 3).
    assert receptive_field.measure_tokens(tokens, 16) == (4, 0, 12, 16)
    with pytest.raises(VizjaxError, match="does not depend on the input"):
        receptive_field.measure(lambda x: jnp.zeros((4, 4, 2)) + jnp.sum(x) * 0, 16)
    with pytest.raises(VizjaxError, match="token layer"):
        receptive_field.measure_tokens(_layer_of(VGG, "block1_conv1"), 16)


def test_one_unit_grid_covers_the_input():
    m = receptive_field.measure(lambda x: jnp.sum(x[2:6, 1:7], axis=(0, 1))[None, None], 8)
    assert m.field == ReceptiveField(4, 4, 2) and m.field_x == ReceptiveField(6, 6, 1)


def test_measure_is_deterministic():
    f = _layer_of(ALEX, "conv1")
    assert receptive_field.measure(f, 31, seed=3) == receptive_field.measure(f, 31, seed=3)


def test_token_boxes_are_each_tokens_patch_and_its_mixing():
    def tokens(x):  # 16 patches of 4x4 px, token t also sees token t-1 (wrapping)
        p = x.reshape(4, 4, 4, 4, 3).transpose(0, 2, 1, 3, 4).reshape(16, 48)
        return p @ jnp.ones((48, 5)) + 0.1 * jnp.roll(p, 1, axis=0) @ jnp.ones((48, 5))

    boxes = receptive_field.token_boxes(tokens, 16)
    assert boxes.shape == (16, 4)
    assert tuple(boxes[8]) == receptive_field.measure_tokens(tokens, 16) == (4, 0, 12, 16)
    assert tuple(boxes[5]) == (4, 0, 8, 8)  # patches (1, 1) and (1, 0)
    assert tuple(boxes[0]) == (0, 0, 16, 16)  # patch (0, 0) and, wrapping, patch (3, 3)
