"""optax optimizers by name; the article's step as optax is bit-exact."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from vizjax.engine import optim
from vizjax.engine.optim import Optimizer, classic


@pytest.mark.parametrize("lr", [1.0, 0.5, 2.0])
def test_classic_equals_the_articles_update(lr):
    x = jax.random.normal(jax.random.key(0), (16, 16, 3)) * 10 + 127
    g = jax.random.normal(jax.random.key(1), x.shape)  # gradient of the objective
    opt = optim.Optimizer("classic", lr=lr).build()
    updates, _ = opt.update(-g, opt.init(x), x)  # optax minimizes: it gets -grad
    want = x + lr * (g / (jnp.sqrt(jnp.mean(jnp.square(g))) + 1e-5))
    np.testing.assert_array_equal(optax.apply_updates(x, updates), want)  # exact, not just close
    # and to 1e-6 against float64 numpy
    g64, x64 = np.asarray(g, np.float64), np.asarray(x, np.float64)
    ref = x64 + lr * g64 / (np.sqrt(np.mean(g64**2)) + 1e-5)
    np.testing.assert_allclose(optax.apply_updates(x, updates), ref, rtol=1e-6)


def test_keras_rmsprop_first_step():
    # Keras: v = rho v + (1 - rho) g^2 from v = 0, x -= lr g / (sqrt(v) + 1e-7).
    x, g = jnp.ones(4), jnp.asarray([1.0, -2.0, 0.5, 0.0])
    opt = optim.Optimizer("rmsprop", lr=1.0, decay=0.999).build()
    u, _ = opt.update(g, opt.init(x), x)
    v = 0.001 * np.asarray(g) ** 2
    np.testing.assert_allclose(u, -np.asarray(g) / (np.sqrt(v) + 1e-7), rtol=1e-5)


@pytest.mark.parametrize("name", optim.Optimizer.NAMES)
def test_every_optimizer_descends_a_bowl(name):
    lr = {"classic": 0.1, "sgd": 0.1, "rmsprop": 0.1}.get(name, 0.05)
    opt = optim.Optimizer(name, lr=lr).build()
    x = jnp.asarray([3.0, -2.0])
    state = opt.init(x)
    for _ in range(20):
        u, state = opt.update(2 * x, state, x)
        x = optax.apply_updates(x, u)
    assert float(jnp.sum(x**2)) < 13.0 * 0.5


def _steps(tx, g, n=3):
    """Three updates of ``tx`` on a fixed gradient sequence (so b1, b2, decay and eps all act)."""
    params = jnp.zeros(4)
    state = tx.init(params)
    out = []
    for i in range(n):
        u, state = tx.update(g * (i + 1), state, params)
        out.append(np.asarray(u))
    return np.stack(out)


@pytest.mark.parametrize(
    "opt,reference",
    [
        (Optimizer("adam", lr=0.1, b1=0.5, b2=0.8, eps=0.3), optax.adam(0.1, 0.5, 0.8, 0.3)),
        (Optimizer("adam", lr=0.1), optax.adam(0.1, 0.9, 0.999, 1e-8)),  # eps 0: optax' default
        (Optimizer("nadam", lr=0.1, b1=0.5, b2=0.8, eps=0.3), optax.nadam(0.1, 0.5, 0.8, 0.3)),
        (Optimizer("nadam", lr=0.1), optax.nadam(0.1, 0.9, 0.999, 1e-8)),
        (
            Optimizer("rmsprop", lr=0.1, decay=0.5, eps=0.3),
            optax.rmsprop(0.1, decay=0.5, eps=0.3, eps_in_sqrt=False),  # Keras' placement
        ),
        (Optimizer("rmsprop", lr=0.1), optax.rmsprop(0.1, decay=0.9, eps=1e-7, eps_in_sqrt=False)),
        (Optimizer("classic", lr=2.0, eps=0.5), classic(2.0, 0.5)),
    ],
    ids=[
        "adam",
        "adam-default-eps",
        "nadam",
        "nadam-default-eps",
        "rmsprop",
        "rmsprop-default",
        "classic-eps",
    ],
)
def test_each_optimizer_passes_its_settings_to_optax(opt, reference):
    g = jnp.asarray([0.3, -0.02, 1.5, -4.0])
    np.testing.assert_allclose(_steps(opt.build(), g), _steps(reference, g), rtol=1e-6)


def test_classic_defaults_and_eps_are_the_articles():
    g = {"a": jnp.asarray([3.0, 4.0]), "b": jnp.asarray([0.0])}  # two leaves: one RMS over both
    u, _ = classic().update(g, classic().init(g))
    rms = np.sqrt((9 + 16 + 0) / 3)
    # optax adds updates: the ascent step on a loss of -objective is -g / (rms + eps).
    np.testing.assert_allclose(u["a"], -np.asarray([3.0, 4.0]) / (rms + 1e-5), rtol=1e-6)
    z, _ = classic().update(jnp.zeros(3), None)
    np.testing.assert_array_equal(z, np.zeros(3))  # 0 / (0 + 1e-5): no NaN
    tiny = jnp.asarray([1e-6, 0.0])  # the 1e-5 shows: RMS 7e-7 is below it
    t, _ = classic().update(tiny, None)
    np.testing.assert_allclose(t, -np.asarray(tiny) / (np.sqrt(0.5e-12) + 1e-5), rtol=1e-5)


def test_an_unknown_optimizer_names_the_known_ones():
    with pytest.raises(ValueError) as e:
        Optimizer("lbfgs").build()
    assert str(e.value) == "unknown optimizer 'lbfgs'; known: classic, adam, rmsprop, nadam, sgd"
