"""Layer names where they leave Python: file names, HDF5 link names, HTML.

A layer name comes from the user's model (a Flax module path ``ResNet_0/Stage_3/Block_5``, a
Keras layer name, anything): it may hold ``/``, spaces, quotes, ``..``, ``<script>`` or any
unicode. Every place that turns one into a file name, an HDF5 group name or page text goes
through one function here, so no name can leave its folder, nest groups, collide with another
name or inject markup:

- :func:`file_stem`: the file-name part (segment files, exemplar files, gallery folders). A
  *plain* name (lowercase ASCII letters, digits, ``_`` and ``-``; every built-in network's) is its
  own stem, so atlases and galleries written before read and look the same. Any other name becomes
  a readable slug plus ``~`` and a hash of the whole name: ``ResNet_0/Stage_3`` ->
  ``ResNet_0_Stage_3~6c1f0e9a2b``. No plain name holds ``~`` and the hash is of the exact name,
  so two names never share a stem, also on case-insensitive file systems (``Conv`` and ``conv``
  differ in their hash, ``conv`` has none).
- :func:`h5_key` / :func:`from_h5_key`: the name of the layer's group under ``/layers`` in the
  atlas index: ``%`` and ``/`` percent-encoded (``/`` would make nested groups), and a name that
  is only ``.`` (HDF5's "this group") as ``%2E``; every other character as it is, so plain h5py
  shows ``f["layers"]`` with readable keys, and every name an atlas held before is its own key.
- :func:`html_text`: text for HTML (element text and quoted attribute values alike).

Pure; no I/O.
"""

from __future__ import annotations

import hashlib
import html
import re

#: Names that are their own file stem (and were the only names atlases took before issue 29).
_PLAIN = re.compile(r"^[a-z0-9_\-]{1,80}$")
#: Runs of characters a slug drops (anything but ASCII letters, digits, ``_`` and ``-``).
_UNSAFE = re.compile(r"[^A-Za-z0-9_\-]+")
#: Characters of the slug part of a hashed stem (the stem stays well under file systems' 255 bytes).
_SLUG_CHARS = 48
#: What :func:`h5_key` escapes.
_ESCAPED = re.compile(r"%(25|2F)")
#: Hex digits of the hash in a stem (40 bits).
_HASH_CHARS = 10


def problem(layer: object) -> str | None:
    """Why ``layer`` cannot be a layer name (not a string, empty, or holding a NUL character, which
    HDF5 and file systems cannot store), or None if it can."""
    if not isinstance(layer, str):
        return f"a layer name must be text, not {type(layer).__name__}"
    if not layer:
        return "a layer name must not be empty"
    if "\x00" in layer:
        return f"layer name {layer!r} holds a NUL character"
    return None


def file_stem(layer: str) -> str:
    """The part of a file or folder name that stands for ``layer``: ``layer`` itself if plain
    (see the module docstring), else ``<slug>~<hash>`` with only ``[A-Za-z0-9_-~]`` in it."""
    if _PLAIN.match(layer):
        return layer
    slug = _UNSAFE.sub("_", layer)[:_SLUG_CHARS] or "layer"
    digest = hashlib.sha256(layer.encode("utf-8", "surrogatepass")).hexdigest()[:_HASH_CHARS]
    return f"{slug}~{digest}"


def h5_key(layer: str) -> str:
    """The name of ``layer``'s group under ``/layers`` in an atlas (one HDF5 link name)."""
    if layer == ".":
        return "%2E"
    return layer.replace("%", "%25").replace("/", "%2F")


def from_h5_key(key: str) -> str:
    """The layer name a group under ``/layers`` stands for (inverse of :func:`h5_key`)."""
    if key == "%2E":
        return "."
    return _ESCAPED.sub(lambda m: "/" if m[1] == "2F" else "%", key)


def html_text(text: object) -> str:
    """``text`` as HTML: ``& < > " '`` escaped (safe as element text and in quoted attributes)."""
    return html.escape(str(text), quote=True)
