"""Fidelity measures on cases whose answer is known, diversity, and the measures in a run."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vizjax import schema
from vizjax.analysis import fidelity
from vizjax.atlas import open_atlas
from vizjax.engine import ascent, objectives
from vizjax.engine.execution import Execution
from vizjax.engine.recipe import CLASSIC, PRESETS
from vizjax.models import vgg
from vizjax.run import run_atlas


def test_hf_energy_of_flat_checkerboard_and_photo():
    assert float(fidelity.hf_energy(jnp.full((32, 32, 3), 90.0))) == 0.0
    checker = (np.indices((32, 32)).sum(axis=0) % 2 * 255.0)[..., None].repeat(3, axis=-1)
    assert float(fidelity.hf_energy(jnp.asarray(checker))) > 0.99
    # A sinusoid of period 16 px has all its power at 1/16 cycle per pixel (< 1/4); one of
    # period 2.5 px at 0.4 (> 1/4).
    x = np.arange(32)
    for period, want in ((16, 0.0), (2.5, 1.0)):
        wave = (127 + 100 * np.sin(2 * np.pi * x / period))[None, :, None].repeat(32, 0)
        got = float(fidelity.hf_energy(jnp.asarray(wave.repeat(3, -1))))
        assert abs(got - want) < 0.02, (period, got)
    assert 0.0 < fidelity.photo_hf_energy() < 0.05  # a natural photo is low-frequency


def test_robustness_of_a_translation_invariant_objective_is_one():
    # "Network" = the image itself; the mean of a flat colour survives every jitter/scale/rotation.
    def identity(x):
        return x

    flat = jnp.broadcast_to(jnp.asarray([10.0, 20.0, 30.0]), (32, 32, 3))
    for f in range(3):
        r = fidelity.robustness(identity, flat, f, jax.random.key(f))
        assert abs(float(r) - 1.0) < 1e-5

    # A pixel checkerboard "feature" (local contrast) only works pixel-exact: the wrap-around
    # shifts by an odd number of pixels keep it, resampling and rotations wash it out.
    def contrast(x):
        return jnp.abs(x - jnp.roll(x, 1, axis=2))

    board = jnp.asarray((np.indices((32, 32)).sum(0) % 2 * 255.0)[..., None].repeat(3, -1))
    assert float(fidelity.robustness(contrast, board, 0, jax.random.key(0))) < 0.8
    # Dead: NaN, not a ratio of zeros.
    assert np.isnan(
        float(fidelity.robustness(identity, jnp.zeros((32, 32, 3)), 0, jax.random.key(0)))
    )


def test_token_layers_are_measured_per_channel_over_their_tokens():
    # A "(T, C)" layer: 4x4-pixel patches as 64 tokens, the 3 colours as channels (channel c of
    # token t = patch t's mean of colour c), so a channel's mean over the tokens is the colour's.
    def tokens(x):
        b, h, w, c = x.shape
        return x.reshape(b, h // 4, 4, w // 4, 4, c).mean(axis=(2, 4)).reshape(b, -1, c)

    image = jnp.broadcast_to(jnp.asarray([10.0, 20.0, 30.0]), (32, 32, 3))
    np.testing.assert_allclose(fidelity.channel_means(tokens, image), [10, 20, 30], rtol=1e-6)
    m = fidelity.measure_one(
        tokens, image[None], image[None].astype(jnp.uint8), 2, jax.random.key(0)
    )
    assert m["activation_matrix"].shape == (1, 3) and float(m["final_activation"][0]) == 30
    assert abs(float(m["robustness"][0]) - 1.0) < 1e-5


def test_selectivity_and_specificity_on_a_constructed_matrix():
    # Rows: images of filters 0, 1, 2; columns: channels. Filter 0's image drives channel 0 most;
    # filter 1's image is beaten on channel 1 by filter 2's image.
    m = np.array([[5.0, 1.0, 0.0], [1.0, 2.0, 0.0], [1.0, 3.0, 4.0]], np.float32)[:, None, :]
    out = schema.index_datasets(np.array([0, 1, 2]), np.ones(3, bool), m)
    assert out["selectivity"].tolist() == [True, False, True]
    np.testing.assert_allclose(out["specificity"][:2], [5.0 / 1.0, 2.0 / 2.0])
    assert np.isnan(out["specificity"][2])  # the others' mean is 0: not computable


def test_summary_of_a_layer():
    table = {
        "filter": np.arange(4),
        "final_activation": np.array([1.0, 0.0, 2.0, 3.0]),
        "dead": np.array([False, True, False, False]),
        "zero_start_grad": np.array([False, True, False, False]),
        "nonfinite": np.array([False, False, False, True]),
        "selectivity": np.array([True, False, False, True]),
        "specificity": np.array([2.0, np.nan, 1.0, 3.0]),
        "robustness": np.array([0.5, np.nan, 0.7, 0.9]),
        "hf_energy": np.array([0.1, 0.8, 0.2, 0.3]),
    }
    s = fidelity.summarize(table)
    assert s["done"] == 4 and s["dead_fraction"] == 0.25 and s["dead_count"] == 1
    assert s["zero_start_grad"] == 1 and s["nonfinite"] == 1
    assert np.isclose(s["selectivity"], 2 / 3)  # over the live filters
    assert s["median_robustness"] == 0.7 and s["median_hf_energy"] == 0.2
    assert s["mean_final_activation"] == 1.5


def test_run_stores_measures_and_flags_dead_exactly_when_the_activation_is_zero(
    tiny_weights, tmp_path
):
    w = tiny_weights
    params = jax.tree.map(np.array, w.params)
    params["params"]["block2_conv1"]["bias"][5] = -1e4  # never turns on (classic cannot wake it)
    weights = type(w)(w.name, params, w.preprocessing, w.source_sha256, w.manifest)
    r = CLASSIC.replace(size=(32, 32), steps=3)
    out = tmp_path / "m.h5"
    run_atlas(out, ["block2_conv1"], [4, 5, 6], r, weights, quiet=True)
    with open_atlas(out) as a:
        layer = a.layers["block2_conv1"]
        fa = layer.field("final_activation")[:][:, 0]
        dead = layer.field("dead")[:]
        assert dead.tolist() == [False, True, False]
        assert (fa == 0).tolist() == dead.tolist()
        # final_activation is the objective after the last step (the channel mean).
        np.testing.assert_allclose(fa, layer.objective[:, -1], rtol=1e-4, atol=1e-6)
        assert np.all(np.isfinite(layer.field("hf_energy")[:]))
        rob = layer.field("robustness")[:][:, 0]
        assert np.isnan(rob[1]) and np.all(np.isfinite(rob[[0, 2]]))
        matrix = layer.activation_matrix
        assert matrix.shape == (3, 1, 8)  # the tiny network's block2 has 8 channels
        np.testing.assert_allclose(matrix[:, 0, [4, 5, 6]].diagonal(), fa, rtol=1e-5)


#: XLA's convolution compiles ~4x faster than Winograd's (same images: tests/test_conv.py).
ROLLED_XLA = Execution(conv="xla", unroll=1)


# Slow (scripts/test.sh --all, CI): VGG16's own weights, compiled for K = 3. By default,
# tests/test_objectives.py checks the diversity term by hand, tests/test_render.py renders K images
# and the test below runs them through the engine.
@pytest.mark.slow
def test_diversity_pushes_k_images_apart(default_weights):
    # VGG16's own weights: how far apart diversity pushes the images is a property of the model.
    w, layer = default_weights, "block2_conv1"
    model = vgg.VGG16(preprocessing=w.preprocessing, widths=w.widths)

    @jax.jit
    def similarity_of(params, raw):
        acts = model.apply(params, raw, layer)
        return objectives.Diversity(layer)({layer: acts[:, None]}, 0)

    def similarity(raw):  # mean pairwise Gram cosine similarity of one filter's K images
        return float(similarity_of(w.params, jnp.asarray(raw)))

    base = CLASSIC.replace(size=(32, 32), steps=10)
    plain, pushed = (
        ascent.visualize(
            layer,
            [3],
            base.with_diversity(3, weight),
            w.params,
            w.preprocessing,
            execution=ROLLED_XLA,
        )
        for weight in (0.0, 10.0)
    )
    assert pushed.raw.shape == (1, 3, 32, 32, 3)
    assert similarity(pushed.raw[0]) < similarity(plain.raw[0]) - 0.3  # measured: 0.99 -> 0.28
    assert pushed.objective[0, -1] > pushed.objective[0, 0]  # and the objective still rises


def test_k_images_per_filter_do_not_depend_on_chunks(tiny_weights):
    # 1e-5 at 32 px; the tests' tiny network, the same program as VGG16's.
    w, layer = tiny_weights, "block2_conv1"
    r = PRESETS["keras-vis"].replace(size=(32, 32), steps=3).with_diversity(3)
    one = ascent.local_mesh(jax.devices()[:1])
    a = ascent.visualize(
        layer, [0, 1], r, w.params, w.preprocessing, execution=ROLLED_XLA, mesh=one
    )
    b = ascent.visualize(
        layer, [1, 0], r, w.params, w.preprocessing, execution=ROLLED_XLA.replace(batch=8)
    )
    assert a.raw.shape == (2, 3, 32, 32, 3)
    np.testing.assert_allclose(b.raw[::-1], a.raw, rtol=1e-5, atol=1e-5 * np.abs(a.raw).max())


def test_perturbation_kinds():
    img = jax.random.uniform(jax.random.key(1), (24, 20, 3)) * 255
    u = jnp.asarray([0.9, 0.1, 0.7, 0.2])
    shifted = fidelity.wrap_shift(img, u)  # a permutation of the pixels
    np.testing.assert_allclose(np.sort(np.ravel(shifted)), np.sort(np.ravel(img)), rtol=1e-6)
    assert not np.array_equal(shifted, img)
    white = jnp.full((24, 24, 3), 255.0)
    turned = np.asarray(fidelity.rotate_black(white, jnp.asarray([0.0, 0, 0, 0])))  # -10 degrees
    assert (turned[0, 0] < 1).all() and (turned[12, 12] == 255).all()  # black corners
    np.testing.assert_allclose(fidelity.resample(white, u), white, rtol=1e-6)  # flat stays flat
    wave = jnp.asarray(np.sin(np.arange(20) / 3.0)[None, :, None].repeat(24, 0).repeat(3, -1))
    back = fidelity.resample(
        wave, jnp.asarray([1.0, 0, 0, 0])
    )  # zoom 1.1 and back: smooth survives
    np.testing.assert_allclose(
        np.asarray(back)[6:-6, 6:-6], np.asarray(wave)[6:-6, 6:-6], atol=0.05
    )
