# Your own Flax model in vizjax: a small residual CNN, visualized and written into an atlas.
import flax.linen as nn
import jax
import jax.numpy as jnp

import vizjax
from vizjax.models.network import PREPROCESSINGS


class Block(nn.Module):
    width: int

    @nn.compact
    def __call__(self, x):
        y = nn.relu(nn.Conv(self.width, (3, 3))(x))
        return nn.relu(x + nn.Conv(self.width, (3, 3))(y))


class Net(nn.Module):
    @nn.compact
    def __call__(self, x):
        x = nn.relu(nn.Conv(16, (3, 3))(x))
        x = Block(16)(x)
        x = nn.max_pool(x, (2, 2), (2, 2))
        return Block(16)(x)


module = Net()
variables = module.init(jax.random.key(0), jnp.zeros((1, 32, 32, 3)))
# Layers are module paths ("Block_1", "Block_1/Conv_0", ...); the model expects x / 127.5 - 1.
model = vizjax.from_flax(module, variables, preprocessing=PREPROCESSINGS["tf"])
print(model.layers)

recipe = vizjax.preset("classic").replace(size=(32, 32), steps=8)
res = vizjax.visualize("Block_1", range(4), recipe, model)
print(res.images.shape)  # (4, 1, 32, 32, 3): 4 filters, 1 image each, uint8

vizjax.run_atlas("my_net.h5", ["Block_0", "Block_1"], "0:4", recipe, model, quiet=True)
with vizjax.open_atlas("my_net.h5") as atlas:
    print(list(atlas.layers))  # ['Block_0', 'Block_1']
