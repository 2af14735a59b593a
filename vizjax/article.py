"""Reproduce the seed article ("Do Filters Dream of Convolutional Cats?") on the default weights.

The article (after F. Chollet's "How convolutional neural networks see the world") shows:
block4_conv1 filter 0; the first 20 filters of block1_conv1, block2_conv2, block3_conv3,
block4_conv1 and block5_conv1; and a cat photo nudged by block5_conv3 filter 0. We add one
full-layer atlas (all 64 filters of block1_conv2), and beyond the article the same filters under
the default recipe (``Plan.recipe``, :data:`vizjax.engine.recipe.DEFAULT_RECIPE`): a static
gallery site leads with the default recipe's pictures and shows the article's beside them on every
layer and filter page, with their measured robustness and HF energy, and one figure puts a few
telling filters (``Plan.compare``) side by side.
All images come from resumable atlases (``<out>/atlas.h5``, classic; ``<out>/<recipe>.h5``, the
default recipe; ``<out>/cat.h5`` for the cat, whose start image makes it a run of its own), so a
second run only redraws the pictures.
"""

from __future__ import annotations

import dataclasses
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from vizjax import images
from vizjax.atlas import open_atlas
from vizjax.engine.execution import Execution
from vizjax.engine.recipe import DEFAULT_RECIPE, DEFAULT_SIZE, PRESETS, Recipe
from vizjax.errors import VizjaxError
from vizjax.gallery import write_site
from vizjax.models.weights import DEFAULT_WEIGHTS, load_weights
from vizjax.run import auto_dtype, run_atlas, start_image


@dataclasses.dataclass(frozen=True)
class Plan:
    """What :func:`reproduce` draws. :data:`ARTICLE` is the article; tests use a tiny plan.

    Attributes:
      layers: layers whose first ``first`` filters are shown as grids.
      first: how many filters of each of ``layers``.
      picture: the article's opening picture, ``(layer, filter)``.
      full_layer: a whole layer, every filter.
      cat: ``(layer, filter)`` nudging the shipped cat photo ("How about a cat?").
      recipe: the preset every filter above is also rendered with, beside classic.
      compare: filters put side by side in one figure (2, 6, 7 and 13 of block5_conv1 stay
        dead under classic at 128 px: the most telling pairs); they must be among those above.
      size, steps: override both recipes' image size and steps; None: theirs.
    """

    layers: tuple[str, ...] = (
        "block1_conv1",
        "block2_conv2",
        "block3_conv3",
        "block4_conv1",
        "block5_conv1",
    )
    first: int = 20
    picture: tuple[str, int] = ("block4_conv1", 0)
    full_layer: str = "block1_conv2"
    cat: tuple[str, int] = ("block5_conv3", 0)
    recipe: str = DEFAULT_RECIPE
    compare: tuple[tuple[str, tuple[int, ...]], ...] = (
        ("block3_conv3", (0, 1, 2, 3)),
        ("block5_conv1", (2, 6, 7, 13)),
    )
    size: int | None = None
    steps: int | None = None


ARTICLE = Plan()


#: The file that marks a folder :func:`reproduce` wrote (and may write again).
MARKER = ".vizjax-article"


def check_out(out: Path) -> None:
    """VizjaxError (one line) unless ``out`` is absent, an empty folder or one that
    :func:`reproduce` wrote (:data:`MARKER`): its files are never written over a user's."""
    if not out.exists() and not out.is_symlink():
        return
    if not out.is_dir():
        raise VizjaxError(f"{out} exists and is not a folder; give a new or empty folder")
    entries = os.listdir(out)
    if entries and MARKER not in entries:
        raise VizjaxError(
            f"{out} holds files that vizjax article did not write (no {MARKER}); "
            "give a new or empty folder"
        )


def reproduce(
    out: str | Path = "out",
    *,
    weights_name: str | None = None,
    batch: int | str = "auto",
    quiet: bool = False,
    plan: Plan = ARTICLE,
) -> list[Path]:
    """Write the article's pictures into ``out`` and return their paths (printing each)."""
    out = Path(out)
    check_out(out)
    t0 = time.perf_counter()
    w = load_weights(weights_name or DEFAULT_WEIGHTS)
    try:
        out.mkdir(parents=True, exist_ok=True)
        (out / MARKER).write_text("This folder was written by vizjax article.\n", encoding="utf-8")
    except OSError as e:
        raise VizjaxError(f"cannot write {out}: {e.strerror or e}") from None
    execution = Execution(batch=batch)
    config, default = (_sized(PRESETS[name], plan) for name in ("classic", plan.recipe))
    atlas_path, default_path = out / "atlas.h5", out / f"{plan.recipe}.h5"
    # The article's classic pictures in float32, as the article computed them; the default
    # recipe's as `vizjax atlas` would run it here (bfloat16 on a GPU, or on a CPU with AMX).
    runs = ((config, atlas_path, execution),)
    runs += ((default, default_path, execution.replace(dtype=auto_dtype(default_path))),)
    for recipe, path, ex in runs:
        h, w_ = recipe.size or DEFAULT_SIZE
        print(
            f"vizjax article: {recipe.name}, {recipe.steps} steps, {h}x{w_} px, {ex.dtype}",
            flush=True,
        )
        for layers, filters in (([plan.full_layer], "all"), (list(plan.layers), f"0:{plan.first}")):
            run_atlas(path, layers, filters, recipe, w, execution=ex, quiet=quiet)

    written = [atlas_path, default_path]
    with open_atlas(atlas_path) as a, open_atlas(default_path) as b:
        layer, f = plan.picture
        written.append(images.save_png(a.layers[layer].image(f), out / f"{layer}_filter{f}.png"))
        for layer in (*plan.layers, plan.full_layer):
            full = layer == plan.full_layer
            for atlas, tag in ((a, ""), (b, f"_{plan.recipe}")):
                la = atlas.layers[layer]
                fs = (
                    list(la.completed()) if full else [int(f) for f in la.filters if f < plan.first]
                )
                tiles = np.stack([la.image(int(f)) for f in fs])
                suffix = "all" if full else f"first{plan.first}"
                written.append(
                    images.save_png(
                        images.grid(tiles, [str(f) for f in fs], cols=8 if full else 10),
                        out / f"grid_{layer}_{suffix}{tag}.png",
                    )
                )
        # The gallery leads with the default recipe's pictures (its index' thumbnails, the left
        # picture of each box); the article's classic ones stand beside them.
        title = f"vizjax: the default recipe ({plan.recipe}) beside the seed article's (classic)"
        written.append(write_site(b, out / "gallery", title=title, beside=a))
        written.append(compare_recipes(out, a, b, plan))

    # "How about a cat?": the photo, nudged by block5_conv3 filter 0 (its own size, 451x300).
    # A run of its own (another start image is another config), kept in its own atlas.
    cat_layer, cat_filter = plan.cat
    cat_config = config.replace(init=str(images.sample_path()), size=None)
    cat_path = out / "cat.h5"
    run_atlas(
        cat_path,
        [cat_layer],
        [cat_filter],
        cat_config,
        w,
        execution=execution.replace(batch=1),
        quiet=quiet,
    )
    x0, _ = start_image(cat_config)
    with open_atlas(cat_path) as a:
        layer = a.layers[cat_layer]
        image, raw = layer.image(cat_filter), layer.raw[layer.row(cat_filter)][0]
    before_after = images.grid(
        np.stack([x0.astype(np.uint8), np.clip(raw, 0, 255).astype(np.uint8)]), cols=2
    )
    written.append(cat_path)
    written.append(images.save_png(image, out / f"cat_{cat_layer}_filter{cat_filter}.png"))
    written.append(images.save_png(before_after, out / f"cat_before_after_{cat_layer}.png"))

    print(f"vizjax article: done in {time.perf_counter() - t0:.0f} s; wrote:")
    for p in written:
        print(f"  {p}")
    return written


def _sized(recipe: Recipe, plan: Plan) -> Recipe:
    """``recipe`` at the plan's size and steps, where the plan sets them."""
    if plan.size:
        recipe = recipe.replace(size=(plan.size, plan.size))
    return recipe.replace(steps=plan.steps) if plan.steps else recipe


def compare_recipes(out: Path, classic: Any, default: Any, plan: Plan = ARTICLE) -> Path:
    """The plan's ``compare`` filters under classic and the plan's recipe, as one PNG: per layer
    a classic row above a row of the other, each tile labelled with its filter, robustness and
    HF energy."""
    tiles, labels = [], []
    for layer, filters in plan.compare:
        for name, a in (("classic", classic), (plan.recipe, default)):
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
    cols = max(len(fs) for _, fs in plan.compare)
    return images.save_png(
        images.grid(np.stack(tiles), labels, cols=cols), out / f"classic_vs_{plan.recipe}.png"
    )
