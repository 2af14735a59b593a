"""The atlas as a static website: an index, one page per layer, one page per filter.

``write_site(atlas, "site")`` writes::

    site/index.html               the layers: counts, dead filters, fidelity figures, exemplars
    site/vizjax.css, vizjax.js    shared style; keyboard: <- -> between filters (layers), ^ up
    site/<layer>/index.html       every filter of the layer: lazy thumbnails, index, activation
    site/<layer>/<f>.html         one filter: its K images, objective curve (inline SVG), fidelity,
                                  dataset exemplars, the 5 most similar filters, the config
    site/<layer>/img/<f>_<k>.png  image k of filter f, full size
    site/<layer>/thumb/<f>.png    its thumbnail (at most THUMB px; the image itself if smaller)
    site/<layer>/ex/<f>_<r>.png   crop of exemplar r of channel f

``write_site(atlas, "site", beside=other)`` also shows ``other``'s pictures of the same filters
next to each filter's (each labelled by its atlas' recipe and steps, with its robustness and
high-frequency energy) and ``other``'s layer figures on the index and layer pages, and writes::

    site/<layer>/beside/<f>_<k>.png        image k of filter f in ``other``
    site/<layer>/beside/thumb/<f>.png      its thumbnail

``write_site(atlas, "b5.html")`` writes one layer's page as ``b5.html`` and everything it links
to under ``b5_files/`` (a browser's "save complete page" layout), without the index.

Self-contained: no server, no network, no CDN, no base64; every link is relative, so the folder
works opened from ``file://`` and after it is moved. Shows what the atlas holds: fidelity figures,
exemplars and similar filters only where they were measured (format v1 atlases have none).

The package, one file per job::

    layout  where each file goes (Layout), relative links, the style sheet and keyboard script,
            writing PNGs, thumbnails and text
    figures what a page shows of an atlas: a layer's columns, its figures as text, the atlas
            beside (Beside) and the recipe labels
    pages   the HTML of the index, a layer's page and a filter's page
    check   checking a written site: its links, the files they name, a page's weight
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from vizjax.errors import VizjaxError
from vizjax.gallery.check import page_links, page_weight, resolve
from vizjax.gallery.figures import Beside, _LayerData
from vizjax.gallery.figures import _num as _num  # tests format their expected numbers with it
from vizjax.gallery.layout import (
    CSS,
    JS,
    PAIR_CSS,
    THUMB,
    Layout,
    _save,
    _save_thumbnail,
    _write_text,
    href,
)
from vizjax.gallery.pages import (
    _filter_page,
    _index_page,
    _layer_page,
    objective_svg,
)

__all__ = [
    "MARKER",
    "NEAREST",
    "THUMB",
    "Layout",
    "href",
    "objective_svg",
    "page_links",
    "page_weight",
    "resolve",
    "write_site",
]

#: Filters listed as "most similar" on a filter page.
NEAREST = 5

#: The file that makes a folder recognisable as a gallery vizjax wrote (and may rewrite).
MARKER = ".vizjax-gallery"


def _check_out(layout: Layout, out: Path) -> None:
    """Refuse (one line naming the file) an ``out`` whose files the gallery would overwrite but
    did not write: a file where the site's folder goes, a page or a folder of the user's.
    A folder is the gallery's own when it is empty or holds :data:`MARKER`."""
    root = layout.root
    if layout.single is not None and (out.exists() or out.is_symlink()):
        if out.is_dir() or not (root / MARKER).is_file():
            raise VizjaxError(
                f"{out} exists and is not a vizjax gallery page (no {root / MARKER}); "
                "give a new file name"
            )
    if root.exists() or root.is_symlink():
        if not root.is_dir():
            raise VizjaxError(f"{root} exists and is not a folder; give a new or empty folder")
        entries = set(os.listdir(root))
        if entries and MARKER not in entries:
            page = root / "index.html"
            what = f"{page} is not" if "index.html" in entries else f"{root} holds files of"
            raise VizjaxError(
                f"{what} a vizjax gallery (no {MARKER} in {root}); give a new or empty folder"
            )


def write_site(
    atlas: Any,
    out: str | os.PathLike,
    *,
    layers: Sequence[str] | None = None,
    title: str | None = None,
    quiet: bool = True,
    beside: Any = None,
) -> Path:
    """Write the gallery of an open atlas (:func:`vizjax.atlas.open_atlas`) or an atlas path.

    ``out`` is a folder (the whole site; returns its ``index.html``) or a ``NAME.html`` file (one
    layer's page, with its files under ``NAME_files/``; returns ``NAME.html``). ``layers`` limits
    the site to those layers (default: all). ``beside``, a second atlas (open or a path), puts its
    pictures of the same filters next to each one's, each labelled by its recipe and steps, with
    robustness and high-frequency energy under every picture (the site's layers it lacks show
    the site's pictures alone). VizjaxError for an unknown layer, an atlas without done filters,
    a ``beside`` with none of the site's layers, a ``.html`` output for several layers, or an
    unwritable ``out``.
    """
    from tqdm import tqdm

    def is_open(x: Any) -> bool:
        return x is None or hasattr(x, "layers")

    if not (is_open(atlas) and is_open(beside)):  # paths: open them for the site's writing
        from vizjax.atlas import open_atlas

        with contextlib.ExitStack() as opened:
            a, b = (
                x if is_open(x) else opened.enter_context(open_atlas(x)) for x in (atlas, beside)
            )
            return write_site(a, out, layers=layers, title=title, quiet=quiet, beside=b)
    out = Path(out)
    names = list(layers or atlas.layers)
    for name in names:
        if name not in atlas.layers:
            raise VizjaxError(
                f"the atlas has no layer {name!r}; it has: {', '.join(atlas.layers) or 'none'}"
            )
    # In the network's order (the atlas lists its layers so), whatever order they were asked in.
    names = [n for n in atlas.layers if n in names and atlas.layers[n].done.any()]
    if not names:
        raise VizjaxError(f"{atlas.path} has no finished filters to show")
    single = out.suffix.lower() in (".html", ".htm")
    if single and len(names) > 1:
        raise VizjaxError(
            f"--out {out.name} writes one layer's page, and the atlas has {len(names)} layers "
            f"({', '.join(names)}): pick one with --layer, or give a folder for the whole site"
        )
    pair = Beside(atlas, beside, names) if beside is not None else None
    layout = Layout(out, names[0] if single else None)
    title = title or f"vizjax atlas {Path(atlas.path).name}"
    _check_out(layout, out)
    try:
        layout.root.mkdir(parents=True, exist_ok=True)
        (layout.root / MARKER).write_text(
            "This folder is a vizjax gallery: vizjax gallery may rewrite it.\n", encoding="utf-8"
        )
        _write_text(layout.css, CSS + (PAIR_CSS if pair else ""))
        _write_text(layout.js, JS)
        data = [_LayerData(atlas.layers[n], pair.main_recipe if pair else None) for n in names]
        for j, d in enumerate(data):
            prev = names[j - 1] if j > 0 and not single else None
            nxt = names[j + 1] if j + 1 < len(names) and not single else None
            for i, f in enumerate(
                tqdm(d.filters, desc=d.name, unit="filter", disable=quiet, file=sys.stderr)
            ):
                _save_pictures(layout, d, f)
                other = pair.layers.get(d.name) if pair else None
                if other is not None and f in other.position:
                    _save_pictures(layout, other, f)
                ex = d.layer.exemplars(f) if d.exemplar_attrs else None
                if ex:
                    for r, crop in enumerate(ex["crops"]):
                        _save(crop, layout.crop(d.name, f, r))
                nearest = d.layer.nearest(f, NEAREST) if d.measured else []
                _write_text(
                    layout.filter_page(d.name, f),
                    _filter_page(atlas, layout, d, i, ex, nearest, title, pair),
                )
            page = _layer_page(layout, d, prev, nxt, title, pair)
            _write_text(layout.layer_page(d.name), page)
        if layout.index is not None:
            _write_text(layout.index, _index_page(atlas, layout, data, title, pair))
            return layout.index
        return layout.layer_page(names[0])
    except OSError as e:
        raise VizjaxError(f"cannot write the gallery to {out}: {e.strerror or e}") from None


def _save_pictures(layout: Layout, d: _LayerData, f: int) -> None:
    """Filter ``f``'s images and thumbnail, where ``d``'s pictures go (the site's or beside)."""
    images = d.layer.images_of(f)
    for k, im in enumerate(images):
        _save(im, layout.image(d.name, f, k, beside=d.beside))
    _save_thumbnail(images[0], layout.thumb(d.name, f, beside=d.beside))
