#!/usr/bin/env python
"""The README's first picture: a few filters under the default recipe above the same filters
under the seed article's classic recipe, from the main job's own atlases.

    bash scripts/run.sh                         # writes out/lucent.h5 and out/atlas.h5
    .venv/bin/python scripts/readme_figure.py   # -> docs/pages/assets/readme_figure.png

One row per atlas (``--atlas`` first, ``--beside`` second), the same ``--filters`` of ``--layer``
in both; each tile is labelled with its filter and its atlas' recipe, and a filter that never
turned on (dead) is labelled so. The PNG is palette-quantized (256 colours) when that keeps it
under ``--max-kb``.
"""

from __future__ import annotations

import argparse
import io
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from vizjax import images, open_atlas

ROOT = Path(__file__).resolve().parent.parent


def row(path: str, layer: str, filters: list[int], tile: int) -> tuple[np.ndarray, list[str]]:
    """``filters`` of ``layer`` in the atlas at ``path``: tiles resized to ``tile`` px, and labels
    "<filter> <recipe>" ("dead" where the filter never turned on)."""
    with open_atlas(path) as a:
        recipe = str(a.config.get("recipe", {}).get("name", "?"))
        lay = a.layers[layer]
        fid = lay.fidelity
        dead = dict(zip(fid["filter"].tolist(), fid["dead"].tolist(), strict=True))
        tiles, labels = [], []
        for f in filters:
            im = Image.fromarray(lay.image(f)).resize((tile, tile), Image.LANCZOS)
            tiles.append(np.asarray(im))
            labels.append(f"{f} {recipe}" + (" (dead)" if dead.get(f) else ""))
    return np.stack(tiles), labels


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--atlas", default="out/lucent.h5", help="the first row (the default recipe)")
    p.add_argument("--beside", default="out/atlas.h5", help="the second row (classic)")
    p.add_argument("--layer", default="block5_conv1")
    p.add_argument("--filters", default="2,6,7,13,18,19", help="comma-separated filter indices")
    p.add_argument("--tile", type=int, default=128)
    p.add_argument("--out", default=str(ROOT / "docs" / "pages" / "assets" / "readme_figure.png"))
    p.add_argument("--max-kb", type=int, default=300)
    args = p.parse_args(argv)
    filters = [int(f) for f in args.filters.split(",")]
    rows = [row(path, args.layer, filters, args.tile) for path in (args.atlas, args.beside)]
    tiles = np.concatenate([t for t, _ in rows])
    labels = [label for _, ls in rows for label in ls]
    picture = Image.fromarray(images.grid(tiles, labels, cols=len(filters)))
    buf = io.BytesIO()
    picture.save(buf, "PNG", optimize=True)
    if buf.tell() > args.max_kb * 1024:
        buf = io.BytesIO()
        picture.quantize(256, method=Image.Quantize.MEDIANCUT).save(buf, "PNG", optimize=True)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(buf.getvalue())
    print(f"wrote {out}: {picture.size[0]}x{picture.size[1]} px, {buf.tell() // 1024} KB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
