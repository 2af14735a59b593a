"""The generic model interface: shapes from eval_shape, channel counts, the weights' fingerprint,
the architecture hash and the one-line error for an unknown layer."""

import dataclasses

import jax.numpy as jnp
import numpy as np
import pytest

from vizjax.errors import VizjaxError
from vizjax.models.generic import GenericModel


def _apply(params, x, layers):
    h = jnp.einsum("bhwc,cd->bhwd", x, params["w"])  # (B, H, W, 5)
    tokens = h.reshape(h.shape[0], -1, h.shape[-1])  # (B, H*W, 5)
    out = {"conv": h, "pooled": h[:, ::2, ::2], "tokens": tokens @ params["v"]}
    return {name: out[name] for name in layers}


def _model(seed=0, architecture="two layers"):
    rng = np.random.default_rng(seed)
    params = {
        "w": rng.standard_normal((3, 5)).astype(np.float32),
        "v": rng.standard_normal((5, 7)).astype(np.float32),
    }
    return GenericModel(
        kind="test",
        name="test:tiny",
        apply=_apply,
        params=params,
        layers=("conv", "pooled", "tokens"),
        preprocessing=None,
        input_size=None,
        architecture=architecture,
    )


def test_layer_shapes_come_from_eval_shape_per_image():
    shapes = _model().layer_shapes(8)
    assert list(shapes) == ["conv", "pooled", "tokens"]
    assert shapes["conv"].shape == (8, 8, 5)
    assert shapes["pooled"].shape == (4, 4, 5)
    assert shapes["tokens"].shape == (64, 7)
    assert shapes["tokens"].dtype == jnp.float32


def test_num_channels_is_the_last_axis():
    m = _model()
    assert m.num_channels("conv", 8) == 5
    assert m.num_channels("tokens", 8) == 7


def test_unknown_layer_is_one_line_naming_some_that_exist():
    with pytest.raises(VizjaxError) as e:
        _model().layer_index("nope")
    msg = str(e.value)
    assert "\n" not in msg and "'nope'" in msg and "conv" in msg and "tokens" in msg


def test_fingerprint_follows_the_weights_only():
    a, b, c = _model(0), _model(0, architecture="other"), _model(1)
    assert a.fingerprint() == b.fingerprint()
    assert a.fingerprint() != c.fingerprint()
    assert len(a.fingerprint()) == 64


def test_architecture_hash_follows_the_description():
    assert _model(0).architecture_hash() == _model(1).architecture_hash()
    assert _model(0).architecture_hash() != _model(0, "other").architecture_hash()
    ident = _model().identity()
    assert set(ident) == {"kind", "name", "architecture", "weights", "channels"}
    assert ident["channels"] == "3"


def test_a_size_the_model_cannot_take_is_one_line():
    def apply(params, x, layers):
        return {"conv": x.reshape(x.shape[0], 4, 4, -1) @ params["w"]}

    m = GenericModel(
        "test", "test:fixed", apply, {"w": np.ones((3, 2), np.float32)}, ("conv",), None, 4
    )
    assert m.layer_shapes()["conv"].shape == (4, 4, 2)  # its own fixed size by default
    with pytest.raises(VizjaxError, match="cannot take a 5x5x3 input") as e:
        m.layer_shapes(5)
    assert "\n" not in str(e.value)


def test_a_refused_layer_says_why():
    m = dataclasses.replace(_model(), refused={"logits": "outputs (None, 6): no channel axis"})
    with pytest.raises(VizjaxError, match="'logits' of test:tiny: outputs .* no channel axis"):
        m.layer_index("logits")
