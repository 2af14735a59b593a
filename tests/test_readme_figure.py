"""scripts/readme_figure.py: the README's first picture, a row per atlas over the same filters,
labelled with each tile's filter and recipe, under the size limit."""

import importlib.util
from pathlib import Path

import numpy as np
import synthetic_atlas
from PIL import Image

from vizjax import images
from vizjax.config import RunConfig
from vizjax.engine.recipe import preset

SCRIPT = Path(__file__).parent.parent / "scripts" / "readme_figure.py"


def _load_script():
    spec = importlib.util.spec_from_file_location("readme_figure", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_two_rows_of_the_same_filters_labelled_and_small(tmp_path):
    lucent = RunConfig(recipe=preset("lucent")).to_json()
    classic = RunConfig(recipe=preset("classic")).to_json()
    first = synthetic_atlas.make(tmp_path / "a.h5", exemplars=False, config=lucent, dead=(4,))
    second = synthetic_atlas.make(tmp_path / "b.h5", exemplars=False, config=classic, dead=(1,))
    script = _load_script()
    tiles, labels = script.row(str(first), "block1_conv1", [1, 4], 16)
    assert tiles.shape == (2, 16, 16, 3) and labels == ["1 lucent", "4 lucent (dead)"]
    assert script.row(str(second), "block1_conv1", [1, 4], 16)[1] == [
        "1 classic (dead)",
        "4 classic",
    ]
    out = tmp_path / "f.png"
    argv = ["--atlas", str(first), "--beside", str(second), "--layer", "block1_conv1"]
    argv += ["--filters", "0,1,4"]
    assert script.main([*argv, "--tile", "16", "--out", str(out)]) == 0
    pic = np.asarray(Image.open(out).convert("RGB"))
    assert pic.shape == (2 * (16 + images.LABEL_H + 2) + 2, 3 * (16 + 2) + 2, 3)
    small = tmp_path / "q.png"
    assert script.main([*argv, "--tile", "96", "--max-kb", "1", "--out", str(small)]) == 0
    assert Image.open(small).mode == "P"  # over the limit: palette-quantized
