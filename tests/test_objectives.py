"""Objectives on hand-computed activation maps, their algebra, and the fast path's channel."""

import jax
import jax.numpy as jnp
import numpy as np

from vizjax.engine import objectives as O

L = "block1_conv1"
# acts: (K=1, V=1, h=2, w=3, C=2); channel 1 holds 0..5, channel 0 holds 10.
A = np.zeros((1, 1, 2, 3, 2), np.float32)
A[..., 0] = 10.0
A[..., 1] = np.arange(6, dtype=np.float32).reshape(2, 3)
IMG = np.arange(2 * 3 * 3, dtype=np.float32).reshape(1, 2, 3, 3)
ACTS = {L: jnp.asarray(A), O.INPUT: jnp.asarray(IMG)}


def test_channel_neuron_deepdream_by_hand():
    assert float(O.Channel(L)(ACTS, 1)) == 2.5  # mean of 0..5
    assert float(O.Channel(L)(ACTS, 0)) == 10.0
    assert float(O.Neuron(L)(ACTS, 1)) == 4.0  # centre (bottom-right of the middle): [1, 1]
    assert np.isclose(float(O.DeepDream(L)(ACTS, 0)), (6 * 100 + sum(i * i for i in range(6))) / 12)
    # The fast path's single channel stands for f whatever f is.
    one = {L: jnp.asarray(A[..., 1:])}
    assert float(O.Channel(L)(one, 1)) == 2.5


def test_regularizers_by_hand():
    x = IMG
    assert np.isclose(float(O.L1(1.0)(ACTS, 0)), np.mean(np.abs(x - 1.0)))
    assert np.isclose(float(O.L2()(ACTS, 0)), np.sqrt(np.mean(x**2) + 1e-6))
    tv = (np.abs(np.diff(x, axis=1)).sum() + np.abs(np.diff(x, axis=2)).sum()) / x[0].size
    assert np.isclose(float(O.TotalVariation()(ACTS, 0)), tv)
    flat = {O.INPUT: jnp.full((1, 5, 5, 3), 7.0)}
    assert float(O.Blur()(flat, 0)) == 0.0 and float(O.TotalVariation()(flat, 0)) == 0.0


def test_combinations():
    c, tv = O.Channel(L), O.TotalVariation()
    obj = 2 * c - 0.5 * tv + O.Neuron(L)
    want = 2 * 2.5 - 0.5 * float(tv(ACTS, 1)) + 4.0
    assert np.isclose(float(obj(ACTS, 1)), want)
    assert np.isclose(float((-c)(ACTS, 1)), -2.5)
    assert obj.layers() == {L}
    assert obj.channel_only(L) and not (c + O.DeepDream(L)).channel_only(L)
    assert hash(obj) == hash(2 * c - 0.5 * tv + O.Neuron(L))  # part of a compile-cache key


def test_diversity_is_the_mean_pairwise_gram_cosine_similarity():
    rng = np.random.default_rng(0)
    a = rng.random((3, 1, 4, 4, 5)).astype(np.float32)
    same = np.repeat(a[:1], 3, axis=0)
    d = O.Diversity(L)
    assert np.isclose(float(d({L: jnp.asarray(same)}, 0)), 1.0, atol=1e-5)
    grams = [x.reshape(-1, 5).T @ x.reshape(-1, 5) for x in a]
    grams = [g / np.linalg.norm(g) for g in grams]
    want = np.mean([np.sum(grams[i] * grams[j]) for i in range(3) for j in range(3) if i != j])
    assert np.isclose(float(d({L: jnp.asarray(a)}, 0)), want, rtol=1e-5)
    assert float(d({L: jnp.asarray(a[:1])}, 0)) == 0.0  # one image: nothing to push apart


def test_spec_builds_the_recipe_objective():
    spec = O.Spec(tv=1.0, l1=0.3)
    obj = spec.build(L)
    want = 2.5 - 1.0 * float(O.TotalVariation()(ACTS, 1)) - 0.3 * float(O.L1()(ACTS, 1))
    assert np.isclose(float(obj(ACTS, 1)), want)
    assert np.isclose(float(O.Spec(minimize=True).build(L)(ACTS, 1)), -2.5)
    assert O.Spec(diversity=5.0).build(L, k=1) == O.Channel(L)  # no diversity term for K = 1
    assert "Diversity" in O.describe(O.Spec(diversity=5.0).build(L, k=3))
    assert jax.grad(lambda x: obj({L: jnp.asarray(A), O.INPUT: x}, 1))(jnp.asarray(IMG)).shape
