"""One home per statistic: ``vizjax info``, the gallery, ``AtlasLayer.to_xarray`` and
scripts/analyse_atlas.py show the same figures of a layer (:func:`vizjax.analysis.fidelity.summarize`), and
the neighbours (:func:`vizjax.analysis.fidelity.nearest`) agree with the similarity matrix."""

import json
import math
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import synthetic_atlas

from vizjax import gallery
from vizjax.analysis import fidelity
from vizjax.atlas import open_atlas
from vizjax.cli import main

LAYER = "block1_conv1"
SCRIPT = Path(__file__).parent.parent / "scripts" / "analyse_atlas.py"


@pytest.fixture(scope="module")
def atlas(tmp_path_factory):
    path = synthetic_atlas.make(tmp_path_factory.mktemp("figures") / "a.h5", exemplars=False)
    with open_atlas(path) as a:
        figures = fidelity.summarize(a.layers[LAYER].fidelity)
    # The synthetic layer has a dead filter and measures, so the definitions matter: selectivity
    # over the live filters vs over all, medians vs means give other numbers here.
    assert figures["dead_count"] == 1 and math.isfinite(figures["selectivity"])
    return path, figures


def test_info_shows_the_figures(atlas, capsys):
    path, figures = atlas
    assert main(["info", str(path), "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)["layers"][LAYER]
    for key, value in figures.items():
        assert shown[key] == pytest.approx(value, nan_ok=True), key


def test_to_xarray_shows_the_figures(atlas):
    pytest.importorskip("xarray")
    path, figures = atlas
    with open_atlas(path) as a:
        attrs = a.layers[LAYER].to_xarray().attrs
    for key, value in figures.items():
        assert attrs[key] == pytest.approx(value, nan_ok=True), key


def test_the_gallery_shows_the_figures(atlas, tmp_path):
    path, s = atlas
    assert main(["gallery", str(path), "--out", str(tmp_path / "site"), "--quiet"]) == 0
    index = (tmp_path / "site" / "index.html").read_text()
    row = next(r for r in index.split("<tr>") if f">{LAYER}</a>" in r)
    assert f'<td class="n">{s["dead_count"]}</td>' in row
    assert f'<td class="n">{gallery._num(s["mean_final_activation"])}</td>' in row
    assert f"{100 * s['selectivity']:.0f}% selective" in row
    assert f"median specificity {gallery._num(s['median_specificity'], 3)}" in row
    assert f"median robustness {gallery._num(s['median_robustness'], 3)}" in row
    assert f"median high-frequency energy {gallery._num(s['median_hf_energy'], 3)}" in row


def test_the_analysis_script_shows_the_figures(atlas, tmp_path):
    pytest.importorskip("matplotlib")
    path, s = atlas
    out = subprocess.run(
        [sys.executable, str(SCRIPT), str(path), "--out", str(tmp_path / "plots")],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    line = next(x for x in out.splitlines() if x.startswith(f"{LAYER}:"))
    shown = {
        k.replace(" ", "_"): float(v) for k, v in re.findall(r"([a-z][a-z ]*?) ([\d.]+)", line)
    }
    assert line.startswith(f"{LAYER}: {s['done']} done, {s['dead_count']} dead")
    for key in ("selectivity", "median_specificity", "median_robustness"):
        assert shown[key] == pytest.approx(s[key], rel=1e-3), key
    assert shown["median_hf_energy"] == pytest.approx(s["median_hf_energy"], rel=1e-3)
    assert shown["mean_final_activation"] == pytest.approx(s["mean_final_activation"], rel=1e-3)


def test_nearest_is_the_similarity_matrix_ranked(atlas):
    path, _ = atlas
    with open_atlas(path) as a:
        layer = a.layers[LAYER]
        matrix, done = layer.activation_matrix, layer.completed()
        sim = fidelity.similarity(matrix, done)
        for i, f in enumerate(done):
            near = layer.nearest(int(f), 3)
            ranked = [int(done[j]) for j in np.argsort(-sim[i], kind="stable") if j != i][:3]
            assert [g for g, _ in near] == ranked
            np.testing.assert_allclose([v for _, v in near], np.sort(sim[i])[::-1][1:4])
    # A channel that never responds has no neighbours and is nobody's.
    m = np.ones((5, 1, 3))
    m[:, 0, 2] = 0
    m[:, 0, 1] = np.arange(5)
    assert fidelity.nearest(m, np.arange(3), 2) == []
    assert [g for g, _ in fidelity.nearest(m, np.arange(3), 0)] == [1]
