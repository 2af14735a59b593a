"""Models whose input is not RGB, through everything: a one-channel (grayscale) and a four-channel
(multispectral) Flax CNN, written here, made into atlases from the command line (``--model
tests/test_channels.py:gray``) and read back (open_atlas, plain h5py, to_xarray), shown (info,
grid, the gallery), measured (fidelity), resumed, refused (merge and resume across channel
counts), and given dataset exemplars (grayscale: the photos' luminance; four channels: refused).
"""

from __future__ import annotations

import contextlib
import io
import json
import re
import shutil
import sys
from pathlib import Path

import flax.linen as nn
import h5py
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

import vizjax
from vizjax import gallery
from vizjax.analysis import exemplars
from vizjax.cli import main
from vizjax.engine import ascent, transform
from vizjax.errors import AtlasError, VizjaxError
from vizjax.models import loader
from vizjax.models.flax_model import from_flax
from vizjax.models.generic import check_preprocessing
from vizjax.models.network import parse_preprocessing

TESTS = Path(__file__).resolve().parent
MODELS_PAGE = TESTS.parent / "docs" / "pages" / "models.md"
sys.path.insert(0, str(TESTS))
from bad_input import assert_refused, run_cli  # noqa: E402

HERE = str(Path(__file__).resolve())
LAYER = "conv2"
#: ``--preprocess`` of each model: one mean/std value for the grayscale one, one per channel for
#: the four-channel one (the explicit form's ``/``-joined values).
GRAY_PREP = "mean=0.5,std=0.25,scale=255"
BANDS_PREP = "mean=0.1/0.2/0.3/0.4,std=0.25/0.25/0.5/0.5,scale=255"
STEPS = ["--size", "16", "--steps", "2", "--recipe", "classic", "--quiet"]


class Tiny(nn.Module):
    """Two 3x3 convolutions with a pool between: ``conv1`` (4 filters), ``conv2`` (6 filters)."""

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        x = nn.relu(nn.Conv(4, (3, 3), name="conv1")(x))
        x = nn.max_pool(x, (2, 2), (2, 2))
        return nn.relu(nn.Conv(6, (3, 3), name="conv2")(x))


def _model(channels: int, input_size: int | None = None) -> vizjax.GenericModel:
    module = Tiny()
    variables = module.init(jax.random.key(channels), jnp.zeros((1, 16, 16, channels)))
    return from_flax(
        module, variables, channels=channels, input_size=input_size, name=f"flax:tiny{channels}"
    )


def gray() -> vizjax.GenericModel:
    """The grayscale model (a factory for ``--model tests/test_channels.py:gray``)."""
    return _model(1)


def bands() -> vizjax.GenericModel:
    """The four-channel (multispectral) model."""
    return _model(4)


def _atlas(out: Path, factory: str, prep: str, filters: str) -> list[str]:
    return [
        *("atlas", "--model", f"{HERE}:{factory}", "--preprocess", prep, "--layer", LAYER),
        *("--filters", filters, "--out", str(out), *STEPS),
    ]


@pytest.fixture(scope="module")
def atlases(tmp_path_factory):
    """``{1: gray atlas, 4: four-channel atlas}``, each of filters 0:2 of conv2, from the CLI."""
    d = tmp_path_factory.mktemp("channels")
    out = {1: d / "gray.h5", 4: d / "bands.h5"}
    for c, (factory, prep) in {1: ("gray", GRAY_PREP), 4: ("bands", BANDS_PREP)}.items():
        rc, err = run_cli(_atlas(out[c], factory, prep, "0:2"))
        assert rc == 0, err
    return out


def _copy(atlas: Path, folder: Path) -> Path:
    """A copy of ``atlas`` (index and data folder) in ``folder``."""
    folder.mkdir(exist_ok=True)
    shutil.copy(atlas, folder / atlas.name)
    data = vizjax.atlas.data_dir(atlas)
    shutil.copytree(data, folder / data.name)
    return folder / atlas.name


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """Four random 24x20 RGB 'photos' (the scan squares them to 16 px)."""
    d = tmp_path_factory.mktemp("photos")
    rng = np.random.default_rng(0)
    for i in range(4):
        Image.fromarray(rng.integers(0, 256, (24, 20, 3), dtype=np.uint8)).save(d / f"{i}.png")
    return d


def test_preprocessing_takes_one_value_or_one_per_channel():
    prep = parse_preprocessing(BANDS_PREP)
    assert prep.mean == (0.1, 0.2, 0.3, 0.4) and prep.std == (0.25, 0.25, 0.5, 0.5)
    check_preprocessing(prep, 4, "bands")
    check_preprocessing(parse_preprocessing(GRAY_PREP), 4, "bands")  # one value: every channel
    x = jnp.full((1, 2, 2, 4), 255.0)
    np.testing.assert_allclose(prep(x)[0, 0, 0], [3.6, 3.2, 1.4, 1.2], rtol=1e-6)
    for bad, channels, what in (("torch", 4, "3 mean values"), ("mean=0,bgr=1", 1, "BGR")):
        with pytest.raises(VizjaxError, match=what) as e:
            check_preprocessing(parse_preprocessing(bad), channels, "net")
        assert "\n" not in str(e.value)


def test_the_atlas_stores_the_models_channels(atlases):
    for c, path in atlases.items():
        with vizjax.open_atlas(path) as a:
            layer = a.layers[LAYER]
            assert layer.image_channels == c and list(layer.filters) == [0, 1]
            assert layer.images.shape == (2, 1, 16, 16, c) and layer.images.dtype == np.uint8
            assert layer.raw.shape == (2, 1, 16, 16, c) and np.isfinite(layer.raw[...]).all()
            assert layer.image(1).shape == (16, 16, c)
            assert a.config["channels"] == c and a.attrs["model"] == f"flax:tiny{c}"
            ds = layer.to_xarray()
            assert ds.sizes["band"] == c and "rgb" not in ds.sizes
            assert ds.images.dims == ("filter", "k", "y", "x", "band")
            assert ds.attrs["image_channels"] == c
        with h5py.File(path, "r") as f:  # plain h5py: the virtual datasets have the channels
            g = f[f"layers/{LAYER}"]
            assert g.attrs["image_channels"] == c
            assert g["images"].shape == (2, 1, 16, 16, c) and g["raw"][...].shape[-1] == c


def test_the_run_measured_every_image(atlases):
    for path in atlases.values():
        with vizjax.open_atlas(path) as a:
            layer = a.layers[LAYER]
            assert np.isfinite(layer.hf_energy[...]).all()
            assert np.isfinite(layer.activation_matrix).all()
            assert layer.activation_matrix.shape == (2, 1, 6)
            live = ~layer.dead[...]
            assert np.isfinite(layer.robustness[...][live]).all()


def test_fidelity_is_recomputed_on_every_channel(atlases, tmp_path):
    for c, factory in ((1, gray), (4, bands)):
        path = _copy(atlases[c], tmp_path / str(c))
        with vizjax.open_atlas(path) as a:
            before = {k: np.array(v) for k, v in a.layers[LAYER].fidelity.items()}
        summary = vizjax.run.measure_atlas(path, force=True, quiet=True, model=factory())
        assert summary["layers"][LAYER]["measured"] == 2
        with vizjax.open_atlas(path) as a:
            after = a.layers[LAYER].fidelity
        for key in ("hf_energy", "robustness", "final_activation"):
            np.testing.assert_allclose(after[key], before[key], rtol=1e-4, err_msg=key)
    with pytest.raises(VizjaxError, match="takes 4 input channel.*made with a 1-channel model"):
        vizjax.run.measure_atlas(atlases[1], quiet=True, model=bands())


def test_info_grid_and_gallery_say_how_the_channels_are_pictured(atlases, tmp_path, capsys):
    for c, mode, view in ((1, "L", "grayscale"), (4, "RGB", "channels 0, 1, 2 of 4 as RGB")):
        path = atlases[c]
        assert main(["info", str(path)]) == 0
        assert f"images of {c} channel(s), pictured as {view}" in capsys.readouterr().out
        assert main(["info", str(path), "--json"]) == 0
        layer = json.loads(capsys.readouterr().out)["layers"][LAYER]
        assert layer["image_channels"] == c and layer["picture"] == view
        png = tmp_path / f"grid{c}.png"
        assert main(["grid", str(path), "--layer", LAYER, "--out", str(png)]) == 0
        with Image.open(png) as im:
            assert im.mode == mode and im.size[0] > 2 * 16
        site = tmp_path / f"site{c}"
        index = gallery.write_site(path, site)
        text = (site / LAYER / "index.html").read_text()
        assert f"pictured as {view}" in text and f"pictured as {view}" in index.read_text()
        with Image.open(site / LAYER / "img" / "0_0.png") as im:
            assert im.mode == mode and im.size == (16, 16)
        for page in site.rglob("*.html"):
            for _, url in gallery.page_links(page):
                assert gallery.resolve(page, url).is_file(), (page, url)
    capsys.readouterr()


def test_render_and_a_start_photo_for_other_channel_counts(tmp_path):
    png = tmp_path / "r.png"
    argv = ["render", "--model", f"{HERE}:gray", "--preprocess", GRAY_PREP, "--layer", LAYER]
    assert main([*argv, "--filter", "1", *STEPS[:-1], "--out", str(png)]) == 0
    with Image.open(png) as im:
        assert im.mode == "L" and im.size == (16, 16)
    cat = vizjax.images.sample_path()
    recipe = vizjax.preset("classic").replace(size=(16, 16), init=str(cat))
    x0, _ = vizjax.run.start_image(recipe, gray())
    assert x0.shape == (16, 16, 1)  # the photo's luminance
    with pytest.raises(VizjaxError, match="a start photo is RGB; flax:tiny4 takes 4 channels"):
        vizjax.run.start_image(recipe, bands())


def test_resume_adds_filters_and_refuses_another_channel_count(atlases, tmp_path):
    path = _copy(atlases[1], tmp_path)
    with vizjax.open_atlas(path) as a:
        first = np.array(a.layers[LAYER].images)
    rc, err = run_cli(_atlas(path, "gray", GRAY_PREP, "0:3"))
    assert rc == 0, err
    with vizjax.open_atlas(path) as a:
        layer = a.layers[LAYER]
        assert list(layer.filters) == [0, 1, 2] and layer.image_channels == 1
        np.testing.assert_array_equal(layer.images[:2], first)
    line = assert_refused(_atlas(path, "bands", GRAY_PREP, "0:2"), tmp_path, "channels 1")
    assert "refusing to mix runs" in line and "4 now" in line


def test_merge_refuses_atlases_of_other_channel_counts(atlases, tmp_path):
    a = _copy(atlases[1], tmp_path / "a")
    b = _copy(atlases[4], tmp_path / "b")
    with pytest.raises(AtlasError, match="cannot merge .*channels 4 in bands.h5, 1 in gray.h5"):
        vizjax.merge_atlases(tmp_path / "m.h5", [a, b])
    assert not (tmp_path / "m.h5").exists()
    line = assert_refused(["merge", str(tmp_path / "m.h5"), str(a), str(b)], tmp_path, "channels")
    assert "\n" not in line


def test_exemplars_of_a_grayscale_model_see_the_photos_luminance(atlases, photos, tmp_path):
    path = _copy(atlases[1], tmp_path)
    s = exemplars.run_exemplars(
        path, photos, top=2, input_size=16, crop_size=8, quiet=True, model=gray()
    )
    assert s["n_images"] == 4 and s["layers"] == [LAYER]
    with vizjax.open_atlas(path) as a:
        ex = a.layers[LAYER].exemplars(0)
    assert len(ex["paths"]) == 2 and ex["crops"].shape == (2, 8, 8, 3)
    crops = ex["crops"].astype(int)
    assert (crops[..., 0] == crops[..., 1]).all() and (crops[..., 1] == crops[..., 2]).all()
    # The stored activation is the model's on the square's luminance.
    model = gray()
    square = vizjax.images.load_square(photos / ex["paths"][0], 16, channels=1)
    x = parse_preprocessing(GRAY_PREP)(jnp.asarray(square, jnp.float32)[None])
    acts = model.apply(model.params, x, (LAYER,))[LAYER][0]
    assert float(jnp.mean(acts[..., 0])) == pytest.approx(float(ex["activation"][0]), rel=2e-2)


def test_exemplars_refuse_other_channel_counts_before_writing(atlases, photos, tmp_path):
    path = _copy(atlases[4], tmp_path)
    argv = ["exemplars", str(path), "--images", str(photos), "--input-size", "16"]
    line = assert_refused([*argv, "--model", f"{HERE}:bands", "--quiet"], tmp_path, "4-channel")
    assert "a photo cannot give" in line
    assert sorted(p.name for p in vizjax.atlas.data_dir(path).iterdir()) == sorted(
        p.name for p in vizjax.atlas.data_dir(atlases[4]).iterdir()
    )


def test_visualize_runs_a_fixed_size_model_at_its_size():
    model = _model(1, input_size=20)
    recipe = vizjax.preset("classic").replace(steps=1)  # no size given
    res = vizjax.visualize(LAYER, [0], recipe, model, parse_preprocessing(GRAY_PREP))
    assert res.images.shape == (1, 1, 20, 20, 1) and res.raw.shape == (1, 1, 20, 20, 1)
    # With pads and jitters the start image is sized so that the views are 20x20.
    lucent = vizjax.preset("lucent")
    start = ascent.noise_image(lucent, 1, 20)
    assert transform.out_hw(lucent.transforms, start.shape[:2]) == (20, 20)
    assert start.shape[2] == 1


@pytest.mark.parametrize("channels", [1, 4])
def test_every_presets_transforms_keep_the_channels(channels):
    """The views (and modifiers) of every recipe have the model's channels: MACO's crop noise,
    drawn per RGB pixel, gives channel c the draw of c mod 3."""
    image = jnp.full((24, 24, channels), 127.0)
    for name in vizjax.PRESETS:
        r = vizjax.preset(name)
        for chain in (r.transforms, r.modifiers):
            if not chain:
                continue
            u = transform.sample(chain, jax.random.key(0), (24, 24))
            views = transform.apply(chain, u, image)
            assert views.shape[-1] == channels and views.ndim == 4, name


def test_an_atlas_that_does_not_record_channels_is_rgb(tmp_path):
    """Atlases written before the channels were recorded (no ``image_channels``) read and resume
    as RGB."""
    path = tmp_path / "old.h5"
    attrs = {"model": "m", "weights": "w", "weights_sha256": "s", "preprocessing": "{}"}
    rgb = np.zeros((2, 1, 4, 4, 3), np.uint8)
    with vizjax.atlas.AtlasWriter(path, attrs, {"recipe": {}}) as w:
        w.begin_layer("l", 3, [0, 1], (4, 4), 2)
        w.write_chunk("l", {"filters": np.array([0, 1]), "images": rgb})
    for f in [path, *vizjax.atlas.data_dir(path).glob("l.*.h5")]:
        with h5py.File(f, "r+") as h:
            g = h["layers/l"] if "layers" in h else h
            del g.attrs["image_channels"]
    with vizjax.open_atlas(path) as a:
        assert a.layers["l"].image_channels == 3 and a.layers["l"].images.shape[-1] == 3
    with vizjax.atlas.AtlasWriter(path, attrs, {"recipe": {}}) as w:
        assert w.begin_layer("l", 3, [0, 1, 2], (4, 4), 2) == [2]
        with pytest.raises(AtlasError, match="4x4 images.*4x4 1-channel images"):
            w.begin_layer("l", 3, [0], (4, 4), 2, channels=1)


def test_loader_reads_the_factories_here():
    assert loader.load(f"{HERE}:gray").channels == 1
    assert loader.load(f"{HERE}:bands").channels == 4


def test_the_models_page_example_runs_as_written(tmp_path, monkeypatch):
    """docs/pages/models.md's "Inputs other than RGB" Python block, run as written; it prints
    what its comments say."""
    text = MODELS_PAGE.read_text(encoding="utf-8")
    section = text[text.index("## Inputs other than RGB") :]
    [code] = re.findall(r"```python\n(.*?)```", section, re.S)
    monkeypatch.chdir(tmp_path)
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        exec(compile(code, "models.md", "exec"), {"__name__": "models_md"})  # noqa: S102
    assert printed.getvalue().splitlines() == ["(4, 1, 32, 32, 1)", "1 (4, 1, 32, 32, 1)", "L"]
