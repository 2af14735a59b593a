"""The engine's one interface over both kinds of network: a table network keeps its fast paths;
a generic model's layers are checked (channel axis, float, depends on the input, finite weights)
in one line each."""

import jax.numpy as jnp
import numpy as np
import pytest

from vizjax.engine import adapter
from vizjax.engine.execution import Execution
from vizjax.errors import VizjaxError
from vizjax.models import vgg
from vizjax.models.generic import GenericModel
from vizjax.models.network import IDENTITY


def _apply(params, x, layers):
    h = jnp.einsum("bhwc,cd->bhwd", x, params["w"])
    out = {
        "maps": jnp.maximum(h, 0),
        "tokens": h.reshape(h.shape[0], -1, h.shape[-1]),
        "vector": h.mean(axis=(1, 2)),
        "index": jnp.argmax(h, axis=-1)[..., None],
        "constant": jnp.zeros_like(h) + params["w"][0, 0],
    }
    return {n: out[n] for n in layers}


def _model(w=None):
    w = np.ones((3, 4), np.float32) if w is None else w
    layers = ("maps", "tokens", "vector", "index", "constant")
    return GenericModel("test", "test:adapter", _apply, {"w": w}, layers, IDENTITY, None)


def test_table_keeps_its_fast_path_and_shapes():
    t = adapter.of(vgg.NETWORK)
    assert t.fast and t.num_channels("block1_conv1") == 64
    assert t.output_shape("block2_conv1", 32, 32) == (16, 16, 128)
    with pytest.raises(VizjaxError, match="pooling layer"):
        t.check_layer("block1_pool")


def test_generic_has_no_fast_path_and_reads_shapes_by_eval_shape():
    g = adapter.of(_model())
    assert not g.fast
    assert g.output_shape("tokens", 4, 6) == (24, 4)
    assert g.num_channels("maps", (8, 8)) == 4
    g.check_layer("maps", (8, 8))
    g.check_layer("tokens", (8, 8))


@pytest.mark.parametrize(
    "layer, words",
    [
        ("vector", "no channel axis"),
        ("index", "integer output"),
        ("constant", "does not depend on the input"),
        ("nope", "unknown layer"),
    ],
)
def test_generic_bad_layers_are_one_line(layer, words):
    with pytest.raises(VizjaxError, match=words) as e:
        adapter.of(_model()).check_layer(layer, (8, 8))
    assert "\n" not in str(e.value)


def test_nan_weights_are_refused():
    w = np.ones((3, 4), np.float32)
    w[1, 2] = np.nan
    with pytest.raises(VizjaxError, match="NaN"):
        adapter.of(_model(w)).check_layer("maps", (8, 8))


def test_generic_forward_preprocesses_and_returns_the_layers_asked():
    fn = adapter.of(_model()).forward(IDENTITY, True, Execution(), "cpu")
    out = fn({"w": np.ones((3, 4), np.float32)}, jnp.ones((2, 4, 4, 3)), ("maps",))
    assert set(out) == {"maps"} and out["maps"].shape == (2, 4, 4, 4)
    assert float(out["maps"][0, 0, 0, 0]) == 3.0


def test_redirect_note_only_for_generic_models():
    assert adapter.redirect_note(vgg.NETWORK, 16) is None
    assert adapter.redirect_note(_model(), 0) is None
    note = adapter.redirect_note(_model(), 16)
    assert note.startswith("vizjax:") and "off" in note and "\n" not in note
