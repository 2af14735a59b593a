"""Dataset examples: for every filter of a layer, the natural images that drive it most.

Read top to bottom:

1. :func:`receptive_field` derives each layer's receptive field (size, jump, offset) from the
   architecture table :data:`vizjax.vgg.LAYERS` (3x3 SAME convolutions, 2x2/2 VALID pools).
2. :func:`list_images` and :func:`load_square` turn a folder into a sorted listing and each file
   into a ``(S, S, 3)`` uint8 square: the short side resized to ``S`` (224 by default; bilinear,
   which Pillow antialiases when it shrinks), then the centre ``S x S`` cut out. EXIF rotation is
   applied first. A file Pillow cannot decode (not an image, truncated, ...) is skipped and counted.
3. :func:`compiled_forward` is the one jit: a batch of squares, sharded over the local devices,
   through VGG16 to the deepest requested layer; per image and channel of each layer it returns the
   channel's mean activation and the flat index of its most active unit.
4. :class:`TopK` keeps, per channel, the ``top`` images by mean activation (ties: the earlier image
   in the listing wins), merged batch by batch on the host.
5. :func:`scan` streams the folder through 3+4, checkpointing the top-k state after every batch
   (a small npz, written atomically), so a killed scan resumes from its last committed batch and
   ends with exactly what an uninterrupted one gives (the batches are the same).
6. :func:`cut_crops` cuts the receptive-field box around each exemplar's most active unit out of its
   square (clipped to the square) and resizes it to ``crop_size`` (64 by default).
7. :func:`run_exemplars` joins all of it to an atlas: the atlas' weights (verified by sha256),
   checkpoints beside it, results written with :func:`vizjax.atlas.write_exemplars`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import functools
import hashlib
import json
import os
import sys
import warnings
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec
from PIL import Image, ImageOps

from vizjax import images, vgg
from vizjax.errors import VizjaxError

#: Side of the square every image is resized and centre-cropped to (VGG16's training size).
INPUT_SIZE = 224
#: Side of the stored receptive-field crops: big enough to see a block3 patch, small enough that
#: 512 filters x 9 exemplars stay ~57 MB per layer.
CROP_SIZE = 64
#: Images per jitted forward (rounded up to a multiple of the device count). 16 squares of 224 px
#: keep the CPU's peak memory near 1 GB (block1's activations dominate).
DEFAULT_BATCH = 16
DEFAULT_TOP = 9
#: Version of the checkpoint layout; a checkpoint of another version is ignored (scan restarts).
STATE_VERSION = 1


# ---------------------------------------------------------------------------------------------
# Receptive fields.


@dataclasses.dataclass(frozen=True)
class ReceptiveField:
    """Where a unit of a layer looks, in input pixels, along one axis (VGG16 is square).

    Unit ``i`` of the layer's output grid depends exactly on input pixels
    ``offset + i * jump <= p < offset + i * jump + size`` (``offset`` may be negative: the SAME
    padding reaches outside the image).
    """

    size: int
    jump: int
    offset: int

    def span(self, i: int | np.ndarray) -> tuple[Any, Any]:
        """``(start, stop)`` of unit ``i``'s field, stop exclusive, not clipped."""
        start = self.offset + np.asarray(i) * self.jump
        return start, start + self.size

    def box(self, y: int, x: int, input_size: int) -> tuple[int, int, int, int]:
        """``(y0, x0, y1, x1)`` of unit ``(y, x)``'s field clipped to an ``input_size`` square."""
        y0, y1 = self.span(y)
        x0, x1 = self.span(x)
        clip = functools.partial(np.clip, a_min=0, a_max=input_size)
        return int(clip(y0)), int(clip(x0)), int(clip(y1)), int(clip(x1))


@functools.cache
def receptive_field(layer: str) -> ReceptiveField:
    """The receptive field of ``layer``'s units, derived from :data:`vizjax.vgg.LAYERS`.

    The usual recurrence, one layer at a time, with ``(size, jump, offset)`` starting at
    ``(1, 1, 0)`` (one input pixel): a 3x3 stride-1 SAME convolution widens the field by two input
    steps (``size += 2 * jump``) and, padding one unit on each side, moves its start one step out
    (``offset -= jump``); a 2x2 stride-2 VALID pool widens it by one step (``size += jump``) and
    doubles the step (``jump *= 2``).
    """
    size, jump, offset = 1, 1, 0
    for _, kind, *_ in vgg.LAYERS[: vgg.layer_index(layer) + 1]:
        if kind == "conv":
            k, stride, pad = 3, 1, 1
        elif kind == "pool":
            k, stride, pad = 2, 2, 0
        else:  # a new kind of layer must say how it moves the field
            raise VizjaxError(f"no receptive-field rule for layer kind {kind!r}")
        size += (k - 1) * jump
        offset -= pad * jump
        jump *= stride
    return ReceptiveField(size=size, jump=jump, offset=offset)


# ---------------------------------------------------------------------------------------------
# The folder of images.


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


def load_square(path: str | os.PathLike, size: int = INPUT_SIZE) -> np.ndarray:
    """Read an image as ``(size, size, 3)`` uint8 RGB: EXIF rotation applied, short side resized to
    ``size`` (bilinear, antialiased when shrinking), centre square cut out. 16-bit images are
    scaled and transparent pixels composited over grey, as for start images.

    Raises whatever Pillow raises for a file it cannot decode; :func:`scan` counts those as skipped.
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
        im = images._to_rgb(ImageOps.exif_transpose(im), Path(path))
        w, h = im.size
        scale = size / min(w, h)
        nw, nh = max(size, round(w * scale)), max(size, round(h * scale))
        im = im.resize((nw, nh), Image.Resampling.BILINEAR)
        left, top = (nw - size) // 2, (nh - size) // 2
        return np.asarray(im.crop((left, top, left + size, top + size)), np.uint8)


def _try_load(path: Path, size: int) -> np.ndarray | None:
    try:
        return load_square(path, size)
    except Exception:  # noqa: BLE001 -- any decoding failure means "not an image we can use"
        return None


# ---------------------------------------------------------------------------------------------
# The forward pass: one jit, the image axis sharded over the local devices.


@functools.lru_cache(maxsize=16)
def compiled_forward(
    layers: tuple[str, ...],
    preprocessing: vgg.Preprocessing,
    mesh: Mesh,
    widths: tuple[int, ...] = vgg.WIDTHS,
) -> Callable[[Any, jax.Array], dict[str, tuple[jax.Array, jax.Array]]]:
    """``(params, squares uint8 (B, S, S, 3)) -> {layer: (mean (B, C) f32, argmax (B, C) i32)}``.

    ``mean`` is each channel's mean activation (post-ReLU) over the layer's output grid, ``argmax``
    the flat index ``y * W' + x`` of its most active unit (the first one at ties). ``B`` must be a
    multiple of the mesh size. One ``apply`` per layer: XLA merges the common prefix of the
    network (common-subexpression elimination), so the deepest layer's forward is computed once.
    """
    model = vgg.VGG16(preprocessing=preprocessing, widths=widths)

    def forward(params: Any, squares: jax.Array) -> dict[str, tuple[jax.Array, jax.Array]]:
        x = squares.astype(jnp.float32)
        out = {}
        for layer in layers:
            a = model.apply(params, x, layer)  # (B, H', W', C)
            flat = a.reshape(a.shape[0], -1, a.shape[-1])
            out[layer] = (flat.mean(axis=1), jnp.argmax(flat, axis=1).astype(jnp.int32))
        return out

    # The mesh's one axis is called "filters" (the ascent shards filters over it); here the image
    # axis goes over it.
    replicated = NamedSharding(mesh, PartitionSpec())
    sharded = NamedSharding(mesh, PartitionSpec(mesh.axis_names[0]))
    return jax.jit(forward, in_shardings=(replicated, sharded), out_shardings=sharded)


# ---------------------------------------------------------------------------------------------
# Top-k per channel.


@dataclasses.dataclass
class TopK:
    """The best ``top`` images so far for each of ``C`` channels, best first.

    Attributes:
      activation: float32 (C, top) mean channel activation; -inf where no image yet.
      index: int64 (C, top) position of the image in the listing; -1 where none.
      position: int32 (C, top, 2) ``(y, x)`` of the channel's most active unit in that image.
    """

    activation: np.ndarray
    index: np.ndarray
    position: np.ndarray

    @classmethod
    def empty(cls, channels: int, top: int) -> TopK:
        return cls(
            activation=np.full((channels, top), -np.inf, np.float32),
            index=np.full((channels, top), -1, np.int64),
            position=np.zeros((channels, top, 2), np.int32),
        )

    def update(self, activation: np.ndarray, index: np.ndarray, position: np.ndarray) -> None:
        """Merge a batch: ``activation (N, C)``, ``index (N,)`` (all larger than any held, in
        increasing order), ``position (N, C, 2)``."""
        c, top = self.activation.shape
        act = np.concatenate([self.activation, activation.T.astype(np.float32)], axis=1)
        idx = np.concatenate([self.index, np.broadcast_to(index, (c, len(index)))], axis=1)
        pos = np.concatenate([self.position, position.transpose(1, 0, 2)], axis=1)
        # A stable sort on -activation keeps listing order among equals: held images (earlier in the
        # listing) come before the batch, and the batch is in listing order. So ties go to the
        # earlier image however the listing is cut into batches.
        order = np.argsort(-act, axis=1, kind="stable")[:, :top]
        self.activation = np.take_along_axis(act, order, axis=1)
        self.index = np.take_along_axis(idx, order, axis=1)
        self.position = np.take_along_axis(pos, order[..., None], axis=1)


# ---------------------------------------------------------------------------------------------
# Streaming a folder, resumably.


@dataclasses.dataclass
class ScanResult:
    """What a scan found: the listing, how many files were used and skipped, a TopK per layer."""

    listing: Listing
    n_images: int
    n_skipped: int
    top: dict[str, TopK]
    input_size: int
    #: Files already done by an earlier (killed) run whose checkpoint this scan resumed; 0 if none.
    resumed_from: int = 0


def _save_state(path: Path, identity: dict[str, Any], state: dict[str, Any]) -> None:
    """Write the checkpoint atomically: temp file, fsync, rename, fsync the folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    arrays = {"identity": np.asarray(json.dumps(identity, sort_keys=True))}
    arrays["counts"] = np.asarray([state["next"], state["n_images"], state["n_skipped"]], np.int64)
    for layer, t in state["top"].items():
        arrays[f"{layer}/activation"] = t.activation
        arrays[f"{layer}/index"] = t.index
        arrays[f"{layer}/position"] = t.position
    with open(tmp, "wb") as f:
        np.savez(f, **arrays)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _load_state(path: Path, identity: dict[str, Any]) -> dict[str, Any] | None:
    """The checkpoint at ``path`` if it belongs to the same scan (same identity), else None."""
    if not path.is_file():
        return None
    try:
        with np.load(path) as z:
            if json.loads(str(z["identity"])) != json.loads(json.dumps(identity, sort_keys=True)):
                return None
            nxt, n_images, n_skipped = (int(v) for v in z["counts"])
            top = {
                layer: TopK(z[f"{layer}/activation"], z[f"{layer}/index"], z[f"{layer}/position"])
                for layer in identity["layers"]
            }
    except (OSError, ValueError, KeyError):
        return None  # a damaged or foreign file: start over rather than fail
    return {"next": nxt, "n_images": n_images, "n_skipped": n_skipped, "top": top}


def _batches(
    listing: Listing, start: int, batch: int, size: int
) -> Iterator[tuple[int, int, list[np.ndarray | None]]]:
    """Yield ``(first, stop, squares-or-None)`` per batch from ``start``; the next batch is decoded
    by a thread pool while the current one runs through the network."""
    with ThreadPoolExecutor(max_workers=2) as pool:

        def submit(i: int) -> list[Future]:
            stop = min(i + batch, len(listing))
            return [pool.submit(_try_load, listing.root / p, size) for p in listing.paths[i:stop]]

        pending = submit(start) if start < len(listing) else None
        i = start
        while pending is not None:
            stop = min(i + batch, len(listing))
            following = submit(stop) if stop < len(listing) else None
            yield i, stop, [f.result() for f in pending]
            i, pending = stop, following


def scan(
    image_dir: str | os.PathLike,
    layers: Sequence[str],
    params: Any,
    preprocessing: vgg.Preprocessing,
    *,
    top: int = DEFAULT_TOP,
    batch: int = DEFAULT_BATCH,
    input_size: int = INPUT_SIZE,
    state_path: str | os.PathLike | None = None,
    identity: dict[str, Any] | None = None,
    quiet: bool = True,
    mesh: Mesh | None = None,
) -> ScanResult:
    """Stream every file under ``image_dir`` through VGG16 and keep each channel's top images.

    With ``state_path`` the top-k state is checkpointed after every batch and a checkpoint of the
    same scan (same listing digest, layers, top, input size, preprocessing and ``identity``, e.g.
    the weights' sha256) is resumed; the result equals an uninterrupted scan's. The caller removes
    the checkpoint when it has stored the result.
    """
    from tqdm import tqdm

    from vizjax.ascent import local_mesh

    layers = tuple(dict.fromkeys(layers))
    for layer in layers:
        if vgg.LAYERS[vgg.layer_index(layer)][1] != "conv":
            raise VizjaxError(f"exemplars need a convolution layer, not {layer!r}")
        if vgg.output_hw(layer, input_size, input_size)[0] < 1:
            raise VizjaxError(f"input size {input_size} is too small for {layer}")
    if top < 1 or batch < 1:
        raise VizjaxError("--top and --batch must be positive integers")
    listing = list_images(image_dir)
    mesh = mesh or local_mesh()
    d = mesh.devices.size
    batch = -(-batch // d) * d  # every device gets the same share
    key = {
        "version": STATE_VERSION,
        "listing_sha256": listing.sha256,
        "layers": list(layers),
        "top": top,
        "input_size": input_size,
        "preprocessing": preprocessing.to_json(),
        **(identity or {}),
    }
    state_file = Path(state_path) if state_path is not None else None
    state = _load_state(state_file, key) if state_file is not None else None
    if state is None:
        state = {
            "next": 0,
            "n_images": 0,
            "n_skipped": 0,
            "top": {
                layer: TopK.empty(vgg.num_channels(layer, vgg.widths_of(params)), top)
                for layer in layers
            },
        }
    resumed_from = state["next"]
    fn = compiled_forward(layers, preprocessing, mesh, vgg.widths_of(params))
    grids = {layer: vgg.output_hw(layer, input_size, input_size) for layer in layers}
    bar = tqdm(
        total=len(listing),
        initial=state["next"],
        desc="exemplars",
        unit="img",
        disable=quiet,
        file=sys.stderr,
        dynamic_ncols=True,
        smoothing=0.1,
    )
    with bar:
        for first, stop, squares in _batches(listing, state["next"], batch, input_size):
            ok = [i for i, s in enumerate(squares) if s is not None]
            state["n_skipped"] += len(squares) - len(ok)
            if ok:
                x = np.zeros((batch, input_size, input_size, 3), np.uint8)
                x[: len(ok)] = np.stack([squares[i] for i in ok])
                out = jax.device_get(fn(params, x))
                index = np.asarray([first + i for i in ok], np.int64)
                for layer in layers:
                    mean, flat = out[layer]
                    w = grids[layer][1]
                    pos = np.stack(np.divmod(flat[: len(ok)], w), axis=-1).astype(np.int32)
                    state["top"][layer].update(mean[: len(ok)], index, pos)
                state["n_images"] += len(ok)
            state["next"] = stop
            if state_file is not None:
                _save_state(state_file, key, state)
            bar.update(stop - first)
    return ScanResult(
        listing=listing,
        n_images=state["n_images"],
        n_skipped=state["n_skipped"],
        top=state["top"],
        input_size=input_size,
        resumed_from=resumed_from,
    )


# ---------------------------------------------------------------------------------------------
# Crops and the stored arrays.


def cut_crops(
    result: ScanResult, crop_size: int = CROP_SIZE, quiet: bool = True
) -> dict[str, dict[str, np.ndarray]]:
    """Per layer, the arrays of the atlas' exemplars group (see :func:`vizjax.atlas.write_exemplars`).

    ``{layer: {"paths" (C, top) str, "activation" (C, top) f32, "position" (C, top, 2) i32,
    "box" (C, top, 4) i32 (y0, x0, y1, x1; y1, x1 exclusive), "crops" (C, top, s, s, 3) u8}}``.
    Each image is decoded once for all the crops it gives (every layer, channel and rank); an
    empty slot (fewer readable images than ``top``) has path "", activation NaN, position and box
    -1, a black crop (the schema's fill values).
    """
    from tqdm import tqdm

    s = result.input_size
    out: dict[str, dict[str, np.ndarray]] = {}
    # image index -> [(layer, channel, rank)]
    uses: dict[int, list[tuple[str, int, int]]] = {}
    for layer, t in result.top.items():
        c, top = t.index.shape
        valid = t.index >= 0
        paths = np.full((c, top), "", dtype=object)
        paths[valid] = [result.listing.paths[i] for i in t.index[valid]]
        rf = receptive_field(layer)
        box = np.zeros((c, top, 4), np.int32)
        for ch, r in zip(*np.nonzero(valid), strict=True):
            y, x = t.position[ch, r]
            box[ch, r] = rf.box(int(y), int(x), s)
            uses.setdefault(int(t.index[ch, r]), []).append((layer, int(ch), int(r)))
        out[layer] = {
            "paths": paths,
            "activation": np.where(valid, t.activation, np.nan).astype(np.float32),
            "position": np.where(valid[..., None], t.position, -1).astype(np.int32),
            "box": np.where(valid[..., None], box, -1).astype(np.int32),
            "crops": np.zeros((c, top, crop_size, crop_size, 3), np.uint8),
        }
    for i in tqdm(sorted(uses), desc="crops", unit="img", disable=quiet, file=sys.stderr):
        square = _try_load(result.listing.root / result.listing.paths[i], s)
        if square is None:  # changed since the scan; leave its crops black
            continue
        im = Image.fromarray(square)
        for layer, ch, r in uses[i]:
            y0, x0, y1, x1 = (int(v) for v in out[layer]["box"][ch, r])
            crop = im.crop((x0, y0, x1, y1)).resize(
                (crop_size, crop_size), Image.Resampling.BILINEAR
            )
            out[layer]["crops"][ch, r] = np.asarray(crop, np.uint8)
    return out


# ---------------------------------------------------------------------------------------------
# An atlas' exemplars.


def _weights_for(attrs: dict[str, Any]) -> Any:  # -> Weights
    """The atlas' weights, loaded and checked against its ``weights_sha256``; one line if not."""
    from vizjax.weights import load_weights

    name, sha = attrs.get("weights"), attrs.get("weights_sha256")
    if not name:
        raise VizjaxError("the atlas does not say which weights made it (no 'weights' attribute)")
    try:
        w = load_weights(str(name))
    except VizjaxError as e:
        raise VizjaxError(f"the atlas' weights {name!r} are not available here: {e}") from None
    if sha and w.source_sha256 != sha:
        raise VizjaxError(
            f"the weights {name!r} here (sha256 {w.source_sha256[:12]}...) are not the ones the "
            f"atlas was made with (sha256 {str(sha)[:12]}...)"
        )
    return w


@contextlib.contextmanager
def _scan_lock(path: Path) -> Iterator[None]:
    """One exemplars scan per atlas at a time (the lock is released by the kernel if we die)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise VizjaxError(
                "another vizjax exemplars process is working on this atlas; wait for it"
            ) from None
        yield
    finally:
        os.close(fd)


def run_exemplars(
    atlas_path: str | os.PathLike,
    image_dir: str | os.PathLike,
    layers: Sequence[str] | None = None,
    *,
    top: int = DEFAULT_TOP,
    batch: int = DEFAULT_BATCH,
    input_size: int = INPUT_SIZE,
    crop_size: int = CROP_SIZE,
    quiet: bool = False,
) -> dict[str, Any]:
    """Find the dataset examples of every channel of ``layers`` (default: all the atlas' layers)
    in ``image_dir`` and store them in the atlas; resumable (checkpoint beside the atlas).

    Exemplars already stored for the same listing digest, ``top``, ``input_size`` and
    ``crop_size`` are kept as they are (nothing is computed). Returns
    ``{"layers", "n_images", "n_skipped", "listing_sha256", "up_to_date"}``.
    """
    from vizjax import atlas

    atlas_path = Path(atlas_path)
    if crop_size < 1 or input_size < 1:
        raise VizjaxError("--crop-size and --input-size must be positive integers")
    with atlas.open_atlas(atlas_path) as a:
        attrs, config, have = dict(a.attrs), dict(a.config), list(a.layers)
        stored = {name: layer.exemplar_attrs for name, layer in a.layers.items()}
    layers = list(dict.fromkeys(layers or have))
    for layer in layers:
        vgg.layer_index(layer)
        if layer not in have:
            raise VizjaxError(
                f"the atlas has no layer {layer!r}; it has: {', '.join(have) or 'none'}"
            )
    if not layers:
        raise VizjaxError(f"{atlas_path} has no layers yet")
    image_dir = Path(image_dir)
    listing = list_images(image_dir)  # fails early, before loading weights, on a missing folder
    wanted = {"listing_sha256": listing.sha256, "top": top, "input_size": input_size}
    wanted["crop_size"] = crop_size
    if all(
        stored[layer] and all(stored[layer].get(k) == v for k, v in wanted.items())
        for layer in layers
    ):  # the same folder (paths, sizes, mtimes) with the same settings: nothing would change
        return {
            "layers": layers,
            "n_images": int(stored[layers[0]]["n_images"]),
            "n_skipped": int(stored[layers[0]]["n_skipped"]),
            "listing_sha256": listing.sha256,
            "up_to_date": True,
        }
    w = _weights_for(attrs)
    # The network as the atlas ran it: with the weights' preprocessing unless it was switched off.
    prep = w.preprocessing if config.get("preprocess", True) else vgg.IDENTITY
    state_path = Path(atlas.sidecar_path(atlas_path, "exemplars.state.npz"))
    with _scan_lock(Path(atlas.sidecar_path(atlas_path, "exemplars.lock"))):
        # We hold the lock: a temp checkpoint is a leftover of a killed scan.
        for tmp in state_path.parent.glob(f"{state_path.name}.tmp-*"):
            tmp.unlink(missing_ok=True)
        result = scan(
            image_dir,
            layers,
            w.params,
            prep,
            top=top,
            batch=batch,
            input_size=input_size,
            state_path=state_path,
            identity={"weights_sha256": w.source_sha256},
            quiet=quiet,
        )
        arrays = cut_crops(result, crop_size, quiet=quiet)
        for layer in layers:
            atlas.write_exemplars(
                atlas_path,
                layer,
                arrays[layer],
                {
                    "images_dir": str(image_dir),
                    "listing_sha256": result.listing.sha256,
                    "n_images": result.n_images,
                    "n_skipped": result.n_skipped,
                    "top": top,
                    "input_size": input_size,
                    "receptive_field": receptive_field(layer).size,
                    "crop_size": crop_size,
                    "preprocessing": prep.to_json(),
                },
            )
        state_path.unlink(missing_ok=True)
    return {
        "layers": layers,
        "n_images": result.n_images,
        "n_skipped": result.n_skipped,
        "listing_sha256": result.listing.sha256,
        "up_to_date": False,
    }
