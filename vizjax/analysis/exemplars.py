"""Dataset examples: for every filter of a layer, the natural images that drive it most.

Read top to bottom:

1. :meth:`vizjax.models.network.Network.receptive_field` derives each layer's receptive field (size,
   jump, offset) from the network's layer table (any kernel, stride and padding); a generic model
   (:class:`vizjax.models.generic.GenericModel`, no table) has it measured from the support of a
   unit's input gradient (:mod:`vizjax.models.receptive_field`). :class:`Units` holds where a
   layer's units are and which input box each one sees.
2. :func:`vizjax.images.list_images` and :func:`vizjax.images.load_square` turn a folder into a
   sorted listing and each file
   into a ``(S, S, 3)`` uint8 square: the short side resized to ``S`` (224 by default; bilinear,
   which Pillow antialiases when it shrinks), then the centre ``S x S`` cut out. EXIF rotation is
   applied first. A file Pillow cannot decode (not an image, truncated, ...) is skipped and counted.
   A grayscale model (one input channel) sees each square's luminance; models of other channel
   counts than 1 and 3 are refused (a photo cannot give them).
3. The engine's :func:`vizjax.engine.ascent.compiled_forward`, run by its one chunk/pad/shard loop
   (:func:`vizjax.engine.ascent.map_chunks`): a batch of squares, sharded over the local devices, through
   the network to the deepest requested layer; per image and channel of each layer it returns the
   channel's mean activation and the flat index of its most active unit.
4. :class:`TopK` keeps, per channel, the ``top`` images by mean activation (ties: the earlier image
   in the listing wins), merged batch by batch on the host.
5. :func:`scan` streams the folder through 3+4, checkpointing the top-k state after every batch
   (a small npz, written atomically), so a killed scan resumes from its last committed batch and
   ends with exactly what an uninterrupted one gives (the batches are the same).

   Token layers ``(T, C)`` (a ViT's): an image ranks by the channel's mean over the tokens (what
   the ``channel`` objective maximizes, as the mean over the grid does for a map); its unit is the
   most active token, stored as position ``(0, t)`` (the tokens as a 1 x T grid); its crop is
   that token's box (:func:`vizjax.models.receptive_field.token_boxes`: the token's patch where
   it only sees its patch, the whole image once attention has mixed the tokens).
6. :func:`cut_crops` cuts the receptive-field box around each exemplar's most active unit out of its
   square (clipped to the square) and resizes it to ``crop_size`` (64 by default).
7. :func:`run_exemplars` joins all of it to an atlas: the atlas' weights (verified by sha256),
   checkpoints beside it, results written with :func:`vizjax.atlas.write_exemplars`.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import sys
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh
from PIL import Image

from vizjax import durable, images, models
from vizjax.errors import VizjaxError
from vizjax.models import receptive_field, vgg
from vizjax.models.generic import GenericModel
from vizjax.models.network import IDENTITY, Network, Preprocessing

#: Side of the square every image is resized and centre-cropped to (VGG16's training size).
INPUT_SIZE = images.SQUARE_SIZE
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
# Where a layer's units are.


@dataclasses.dataclass(frozen=True)
class Units:
    """A layer's units on a square input of side ``size``: ``grid`` (rows, cols) of units (a map's
    ``(H', W')``; a token layer's ``(1, T)``), the input ``boxes`` they see, and ``field`` (the
    receptive field's side in px, stored with the exemplars)."""

    grid: tuple[int, int]
    size: int
    field: int
    rf: Any = None  # a spatial layer's ReceptiveField ...
    tokens: np.ndarray | None = None  # ... or a token layer's (T, 4) boxes

    def box(self, y: int, x: int) -> tuple[int, int, int, int]:
        """``(y0, x0, y1, x1)`` of unit ``(y, x)``, clipped to the square (stop exclusive)."""
        if self.tokens is not None:
            y0, x0, y1, x1 = (int(v) for v in self.tokens[x])
            return y0, x0, y1, x1
        return self.rf.box(y, x, self.size)

    @staticmethod
    def of(network: Network | GenericModel, layer: str, size: int) -> Units:
        """The units of ``layer`` of ``network`` at ``size`` px: from the table, or measured."""
        if isinstance(network, Network):
            rf = network.receptive_field(layer)
            return Units(network.output_hw(layer, size, size), size, rf.size, rf=rf)
        return _measured_units(network, layer, size)


@functools.lru_cache(maxsize=32)
def _measured_units(model: GenericModel, layer: str, size: int) -> Units:
    params = model.params

    def layer_of(x: jax.Array) -> jax.Array:
        return model.apply(params, x[None], (layer,))[layer][0]

    shape = model.layer_shapes((size, size))[layer].shape
    if len(shape) == 2:  # (T, C) tokens
        boxes = receptive_field.token_boxes(layer_of, size, model.channels)
        middle = boxes[len(boxes) // 2]
        side = int(max(middle[2] - middle[0], middle[3] - middle[1]))
        return Units((1, int(shape[0])), size, side, tokens=boxes)
    # A conv net's field does not depend on the input size: measure on a larger input where the
    # centre unit's field does not fit this one (a model with a fixed size: at that size only).
    grow = size if model.input_size is not None else 4 * size
    m = receptive_field.measure(layer_of, size, model.channels, max_size=grow)
    return Units((int(shape[0]), int(shape[1])), size, m.field.size, rf=m.field)


# ---------------------------------------------------------------------------------------------
# Streaming a folder, resumably.


@dataclasses.dataclass
class ScanResult:
    """What a scan found: the listing, how many files were used and skipped, a TopK per layer."""

    listing: images.Listing
    n_images: int
    n_skipped: int
    top: dict[str, TopK]
    input_size: int
    #: Files already done by an earlier (killed) run whose checkpoint this scan resumed; 0 if none.
    resumed_from: int = 0
    #: The network scanned (its receptive fields place the crops).
    network: Network | GenericModel = vgg.NETWORK


def _save_state(path: Path, identity: dict[str, Any], state: dict[str, Any]) -> None:
    """Write the checkpoint atomically (:func:`vizjax.durable.write_atomically`)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays = {"identity": np.asarray(json.dumps(identity, sort_keys=True))}
    arrays["counts"] = np.asarray([state["next"], state["n_images"], state["n_skipped"]], np.int64)
    for layer, t in state["top"].items():
        arrays[f"{layer}/activation"] = t.activation
        arrays[f"{layer}/index"] = t.index
        arrays[f"{layer}/position"] = t.position
    durable.write_atomically(path, lambda f: np.savez(f, **arrays))


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
    listing: images.Listing, start: int, batch: int, size: int, channels: int = 3
) -> Iterator[tuple[int, int, list[np.ndarray | None]]]:
    """Yield ``(first, stop, squares-or-None)`` per batch from ``start`` (``channels`` 1: their
    luminance); the next batch is decoded by a thread pool while the current one runs through
    the network."""
    with ThreadPoolExecutor(max_workers=2) as pool:

        def submit(i: int) -> list[Future]:
            stop = min(i + batch, len(listing))
            return [
                pool.submit(images.try_load_square, listing.root / p, size, channels)
                for p in listing.paths[i:stop]
            ]

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
    preprocessing: Preprocessing,
    *,
    top: int = DEFAULT_TOP,
    batch: int = DEFAULT_BATCH,
    input_size: int = INPUT_SIZE,
    state_path: str | os.PathLike | None = None,
    identity: dict[str, Any] | None = None,
    quiet: bool = True,
    mesh: Mesh | None = None,
) -> ScanResult:
    """Stream every file under ``image_dir`` through the network of ``params`` (a table network's
    weights, or a :class:`~vizjax.models.generic.GenericModel`) and keep each channel's top images.

    With ``state_path`` the top-k state is checkpointed after every batch and a checkpoint of the
    same scan (same listing digest, layers, top, input size, preprocessing and ``identity``, e.g.
    the weights' sha256) is resumed; the result equals an uninterrupted scan's. The caller removes
    the checkpoint when it has stored the result.
    """
    from tqdm import tqdm

    from vizjax.engine import ascent, chunk

    layers = tuple(dict.fromkeys(layers))
    network, params = _resolve(params)
    _check_layers(network, layers, input_size)
    if top < 1 or batch < 1:
        raise VizjaxError("--top and --batch must be positive integers")
    listing = images.list_images(image_dir)
    mesh = mesh or ascent.local_mesh()
    batch = chunk.round_to_mesh(batch, mesh)  # every device gets the same share
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
                layer: TopK.empty(_channels(network, layer, input_size), top) for layer in layers
            },
        }
    resumed_from = state["next"]
    fn = ascent.compiled_forward(layers, preprocessing, mesh, network)
    params = jax.device_put(params, ascent.shardings(mesh)[0])  # once, not per batch
    grids = {layer: _grid(network, layer, input_size) for layer in layers}
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
        channels = _input_channels(network)
        for first, stop, squares in _batches(listing, state["next"], batch, input_size, channels):
            ok = [i for i, s in enumerate(squares) if s is not None]
            state["n_skipped"] += len(squares) - len(ok)
            if ok:
                x = np.stack([squares[i] for i in ok])
                index = np.asarray([first + i for i in ok], np.int64)
                for sl, out in ascent.map_chunks(
                    fn, (params,), len(ok), batch, lambda sl, x=x: (x[sl],), mesh
                ):  # one chunk: len(ok) <= batch
                    for layer in layers:
                        mean, flat = out[layer]
                        w = grids[layer][1]
                        pos = np.stack(np.divmod(flat, w), axis=-1).astype(np.int32)
                        state["top"][layer].update(mean, index[sl], pos)
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
        network=network,
    )


def _resolve(params: Any) -> tuple[Network | GenericModel, Any]:
    """``(network, params)``: a generic model with its own params, or a table network's weights."""
    if isinstance(params, GenericModel):
        return params, params.params
    return models.from_params(params), params


def _input_channels(network: Network | GenericModel) -> int:
    """The model's input channels: 3 (RGB photos) or 1 (their luminance, for a grayscale model)."""
    return network.channels if isinstance(network, GenericModel) else 3


def _channels(network: Network | GenericModel, layer: str, size: int) -> int:
    if isinstance(network, Network):
        return network.num_channels(layer)
    return int(network.layer_shapes((size, size))[layer].shape[-1])


def _grid(network: Network | GenericModel, layer: str, size: int) -> tuple[int, int]:
    """The units of ``layer`` as rows x cols: a map's ``(H', W')``, a token layer's ``(1, T)``."""
    if isinstance(network, Network):
        return network.output_hw(layer, size, size)
    shape = network.layer_shapes((size, size))[layer].shape
    return (1, int(shape[0])) if len(shape) == 2 else (int(shape[0]), int(shape[1]))


def _check_layers(network: Network | GenericModel, layers: Sequence[str], input_size: int) -> None:
    """Exemplars need convolutions whose output grid is at least 1x1 at ``input_size`` (a generic
    model: layers with (H', W', C) maps or (T, C) tokens, of an RGB or grayscale model that takes
    the size)."""
    if isinstance(network, GenericModel):
        if network.channels not in (1, 3):
            raise VizjaxError(
                f"exemplars are photos (RGB, or their luminance for a grayscale model); "
                f"{network.name} takes {network.channels}-channel input, which a photo cannot give"
            )
        if network.input_size is not None and network.input_size != input_size:
            raise VizjaxError(
                f"{network.name} takes {network.input_size}x{network.input_size} inputs only "
                f"(use --input-size {network.input_size})"
            )
        for layer in layers:
            network.layer_index(layer)
            if len(network.layer_shapes((input_size, input_size))[layer].shape) not in (2, 3):
                raise VizjaxError(f"exemplars need (H, W, C) maps or (T, C) tokens: {layer!r}")
        return
    for layer in layers:
        if network.layer(layer).kind != "conv":
            raise VizjaxError(f"exemplars need a convolution layer, not {layer!r}")
        if network.output_hw(layer, input_size, input_size)[0] < 1:
            raise VizjaxError(f"input size {input_size} is too small for {layer}")


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
    -1, a black crop (the schema's fill values). A grayscale model's crops show what it saw: the
    luminance (as RGB, every channel equal).
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
        units = Units.of(result.network, layer, s)
        box = np.zeros((c, top, 4), np.int32)
        for ch, r in zip(*np.nonzero(valid), strict=True):
            y, x = t.position[ch, r]
            box[ch, r] = units.box(int(y), int(x))
            uses.setdefault(int(t.index[ch, r]), []).append((layer, int(ch), int(r)))
        out[layer] = {
            "paths": paths,
            "activation": np.where(valid, t.activation, np.nan).astype(np.float32),
            "position": np.where(valid[..., None], t.position, -1).astype(np.int32),
            "box": np.where(valid[..., None], box, -1).astype(np.int32),
            "crops": np.zeros((c, top, crop_size, crop_size, 3), np.uint8),
        }
    channels = _input_channels(result.network)
    for i in tqdm(sorted(uses), desc="crops", unit="img", disable=quiet, file=sys.stderr):
        square = images.try_load_square(result.listing.root / result.listing.paths[i], s, channels)
        if square is None:  # changed since the scan; leave its crops black
            continue
        im = images.to_pil(square).convert("RGB")
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
    from vizjax.models.weights import load_weights

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


def _same_json(a: Any, b: Any) -> bool:
    """Whether two JSON texts hold the same value (False if either is not JSON)."""
    try:
        return json.loads(a) == json.loads(b)
    except (TypeError, ValueError):
        return False


def _scan_lock(path: Path) -> durable.FileLock:
    """One exemplars scan per atlas at a time (the lock is released by the kernel if we die)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    return durable.FileLock(
        path,
        lambda pid: VizjaxError(
            f"another vizjax exemplars process (pid {pid}) is working on this atlas; wait for it"
        ),
    )


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
    model: GenericModel | None = None,
) -> dict[str, Any]:
    """Find the dataset examples of every channel of ``layers`` (default: all the atlas' layers)
    in ``image_dir`` and store them in the atlas; resumable (checkpoint beside the atlas).

    ``model``: the generic model an atlas of one was made with (``vizjax exemplars --model``; its
    weights' fingerprint must be the atlas'); None for the built-in networks, whose weights the
    atlas names.

    Exemplars already stored for the same listing digest, ``top``, ``input_size`` and
    ``crop_size`` are kept as they are (nothing is computed). Returns
    ``{"layers", "n_images", "n_skipped", "listing_sha256", "up_to_date"}``.
    """
    from vizjax import atlas
    from vizjax.atlas.identity import check_model
    from vizjax.config import read_config

    atlas_path = Path(atlas_path)
    # Every setting is checked before anything (lock, checkpoint) is created.
    if crop_size < 1 or input_size < 1:
        raise VizjaxError("--crop-size and --input-size must be positive integers")
    if top < 1 or batch < 1:
        raise VizjaxError("--top and --batch must be positive integers")
    with atlas.open_atlas(atlas_path) as a:
        attrs, config, have = dict(a.attrs), dict(a.config), list(a.layers)
        stored = {name: layer.exemplar_attrs for name, layer in a.layers.items()}
    layers = list(dict.fromkeys(layers or have))
    # The atlas' model: names, kinds, sizes and receptive fields do not depend on its widths.
    check_model(atlas_path, attrs, model.identity() if model is not None else None)
    network: Network | GenericModel = (
        model
        if model is not None
        else models.network(str(attrs.get("model", models.DEFAULT_MODEL)))
    )
    for layer in layers:
        network.layer_index(layer)
        if layer not in have:
            raise VizjaxError(
                f"the atlas has no layer {layer!r}; it has: {', '.join(have) or 'none'}"
            )
    if not layers:
        raise VizjaxError(f"{atlas_path} has no layers yet")
    _check_layers(network, layers, input_size)
    image_dir = Path(image_dir)
    listing = images.list_images(
        image_dir
    )  # fails early, before loading weights, on a missing folder
    wanted = {"listing_sha256": listing.sha256, "top": top, "input_size": input_size}
    wanted["crop_size"] = crop_size
    # The network as the atlas ran it: with the weights' preprocessing unless it was switched off.
    preprocess = read_config(config).recipe.preprocess
    prep_json = attrs.get("preprocessing", "{}") if preprocess else IDENTITY.to_json()
    if all(
        stored[layer]
        and all(stored[layer].get(k) == v for k, v in wanted.items())
        and _same_json(stored[layer].get("preprocessing"), prep_json)
        for layer in layers
    ):  # the same folder (paths, sizes, mtimes) with the same settings: nothing would change
        return {
            "layers": layers,
            "n_images": int(stored[layers[0]]["n_images"]),
            "n_skipped": int(stored[layers[0]]["n_skipped"]),
            "listing_sha256": listing.sha256,
            "up_to_date": True,
        }
    if isinstance(network, GenericModel):
        params: Any = network
        prep = Preprocessing.from_dict(json.loads(prep_json))
        weights_id = network.fingerprint()
    else:
        w = _weights_for(attrs)
        params, prep, weights_id = (
            w.params,
            w.preprocessing if preprocess else IDENTITY,
            w.source_sha256,
        )
    state_path = Path(atlas.sidecar_path(atlas_path, "exemplars.state.npz"))
    with _scan_lock(Path(atlas.sidecar_path(atlas_path, "exemplars.lock"))):
        # We hold the lock: a temp checkpoint is a leftover of a killed scan.
        for tmp in state_path.parent.glob(f".{state_path.name}.tmp-*"):
            tmp.unlink(missing_ok=True)
        result = scan(
            image_dir,
            layers,
            params,
            prep,
            top=top,
            batch=batch,
            input_size=input_size,
            state_path=state_path,
            identity={"weights_sha256": weights_id},
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
                    "receptive_field": Units.of(network, layer, input_size).field,
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
