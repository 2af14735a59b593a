"""Flax linen modules through :func:`vizjax.models.flax_model.from_flax`: layers by module path in
execution order, inference mode (batch norm's running statistics), one-line refusals, and the
tie to everything the built-in path is checked against: VGG16's own Flax module wrapped as a
generic model gives the built-in path's classic images."""

from __future__ import annotations

import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vizjax import models
from vizjax.engine import ascent
from vizjax.engine.recipe import preset
from vizjax.errors import VizjaxError
from vizjax.models.flax_model import OUTPUT, from_flax
from vizjax.models.network import IDENTITY

sys.path.insert(0, str(Path(__file__).resolve().parent))
import flax_nets  # noqa: E402

ONE = jax.devices()[:1]


@pytest.fixture(scope="module")
def resnet():
    module, variables, prep = flax_nets.resnet()
    return from_flax(module, variables, preprocessing=prep, name="flax:resnet")


def test_layers_are_module_paths_in_the_order_their_calls_finish(resnet):
    layers = resnet.layers
    assert layers[0] == "Conv_0" and layers[-1] == OUTPUT
    for inner, outer in [
        ("Stage_0/Block_0/Conv_0", "Stage_0/Block_0"),
        ("Stage_0/Block_0", "Stage_0/Block_1"),
        ("Stage_0/Block_1", "Stage_0"),
        ("Stage_0", "Stage_1/Block_0/Conv_0"),
    ]:
        assert layers.index(inner) < layers.index(outer)
    shapes = resnet.layer_shapes(32)
    assert shapes["Stage_0"].shape == (32, 32, 8)
    assert shapes["Stage_1/Block_0"].shape == (16, 16, 16)  # the stride-2 block
    assert shapes[OUTPUT].shape == (10,)


def test_apply_returns_the_layers_asked_in_inference_mode(resnet):
    x = jax.random.uniform(jax.random.key(0), (2, 32, 32, 3))
    out = resnet.apply(resnet.params, x, ("Stage_0", "Stage_1"))
    assert set(out) == {"Stage_0", "Stage_1"} and out["Stage_1"].shape == (2, 16, 16, 16)
    # Batch norm reads the running statistics: other statistics, other activations.
    stats = jax.tree.map(lambda a: a + 0.5, resnet.params["batch_stats"])
    moved = resnet.apply({**resnet.params, "batch_stats": stats}, x, ("Stage_0",))
    assert not np.allclose(moved["Stage_0"], out["Stage_0"])
    # The same image alone or in a batch: no batch statistics leak in.
    alone = resnet.apply(resnet.params, x[:1], ("Stage_0",))
    np.testing.assert_allclose(alone["Stage_0"][0], out["Stage_0"][0], rtol=1e-5, atol=1e-5)


def test_a_module_in_training_mode_is_one_line():
    module, variables, _ = flax_nets.resnet()
    with pytest.raises(VizjaxError, match="inference mode") as e:
        from_flax(module.clone(train=True), variables)
    assert "\n" not in str(e.value)


def test_not_a_module_is_one_line():
    with pytest.raises(VizjaxError, match="expected a flax.linen Module, got str"):
        from_flax("resnet", {"params": {}})
    module, variables, _ = flax_nets.resnet()
    with pytest.raises(VizjaxError, match="must be a dict with 'params'"):
        from_flax(module, [1, 2])


def test_the_identity_follows_architecture_and_weights(resnet):
    module, variables, prep = flax_nets.resnet()
    again = from_flax(module, variables, preprocessing=prep)
    assert again.fingerprint() == resnet.fingerprint()
    assert again.architecture_hash() == resnet.architecture_hash()
    other = jax.tree.map(lambda a: a * 1.01, variables)
    assert from_flax(module, other).fingerprint() != resnet.fingerprint()
    wider = flax_nets.ResNet(widths=(8, 24))
    assert from_flax(
        wider, wider.init(jax.random.key(0), jnp.zeros((1, 8, 8, 3)))
    ).architecture_hash() != (resnet.architecture_hash())


def test_residual_stage_channels_rise_under_the_engine(resnet):
    recipe = preset("classic").replace(size=(32, 32), steps=3)
    res = ascent.visualize("Stage_1", [0, 5], recipe, resnet, None, mesh=ascent.local_mesh(ONE))
    assert res.images.shape == (2, 1, 32, 32, 3) and res.images.dtype == np.uint8
    assert np.all(res.objective[:, -1] > res.objective[:, 0])
    assert not res.zero_start_grad.any() and not res.nonfinite.any()


def test_vgg16_wrapped_by_from_flax_gives_the_builtin_classic_images(tiny_weights):
    """The table network's own Flax module (ConvNet, which preprocesses inside) as a generic
    model: same filters, same start, same recipe -> the built-in path's images to float
    tolerance (the built-in one runs its fast paths: one-channel convolution, Winograd)."""
    network = models.from_params(tiny_weights.params)
    module = network.module(tiny_weights.preprocessing)
    generic = from_flax(module, tiny_weights.params, preprocessing=IDENTITY, name="flax:vgg16")
    assert generic.layers[:3] == ("block1_conv1", "block1_conv2", "block2_conv1")
    recipe = preset("classic").replace(size=(32, 32), steps=4)
    mesh = ascent.local_mesh(ONE)
    kw = {"mesh": mesh, "measure": True}
    built = ascent.visualize(
        "block2_conv1", range(4), recipe, tiny_weights.params, tiny_weights.preprocessing, **kw
    )
    mine = ascent.visualize("block2_conv1", range(4), recipe, generic, None, **kw)
    np.testing.assert_allclose(mine.raw, built.raw, rtol=0, atol=1e-3)
    assert np.abs(mine.images.astype(int) - built.images.astype(int)).max() <= 1
    np.testing.assert_allclose(mine.objective, built.objective, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(
        mine.activation_matrix, built.activation_matrix, rtol=1e-4, atol=1e-5
    )


def test_a_grayscale_model_gets_one_channel_images_shown_as_gray():
    from vizjax import images

    gray = flax_nets.gray()
    assert gray.channels == 1
    recipe = preset("classic").replace(size=(32, 32), steps=2)
    res = ascent.visualize("Stage_0", [0], recipe, gray, None, mesh=ascent.local_mesh(ONE))
    assert res.raw.shape == (1, 1, 32, 32, 1) and res.images.shape == (1, 1, 32, 32, 1)
    assert images.picture(res.images[0, 0]).shape == (32, 32)  # a grayscale picture


@pytest.mark.slow
def test_vit_mlp_neurons_rise_on_tokens():
    model = flax_nets.vit_model()
    recipe = preset("classic").replace(size=(32, 32), steps=3)
    recipe = recipe.replace(objective=recipe.objective.__class__(kind="neuron"))
    res = ascent.visualize(
        "EncoderBlock_0/MlpIn", [0, 7], recipe, model, None, mesh=ascent.local_mesh(ONE)
    )
    assert np.all(res.objective[:, -1] > res.objective[:, 0])


def test_an_nnx_module_in_eval_mode_is_a_generic_model_too():
    from vizjax.models.flax_model import from_nnx

    model, _ = flax_nets.nnx_net()
    generic = from_nnx(model, preprocessing=IDENTITY)
    assert generic.kind == "flax-nnx" and generic.layers[-1] == OUTPUT
    assert {"stem", "blocks/0", "blocks/1/conv", "head"} <= set(generic.layers)
    assert generic.layer_shapes(16)["blocks/1"].shape == (16, 16, 8)
    recipe = preset("classic").replace(size=(16, 16), steps=3)
    res = ascent.visualize("blocks/1", [0, 3], recipe, generic, mesh=ascent.local_mesh(ONE))
    assert np.all(res.objective[:, -1] > res.objective[:, 0])
    training, _ = flax_nets.nnx_net_training()
    with pytest.raises(VizjaxError, match="training mode: call model.eval"):
        from_nnx(training)
