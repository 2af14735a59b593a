"""The gallery site without a browser: every link and image resolves to a file, nothing reaches the
network, and each page shows what the atlas holds (and only that)."""

import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import synthetic_atlas

from vizjax import gallery
from vizjax.atlas import open_atlas
from vizjax.cli import main
from vizjax.config import RunConfig
from vizjax.engine.recipe import preset
from vizjax.errors import VizjaxError

V1_ATLAS = Path(__file__).parent / "data" / "atlas-v1.h5"


def check_site(root: Path) -> list[Path]:
    """Every HTML page under ``root``: each href/src is relative and names an existing file; no
    data: URIs, no network. Returns the pages."""
    pages = sorted(root.rglob("*.html"))
    assert pages
    for page in pages:
        for kind, url in gallery.page_links(page):
            assert not re.match(r"^[a-z][a-z0-9+.-]*:", url), f"{page}: {kind}={url}"  # no scheme
            assert not url.startswith("/"), f"{page}: absolute {url}"
            assert gallery.resolve(page, url).is_file(), f"{page}: {kind}={url} does not exist"
    return pages


def _read(p: Path) -> str:
    return p.read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("site")
    atlas = synthetic_atlas.make(tmp / "a.h5", images_dir=tmp / "photos")
    assert main(["gallery", str(atlas), "--out", str(tmp / "site"), "--quiet"]) == 0
    return tmp / "site"


def test_every_link_and_image_of_the_site_exists(site):
    pages = check_site(site)
    n_filters = sum(n for _, n, _, _ in synthetic_atlas.LAYERS.values())
    assert len(pages) == 1 + len(synthetic_atlas.LAYERS) + n_filters
    for layer in synthetic_atlas.LAYERS:
        assert (site / layer / "index.html").is_file()


def test_index_lists_layers_with_counts_fidelity_and_exemplars(site):
    text = _read(site / "index.html")
    assert 'href="block1_conv1/index.html"' in text and 'href="block3_conv1/index.html"' in text
    assert "12 / 64" in text and "6 / 256" in text
    assert "selective" in text and "median robustness" in text  # measured in the synthetic atlas
    assert "top 3 of 20 images (1 skipped)" in text


def test_layer_page_grid_is_lazy_with_dead_filters_dimmed(site):
    text = _read(site / "block1_conv1" / "index.html")
    imgs = re.findall(r"<img [^>]*>", text)
    assert len(imgs) == 12 and all('loading="lazy"' in i for i in imgs)
    dead = re.findall(r'<a class="f dead[^"]*" href="(\d+)\.html"', text)
    assert dead == ["1"]  # final activation 0 on both images
    assert re.search(r'<a class="f zsg" href="2\.html"', text)  # zero start gradient: dashed
    assert 'id="nav-up" href="../index.html"' in text
    assert 'id="nav-next" href="../block3_conv1/index.html"' in text and "nav-prev" not in text
    # Thumbnails: 40 px images are shown as they are, 128 px ones get a 96 px thumbnail.
    assert 'src="img/0_0.png"' in text
    assert 'src="thumb/0.png"' in _read(site / "block3_conv1" / "index.html")


def test_filter_page_has_images_curve_fidelity_exemplars_neighbours_config(site):
    text = _read(site / "block1_conv1" / "3.html")
    assert text.count('class="big"') == 2  # K = 2 diversity images
    assert "<svg" in text and "<polyline" in text
    assert "robustness" in text and "specificity" in text
    crops = re.findall(r'src="(ex/3_\d\.png)"', text)
    assert crops == ["ex/3_0.png", "ex/3_1.png", "ex/3_2.png"]
    assert text.count("../../photos/sub/3_") == 3  # crops link to the original images
    near = re.findall(r'<li><a href="(\d+)\.html">filter \d+</a> \(cosine similarity', text)
    assert len(near) == 5 and "3" not in near
    assert "&quot;recipe&quot;: &quot;synthetic&quot;" in text  # the config, escaped
    assert 'id="nav-prev" href="2.html"' in text and 'id="nav-next" href="4.html"' in text
    assert 'id="nav-up" href="index.html"' in text
    # Channel 5 has two exemplars; the last filter has no "next".
    assert len(re.findall(r'src="ex/5_\d\.png"', _read(site / "block1_conv1" / "5.html"))) == 2
    assert "nav-next" not in _read(site / "block1_conv1" / "11.html")
    # block3_conv1 has no exemplars: says so, links nothing.
    other = _read(site / "block3_conv1" / "0.html")
    assert "vizjax exemplars ATLAS --images DIR" in other and "ex/" not in other


def test_v1_atlas_shows_what_it_has(tmp_path):
    if not V1_ATLAS.exists():
        pytest.skip(f"{V1_ATLAS} is not in this checkout")
    atlas = tmp_path / "v1.h5"
    shutil.copy(V1_ATLAS, atlas)
    index = gallery.write_site(atlas, tmp_path / "site")
    pages = check_site(tmp_path / "site")
    assert index == tmp_path / "site" / "index.html" and len(pages) > 3
    layer = next(p for p in pages if p.name != "index.html" and p.parent != tmp_path / "site")
    text = _read(layer)
    assert "not measured" in text  # no activation matrix in v1: no similar filters
    assert "<td>selective</td>" not in text and "<td>robustness</td>" not in text
    assert "Not measured in this atlas: robustness, high-frequency energy, selective" in text
    assert "vizjax exemplars" in text


def test_single_layer_page_keeps_its_files_beside_it(tmp_path):
    atlas = synthetic_atlas.make(tmp_path / "a.h5", exemplars=False)
    with pytest.raises(VizjaxError, match="pick one with --layer"):
        gallery.write_site(atlas, tmp_path / "page.html")
    out = gallery.write_site(atlas, tmp_path / "page.html", layers=["block3_conv1"])
    assert out == tmp_path / "page.html"
    check_site(tmp_path)
    text = _read(out)
    assert text.count("<img") == 6 and 'href="page_files/0.html"' in text
    assert 'id="nav-up" href="../page.html"' in _read(tmp_path / "page_files" / "0.html")
    assert not (tmp_path / "index.html").exists()


def test_bad_requests_are_one_clear_error(tmp_path, capsys):
    atlas = synthetic_atlas.make(tmp_path / "a.h5", exemplars=False)
    assert main(["gallery", str(atlas), "--out", str(tmp_path / "s"), "--layer", "block9"]) == 2
    assert "has no layer 'block9'" in capsys.readouterr().err
    (tmp_path / "file").write_text("")
    assert main(["gallery", str(atlas), "--out", str(tmp_path / "file" / "s"), "--quiet"]) == 2
    assert "cannot write the gallery" in capsys.readouterr().err


def test_page_weight_counts_html_styles_and_every_image(site):
    w = gallery.page_weight(site / "block3_conv1" / "index.html")
    thumbs = sum(p.stat().st_size for p in (site / "block3_conv1" / "thumb").iterdir())
    assert w["n_images"] == 6 and w["images"] == thumbs
    assert w["total"] == w["html"] + w["css_js"] + w["images"] > thumbs


def test_objective_svg_scales_into_the_box():
    svg = gallery.objective_svg([1.0, 2.0, float("nan"), 4.0])
    pts = re.search(r'points="([^"]+)"', svg).group(1).split()
    assert len(pts) == 3  # the NaN is left out
    ys = [float(p.split(",")[1]) for p in pts]
    assert ys[0] > ys[1] > ys[2]  # larger values are higher up
    assert "no objective" in gallery.objective_svg([float("nan")])


# ---------------------------------------------------------------------------------------------
# A second atlas beside the first (write_site(..., beside=), gallery --beside).

#: The atlas shown beside the synthetic one: another recipe and step count, 8 of block1_conv1's
#: 12 filters, at 128 px (so with thumbnails of their own), no block3_conv1, a layer of its own.
BESIDE_LAYERS = {"block1_conv1": (64, 8, 1, 128), "block2_conv1": (128, 2, 1, 40)}


@pytest.fixture(scope="module")
def beside(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("beside")
    first = synthetic_atlas.make(tmp / "a.h5", images_dir=tmp / "photos")
    lucent = RunConfig(recipe=preset("lucent")).to_json()
    other = synthetic_atlas.make(
        tmp / "lucent.h5", exemplars=False, layers=BESIDE_LAYERS, config=lucent, steps=6
    )
    argv = ["gallery", str(first), "--out", str(tmp / "site"), "--beside", str(other), "--quiet"]
    assert main(argv) == 0
    return tmp


def _numbers(atlas: Path, layer: str, f: int) -> dict:
    """Filter ``f``'s image-0 measures and its layer's median robustness (live filters), read
    from the atlas."""
    with open_atlas(atlas) as a:
        lay = a.layers[layer]
        row, fid = lay.row(f), lay.fidelity
        live = ~np.asarray(fid["dead"], bool)
        return {
            "final": float(lay.final_activation[row][0]),
            "robustness": float(lay.robustness[row][0]),
            "hf_energy": float(lay.hf_energy[row][0]),
            "median_robustness": float(np.median(fid["robustness"][live])),
        }


def _box(layer_page: str, f: int) -> str:
    return re.search(rf'<a class="f[^"]*" href="{f}\.html"[^>]*>.*?</a>', layer_page).group(0)


def test_beside_site_has_every_link_and_both_pictures(beside):
    site = beside / "site"
    check_site(site)
    assert (site / "block1_conv1" / "beside" / "3_0.png").is_file()
    assert (site / "block1_conv1" / "beside" / "thumb" / "3.png").is_file()  # 128 px: thumbnail
    assert not (site / "block1_conv1" / "beside" / "9_0.png").exists()  # only in the first
    assert not (site / "block3_conv1" / "beside").exists()  # a layer the other atlas lacks
    assert not (site / "block2_conv1").exists()  # a layer only the other atlas has


def test_beside_layer_page_pairs_thumbnails_with_their_numbers(beside):
    text = _read(beside / "site" / "block1_conv1" / "index.html")
    assert "a.h5 (synthetic, 4 steps)" in text and "lucent.h5 (lucent, 6 steps)" in text
    box = _box(text, 3)
    assert box.startswith('<a class="f pair"')
    assert re.findall(r'src="([^"]+)"', box) == ["img/3_0.png", "beside/thumb/3.png"]
    texts = []
    for atlas in (beside / "a.h5", beside / "lucent.h5"):
        n = _numbers(atlas, "block1_conv1", 3)
        texts.append(f"r{n['robustness']:.2f} h{n['hf_energy']:.2f}")
    assert re.findall(r">(r[^<]+)</span>", box) == texts
    # The other atlas' layer figures: its median robustness over its live filters.
    m = _numbers(beside / "lucent.h5", "block1_conv1", 3)["median_robustness"]
    assert f"median robustness {gallery._num(m, 3)}" in text.split('<div class="grid">')[0]
    only_first = _box(text, 9)  # filter 9 is not in the other atlas: one picture
    assert only_first.startswith('<a class="f"') and only_first.count("<img") == 1
    other_layer = _read(beside / "site" / "block3_conv1" / "index.html")
    assert "has no finished filters of block3_conv1" in other_layer and "f pair" not in other_layer


def test_beside_filter_page_shows_both_atlases_images_and_numbers(beside):
    text = _read(beside / "site" / "block1_conv1" / "3.html")
    assert text.count('class="big"') == 2 and text.count('class="big beside"') == 1
    assert 'src="beside/3_0.png"' in text
    for atlas, label in ((beside / "a.h5", "synthetic"), (beside / "lucent.h5", "lucent")):
        n = _numbers(atlas, "block1_conv1", 3)
        steps = 6 if label == "lucent" else 4
        assert (
            f"{label}, {steps} steps<br>image 0: activation {gallery._num(n['final'])}<br>"
            f"robustness {gallery._num(n['robustness'])}, "
            f"high-frequency energy {gallery._num(n['hf_energy'])}</figcaption>"
        ) in text
    assert "<tr><th></th><th>synthetic, 4 steps</th><th>lucent, 6 steps</th></tr>" in text
    alone = _read(beside / "site" / "block1_conv1" / "9.html")
    assert alone.count('class="big"') == 2 and "big beside" not in alone
    assert "lucent.h5 (lucent) has no picture of filter 9" in alone


def test_beside_index_names_the_other_atlas_and_its_figures(beside):
    text = _read(beside / "site" / "index.html")
    assert "its pictures in lucent.h5 (recipe lucent; this atlas: synthetic)" in text
    m = _numbers(beside / "lucent.h5", "block1_conv1", 0)["median_robustness"]
    row = re.search(r"<tr><td><a href=\"block1_conv1/index.html\">.*?</tr>", text).group(0)
    assert "lucent, 6 steps: 8 of 64 filters" in row
    assert f"median robustness {gallery._num(m, 3)}" in row.split("lucent, 6 steps")[1]


def test_beside_marks_each_picture_not_the_box(tmp_path):
    # Filter 1 is dead in the site's atlas, filter 4 in the one beside: each dims its own picture
    # only, and each filter page names the atlas whose picture is dead.
    first = synthetic_atlas.make(tmp_path / "a.h5", exemplars=False, dead=(1,))
    lucent = RunConfig(recipe=preset("lucent")).to_json()
    other = synthetic_atlas.make(
        tmp_path / "b.h5", exemplars=False, layers=BESIDE_LAYERS, config=lucent, dead=(4,)
    )
    gallery.write_site(first, tmp_path / "site", beside=other)
    text = _read(tmp_path / "site" / "block1_conv1" / "index.html")
    for f, marks in ((1, ["pic dead", "pic"]), (4, ["pic", "pic dead"]), (2, ["pic zsg"] * 2)):
        box = _box(text, f)
        assert box.startswith('<a class="f pair"'), box  # no mark on the box itself
        assert re.findall(r'<span class="(pic[^"]*)">', box) == marks
    assert ".pic.dead img{opacity:.35}" in _read(tmp_path / "site" / "vizjax.css")
    page = _read(tmp_path / "site" / "block1_conv1" / "4.html")
    assert "lucent, 4 steps: dead: never turned on" in page
    assert "synthetic, 4 steps: dead" not in page


def test_layers_in_the_networks_order(tmp_path):
    layers = dict(reversed(synthetic_atlas.LAYERS.items()))  # written block3 first
    atlas = synthetic_atlas.make(tmp_path / "a.h5", exemplars=False, layers=layers)
    for asked in (None, ["block3_conv1", "block1_conv1"]):
        out = tmp_path / f"site-{asked is None}"
        text = _read(gallery.write_site(atlas, out, layers=asked))
        assert text.index("block1_conv1/index.html") < text.index("block3_conv1/index.html")
        first = _read(out / "block1_conv1" / "index.html")
        assert 'id="nav-next" href="../block3_conv1/index.html"' in first


def test_without_beside_nothing_of_it_is_written(site):
    for path in site.rglob("*"):
        assert "beside" not in path.name
        if path.suffix in (".html", ".css"):
            text = _read(path)
            assert "beside" not in text and "pair" not in text and 'class="pic"' not in text


def test_beside_one_page_and_bad_requests(beside, tmp_path, capsys):
    first, other = beside / "a.h5", beside / "lucent.h5"
    out = gallery.write_site(first, tmp_path / "p.html", layers=["block1_conv1"], beside=other)
    check_site(tmp_path)
    assert 'src="p_files/beside/thumb/3.png"' in _read(out)
    with pytest.raises(VizjaxError, match="has no finished filters of the site's layers"):
        gallery.write_site(first, tmp_path / "s", layers=["block3_conv1"], beside=other)
    argv = ["gallery", str(first), "--out", str(tmp_path / "t"), "--quiet"]
    assert main([*argv, "--beside", str(tmp_path / "none.h5")]) == 2
    assert "no atlas at" in capsys.readouterr().err
