# ruff: noqa: E402  (the README block, verbatim, comes after the lines that make its inputs)
# The README's "Your own model" block, run as written (tests/test_generic_atlas.py) after the few
# lines that make the `module` and `variables` it takes: a small residual Flax CNN.
import flax.linen as nn
import jax
import jax.numpy as jnp


class Net(nn.Module):
    @nn.compact
    def __call__(self, x):
        x = nn.relu(nn.Conv(8, (3, 3))(x))
        return nn.relu(x + nn.Conv(8, (3, 3))(x))


module = Net()
variables = module.init(jax.random.key(0), jnp.zeros((1, 64, 64, 3)))

# --- the README's block, verbatim (tests/test_docs.py checks it) ---
import vizjax
from vizjax.models.network import PREPROCESSINGS

model = vizjax.from_flax(module, variables, preprocessing=PREPROCESSINGS["tf"])  # Flax linen
# model = vizjax.from_keras("resnet50.keras", preprocessing=PREPROCESSINGS["caffe"])  # Keras 3
recipe = vizjax.preset("lucent").replace(size=(64, 64))
vizjax.run_atlas("mine.h5", [model.layers[-1]], "0:8", recipe, model)
# --- end of the README's block ---

with vizjax.open_atlas("mine.h5") as atlas:
    print(list(atlas.layers), atlas.layers[model.layers[-1]].completed())
