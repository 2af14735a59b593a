"""The gallery's HTML: the index, a layer's page and a filter's page, and the pieces they share
(an atlas' columns in, a page's text out; nothing is written here, :mod:`vizjax.gallery.layout`
says where each page goes)."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from vizjax import names
from vizjax.gallery.figures import (
    Beside,
    _fidelity_text,
    _LayerData,
    _measures,
    _num,
    _picture_text,
    _summary_text,
    _view_text,
)
from vizjax.gallery.layout import THUMB, Layout, href

# ---------------------------------------------------------------------------------------------
# Small HTML pieces (pure).


def _e(text: Any) -> str:
    return names.html_text(text)


def _page(title: str, page: Path, layout: Layout, body: Sequence[str]) -> str:
    return "\n".join(
        [
            "<!doctype html>",
            '<html lang="en"><head><meta charset="utf-8">',
            '<meta name="viewport" content="width=device-width, initial-scale=1">',
            f"<title>{_e(title)}</title>",
            f'<link rel="stylesheet" href="{href(page, layout.css)}">',
            f'<script src="{href(page, layout.js)}" defer></script>',
            "</head><body>",
            *body,
            "</body></html>",
            "",
        ]
    )


def _nav(links: Sequence[tuple[str, str | None, str]]) -> str:
    """``[(id, url or None, label)]`` -> a nav bar of the links that have a target."""
    parts = [f'<a id="{i}" href="{url}">{_e(label)}</a>' for i, url, label in links if url]
    return "<nav>" + "".join(parts) + "</nav>"


def objective_svg(values: np.ndarray, width: int = 360, height: int = 120) -> str:
    """The objective before each step and after the last as an inline SVG line chart (pure)."""
    v = np.asarray(values, np.float64).ravel()
    ok = np.isfinite(v)
    if not ok.any():
        return '<p class="note">no objective recorded</p>'
    lo, hi = float(v[ok].min()), float(v[ok].max())
    span = hi - lo or 1.0
    left, right, top, bottom = 46, 8, 8, 20
    iw, ih = width - left - right, height - top - bottom
    n = max(len(v) - 1, 1)
    pts = " ".join(
        f"{left + iw * i / n:.1f},{top + ih * (1 - (x - lo) / span):.1f}"
        for i, x in enumerate(v)
        if math.isfinite(x)
    )
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'role="img" aria-label="objective per step">'
        f'<rect x="{left}" y="{top}" width="{iw}" height="{ih}" fill="#fff" stroke="#ccc"/>'
        f'<polyline fill="none" stroke="#1a56a8" stroke-width="1.5" points="{pts}"/>'
        f'<text x="{left - 4}" y="{top + 8}" text-anchor="end">{_e(_num(hi))}</text>'
        f'<text x="{left - 4}" y="{top + ih}" text-anchor="end">{_e(_num(lo))}</text>'
        f'<text x="{left}" y="{height - 5}">step 0</text>'
        f'<text x="{left + iw}" y="{height - 5}" text-anchor="end">{len(v) - 1}</text>'
        "</svg>"
    )


# ---------------------------------------------------------------------------------------------
# Pages.


def _index_page(
    atlas: Any, layout: Layout, data: list[_LayerData], title: str, beside: Beside | None = None
) -> str:
    page = layout.index
    assert page is not None
    rows = [
        "<tr><th>layer</th><th>filters</th><th>dead</th><th>size</th>"
        "<th>mean final activation</th><th>fidelity</th>"
        + (f"<th>beside: {_e(beside.file)}</th>" if beside else "")
        + "<th>dataset exemplars</th><th>first filters</th></tr>"
    ]
    for d in data:
        s = d.summary()
        ex = s["exemplars"]
        ex_text = (
            f"top {ex.get('top')} of {ex.get('n_images')} images ({ex.get('n_skipped')} skipped)"
            if ex
            else "—"
        )
        strip = "".join(
            f'<img loading="lazy" src="{href(page, _thumb_path(layout, d, f))}" alt="{f}">'
            for f in d.filters[:8]
        )
        rows.append(
            f'<tr><td><a href="{href(page, layout.layer_page(d.name))}">{_e(d.name)}</a></td>'
            f'<td class="n">{s["done"]} / {s["num_filters"]}</td><td class="n">{s["dead"]}</td>'
            f"<td>{s['size'][0]}x{s['size'][1]}, K={s['k']}"
            + (f" ({_e(_view_text(s))})" if _view_text(s) else "")
            + "</td>"
            f'<td class="n">{_num(s["final"])}</td>'
            f"<td>{_e(_fidelity_text(s) or '—')}</td>"
            + (f"<td>{_e(_beside_figures(beside, d.name))}</td>" if beside else "")
            + f'<td>{_e(ex_text)}</td><td class="strip">{strip}</td></tr>'
        )
    a = atlas.attrs
    body = [
        f"<h1>{_e(title)}</h1>",
        f'<p class="note">{_e(Path(atlas.path).name)}: format v{_e(atlas.format_version)}, '
        f"model {_e(a.get('model'))}, weights {_e(a.get('weights'))}, "
        f"created {_e(a.get('created'))}. Keyboard on the pages: ← → previous/next, ↑ up.</p>",
    ]
    if beside:
        body.append(
            f'<p class="note beside">Beside each filter: its pictures in {_e(beside.file)} '
            f"(recipe {_e(beside.recipe)}; this atlas: {_e(beside.main_recipe)}), on "
            f"{len(beside.layers)} of these {len(data)} layers.</p>"
        )
    body += [
        "<table>",
        *rows,
        "</table>",
        "<h2>config</h2>",
        f"<pre>{_e(json.dumps(atlas.config, indent=1, sort_keys=True))}</pre>",
    ]
    return _page(title, page, layout, body)


def _beside_figures(beside: Beside, layer: str) -> str:
    """The other atlas' layer in a line: its label, counts and fidelity figures."""
    o = beside.layers.get(layer)
    if o is None:
        return "—"
    s = o.summary()
    counts = f"{s['done']} of {s['num_filters']} filters, {s['size'][0]}x{s['size'][1]} px"
    return f"{o.label}: {counts}; {_fidelity_text(s) or 'fidelity not measured'}"


def _thumb_path(layout: Layout, d: _LayerData, f: int) -> Path:
    h, w = d.layer.image_shape
    if max(h, w) > THUMB:
        return layout.thumb(d.name, f, beside=d.beside)
    return layout.image(d.name, f, 0, beside=d.beside)


#: A picture's marks on a layer page: (column of the layer's fidelity, CSS class, tooltip words).
MARKS = (
    ("dead", "dead", "dead: never turned on"),
    ("zero_start_grad", "zsg", "zero gradient at the start"),
    ("nonfinite", "bad", "NaN/Inf during the ascent"),
)


def _marks(d: _LayerData, i: int) -> list[tuple[str, str]]:
    """The marks of the ``i``-th filter's picture in ``d``: ``[(CSS class, words)]``."""
    return [(cls, words) for column, cls, words in MARKS if d.fid[column][i]]


def _thumb(page: Path, layout: Layout, d: _LayerData, f: int) -> str:
    """The lazy thumbnail of filter ``f``; where another atlas is beside, in a box of its own
    (``pic``) that carries this picture's marks (dead, zero start gradient, non-finite), with its
    label in the alt text and its robustness and high-frequency energy under it."""
    alt = f"filter {f}, {d.label}" if d.label else f"filter {f}"
    img = (
        f'<img loading="lazy" width="{THUMB}" height="{THUMB}" '
        f'src="{href(page, _thumb_path(layout, d, f))}" alt="{_e(alt)}">'
    )
    if d.label is None:
        return img
    i = d.position[f]
    cls = " ".join(["pic", *(c for c, _ in _marks(d, i))])
    return f'<span class="{cls}">{img}{_e(_picture_text(d, i, 0))}</span>'


def _layer_page(
    layout: Layout,
    d: _LayerData,
    prev: str | None,
    nxt: str | None,
    title: str,
    beside: Beside | None = None,
) -> str:
    page = layout.layer_page(d.name)
    s = d.summary()
    nav = _nav(
        [
            ("nav-up", href(page, layout.index) if layout.index else None, "↑ all layers"),
            ("nav-prev", href(page, layout.layer_page(prev)) if prev else None, f"← {prev or ''}"),
            ("nav-next", href(page, layout.layer_page(nxt)) if nxt else None, f"{nxt or ''} →"),
        ]
    )
    o = beside.layers.get(d.name) if beside else None
    figures = []
    for i, f in enumerate(d.filters):
        j = o.position.get(f) if o else None
        act = float(np.mean(d.final[i]))
        tip = f"filter {f}: final activation {_num(act)}"
        tip += "".join(f" ({words})" for _, words in _marks(d, i))
        # The marks belong to a picture: on the box where it holds the site's picture alone,
        # on each picture's own box where another atlas' pictures may stand beside it (a filter
        # dead under one recipe must not dim the other recipe's live picture).
        cls = ["f", *(c for c, _ in _marks(d, i))] if d.label is None else ["f"]
        pictures = _thumb(page, layout, d, f)
        if o is not None and j is not None:
            cls.append("pair")
            tip += f"; {o.label}: final activation {_num(np.mean(o.final[j]))}"
            tip += "".join(f" ({words})" for _, words in _marks(o, j))
            pictures += _thumb(page, layout, o, f)
        figures.append(
            f'<a class="{" ".join(cls)}" href="{href(page, layout.filter_page(d.name, f))}" '
            f'title="{_e(tip)}">{pictures}{f} · {_e(_num(act, 3))}</a>'
        )
    fid = _fidelity_text(s)
    body = [
        nav,
        f"<h1>{_e(d.name)}</h1>",
        f"<p>{_e(_summary_text(s))}.</p>",
        f"<p>{_e('Fidelity: ' + fid)}.</p>" if fid else "",
        '<p class="note">Each box: filter index · final activation (mean over its images). '
        + ("Marks are per picture. " if beside else "")
        + "Dimmed: dead (never turned on); dashed: zero gradient at the start; red: non-finite. "
        "Click a filter for its page; ← → go to the previous/next layer, ↑ to all layers.</p>",
        *(_layer_beside(beside, d, o) if beside else []),
        '<div class="grid">',
        *figures,
        "</div>",
    ]
    return _page(f"{d.name} — {title}", page, layout, body)


def _layer_beside(beside: Beside, d: _LayerData, o: _LayerData | None) -> list[str]:
    """The lines of a layer page that say which picture is which, and the other atlas' figures."""
    numbers = "Under each picture: r robustness, h high-frequency energy of that image."
    if o is None:
        return [
            f'<p class="note beside">{_e(beside.file)} ({_e(beside.recipe)}) has no finished '
            f"filters of {_e(d.name)}: nothing beside. {numbers}</p>"
        ]
    both = sum(f in o.position for f in d.filters)
    s = o.summary()
    fid = _fidelity_text(s)
    return [
        f'<p class="beside">Left in each box: {_e(beside.main_file)} ({_e(d.label)}); right: '
        f"{_e(beside.file)} ({_e(o.label)}), for {both} of these {len(d)} filters. {numbers}</p>",
        f"<p>{_e(beside.file)} ({_e(o.label)}): {_e(_summary_text(s))}"
        + (f". Fidelity: {_e(fid)}" if fid else "")
        + ".</p>",
    ]


def _bigs(page: Path, layout: Layout, d: _LayerData, i: int) -> list[str]:
    """The images of the ``i``-th filter of ``d`` at full size; captioned with the recipe's label,
    robustness and high-frequency energy where another atlas is beside."""
    f = d.filters[i]
    h, w = d.layer.image_shape
    scale = max(1, 256 // max(h, w))  # small images are shown 2x, 4x, ... with crisp pixels
    out = []
    for k in range(d.layer.k):
        src = href(page, layout.image(d.name, f, k, beside=d.beside))
        alt = f"filter {f} image {k}" + (f", {d.label}" if d.label else "")
        cap = _e(f"image {k}: activation {_num(d.final[i, k])}")
        if d.label:  # on lines of their own, so a caption is not much wider than its image
            rob, hf = _num(d.robustness[i, k]), _num(d.hf_energy[i, k])
            cap = f"{_e(d.label)}<br>{cap}<br>robustness {rob}, high-frequency energy {hf}"
        out.append(
            f'<figure class="{"big beside" if d.beside else "big"}"><img src="{src}" '
            f'width="{w * scale}" height="{h * scale}" alt="{_e(alt)}">'
            f"<figcaption>{cap}</figcaption></figure>"
        )
    return out


def _filter_page(
    atlas: Any,
    layout: Layout,
    d: _LayerData,
    i: int,
    exemplars: dict[str, Any] | None,
    nearest: list[tuple[int, float]],
    title: str,
    beside: Beside | None = None,
) -> str:
    f = d.filters[i]
    page = layout.filter_page(d.name, f)
    prev = d.filters[i - 1] if i > 0 else None
    nxt = d.filters[i + 1] if i + 1 < len(d.filters) else None
    nav = _nav(
        [
            ("nav-up", href(page, layout.layer_page(d.name)), f"↑ {d.name}"),
            (
                "nav-prev",
                href(page, layout.filter_page(d.name, prev)) if prev is not None else None,
                f"← filter {prev if prev is not None else ''}",
            ),
            (
                "nav-next",
                href(page, layout.filter_page(d.name, nxt)) if nxt is not None else None,
                f"filter {nxt if nxt is not None else ''} →",
            ),
        ]
    )
    o = beside.layers.get(d.name) if beside else None
    j = o.position.get(f) if o else None
    bigs = _bigs(page, layout, d, i)
    if o is not None and j is not None:
        bigs += _bigs(page, layout, o, j)
    elif beside:
        bigs.append(
            f'<p class="note beside">{_e(beside.file)} ({_e(beside.recipe)}) has no picture '
            f"of filter {f} of {_e(d.name)}.</p>"
        )
    # Each picture's marks, named by its atlas' label where two atlases are shown.
    marked = [(d, i)] + ([(o, j)] if o is not None and j is not None else [])
    badges = [
        f'<span class="badge{"" if cls == "zsg" else " warn"}">'
        f"{_e(f'{x.label}: ' if x.label else '')}{_e(words)}</span>"
        for x, k in marked
        for cls, words in _marks(x, k)
    ]

    measures = _measures(d, i)
    if o is None or j is None:
        fid_rows = [f"<tr><td>{n}</td><td>{_e(t)}</td></tr>" for n, t in measures if t is not None]
        missing = [n for n, t in measures if t is None]
    else:  # the two atlases' numbers side by side
        pairs = [(n, t, u) for (n, t), (_, u) in zip(measures, _measures(o, j), strict=True)]
        fid_rows = [f"<tr><th></th><th>{_e(d.label)}</th><th>{_e(o.label)}</th></tr>"] + [
            f"<tr><td>{n}</td><td>{_e(t or '—')}</td><td>{_e(u or '—')}</td></tr>"
            for n, t, u in pairs
            if t is not None or u is not None
        ]
        missing = [n for n, t, u in pairs if t is None and u is None]
    note = (
        "Robustness: median activation under random jitter/scale/rotation over the unperturbed "
        "one. High-frequency energy: share of the image's power above half Nyquist. Selective: "
        "its image excites it more than every other filter's image does. Specificity: its "
        "activation on its own image over the mean on the other filters' images."
    )
    if missing:
        where = "this atlas" if j is None else "either atlas"
        note += f" Not measured in {where}: {', '.join(missing)}."

    body = [
        nav,
        f"<h1>{_e(d.name)} · filter {f}</h1>",
        "".join(badges),
        "<div>",
        *bigs,
        "</div>",
        "<h2>objective per step</h2>",
        objective_svg(d.objective[i]),
        "<h2>fidelity</h2>",
        "<table>",
        *fid_rows,
        "</table>",
        f'<p class="note">{_e(note)}</p>',
    ]
    body += ["<h2>dataset exemplars</h2>", *_exemplar_html(page, layout, d.name, f, exemplars)]
    body.append("<h2>most similar filters</h2>")
    if nearest:
        body.append(
            "<ol>"
            + "".join(
                f'<li><a href="{href(page, layout.filter_page(d.name, g))}">filter {g}</a> '
                f"(cosine similarity {_num(sim, 3)})</li>"
                for g, sim in nearest
            )
            + "</ol>"
        )
    else:
        body.append('<p class="note">not measured (the atlas has no activation matrix)</p>')
    body += [
        "<h2>config</h2>",
        f"<pre>{_e(json.dumps(atlas.config, indent=1, sort_keys=True))}</pre>",
    ]
    return _page(f"{d.name} filter {f} — {title}", page, layout, body)


def _exemplar_html(
    page: Path, layout: Layout, layer: str, f: int, ex: dict[str, Any] | None
) -> list[str]:
    if not ex or not ex["paths"]:
        return ['<p class="note">none (make them with: vizjax exemplars ATLAS --images DIR)</p>']
    root = Path(ex.get("images_dir") or ".")
    out = [
        f'<p class="note">The images of {_e(root)} that drive this filter most (mean activation), '
        "each cut to the receptive field around its most active unit.</p><div>"
    ]
    for r, (path, act) in enumerate(zip(ex["paths"], ex["activation"], strict=True)):
        img = f'<img src="{href(page, layout.crop(layer, f, r))}" alt="{_e(path)}">'
        original = root / path
        if original.is_file():  # link the original only where it is there to open
            img = f'<a href="{href(page, original)}">{img}</a>'
        out.append(f'<div class="ex">{img}{_e(_num(act, 3))}<br>{_e(path)}</div>')
    out.append("</div>")
    return out
