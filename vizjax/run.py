"""A run: layers x filters -> an atlas file, chunk by chunk, resumable, with progress.

This module joins the engine (:mod:`vizjax.engine.ascent`) to the file (:mod:`vizjax.atlas`); the CLI and
the article reproduction both call :func:`run_atlas`.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import jax
import numpy as np

from vizjax import atlas, distributed
from vizjax.atlas.identity import check_model
from vizjax.config import RunConfig, read_config
from vizjax.engine import adapter, ascent, cost, tuning
from vizjax.engine.ahead import compile_ahead, compiles_ahead
from vizjax.engine.execution import Execution
from vizjax.engine.recipe import DEFAULT_SIZE, Recipe
from vizjax.engine.tuning import Decision
from vizjax.errors import VizjaxError
from vizjax.interrupt import StopOnSignal
from vizjax.models.generic import GenericModel, GenericWeights
from vizjax.models.network import IDENTITY, Preprocessing
from vizjax.models.weights import Weights
from vizjax.progress import WorkMeter, _bar_label, _progress

DEFAULT_EXECUTION = Execution()


def parse_filters(spec: str | Sequence[int], num_filters: int, layer: str = "") -> list[int]:
    """``"all"``, ``"0:20"``, ``"0,5,7"``, ``"0:4,9"`` or a sequence -> filter indices (checked)."""
    if not isinstance(spec, str):
        out = [int(f) for f in spec]
    elif spec.strip() == "all":
        out = list(range(num_filters))
    else:
        out = []
        for part in spec.split(","):
            part = part.strip()
            try:
                if ":" in part:
                    a, b = part.split(":", 1)
                    start, stop = int(a or 0), int(b) if b else num_filters
                    if stop > num_filters:
                        raise VizjaxError(
                            f"filter range {part} goes past {layer or 'the layer'}'s "
                            f"{num_filters} filters (0..{num_filters - 1})"
                        )
                    out.extend(range(start, stop))
                elif part:
                    out.append(int(part))
            except ValueError:
                raise VizjaxError(f"bad --filters {spec!r}: use all, 0:20 or 0,5,7") from None
    for f in out:
        if not 0 <= f < num_filters:
            raise VizjaxError(
                f"filter index {f} out of range for {layer or 'the layer'} (0..{num_filters - 1})"
            )
    if not out:
        raise VizjaxError(f"--filters {spec!r} selects no filter")
    return list(dict.fromkeys(out))  # unique, order kept


def start_image(recipe: Recipe, network: Any = None) -> tuple[np.ndarray, Recipe]:
    """The run's shared start image and the recipe with its size (and start photo digest) filled in.

    Without a photo: N(noise_mean, noise_std) noise from ``key(seed)`` at ``recipe.size`` (default
    128x128; a generic model with a fixed input size: that size), with the model's input channels.
    With one (``recipe.init``): the photo, at its own size unless ``size`` is given (a grayscale
    model: its luminance; a model of other than 1 or 3 channels takes none).
    """
    from vizjax import images
    from vizjax.engine.transform import fitting_size
    from vizjax.models.weights import sha256_file

    generic = network if isinstance(network, GenericModel) else None
    channels = generic.channels if generic is not None else 3
    if recipe.init is None:
        fixed = generic.input_size if generic is not None else None
        size = recipe.size or (fitting_size(recipe.transforms, fixed) if fixed else DEFAULT_SIZE)
        recipe = recipe.replace(size=tuple(size))
        return np.asarray(ascent.noise_image(recipe, channels)), recipe
    if channels not in (1, 3):  # a photo is RGB: a grayscale model gets its luminance
        raise VizjaxError(f"a start photo is RGB; {generic.name} takes {channels} channels")
    x0 = images.load_image(recipe.init, recipe.size, channels)
    recipe = recipe.replace(
        size=(int(x0.shape[0]), int(x0.shape[1])), init_sha256=sha256_file(recipe.init)
    )
    return x0, recipe


def checked_request(
    layers: Sequence[str],
    filters: str | Sequence[int],
    recipe: Recipe,
    weights: Weights | GenericWeights,
) -> tuple[np.ndarray, Recipe, dict[str, list[int]]]:
    """Check what a run asks for before anything is compiled or written (conv layers, the image
    size after the recipe's transforms, filter indices within the weights' channels). Returns
    the start image, the recipe with its size filled in, and each layer's filters."""
    network = weights.network
    generic = isinstance(network, GenericModel)
    for layer in layers:
        if not generic:
            ascent.check_conv_layer(layer, network)
        else:
            network.layer_index(layer)
    x0, recipe = start_image(recipe, network)
    hw = cost.network_hw(recipe)
    for layer in layers:
        ascent.check_layer_size(layer, *recipe.size, recipe, network)  # type: ignore[misc]
        if generic:
            ascent.check_conv_layer(layer, network, hw)
    wanted = {
        layer: parse_filters(filters, num_channels(network, layer, recipe), layer)
        for layer in layers
    }
    return x0, recipe, wanted


def num_channels(network: Any, layer: str, recipe: Recipe) -> int:
    """Filters of ``layer`` (a generic model's at the size its network sees in this run)."""
    if isinstance(network, GenericModel):
        return network.num_channels(layer, cost.network_hw(recipe))
    return network.num_channels(layer)


def model_attrs(weights: Weights | GenericWeights) -> tuple[dict[str, str], dict[str, Any]]:
    """The atlas' root attributes of the model, and the RunConfig fields that identify it
    (a generic model's architecture hash, preprocessing and input channels; nothing more for the
    built-ins)."""
    prep = json.dumps(dataclasses.asdict(weights.preprocessing), sort_keys=True)
    attrs = {
        "model": weights.model,
        "weights": weights.name,
        "weights_sha256": weights.source_sha256,
        "preprocessing": prep,
    }
    if not isinstance(weights, GenericWeights):
        return attrs, {}
    ident = weights.generic.identity()
    attrs.update(model_kind=ident["kind"], architecture=ident["architecture"])
    config = {"architecture": ident["architecture"], "preprocessing": prep}
    return attrs, {**config, "channels": weights.generic.channels}


@dataclasses.dataclass(frozen=True, eq=False)
class Request:
    """A run's request, checked (:func:`request`): the atlas ``out``, the ``layers``, the
    ``filters`` as given (the atlas' config keeps them) and each layer's filter indices
    (``wanted``), the ``recipe`` with its image size filled in, the ``weights``, the
    ``execution`` and the shared ``start`` image. What :func:`run_request` and
    :func:`vizjax.plan.make_plan` take: nothing below this checks it again."""

    out: Path
    layers: tuple[str, ...]
    filters: str | tuple[int, ...]
    wanted: dict[str, list[int]]
    recipe: Recipe
    weights: Weights | GenericWeights
    execution: Execution
    start: np.ndarray
    #: Per layer, the execution decided for it and the decision (:func:`tuned`); a layer
    #: without one runs with ``execution``.
    executions: Mapping[str, Execution] = dataclasses.field(default_factory=dict)
    tuning: Mapping[str, Decision] = dataclasses.field(default_factory=dict)

    def execution_of(self, layer: str) -> Execution:
        """The execution ``layer`` runs with."""
        return self.executions.get(layer, self.execution)


def tuned(req: Request, tune: str | None = None, *, dtype_free: bool = False) -> Request:
    """``req`` with each layer's execution decided by the tuning table
    (:func:`vizjax.engine.tuning.decide`: explicit settings > the table > today's rules), measured
    here first where ``tune`` (``--tune``, else ``$VIZJAX_TUNING``, else ``auto``) says so.
    ``dtype_free``: the dtype was not chosen (``--dtype auto`` for a new atlas), so the table
    may choose bfloat16 on a CPU that has AMX; the run's one dtype (an atlas' identity) is then
    bfloat16 only where every layer's decision says so. A multi-process job reads the table but
    measures nothing (its processes would time each other's load) and keeps its dtype."""
    mode, devices, alone = tuning.mode(tune), jax.local_devices(), jax.process_count() == 1
    table = tuning.Table.load() if mode != "off" else None
    executions, decisions = {}, {}
    for layer in req.layers:
        n = len(req.wanted[layer])
        execution, decision = tuning.decide(
            layer,
            n,
            req.recipe,
            req.weights.network,
            req.execution,
            tune=mode,
            table=table,
            may_measure=alone,
            measure=tuning.layer_measure(
                layer, req.wanted[layer], req.recipe, req.weights, req.execution, req.start
            ),
            dtype_free=dtype_free and alone,
            devices=len(devices),
            platform=devices[0].platform,
        )
        executions[layer], decisions[layer] = execution, decision
    run_dtype = req.execution.dtype
    if dtype_free and alone:  # one dtype for the whole run: bfloat16 where every layer chose it
        dtypes = {e.dtype for e in executions.values()}
        run_dtype = "bfloat16" if dtypes == {"bfloat16"} else "float32"
        executions = {k: e.replace(dtype=run_dtype) for k, e in executions.items()}
        decisions = {k: d.with_dtype(run_dtype) for k, d in decisions.items()}
    return dataclasses.replace(
        req,
        execution=req.execution.replace(dtype=run_dtype),
        executions=executions,
        tuning=decisions,
    )


def auto_dtype(out: str | Path | None) -> str:
    """The dtype of a run that leaves it to vizjax (``--dtype auto``): the atlas' own at ``out``
    when one exists (a resumed run keeps it), else
    :func:`vizjax.engine.execution.default_dtype` of this platform."""
    if out and Path(out).is_file():
        try:
            with atlas.open_atlas(out) as a:
                return read_config(a.config).execution.dtype
        except (VizjaxError, OSError, KeyError, ValueError):
            pass  # not an atlas this run may resume: the run itself says so, in one line
    from vizjax.engine.execution import default_dtype

    return default_dtype(jax.default_backend())


def request(
    out: str | os.PathLike,
    layers: Sequence[str],
    filters: str | Sequence[int],
    recipe: Recipe,
    weights: Weights | GenericWeights | GenericModel,
    *,
    execution: Execution = DEFAULT_EXECUTION,
) -> Request:
    """Check what a run asks for, in one pass, before anything is compiled or written
    (:func:`checked_request`); a generic model stands for its weights with the preprocessing
    it knows (none with ``recipe.preprocess`` off)."""
    if isinstance(weights, GenericModel):  # the Python API: a model that knows its preprocessing
        weights = GenericWeights(
            weights, adapter.preprocessing_of(weights, None if recipe.preprocess else IDENTITY)
        )
    x0, recipe, wanted = checked_request(layers, filters, recipe, weights)
    return Request(
        out=Path(out),
        layers=tuple(layers),
        filters=filters if isinstance(filters, str) else tuple(int(f) for f in filters),
        wanted=wanted,
        recipe=recipe,
        weights=weights,
        execution=execution,
        start=x0,
    )


def run_atlas(
    out: str | os.PathLike,
    layers: Sequence[str],
    filters: str | Sequence[int],
    recipe: Recipe,
    weights: Weights | GenericWeights | GenericModel,
    *,
    execution: Execution = DEFAULT_EXECUTION,
    quiet: bool = False,
    tune: str | None = None,
) -> dict[str, Any]:
    """Optimize ``filters`` of every layer in ``layers`` into the atlas ``out``; resume what exists.

    ``tune``: ``"auto"``, ``"now"`` or ``"off"`` (default ``$VIZJAX_TUNING``, else auto): how
    each layer's convolution and chunk are chosen (:func:`tuned`); ``execution``'s explicit
    settings win.

    In a ``jax.distributed`` job each process does its share of the filters into its own part file
    and process 0 joins the parts into ``out``. Returns a summary:
    ``{"out", "layers": {layer: {"done", "computed", "zero_start_grad_computed",
    "nonfinite_computed", "seconds"}}}`` (filters this process holds, computed in this run,
    how many of those had a zero gradient at the start / went non-finite, wall seconds).

    SIGINT or SIGTERM stops the run after the chunk in flight is committed: it raises
    :class:`vizjax.errors.Interrupted` carrying the summary so far (rerun to resume).
    """
    req = request(out, layers, filters, recipe, weights, execution=execution)
    return run_request(tuned(req, tune), quiet=quiet)


def run_request(req: Request, *, quiet: bool = False) -> dict[str, Any]:
    """:func:`run_atlas` of a checked :class:`Request` (the CLI builds one at the door)."""
    out, layers, recipe, weights, execution = (
        req.out,
        req.layers,
        req.recipe,
        req.weights,
        req.execution,
    )
    x0, plan = req.start, req.wanted
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise VizjaxError(f"cannot write atlas {out}: {e.strerror or e}") from None
    nproc = jax.process_count()
    part = atlas.part_path(out, jax.process_index(), nproc) if nproc > 1 else out
    attrs, identity = model_attrs(weights)
    note = adapter.redirect_note(weights.network, recipe.redirect_relu)
    if note:  # said even with quiet: the recipe is not run as written
        print(note, file=sys.stderr)
    cfg = RunConfig(
        recipe,
        execution,
        weights.name,
        weights.model,
        **identity,
        layers=layers,
        filters=req.filters,
        tuning={layer: d.to_json() for layer, d in req.tuning.items()},
    )
    summary: dict[str, Any] = {"out": str(out), "layers": {}}
    # The next layer's programs compile in the background while a layer runs (so a multi-layer
    # run waits for one layer's compile, not for each); None where it is off.
    ahead_on = compiles_ahead(execution, jax.local_devices()[0].platform)
    with (
        StopOnSignal(run=out.name if nproc > 1 else None) as stop,
        compile_ahead(ahead_on) as ahead,
    ):
        with atlas.AtlasWriter(part, attrs, cfg.to_json()) as writer:
            if req.tuning:  # this run's decisions, kept beside an earlier run's other layers
                writer.record_config("tuning", cfg.tuning)
            # Rows for every layer first, so one bar counts the whole run (filters/s, ETA).
            todos = {}
            for layer in layers:
                mine = distributed.share(plan[layer]) if nproc > 1 else plan[layer]
                todos[layer] = writer.begin_layer(
                    layer,
                    num_channels(weights.network, layer, recipe),
                    [int(f) for f in mine],
                    recipe.size,  # type: ignore[arg-type]
                    recipe.steps,
                    k=recipe.images,
                    channels=cfg.channels,
                )
                summary["layers"][layer] = {
                    "done": len(mine) - len(todos[layer]),
                    "computed": 0,
                    "zero_start_grad_computed": 0,
                    "nonfinite_computed": 0,
                    "seconds": 0.0,
                }
            resumed = sum(s["done"] for s in summary["layers"].values())
            total = resumed + sum(map(len, todos.values()))
            # The ETA weighs each filter by its layer's cost (vizjax.engine.cost), not by one filter rate.
            work = {layer: cost.filter_work(layer, recipe, weights.network) for layer in layers}
            platform = jax.local_devices()[0].platform
            # Per layer computed: its work, and its compile relative to the others' (a deep
            # layer compiles for longer), so the first ETA counts the compiles still ahead.
            planned = [
                (len(todos[n]) * work[n], cost.compile_weight(n, weights.network))
                for n in layers
                if todos[n]
            ]
            meter = WorkMeter(
                sum(w for w, _ in planned),
                len(planned),
                plan=planned,
                # Over LONG_RUN_SECONDS: said first, once the run has timed a chunk after compiling.
                warn=lambda eta: cost.long_run_warning(eta, recipe.steps, recipe.size, platform),
            )
            # Where one filter per device runs, the target layer computes one channel: that
            # layer's real share of its modeled work (the ETA carries rates in real work).
            share = {
                n: cost.fast_path_share(n, recipe, weights.network)
                if ascent.can_use_fast_path(
                    recipe.objective.build(n, recipe.images), n, weights.network
                )
                else 1.0
                for n in layers
            }
            devices = len(jax.local_devices())
            bar = _progress(total, _bar_label(layers, 0), quiet, initial=resumed, meter=meter)
            for i, layer in enumerate(layers):
                stop.check(summary)
                todo, s = todos[layer], summary["layers"][layer]
                kw = {"execution": req.execution_of(layer), "start": x0, "measure": True}
                later = [n for n in layers[i + 1 :] if todos[n]][:1]
                if ahead is not None and later and not ahead.submitted(later[0]):
                    p = (weights.params, weights.preprocessing)
                    then = {**kw, "execution": req.execution_of(later[0])}
                    ahead.submit(later[0], todos[later[0]], recipe, *p, **then)
                bar.set_description(_bar_label(layers, i))
                if todo:
                    meter.new_layer()
                t0 = time.perf_counter()
                # Its programs if compiled ahead (a stop is heard while it waits for them).
                check = lambda: stop.check(summary)  # noqa: E731
                prepared = ahead.take(layer, todo, recipe, check, **kw) if ahead else None
                for res in ascent.iter_chunks(
                    layer,
                    todo,
                    recipe,
                    weights.params,
                    weights.preprocessing,
                    prepared=prepared,
                    **kw,
                ):
                    writer.write_chunk(layer, res)
                    s["done"] += len(res)
                    s["computed"] += len(res)
                    s["zero_start_grad_computed"] += int(res.zero_start_grad.sum())
                    s["nonfinite_computed"] += int(res.nonfinite.sum())
                    s["seconds"] = round(time.perf_counter() - t0, 2)
                    if s["computed"] == len(res):  # the layer's first chunk: its size says
                        meter.share = share[layer] if len(res) <= devices else 1.0
                    bar.update(len(res), work=len(res) * work[layer])
                    stop.check(summary)  # SIGINT/SIGTERM: stop here, this chunk committed
                # selectivity, specificity over the layer's stored images
                writer.finish_layer(layer)
                s["seconds"] = round(time.perf_counter() - t0, 2)
            if len(layers) > 1:
                bar.set_description(f"{len(layers)} layers")
            bar.close()
        if nproc > 1:
            # Wait for the other parts, still stopping (and announcing it) on a signal here or
            # in another process: nobody waits for a process that is gone.
            distributed.wait_for_all(out.name, "written", lambda: stop.check(summary))
            if jax.process_index() == 0:
                parts = [atlas.part_path(out, i, nproc) for i in range(nproc)]
                # Keep what an earlier run already put in ``out``: merge it in as a part too.
                atlas.merge_atlases(out, ([out] if out.exists() else []) + parts)
            distributed.wait_for_all(out.name, "merged", lambda: stop.check(summary))
    return summary


def measure_atlas(
    path: str | os.PathLike,
    layers: Sequence[str] | None = None,
    *,
    execution: Execution = DEFAULT_EXECUTION,
    force: bool = False,
    quiet: bool = False,
    model: GenericModel | None = None,
) -> dict[str, Any]:
    """Compute the :mod:`vizjax.analysis.fidelity` measures of an atlas' done filters that lack them (all of
    them with ``force``), store them, and recompute each layer's selectivity/specificity.
    ``model``: the generic model an atlas of one was made with (checked against the atlas'
    identity); None for the built-in networks.

    For atlases written before the measures existed (a format 1 atlas is upgraded to format 2 by
    the writer first). Uses the atlas' own weights (refused if missing or different) and its
    preprocessing setting; ``execution`` gives the dtype-independent chunking. Returns
    ``{"layers": {layer: {"measured", "seconds"}}}``.
    """
    from vizjax.models.weights import load_weights

    path = Path(path)
    with atlas.open_atlas(path) as a:
        attrs, config = dict(a.attrs), dict(a.config)
        names = list(a.layers)
    for name in layers or ():
        if name not in names:
            raise VizjaxError(f"the atlas has no layer {name!r}; it has: {', '.join(names)}")
    check_model(path, attrs, model.identity() if model is not None else None)
    weights: Weights | GenericWeights
    if model is not None:  # the atlas' preprocessing, as the run fed the model
        prep = Preprocessing.from_dict(json.loads(str(attrs.get("preprocessing", "{}"))))
        weights = GenericWeights(model, prep)
    else:
        weights = load_weights(str(attrs.get("weights")))
    if attrs.get("weights_sha256") and attrs["weights_sha256"] != weights.source_sha256:
        raise VizjaxError(
            f"{path} was made with other weights than the prepared {weights.name} "
            "(sha256 differs); prepare the same weights first"
        )
    run = read_config(config)  # the atlas' own settings, whichever version wrote it
    preprocess = run.recipe.preprocess
    execution = execution.replace(dtype=run.execution.dtype)
    root = {k: str(attrs[k]) for k in ("model", "weights", "weights_sha256", "preprocessing")}
    summary: dict[str, Any] = {"layers": {}}
    with atlas.AtlasWriter(path, root, config) as writer:
        with atlas.open_atlas(path) as a:
            for name in layers or names:
                layer = a.layers[name]
                table = layer.fidelity
                # hf_energy is finite for every measured image (robustness may be NaN: dead filter).
                unmeasured = ~np.isfinite(np.asarray(table["hf_energy"], np.float64))
                todo = [
                    int(f) for f, u in zip(table["filter"], unmeasured, strict=True) if force or u
                ]
                t0 = time.perf_counter()

                def stored(filters: np.ndarray, layer: Any = layer) -> tuple[np.ndarray, ...]:
                    rows = [layer.row(f) for f in filters]
                    return (
                        np.stack([layer.raw[r] for r in rows]),
                        np.stack([layer.images[r] for r in rows]),
                    )

                bar = _progress(len(todo), f"{name} (measures)", quiet)
                for done, m in ascent.iter_measures(
                    name,
                    todo,
                    stored,
                    weights.params,
                    weights.preprocessing,
                    preprocess,
                    execution=execution,
                ):
                    writer.write_fields(name, done, m)
                    bar.update(len(done))
                bar.close()
                writer.finish_layer(name)
                summary["layers"][name] = {
                    "measured": len(todo),
                    "seconds": round(time.perf_counter() - t0, 2),
                }
    return summary
