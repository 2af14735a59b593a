"""The tests' tiny VGG-shaped network: VGG16's 13 convolutions and 5 pools under their own names,
with a few channels per block and random weights from a fixed seed, written as an ordinary weight
set (orbax checkpoint + manifest) named ``tiny-vgg16``.

The engine, atlas, CLI, fault and gallery tests run on it: the same programs as VGG16's, with
1/64 of the channels, so a test compiles and runs in a fraction of the time. Tests where the
values matter (pinned values, the independent references, weights and conversion) keep the real
weights. Not a test module (no ``test_`` name): subprocesses and conftest import it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from vizjax.models import vgg
from vizjax.models.weights import save_weights

NAME = "tiny-vgg16"
#: Output channels per block: block1 keeps 8 filters, so the tests' ``--filters 0:8`` still fits.
WIDTHS = (8, 8, 16, 16, 16)
SEED = 0


def params(seed: int = SEED, widths: tuple[int, ...] = WIDTHS) -> dict[str, dict[str, np.ndarray]]:
    """LeCun-normal kernels (std 1/sqrt(9 * cin)) from ``default_rng(seed)`` and zero biases, as
    flax initializes them: numpy, because flax's init compiles ~100 ops (~10 s on a 2-core CPU)
    for 22k numbers. ``widths=vgg.WIDTHS``: random weights of VGG16's own shapes."""
    rng = np.random.default_rng(seed)
    out = {}
    for name, (kshape, bshape) in vgg.conv_shapes(widths).items():
        fan_in = kshape[0] * kshape[1] * kshape[2]
        out[name] = {
            "kernel": (rng.standard_normal(kshape) / np.sqrt(fan_in)).astype(np.float32),
            "bias": np.zeros(bshape, np.float32),
        }
    return out


#: The CLI arguments that select it (the weights directory must hold it: see ``write``).
ARGS = ["--weights", NAME]


def write(root: Path) -> Path:
    """Write the tiny weight set into ``root/tiny-vgg16`` (once) and return its path."""
    out = Path(root) / NAME
    if (out / "manifest.json").is_file():
        return out
    return save_weights(
        params(),
        out,
        source=f"tests/tiny_network.py params({SEED}): random, for tests",
        source_sha256="0" * 64,
        preprocessing=vgg.TORCH,
        licence="none (random numbers)",
        widths=WIDTHS,
    )
