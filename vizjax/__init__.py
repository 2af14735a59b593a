"""vizjax: batched feature visualization (activation maximization) for VGG16 in JAX."""

__version__ = "0.1.0"
