"""Everything after the run, on atlases of networks vizjax did not write (tests/flax_nets.py): ``vizjax
info``, ``grid``, the gallery, ``to_xarray``, the fidelity measures recomputed with the model, and
dataset exemplars of a residual stage's maps (cropped to the measured receptive field) and of a
ViT's token layer (the most active token, cropped to its measured box)."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

import vizjax
from vizjax import gallery, images
from vizjax.analysis import exemplars
from vizjax.cli import main
from vizjax.errors import VizjaxError
from vizjax.models import loader, receptive_field
from vizjax.models.network import TORCH, ReceptiveField

TESTS = Path(__file__).resolve().parent
sys.path.insert(0, str(TESTS))
import flax_nets  # noqa: E402

NETS = str(TESTS / "flax_nets.py")
#: A residual block, named by its module path (a "/" in a layer name).
LAYER = "Stage_1/Block_0"


@pytest.fixture(scope="module")
def resnet():
    return loader.load(f"{NETS}:resnet")


@pytest.fixture(scope="module")
def resnet_atlas(tmp_path_factory, resnet):
    out = tmp_path_factory.mktemp("generic") / "resnet.h5"
    recipe = vizjax.preset("classic").replace(size=(32, 32), steps=2)
    vizjax.run_atlas(out, [LAYER], "0:3", recipe, resnet, quiet=True)
    return out


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """Six random 40x40 'photos' (the scan squares them to 32 px)."""
    d = tmp_path_factory.mktemp("photos")
    rng = np.random.default_rng(0)
    for i in range(6):
        Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(d / f"{i}.png")
    return d


def test_info_grid_gallery_and_xarray(resnet_atlas, tmp_path, capsys):
    assert main(["info", str(resnet_atlas)]) == 0
    out = capsys.readouterr().out
    assert LAYER in out and "flax:flax_nets:resnet" in out
    png = tmp_path / "grid.png"
    grid = ["grid", str(resnet_atlas), "--layer", LAYER, "--filters", "0:3"]
    assert main([*grid, "--out", str(png)]) == 0
    assert Image.open(png).size[0] > 32
    site = tmp_path / "site"
    gallery.write_site(resnet_atlas, site)
    for page in site.rglob("*.html"):
        for _, url in gallery.page_links(page):
            target = gallery.resolve(page, url)
            assert target.is_file() and target.is_relative_to(site.resolve()), (page, url)
    with vizjax.open_atlas(resnet_atlas) as a:
        ds = a.layers[LAYER].to_xarray()
    assert ds.sizes["filter"] == 3 and ds.sizes["channel"] == 16 and ds.attrs["layer"] == LAYER


def test_fidelity_is_recomputed_with_the_model_it_was_made_with(resnet_atlas, tmp_path, resnet):
    path = tmp_path / "copy.h5"
    shutil.copy(resnet_atlas, path)
    folder = vizjax.atlas.data_dir(resnet_atlas)
    shutil.copytree(folder, tmp_path / folder.name)
    with vizjax.open_atlas(path) as a:
        before = {k: np.array(v) for k, v in a.layers[LAYER].fidelity.items()}
    with pytest.raises(VizjaxError, match="give the same model with --model"):
        vizjax.run.measure_atlas(path, quiet=True)
    other = loader.load(f"{NETS}:resnet_other_weights")
    with pytest.raises(VizjaxError, match="other weights"):
        vizjax.run.measure_atlas(path, quiet=True, model=other)
    summary = vizjax.run.measure_atlas(path, force=True, quiet=True, model=resnet)
    assert summary["layers"][LAYER]["measured"] == 3
    with vizjax.open_atlas(path) as a:
        after = a.layers[LAYER].fidelity
        assert a.attrs["model_kind"] == "flax"  # the identity survives the rewrite
    for key in ("filter", "hf_energy", "robustness", "final_activation"):
        np.testing.assert_allclose(after[key], before[key], rtol=1e-4, err_msg=key)


def test_exemplars_of_a_residual_stage_use_the_measured_field(resnet_atlas, photos, resnet):
    with pytest.raises(VizjaxError, match="give the same model with --model"):
        exemplars.run_exemplars(resnet_atlas, photos, input_size=32, quiet=True)
    s = exemplars.run_exemplars(
        resnet_atlas, photos, top=2, input_size=32, crop_size=8, quiet=True, model=resnet
    )
    assert s["n_images"] == 6 and s["layers"] == [LAYER]
    units = exemplars.Units.of(resnet, LAYER, 32)
    with vizjax.open_atlas(resnet_atlas) as a:
        layer = a.layers[LAYER]
        assert layer.exemplar_attrs["receptive_field"] == units.field > 1
        ex = layer.exemplars(3)
    # The top image's stored activation is channel 3's mean over the grid, as the model gives it.
    square = images.load_square(photos / ex["paths"][0], 32)
    x = TORCH(jnp.asarray(square, jnp.float32)[None])
    acts = resnet.apply(resnet.params, x, (LAYER,))[LAYER][0]
    assert float(jnp.mean(acts[..., 3])) == pytest.approx(float(ex["activation"][0]), rel=2e-2)
    for pos, box in zip(ex["position"], ex["box"], strict=True):
        assert tuple(box) == units.box(int(pos[0]), int(pos[1]))


def test_measured_fields_of_the_resnet_match_a_hand_count(resnet):
    # 3x3 stem (3 px), two 3x3 convs per block (+4 each at jump 1); Stage_1 opens with a stride-2
    # 3x3 conv (+2, jump 2) whose 'SAME' padding on an even input is (0, 1): offset unchanged.
    want = {
        "Stage_0/Block_0": ReceptiveField(7, 1, -3),
        "Stage_0": ReceptiveField(11, 1, -5),
        LAYER: ReceptiveField(17, 2, -7),
        "Stage_1": ReceptiveField(25, 2, -11),
    }
    for name, rf in want.items():
        units = exemplars.Units.of(resnet, name, 32)
        assert units.rf == rf and units.field == rf.size, name


@pytest.mark.slow
def test_exemplars_of_a_token_layer_are_its_most_active_tokens(photos):
    vit = flax_nets.vit_model()
    layer = "EncoderBlock_0/MlpIn"
    result = exemplars.scan(photos, [layer], vit, vit.preprocessing, top=2, input_size=32)
    t = result.top[layer]
    assert t.activation.shape == (32, 2) and (t.position[..., 0] == 0).all()
    assert (t.position[..., 1] < 16).all()  # a token index of the 16 tokens
    arrays = exemplars.cut_crops(result, crop_size=8)[layer]

    def layer_of(x):
        return vit.apply(vit.params, x[None], (layer,))[layer][0]

    boxes = receptive_field.token_boxes(layer_of, 32)
    for ch in range(0, 32, 7):
        for r in range(2):
            assert tuple(arrays["box"][ch, r]) == tuple(boxes[t.position[ch, r, 1]])
    # The activation ranks by the channel's mean over the tokens (the channel objective's).
    square = images.load_square(photos / arrays["paths"][5, 0], 32)
    acts = vit.apply(
        vit.params, vit.preprocessing(jnp.asarray(square, jnp.float32)[None]), (layer,)
    )
    assert float(jnp.mean(acts[layer][0, :, 5])) == pytest.approx(
        float(arrays["activation"][5, 0]), rel=2e-2
    )
    jax.clear_caches()


def test_fidelity_and_exemplars_from_the_command_line_take_the_model(
    resnet_atlas, photos, tmp_path, capsys
):
    """`vizjax fidelity --model` and `vizjax exemplars --model` on a generic atlas; without it, or
    with a built-in name, one line and nothing written."""
    path = tmp_path / "cli.h5"
    shutil.copy(resnet_atlas, path)
    folder = vizjax.atlas.data_dir(resnet_atlas)
    shutil.copytree(folder, tmp_path / folder.name)
    before = sorted(p.name for p in tmp_path.rglob("*"))
    assert main(["fidelity", str(path), "--force", "--quiet"]) == 2
    assert "give the same model with --model" in capsys.readouterr().err
    assert main(["fidelity", str(path), "--model", "vgg16", "--quiet"]) == 2
    assert "your own model" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.rglob("*")) == before
    model = ["--model", f"{NETS}:resnet", "--quiet"]
    assert main(["fidelity", str(path), "--force", *model]) == 0
    argv = ["exemplars", str(path), "--images", str(photos), "--input-size", "32"]
    assert main([*argv, "--top", "2", "--crop-size", "8", *model]) == 0
    with vizjax.open_atlas(path) as a:
        assert len(a.layers[LAYER].exemplars(0)["paths"]) == 2
    # grid's default (0:20) fits a layer of 16 channels
    png = tmp_path / "g.png"
    assert main(["grid", str(path), "--layer", LAYER, "--out", str(png)]) == 0
