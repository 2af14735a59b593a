"""scripts/models_figure.py: two atlases side by side, a row per layer, under the size limit."""

import importlib.util
from pathlib import Path

import numpy as np
import synthetic_atlas
from PIL import Image

from vizjax import images

SCRIPT = Path(__file__).parent.parent / "scripts" / "models_figure.py"


def _load_script():
    spec = importlib.util.spec_from_file_location("models_figure", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_two_panels_a_row_per_layer_and_quantized_when_too_big(tmp_path):
    atlas = synthetic_atlas.make(tmp_path / "a.h5", exemplars=False)
    script = _load_script()
    one = script.panel(str(atlas), 3, 16)
    rows = len(synthetic_atlas.LAYERS)
    # images.grid: per row a tile, its label strip and 2 px of padding.
    assert one.shape == (rows * (16 + images.LABEL_H + 2) + 2, 3 * (16 + 2) + 2, 3)
    out = tmp_path / "f.png"
    argv = [str(atlas), str(atlas), "--out", str(out), "--tile", "16", "--filters", "3"]
    assert script.main(argv) == 0
    pic = np.asarray(Image.open(out).convert("RGB"))
    assert pic.shape == (one.shape[0], 2 * one.shape[1] + 12, 3)
    np.testing.assert_array_equal(pic[:, : one.shape[1]], one)  # lossless while small
    small = tmp_path / "q.png"
    args = [str(atlas), "--out", str(small), "--tile", "64", "--max-kb", "1"]
    assert script.main(args) == 0
    assert Image.open(small).mode == "P"  # over the limit: palette-quantized
