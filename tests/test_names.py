"""Layer names from the user's model (``/``, spaces, quotes, ``..``, ``<script>``, unicode) stored
and shown safely: file names, HDF5 groups and the gallery's HTML (vizjax.names, and every place
that uses it: the atlas' writer, reader, merge, and the gallery)."""

import re
from html.parser import HTMLParser
from pathlib import Path

import h5py
import numpy as np
import pytest
import synthetic_atlas

from vizjax import gallery, names
from vizjax.atlas import AtlasWriter, data_dir, merge_atlases, open_atlas
from vizjax.errors import AtlasError

#: Names a Flax or Keras model may give its layers; each is a layer of the atlases below.
HOSTILE = [
    "ResNet_0/Stage_3/Block_5",
    "../../escape",
    "a b 'quoted' \"double\"",
    "<script>alert(1)</script>",
    "Conv",
    "conv",  # a plain name: its own stem; "Conv" (hashed) never shares it on any file system
    "Ünïcødé λayer 层",
    ".",
    "%2F",
    "index.html",
]
PLAIN = ["block1_conv1", "conv4_block6_out", "dense-1"]


# ---------------------------------------------------------------------------------------------
# The functions.


@pytest.mark.parametrize("name", HOSTILE + PLAIN)
def test_stem_is_one_safe_file_name_and_h5_key_round_trips(name):
    stem = names.file_stem(name)
    assert re.fullmatch(r"[A-Za-z0-9_\-~]+", stem) and len(stem) <= 80
    assert names.from_h5_key(names.h5_key(name)) == name
    key = names.h5_key(name)
    assert "/" not in key and key != "."


def test_plain_names_are_their_own_stem_and_key_others_are_hashed():
    for name in PLAIN:
        assert names.file_stem(name) == name and names.h5_key(name) == name
    assert names.file_stem("ResNet_0/Stage_3/Block_5").startswith("ResNet_0_Stage_3_Block_5~")
    # Names that slug alike still get their own stems, also when case is ignored.
    alike = ["a/b", "a b", "a:b", "a_b~x", "A/B", "conv", "Conv", "CONV"]
    stems = [names.file_stem(n).lower() for n in alike]
    assert len(set(stems)) == len(alike)


def test_html_text_escapes_markup_and_quotes():
    assert names.html_text("<script>\"a\" & 'b'") == (
        "&lt;script&gt;&quot;a&quot; &amp; &#x27;b&#x27;"
    )


def test_problem_names_what_cannot_be_a_layer_name():
    assert names.problem("ok/any thing") is None
    assert "empty" in names.problem("")
    assert "NUL" in names.problem("a\x00b")
    assert "text" in names.problem(3)


# ---------------------------------------------------------------------------------------------
# An atlas of such layers: written, resumed, read, merged, shown.

LAYERS = {name: (64 if i == 0 else 8, 3, 1, 12) for i, name in enumerate(HOSTILE)}
RUN = {"recipe": "synthetic", "steps": 2}


def _rows(c: int, filters: list[int], side: int, salt: int) -> dict:
    n = len(filters)
    rng = np.random.default_rng(salt)
    return {
        "filters": np.asarray(filters),
        "images": rng.integers(0, 256, (n, 1, side, side, 3), dtype=np.uint8),
        "objective": rng.random((n, 3)).astype(np.float32),
        "final_activation": rng.random((n, 1)).astype(np.float32) + 0.5,
        "activation_matrix": rng.random((n, 1, c)).astype(np.float32),
        "robustness": rng.random((n, 1)).astype(np.float32),
        "hf_energy": rng.random((n, 1)).astype(np.float32),
        "zero_start_grad": np.zeros(n, bool),
    }


def _write(path: Path, filters: list[int]) -> Path:
    with AtlasWriter(path, synthetic_atlas.ATTRS, RUN) as w:
        for i, name in enumerate(HOSTILE):
            c = LAYERS[name][0]
            todo = w.begin_layer(name, c, filters, (12, 12), 2)
            if todo:
                w.write_chunk(name, _rows(c, todo, 12, 17 * i + todo[0]))
            w.finish_layer(name)
    return path


def _inside(folder: Path, p: Path) -> bool:
    return p.resolve().is_relative_to(folder.resolve())


def test_atlas_stores_every_name_flat_inside_its_folder(tmp_path):
    out = tmp_path / "a.h5"
    # A first run does filters 0 and 1, a resumed run adds 2 (new segments, the index rewritten).
    _write(out, [0, 1])
    _write(out, [0, 1, 2])
    folder = data_dir(out)
    files = sorted(p for p in tmp_path.rglob("*") if p.is_file())
    assert all(_inside(tmp_path, p) for p in files)
    # Nothing escaped ("../../escape" is a file stem in the folder, not a path).
    assert not (tmp_path.parent / "escape").exists()
    assert {p.parent for p in files} <= {tmp_path, folder}
    # Plain h5py: one group per layer under /layers, no nested groups, rows readable.
    with h5py.File(out, "r") as f:
        keys = list(f["layers"])
        assert sorted(names.from_h5_key(k) for k in keys) == sorted(HOSTILE)
        for k in keys:
            g = f["layers"][k]
            assert all(isinstance(g[d], h5py.Dataset) for d in g)
            assert sorted(g["filters"][...]) == [0, 1, 2]
            assert g["done"][...].all()
        # Each segment records its layer's exact name.
        seg_layers = set()
        for seg in folder.glob("*.h5"):
            with h5py.File(seg, "r") as s:
                seg_layers.add(s.attrs["layer"])
        assert seg_layers == set(HOSTILE)
    with open_atlas(out) as atlas:
        assert sorted(atlas.layers) == sorted(HOSTILE)
        for i, name in enumerate(HOSTILE):
            layer = atlas.layers[name]
            assert layer.name == name and layer.done.all()
            want = _rows(LAYERS[name][0], [2], 12, 17 * i + 2)["images"][0, 0]
            np.testing.assert_array_equal(layer.image(2), want)


def test_exemplars_merge_and_gallery_of_hostile_names(tmp_path):
    # The synthetic atlas' exemplars on the first hostile layer (64 channels).
    layers = {n: (c, 3, 1, side) for n, (c, _, _, side) in LAYERS.items()}
    one = synthetic_atlas.make(
        tmp_path / "one.h5", tmp_path / "images", layers=layers, exemplar_layer=HOSTILE[0]
    )
    with open_atlas(one) as atlas:
        assert atlas.layers[HOSTILE[0]].exemplar_attrs["top"] == 3
        assert atlas.layers[HOSTILE[0]].exemplars(0)["paths"][0] == "sub/0_0.png"
    # Merge two parts of one run (filters 0, 1 and 2, 3): every layer keeps its name and rows.
    p1, p2 = _write(tmp_path / "p1.h5", [0, 1]), _write(tmp_path / "p2.h5", [2])
    merged = tmp_path / "merged.h5"
    merge_atlases(merged, [p1, p2])
    with open_atlas(merged) as atlas:
        assert sorted(atlas.layers) == sorted(HOSTILE)
        assert all(sorted(atlas.layers[n].completed()) == [0, 1, 2] for n in HOSTILE)
    # The gallery: every page's links resolve inside the site, no markup from a name survives.
    site = tmp_path / "site"
    gallery.write_site(one, site)
    pages = sorted(site.rglob("*.html"))
    assert len(pages) == 1 + len(HOSTILE) * (1 + 3)  # index, layer pages, 3 filter pages each
    for page in pages:
        assert _inside(site, page)
        text = page.read_text(encoding="utf-8")
        assert "<script>alert" not in text and "</script>alert" not in text
        tags = _Tags()
        tags.feed(text)
        assert tags.scripts == ["vizjax.js"]  # the one script every page loads, nothing else
        for kind, url in gallery.page_links(page):
            target = gallery.resolve(page, url)
            if kind == "a.href" and "images" in target.parts:
                continue  # the exemplars' original images, outside the site by design
            assert _inside(site, target) and target.is_file(), (page, url)
    index = (site / "index.html").read_text(encoding="utf-8")
    for name in HOSTILE:
        assert names.html_text(name) in index
    # Each layer has its own folder, named by its stem, directly in the site.
    folders = {p.name for p in site.iterdir() if p.is_dir()}
    assert folders == {names.file_stem(n) for n in HOSTILE}


class _Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.scripts: list[str] = []

    def handle_starttag(self, tag, attrs):
        if tag == "script":
            self.scripts.append(Path(dict(attrs).get("src") or "inline").name)


def test_a_name_that_cannot_be_stored_is_refused_before_writing(tmp_path):
    out = tmp_path / "a.h5"
    with AtlasWriter(out, synthetic_atlas.ATTRS, RUN) as w:
        for bad in ("", "a\x00b"):
            with pytest.raises(AtlasError):
                w.begin_layer(bad, 8, [0], (12, 12), 2)
    with open_atlas(out) as atlas:
        assert atlas.layers == {}
