"""The model interface (vizjax.models.network, vizjax.models): one description per network, recognized from
its weights, and VGG19 from Keras files (tests build them with h5py, as the VGG16 converter's do)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from test_keras_weights import TOP, write_keras_h5

from vizjax import cli, models
from vizjax.cli import main
from vizjax.errors import VizjaxError, WeightsError
from vizjax.models import alexnet, vgg, weights
from vizjax.models.keras_weights import read_keras_h5
from vizjax.models.network import ReceptiveField


def test_the_cli_offers_every_model():
    assert cli.MODEL_NAMES == tuple(models.MODELS)


def test_networks_are_hashable_values():
    a, b = vgg.network((8, 8, 16, 16, 16)), vgg.network((8, 8, 16, 16, 16))
    assert a == b and hash(a) == hash(b) and a != vgg.NETWORK
    assert len({models.network(n) for n in models.MODELS}) == 3


def test_from_params_recognizes_each_model_and_its_widths():
    for name, widths in [("vgg16", (2, 3, 4, 4, 5)), ("vgg19", (2, 3, 4, 4, 5))]:
        net = models.network(name, widths)
        assert models.from_params(net.init_params()) == net
    tiny = alexnet.network((4, 5, 6, 7, 8))
    assert models.from_params(tiny.init_params()["params"]) == tiny
    with pytest.raises(VizjaxError, match="these weights are vgg16's, not alexnet's"):
        models.from_params(vgg.NETWORK.init_params(), "alexnet")
    with pytest.raises(VizjaxError, match="not those of any known model"):
        models.from_params({"params": {"conv1": {}}})
    with pytest.raises(VizjaxError, match="unknown model 'resnet'; known models: vgg16"):
        models.network("resnet")


def test_vgg19_table():
    net = models.network("vgg19")
    assert net.conv_layers[6:9] == ("block3_conv3", "block3_conv4", "block4_conv1")
    assert len(net.conv_layers) == 16 and net.layer_names[-1] == "block5_pool"
    assert vgg.param_count(net.init_params()) == 20_024_384  # Keras' VGG19 without its top
    # Three more 3x3 convolutions widen the fields by 2 steps each: jumps 4, 8, 16.
    assert net.receptive_field("block5_pool") == ReceptiveField(212 + 2 * (4 + 8 + 16), 32, -118)
    assert net.output_hw("block5_pool", 64, 48) == (2, 1)
    assert net.winograd_layers == tuple(n for n in net.conv_layers if not n.startswith("block1"))


def test_vgg19_module_runs_a_tiny_network():
    net = models.network("vgg19", (2, 3, 4, 4, 5))
    params = net.init_params(1)
    out = jax.eval_shape(
        lambda p, x: net.module(vgg.TORCH).apply(p, x, "block4_conv4"),
        params,
        jax.ShapeDtypeStruct((40, 36, 3), jnp.float32),
    )
    assert out.shape == (5, 4, 4)


def test_vgg19_has_no_default_weights_one_line(capsys):
    with pytest.raises(WeightsError, match="vizjax convert .* --model vgg19"):
        weights.default_weights("vgg19")
    assert main(["layers", "--model", "vgg19", "--weights", "nope"]) == 2
    argv = ["render", "--model", "vgg19", "--layer", "block3_conv4", "--filter", "0"]
    assert main([*argv, "--out", "/nonexistent/x.png"]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("vizjax: no VGG19 weights ship offline") and "--model vgg19" in err


# ---------------------------------------------------------------------------------------------
# VGG19 from Keras files.


@pytest.fixture(scope="module")
def vgg19_keras():
    """Random conv weights with VGG19's real shapes (20M numbers: made once per module)."""
    rng = np.random.default_rng(19)
    return {
        name: {
            "kernel": rng.standard_normal(kshape, dtype=np.float32),
            "bias": rng.standard_normal(bshape, dtype=np.float32),
        }
        for name, (kshape, bshape) in models.network("vgg19").conv_shapes().items()
    }


@pytest.mark.parametrize("layout", ["original_notop", "original_top", "keras2"])
def test_reads_vgg19_files_of_each_layout(tmp_path, vgg19_keras, layout):
    net = models.network("vgg19")
    path = write_keras_h5(tmp_path / "vgg19.h5", vgg19_keras, layout, net.layer_names)
    params, info = read_keras_h5(path, net)
    assert list(params) == list(net.conv_layers)
    for name in net.conv_layers:
        for key in ("kernel", "bias"):
            np.testing.assert_array_equal(params[name][key], vgg19_keras[name][key])
    assert info["skipped_layers"] == (
        [n for n in TOP if TOP[n]] if layout == "original_top" else []
    )


def test_the_wrong_vgg_is_one_line(tmp_path, vgg19_keras):
    net19 = models.network("vgg19")
    path19 = write_keras_h5(tmp_path / "19.h5", vgg19_keras, "keras2", net19.layer_names)
    with pytest.raises(
        WeightsError, match="has layer block3_conv4, which vgg16 lacks .*--model vgg19"
    ):
        read_keras_h5(path19)
    vgg16_only = {n: vgg19_keras[n] for n in vgg.CONV_LAYERS}
    path16 = write_keras_h5(tmp_path / "16.h5", vgg16_only, "keras2")
    with pytest.raises(WeightsError, match="missing layer block3_conv4"):
        read_keras_h5(path16, net19)


def test_convert_vgg19_end_to_end(tmp_path, vgg19_keras, capsys):
    net = models.network("vgg19")
    h5 = write_keras_h5(
        tmp_path / "vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5",
        vgg19_keras,
        "original_notop",
        net.layer_names,
    )
    out = tmp_path / "weights" / "vgg19-keras"
    assert main(["convert", str(h5), "--model", "vgg19", "--out", str(out)]) == 0
    w = weights.load_weights("vgg19-keras", out.parent)
    assert w.model == "vgg19" and w.manifest["model"] == "vgg19" and w.network == net
    assert w.preprocessing == vgg.CAFFE
    np.testing.assert_array_equal(
        w.params["params"]["block4_conv4"]["kernel"], vgg19_keras["block4_conv4"]["kernel"]
    )
    # VGG19 weights for --model vgg16 are refused in one line.
    capsys.readouterr()
    assert main(["layers", "--model", "vgg16", "--weights", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "vgg19's, not vgg16's" in err
    assert main(["layers", "--weights", str(out)]) == 0
    assert "Total params: 20,024,384" in capsys.readouterr().out
