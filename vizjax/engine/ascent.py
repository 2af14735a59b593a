"""The engine: every filter of a layer optimized by one compiled program, on every local device.

Read top to bottom:

1. :func:`make_net` builds what :mod:`vizjax.engine.render` needs from the network for one filter: the
   activations its objective reads, on the one-channel fast path when it can.
2. :func:`compiled_program` is the only place that batches and compiles: ``jax.vmap`` of the
   render over filter indices and ``jax.jit`` with the filter axis sharded over a 1-D ``Mesh`` of
   the local devices. It compiles three entry points of the same computation -- ``init``,
   ``advance`` (a segment of steps) and ``finish`` -- so a long recipe can run as a host loop over
   short compiled segments (XLA:CPU) or as one rolled loop (accelerators); see
   :mod:`vizjax.engine.execution`. The state never leaves the devices between segments.
3. :func:`map_chunks` is the only chunk/pad/shard loop: rows cut into chunks, the last padded
   with copies of its last row, placed sharded over the mesh, the padding cut from what comes
   back. :func:`iter_chunks` runs the ascent through it and yields numpy :class:`Results`
   (:func:`visualize` collects them); what it runs for a layer is :func:`prepare`'s, which
   :func:`compiled` compiles ahead of time (:mod:`vizjax.engine.ahead`: the next layer while one runs); :func:`iter_measures` runs the measures on stored images
   (``vizjax fidelity``); the dataset exemplars run :func:`compiled_forward` through it.

A filter's result depends only on (weights, layer, filter, recipe): never on the chunk size, the
padding, its neighbours in the chunk, the segment length, or the number of devices or processes.
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
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from vizjax.analysis import fidelity
from vizjax.engine import adapter, render, transform
from vizjax.engine.chunk import auto_chunk, round_to_mesh
from vizjax.engine.execution import Execution, auto_segment, keep_freed_host_memory, segments
from vizjax.engine.recipe import DEFAULT_SIZE, Recipe
from vizjax.errors import VizjaxError
from vizjax.models import vgg
from vizjax.models.generic import GenericModel
from vizjax.models.network import ConvNet, Network, Preprocessing

#: A network as the engine takes it: a built-in table network or any model through its adapter
#: (:mod:`vizjax.engine.adapter`).
AnyNetwork = Network | GenericModel

DEFAULT_EXECUTION = Execution()

#: How many times the batched program was traced, per (layer, chunk size). Tests read it: a run
#: must trace once per chunk shape, not once per chunk.
TRACES: collections.Counter[tuple[str, int]] = collections.Counter()

#: VGG16's convolutions computed by Winograd F(2x2, 3x3) when ``conv`` is "winograd" (or "auto" on
#: CPU): :attr:`vizjax.models.network.Network.winograd_layers` (blocks 2-5 for VGG16).
WINOGRAD_LAYERS = vgg.NETWORK.winograd_layers


@dataclasses.dataclass(frozen=True)
class Results:
    """Results for ``n`` filters of one layer (numpy, host memory), named as the atlas' fields.

    Attributes:
      filters: int32 (n,) filter indices.
      images: uint8 (n, K, H, W, D) display images (D: the model's input channels, 3 = RGB).
      raw: float32 (n, K, H, W, D) optimized images in 0-255 units (unclipped for pixels).
      objective: float32 (n, steps + 1) the objective before each step and after the last.
      zero_start_grad: bool (n,) the gradient was exactly zero at the start (with the classic
        recipe the image never moved).
      nonfinite: bool (n,) NaN/Inf appeared during the ascent (the image is the last finite one).
      activation_matrix, final_activation, robustness, hf_energy: the measures of
        :mod:`vizjax.analysis.fidelity`, shapes (n, K, C), (n, K), (n, K), (n, K); None if not measured.
    """

    layer: str
    filters: np.ndarray
    images: np.ndarray
    raw: np.ndarray
    objective: np.ndarray
    zero_start_grad: np.ndarray
    nonfinite: np.ndarray
    activation_matrix: np.ndarray | None = None
    final_activation: np.ndarray | None = None
    robustness: np.ndarray | None = None
    hf_energy: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.filters)

    @staticmethod
    def concat(parts: Sequence[Results]) -> Results:
        if not parts:
            raise VizjaxError("no results to concatenate")
        cat = {}
        for f in dataclasses.fields(Results):
            values = [getattr(p, f.name) for p in parts]
            if f.name != "layer" and all(v is not None for v in values):
                cat[f.name] = np.concatenate(values)
        return Results(layer=parts[0].layer, **cat)


# ---------------------------------------------------------------------------------------------
# The start image and the keys.


def noise_image(recipe: Recipe, channels: int = 3, fixed: int | None = None) -> jax.Array:
    """The shared start image: N(noise_mean, noise_std) from ``key(seed)``, ``recipe.size``
    (default: the size whose views are a model's ``fixed`` input size, else 128x128), float32,
    ``(H, W, channels)`` (the model's input channels)."""
    h, w = recipe.size or (
        transform.fitting_size(recipe.transforms, fixed) if fixed else DEFAULT_SIZE
    )
    noise = jax.random.normal(jax.random.key(recipe.seed), (h, w, channels), jnp.float32)
    return recipe.noise_mean + recipe.noise_std * noise


def filter_key(
    seed: jax.Array | int, layer: str, f: jax.Array | int, network: AnyNetwork = vgg.NETWORK
) -> jax.Array:
    """Per-filter randomness: ``fold_in(fold_in(key(seed), layer index), f)``."""
    index = adapter.of(network).layer_index(layer)
    return jax.random.fold_in(jax.random.fold_in(jax.random.key(seed), index), f)


#: Chollet's display transform (:func:`vizjax.engine.render.deprocess`).
deprocess = render.deprocess


# ---------------------------------------------------------------------------------------------
# One filter: the network as the objective reads it.


def make_model(
    preprocessing: Preprocessing,
    preprocess: bool,
    execution: Execution,
    platform: str = "cpu",
    network: Network = vgg.NETWORK,
) -> ConvNet:
    """The table network's Flax module a run asks for: ``network`` (its weights',
    :func:`vizjax.models.from_params`) with preprocessing on or off, dtype and convolution
    algorithm (:meth:`vizjax.engine.adapter.Table.module`)."""
    return adapter.Table(network).module(preprocessing, preprocess, execution, platform)


def network_layers(objective: Any, network: AnyNetwork = vgg.NETWORK) -> tuple[str, ...]:
    """The network layers an objective reads (without the image itself), in network order."""
    names = [n for n in objective.layers() if n != "input"]
    return tuple(sorted(names, key=adapter.of(network).layer_index))


def make_net(
    forward: adapter.Forward, params: Any, outputs: tuple[str, ...], f: jax.Array, fast: bool
) -> render.Net:
    """``net(views, redirect) -> {layer: activations}`` for filter ``f`` (``forward``: the
    adapter's, :meth:`vizjax.engine.adapter.Table.forward`; ``outputs``: the layers read).

    With ``fast`` (a table network, one filter per device, an objective that reads only channel
    ``f`` of the target layer, which is the deepest it reads), the target convolution computes
    only that channel. Otherwise the whole layer is computed and the objective picks: under
    ``vmap`` with several filters per device, per-filter kernel columns become a grouped
    convolution, which XLA:CPU runs several times slower than the whole layer (bench/README.md).
    """
    channel = f if fast else None

    def net(views: jax.Array, redirect: jax.Array | None) -> dict[str, jax.Array]:
        return forward(params, views, outputs, channel, redirect)

    return net


def can_use_fast_path(objective: Any, layer: str, network: AnyNetwork = vgg.NETWORK) -> bool:
    """One output channel suffices: the objective reads channel f of ``layer`` and nothing deeper,
    and the network can compute one channel alone (the table networks)."""
    if not adapter.of(network).fast:
        return False
    names = network_layers(objective, network)
    return bool(names) and names[-1] == layer and objective.channel_only(layer)


# ---------------------------------------------------------------------------------------------
# Many filters, one compiled program, every local device.


def local_mesh(devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A 1-D mesh named ``filters`` over ``devices`` (default: every device of this process)."""
    return Mesh(np.array(list(devices or jax.local_devices())), ("filters",))


def shardings(mesh: Mesh) -> tuple[NamedSharding, NamedSharding]:
    """``(replicated, rows)``: on every device, and the row axis (filters, images) split over the
    mesh's one axis -- the two placements of every compiled program."""
    return NamedSharding(mesh, PartitionSpec()), NamedSharding(mesh, PartitionSpec("filters"))


@dataclasses.dataclass(frozen=True)
class Program:
    """One (layer, recipe, execution, mesh)'s compiled entry points, vmapped over filters, sharded:
    ``init(params, start, filters, seed) -> state``, ``advance[n](..., state, first) -> (state,
    objective (chunk, n))`` per segment length ``n``, ``finish(..., state, last) -> outputs``,
    chained by :meth:`run`; only step numbers cross from the host. No shape or constant holds the
    step count: runs that differ only in ``steps`` share their segments' programs."""

    init: Callable[..., Any]
    advance: dict[int, Callable[..., Any]]
    finish: Callable[..., Any]
    plan: tuple[tuple[int, int], ...]  # (first step, n steps) per segment
    prepare: Callable[[Any], Any]  # weights -> weights + Winograd transforms (once per run)

    def run(self, params: Any, start: jax.Array, filters: jax.Array, seed: jax.Array) -> Any:
        state, values = self.init(params, start, filters, seed), []
        for first, n in self.plan:
            state, v = self.advance[n](params, start, filters, seed, state, np.int32(first))
            values.append(v)
        out = dict(self.finish(params, start, filters, seed, state, np.int32(sum(self.plan[-1]))))
        out["objective"] = (*values, out.pop("final"))  # pieces: iter_chunks joins them
        return out


@functools.lru_cache(maxsize=64)
def compiled_program(
    layer: str,
    preprocessing: Preprocessing,
    recipe: Recipe,
    execution: Execution,
    mesh: Mesh,
    network: AnyNetwork = vgg.NETWORK,
) -> Program:
    """The one jit boundary of vizjax; see the module docstring.

    ``recipe`` and ``execution`` must be their ``.program()`` forms (what shapes the program), so
    runs that differ only in seed, start image or chunk size share it; ``network`` is the weights'
    (:func:`vizjax.models.from_params`). Params, the start image and
    the seed are replicated; the filter axis of everything else is sharded over ``mesh``. jax
    caches the executables per chunk shape and image size.
    """
    platform = mesh.devices.flat[0].platform
    net_adapter = adapter.of(network)
    forward = net_adapter.forward(preprocessing, recipe.preprocess, execution, platform)
    objective = recipe.objective.build(layer, recipe.images)
    outputs = network_layers(objective, network) or (layer,)
    plan = tuple(segments(recipe.steps, execution.segment or auto_segment(recipe.steps, platform)))
    from_start = recipe.init is not None

    def per_filter(params, start, filters, seed, fn, state=None):
        """``fn(net, f, key, hw, state_f)`` written for one filter, vmapped over ``filters``."""
        # One filter per device: compute just its channel. Several: the whole target layer, since
        # per-filter kernel columns would make a (slow) grouped convolution. Same result.
        fast = filters.shape[0] <= mesh.devices.size and can_use_fast_path(
            objective, layer, network
        )
        hw = (start.shape[0], start.shape[1])

        def one(f: jax.Array, s: Any) -> Any:
            net = make_net(forward, params, outputs, f, fast)
            return fn(net, f, filter_key(seed, layer, f, network), hw, s)

        return jax.vmap(one)(filters, state)

    def init(params, start, filters, seed):
        TRACES[(layer, filters.shape[0])] += 1  # runs at trace time only
        return per_filter(
            params,
            start,
            filters,
            seed,
            lambda net, f, key, hw, s: render.init(recipe, start, key, from_start),
        )

    def advance(n: int) -> Callable[..., Any]:
        unroll = execution.unroll or (n if platform == "cpu" else 1)

        def entry(params, start, filters, seed, state, first):
            return per_filter(
                params,
                start,
                filters,
                seed,
                lambda net, f, key, hw, s: render.advance(
                    recipe, objective, net, s, f, key, first, n, hw, unroll
                ),
                state,
            )

        return entry

    def finish(params, start, filters, seed, state, last):
        return per_filter(
            params,
            start,
            filters,
            seed,
            lambda net, f, key, hw, s: render.finish(recipe, objective, net, s, f, key, hw, last),
            state,
        )

    rep, shard = shardings(mesh)
    deepest = max(net_adapter.layer_index(n) for n in (*outputs, layer))
    return Program(
        prepare=jax.jit(
            lambda p: net_adapter.prepare(p, deepest, execution, platform), out_shardings=rep
        ),
        init=jax.jit(init, in_shardings=(rep, rep, shard, rep), out_shardings=shard),
        advance={
            n: jax.jit(
                advance(n),
                in_shardings=(rep, rep, shard, rep, shard, rep),
                out_shardings=shard,
                donate_argnums=(4,),
            )
            for n in sorted({n for _, n in plan})
        },
        finish=jax.jit(
            finish, in_shardings=(rep, rep, shard, rep, shard, rep), out_shardings=shard
        ),
        plan=plan,
    )


@functools.lru_cache(maxsize=64)
def compiled_measure(
    layer: str,
    preprocessing: Preprocessing,
    preprocess: bool,
    execution: Execution,
    mesh: Mesh,
    network: AnyNetwork = vgg.NETWORK,
) -> Callable[..., dict[str, Any]]:
    """``(params, raw (n, K, H, W, D), display (n, K, H, W, D), filters (n,)) -> measures`` of
    :mod:`vizjax.analysis.fidelity`, vmapped over filters and sharded like the ascent (the same jit
    boundary's second program: the ascent runs it on each chunk before the images leave the
    devices; ``vizjax fidelity`` runs it on stored images)."""
    platform = mesh.devices.flat[0].platform
    net_adapter = adapter.of(network)
    forward = net_adapter.forward(preprocessing, preprocess, execution, platform)
    index = net_adapter.layer_index(layer)

    def measure(params, raw, display, filters):
        def acts(x: jax.Array) -> jax.Array:
            return forward(params, x, (layer,))[layer]

        return jax.vmap(
            lambda r, d, f: fidelity.measure_one(acts, r, d, f, fidelity.measure_key(index, f))
        )(raw, display, filters)

    rep, shard = shardings(mesh)
    return jax.jit(measure, in_shardings=(rep, shard, shard, shard), out_shardings=shard)


@functools.lru_cache(maxsize=16)
def compiled_forward(
    layers: tuple[str, ...],
    preprocessing: Preprocessing,
    mesh: Mesh,
    network: AnyNetwork = vgg.NETWORK,
) -> Callable[[Any, jax.Array], dict[str, tuple[jax.Array, jax.Array]]]:
    """``(params, squares uint8 (B, S, S, D)) -> {layer: (mean (B, C) f32, argmax (B, C) i32)}``,
    the dataset exemplars' forward (:mod:`vizjax.analysis.exemplars`), images sharded over the mesh.

    ``mean`` is each channel's mean activation (post-ReLU) over the layer's output grid, ``argmax``
    the flat index ``y * W' + x`` of its most active unit (the first one at ties). ``B`` must be a
    multiple of the mesh size (:func:`map_chunks` pads). One ``apply`` per layer: XLA merges the
    common prefix of the network (common-subexpression elimination), so the deepest layer's
    forward is computed once. ``network``: the weights' (:func:`vizjax.models.from_params`).
    """
    platform = mesh.devices.flat[0].platform
    apply = adapter.of(network).forward(preprocessing, True, _FORWARD_EXECUTION, platform)

    def forward(params: Any, squares: jax.Array) -> dict[str, tuple[jax.Array, jax.Array]]:
        x = squares.astype(jnp.float32)
        out = {}
        for layer in layers:
            a = apply(params, x, (layer,))[layer]  # (B, H', W', C)
            flat = a.reshape(a.shape[0], -1, a.shape[-1])
            out[layer] = (flat.mean(axis=1), jnp.argmax(flat, axis=1).astype(jnp.int32))
        return out

    rep, shard = shardings(mesh)
    return jax.jit(forward, in_shardings=(rep, shard), out_shardings=shard)


#: The exemplars' forward: float32 and XLA's own convolution (one forward, nothing to amortize).
_FORWARD_EXECUTION = Execution(conv="xla")


def padded(rows: np.ndarray, size: int) -> np.ndarray:
    """``rows`` (n, ...), 1 <= n <= size, with copies of the last row up to ``size`` rows: valid
    inputs (a filter index, an image) whose results :func:`map_chunks` drops."""
    rows = np.asarray(rows)
    return np.concatenate([rows, np.repeat(rows[-1:], size - len(rows), axis=0)])


def map_chunks(
    fn: Callable[..., Any],
    replicated: Sequence[Any],
    n: int,
    chunk: int,
    rows: Callable[[slice], Sequence[np.ndarray]],
    mesh: Mesh,
) -> Iterator[tuple[slice, Any]]:
    """The engine's one chunk/pad/shard loop: ``n`` rows in chunks of ``chunk`` (a multiple of the
    device count, :func:`vizjax.engine.chunk.round_to_mesh`).

    For each chunk ``sl`` (a slice of ``range(n)``), ``rows(sl)`` gives its row inputs (row axis
    first, ``len(range(n)[sl])`` rows, read only then), padded to ``chunk`` rows (:func:`padded`)
    and placed sharded over ``mesh``; ``fn(*replicated, *row_inputs)`` runs (``replicated``
    placed on every device) and its outputs (a pytree, row axis first) come back as numpy with
    the padding cut. Yields ``(sl, outputs)``. A row's result never depends on the chunk size,
    the padding or its neighbours.
    """
    if chunk % mesh.devices.size:
        raise ValueError(f"chunk {chunk} is not a multiple of {mesh.devices.size} devices")
    rep, shard = shardings(mesh)
    placed = [jax.device_put(r, rep) for r in replicated]
    for first in range(0, n, chunk):
        sl = slice(first, min(first + chunk, n))
        m = sl.stop - sl.start
        args = [jax.device_put(padded(a, chunk), shard) for a in rows(sl)]
        out = jax.device_get(fn(*placed, *args))
        yield sl, jax.tree.map(lambda v, m=m: np.asarray(v[:m]), out)


def check_conv_layer(
    layer: str, network: AnyNetwork = vgg.NETWORK, hw: tuple[int, int] | None = None
) -> None:
    """A layer with filters: for a table network a convolution (unknown names and pooling layers
    refused in one line); for any other model a float layer with a channel axis that depends on
    the input (checked at an ``hw`` input, default the model's size)."""
    adapter.of(network).check_layer(layer, hw)


def check_layer_size(
    layer: str, h: int, w: int, recipe: Recipe | None = None, network: AnyNetwork = vgg.NETWORK
) -> None:
    """The image must be large enough for ``layer`` after the recipe's transforms (and of the size
    a model with a fixed input size takes)."""
    net_adapter = adapter.of(network)
    if isinstance(network, Network):
        net_adapter.check_size(layer, h, w)
    if recipe is None:
        th, tw = h, w
    else:
        try:
            th, tw = transform.out_hw(recipe.transforms, (h, w))
        except ValueError as e:
            raise VizjaxError(f"image size {h}x{w}: {e}") from None
    if isinstance(network, Network) and recipe is not None:
        need = network.min_input_size(layer)
        if min(th, tw) < need:
            raise VizjaxError(
                f"image size {h}x{w} is too small for {layer} after the recipe's transforms "
                f"({th}x{tw}): it needs at least {need}x{need} px there"
            )
    elif not isinstance(network, Network):
        net_adapter.check_size(layer, th, tw)


def check_filters(
    layer: str,
    filters: Sequence[int],
    network: AnyNetwork = vgg.NETWORK,
    hw: tuple[int, int] | None = None,
) -> np.ndarray:
    n = adapter.of(network).num_channels(layer, hw)
    arr = np.asarray(list(filters), dtype=np.int64).reshape(-1)
    bad = arr[(arr < 0) | (arr >= n)]
    if bad.size:
        raise VizjaxError(f"filter index {int(bad[0])} out of range for {layer} (0..{n - 1})")
    return arr.astype(np.int32)


def _network_hw(recipe: Recipe, start: jax.Array) -> tuple[int, int]:
    """The size of each view the network sees (the start image after the recipe's transforms)."""
    return transform.out_hw(recipe.transforms, (int(start.shape[0]), int(start.shape[1])))


@dataclasses.dataclass(frozen=True)
class Prepared:
    """What :func:`iter_chunks` runs for one layer (:func:`prepare`): the program (its entries
    compiled for the chunk's shape by :func:`compiled`), the measure, the chunk size and the
    placed inputs."""

    filters: np.ndarray
    mesh: Mesh
    program: Program
    measure: Callable[..., Any] | None
    params: Any  # placed on every device, Winograd transforms added
    start: jax.Array
    seed: jax.Array
    chunk: int


def prepare(
    layer: str,
    filters: Sequence[int],
    recipe: Recipe,
    params: Any,
    preprocessing: Preprocessing | None = None,
    *,
    execution: Execution = DEFAULT_EXECUTION,
    start: jax.Array | np.ndarray | None = None,
    mesh: Mesh | None = None,
    measure: bool = False,
) -> Prepared | None:
    """Check the request (the arguments of :func:`iter_chunks`) and build, not yet compile, what
    it runs; None if there are no filters."""
    network, params = adapter.resolve(params)
    preprocessing = adapter.preprocessing_of(network, preprocessing)
    if isinstance(network, GenericModel):
        if start is None:  # at the model's fixed input size, if any, unless the recipe says
            start = noise_image(recipe, network.channels, network.input_size)
        check_layer_size(layer, start.shape[0], start.shape[1], recipe, network)
        hw = _network_hw(recipe, start)
        check_conv_layer(layer, network, hw)
        filt = check_filters(layer, filters, network, hw)
    else:
        check_conv_layer(layer, network)
        filt = check_filters(layer, filters, network)
        start = noise_image(recipe) if start is None else jnp.asarray(start, jnp.float32)
        check_layer_size(layer, start.shape[0], start.shape[1], recipe, network)
    start = jnp.asarray(start, jnp.float32)
    if len(filt) == 0:
        return None
    mesh = mesh or local_mesh()
    if mesh.devices.flat[0].platform == "cpu":
        keep_freed_host_memory()
    program = compiled_program(
        layer, preprocessing, recipe.program(), execution.program(), mesh, network
    )
    # Explicit placement: in a multi-process job jit refuses host arrays with non-trivial shardings.
    rep, _ = shardings(mesh)
    params = program.prepare(jax.device_put(params, rep))
    start = jax.device_put(start, rep)
    seed = jax.device_put(np.int32(recipe.seed), rep)
    if execution.batch == "auto":
        chunk = auto_chunk(program, params, start, seed, len(filt), mesh, layer, network, execution)
    else:
        chunk = round_to_mesh(int(execution.batch), mesh)
    measured = (layer, preprocessing, recipe.preprocess, execution.program(), mesh, network)
    measure_fn = compiled_measure(*measured) if measure else None
    return Prepared(filt, mesh, program, measure_fn, params, start, seed, chunk)


def compiled(job: Prepared) -> Prepared:
    """``job`` with every entry point compiled for its chunk shape (``jit(...).lower().compile()``
    of the one jit boundary's functions): running it compiles nothing. :mod:`vizjax.engine.ahead` calls
    it in a background thread for the layers to come."""
    _, shard = shardings(job.mesh)
    p, x, seed = job.params, job.start, job.seed
    filters = jax.ShapeDtypeStruct((job.chunk,), jnp.int32, sharding=shard)
    state = jax.eval_shape(job.program.init, p, x, filters, seed)
    out = jax.eval_shape(job.program.finish, p, x, filters, seed, state, last := np.int32(0))
    program = dataclasses.replace(
        job.program,
        init=job.program.init.lower(p, x, filters, seed).compile(),
        advance={
            n: f.lower(p, x, filters, seed, state, np.int32(0)).compile()
            for n, f in job.program.advance.items()
        },
        finish=job.program.finish.lower(p, x, filters, seed, state, last).compile(),
    )
    measure = job.measure
    if measure is not None:
        lowered = measure.lower(p, out["raw"], out["images"], filters)  # type: ignore[attr-defined]
        measure = lowered.compile()
    return dataclasses.replace(job, program=program, measure=measure)


def iter_chunks(
    layer: str,
    filters: Sequence[int],
    recipe: Recipe,
    params: Any,
    preprocessing: Preprocessing | None = None,
    *,
    execution: Execution = DEFAULT_EXECUTION,
    start: jax.Array | np.ndarray | None = None,
    mesh: Mesh | None = None,
    measure: bool = False,
    prepared: Prepared | None = None,
) -> Iterator[Results]:
    """Run ``filters`` of ``layer`` chunk by chunk, yielding each chunk's :class:`Results`.

    Args:
      params: ``{"params": {...}}`` as loaded by :func:`vizjax.models.weights.load_weights`.
      start: the shared start image (H, W, D) in 0-255 units (D: the model's channels); default: :func:`noise_image`
        of ``recipe`` (a run with a start photo passes the photo and sets ``recipe.init``).
      execution: dtype, convolution, loop structure and ``batch`` (filters per chunk, or
        ``"auto"``, see :func:`vizjax.engine.chunk.auto_chunk`; rounded up to a multiple of the device count).
      measure: also compute the :mod:`vizjax.analysis.fidelity` measures of each chunk's images (on the
        devices, before the images come back).
      prepared: :func:`prepare` (and :func:`compiled`) of these same arguments, done before
        (:mod:`vizjax.engine.ahead`: in the background); else prepared here and compiled on first use.
    """
    job = prepared or prepare(
        layer,
        filters,
        recipe,
        params,
        preprocessing,
        execution=execution,
        start=start,
        mesh=mesh,
        measure=measure,
    )
    if job is None:
        return
    program, measure_fn, filt = job.program, job.measure, job.filters

    def run(params: Any, start: jax.Array, seed: jax.Array, filters: jax.Array) -> Any:
        out = program.run(params, start, filters, seed)
        if measure_fn is not None:  # on the devices, before the images come back
            out = {**out, **measure_fn(params, out["raw"], out["images"], filters)}
        return out

    placed = (job.params, job.start, job.seed)
    for sl, out in map_chunks(run, placed, len(filt), job.chunk, lambda sl: (filt[sl],), job.mesh):
        *values, final = out.pop("objective")  # joined on the host: (chunk, steps + 1)
        trace = np.concatenate([*values, final[:, None]], axis=1)
        yield Results(layer=layer, filters=filt[sl].copy(), objective=trace, **out)


#: Filters per device per chunk of :func:`iter_measures` with ``batch="auto"``.
MEASURE_FILTERS_PER_DEVICE = 8


def iter_measures(
    layer: str,
    filters: Sequence[int],
    images: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]],
    params: Any,
    preprocessing: Preprocessing,
    preprocess: bool,
    *,
    execution: Execution = DEFAULT_EXECUTION,
    mesh: Mesh | None = None,
) -> Iterator[tuple[np.ndarray, dict[str, np.ndarray]]]:
    """The :mod:`vizjax.analysis.fidelity` measures of stored images, chunk by chunk (``vizjax fidelity``).

    ``images(filters (m,))`` reads ``(raw (m, K, H, W, D), display (m, K, H, W, D) uint8)`` of
    those filters; it is called once per chunk. Yields ``(filters (m,), measures)`` with the
    measures named as :class:`Results` (row axis first). ``execution.batch``: filters per chunk
    (``"auto"``: :data:`MEASURE_FILTERS_PER_DEVICE` per device).
    """
    network, params = adapter.resolve(params)
    preprocessing = adapter.preprocessing_of(network, preprocessing)
    filt = check_filters(layer, filters, network)
    if len(filt) == 0:
        return
    mesh = mesh or local_mesh()
    fn = compiled_measure(layer, preprocessing, preprocess, execution.program(), mesh, network)
    d = mesh.devices.size
    if execution.batch == "auto":
        chunk = min(MEASURE_FILTERS_PER_DEVICE, math.ceil(len(filt) / d)) * d
    else:
        chunk = round_to_mesh(int(execution.batch), mesh)

    def rows(sl: slice) -> tuple[np.ndarray, ...]:
        return (*images(filt[sl]), filt[sl])

    for sl, out in map_chunks(fn, (params,), len(filt), chunk, rows, mesh):
        yield filt[sl].copy(), out


def visualize(
    layer: str,
    filters: Sequence[int],
    recipe: Recipe,
    params: Any,
    preprocessing: Preprocessing | None = None,
    **kwargs: Any,
) -> Results:
    """All of :func:`iter_chunks`, concatenated: the Python API for downstream code.

    ``params``: a built-in network's weights, or your own model
    (:class:`vizjax.models.generic.GenericModel`, e.g. from :func:`vizjax.from_flax`);
    ``preprocessing`` may then be left out if the model has its own.

    Example::

        w = vizjax.load_weights()
        res = vizjax.visualize("block4_conv1", range(8), vizjax.preset("lucid"), w.params,
                               w.preprocessing)
        res.images.shape  # (8, 1, 128, 128, 3) uint8: n filters, K images each

    A model with a fixed input size runs at that size unless ``recipe.size`` gives one.
    """
    parts = list(iter_chunks(layer, filters, recipe, params, preprocessing, **kwargs))
    if not parts:
        raise VizjaxError("no filters to visualize")
    return Results.concat(parts)
