"""oneDNN's 3x3 convolutions (vizjax.models.onednn): the same values and input gradients as XLA's,
under jit and vmap, float32 and bfloat16; and a clear reason where they cannot run."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vizjax.models import onednn
from vizjax.models.conv import conv3x3_xla

REASON = onednn.unavailable()
needs_onednn = pytest.mark.skipif(REASON is not None, reason=f"oneDNN: {REASON}")


def _data(n=2, h=9, w=7, c=5, o=6):
    k = jax.random.PRNGKey(0)
    x = jax.random.normal(k, (n, h, w, c))
    kernel = jax.random.normal(jax.random.fold_in(k, 1), (3, 3, c, o))
    return x, kernel


def _ref(x, kernel):
    with jax.default_matmul_precision("highest"):
        return conv3x3_xla(x, kernel)


@needs_onednn
def test_values_equal_xla_float32():
    x, kernel = _data()
    got = jax.jit(onednn.conv3x3_onednn)(x, kernel)
    np.testing.assert_allclose(got, _ref(x, kernel), rtol=1e-4, atol=1e-4)


@needs_onednn
def test_values_equal_xla_bfloat16_within_its_precision():
    x, kernel = _data(c=64, o=8)
    got = jax.jit(onednn.conv3x3_onednn)(x.astype(jnp.bfloat16), kernel.astype(jnp.bfloat16))
    assert got.dtype == jnp.bfloat16
    want = _ref(
        x.astype(jnp.bfloat16).astype(jnp.float32), kernel.astype(jnp.bfloat16).astype(jnp.float32)
    )
    err = np.abs(np.asarray(got, np.float32) - np.asarray(want))
    assert err.max() <= 2e-2 * np.abs(np.asarray(want)).max()


@needs_onednn
def test_input_gradient_equals_xla():
    x, kernel = _data()
    probe = jax.random.normal(jax.random.PRNGKey(3), (2, 9, 7, 6))

    def loss(f):
        return lambda x: jnp.sum(f(x, kernel) * probe)

    got = jax.jit(jax.grad(loss(onednn.conv3x3_onednn)))(x)
    np.testing.assert_allclose(got, jax.grad(loss(_ref))(x), rtol=1e-4, atol=1e-4)


@needs_onednn
def test_vmap_over_images_with_one_kernel():
    x, kernel = _data(n=3)
    got = jax.jit(jax.vmap(onednn.conv3x3_onednn, in_axes=(0, None)))(x[:, None], kernel)
    np.testing.assert_allclose(got[:, 0], _ref(x, kernel), rtol=1e-4, atol=1e-4)


@needs_onednn
def test_a_kernel_per_image_is_refused():
    x, kernel = _data(n=2)
    kernels = jnp.stack([kernel, kernel])
    with pytest.raises(Exception, match="one \\(3, 3, Cin, Cout\\) kernel"):
        jax.vmap(onednn.conv3x3_onednn)(x[:, None], kernels).block_until_ready()


def test_without_the_wheels_the_reason_names_the_extra(monkeypatch, tmp_path):
    monkeypatch.setattr(onednn, "_prefixes", lambda: [tmp_path])
    assert "vizjax[onednn]" in onednn._find_onednn()


def test_a_missing_compiler_is_one_clear_reason(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setenv("CXX", "")
    monkeypatch.setattr(onednn.shutil, "which", lambda name: None)
    assert "no C++ compiler" in onednn._build(tmp_path, tmp_path)


def test_conv_onednn_at_the_door(tiny_weights, tmp_path, monkeypatch, capsys):
    """``--conv onednn`` where it cannot run: one line, nothing created."""
    import tiny_network

    from vizjax.cli import main

    monkeypatch.setattr(onednn, "unavailable", lambda: "oneDNN is not installed here (test)")
    out = tmp_path / "a.h5"
    args = ["atlas", "--layer", "block2_conv1", "--filters", "0:2", "--size", "32", "--out"]
    assert main([*args, str(out), "--conv", "onednn", *tiny_network.ARGS]) != 0
    assert "--conv onednn: oneDNN is not installed here (test)" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())


@needs_onednn
def test_a_tiny_atlas_through_onednn_in_bfloat16_matches_float32(tiny_weights, tmp_path):
    """The engine end to end: the same filters' objectives within bfloat16's rounding."""
    import tiny_network

    from vizjax.atlas import open_atlas
    from vizjax.cli import main

    common = ["atlas", "--layer", "block2_conv1", "--filters", "0:4", "--size", "32", "--quiet"]
    common += ["--recipe", "classic", "--steps", "4", *tiny_network.ARGS]
    finals = {}
    for dtype, conv in (("float32", "xla"), ("bfloat16", "onednn")):
        out = tmp_path / f"{dtype}.h5"
        assert main([*common, "--out", str(out), "--dtype", dtype, "--conv", conv]) == 0
        with open_atlas(out) as a:
            finals[dtype] = np.asarray(a.layers["block2_conv1"].objective[...])[:, -1]
    np.testing.assert_allclose(finals["bfloat16"], finals["float32"], rtol=0.05, atol=0.05)


def test_the_amx_path_is_off_without_amx_or_onednn_or_when_turned_off(monkeypatch):
    monkeypatch.delenv(onednn.ENV, raising=False)
    monkeypatch.setattr(onednn, "has_amx", lambda: True)
    monkeypatch.setattr(onednn, "unavailable", lambda: None)
    assert onednn.amx_path()
    monkeypatch.setenv(onednn.ENV, "0")
    assert not onednn.amx_path()
    monkeypatch.delenv(onednn.ENV)
    monkeypatch.setattr(onednn, "unavailable", lambda: "no wheel")
    assert not onednn.amx_path()
    monkeypatch.setattr(onednn, "unavailable", lambda: None)
    monkeypatch.setattr(onednn, "has_amx", lambda: False)
    assert not onednn.amx_path()


def test_on_the_amx_path_a_cpu_run_defaults_to_bfloat16_through_onednn(monkeypatch):
    from vizjax.engine import adapter
    from vizjax.engine.execution import Execution, default_dtype
    from vizjax.models import vgg
    from vizjax.models.network import TORCH

    monkeypatch.setattr(onednn, "amx_path", lambda: True)
    assert default_dtype("cpu") == "bfloat16"
    builtin = adapter.Table(vgg.NETWORK)
    bf16 = Execution(dtype="bfloat16")
    module = builtin.module(TORCH, True, bf16, "cpu")
    assert module.onednn and module.winograd == ()
    # float32, or a convolution the user chose, stays as it was
    f32 = builtin.module(TORCH, True, Execution(), "cpu")
    assert not f32.onednn and f32.winograd == vgg.NETWORK.winograd_layers
    chosen = builtin.module(TORCH, True, bf16.replace(conv="winograd"), "cpu")
    assert not chosen.onednn and chosen.winograd
    monkeypatch.setattr(onednn, "amx_path", lambda: False)
    assert default_dtype("cpu") == "float32"


@needs_onednn
@pytest.mark.parametrize("layout", [("NCHW", "OIHW", "NCHW"), ("NHWC", "OIHW", "NHWC")])
def test_your_own_models_convolutions_through_onednn_in_any_layout(layout):
    """The rewrite (vizjax.models.rewrite) with ``conv="onednn"``: every 3x3 stride-1 'SAME'
    convolution, at every resolution, in any layout, values and input gradients as XLA's."""
    from jax import lax

    from vizjax.models.rewrite import rewritten

    x = jax.random.normal(jax.random.PRNGKey(0), (2, 4, 9, 10))
    x = x if layout[0] == "NCHW" else jnp.transpose(x, (0, 2, 3, 1))
    k = jax.random.normal(jax.random.PRNGKey(1), (5, 4, 3, 3))

    def conv(x, k):
        return lax.conv_general_dilated(x, k, (1, 1), "SAME", dimension_numbers=layout)

    fn = rewritten(conv, conv="onednn")
    assert onednn.TARGET in str(jax.make_jaxpr(fn)(x, k))
    with jax.default_matmul_precision("highest"):
        want = conv(x, k)
        probe = jax.random.normal(jax.random.PRNGKey(2), want.shape)
        g_want = jax.grad(lambda y: jnp.sum(conv(y, k) * probe))(x)
    np.testing.assert_allclose(jax.jit(fn)(x, k), want, rtol=1e-4, atol=1e-4)
    g_got = jax.jit(jax.grad(lambda y: jnp.sum(fn(y, k) * probe)))(x)
    np.testing.assert_allclose(g_got, g_want, rtol=1e-4, atol=1e-4)


@needs_onednn
def test_a_flax_model_atlas_through_onednn(tmp_path):
    """Your own model end to end with ``conv="onednn"`` in bfloat16: the objectives of float32's."""
    import flax.linen as nn

    import vizjax
    from vizjax.engine.execution import Execution
    from vizjax.engine.recipe import preset
    from vizjax.models.network import IDENTITY

    class Net(nn.Module):
        @nn.compact
        def __call__(self, x):
            x = nn.relu(nn.Conv(8, (3, 3), name="c1")(x))
            x = nn.max_pool(x, (2, 2), (2, 2))
            return nn.relu(nn.Conv(8, (3, 3), name="c2")(x))

    params = Net().init(jax.random.PRNGKey(0), jnp.zeros((1, 32, 32, 3)))
    model = vizjax.from_flax(Net(), params, input_size=32, preprocessing=IDENTITY)
    recipe = preset("classic").replace(steps=4)
    finals = {}
    for dtype, conv in (("float32", "xla"), ("float32", "onednn"), ("bfloat16", "onednn")):
        res = vizjax.visualize(
            "c2", range(3), recipe, model, execution=Execution(dtype=dtype, conv=conv)
        )
        finals[dtype, conv] = res.objective[:, -1]
    want = finals["float32", "xla"]
    np.testing.assert_allclose(finals["float32", "onednn"], want, rtol=1e-3, atol=1e-3)
    # bfloat16: within 5% of the objectives' scale (a random network's are far from one)
    scale = np.abs(want).max()
    np.testing.assert_allclose(finals["bfloat16", "onednn"], want, rtol=0.05, atol=0.05 * scale)
