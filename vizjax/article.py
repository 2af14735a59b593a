"""Reproduce the seed article ("Do Filters Dream of Convolutional Cats?") on the default weights.

The article (after F. Chollet's "How convolutional neural networks see the world") shows:
block4_conv1 filter 0; the first 20 filters of block1_conv1, block2_conv2, block3_conv3,
block4_conv1 and block5_conv1; and a cat photo nudged by block5_conv3 filter 0. We add one
full-layer atlas (all 64 filters of block1_conv2), a static gallery site of everything, and one
figure beyond the article: the same filters under the article's ``classic`` recipe and under
``lucid`` (:data:`COMPARE`), side by side, with their measured robustness and HF energy.
All images come from resumable atlases (``<out>/atlas.h5``; ``<out>/cat.h5`` for the cat, whose
start image makes it a run of its own; ``<out>/lucid.h5`` for the comparison), so a second run only
redraws the pictures.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from vizjax import images
from vizjax.atlas import open_atlas
from vizjax.execution import Execution
from vizjax.gallery import write_site
from vizjax.recipe import PRESETS
from vizjax.run import run_atlas, start_image
from vizjax.weights import DEFAULT_WEIGHTS, Weights, load_weights

ARTICLE_LAYERS = ("block1_conv1", "block2_conv2", "block3_conv3", "block4_conv1", "block5_conv1")
FULL_LAYER = "block1_conv2"
CAT_LAYER, CAT_FILTER = "block5_conv3", 0
#: The classic-vs-lucid figure: filters of block3_conv3 and block5_conv1 (2, 6, 7 and 13 of
#: block5_conv1 stay dead under classic at 128 px: the most telling pairs), lucid shortened to
#: COMPARE_STEPS steps (Lucid renders 512; this keeps scripts/run.sh under 10 minutes on a 2-core
#: CPU -- see the README for the measured time).
COMPARE = {"block3_conv3": (0, 1, 2, 3), "block5_conv1": (2, 6, 7, 13)}
COMPARE_STEPS = 128


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
        gallery = write_site(a, out / "gallery", title="vizjax: the seed article's atlas")
    written.append(gallery)
    written.append(compare_recipes(out, w, execution, quiet))

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


def compare_recipes(out: Path, w: Weights, execution: Execution, quiet: bool) -> Path:
    """The :data:`COMPARE` filters under classic (from ``atlas.h5``) and lucid (``lucid.h5``, at
    :data:`COMPARE_STEPS` steps) as one PNG: per layer a classic row above a lucid row, each tile
    labelled with its filter, robustness and HF energy."""
    lucid = PRESETS["lucid"].replace(steps=COMPARE_STEPS)
    print(
        f"vizjax article: classic vs lucid ({COMPARE_STEPS} steps, 128 px) for "
        + "; ".join(f"{layer} {list(fs)}" for layer, fs in COMPARE.items()),
        flush=True,
    )
    lucid_path = out / "lucid.h5"
    for layer, filters in COMPARE.items():
        run_atlas(lucid_path, [layer], list(filters), lucid, w, execution=execution, quiet=quiet)
    tiles, labels = [], []
    with open_atlas(out / "atlas.h5") as classic, open_atlas(lucid_path) as lucid_atlas:
        for layer, filters in COMPARE.items():
            for name, a in (("classic", classic), ("lucid", lucid_atlas)):
                la = a.layers[layer]
                table = la.fidelity
                by_filter = {int(f): i for i, f in enumerate(table["filter"])}
                for f in filters:
                    i = by_filter[f]
                    tiles.append(la.image(f))
                    # "<filter> C|L r<robustness> h<HF energy>" fits under a 128 px tile.
                    labels.append(
                        f"{f} {name[0].upper()} r{table['robustness'][i]:.2f} "
                        f"h{table['hf_energy'][i]:.2f}"
                    )
    cols = max(len(fs) for fs in COMPARE.values())
    return images.save_png(
        images.grid(np.stack(tiles), labels, cols=cols), out / "classic_vs_lucid.png"
    )
