"""VGG16 in Flax: layer table, shapes for any input size, and a forward checked against numpy."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vizjax.cli import main
from vizjax.models import vgg

KERAS_TOTAL = 14_714_688


def test_param_count_random_and_real(default_weights):
    assert vgg.param_count(vgg.init_params()) == KERAS_TOTAL
    assert vgg.param_count(default_weights.params) == KERAS_TOTAL


def _expected_shape(layer, h, w):
    # Written out independently of vgg.output_hw: count pools by name.
    names = vgg.LAYER_NAMES[: vgg.LAYER_NAMES.index(layer) + 1]
    for name in names:
        if name.endswith("_pool"):
            h, w = h // 2, w // 2
    block = int(layer[5])
    return (h, w, [64, 128, 256, 512, 512][block - 1])


@pytest.mark.parametrize("hw", [(224, 224), (128, 128), (37, 53)])
def test_output_shape_of_every_layer(hw):
    params = vgg.init_params()
    model = vgg.VGG16()
    x = jax.ShapeDtypeStruct((*hw, 3), jnp.float32)
    for layer in vgg.LAYER_NAMES:
        out = jax.eval_shape(lambda x, layer=layer: model.apply(params, x, layer), x)
        assert out.shape == _expected_shape(layer, *hw), layer
        assert vgg.output_hw(layer, *hw) == out.shape[:2]
    batch = jax.eval_shape(
        lambda x: model.apply(params, x, "block3_pool"),
        jax.ShapeDtypeStruct((2, *hw, 3), jnp.float32),
    )
    assert batch.shape == (2, *_expected_shape("block3_pool", *hw))


#: The published preprocessing constants, typed in (not read from vgg.TORCH / vgg.CAFFE):
#: name -> (RGB->BGR, scale, mean, std), mean and std in the order the network sees.
PREPROCESSING = {
    "torch": (False, 255.0, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    "caffe": (True, 1.0, (103.939, 116.779, 123.68), (1.0, 1.0, 1.0)),
}


def _numpy_vgg(params, prep_name, image, layer):
    """An independent float64 reference: explicit zero padding and a sum over the 9 offsets."""
    bgr, scale, mean, std = PREPROCESSING[prep_name]
    x = image.astype(np.float64)
    if bgr:
        x = x[..., ::-1]
    x = (x / scale - np.array(mean)) / np.array(std)
    for name in vgg.LAYER_NAMES[: vgg.LAYER_NAMES.index(layer) + 1]:
        if name.endswith("_pool"):
            h, w = x.shape[0] // 2 * 2, x.shape[1] // 2 * 2
            x = x[:h, :w].reshape(h // 2, 2, w // 2, 2, -1).max(axis=(1, 3))
            continue
        k = np.asarray(params["params"][name]["kernel"], np.float64)
        b = np.asarray(params["params"][name]["bias"], np.float64)
        xp = np.pad(x, ((1, 1), (1, 1), (0, 0)))
        h, w = x.shape[:2]
        y = np.zeros((h, w, k.shape[3]))
        for dy in range(3):
            for dx in range(3):
                y += xp[dy : dy + h, dx : dx + w] @ k[dy, dx]
        x = np.maximum(y + b, 0.0)
    return x


@pytest.mark.parametrize(
    "layer,hw", [("block1_conv2", (12, 10)), ("block3_conv1", (20, 18)), ("block4_pool", (33, 35))]
)
def test_forward_matches_numpy_reference_on_real_weights(default_weights, layer, hw):
    rng = np.random.default_rng(0)
    image = rng.uniform(0, 255, (*hw, 3)).astype(np.float32)
    model = vgg.VGG16(preprocessing=default_weights.preprocessing)
    got = np.asarray(jax.jit(lambda p, x: model.apply(p, x, layer))(default_weights.params, image))
    want = _numpy_vgg(default_weights.params, "torch", image, layer)
    assert got.shape == want.shape
    scale = np.abs(want).max()
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * scale)
    assert scale > 0


def test_forward_matches_reference_with_caffe_preprocessing_and_random_weights():
    params = vgg.init_params(3)
    image = np.random.default_rng(1).uniform(0, 255, (9, 11, 3)).astype(np.float32)
    got = np.asarray(vgg.VGG16(preprocessing=vgg.CAFFE).apply(params, image, "block2_conv1"))
    want = _numpy_vgg(params, "caffe", image, "block2_conv1")
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * np.abs(want).max())


def test_single_channel_forward_equals_that_channel_of_full_forward(default_weights):
    image = np.random.default_rng(2).uniform(0, 255, (24, 24, 3)).astype(np.float32)
    model = vgg.VGG16(preprocessing=default_weights.preprocessing)
    full = model.apply(default_weights.params, image, "block2_conv2")
    for f in (0, 77, 127):
        one = model.apply(default_weights.params, image, "block2_conv2", channel=f)
        assert one.shape == (12, 12, 1)
        np.testing.assert_allclose(one[..., 0], full[..., f], rtol=1e-5, atol=1e-5)


def test_unknown_layer_lists_valid_names():
    with pytest.raises(vgg.VizjaxError, match="valid layers: block1_conv1"):
        vgg.layer_index("block6_conv1")


def test_layers_command_prints_keras_style_summary(capsys):
    assert main(["layers"]) == 0
    out = capsys.readouterr().out
    assert "block5_conv3 (Conv2D)" in out and "(None, None, None, 512)" in out
    assert "Total params: 14,714,688" in out
    assert "block1_pool (MaxPooling2D)" in out


def test_other_widths_keep_the_layers_and_change_the_channels():
    """The tests' tiny network is VGG16 with other widths: same names, pools and receptive fields."""
    widths = (2, 3, 4, 4, 5)
    model = vgg.VGG16(widths=widths)
    # The shapes flax's init gives (traced, not run: its ~100 ops compile for ~10 s).
    params = jax.eval_shape(
        lambda: model.init(jax.random.key(0), jnp.zeros((32, 32, 3)), "block5_pool")
    )
    # 9 * cin * cout + cout per convolution, block by block (typed out, not from the table).
    assert vgg.param_count(params) == 56 + 38 + 57 + 84 + 112 + 2 * 148 + 3 * 148 + 185 + 2 * 230
    assert vgg.widths_of(params) == widths
    x = jax.ShapeDtypeStruct((37, 53, 3), jnp.float32)
    for layer in vgg.LAYER_NAMES:
        out = jax.eval_shape(lambda p, x, layer=layer: model.apply(p, x, layer), params, x)
        want = _expected_shape(layer, 37, 53)[:2] + (widths[int(layer[5]) - 1],)
        assert out.shape == want, layer
        assert vgg.num_channels(layer, widths) == want[2]
    assert vgg.num_channels("block5_conv3") == 512  # the default is VGG16's
    with pytest.raises(vgg.VizjaxError, match="5 positive integers"):
        vgg.layer_table((64, 128, 256, 512))
