"""The gallery site without a browser: every link and image resolves to a file, nothing reaches the
network, and each page shows what the atlas holds (and only that)."""

import re
import shutil
from pathlib import Path

import pytest
import synthetic_atlas

from vizjax import gallery
from vizjax.cli import main
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
