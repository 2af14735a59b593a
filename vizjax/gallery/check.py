"""Checking a written site: the links of a page, the file a link names, and what a browser fetches
to show a page (the tests' link checker and the page-weight figures use them)."""

from __future__ import annotations

import os
import re
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote


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
