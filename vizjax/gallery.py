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

``write_site(atlas, "b5.html")`` writes one layer's page as ``b5.html`` and everything it links
to under ``b5_files/`` (a browser's "save complete page" layout), without the index.

Self-contained: no server, no network, no CDN, no base64; every link is relative, so the folder
works opened from ``file://`` and after it is moved. Shows what the atlas holds: fidelity figures,
exemplars and similar filters only where they were measured (format v1 atlases have none).
"""

from __future__ import annotations

import html
import json
import math
import os
import re
import sys
from collections.abc import Sequence
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote

import numpy as np
from PIL import Image

from vizjax.errors import VizjaxError

#: Largest side of a layer page's thumbnails (px). 512 thumbnails of 96 px stay a few MB.
THUMB = 96
#: Filters listed as "most similar" on a filter page.
NEAREST = 5

CSS = """\
body{font:14px/1.4 system-ui,sans-serif;margin:0 1.2em 2em;background:#fafafa;color:#222}
a{color:#1a56a8;text-decoration:none}a:hover{text-decoration:underline}
nav{margin:.8em 0;color:#666}nav a{margin-right:1em}
h1{font-size:1.4em;margin:.3em 0}h2{font-size:1.1em;margin:1.2em 0 .4em}
.note{color:#666;font-size:.9em}
table{border-collapse:collapse}td,th{padding:.2em .7em;border-bottom:1px solid #ddd;text-align:left}
td.n{text-align:right;font-variant-numeric:tabular-nums}
.grid{display:flex;flex-wrap:wrap;gap:4px}
.f{display:inline-block;width:98px;text-align:center;font-size:11px;color:#333;
border:1px solid #ccc;background:#fff;padding:1px}
.f img{width:96px;height:96px;object-fit:contain;image-rendering:pixelated;display:block}
.f.dead{opacity:.35}.f.zsg{border-style:dashed}.f.bad{border-color:#c00}
.big{display:inline-block;margin:0 .8em .8em 0;text-align:center;font-size:12px}
.big img{image-rendering:pixelated;border:1px solid #ccc}
.ex{display:inline-block;width:100px;margin:0 4px 6px 0;font-size:11px;overflow-wrap:anywhere}
.ex img{width:96px;height:96px;image-rendering:pixelated;border:1px solid #ccc;display:block}
.strip img{width:48px;height:48px;image-rendering:pixelated;margin-right:2px}
.badge{display:inline-block;padding:0 .5em;border-radius:3px;background:#eee;margin-right:.4em}
.badge.warn{background:#fdd}
pre{background:#f0f0f0;padding:.6em;overflow:auto;font-size:12px}
svg text{font-size:10px;fill:#555}
"""

JS = """\
// vizjax gallery keyboard: <- and -> go to the previous/next filter (or layer), ^ goes up.
// The links carry the ids nav-prev, nav-next and nav-up; no network, works from file://.
document.addEventListener("keydown", function (e) {
  if (e.altKey || e.ctrlKey || e.metaKey || e.shiftKey) return;
  var t = e.target;
  if (t && (t.isContentEditable || /^(INPUT|TEXTAREA|SELECT)$/.test(t.tagName))) return;
  var id = {ArrowLeft: "nav-prev", ArrowRight: "nav-next", ArrowUp: "nav-up"}[e.key];
  var a = id && document.getElementById(id);
  if (a && a.href) {
    e.preventDefault();
    window.location.href = a.href;
  }
});
"""


# ---------------------------------------------------------------------------------------------
# Where things go.


class Layout:
    """Paths of every page and image of a site (see the module docstring).

    ``single`` is the one layer of a ``NAME.html`` page, or None for a whole site in ``out``.
    """

    def __init__(self, out: Path, single: str | None = None) -> None:
        self.single = single
        if single is None:
            self.root = out
            self.index: Path | None = out / "index.html"
        else:
            self.root = out.with_name(out.stem + "_files")
            self.index = None
            self._single_page = out

    def layer_dir(self, layer: str) -> Path:
        return self.root if self.single else self.root / layer

    def layer_page(self, layer: str) -> Path:
        return self._single_page if self.single else self.layer_dir(layer) / "index.html"

    def filter_page(self, layer: str, f: int) -> Path:
        return self.layer_dir(layer) / f"{f}.html"

    def image(self, layer: str, f: int, k: int) -> Path:
        return self.layer_dir(layer) / "img" / f"{f}_{k}.png"

    def thumb(self, layer: str, f: int) -> Path:
        return self.layer_dir(layer) / "thumb" / f"{f}.png"

    def crop(self, layer: str, f: int, r: int) -> Path:
        return self.layer_dir(layer) / "ex" / f"{f}_{r}.png"

    @property
    def css(self) -> Path:
        return self.root / "vizjax.css"

    @property
    def js(self) -> Path:
        return self.root / "vizjax.js"


def href(page: Path, target: Path) -> str:
    """The relative URL from ``page`` to ``target`` (POSIX separators, percent-quoted)."""
    rel = os.path.relpath(os.path.abspath(target), os.path.dirname(os.path.abspath(page)))
    return html.escape(quote(rel.replace(os.sep, "/")), quote=True)


# ---------------------------------------------------------------------------------------------
# Small HTML pieces (pure).


def _e(text: Any) -> str:
    return html.escape(str(text), quote=True)


def _num(v: Any, digits: int = 4) -> str:
    """A number for people: 4 significant digits, '—' for NaN/None."""
    if v is None:
        return "—"
    v = float(v)
    return "—" if not math.isfinite(v) else f"{v:.{digits}g}"


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


def _save(image: np.ndarray, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(image, np.uint8)).save(path, format="PNG", optimize=False)


def _save_thumbnail(image: np.ndarray, path: Path) -> bool:
    """Save ``image`` shrunk to at most THUMB px (aspect kept) as a 256-colour PNG; False (nothing
    written) if it is that small already and can serve as its own thumbnail.

    The palette cuts a layer page's bytes by 60% (the noise-like textures of feature
    visualizations compress badly in RGB: 22.8 -> 8.6 KB per 96 px thumbnail on block5_conv1,
    mean error 3.9 of 255 levels, not visible at that size); the full images stay exact RGB.
    """
    h, w = image.shape[:2]
    if max(h, w) <= THUMB:
        return False
    s = THUMB / max(h, w)
    im = Image.fromarray(np.asarray(image, np.uint8))
    im = im.resize((max(1, round(w * s)), max(1, round(h * s))), Image.Resampling.LANCZOS)
    im = im.quantize(256, method=Image.Quantize.FASTOCTREE, dither=Image.Dither.NONE)
    path.parent.mkdir(parents=True, exist_ok=True)
    im.save(path, format="PNG")
    return True


# ---------------------------------------------------------------------------------------------
# What a layer shows.


class _LayerData:
    """The small per-filter columns of one layer, read once (images stay lazy in the atlas)."""

    def __init__(self, layer: Any) -> None:
        self.layer = layer
        self.name: str = layer.name
        rows = np.flatnonzero(layer.done)
        filters = layer.filters[rows].astype(int)
        order = np.argsort(filters, kind="stable")
        self.rows = rows[order]
        self.filters: list[int] = [int(f) for f in filters[order]]
        self.objective = np.asarray(layer.objective[self.rows], np.float64)
        self.final = np.asarray(layer.final_activation[self.rows], np.float64)  # (n, K)
        fid = layer.fidelity  # columns over done rows in row order
        pos = {int(f): i for i, f in enumerate(fid["filter"])}
        take = [pos[f] for f in self.filters]
        self.fid = {k: np.asarray(v)[take] for k, v in fid.items()}
        self.measured = layer.activation_matrix is not None
        self.exemplar_attrs = layer.exemplar_attrs

    def __len__(self) -> int:
        return len(self.filters)

    def summary(self) -> dict[str, Any]:
        """Counts and the layer's figures (:func:`vizjax.fidelity.summarize`, as ``vizjax info``
        shows them) for the index and the layer page (NaN where not measured)."""
        from vizjax import fidelity

        s = fidelity.summarize(self.layer.fidelity)
        return {
            "done": len(self),
            "num_filters": self.layer.num_filters,
            "k": self.layer.k,
            "size": self.layer.image_shape,
            "steps": self.layer.steps,
            "dead": s["dead_count"],
            "zero_start_grad": s["zero_start_grad"],
            "nonfinite": s["nonfinite"],
            "final": s["mean_final_activation"],
            "selective": s["selectivity"] if math.isfinite(s["selectivity"]) else None,
            "specificity": s["median_specificity"],
            "robustness": s["median_robustness"],
            "hf_energy": s["median_hf_energy"],
            "exemplars": self.exemplar_attrs,
        }


def _summary_text(s: dict[str, Any]) -> str:
    parts = [
        f"{s['done']} of {s['num_filters']} filters",
        f"{s['dead']} dead",
        f"{s['zero_start_grad']} with zero start gradient",
    ]
    if s["nonfinite"]:
        parts.append(f"{s['nonfinite']} non-finite")
    parts.append(f"{s['size'][0]}x{s['size'][1]} px, {s['steps']} steps, K={s['k']}")
    parts.append(f"mean final activation {_num(s['final'])}")
    return ", ".join(parts)


def _fidelity_text(s: dict[str, Any]) -> str | None:
    parts = []
    if s["selective"] is not None:
        parts.append(f"{100 * s['selective']:.0f}% selective")
    for key, label in (
        ("specificity", "median specificity"),
        ("robustness", "median robustness"),
        ("hf_energy", "median high-frequency energy"),
    ):
        if math.isfinite(s[key]):
            parts.append(f"{label} {_num(s[key], 3)}")
    return ", ".join(parts) or None


# ---------------------------------------------------------------------------------------------
# Pages.


def _index_page(atlas: Any, layout: Layout, data: list[_LayerData], title: str) -> str:
    page = layout.index
    assert page is not None
    rows = [
        "<tr><th>layer</th><th>filters</th><th>dead</th><th>size</th>"
        "<th>mean final activation</th><th>fidelity</th><th>dataset exemplars</th>"
        "<th>first filters</th></tr>"
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
            f"<td>{s['size'][0]}x{s['size'][1]}, K={s['k']}</td>"
            f'<td class="n">{_num(s["final"])}</td>'
            f"<td>{_e(_fidelity_text(s) or '—')}</td><td>{_e(ex_text)}</td>"
            f'<td class="strip">{strip}</td></tr>'
        )
    a = atlas.attrs
    body = [
        f"<h1>{_e(title)}</h1>",
        f'<p class="note">{_e(Path(atlas.path).name)}: format v{_e(atlas.format_version)}, '
        f"model {_e(a.get('model'))}, weights {_e(a.get('weights'))}, "
        f"created {_e(a.get('created'))}. Keyboard on the pages: ← → previous/next, ↑ up.</p>",
        "<table>",
        *rows,
        "</table>",
        "<h2>config</h2>",
        f"<pre>{_e(json.dumps(atlas.config, indent=1, sort_keys=True))}</pre>",
    ]
    return _page(title, page, layout, body)


def _thumb_path(layout: Layout, d: _LayerData, f: int) -> Path:
    h, w = d.layer.image_shape
    return layout.thumb(d.name, f) if max(h, w) > THUMB else layout.image(d.name, f, 0)


def _layer_page(
    layout: Layout, d: _LayerData, prev: str | None, nxt: str | None, title: str
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
    figures = []
    for i, f in enumerate(d.filters):
        cls = ["f"]
        if d.fid["dead"][i]:
            cls.append("dead")
        if d.fid["zero_start_grad"][i]:
            cls.append("zsg")
        if d.fid["nonfinite"][i]:
            cls.append("bad")
        act = float(np.mean(d.final[i]))
        tip = f"filter {f}: final activation {_num(act)}"
        if d.fid["dead"][i]:
            tip += " (dead: never turned on)"
        if d.fid["zero_start_grad"][i]:
            tip += " (zero gradient at the start)"
        figures.append(
            f'<a class="{" ".join(cls)}" href="{href(page, layout.filter_page(d.name, f))}" '
            f'title="{_e(tip)}"><img loading="lazy" width="{THUMB}" height="{THUMB}" '
            f'src="{href(page, _thumb_path(layout, d, f))}" alt="filter {f}">'
            f"{f} · {_e(_num(act, 3))}</a>"
        )
    fid = _fidelity_text(s)
    body = [
        nav,
        f"<h1>{_e(d.name)}</h1>",
        f"<p>{_e(_summary_text(s))}.</p>",
        f"<p>{_e('Fidelity: ' + fid)}.</p>" if fid else "",
        '<p class="note">Each box: filter index · final activation (mean over its images). '
        "Dimmed: dead (never turned on); dashed: zero gradient at the start; red: non-finite. "
        "Click a filter for its page; ← → go to the previous/next layer, ↑ to all layers.</p>",
        '<div class="grid">',
        *figures,
        "</div>",
    ]
    return _page(f"{d.name} — {title}", page, layout, body)


def _filter_page(
    atlas: Any,
    layout: Layout,
    d: _LayerData,
    i: int,
    images: np.ndarray,
    exemplars: dict[str, Any] | None,
    nearest: list[tuple[int, float]],
    title: str,
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
    h, w = images.shape[1:3]
    scale = max(1, 256 // max(h, w))  # small images are shown 2x, 4x, ... with crisp pixels
    bigs = []
    for k in range(len(images)):
        bigs.append(
            f'<figure class="big"><img src="{href(page, layout.image(d.name, f, k))}" '
            f'width="{w * scale}" height="{h * scale}" alt="filter {f} image {k}">'
            f"<figcaption>image {k}: activation {_e(_num(d.final[i, k]))}</figcaption></figure>"
        )
    badges = []
    if d.fid["dead"][i]:
        badges.append('<span class="badge warn">dead: never turned on</span>')
    if d.fid["zero_start_grad"][i]:
        badges.append('<span class="badge">zero gradient at the start</span>')
    if d.fid["nonfinite"][i]:
        badges.append('<span class="badge warn">NaN/Inf during the ascent</span>')

    row = d.layer.row(f)
    measures: list[tuple[str, str | None]] = []  # (name, text, or None if not measured)
    for name, v in (
        ("final activation", d.final[i]),
        ("robustness", np.asarray(d.layer.robustness[row], np.float64)),
        ("high-frequency energy", np.asarray(d.layer.hf_energy[row], np.float64)),
    ):
        ok = np.isfinite(v).any()
        measures.append((name, ", ".join(_num(x) for x in np.ravel(v)) if ok else None))
    selective = "yes" if d.fid["selectivity"][i] else "no"
    measures.append(("selective", selective if d.measured else None))
    spec = float(d.fid["specificity"][i])
    measures.append(("specificity", _num(spec) if math.isfinite(spec) else None))
    fid_rows = [f"<tr><td>{n}</td><td>{_e(t)}</td></tr>" for n, t in measures if t is not None]
    missing = [n for n, t in measures if t is None]
    note = (
        "Robustness: median activation under random jitter/scale/rotation over the unperturbed "
        "one. High-frequency energy: share of the image's power above half Nyquist. Selective: "
        "its image excites it more than every other filter's image does. Specificity: its "
        "activation on its own image over the mean on the other filters' images."
    )
    if missing:
        note += f" Not measured in this atlas: {', '.join(missing)}."

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


# ---------------------------------------------------------------------------------------------
# The site.


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


def _write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")


def write_site(
    atlas: Any,
    out: str | os.PathLike,
    *,
    layers: Sequence[str] | None = None,
    title: str | None = None,
    quiet: bool = True,
) -> Path:
    """Write the gallery of an open atlas (:func:`vizjax.atlas.open_atlas`) or an atlas path.

    ``out`` is a folder (the whole site; returns its ``index.html``) or a ``NAME.html`` file (one
    layer's page, with its files under ``NAME_files/``; returns ``NAME.html``). ``layers`` limits
    the site to those layers (default: all). VizjaxError for an unknown layer, an atlas without
    done filters, a ``.html`` output for several layers, or an unwritable ``out``.
    """
    from tqdm import tqdm

    if not hasattr(atlas, "layers"):
        from vizjax.atlas import open_atlas

        with open_atlas(atlas) as a:
            return write_site(a, out, layers=layers, title=title, quiet=quiet)
    out = Path(out)
    names = list(layers or atlas.layers)
    for name in names:
        if name not in atlas.layers:
            raise VizjaxError(
                f"the atlas has no layer {name!r}; it has: {', '.join(atlas.layers) or 'none'}"
            )
    names = [n for n in names if atlas.layers[n].done.any()]
    if not names:
        raise VizjaxError(f"{atlas.path} has no finished filters to show")
    single = out.suffix.lower() in (".html", ".htm")
    if single and len(names) > 1:
        raise VizjaxError(
            f"--out {out.name} writes one layer's page, and the atlas has {len(names)} layers "
            f"({', '.join(names)}): pick one with --layer, or give a folder for the whole site"
        )
    layout = Layout(out, names[0] if single else None)
    title = title or f"vizjax atlas {Path(atlas.path).name}"
    _check_out(layout, out)
    try:
        layout.root.mkdir(parents=True, exist_ok=True)
        (layout.root / MARKER).write_text(
            "This folder is a vizjax gallery: vizjax gallery may rewrite it.\n", encoding="utf-8"
        )
        _write_text(layout.css, CSS)
        _write_text(layout.js, JS)
        data = [_LayerData(atlas.layers[n]) for n in names]
        for j, d in enumerate(data):
            prev = names[j - 1] if j > 0 and not single else None
            nxt = names[j + 1] if j + 1 < len(names) and not single else None
            for i, f in enumerate(
                tqdm(d.filters, desc=d.name, unit="filter", disable=quiet, file=sys.stderr)
            ):
                images = d.layer.images_of(f)
                for k, im in enumerate(images):
                    _save(im, layout.image(d.name, f, k))
                _save_thumbnail(images[0], layout.thumb(d.name, f))
                ex = d.layer.exemplars(f) if d.exemplar_attrs else None
                if ex:
                    for r, crop in enumerate(ex["crops"]):
                        _save(crop, layout.crop(d.name, f, r))
                nearest = d.layer.nearest(f, NEAREST) if d.measured else []
                _write_text(
                    layout.filter_page(d.name, f),
                    _filter_page(atlas, layout, d, i, images, ex, nearest, title),
                )
            _write_text(layout.layer_page(d.name), _layer_page(layout, d, prev, nxt, title))
        if layout.index is not None:
            _write_text(layout.index, _index_page(atlas, layout, data, title))
            return layout.index
        return layout.layer_page(names[0])
    except OSError as e:
        raise VizjaxError(f"cannot write the gallery to {out}: {e.strerror or e}") from None


# ---------------------------------------------------------------------------------------------
# Checking a site.


class _Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.links: list[tuple[str, str]] = []  # (tag.attr, url)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for name, value in attrs:
            if value is not None and name in ("href", "src"):
                self.links.append((f"{tag}.{name}", value))


def page_links(page: str | os.PathLike) -> list[tuple[str, str]]:
    """Every ``href``/``src`` of an HTML file as ``(tag.attribute, url)``."""
    p = _Links()
    p.feed(Path(page).read_text(encoding="utf-8"))
    return p.links


def resolve(page: str | os.PathLike, url: str) -> Path:
    """The file a relative ``url`` of ``page`` points to (fragment and query dropped)."""
    url = re.split(r"[#?]", url, maxsplit=1)[0]
    return (Path(page).parent / unquote(url)).resolve()


def page_weight(page: str | os.PathLike) -> dict[str, int]:
    """What a browser fetches to show ``page`` completely (every lazy image scrolled into view):
    ``{"html", "css_js", "images", "n_images", "total"}`` in bytes (``n_images`` a count)."""
    page = Path(page)
    seen: set[Path] = set()
    css_js = images = n_images = 0
    for kind, url in page_links(page):
        if kind not in ("img.src", "link.href", "script.src"):
            continue
        target = resolve(page, url)
        if target in seen:
            continue
        seen.add(target)
        size = target.stat().st_size
        if kind == "img.src":
            images += size
            n_images += 1
        else:
            css_js += size
    html_bytes = page.stat().st_size
    return {
        "html": html_bytes,
        "css_js": css_js,
        "images": images,
        "n_images": n_images,
        "total": html_bytes + css_js + images,
    }
