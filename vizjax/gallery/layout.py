"""Where a gallery's files go and what all its pages share: the paths of every page and image
(:class:`Layout`), relative links (:func:`href`), the style sheet, the keyboard script, and writing
the files (PNG images, palette thumbnails, text)."""

from __future__ import annotations

import contextlib
import html
import os
from collections.abc import Callable
from pathlib import Path
from urllib.parse import quote

import numpy as np
from PIL import Image

from vizjax import images, names
from vizjax.durable import fault

#: Largest side of a layer page's thumbnails (px). 512 thumbnails of 96 px stay a few MB.
THUMB = 96

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

#: Added to :data:`CSS` when another atlas' pictures are shown beside the site's: a box of two
#: thumbnails, each with its numbers under it.
PAIR_CSS = """\
.f .pic{display:inline-block;width:96px;vertical-align:top}.f.pair{width:196px}
.pic.dead img{opacity:.35}.pic.zsg img{outline:1px dashed #555;outline-offset:-1px}
.pic.bad img{outline:2px solid #c00;outline-offset:-2px}
.big.beside img{border-color:#1a56a8}
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
        # A layer name is the user's (it may hold "/", "..", spaces): its folder is its file stem.
        return self.root if self.single else self.root / names.file_stem(layer)

    def layer_page(self, layer: str) -> Path:
        return self._single_page if self.single else self.layer_dir(layer) / "index.html"

    def filter_page(self, layer: str, f: int) -> Path:
        return self.layer_dir(layer) / f"{f}.html"

    def image(self, layer: str, f: int, k: int, *, beside: bool = False) -> Path:
        """Image ``k`` of filter ``f``: the site's atlas', or (``beside``) the other atlas'."""
        if beside:
            return self.layer_dir(layer) / "beside" / f"{f}_{k}.png"
        return self.layer_dir(layer) / "img" / f"{f}_{k}.png"

    def thumb(self, layer: str, f: int, *, beside: bool = False) -> Path:
        folder = self.layer_dir(layer) / "beside" if beside else self.layer_dir(layer)
        return folder / "thumb" / f"{f}.png"

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
# Writing the files.


#: Prefix of the temp name a gallery file is written under before its rename (a killed gallery
#: leaves no half-written page or PNG, only such a file, which the next run deletes).
TMP_PREFIX = ".tmp-"


def _whole(path: Path, write: Callable[[Path], object]) -> None:
    """``write(tmp)`` beside ``path``, then rename it onto ``path``: killed at any point, the file
    is the old one or the new one, never a truncated one. (Not fsynced: a gallery is rewritten
    from its atlas, so only a kill, not a power cut, needs covering, and 10,000 fsyncs are slow.)"""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{TMP_PREFIX}{os.getpid()}-{path.name}")
    try:
        write(tmp)
        fault("gallery.file")
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def remove_temp_files(root: Path, page: Path | None = None) -> None:
    """Delete the temp files of killed gallery runs under ``root`` (a vizjax gallery folder), and
    ``page``'s own beside it (a one-layer ``NAME.html``: only files named after it)."""
    stale = list(root.rglob(f"{TMP_PREFIX}*"))
    if page is not None:
        stale += page.parent.glob(f"{TMP_PREFIX}[0-9]*-{page.name}")
    for p in stale:
        if p.is_file() and not p.is_symlink():
            with contextlib.suppress(OSError):
                p.unlink()


def _save(image: np.ndarray, path: Path) -> None:
    """Save an ``(H, W, D)`` uint8 image as the PNG of its picture (:func:`vizjax.images.picture`)."""
    im = images.to_pil(image)
    _whole(path, lambda tmp: im.save(tmp, format="PNG", optimize=False))


def _save_thumbnail(image: np.ndarray, path: Path) -> bool:
    """Save ``image`` shrunk to at most THUMB px (aspect kept) as a 256-colour PNG; False (nothing
    written) if it is that small already and can serve as its own thumbnail.

    The palette cuts a layer page's bytes by 60% (the noise-like textures of feature
    visualizations compress badly in RGB: 22.8 -> 8.6 KB per 96 px thumbnail on block5_conv1,
    mean error 3.9 of 255 levels, not visible at that size); the full images stay exact RGB.
    A grayscale picture (:func:`vizjax.images.picture`) has 256 levels already: it stays ``L``.
    """
    h, w = image.shape[:2]
    if max(h, w) <= THUMB:
        return False
    s = THUMB / max(h, w)
    im = images.to_pil(image)
    im = im.resize((max(1, round(w * s)), max(1, round(h * s))), Image.Resampling.LANCZOS)
    if im.mode == "RGB":
        im = im.quantize(256, method=Image.Quantize.FASTOCTREE, dither=Image.Dither.NONE)
    _whole(path, lambda tmp: im.save(tmp, format="PNG"))
    return True


def _write_text(path: Path, text: str) -> None:
    _whole(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))
