"""optax optimizers by name; the article's step as optax is bit-exact."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from vizjax import optim


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
