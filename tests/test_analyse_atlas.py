"""scripts/analyse_atlas.py, the example downstream analysis: it runs on a small atlas with every
measure and on a format v1 atlas without any, and its clustering groups filters that respond alike."""

import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import synthetic_atlas
from PIL import Image

SCRIPT = Path(__file__).parent.parent / "scripts" / "analyse_atlas.py"
V1_ATLAS = Path(__file__).parent / "data" / "atlas-v1.h5"

pytest.importorskip("matplotlib", reason="matplotlib is not installed (pip install -e .[test])")


def _load_script():
    spec = importlib.util.spec_from_file_location("analyse_atlas", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _plot_ok(path: Path) -> None:
    with Image.open(path) as im:
        a = np.asarray(im.convert("RGB"))
    assert a.shape[0] > 200 and a.shape[1] > 300
    assert len(np.unique(a.reshape(-1, 3), axis=0)) > 20  # a drawing, not a blank canvas


def _run(atlas: Path, out: Path) -> str:
    done = subprocess.run(
        [sys.executable, str(SCRIPT), str(atlas), "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


# Slow (scripts/test.sh --all, CI): tests/test_summary.py runs the script on a real atlas by default.
@pytest.mark.slow
def test_plots_of_an_atlas_with_every_measure(tmp_path):
    atlas = synthetic_atlas.make(tmp_path / "a.h5", exemplars=False)
    _run(atlas, tmp_path / "plots")
    names = sorted(p.name for p in (tmp_path / "plots").iterdir())
    layers = [f"similarity_{layer}.png" for layer in synthetic_atlas.LAYERS]
    assert names == sorted(
        ["objective_curves.png", "final_activation.png", "robustness.png", *layers]
    )
    for name in names:
        _plot_ok(tmp_path / "plots" / name)


@pytest.mark.slow  # as above
def test_plots_of_a_v1_atlas_skip_what_it_lacks(tmp_path):
    if not V1_ATLAS.exists():
        pytest.skip(f"{V1_ATLAS} is not in this checkout")
    shutil.copy(V1_ATLAS, tmp_path / "v1.h5")
    stdout = _run(tmp_path / "v1.h5", tmp_path / "plots")
    assert "robustness: not measured" in stdout and "no similarity heatmap" in stdout
    names = sorted(p.name for p in (tmp_path / "plots").iterdir())
    assert names == ["final_activation.png", "objective_curves.png"]
    for name in names:
        _plot_ok(tmp_path / "plots" / name)


def test_clustering_puts_filters_that_respond_alike_side_by_side():
    mod = _load_script()
    rng = np.random.default_rng(0)
    # Two groups of channels, each a noisy copy of its own response pattern over 40 images.
    base = rng.random((2, 40))
    group = np.array([0, 1, 0, 1, 1, 0, 0, 1])
    a = (base[group].T + 0.05 * rng.random((40, 8)))[:, None, :]  # (images, K=1, channels)
    sim = mod.similarity(a, np.arange(8))
    np.testing.assert_allclose(np.diag(sim), 1.0, rtol=1e-12)
    order = mod.cluster_order(sim)
    labels = group[order]
    assert sorted(order.tolist()) == list(range(8))
    assert np.count_nonzero(np.diff(labels)) == 1  # one block of each group
