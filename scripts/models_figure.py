#!/usr/bin/env python
"""Two models' filters side by side, one row per layer: the README's AlexNet-vs-VGG16 figure.

    vizjax atlas --model alexnet --all-layers --filters 0:4 --out alexnet.h5
    vizjax atlas --layer block1_conv2 --layer block2_conv2 --layer block3_conv3 \\
        --layer block4_conv3 --layer block5_conv3 --filters 0:4 --out vgg16.h5
    python scripts/models_figure.py alexnet.h5 vgg16.h5 --out bench/figures/alexnet_vs_vgg16.png

Each atlas gives one panel (its layers in atlas order, its first ``--filters`` done filters per
layer, tiles resized to ``--tile`` px; a row's first tile is labelled with its layer, the others with
their filter); the panels are put side by side.
The PNG is palette-quantized (256 colours) when that keeps it under ``--max-kb``.
"""

from __future__ import annotations

import argparse
import io
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from vizjax import images, open_atlas


def panel(path: str, filters: int, tile: int) -> np.ndarray:
    """One atlas as a grid: a row per layer, ``filters`` tiles per row."""
    tiles, labels = [], []
    with open_atlas(path) as a:
        for name, layer in a.layers.items():
            done = sorted(int(f) for f in layer.completed())[:filters]
            for i, f in enumerate(done):
                im = Image.fromarray(layer.image(f)).resize((tile, tile), Image.LANCZOS)
                tiles.append(np.asarray(im))
                labels.append(name if i == 0 else str(f))
            for _ in range(filters - len(done)):  # keep the rows aligned
                tiles.append(np.full((tile, tile, 3), 255, np.uint8))
                labels.append("")
    return images.grid(np.stack(tiles), labels, cols=filters)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("atlases", nargs="+")
    p.add_argument("--out", required=True)
    p.add_argument("--filters", type=int, default=4)
    p.add_argument("--tile", type=int, default=80)
    p.add_argument("--max-kb", type=int, default=300)
    args = p.parse_args(argv)
    panels = [panel(a, args.filters, args.tile) for a in args.atlases]
    h = max(q.shape[0] for q in panels)
    gap = np.full((h, 12, 3), 255, np.uint8)
    parts = []
    for q in panels:
        q = np.pad(q, ((0, h - q.shape[0]), (0, 0), (0, 0)), constant_values=255)
        parts += [q, gap]
    picture = Image.fromarray(np.concatenate(parts[:-1], axis=1))
    buf = io.BytesIO()
    picture.save(buf, "PNG", optimize=True)
    if buf.tell() > args.max_kb * 1024:
        buf = io.BytesIO()
        picture.quantize(256, method=Image.Quantize.MEDIANCUT).save(buf, "PNG", optimize=True)
    Path(args.out).write_bytes(buf.getvalue())
    print(f"wrote {args.out}: {picture.size[0]}x{picture.size[1]} px, {buf.tell() // 1024} KB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
