"""The ``vizjax`` argument parser: the commands, their arguments and help texts; a bad argument
is one ``vizjax: ...`` line like every other refusal."""

from __future__ import annotations

import argparse
from typing import NoReturn

from vizjax import __version__
from vizjax.cli.commands import (
    cmd_article,
    cmd_atlas,
    cmd_convert,
    cmd_exemplars,
    cmd_fidelity,
    cmd_gallery,
    cmd_grid,
    cmd_info,
    cmd_layers,
    cmd_merge,
    cmd_render,
    cmd_weights,
)
from vizjax.cli.options import (
    MODEL_NAMES,
    _add_ascent_args,
    _add_model_args,
    _add_own_model_args,
    _batch,
    _positive,
)


class _Parser(argparse.ArgumentParser):
    """argparse, but a bad argument is one ``vizjax: ...`` line (exit status 2) like every other
    refusal, instead of a usage block; ``--help`` still shows the usage."""

    def error(self, message: str) -> NoReturn:
        command = self.prog.removeprefix("vizjax").strip()
        where = f"{command}: " if command else ""
        self.exit(2, f"vizjax: {where}{message} (see {self.prog} --help)\n")


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
    s.add_argument(
        "--size",
        type=_positive,
        default=None,
        help="your own model's input size for the shapes (default: its own, else 224)",
    )
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
    s.add_argument(
        "--tune",
        choices=["auto", "now", "off"],
        default=None,
        help="each layer's convolution and filters per chunk on a CPU: measured here and kept "
        "in the tuning table beside the compilation cache (see vizjax info). auto (default; "
        "VIZJAX_TUNING sets it): use the table, measure a layer only where its run is long "
        "enough to pay for it; now: measure every layer; off: today's rules. --conv, --batch "
        "and --dtype win over it",
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
    s.add_argument(
        "--filters", default=None, help="which filters (default 0:20, or fewer if the layer has)"
    )
    s.add_argument("--cols", type=_positive, default=None, help="tiles per row (default ~sqrt(n))")
    s.add_argument("--no-labels", action="store_true", help="no filter numbers under the tiles")
    s.add_argument("--out", required=True, help="PNG path")
    s.set_defaults(func=cmd_grid)

    s = sub.add_parser(
        "info",
        help="summarize an atlas: layers, filters done, dead filters, config, each layer's "
        "execution; without an atlas: this machine's tuning table",
    )
    s.add_argument("atlas", nargs="?", default=None)
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
    _add_own_model_args(s)
    s.add_argument("--quiet", action="store_true")
    s.set_defaults(func=cmd_fidelity)

    s = sub.add_parser(
        "merge",
        help="join atlas parts written by several processes",
        description="Join the done rows of PARTS into the atlas OUT, by hard links (no data "
        "copied). An atlas already at OUT is one of the parts (after the named ones): its rows "
        "are kept, and it must come from the same run as the parts, like every part. A filter "
        "done in several parts comes from the first that has it.",
    )
    s.add_argument("out", help="the atlas to write; an existing atlas there keeps its rows")
    s.add_argument("parts", nargs="+", help="the atlases to join (of one run)")
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
    _add_own_model_args(s)
    s.add_argument("--quiet", action="store_true", help="no progress bar")
    s.set_defaults(func=cmd_exemplars)

    s = sub.add_parser("article", help="reproduce the seed article's figures into a folder")
    s.add_argument("--out", default="out", help="output folder (default out/)")
    s.add_argument("--weights", default=None)
    s.add_argument("--batch", type=_batch, default="auto")
    s.add_argument("--quiet", action="store_true")
    s.set_defaults(func=cmd_article)
    return p
