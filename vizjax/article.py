"""Reproduce the seed article ("Do Filters Dream of Convolutional Cats?") on the default weights.

The article (after F. Chollet's "How convolutional neural networks see the world") shows:
block4_conv1 filter 0; the first 20 filters of block1_conv1, block2_conv2, block3_conv3,
block4_conv1 and block5_conv1; and a cat photo nudged by block5_conv3 filter 0. We add one
full-layer atlas (all 64 filters of block1_conv2) and a browser gallery of everything.
All images come from resumable atlases (``<out>/atlas.h5``, and ``<out>/cat.h5`` for the cat,
whose start image makes it a run of its own), so a second run only redraws the pictures.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from vizjax import images
from vizjax.atlas import open_atlas
from vizjax.execution import Execution
from vizjax.recipe import PRESETS
from vizjax.run import run_atlas, start_image
from vizjax.weights import DEFAULT_WEIGHTS, load_weights

ARTICLE_LAYERS = ("block1_conv1", "block2_conv2", "block3_conv3", "block4_conv1", "block5_conv1")
FULL_LAYER = "block1_conv2"
CAT_LAYER, CAT_FILTER = "block5_conv3", 0


def reproduce(
    out: str | Path = "out",
    *,
    weights_name: str | None = None,
    batch: int | str = "auto",
    quiet: bool = False,
) -> list[Path]:
    """Write the article's pictures into ``out`` and return their paths (printing each)."""
    out = Path(out)
    t0 = time.perf_counter()
    w = load_weights(weights_name or DEFAULT_WEIGHTS)
    config = PRESETS["classic"]
    execution = Execution(batch=batch)
    atlas_path = out / "atlas.h5"
    run_atlas(atlas_path, [FULL_LAYER], "all", config, w, execution=execution, quiet=quiet)
    run_atlas(atlas_path, list(ARTICLE_LAYERS), "0:20", config, w, execution=execution, quiet=quiet)

    written = [atlas_path]
    with open_atlas(atlas_path) as a:
        written.append(
            images.save_png(a.layers["block4_conv1"].image(0), out / "block4_conv1_filter0.png")
        )
        for layer in (*ARTICLE_LAYERS, FULL_LAYER):
            la = a.layers[layer]
            fs = [int(f) for f in la.filters if f < 20] if layer != FULL_LAYER else list(la.filters)
            tiles = np.stack([la.image(int(f)) for f in fs])
            cols = 10 if layer != FULL_LAYER else 8
            suffix = "first20" if layer != FULL_LAYER else "all"
            written.append(
                images.save_png(
                    images.grid(tiles, [str(f) for f in fs], cols=cols),
                    out / f"grid_{layer}_{suffix}.png",
                )
            )
        gallery = images.write_gallery(a, "vizjax: the seed article's atlas", out / "gallery.html")
    written.append(gallery)

    # "How about a cat?": the photo, nudged by block5_conv3 filter 0 (its own size, 451x300).
    # A run of its own (another start image is another config), kept in its own atlas.
    cat_config = config.replace(init=str(images.sample_path()))
    cat_path = out / "cat.h5"
    run_atlas(
        cat_path,
        [CAT_LAYER],
        [CAT_FILTER],
        cat_config,
        w,
        execution=execution.replace(batch=1),
        quiet=quiet,
    )
    x0, _ = start_image(cat_config)
    with open_atlas(cat_path) as a:
        layer = a.layers[CAT_LAYER]
        image, raw = layer.image(CAT_FILTER), layer.raw[layer.row(CAT_FILTER)][0]
    before_after = images.grid(
        np.stack([x0.astype(np.uint8), np.clip(raw, 0, 255).astype(np.uint8)]), cols=2
    )
    written.append(cat_path)
    written.append(images.save_png(image, out / f"cat_{CAT_LAYER}_filter{CAT_FILTER}.png"))
    written.append(images.save_png(before_after, out / f"cat_before_after_{CAT_LAYER}.png"))

    print(f"vizjax article: done in {time.perf_counter() - t0:.0f} s; wrote:")
    for p in written:
        print(f"  {p}")
    return written
