"""The gallery's HTML: the index, a layer's page and a filter's page, and the pieces they share
(an atlas' columns in, a page's text out; nothing is written here, :mod:`vizjax.gallery.layout`
says where each page goes)."""

from __future__ import annotations

import html
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from vizjax.gallery.layout import THUMB, Layout, href

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
