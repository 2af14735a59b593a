"""Keras models through the engine, end to end (slow): networks nobody here wrote.

- Keras' own ``keras.applications.VGG16`` architecture carrying vizjax's VGG16 weights, saved as
  ``.keras``: its classic pictures equal the built-in VGG16's on the same filters from the same
  start, to float tolerance, through the Python API and through ``vizjax atlas --model
  vgg16.keras --preprocess torch``. This ties the Keras adapter to everything the built-in is
  checked against.
- ``keras.applications.ResNet50(weights=None)`` (no top, a fixed 64 px input; it builds offline),
  saved as ``.keras``: ``vizjax layers``, an atlas of every channel of the stage output
  ``conv2_block3_out`` with its measures, a gallery page, the measures recomputed and the
  dataset exemplars.
- The README's Keras example (README.md and docs/pages/models.md, "Your own model"):
  tests/data/keras_example.py, run as written.
"""

from __future__ import annotations

import contextlib
import io
import runpy
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from test_keras_model import keras_vgg16

import vizjax
from vizjax import gallery
from vizjax.analysis import exemplars
from vizjax.cli import main
from vizjax.engine.ascent import visualize
from vizjax.engine.execution import Execution
from vizjax.engine.recipe import preset
from vizjax.models.keras_model import from_keras, keras_module
from vizjax.models.network import CAFFE, TORCH

pytestmark = pytest.mark.slow

TESTS = Path(__file__).resolve().parent
#: The comparison: the seed recipe, 4 steps at 64 px, a few filters of a shallow and a deeper layer.
CLASSIC = preset("classic").replace(steps=4, size=(64, 64))
FILTERS = {"block1_conv2": [0, 5, 17], "block3_conv1": [0, 100, 255]}
STAGE = "conv2_block3_out"


def cli(argv: list[str]) -> str:
    """``vizjax ARGV`` in-process; its stdout (the exit status must be 0)."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        rc = main([str(a) for a in argv])
    assert rc == 0, (argv, out.getvalue())
    return out.getvalue()


@pytest.fixture(scope="module")
def vgg16_file(tmp_path_factory, default_weights):
    path = tmp_path_factory.mktemp("keras") / "vgg16.keras"
    keras_vgg16(default_weights.params).save(path)
    return path


@pytest.mark.parametrize("conv", ["xla", "auto"])
@pytest.mark.parametrize("layer", list(FILTERS))
def test_keras_vgg16_classic_pictures_equal_the_builtin(vgg16_file, default_weights, layer, conv):
    """Same start (N(127, 10), seed 0), same RMS-normalized steps: the same pictures. With
    ``conv="xla"`` both run XLA's convolution; ``"auto"`` (the CPU default) lets the built-in use
    Winograd on blocks 2-5, which rounds differently."""
    model = from_keras(vgg16_file, preprocessing=TORCH)
    ex = Execution(conv=conv)
    builtin = visualize(layer, FILTERS[layer], CLASSIC, default_weights.params, TORCH, execution=ex)
    keras = visualize(layer, FILTERS[layer], CLASSIC, model, TORCH, execution=ex)
    np.testing.assert_array_equal(keras.filters, builtin.filters)
    # Measured (2 shared CPU cores, the tests' XLA flags): xla 0.0 for both layers; auto 0.0 at
    # block1_conv2 and ~0.04 of 255 at block3_conv1 (Winograd's rounding, grown by 4 steps).
    atol = 1e-3 if conv == "xla" else 0.25
    scale = float(np.nanmax(np.abs(builtin.objective)))
    np.testing.assert_allclose(keras.objective, builtin.objective, rtol=1e-3, atol=1e-5 * scale)
    np.testing.assert_allclose(keras.raw, builtin.raw, rtol=0, atol=atol)  # 0-255 pixel units
    assert np.abs(keras.images.astype(int) - builtin.images.astype(int)).max() <= 1


def test_keras_vgg16_atlas_through_the_cli_equals_the_builtin(vgg16_file, tmp_path):
    common = ["--recipe", "classic", "--steps", "4", "--size", "64", "--quiet"]
    for layer in FILTERS:
        common += ["--layer", layer]
    common += ["--filters", "0,5,17"]
    cli(
        [
            "atlas",
            "--model",
            vgg16_file,
            "--preprocess",
            "torch",
            *common,
            "--out",
            tmp_path / "k.h5",
        ]
    )
    cli(["atlas", *common, "--out", tmp_path / "b.h5"])  # the built-in VGG16, its default weights
    with vizjax.open_atlas(tmp_path / "k.h5") as k, vizjax.open_atlas(tmp_path / "b.h5") as b:
        assert k.attrs["model"] == "keras:vgg16" and k.attrs["model_kind"] == "keras"
        for layer in FILTERS:
            kl, bl = k.layers[layer], b.layers[layer]
            np.testing.assert_array_equal(kl.filters, bl.filters)
            np.testing.assert_allclose(np.asarray(kl.raw), np.asarray(bl.raw), rtol=0, atol=0.25)
            np.testing.assert_allclose(
                np.asarray(kl.objective), np.asarray(bl.objective), rtol=1e-3, atol=1e-4
            )


@pytest.fixture(scope="module")
def resnet50_file(tmp_path_factory):
    keras = keras_module()
    net = keras.applications.ResNet50(weights=None, include_top=False, input_shape=(64, 64, 3))
    path = tmp_path_factory.mktemp("keras") / "resnet50.keras"
    net.save(path)
    return path


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """Five random 'photos' and the shipped cat (the scan squares them to 64 px)."""
    d = tmp_path_factory.mktemp("photos")
    rng = np.random.default_rng(0)
    for i in range(5):
        Image.fromarray(rng.integers(0, 256, (72, 90, 3), dtype=np.uint8)).save(d / f"{i}.png")
    shutil.copy(Path(vizjax.__file__).parent / "data" / "chelsea.png", d / "cat.png")
    return d


def test_resnet50_stage_atlas_measures_gallery_and_exemplars(resnet50_file, photos, tmp_path):
    listing = cli(["layers", "--model", resnet50_file])
    rows = {line.split()[0]: line.split()[1:] for line in listing.splitlines()[3:] if line.strip()}
    assert "".join(rows[STAGE]) == "(16,16,256)256"  # at its fixed 64 px input
    out = tmp_path / "resnet50.h5"
    argv = ["atlas", "--model", resnet50_file, "--preprocess", "caffe", "--layer", STAGE]
    cli([*argv, "--steps", "2", "--out", out, "--quiet"])  # default recipe, every channel
    with vizjax.open_atlas(out) as a:
        assert a.attrs["model"] == "keras:resnet50" and a.attrs["model_kind"] == "keras"
        layer = a.layers[STAGE]
        assert sorted(layer.filters) == list(range(256))
        assert layer.images.shape == (256, 1, 64, 64, 3)
        table = {k: np.asarray(v) for k, v in layer.fidelity.items()}
    assert len(table["filter"]) == 256
    assert np.isfinite(table["hf_energy"]).all()
    # robustness is a ratio to the activation: undefined (NaN) for the few dead filters only
    assert np.isfinite(table["robustness"][~table["dead"]]).all() and table["dead"].mean() < 0.1
    # The measures again, with the model (the atlas says which: other weights are refused).
    model = from_keras(resnet50_file, preprocessing=CAFFE)
    summary = vizjax.run.measure_atlas(out, force=True, quiet=True, model=model)
    assert summary["layers"][STAGE]["measured"] == 256
    with vizjax.open_atlas(out) as a:
        again = a.layers[STAGE].fidelity
        np.testing.assert_allclose(again["hf_energy"], table["hf_energy"], rtol=1e-4)
    # A gallery page of the layer, every link inside the site.
    site = tmp_path / "site"
    cli(["gallery", out, "--out", site])
    pages = list(site.rglob("*.html"))
    assert (site / "index.html").is_file() and len(pages) >= 258  # index, layer, 256 filters
    for page in pages[:20]:
        for _, url in gallery.page_links(page):
            assert gallery.resolve(page, url).is_file(), (page, url)
    # Dataset exemplars: the images that drive each channel most, cropped to its field.
    s = exemplars.run_exemplars(
        out, photos, top=3, input_size=64, crop_size=16, quiet=True, model=model
    )
    assert s["n_images"] == 6 and s["layers"] == [STAGE]
    with vizjax.open_atlas(out) as a:
        ex = a.layers[STAGE].exemplars(7)
    assert len(ex["paths"]) == 3 and ex["crops"].shape == (3, 16, 16, 3)


def test_the_readme_keras_example_runs_as_written(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    runpy.run_path(str(TESTS / "data" / "keras_example.py"), run_name="__main__")
    out = capsys.readouterr().out
    assert "174 ('conv1_pad', 'conv1_conv', 'conv1_bn')" in out
    assert "(16, 16, 256)" in out and "(4, 1, 64, 64, 3)" in out
    assert "['conv2_block3_out']" in out and (tmp_path / "resnet50.h5").is_file()
