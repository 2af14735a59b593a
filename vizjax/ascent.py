"""The batched gradient-ascent engine: every filter of a layer in one compiled program.

Read top to bottom:

1. :func:`ascend_one` optimizes ONE image for ONE filter (the seed article's "classic" recipe):
   ``g = d objective / d x;  g /= sqrt(mean(g**2)) + 1e-5;  x += step_size * g``, the whole step
   loop inside ``lax.scan`` so no step returns to the host.
2. :func:`compiled_ascent` is the only place that batches and compiles: ``jax.vmap`` over filter
   indices, ``jax.jit`` with the filter axis sharded over every local device (a 1-D ``Mesh``).
3. :func:`iter_chunks` cuts a run into chunks (padding the last), runs them, and yields numpy
   :class:`Results` with the padding removed; :func:`visualize` collects them.

A filter's result depends only on (weights, layer, filter, config): never on the chunk size, the
padding, its neighbours in the chunk, or the number of devices or processes.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import math
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from vizjax import vgg
from vizjax.config import DEFAULT_SIZE, AscentConfig
from vizjax.errors import VizjaxError

#: How many times the batched program was traced, per (layer, chunk size). Tests read it: a run
#: must trace once per chunk shape, not once per chunk.
TRACES: collections.Counter[tuple[str, int]] = collections.Counter()

#: Filters per device per chunk that ``batch="auto"`` allows on accelerators, which want big
#: batches and are limited by memory instead (see :func:`auto_chunk`).
AUTO_CAP_DEFAULT = 512


def cpu_filters_per_device(layer: str, height: int, width: int) -> int:
    """How many filters one CPU program should optimize at once (measured on a 2-core CPU).

    One image at a time is fastest while the target layer is large: the working set stays in
    cache. When the target layer's output is small (at most 64Ki values: block5 at 64-128 px,
    block3 at 64 px), the matrix products get too small to keep the cores busy and 8 filters per
    program are 1.1-1.9x faster (bench/README.md, scaling table).
    """
    h, w = vgg.output_hw(layer, height, width)
    return 8 if h * w * vgg.num_channels(layer) <= 65536 else 1


@dataclasses.dataclass(frozen=True)
class Results:
    """Results for ``n`` filters of one layer (numpy, host memory).

    Attributes:
      filters: int32 (n,) filter indices.
      images: uint8 (n, H, W, 3) display images (Chollet's deprocess).
      raw: float32 (n, H, W, 3) optimized images in RGB 0-255 units, unclipped.
      objective: float32 (n, steps + 1) the objective before each step and after the last.
      dead: bool (n,) the gradient was exactly zero at the start, so the image never moved.
    """

    layer: str
    filters: np.ndarray
    images: np.ndarray
    raw: np.ndarray
    objective: np.ndarray
    dead: np.ndarray

    def __len__(self) -> int:
        return len(self.filters)

    @staticmethod
    def concat(parts: Sequence[Results]) -> Results:
        if not parts:
            raise VizjaxError("no results to concatenate")
        cat = {
            f.name: np.concatenate([getattr(p, f.name) for p in parts])
            for f in dataclasses.fields(Results)
            if f.name != "layer"
        }
        return Results(layer=parts[0].layer, **cat)


# ---------------------------------------------------------------------------------------------
# One image, one filter.


def deprocess(x: jax.Array) -> jax.Array:
    """Chollet's display transform: standardize, x0.1, +0.5, clip to [0, 1], x255, uint8 (truncating)."""
    x = x - jnp.mean(x)
    x = x / (jnp.std(x) + 1e-5)
    x = jnp.clip(x * 0.1 + 0.5, 0.0, 1.0)
    return (x * 255.0).astype(jnp.uint8)


def noise_image(config: AscentConfig) -> jax.Array:
    """The shared start image: N(noise_mean, noise_std), ``config.size`` (default 128x128), float32."""
    h, w = config.size or DEFAULT_SIZE
    key = jax.random.key(config.seed)
    return config.noise_mean + config.noise_std * jax.random.normal(key, (h, w, 3), jnp.float32)


def filter_key(seed: int, layer: str, f: jax.Array | int) -> jax.Array:
    """Per-filter randomness for recipes that need it: ``fold_in(fold_in(key(seed), layer), f)``."""
    return jax.random.fold_in(jax.random.fold_in(jax.random.key(seed), vgg.layer_index(layer)), f)


#: Convolutions computed by Winograd F(2x2, 3x3) when ``conv`` is "winograd" (or "auto" on CPU):
#: blocks 2-5, where it measured faster on XLA:CPU (+28% at block3_conv3, +36% at block5_conv1,
#: 128 px; bench/README.md). On block1 (3 and 64 input channels at full resolution) XLA's own
#: convolution was faster.
WINOGRAD_LAYERS = tuple(n for n in vgg.CONV_LAYERS if not n.startswith("block1"))


def make_model(
    preprocessing: vgg.Preprocessing, config: AscentConfig, platform: str = "cpu"
) -> vgg.VGG16:
    """The network a config asks for: preprocessing on or off, dtype, convolution algorithm."""
    prep = preprocessing if config.preprocess else vgg.IDENTITY
    wino = config.conv == "winograd" or (config.conv == "auto" and platform == "cpu")
    return vgg.VGG16(
        preprocessing=prep,
        dtype=jnp.dtype(config.dtype),
        winograd=WINOGRAD_LAYERS if wino else (),
    )


def objective(
    model: vgg.VGG16,
    params: Any,
    x: jax.Array,
    layer: str,
    f: jax.Array | int,
    whole_layer: bool = False,
) -> jax.Array:
    """Mean activation of channel ``f`` of ``layer`` for one image ``x (H, W, 3)`` (float32 scalar).

    By default the target convolution computes only channel ``f``. With ``whole_layer`` it computes
    every channel and then picks ``f``: more arithmetic, but under ``vmap`` with several filters per
    device a per-filter kernel column turns into a grouped convolution, which XLA:CPU runs several
    times slower than the whole layer (bench/README.md).
    """
    if whole_layer:
        out = jnp.take(model.apply(params, x, layer), f, axis=-1)
    else:
        out = model.apply(params, x, layer, channel=f)
    return jnp.mean(out.astype(jnp.float32))


def ascend_one(
    model: vgg.VGG16,
    params: Any,
    x0: jax.Array,
    f: jax.Array | int,
    *,
    layer: str,
    steps: int,
    step_size: float,
    unroll: int = 1,
    whole_layer: bool = False,
) -> dict[str, jax.Array]:
    """The classic recipe for one filter. Returns raw (H, W, 3), image, objective (steps+1,), dead."""
    value_and_grad = jax.value_and_grad(
        lambda x: objective(model, params, x, layer, f, whole_layer)
    )

    def step(x: jax.Array, _: None) -> tuple[jax.Array, tuple[jax.Array, jax.Array]]:
        value, g = value_and_grad(x)
        rms = jnp.sqrt(jnp.mean(jnp.square(g)))
        return x + step_size * (g / (rms + 1e-5)), (value, rms)

    x, (values, rms) = lax.scan(step, x0.astype(jnp.float32), None, length=steps, unroll=unroll)
    final = objective(model, params, x, layer, f, whole_layer)
    return {
        "raw": x,
        "images": deprocess(x),
        "objective": jnp.concatenate([values, final[None]]),
        "dead": rms[0] == 0.0,
    }


# ---------------------------------------------------------------------------------------------
# Many filters, one compiled program, every local device.


def local_mesh(devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A 1-D mesh named ``filters`` over ``devices`` (default: every device of this process)."""
    return Mesh(np.array(list(devices or jax.local_devices())), ("filters",))


@functools.lru_cache(maxsize=64)
def compiled_ascent(
    layer: str, preprocessing: vgg.Preprocessing, config: AscentConfig, mesh: Mesh
) -> Callable[[Any, jax.Array, jax.Array], dict[str, jax.Array]]:
    """The jitted, vmapped program ``(params, x0, filters[chunk]) -> dict of (chunk, ...) arrays``.

    The one jit boundary of vizjax: params and the start image are replicated, the filter axis of
    inputs and outputs is sharded over ``mesh``. Cached per (layer, config, mesh); jax caches the
    compiled executable per chunk shape.
    """
    platform = mesh.devices.flat[0].platform
    model = make_model(preprocessing, config, platform)
    unroll = config.unroll or (config.steps if platform == "cpu" else 1)

    def batched(params: Any, x0: jax.Array, filters: jax.Array) -> dict[str, jax.Array]:
        TRACES[(layer, filters.shape[0])] += 1  # runs at trace time only
        # One filter per device: compute just its channel. Several: the whole target layer, since
        # per-filter kernel columns would make a (slow) grouped convolution. Same result.
        whole_layer = filters.shape[0] > mesh.devices.size
        one = functools.partial(
            ascend_one,
            model,
            params,
            x0,
            layer=layer,
            steps=config.steps,
            step_size=config.step_size,
            unroll=unroll,
            whole_layer=whole_layer,
        )
        return jax.vmap(one)(filters)

    replicated = NamedSharding(mesh, PartitionSpec())
    sharded = NamedSharding(mesh, PartitionSpec("filters"))
    return jax.jit(batched, in_shardings=(replicated, replicated, sharded), out_shardings=sharded)


def _memory_budget(device: jax.Device) -> int | None:
    """Bytes one accelerator may still use, or None if it does not say."""
    stats = device.memory_stats() if hasattr(device, "memory_stats") else None
    if stats and "bytes_limit" in stats:
        return int(stats["bytes_limit"]) - int(stats.get("bytes_in_use", 0))
    return None


def auto_chunk(
    fn: Callable[..., Any], params: Any, x0: jax.Array, n: int, mesh: Mesh, layer: str
) -> int:
    """The chunk size ``batch="auto"`` picks (a multiple of the device count).

    On accelerators: the largest chunk that fits in device memory, by XLA's compiled memory
    analysis of a probe program with one filter per device (its temporaries plus outputs are the
    per-filter cost, which scales linearly with the vmapped axis; the budget is 80% of the free
    device memory), capped at AUTO_CAP_DEFAULT filters per device. On CPU speed, not memory, is
    the limit: :func:`cpu_filters_per_device` (at most 8 images, far below any memory limit), so no
    probe is compiled. Never more than the filters there are.
    """
    d = mesh.devices.size
    device = mesh.devices.flat[0]
    if device.platform == "cpu":
        return min(cpu_filters_per_device(layer, x0.shape[0], x0.shape[1]), math.ceil(n / d)) * d
    per_device = min(AUTO_CAP_DEFAULT, math.ceil(n / d))
    if per_device > 1:
        probe = fn.lower(params, x0, jnp.zeros((d,), jnp.int32)).compile()
        mem = probe.memory_analysis()
        budget = _memory_budget(device)
        if mem is not None and budget:
            per_filter = max(1, mem.temp_size_in_bytes + mem.output_size_in_bytes)
            per_device = max(1, min(per_device, int(0.8 * budget) // per_filter))
    return per_device * d


def check_conv_layer(layer: str) -> None:
    """Filters belong to convolutions: refuse unknown names and pooling layers in one line."""
    if vgg.LAYERS[vgg.layer_index(layer)][1] != "conv":
        raise VizjaxError(f"{layer} is a pooling layer; choose a convolution (its filters)")


def check_layer_size(layer: str, h: int, w: int) -> None:
    need = vgg.min_input_size(layer)
    if min(h, w) < need:
        raise VizjaxError(
            f"image size {h}x{w} is too small for {layer}: it needs at least {need}x{need} px"
        )


def check_filters(layer: str, filters: Sequence[int]) -> np.ndarray:
    n = vgg.num_channels(layer)
    arr = np.asarray(list(filters), dtype=np.int64).reshape(-1)
    bad = arr[(arr < 0) | (arr >= n)]
    if bad.size:
        raise VizjaxError(f"filter index {int(bad[0])} out of range for {layer} (0..{n - 1})")
    return arr.astype(np.int32)


def iter_chunks(
    layer: str,
    filters: Sequence[int],
    config: AscentConfig,
    params: Any,
    preprocessing: vgg.Preprocessing,
    *,
    x0: jax.Array | np.ndarray | None = None,
    batch: int | str = "auto",
    mesh: Mesh | None = None,
) -> Iterator[Results]:
    """Run ``filters`` of ``layer`` chunk by chunk, yielding each chunk's :class:`Results`.

    Args:
      params: ``{"params": {...}}`` as loaded by :func:`vizjax.weights.load_weights`.
      x0: the start image (H, W, 3) in RGB 0-255 units; default: :func:`noise_image` of ``config``.
      batch: filters per chunk, or ``"auto"`` (see :func:`auto_chunk`); rounded up to a multiple
        of the device count.
    """
    check_conv_layer(layer)
    filt = check_filters(layer, filters)
    x0 = noise_image(config) if x0 is None else jnp.asarray(x0, jnp.float32)
    check_layer_size(layer, x0.shape[0], x0.shape[1])
    if len(filt) == 0:
        return
    mesh = mesh or local_mesh()
    d = mesh.devices.size
    # Only the fields that shape the program key the compile cache (not the seed or start image).
    program = config.replace(seed=0, init=None, init_sha256=None, size=None)
    fn = compiled_ascent(layer, preprocessing, program, mesh)
    # Explicit placement: in a multi-process job jit refuses host arrays with non-trivial shardings.
    replicated = NamedSharding(mesh, PartitionSpec())
    sharded = NamedSharding(mesh, PartitionSpec("filters"))
    params = jax.device_put(params, replicated)
    x0 = jax.device_put(x0, replicated)
    if batch == "auto":
        chunk = auto_chunk(fn, params, x0, len(filt), mesh, layer)
    else:
        if int(batch) <= 0:
            raise VizjaxError(f"batch must be a positive integer or 'auto', got {batch}")
        chunk = math.ceil(int(batch) / d) * d
    for start in range(0, len(filt), chunk):
        real = filt[start : start + chunk]
        # Pad with copies of the last real filter: valid indices, results discarded below.
        padded = np.concatenate([real, np.full(chunk - len(real), real[-1], np.int32)])
        out = jax.device_get(fn(params, x0, jax.device_put(padded, sharded)))
        n = len(real)
        yield Results(
            layer=layer,
            filters=real.copy(),
            images=np.asarray(out["images"][:n]),
            raw=np.asarray(out["raw"][:n]),
            objective=np.asarray(out["objective"][:n]),
            dead=np.asarray(out["dead"][:n]),
        )


def visualize(
    layer: str,
    filters: Sequence[int],
    config: AscentConfig,
    params: Any,
    preprocessing: vgg.Preprocessing,
    **kwargs: Any,
) -> Results:
    """All of :func:`iter_chunks`, concatenated: the Python API for downstream code.

    Example::

        w = vizjax.load_weights()
        res = vizjax.visualize("block4_conv1", range(8), vizjax.AscentConfig(), w.params,
                               w.preprocessing)
        res.images.shape  # (8, 128, 128, 3) uint8
    """
    parts = list(iter_chunks(layer, filters, config, params, preprocessing, **kwargs))
    if not parts:
        raise VizjaxError("no filters to visualize")
    return Results.concat(parts)
