"""The ``vizjax`` command: a thin layer that parses arguments and calls the library.

Every user-facing problem is a :class:`vizjax.errors.VizjaxError`, printed as one line
(``vizjax: ...``) with exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

from vizjax import __version__
from vizjax.errors import Interrupted, VizjaxError
from vizjax.execution import DTYPES, Execution, enable_compilation_cache
from vizjax.recipe import DEFAULT_RECIPE, PRESETS, Recipe, apply_override, parse_size, preset


class _Parser(argparse.ArgumentParser):
    """argparse, but a bad argument is one ``vizjax: ...`` line (exit status 2) like every other
    refusal, instead of a usage block; ``--help`` still shows the usage."""

    def error(self, message: str) -> NoReturn:
        command = self.prog.removeprefix("vizjax").strip()
        where = f"{command}: " if command else ""
        self.exit(2, f"vizjax: {where}{message} (see {self.prog} --help)\n")


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
        type=int,
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
        help="filters per compiled chunk, or auto (largest that fits; default)",
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
        choices=MODEL_NAMES,
        default=None,
        help="the network (default: the weights', else vgg16); without --weights, its default "
        "weights (vgg16-torchvision, alexnet-torchvision; vgg19: convert Keras' file)",
    )
    g.add_argument(
        "--weights",
        default=None,
        help=weights_help or "weight set name (default: the model's, vgg16-torchvision)",
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
    resumed run keeps its own), else :func:`vizjax.execution.default_dtype` of this platform."""
    if args.dtype != "auto":
        return args.dtype
    out = getattr(args, "out", None)
    if out and Path(out).is_file():
        from vizjax.atlas import open_atlas
        from vizjax.config import read_config

        try:
            with open_atlas(out) as a:
                return read_config(a.config).execution.dtype
        except (VizjaxError, OSError, KeyError, ValueError):
            pass  # not an atlas this run may resume: the run itself says so, in one line
    import jax

    from vizjax.execution import default_dtype

    return default_dtype(jax.default_backend())


def _execution(args: argparse.Namespace) -> Execution:
    return Execution(
        dtype=_dtype(args),
        batch=args.batch,
        segment=args.segment,
        compile_ahead=getattr(args, "compile_ahead", "auto"),
    )


def _weights(args: argparse.Namespace):  # -> Weights
    """The weights ``--weights`` names (default: ``--model``'s default set), checked against
    ``--model`` when both are given (one line if they are another model's)."""
    from vizjax.models import DEFAULT_MODEL
    from vizjax.weights import default_weights, load_weights

    model = getattr(args, "model", None)
    if not args.weights:
        return load_weights(default_weights(model or DEFAULT_MODEL))
    w = load_weights(args.weights)
    if model and w.model != model:
        raise VizjaxError(
            f"weights {w.name} are {w.model}'s, not {model}'s: drop --weights for {model}'s "
            f"default or pass {model} weights"
        )
    return w


def _check_environment(args: argparse.Namespace) -> None:
    """The environment variables a command reads, checked before it does anything."""
    if args.command in ("atlas", "fidelity", "article"):
        from vizjax.progress import progress_seconds

        progress_seconds()


def _probe_inputs(args: argparse.Namespace) -> None:
    """Walk the HDF5 files a command reads from elsewhere in a child process first: HDF5 can
    crash the process on some damaged files (:mod:`vizjax.probe`)."""
    from vizjax.probe import atlas_files, check_hdf5

    if args.command in ("info", "grid", "gallery", "exemplars"):
        beside = getattr(args, "beside", None)  # gallery --beside: a second atlas
        check_hdf5(atlas_files(args.atlas) + (atlas_files(beside) if beside else []))
    elif args.command == "merge":
        check_hdf5([f for part in args.parts for f in atlas_files(part)])
    elif args.command == "convert":
        check_hdf5([args.file])


def cmd_layers(args: argparse.Namespace) -> int:
    from vizjax import models

    if args.weights:
        w = _weights(args)
        print(w.network.summary(w.params))
    else:
        print(models.network(args.model or models.DEFAULT_MODEL).summary())
    return 0


def cmd_weights(args: argparse.Namespace) -> int:
    from vizjax.models import MODELS
    from vizjax.weights import available, prepare_default, weights_dir

    for m in MODELS.values():  # the default sets are always there after this
        if m.default_weights:
            prepare_default(model=m.name)
    print(f"weights directory: {weights_dir()}")
    for name in available():
        print(f"  {name}")
    return 0


def cmd_convert(args: argparse.Namespace) -> int:
    from vizjax.weights import convert_keras

    out = convert_keras(args.file, args.out, model=args.model)
    print(f"wrote {out} (orbax checkpoint + manifest.json; preprocessing: caffe)")
    return 0


def cmd_atlas(args: argparse.Namespace) -> int:
    from vizjax import distributed
    from vizjax.run import run_atlas

    distributed.check(args.coordinator, args.num_processes, args.process_id, args.distributed)
    distributed.initialize(
        args.coordinator, args.num_processes, args.process_id, auto=args.distributed
    )
    if not (args.all_layers or args.layer):
        raise VizjaxError("give --layer L (repeatable) or --all-layers")
    weights = _weights(args)
    network = weights.network
    layers = list(network.conv_layers if args.all_layers else dict.fromkeys(args.layer))
    for layer in layers:
        network.layer_index(layer)
    recipe = _recipe(args)
    if args.plan:
        return _print_plan(args, layers, recipe, weights)
    summary = run_atlas(
        args.out,
        layers,
        args.filters,
        recipe,
        weights,
        execution=_execution(args),
        quiet=args.quiet,
    )
    _print_summary(summary, args)
    return 0


def _print_plan(args: argparse.Namespace, layers: list[str], recipe: Recipe, weights) -> int:
    """``atlas --plan``: what the run would do and take here (vizjax.plan); writes nothing."""
    from vizjax.plan import format_plan, make_plan

    plan = make_plan(args.out, layers, args.filters, recipe, weights, execution=_execution(args))
    print(json.dumps(plan, indent=2) if args.json else format_plan(plan))
    return 0


def _print_summary(summary: dict, args: argparse.Namespace, interrupted: str | None = None) -> None:
    """The run summary: JSON on stdout with ``--json`` (for scripts), else a line per layer on
    stderr (unless ``--quiet``) and ``wrote OUT`` on stdout."""
    if getattr(args, "json", False):
        print(json.dumps({**summary, "interrupted": interrupted}, indent=2, sort_keys=True))
        return
    if not args.quiet:
        for layer, s in summary.get("layers", {}).items():
            flags = f"{s['zero_start_grad_computed']} with zero gradient at the start"
            if s["nonfinite_computed"]:
                flags += f", {s['nonfinite_computed']} non-finite"
            print(
                f"{layer}: {s['done']} filters ({s['computed']} computed now, {flags}) "
                f"in {s['seconds']} s",
                file=sys.stderr,
            )
    if not interrupted:
        print(f"wrote {summary['out']}")


def cmd_render(args: argparse.Namespace) -> int:
    from vizjax import ascent, images
    from vizjax.run import start_image

    images.check_png_target(args.out)  # before computing: a user's file is never replaced
    w = _weights(args)
    w.network.layer_index(args.layer)
    x0, recipe = start_image(_recipe(args))
    res = ascent.visualize(
        args.layer,
        [args.filter],
        recipe,
        w.params,
        w.preprocessing,
        start=x0,
        execution=_execution(args).replace(batch=1),
    )
    out = images.save_png(images.grid(res.images[0], cols=len(res.images[0]), pad=0), args.out)
    status = (
        " (zero gradient at the start: the image never moved)" if res.zero_start_grad[0] else ""
    )
    print(
        f"wrote {out}: {args.layer} filter {args.filter}, objective "
        f"{res.objective[0, 0]:.4g} -> {res.objective[0, -1]:.4g}{status}"
    )
    return 0


def cmd_grid(args: argparse.Namespace) -> int:
    import numpy as np

    from vizjax import images
    from vizjax.atlas import open_atlas
    from vizjax.run import parse_filters

    images.check_png_target(args.out)
    with open_atlas(args.atlas) as a:
        layer = _atlas_layer(a, args.layer)
        wanted = parse_filters(args.filters, layer.num_filters, args.layer)
        done = set(int(f) for f in layer.completed())
        have = [f for f in wanted if f in done]
        if not have:
            raise VizjaxError(f"{args.atlas} has none of those filters of {args.layer} done")
        tiles = np.stack([layer.image(f) for f in have])
    pic = images.grid(
        tiles, labels=[str(f) for f in have] if not args.no_labels else None, cols=args.cols
    )
    out = images.save_png(pic, args.out)
    missing = len(wanted) - len(have)
    print(
        f"wrote {out}: {len(have)} filters of {args.layer}"
        + (f" ({missing} requested filters not in the atlas yet)" if missing else "")
    )
    return 0


def _atlas_layer(a, name: str):
    if name not in a.layers:
        raise VizjaxError(
            f"the atlas has no layer {name!r}; it has: {', '.join(a.layers) or 'none'}"
        )
    return a.layers[name]


def cmd_info(args: argparse.Namespace) -> int:
    import numpy as np

    from vizjax import fidelity
    from vizjax.atlas import open_atlas

    photo = fidelity.photo_hf_energy()
    with open_atlas(args.atlas) as a:
        out = {
            "attrs": {k: v for k, v in a.attrs.items() if k != "config"},
            "config": a.config,
            "photo_hf_energy": photo,
            # The folder that travels with the index (format 1 is one file).
            "data_folder": a.data_dir.name if a.format_version == 2 else None,
            "layers": {},
        }
        for name, layer in a.layers.items():
            table = layer.fidelity
            s = fidelity.summarize(table)
            out["layers"][name] = {
                "num_filters": layer.num_filters,
                "rows": len(layer.filters),
                **s,
                "dead": [int(f) for f in table["filter"][np.asarray(table["dead"], bool)]],
                "nonfinite_filters": [
                    int(f) for f in table["filter"][np.asarray(table["nonfinite"], bool)]
                ],
            }
    if args.json:
        print(json.dumps(out, indent=2, sort_keys=True, default=_json_default))
        return 0
    attrs = out["attrs"]
    print(
        f"{args.atlas}: {attrs.get('format')} v{attrs.get('format_version')}, "
        f"model {attrs.get('model')}, weights {attrs.get('weights')}, created {attrs.get('created')}"
        + (
            f"; data folder {out['data_folder']}/ (move it with the index)"
            if out["data_folder"]
            else ""
        )
    )
    print("config: " + json.dumps(out["config"], sort_keys=True))
    for name, s in out["layers"].items():
        dead = s["dead"]
        print(
            f"  {name}: {s['done']}/{s['rows']} requested filters done (layer has "
            f"{s['num_filters']}); dead {_pct(s['dead_fraction'])}"
            + (f" {dead[:20]}{'...' if len(dead) > 20 else ''}" if dead else "")
            + f"; selectivity {_pct(s['selectivity'])}; median robustness "
            f"{s['median_robustness']:.2f}; median HF energy {s['median_hf_energy']:.3f} "
            f"(cat photo {photo:.3f}); mean final activation {s['mean_final_activation']:.4g}"
            + (f"; zero gradient at start {s['zero_start_grad']}" if s["zero_start_grad"] else "")
            + (f"; NON-FINITE {s['nonfinite_filters']}" if s["nonfinite"] else "")
        )
    return 0


def _pct(x: float) -> str:
    return "n/a" if x != x else f"{100 * x:.0f}%"


def _json_default(value: object) -> object:
    """numpy scalars and arrays in ``--json`` output; NaN stays NaN (JSON's common extension)."""
    import numpy as np

    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"not JSON serializable: {type(value).__name__}")


def cmd_fidelity(args: argparse.Namespace) -> int:
    from vizjax.run import measure_atlas

    summary = measure_atlas(
        args.atlas,
        args.layer,
        execution=Execution(batch=args.batch),
        force=args.force,
        quiet=args.quiet,
    )
    for layer, s in summary["layers"].items():
        print(f"{layer}: measured {s['measured']} filters in {s['seconds']} s", file=sys.stderr)
    print(f"wrote the measures into {args.atlas}; see: vizjax info {args.atlas}")
    return 0


def cmd_merge(args: argparse.Namespace) -> int:
    from vizjax.atlas import merge_atlases

    merge_atlases(args.out, args.parts)
    print(f"wrote {args.out} from {len(args.parts)} parts")
    return 0


def cmd_gallery(args: argparse.Namespace) -> int:
    from vizjax.gallery import write_site

    out = write_site(args.atlas, args.out, layers=args.layer, quiet=args.quiet, beside=args.beside)
    print(f"wrote {out} (open it in a browser; no server needed)")
    return 0


def cmd_exemplars(args: argparse.Namespace) -> int:
    from vizjax.exemplars import run_exemplars

    s = run_exemplars(
        args.atlas,
        args.images,
        args.layer,
        top=args.top,
        batch=args.batch,
        input_size=args.input_size,
        crop_size=args.crop_size,
        quiet=args.quiet,
    )
    what = "are up to date (same files, same settings) in" if s["up_to_date"] else "written into"
    print(
        f"exemplars of {', '.join(s['layers'])} {what} {args.atlas}: "
        f"{s['n_images']} images read, {s['n_skipped']} files skipped (not readable images)"
    )
    return 0


def cmd_article(args: argparse.Namespace) -> int:
    from vizjax.article import reproduce

    reproduce(args.out, weights_name=args.weights, batch=args.batch, quiet=args.quiet)
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="vizjax",
        description="Feature visualization for VGG16 (and AlexNet, VGG19) in JAX: what each "
        "filter responds to.",
    )
    p.add_argument("--version", action="version", version=f"vizjax {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    s = sub.add_parser(
        "layers", help="print a model's layers, output shapes and parameter counts (--model)"
    )
    _add_model_args(s, "count the parameters of this weight set")
    s.set_defaults(func=cmd_layers)

    s = sub.add_parser("weights", help="list prepared weight sets")
    s.set_defaults(func=cmd_weights)

    s = sub.add_parser("convert", help="convert a Keras VGG16 or VGG19 HDF5 weight file")
    s.add_argument("file", help="Keras .h5 file (weights or full model)")
    s.add_argument(
        "--model", choices=MODEL_NAMES[:2], default="vgg16", help="the file's network (vgg16)"
    )
    s.add_argument("--out", required=True, help="output directory, e.g. weights/keras-vgg16")
    s.set_defaults(func=cmd_convert)

    s = sub.add_parser(
        "atlas", help="optimize every requested filter into an HDF5 atlas (resumable)"
    )
    s.add_argument("--layer", action="append", help="layer name (repeatable)")
    s.add_argument("--all-layers", action="store_true", help="every convolution layer")
    s.add_argument("--filters", default="all", help="all | 0:20 | 0,5,7 (default all)")
    s.add_argument("--out", required=True, help="atlas file (.h5)")
    _add_ascent_args(s)
    s.add_argument(
        "--json", action="store_true", help="print the run summary as JSON on stdout (scripts)"
    )
    s.add_argument(
        "--plan",
        action="store_true",
        help="only print what the run would do: per layer the filters to do, the predicted "
        "time here (timed on a few steps; compiling apart) and the size on disk; writes nothing",
    )
    d = s.add_argument_group("multi-process (jax.distributed)")
    d.add_argument(
        "--distributed",
        action="store_true",
        help="initialize jax.distributed from the cluster environment (Slurm, TPU pods)",
    )
    d.add_argument("--coordinator", default=None, help="host:port of process 0")
    d.add_argument("--num-processes", type=int, default=None)
    d.add_argument("--process-id", type=int, default=None)
    s.set_defaults(func=cmd_atlas)

    s = sub.add_parser("render", help="optimize one filter and write its PNG")
    s.add_argument("--layer", required=True)
    s.add_argument("--filter", type=int, required=True)
    s.add_argument("--out", required=True, help="PNG path")
    _add_ascent_args(s)
    s.set_defaults(func=cmd_render)

    s = sub.add_parser("grid", help="tile a layer's images from an atlas into one PNG")
    s.add_argument("atlas")
    s.add_argument("--layer", required=True)
    s.add_argument("--filters", default="0:20", help="which filters (default 0:20)")
    s.add_argument("--cols", type=_positive, default=None, help="tiles per row (default ~sqrt(n))")
    s.add_argument("--no-labels", action="store_true", help="no filter numbers under the tiles")
    s.add_argument("--out", required=True, help="PNG path")
    s.set_defaults(func=cmd_grid)

    s = sub.add_parser(
        "info", help="summarize an atlas: layers, filters done, dead filters, config"
    )
    s.add_argument("atlas")
    s.add_argument("--json", action="store_true", help="machine-readable output")
    s.set_defaults(func=cmd_info)

    s = sub.add_parser(
        "fidelity",
        help="compute the fidelity measures of an atlas written without them (or again)",
    )
    s.add_argument("atlas")
    s.add_argument("--layer", action="append", help="only this layer (repeatable)")
    s.add_argument("--force", action="store_true", help="measure filters already measured too")
    s.add_argument("--batch", type=_batch, default="auto", help="images per compiled chunk")
    s.add_argument("--quiet", action="store_true")
    s.set_defaults(func=cmd_fidelity)

    s = sub.add_parser("merge", help="join atlas parts written by several processes")
    s.add_argument("out")
    s.add_argument("parts", nargs="+")
    s.set_defaults(func=cmd_merge)

    s = sub.add_parser(
        "gallery",
        help="write the atlas as a static website (index, a page per layer and per filter)",
        description="A folder of HTML pages and PNG files, viewable from file:// (no server, "
        "no network). --out DIR writes DIR/index.html and a subfolder per layer; --out NAME.html "
        "writes one layer's page (pick it with --layer if the atlas has several) with its files "
        "in NAME_files/. Keyboard: <- -> previous/next filter, ^ up.",
    )
    s.add_argument("atlas")
    s.add_argument("--out", required=True, help="folder for the site, or NAME.html for one layer")
    s.add_argument("--layer", action="append", help="only this layer (repeatable; default: all)")
    s.add_argument("--beside", help="a second atlas whose pictures to show beside each filter's")
    s.add_argument("--quiet", action="store_true", help="no progress bar")
    s.set_defaults(func=cmd_gallery)

    s = sub.add_parser(
        "exemplars",
        help="find the images of a folder that drive each filter most (resumable)",
        description="For every channel of the atlas' layers, the top images of a folder by mean "
        "channel activation, with a crop of the receptive field around the most active unit. "
        "Every file under IMAGES is tried (recursively); files that are not readable images "
        "are skipped and counted. Each image is resized so its short side is --input-size and "
        "centre-cropped. Kill it and rerun the same command: it resumes.",
    )
    s.add_argument("atlas")
    s.add_argument("--images", required=True, help="folder of images (JPEG, PNG, ...)")
    s.add_argument("--layer", action="append", help="layer (repeatable; default: all the atlas')")
    s.add_argument("--top", type=int, default=9, help="images kept per filter (9)")
    s.add_argument("--batch", type=int, default=16, help="images per forward pass (16)")
    s.add_argument("--input-size", type=int, default=224, help="side of the network input (224)")
    s.add_argument("--crop-size", type=int, default=64, help="side of the stored crops (64)")
    s.add_argument("--quiet", action="store_true", help="no progress bar")
    s.set_defaults(func=cmd_exemplars)

    s = sub.add_parser("article", help="reproduce the seed article's figures into a folder")
    s.add_argument("--out", default="out", help="output folder (default out/)")
    s.add_argument("--weights", default=None)
    s.add_argument("--batch", type=_batch, default="auto")
    s.add_argument("--quiet", action="store_true")
    s.set_defaults(func=cmd_article)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    enable_compilation_cache()  # kept between runs; VIZJAX_COMPILATION_CACHE=0 turns it off
    try:
        _check_environment(args)
        _probe_inputs(args)
        return int(args.func(args) or 0)
    except VizjaxError as e:
        print(f"vizjax: {e}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        # The reader of stdout left early (`vizjax info A | head -1`): what it read is what it
        # wanted. Point stdout at /dev/null so the interpreter's final flush does not fail too.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except Interrupted as e:
        # SIGINT/SIGTERM: the run stopped after the chunk in flight, everything before is kept.
        if e.summary and getattr(args, "json", False):
            _print_summary(e.summary, args, interrupted=signal.Signals(e.signum).name)
        done = sum(s["computed"] for s in e.summary.get("layers", {}).values())
        saved = f"; {done} filters computed by this run are saved" if e.summary else ""
        print(f"vizjax: {e}{saved}; rerun the same command to resume", file=sys.stderr)
        return 128 + e.signum
    except KeyboardInterrupt:
        print("vizjax: interrupted; rerun the same command to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
