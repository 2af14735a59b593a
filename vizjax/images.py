"""Image files and pictures: start images in, PNGs and grids out (the gallery site is gallery/).

Everything here is I/O or pure numpy layout; nothing is differentiated.

The one place where an image of a model's C input channels becomes a picture (:func:`picture`,
described by :func:`view`): every PNG, grid and gallery image goes through it. C = 1: grayscale;
C = 2: grayscale of the two channels' mean; C = 3: RGB as it is; C > 3: the first three channels
as RGB (the others are not shown).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import math
import os
import warnings
from collections.abc import Sequence
from importlib import resources
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageOps

from vizjax.durable import write_atomically
from vizjax.errors import VizjaxError

#: The seed article's "How about a cat?" photo: Chelsea the cat (CC0, Stefan van der Walt, from
#: scikit-image's sample data), shipped with vizjax.
CAT = "chelsea.png"


def sample_path(name: str = CAT) -> Path:
    """Path of a sample image shipped in ``vizjax/data``."""
    return Path(str(resources.files("vizjax").joinpath("data", name)))


#: The largest start image read at its own size (a side), and the most pixels decoded at all: a
#: file declaring more (a decompression bomb: a few KB that decode to gigabytes) is refused from
#: its header, before any pixel is decoded. With ``--size`` a larger photo is resized down.
MAX_START_SIDE = 4096
MAX_START_PIXELS = 8192 * 8192
#: Colour of transparent pixels: the mean of the start noise, so they start as the noise would.
TRANSPARENT_FILL = (127, 127, 127)


def load_image(
    path: str | os.PathLike, size: tuple[int, int] | None = None, channels: int = 3
) -> np.ndarray:
    """Read an image file as float32 (H, W, 3) RGB on a 0-255 scale, resized to ``size`` (h, w) if given.
    ``channels=1``: (H, W, 1), its luminance (Pillow's ``L``), for a grayscale model.

    Any PIL format; the first frame of an animation; 16-bit images scaled to 0-255; transparent
    pixels composited over :data:`TRANSPARENT_FILL`. One-line VizjaxError for anything else
    (missing, not an image, truncated, floating point, empty, too large).
    """
    p = Path(path)
    if not p.exists():
        raise VizjaxError(f"start image {p} does not exist")
    if not p.is_file():
        raise VizjaxError(f"start image {p} is not a file")
    try:
        with warnings.catch_warnings():
            # PIL warns (on stderr) of big images; we refuse them ourselves below, in one line.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im = Image.open(p)
        with im:
            w, h = im.size
            if w * h > MAX_START_PIXELS or (size is None and max(w, h) > MAX_START_SIDE):
                raise VizjaxError(
                    f"start image {p} is {w}x{h} px; vizjax reads at most {MAX_START_SIDE} px a "
                    f"side at the image's own size (pass --size to resize one of up to "
                    f"{MAX_START_PIXELS // 1_000_000} megapixels)"
                )
            if min(w, h) < 1:
                raise VizjaxError(f"start image {p} is empty ({w}x{h} px)")
            im.seek(0)  # an animation: its first frame
            rgb = _to_rgb(im, p)
            if size is not None:
                rgb = rgb.resize((size[1], size[0]), Image.Resampling.BILINEAR)
            if channels == 1:
                return np.asarray(rgb.convert("L"), dtype=np.float32)[..., None]
            return np.asarray(rgb, dtype=np.float32)
    except VizjaxError:
        raise
    except Exception as e:
        # PIL's decoders report damaged files as any of OSError, ValueError, EOFError,
        # SyntaxError, struct.error, DecompressionBombError...: all mean "not readable" here.
        raise VizjaxError(f"start image {p} is not a readable image ({e})") from None


def _to_rgb(im: Image.Image, p: Path) -> Image.Image:
    """An 8-bit RGB copy of any PIL image mode (``convert("RGB")`` alone clips 16-bit values at
    255 and drops alpha, which leaves whatever colour the transparent pixels happen to hold)."""
    if im.mode in ("I", "I;16", "I;16L", "I;16B", "I;16N"):
        # 16-bit greys (PIL opens 16-bit PNG and TIFF greys as I or I;16): 65535 -> 255.
        a = np.asarray(im, np.float64) / 257.0
        grey = Image.fromarray(np.clip(np.round(a), 0, 255).astype(np.uint8), "L")
        return grey.convert("RGB")
    if im.mode == "F":
        raise VizjaxError(
            f"start image {p} holds floating-point pixels of no defined range; save it as an "
            "8- or 16-bit image"
        )
    if im.mode in ("RGBA", "LA", "PA", "La", "RGBa") or (
        im.mode == "P" and "transparency" in im.info
    ):
        im = im.convert("RGBA")
        background = Image.new("RGBA", im.size, (*TRANSPARENT_FILL, 255))
        return Image.alpha_composite(background, im).convert("RGB")
    return im.convert("RGB")


# --------------------------------------------------------------------------------------------------
# Pictures of any channel count.


def view(channels: int) -> str:
    """How :func:`picture` shows an image of ``channels`` channels, in words (the gallery and
    ``vizjax info`` say it)."""
    if channels == 1:
        return "grayscale"
    if channels == 2:
        return "grayscale: the mean of the 2 channels"
    if channels == 3:
        return "RGB"
    return f"channels 0, 1, 2 of {channels} as RGB"


def picture(image: np.ndarray) -> np.ndarray:
    """``(..., H, W, C)`` uint8 image(s) of a model's C channels -> what is shown: ``(..., H, W)``
    grayscale for C = 1 and 2 (2: the channels' mean), ``(..., H, W, 3)`` RGB for C >= 3 (the
    first three channels). An ``(H, W)`` array is grayscale already."""
    image = np.asarray(image)
    if image.ndim == 2:
        return image.astype(np.uint8, copy=False)
    c = image.shape[-1]
    if c == 1:
        return image[..., 0].astype(np.uint8, copy=False)
    if c == 2:
        return np.round(image.astype(np.float32).mean(axis=-1)).astype(np.uint8)
    return image[..., :3].astype(np.uint8, copy=False)


def to_pil(image: np.ndarray) -> Image.Image:
    """The PIL picture (mode ``L`` or ``RGB``) of an ``(H, W, C)`` uint8 image (:func:`picture`)."""
    pic = picture(image)
    return Image.fromarray(pic, "L" if pic.ndim == 2 else "RGB")


#: The PNG text chunk that marks a picture vizjax wrote: only such a file is ever overwritten.
PNG_MARK = ("Software", "vizjax")


def check_png_target(path: str | os.PathLike) -> Path:
    """``path`` as a Path if a PNG may be written there: nothing is there, or a PNG that vizjax
    wrote (its :data:`PNG_MARK`). VizjaxError (one line naming the file) otherwise, so a user's
    picture or any other file is never replaced. Call it before computing anything."""
    p = Path(path)
    if not p.exists() and not p.is_symlink():
        return p
    if p.is_file() and not p.is_symlink():
        try:
            with Image.open(p) as im:
                ours = im.format == "PNG" and im.info.get(PNG_MARK[0]) == PNG_MARK[1]
        except (OSError, ValueError, Image.DecompressionBombError):
            ours = False
        if ours:
            return p
    raise VizjaxError(f"{p} exists and is not a PNG vizjax wrote; give a new file name")


def save_png(image: np.ndarray, path: str | os.PathLike) -> Path:
    """Write a uint8 ``(H, W, C)`` (or ``(H, W)``) image as the PNG of its :func:`picture` (mode L
    for grayscale, RGB otherwise; marked :data:`PNG_MARK`), creating the parent directory;
    VizjaxError if ``path`` holds a file vizjax did not write (:func:`check_png_target`)."""
    from PIL.PngImagePlugin import PngInfo

    p = check_png_target(path)
    info = PngInfo()
    info.add_text(*PNG_MARK)
    try:
        p.parent.mkdir(parents=True, exist_ok=True)
        im = to_pil(image)
        # Whole or not at all: a killed command leaves no truncated PNG (which the rerun could
        # not tell from a user's file, and so would refuse to replace).
        write_atomically(p, lambda f: im.save(f, format="PNG", pnginfo=info))
    except OSError as e:
        raise VizjaxError(f"cannot write {p}: {e.strerror or e}") from None
    return p


LABEL_H = 12


def grid(
    images: np.ndarray,
    labels: Sequence[str] | None = None,
    cols: int | None = None,
    pad: int = 2,
    background: int = 255,
) -> np.ndarray:
    """Tile ``images (n, H, W, C)`` uint8 into one picture, ``cols`` per row (default ~sqrt(n)).

    Each tile is ``pad`` px apart and from the border; with ``labels`` a ``LABEL_H`` px strip
    under each tile carries its text. Size: ``(rows*(H+lh+pad)+pad, cols*(W+pad)+pad, 3)``, or
    without the last axis where the tiles' :func:`picture` is grayscale (C = 1 or 2).
    """
    images = picture(np.asarray(images, np.uint8))
    n, h, w = images.shape[:3]
    if n == 0:
        raise VizjaxError("no images to put in a grid")
    cols = max(1, min(cols or math.ceil(math.sqrt(n)), n))
    rows = math.ceil(n / cols)
    lh = LABEL_H if labels is not None else 0
    shape = (rows * (h + lh + pad) + pad, cols * (w + pad) + pad, *images.shape[3:])
    out = np.full(shape, background, np.uint8)
    for i, im in enumerate(images):
        r, c = divmod(i, cols)
        y, x = pad + r * (h + lh + pad), pad + c * (w + pad)
        out[y : y + h, x : x + w] = im
    if labels is not None:
        canvas = Image.fromarray(out)
        draw = ImageDraw.Draw(canvas)
        for i, text in enumerate(labels):
            r, c = divmod(i, cols)
            xy = (pad + c * (w + pad) + 1, pad + r * (h + lh + pad) + h)
            draw.text(xy, str(text), fill=0 if out.ndim == 2 else (0, 0, 0))
        out = np.asarray(canvas)
    return out


# --------------------------------------------------------------------------------------------------
# A folder of images (the exemplars' dataset).

#: Side of the squares :func:`load_square` cuts by default (VGG16's training size).
SQUARE_SIZE = 224


@dataclasses.dataclass(frozen=True)
class Listing:
    """The files under a folder, sorted by relative POSIX path, with their sizes and mtimes."""

    root: Path
    paths: tuple[str, ...]
    sizes: tuple[int, ...]
    mtimes_ns: tuple[int, ...]

    def __len__(self) -> int:
        return len(self.paths)

    @functools.cached_property
    def sha256(self) -> str:
        """sha256 of ``path \\t size \\t mtime_ns \\n`` per file: changes when any file does."""
        h = hashlib.sha256()
        for p, s, m in zip(self.paths, self.sizes, self.mtimes_ns, strict=True):
            h.update(f"{p}\t{s}\t{m}\n".encode())
        return h.hexdigest()


def list_images(root: str | os.PathLike) -> Listing:
    """Every regular file under ``root`` (recursive, sorted). Which ones are images is decided
    when they are read: a file Pillow cannot decode is skipped and counted, whatever its name."""
    root = Path(root)
    if not root.is_dir():
        raise VizjaxError(f"image folder {root} does not exist or is not a folder")
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in filenames:
            p = Path(dirpath) / name
            try:
                st = p.stat()
            except OSError:
                continue  # vanished or a dangling link: nothing to read
            if p.is_file():
                found.append((p.relative_to(root).as_posix(), st.st_size, st.st_mtime_ns))
    found.sort()
    return Listing(
        root=root,
        paths=tuple(f[0] for f in found),
        sizes=tuple(f[1] for f in found),
        mtimes_ns=tuple(f[2] for f in found),
    )


def load_square(path: str | os.PathLike, size: int = SQUARE_SIZE, channels: int = 3) -> np.ndarray:
    """Read an image as ``(size, size, 3)`` uint8 RGB: EXIF rotation applied, short side resized to
    ``size`` (bilinear, antialiased when shrinking), centre square cut out. 16-bit images are
    scaled and transparent pixels composited over grey, as for start images. ``channels=1``:
    ``(size, size, 1)``, the square's luminance (Pillow's ``L``: 0.299 R + 0.587 G + 0.114 B),
    for a grayscale model.

    Raises whatever Pillow raises for a file it cannot decode; :func:`vizjax.analysis.exemplars.scan` counts those as skipped.
    """
    with warnings.catch_warnings():
        # Very large images: Pillow warns on stderr, once per file; past twice its limit it
        # raises, and the file is skipped like any other it cannot read.
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        im = Image.open(path)
    with im:
        # A JPEG decodes straight to the smallest 1/2, 1/4 or 1/8 scale that still covers
        # size x size: a 12-megapixel photo is read ~8x faster, and the resize below follows.
        im.draft("RGB", (size, size))
        im = _to_rgb(ImageOps.exif_transpose(im), Path(path))
        w, h = im.size
        scale = size / min(w, h)
        nw, nh = max(size, round(w * scale)), max(size, round(h * scale))
        im = im.resize((nw, nh), Image.Resampling.BILINEAR)
        left, top = (nw - size) // 2, (nh - size) // 2
        square = im.crop((left, top, left + size, top + size))
        if channels == 1:
            return np.asarray(square.convert("L"), np.uint8)[..., None]
        return np.asarray(square, np.uint8)


def try_load_square(path: Path, size: int, channels: int = 3) -> np.ndarray | None:
    """:func:`load_square`, or None for a file it cannot decode."""
    try:
        return load_square(path, size, channels)
    except Exception:  # noqa: BLE001 -- any decoding failure means "not an image we can use"
        return None
