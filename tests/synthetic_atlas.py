"""A small format-v2 atlas with every field filled (K=2 images, fidelity measures, an activation
matrix, dataset exemplars), written with the real writer but random contents: fast, and it shows
everything the gallery and the analysis script can draw. Not a test module (no ``test_`` name)."""

from pathlib import Path

import numpy as np

from vizjax.atlas import AtlasWriter, write_exemplars

ATTRS = {
    "model": "vgg16",
    "weights": "vgg16-torchvision",
    "weights_sha256": "0" * 64,
    "preprocessing": "{}",
}
#: layer -> (channels, done filters, K, image side)
LAYERS = {"block1_conv1": (64, 12, 2, 40), "block3_conv1": (256, 6, 1, 128)}
STEPS = 4


def make(
    path: Path,
    images_dir: Path | None = None,
    exemplars: bool = True,
    layers: dict[str, tuple[int, int, int, int]] = LAYERS,
    config: dict | None = None,
    steps: int = STEPS,
    exemplar_layer: str = "block1_conv1",
    dead: tuple[int, ...] = (1,),
) -> Path:
    """Write the atlas at ``path``; with ``exemplars``, ``exemplar_layer`` (64 channels) gets
    top-3 exemplars whose files exist under ``images_dir`` (when given). ``layers`` (written in
    their order), ``config``, ``steps`` and ``dead`` (the filters that never turn on) make another
    atlas of the same kind (e.g. one to show beside this one)."""
    rng = np.random.default_rng(0)
    with AtlasWriter(path, ATTRS, config or {"recipe": "synthetic", "steps": STEPS}) as w:
        for layer, (c, n, k, side) in layers.items():
            filters = np.arange(n)
            w.begin_layer(layer, c, filters.tolist(), (side, side), steps, k=k)
            final = rng.random((n, k)).astype(np.float32)
            final[[d for d in dead if d < n]] = 0  # these filters never turn on: dead
            w.write_chunk(
                layer,
                {
                    "filters": filters,
                    "images": rng.integers(0, 256, (n, k, side, side, 3), dtype=np.uint8),
                    "objective": np.cumsum(rng.random((n, steps + 1)), 1).astype(np.float32),
                    "final_activation": final,
                    "activation_matrix": rng.random((n, k, c)).astype(np.float32),
                    "robustness": rng.random((n, k)).astype(np.float32),
                    "hf_energy": rng.random((n, k)).astype(np.float32),
                    "zero_start_grad": filters == 2,
                },
            )
            w.finish_layer(layer)
    if exemplars:
        c, top, s = 64, 3, 16
        paths = np.array([[f"sub/{i}_{r}.png" for r in range(top)] for i in range(c)], object)
        paths[5, 2] = ""  # channel 5 has only two
        if images_dir is not None:
            for p in paths.ravel():
                if p:
                    (images_dir / p).parent.mkdir(parents=True, exist_ok=True)
                    (images_dir / p).write_bytes(b"")  # only its existence matters for a link
        write_exemplars(
            path,
            exemplar_layer,
            {
                "paths": paths,
                "activation": np.sort(rng.random((c, top)).astype(np.float32))[:, ::-1],
                "position": rng.integers(0, 40, (c, top, 2)).astype(np.int32),
                "box": rng.integers(0, 224, (c, top, 4)).astype(np.int32),
                "crops": rng.integers(0, 256, (c, top, s, s, 3), dtype=np.uint8),
            },
            {
                "images_dir": str(images_dir or "/nonexistent"),
                "listing_sha256": "ab" * 32,
                "n_images": 20,
                "n_skipped": 1,
                "top": top,
                "input_size": 224,
                "receptive_field": 3,
                "crop_size": s,
            },
        )
    return path
