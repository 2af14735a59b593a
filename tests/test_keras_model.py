"""Tests for vizjax.models.keras_model: Keras 3 models on the JAX backend as GenericModels.

The adapter's activations equal Keras' own (``predict`` of a functional sub-model) for small
functional, Sequential and nested models; gradients flow and jit works; Keras' own VGG16
architecture carrying vizjax's VGG16 weights computes what the built-in VGG16 computes; bad files
and bad layers are one-line errors that write nothing. Heavier runs (atlases of keras.applications
models through the engine) are in tests/test_keras_model_atlas.py.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from bad_input import assert_refused

import vizjax
from vizjax.cli import main
from vizjax.errors import VizjaxError
from vizjax.models import vgg
from vizjax.models.generic import GenericModel
from vizjax.models.keras_model import from_keras, keras_module
from vizjax.models.network import TORCH

keras = keras_module()
ROOT = Path(__file__).resolve().parent.parent


def small_model(size: int | None = None, seed: int = 0):
    """conv+relu -> batch norm (non-trivial statistics) -> pool -> conv -> GAP -> Dense."""
    keras.utils.set_random_seed(seed)
    inp = keras.Input((size, size, 3), name="image")
    x = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="c1")(inp)
    x = keras.layers.BatchNormalization(name="bn")(x)
    x = keras.layers.MaxPooling2D(name="pool")(x)
    x = keras.layers.Conv2D(6, 3, padding="same", name="c2")(x)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    out = keras.layers.Dense(3, name="head")(x)
    model = keras.Model(inp, out, name="small")
    rng = np.random.default_rng(seed)
    bn = model.get_layer("bn")
    gamma, beta, mean, var = bn.get_weights()
    bn.set_weights([gamma * 1.5, beta + 0.1, rng.standard_normal(4).astype(np.float32), var * 2])
    return model


@pytest.fixture(scope="module")
def model():
    return small_model()


@pytest.fixture(scope="module")
def image():
    return np.random.default_rng(1).uniform(0, 1, (2, 12, 12, 3)).astype(np.float32)


def keras_outputs(model, names, x):
    """Keras' own answer: a functional sub-model's predict, on Keras' own terms."""
    sub = keras.Model(model.inputs[0], {n: model.get_layer(n).output for n in names})
    return sub.predict(x, verbose=0)


def test_it_is_a_generic_model_of_the_visualizable_layers_in_order(model):
    m = from_keras(model)
    assert isinstance(m, GenericModel) and m.kind == "keras" and m.name == "keras:small"
    assert m.layers == ("c1", "bn", "pool", "c2")  # gap and head have no channel axis
    assert m.input_size is None and m.channels == 3 and m.preprocessing is None
    assert set(m.params) == {v.path for v in model.variables}  # moving statistics included
    assert m.layer_shapes(12)["pool"].shape == (6, 6, 4)
    assert m.num_channels("c2", 12) == 6


def test_activations_equal_keras_own(model, image):
    m = from_keras(model)
    names = ("c2", "c1", "bn")
    ours = jax.jit(m.apply, static_argnums=2)(m.params, image, names)
    theirs = keras_outputs(model, names, image)
    assert set(ours) == set(names)  # (jit returns dicts in sorted key order)
    for n in names:
        np.testing.assert_allclose(ours[n], theirs[n], rtol=1e-5, atol=1e-5)
    # batch norm ran in inference mode: its moving statistics, not the batch's
    bn = model.get_layer("bn")
    gamma, beta, mean, var = (np.asarray(w) for w in bn.get_weights())
    c1 = np.asarray(ours["c1"])
    expect = (c1 - mean) / np.sqrt(var + bn.epsilon) * gamma + beta
    np.testing.assert_allclose(ours["bn"], expect, rtol=1e-5, atol=1e-5)


def test_gradients_flow_to_the_image_and_the_weights(model, image):
    m = from_keras(model)

    def objective(params, x):
        return m.apply(params, x, ("c2",))["c2"][..., 1].mean()

    gx, gp = jax.jit(jax.grad(objective, argnums=(1, 0)))(m.params, jnp.asarray(image))
    assert gx.shape == image.shape and float(jnp.abs(gx).sum()) > 0
    assert float(jnp.abs(gp["c2/kernel"]).sum()) > 0
    assert float(jnp.abs(gp["head/kernel"]).sum()) == 0  # past the layer: not computed at all
    # the gradient is the true one: that of the same network written in plain jax.numpy
    np.testing.assert_allclose(gx, jax.grad(by_hand, argnums=1)(model, image), rtol=1e-4, atol=1e-7)


def by_hand(model, x):
    """``small_model``'s channel 1 of c2, averaged, written in plain JAX (independent of Keras)."""
    w = {v.path: jnp.asarray(v.value) for v in model.variables}

    def conv(x, name):
        dn = ("NHWC", "HWIO", "NHWC")
        y = jax.lax.conv_general_dilated(
            x, w[f"{name}/kernel"], (1, 1), "SAME", dimension_numbers=dn
        )
        return y + w[f"{name}/bias"]

    y = jax.nn.relu(conv(x, "c1"))
    eps = model.get_layer("bn").epsilon
    y = (y - w["bn/moving_mean"]) / jnp.sqrt(w["bn/moving_variance"] + eps)
    y = y * w["bn/gamma"] + w["bn/beta"]
    y = jax.lax.reduce_window(y, -jnp.inf, jax.lax.max, (1, 2, 2, 1), (1, 2, 2, 1), "VALID")
    return conv(y, "c2")[..., 1].mean()


def test_the_model_variables_are_left_alone(model, image):
    before = [np.array(v.value) for v in model.variables]
    m = from_keras(model)
    params = {k: v + 1.0 for k, v in m.params.items()}
    m.apply(params, image, ("bn",))
    for b, v in zip(before, model.variables, strict=True):
        np.testing.assert_array_equal(b, v.value)
    assert len(model.get_layer("c1")._inbound_nodes) == 1  # no new calls in the user's graph


def test_apply_is_vmappable_as_the_engine_uses_it(model, image):
    m = from_keras(model)
    views = jnp.stack([image, image[:, ::-1]])  # (filters, B, H, W, C)
    out = jax.vmap(lambda x: m.apply(m.params, x, ("c1",))["c1"])(views)
    np.testing.assert_allclose(out[1], m.apply(m.params, image[:, ::-1], ("c1",))["c1"], atol=1e-6)


def test_a_sequential_model_with_a_fixed_grayscale_input():
    keras.utils.set_random_seed(0)
    seq = keras.Sequential(
        [
            keras.Input((10, 10, 1)),
            keras.layers.Conv2D(5, 3, name="g1"),
            keras.layers.Activation("relu", name="act"),
            keras.layers.Flatten(name="flat"),
        ],
        name="gray",
    )
    m = from_keras(seq)
    assert m.layers == ("g1", "act") and m.input_size == 10 and m.channels == 1
    x = np.random.default_rng(0).uniform(size=(3, 10, 10, 1)).astype(np.float32)
    ours = m.apply(m.params, x, ("g1", "act"))
    theirs = keras_outputs(seq, ("g1", "act"), x)
    np.testing.assert_allclose(ours["g1"], theirs["g1"], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(ours["act"], np.maximum(theirs["g1"], 0), rtol=1e-5, atol=1e-6)
    assert "no channel axis" in m.refused["flat"]


def test_layers_inside_a_nested_model(model, image):
    base = small_model(seed=3)
    base_cut = keras.Model(base.inputs[0], base.get_layer("c2").output, name="base")
    inp = keras.Input((None, None, 3))
    x = keras.layers.Rescaling(2.0, name="scale")(inp)
    x = base_cut(x)
    x = keras.layers.Conv2D(2, 1, name="top")(x)
    outer = keras.Model(inp, x, name="outer")
    m = from_keras(outer)
    assert m.layers == ("scale", "base/c1", "base/bn", "base/pool", "base/c2", "base", "top")
    out = m.apply(m.params, image, ("top", "base/bn", "base/c2", "base"))
    inner = keras_outputs(base, ("bn", "c2"), 2.0 * image)
    np.testing.assert_allclose(out["base/bn"], inner["bn"], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(out["base/c2"], inner["c2"], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(out["base"], out["base/c2"])
    np.testing.assert_allclose(out["top"], outer.predict(image, verbose=0), rtol=1e-5, atol=1e-5)
    # a nested model as a Sequential's first layer: its input is the model's own
    seq = keras.Sequential([keras.Input((None, None, 3)), base_cut], name="seq")
    s = from_keras(seq)
    np.testing.assert_allclose(
        s.apply(s.params, image, ("base/c1",))["base/c1"],
        keras_outputs(base, ("c1",), image)["c1"],
        rtol=1e-5,
        atol=1e-5,
    )


def test_a_saved_file_gives_the_same_model(model, image, tmp_path):
    path = tmp_path / "small.keras"
    model.save(path)
    a, b = from_keras(model), from_keras(path)
    assert b.layers == a.layers and b.fingerprint() == a.fingerprint()
    assert b.architecture_hash() == a.architecture_hash()
    np.testing.assert_array_equal(
        a.apply(a.params, image, ("c2",))["c2"], b.apply(b.params, image, ("c2",))["c2"]
    )
    c = from_keras(small_model(seed=5))
    assert c.fingerprint() != a.fingerprint() and c.architecture_hash() == a.architecture_hash()
    assert from_keras(str(path), preprocessing=TORCH, name="mine").name == "mine"


def test_keras_runs_on_jax_and_pulls_no_tensorflow(model, image):
    assert keras.backend.backend() == "jax"
    requires = importlib.metadata.requires("keras") or []
    assert not [r for r in requires if r.lower().startswith(("tensorflow", "tf-"))], requires
    from_keras(model).apply(from_keras(model).params, image, ("c1",))
    assert "tensorflow" not in sys.modules


# --------------------------------------------------------------------------------------------------
# One-line refusals.


def one_line(exc: pytest.ExceptionInfo, *words: str) -> str:
    msg = str(exc.value)
    assert "\n" not in msg and msg, msg
    for w in words:
        assert w in msg, msg
    return msg


def test_a_layer_the_model_lacks_names_some_that_exist(model):
    m = from_keras(model)
    with pytest.raises(VizjaxError) as e:
        m.layer_index("block9_conv9")
    one_line(e, "'block9_conv9'", "c1", "c2")
    with pytest.raises(VizjaxError) as e:
        m.apply(m.params, np.zeros((1, 8, 8, 3), np.float32), ("c1", "block9_conv9"))
    one_line(e, "'block9_conv9'", "c1", "c2")


@pytest.mark.parametrize("layer", ["gap", "head"])
def test_a_layer_without_a_channel_axis_says_so(model, layer):
    m = from_keras(model)
    for call in (
        lambda: m.layer_index(layer),
        lambda: m.num_channels(layer),
        lambda: m.apply(m.params, np.zeros((1, 8, 8, 3), np.float32), (layer,)),
    ):
        with pytest.raises(VizjaxError) as e:
            call()
        one_line(e, repr(layer), "no channel axis")


def test_shared_and_integer_layers_are_left_out_with_a_reason():
    inp = keras.Input((8, 8, 3))
    shared = keras.layers.Conv2D(3, 3, padding="same", name="shared")
    x = shared(shared(inp))
    y = keras.layers.Conv2D(2, 1, name="last")(x)
    idx = keras.layers.Identity(name="ints", dtype="int32")(inp)
    m = from_keras(keras.Model(inp, [y, idx], name="odd"))
    assert m.layers == ("last",)
    assert "more than once" in m.refused["shared"] and "int32" in m.refused["ints"]


def _models_that_vizjax_cannot_feed():
    a, b = keras.Input((8, 8, 3)), keras.Input((8, 8, 3))
    two = keras.Model([a, b], keras.layers.Add()([a, b]), name="two")
    flat = keras.Input((16,))
    vector = keras.Model(flat, keras.layers.Dense(4)(flat), name="vector")
    r = keras.Input((8, 6, 3))
    rect = keras.Model(r, keras.layers.Conv2D(2, 1)(r), name="rect")

    class Sub(keras.Model):
        def __init__(self):
            super().__init__(name="sub")
            self.conv = keras.layers.Conv2D(2, 1)

        def call(self, x):
            return self.conv(x)

    sub = Sub()
    sub(np.zeros((1, 4, 4, 3), np.float32))
    return {"2 inputs": two, "(None, 16)": vector, "8x6": rect, "no layer graph": sub}


def test_models_vizjax_cannot_feed_are_refused_in_one_line():
    for words, m in _models_that_vizjax_cannot_feed().items():
        with pytest.raises(VizjaxError) as e:
            from_keras(m)
        one_line(e, words)
    with pytest.raises(VizjaxError) as e:
        from_keras(42)
    one_line(e, "keras.Model")


def test_nan_weights_are_refused(model):
    bad = small_model(seed=1)
    k, b = bad.get_layer("c2").get_weights()
    k[0, 0, 0, 0] = np.nan
    bad.get_layer("c2").set_weights([k, b])
    with pytest.raises(VizjaxError) as e:
        from_keras(bad)
    one_line(e, "c2/kernel", "NaN")


def _files(tmp_path: Path) -> dict[str, Path]:
    text = tmp_path / "text.keras"
    text.write_text("not a model\n")
    noconfig = tmp_path / "noconfig.keras"
    with zipfile.ZipFile(noconfig, "w") as z:
        z.writestr("metadata.json", json.dumps({"keras_version": "3.15.1"}))
    badconfig = tmp_path / "badconfig.keras"
    with zipfile.ZipFile(badconfig, "w") as z:
        z.writestr("config.json", "{not json")
    h5 = tmp_path / "model.h5"
    h5.write_bytes(b"\x89HDF\r\n\x1a\n")
    return {
        "a zip archive": text,
        "no config.json": noconfig,
        "Keras cannot load": badconfig,
        ".keras": h5,
        "no Keras model file": tmp_path / "missing.keras",
    }


def test_files_that_are_not_keras_models_are_refused_writing_nothing(tmp_path):
    files = _files(tmp_path)
    before = sorted(p.name for p in tmp_path.iterdir())
    for words, path in files.items():
        with pytest.raises(VizjaxError) as e:
            from_keras(path)
        one_line(e, words)
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def lambda_model():
    inp = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(2, 3, padding="same", name="conv")(inp)
    x = keras.layers.Lambda(lambda t: t * 2.0 + 1.0, name="twice")(x)
    return keras.Model(inp, x, name="with_code")


def test_a_lambda_layer_is_refused_in_safe_mode_and_loaded_with_trust(tmp_path):
    path = tmp_path / "code.keras"
    model = lambda_model()
    model.save(path)
    before = sorted(p.name for p in tmp_path.iterdir())
    with pytest.raises(VizjaxError) as e:
        from_keras(path)
    one_line(e, "Lambda", "--trust-model-file")
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    m = from_keras(path, safe_mode=False)
    x = np.random.default_rng(0).uniform(size=(1, 8, 8, 3)).astype(np.float32)
    out = m.apply(m.params, x, ("conv", "twice"))
    np.testing.assert_allclose(out["twice"], out["conv"] * 2.0 + 1.0, rtol=1e-6)


def _python(code: str, **env: str) -> subprocess.CompletedProcess:
    full = {k: v for k, v in os.environ.items() if k != "KERAS_BACKEND"} | env
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=full, cwd=ROOT
    )


def test_keras_already_on_another_backend_is_one_line():
    """keras imported first with the numpy backend (it needs no TensorFlow); then vizjax."""
    code = (
        "import keras\n"
        "from vizjax.errors import VizjaxError\n"
        "from vizjax.models.keras_model import keras_module\n"
        "try:\n    keras_module()\n"
        "except VizjaxError as e:\n    print('vizjax:', e)\n"
    )
    r = _python(code, KERAS_BACKEND="numpy")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.strip().splitlines()
    assert len(lines) == 1 and "numpy backend" in lines[0] and "KERAS_BACKEND=jax" in lines[0]


# --------------------------------------------------------------------------------------------------
# Keras' own VGG16 architecture carrying vizjax's VGG16 weights.


def keras_vgg16(params: dict) -> object:
    """``keras.applications.VGG16`` (no top, no weights) with ``params``' convolutions copied in:
    kernels are HWIO in both, so each goes in as it is."""
    net = keras.applications.VGG16(weights=None, include_top=False)
    p = params.get("params", params)
    for name in vgg.CONV_LAYERS:
        net.get_layer(name).set_weights(
            [np.asarray(p[name]["kernel"]), np.asarray(p[name]["bias"])]
        )
    return net


def test_keras_vgg16_with_vizjax_weights_computes_what_vgg16_computes(default_weights):
    m = from_keras(keras_vgg16(default_weights.params), preprocessing=TORCH)
    assert m.layers == vgg.LAYER_NAMES and m.name == "keras:vgg16"
    rgb = np.random.default_rng(0).uniform(0, 255, (1, 32, 32, 3)).astype(np.float32)
    module = vgg.NETWORK.module(TORCH)
    ours = jax.jit(m.apply, static_argnums=2)(m.params, TORCH(jnp.asarray(rgb)), m.layers)
    builtin = module.apply(default_weights.params, rgb, outputs=m.layers)
    for name in m.layers:
        scale = float(jnp.abs(builtin[name]).max())
        np.testing.assert_allclose(ours[name], builtin[name], atol=1e-5 * scale, err_msg=name)


# --------------------------------------------------------------------------------------------------
# The same refusals through the CLI: one `vizjax:` line, nothing written.


def test_the_cli_refuses_bad_keras_input_in_one_line_writing_nothing(tmp_path, model):
    files = _files(tmp_path)
    good = tmp_path / "small.keras"
    model.save(good)
    code = tmp_path / "code.keras"
    lambda_model().save(code)
    out = tmp_path / "out"
    out.mkdir()

    def atlas(path, *extra, prep=("--preprocess", "torch")):
        return ["atlas", "--model", str(path), *prep, "--size", "8", "--steps", "1", *extra,
                "--recipe", "classic", "--quiet", "--out", str(out / "a.h5")]  # fmt: skip

    for words, path in files.items():
        if path.suffix == ".keras":  # the loader sends only .keras files to Keras
            assert_refused(atlas(path, "--layer", "c1"), out, words)
    assert_refused(atlas(code, "--layer", "conv"), out, "--trust-model-file")
    assert_refused(atlas(good, "--layer", "block9_conv9"), out, "'block9_conv9'")
    assert_refused(atlas(good, "--layer", "gap"), out, "no channel axis")
    assert_refused(atlas(good, "--layer", "c1", prep=()), out, "--preprocess")
    # Trusted, the file with code runs.
    assert main([*atlas(code, "--layer", "twice", "--filters", "0:2"), "--trust-model-file"]) == 0
    with vizjax.open_atlas(out / "a.h5") as a:
        assert list(a.layers["twice"].filters) == [0, 1]
