# Your own Keras 3 model in vizjax: keras.applications' ResNet50 (random weights: it builds
# offline), run on the JAX backend, pictured filter by filter and written into an atlas.
import os

os.environ.setdefault("KERAS_BACKEND", "jax")  # before the first `import keras`: no TensorFlow

import keras

import vizjax
from vizjax.models.network import PREPROCESSINGS

net = keras.applications.ResNet50(weights=None, include_top=False, input_shape=(64, 64, 3))
net.save("resnet50.keras")  # what `vizjax atlas --model resnet50.keras --preprocess caffe` reads

# Layers are Keras layer names; Keras' ResNet50 expects "caffe" input (BGR minus ImageNet means).
model = vizjax.from_keras("resnet50.keras", preprocessing=PREPROCESSINGS["caffe"])
print(len(model.layers), model.layers[:3])  # 174 ('conv1_pad', 'conv1_conv', 'conv1_bn')
print(model.layer_shapes()["conv2_block3_out"].shape)  # (16, 16, 256) at its fixed 64 px input

recipe = vizjax.preset("lucent").replace(steps=8, size=(64, 64))  # the model's fixed size
res = vizjax.visualize("conv2_block3_out", range(4), recipe, model)
print(res.images.shape)  # (4, 1, 64, 64, 3): 4 filters, 1 image each, uint8

vizjax.run_atlas("resnet50.h5", ["conv2_block3_out"], "0:4", recipe, model, quiet=True)
with vizjax.open_atlas("resnet50.h5") as atlas:
    print(list(atlas.layers))  # ['conv2_block3_out']
