"""The command line's options and what they mean: the argument types, the ascent and model
arguments shared by several commands, and the functions that turn parsed arguments into a
Recipe, an Execution and Weights (and check the environment and input files first)."""

from __future__ import annotations

import argparse
import dataclasses
import math
from pathlib import Path
from typing import TYPE_CHECKING

from vizjax.engine.execution import CONVS, DTYPES, Execution
from vizjax.engine.recipe import DEFAULT_RECIPE, PRESETS, Recipe, apply_override, parse_size, preset
from vizjax.errors import VizjaxError

if TYPE_CHECKING:  # the parser imports no JAX: these are imported when a command runs
    from vizjax.distributed import Job
    from vizjax.run import Request


def _batch(text: str) -> int | str:
    if text == "auto":
        return "auto"
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"must be 'auto' or a positive integer, got {text!r}"
        ) from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be 'auto' or a positive integer, got {text!r}")
    return value


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}")
    return value


def _size(text: str) -> tuple[int, int]:
    try:
        return parse_size(text)
    except VizjaxError as e:  # argparse shows ArgumentTypeError's text as it is
        raise argparse.ArgumentTypeError(str(e)) from None


def _finite(text: str) -> float:
    """A float that is finite: ``nan``/``inf`` would poison every filter, so refuse them here."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text!r}")
    return value


def _add_ascent_args(p: argparse.ArgumentParser, default_recipe: str = DEFAULT_RECIPE) -> None:
    g = p.add_argument_group("the picture (a recipe and overrides of its fields)")
    g.add_argument(
        "--recipe",
        default=default_recipe,
        choices=list(PRESETS),
        help=f"named recipe (default {default_recipe}); classic is the seed article's",
    )
    g.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override any recipe field, e.g. optimizer.lr=0.02, param.decay=1.5, "
        "transforms=none, objective.tv=0.5 (repeatable)",
    )
    g.add_argument(
        "--size",
        type=_size,
        default=None,
        help="image size, 128 or HxW (default 128; a start image keeps its own size)",
    )
    g.add_argument("--steps", type=int, default=None, help="optimization steps (the recipe's)")
    g.add_argument(
        "--step-size", type=_finite, default=None, help="learning rate (= --set optimizer.lr=)"
    )
    g.add_argument("--seed", type=int, default=None, help="seed of every random draw (0)")
    g.add_argument(
        "--diversity",
        type=_positive,
        default=None,
        metavar="K",
        help="K images per filter, pushed apart (Lucid's diversity objective; weight "
        "objective.diversity, default 10)",
    )
    g.add_argument(
        "--init", default=None, help="start from this image (e.g. a photo) instead of noise"
    )
    g.add_argument(
        "--no-preprocess",
        action="store_true",
        help="feed the 0-255 image to the network raw, as the article's code does",
    )
    e = p.add_argument_group("execution (how fast, not what picture)")
    e.add_argument(
        "--dtype",
        choices=["auto", *DTYPES],
        default="auto",
        help="compute dtype (auto: an existing atlas' own, else bfloat16 on GPUs/TPUs and "
        "float32 on CPUs)",
    )
    e.add_argument(
        "--batch",
        type=_batch,
        default="auto",
        help="filters per compiled chunk, or auto (default: on a CPU the tuning table's or the "
        "CPU rule's, on accelerators the largest that fits)",
    )
    e.add_argument(
        "--conv",
        choices=list(CONVS),
        default="auto",
        help="3x3 convolution algorithm (auto: the tuning table's on a CPU, else winograd on "
        "CPUs, onednn in bfloat16 on CPUs with AMX, xla on accelerators; onednn: oneDNN's, "
        "the AMX bfloat16 unit's path, with the onednn extra installed)",
    )
    e.add_argument(
        "--segment",
        type=int,
        default=0,
        help="steps per compiled call (0 = auto: all on accelerators, short segments on CPU)",
    )
    e.add_argument(
        "--compile-ahead",
        choices=["auto", "on", "off"],
        default="auto",
        help="compile the next layer while one runs (auto: on accelerators, not on CPU)",
    )
    _add_model_args(e)
    e.add_argument("--quiet", action="store_true", help="no progress bar or summary")


#: ``vizjax.models.MODELS``' names, typed here so that building the parser imports no JAX
#: (tests/test_models.py checks they agree).
MODEL_NAMES = ("vgg16", "vgg19", "alexnet")


def _add_model_args(g: argparse._ActionsContainer, weights_help: str | None = None) -> None:
    g.add_argument(
        "--model",
        default=None,
        metavar="MODEL",
        help=f"the network: {', '.join(MODEL_NAMES)} (default: the weights', else vgg16; "
        "without --weights, its default weights), or your own: file.keras, "
        "package.module:factory or path/to/file.py:factory (a zero-argument function returning "
        "(flax module, variables[, preprocessing]))",
    )
    g.add_argument(
        "--weights",
        default=None,
        help=weights_help or "weight set name (default: the model's, vgg16-torchvision)",
    )
    g.add_argument(
        "--preprocess",
        default=None,
        metavar="P",
        help="what your own model expects of RGB 0-255 pixels: caffe (BGR minus ImageNet means), "
        "torch (/255, ImageNet mean and std), tf (/127.5 - 1), none, or "
        "mean=M,std=S,scale=K (M, S: one value or one per channel joined by '/'); stored in the "
        "atlas",
    )
    g.add_argument(
        "--trust-model-file",
        action="store_true",
        help="load a .keras file outside Keras' safe mode: it may run code the file holds",
    )


def _recipe(args: argparse.Namespace) -> Recipe:
    """The preset named by ``--recipe`` with the command line's overrides applied."""
    recipe = preset(args.recipe)
    for assignment in args.set:
        recipe = apply_override(recipe, assignment)
    changes = {
        k: v
        for k, v in {
            "size": args.size,
            "steps": args.steps,
            "seed": args.seed,
            "init": args.init,
        }.items()
        if v is not None
    }
    if args.step_size is not None:
        changes["optimizer"] = dataclasses.replace(recipe.optimizer, lr=args.step_size)
    if args.no_preprocess:
        changes["preprocess"] = False
    recipe = recipe.replace(**changes)
    return recipe.with_diversity(args.diversity) if args.diversity else recipe


def _dtype(args: argparse.Namespace) -> str:
    """``--dtype``, with ``auto`` resolved: the dtype of the atlas at ``--out`` when one exists (a
    resumed run keeps its own), else :func:`vizjax.engine.execution.default_dtype` of this platform."""
    if args.dtype != "auto":
        return args.dtype
    from vizjax.run import auto_dtype

    return auto_dtype(getattr(args, "out", None))


def _execution(args: argparse.Namespace) -> Execution:
    return Execution(
        dtype=_dtype(args),
        conv=getattr(args, "conv", "auto"),
        batch=args.batch,
        segment=args.segment,
        compile_ahead=getattr(args, "compile_ahead", "auto"),
    )


def _weights(args: argparse.Namespace):  # -> Weights | GenericWeights
    """The weights ``--weights`` names (default: ``--model``'s default set), checked against
    ``--model`` when both are given (one line if they are another model's); for your own model
    (``--model`` a file or a factory, :func:`vizjax.models.loader.load`), the model with the
    preprocessing ``--preprocess`` or the model itself gives."""
    from vizjax.models import DEFAULT_MODEL
    from vizjax.models.weights import default_weights, load_weights

    model = getattr(args, "model", None)
    if model is not None and model not in MODEL_NAMES:
        return _own_model(args, model)
    if getattr(args, "preprocess", None):
        raise VizjaxError(
            "--preprocess is for your own models; the built-in weights fix theirs "
            "(--no-preprocess feeds the raw 0-255 pixels)"
        )
    if not args.weights:
        return load_weights(default_weights(model or DEFAULT_MODEL))
    w = load_weights(args.weights)
    if model and w.model != model:
        raise VizjaxError(
            f"weights {w.name} are {w.model}'s, not {model}'s: drop --weights for {model}'s "
            f"default or pass {model} weights"
        )
    return w


def _add_own_model_args(g: argparse._ActionsContainer) -> None:
    """``--model`` and ``--trust-model-file`` of a command that reads an atlas of your own model
    (its preprocessing and identity are the atlas')."""
    g.add_argument(
        "--model",
        default=None,
        metavar="MODEL",
        help="for an atlas of your own model: the same model (file.keras, package.module:factory "
        "or path/to/file.py:factory); checked against the atlas' architecture and weights",
    )
    g.add_argument(
        "--trust-model-file",
        action="store_true",
        help="load a .keras file outside Keras' safe mode: it may run code the file holds",
    )


def own_model(args: argparse.Namespace):  # -> GenericModel | None
    """The model ``--model`` names for a command that reads an atlas (None without it)."""
    spec = getattr(args, "model", None)
    if spec is None:
        return None
    if spec in MODEL_NAMES:
        raise VizjaxError(
            f"--model {spec}: a built-in network's atlas names its own model and weights; "
            "--model here is for an atlas of your own model"
        )
    from vizjax.models.loader import load

    return load(spec, trust=getattr(args, "trust_model_file", False))


def _own_model(args: argparse.Namespace, spec: str):  # -> GenericWeights
    from vizjax.models.generic import GenericWeights
    from vizjax.models.loader import load
    from vizjax.models.network import IDENTITY, parse_preprocessing

    if args.weights:
        raise VizjaxError(
            f"--weights names a built-in model's weight set; {spec} brings its own weights"
        )
    prep = parse_preprocessing(args.preprocess) if getattr(args, "preprocess", None) else None
    model = load(spec, trust=getattr(args, "trust_model_file", False))
    prep = prep or model.preprocessing  # type: ignore[union-attr]
    if prep is None:
        if not getattr(args, "no_preprocess", False):
            raise VizjaxError(
                f"{model.name} does not say what input it expects: pass --preprocess "  # type: ignore[union-attr]
                "caffe|torch|tf|none or mean=M,std=S,scale=K"
            )
        prep = IDENTITY
    return GenericWeights(model, prep)  # type: ignore[arg-type]


def _check_environment(args: argparse.Namespace) -> None:
    """The environment variables a command reads, checked before it does anything."""
    if args.command in ("atlas", "fidelity", "article"):
        from vizjax.progress import progress_seconds

        progress_seconds()
    if args.command == "atlas" and getattr(args, "tune", None) is None:
        from vizjax.engine.tuning import mode

        mode()  # VIZJAX_TUNING


def _probe_inputs(args: argparse.Namespace) -> None:
    """Walk the HDF5 files a command reads from elsewhere in a child process first: HDF5 can
    crash the process on some damaged files (:mod:`vizjax.probe`)."""
    from vizjax.probe import atlas_files, check_hdf5

    if args.command == "info" and args.atlas is None:
        return
    if args.command in ("info", "grid", "gallery", "exemplars"):
        beside = getattr(args, "beside", None)  # gallery --beside: a second atlas
        check_hdf5(atlas_files(args.atlas) + (atlas_files(beside) if beside else []))
    elif args.command == "merge":
        check_hdf5([f for part in args.parts for f in atlas_files(part)])
    elif args.command == "convert":
        check_hdf5([args.file])


@dataclasses.dataclass(frozen=True)
class AtlasRequest:
    """``vizjax atlas``'s whole request, built and checked at the door (:func:`atlas_request`):
    the multi-process ``job``, the run (:class:`vizjax.run.Request`: what to compute, the
    recipe, the execution, the model and its weights, the atlas file) and the command's own
    flags. Nothing below the CLI sees the parsed arguments or checks them again."""

    job: Job
    run: Request
    plan: bool = False
    json: bool = False
    quiet: bool = False


def atlas_request(args: argparse.Namespace) -> AtlasRequest:
    """``vizjax atlas``'s arguments -> its :class:`AtlasRequest`, checked in one pass in the
    order a user fixes them (one ``vizjax:`` line for the first problem): the multi-process
    arguments, the layers, the model and weights, the layer names, the recipe, then the run's
    request as a whole (:func:`vizjax.run.request`: layer kinds, image size, filter indices),
    then each layer's execution (:func:`vizjax.run.tuned`).

    ``jax.distributed`` starts here, once its arguments are checked: before anything touches a
    JAX backend (loading the weights, ``--dtype auto``)."""
    from vizjax import distributed
    from vizjax.run import request, tuned

    job = distributed.job(args.coordinator, args.num_processes, args.process_id, args.distributed)
    distributed.start(job)
    if not (args.all_layers or args.layer):
        raise VizjaxError("give --layer L (repeatable) or --all-layers")
    weights = _weights(args)
    network = weights.network
    if args.all_layers:
        layers = list(_all_layers(network, args.size))
    else:
        layers = list(dict.fromkeys(args.layer))
    for layer in layers:
        network.layer_index(layer)
    recipe = _recipe(args)
    if getattr(args, "conv", "auto") == "onednn":
        _check_onednn()
    execution = _execution(args)
    run = request(args.out, layers, args.filters, recipe, weights, execution=execution)
    # Each layer's convolution and chunk (and, for a new atlas with --dtype auto, its dtype):
    # the tuning table's, measured here first where --tune asks it.
    free = args.dtype == "auto" and not Path(args.out).exists()
    run = tuned(run, args.tune, dtype_free=free)
    return AtlasRequest(job, run, plan=args.plan, json=args.json, quiet=args.quiet)


def _check_onednn() -> None:
    """``--conv onednn``: a machine that can run oneDNN's convolutions."""
    from vizjax.models import onednn

    reason = onednn.unavailable()
    if reason is not None:
        raise VizjaxError(f"--conv onednn: {reason}")


def _all_layers(network, size: int | None) -> tuple[str, ...]:
    """``--all-layers``: a table network's convolutions; your own model's layers with a channel
    axis and a float output."""
    from vizjax.models.generic import GenericModel

    if not isinstance(network, GenericModel):
        return network.conv_layers
    shapes = network.layer_shapes(size or None)
    return tuple(
        n for n in network.layers if len(shapes[n].shape) >= 2 and shapes[n].dtype.kind == "f"
    )
