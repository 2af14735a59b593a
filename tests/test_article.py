"""The main job on a tiny plan: every picture of the article is written, from resumable atlases."""

import re

import numpy as np
import tiny_network
from PIL import Image

from vizjax import article
from vizjax.atlas import data_dir, open_atlas

TINY = article.Plan(
    layers=("block2_conv1",),
    first=3,
    picture=("block2_conv1", 1),
    full_layer="block1_conv1",
    cat=("block2_conv1", 0),
    compare=(("block2_conv1", (0, 2)),),
    size=32,
    steps=2,
)


def test_tiny_article_writes_every_picture_and_resumes(tiny_weights, tmp_path, capsys):
    # On the tiny network: this is about the pictures and the resume (the article's values are
    # pinned in tests/test_pinned.py on the real weights).
    written = article.reproduce(tmp_path, quiet=True, plan=TINY, weights_name=tiny_network.NAME)
    names = {p.name for p in written}
    assert names >= {
        "atlas.h5",
        "block2_conv1_filter1.png",
        "grid_block2_conv1_first3.png",
        "grid_block1_conv1_all.png",
        "index.html",
        "grid_block2_conv1_first3_lucent.png",
        "grid_block1_conv1_all_lucent.png",
        "lucent.h5",
        "classic_vs_lucent.png",
        "cat.h5",
        "cat_block2_conv1_filter0.png",
        "cat_before_after_block2_conv1.png",
    }
    assert all(p.exists() for p in written)
    assert (tmp_path / "gallery" / "index.html").is_file()
    with open_atlas(tmp_path / "atlas.h5") as a:
        assert len(a.layers["block1_conv1"].completed()) == 8  # the full layer (tiny network)
        assert sorted(a.layers["block2_conv1"].completed()) == [0, 1, 2]
        assert a.config["recipe"]["name"] == "classic" and a.config["recipe"]["steps"] == 2
    with open_atlas(tmp_path / "lucent.h5") as a:  # the default recipe, on the same filters
        assert a.config["recipe"]["name"] == "lucent" and a.config["recipe"]["steps"] == 2
        assert len(a.layers["block1_conv1"].completed()) == 8
        assert sorted(a.layers["block2_conv1"].completed()) == [0, 1, 2]
    # The gallery shows both recipes on every layer and filter page, numbers under each.
    site = tmp_path / "gallery"
    for page in (site / "block1_conv1" / "index.html", site / "block2_conv1" / "2.html"):
        text = page.read_text()
        assert "classic, 2 steps" in text and "lucent, 2 steps" in text
    assert (site / "block2_conv1" / "beside" / "2_0.png").is_file()  # classic's, beside
    # It leads with the default recipe: the index' thumbnails are its pictures, and each box
    # shows its picture first, classic's second.
    index = (site / "index.html").read_text()
    assert "(lucent) beside the seed article" in index and "beside/" not in index
    box = re.search(
        r'<a class="f pair" href="2\.html".*?</a>',
        (site / "block2_conv1" / "index.html").read_text(),
    )
    assert re.findall(r'src="([^"]+)"', box.group(0)) == ["img/2_0.png", "beside/2_0.png"]
    alts = re.findall(r'alt="([^"]+)"', box.group(0))
    assert alts == ["filter 2, lucent, 2 steps", "filter 2, classic, 2 steps"]
    cat = np.asarray(Image.open(tmp_path / "cat_block2_conv1_filter0.png"))
    assert cat.shape == (300, 451, 3)  # the photo's own size
    figure = np.asarray(Image.open(tmp_path / "classic_vs_lucent.png"))
    assert figure.shape[0] > 2 * 32 and figure.std() > 10  # two rows of real pictures
    printed = capsys.readouterr().out
    assert "classic, 2 steps, 32x32 px" in printed and "lucent, 2 steps, 32x32 px" in printed
    # A rerun finds every filter done and only redraws.
    # (The index is rewritten through a temp file in the folder, so compare the segment files.)
    before = sorted(p.name for p in data_dir(tmp_path / "atlas.h5").glob("*.h5"))
    article.reproduce(tmp_path, quiet=True, plan=TINY, weights_name=tiny_network.NAME)
    assert before
    assert (
        sorted(p.name for p in data_dir(tmp_path / "atlas.h5").glob("*.h5")) == before
    )  # no new one
