"""Run configuration: one frozen dataclass, named presets, and the JSON written into every atlas.

The CLI only overrides fields of a preset; :func:`to_json_dict` is what an atlas stores, so a
result always says how it was made.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from vizjax.errors import VizjaxError

DTYPES = ("float32", "bfloat16")
CONV_CHOICES = ("auto", "xla", "winograd")


@dataclasses.dataclass(frozen=True)
class AscentConfig:
    """Everything that decides what image a filter gets.

    Attributes:
      recipe: the optimization recipe; ``"classic"`` is the seed article's (Chollet's) algorithm.
      steps: gradient-ascent steps.
      step_size: multiplier of the RMS-normalized gradient.
      size: ``(height, width)`` of the image, or ``None`` for 128x128 noise / the start image's own size.
      seed: seeds the start noise (one image shared by every filter of a run).
      noise_mean, noise_std: the start noise N(mean, std) in RGB 0-255 units.
      init: path of a start image (a photo) instead of noise; ``init_sha256`` its digest.
      dtype: compute dtype of weights and activations; the image and its update stay float32.
      preprocess: apply the weights' input preprocessing inside the forward (``False`` feeds the
        0-255 image raw, as the article's code does).
      unroll: how many steps XLA sees unrolled in the compiled loop; ``0`` = all on CPU (a rolled XLA
        while-loop around convolutions is ~3.5x slower there), 1 on accelerators.
      conv: convolution algorithm (:mod:`vizjax.conv`): ``"xla"``, ``"winograd"`` (F(2x2, 3x3) for
        the layers where it is faster on CPU), or ``"auto"`` (winograd on CPU, xla elsewhere).
    """

    recipe: str = "classic"
    steps: int = 20
    step_size: float = 1.0
    size: tuple[int, int] | None = None
    seed: int = 0
    noise_mean: float = 127.0
    noise_std: float = 10.0
    init: str | None = None
    init_sha256: str | None = None
    dtype: str = "float32"
    preprocess: bool = True
    unroll: int = 0
    conv: str = "auto"

    def __post_init__(self) -> None:
        if self.recipe not in PRESETS_RECIPES:
            raise VizjaxError(
                f"unknown recipe {self.recipe!r}; known: {', '.join(PRESETS_RECIPES)}"
            )
        if self.steps <= 0:
            raise VizjaxError(f"steps must be a positive integer, got {self.steps}")
        if self.dtype not in DTYPES:
            raise VizjaxError(f"dtype must be one of {', '.join(DTYPES)}, got {self.dtype!r}")
        if self.size is not None and (len(self.size) != 2 or min(self.size) <= 0):
            raise VizjaxError(f"size must be two positive integers, got {self.size}")
        if self.conv not in CONV_CHOICES:
            raise VizjaxError(f"conv must be one of {', '.join(CONV_CHOICES)}, got {self.conv!r}")
        if self.unroll < 0:
            raise VizjaxError(f"unroll must be >= 0, got {self.unroll}")

    def replace(self, **changes: Any) -> AscentConfig:
        return dataclasses.replace(self, **changes)

    def to_json_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["size"] = list(self.size) if self.size is not None else None
        return d


PRESETS_RECIPES = ("classic",)

#: Named presets. ``classic`` reproduces the seed article: N(127, 10) noise, 128x128, 20 steps of 1.0.
PRESETS: dict[str, AscentConfig] = {"classic": AscentConfig()}

DEFAULT_SIZE = (128, 128)


def parse_size(text: str) -> tuple[int, int]:
    """``"128"`` -> (128, 128); ``"96x160"`` -> (96, 160) (height x width)."""
    try:
        parts = [int(p) for p in text.lower().split("x")]
    except ValueError:
        raise VizjaxError(f"size must look like 128 or 96x160, got {text!r}") from None
    if len(parts) == 1:
        parts = parts * 2
    if len(parts) != 2 or min(parts) <= 0:
        raise VizjaxError(f"size must look like 128 or 96x160 (positive), got {text!r}")
    return parts[0], parts[1]
