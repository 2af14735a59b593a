"""The commands, one ``cmd_*`` function each (``args`` in, exit status out), and the printing
of their results: the run summary, the plan, an atlas' summary."""

from __future__ import annotations

import argparse
import json
import sys

from vizjax.cli.options import AtlasRequest, _execution, _recipe, _weights, atlas_request
from vizjax.engine.execution import Execution
from vizjax.errors import VizjaxError


def cmd_layers(args: argparse.Namespace) -> int:
    from vizjax import models
    from vizjax.cli.options import MODEL_NAMES

    if args.model is not None and args.model not in MODEL_NAMES:
        import dataclasses

        from vizjax.models.loader import load
        from vizjax.models.network import parse_preprocessing

        if args.weights:
            _weights(args)  # the one line: a built-in model's weight set for your own model
        model = load(args.model, trust=args.trust_model_file)
        if args.preprocess:  # what the atlas would store: checked and shown like the model's own
            model = dataclasses.replace(model, preprocessing=parse_preprocessing(args.preprocess))
        print(_own_layers(model, args.size))
    elif args.weights:
        w = _weights(args)
        print(w.network.summary(w.params))
    else:
        print(models.network(args.model or models.DEFAULT_MODEL).summary())
    return 0


def _own_layers(model, size: int | None) -> str:  # model: GenericModel
    """Your own model's layers: output shape per image (eval_shape) and channels (filters)."""
    from vizjax.models.generic import DEFAULT_SIZE

    n = size or model.input_size or DEFAULT_SIZE
    shapes = model.layer_shapes(n)
    fixed = f"fixed {model.input_size}x{model.input_size}" if model.input_size else "any size"
    prep = model.preprocessing.name if model.preprocessing else "unknown: pass --preprocess"
    width = max([len("Layer"), *(len(name) for name in model.layers)]) + 2
    lines = [
        f"Model: {model.name} ({model.kind}; input {fixed}, {model.channels} channel(s); "
        f"preprocessing {prep})",
        f"shapes per image at {n}x{n}",
        f"{'Layer':<{width}}{'Output shape':<22}Channels",
    ]
    for name in model.layers:
        shape = tuple(shapes[name].shape)
        usable = len(shape) >= 2 and shapes[name].dtype.kind == "f"
        lines.append(f"{name:<{width}}{str(shape):<22}{shape[-1] if usable else '-'}")
    return "\n".join(lines)


def cmd_weights(args: argparse.Namespace) -> int:
    from vizjax.models import MODELS
    from vizjax.models.weights import available, prepare_default, weights_dir

    for m in MODELS.values():  # the default sets are always there after this
        if m.default_weights:
            prepare_default(model=m.name)
    print(f"weights directory: {weights_dir()}")
    for name in available():
        print(f"  {name}")
    return 0


def cmd_convert(args: argparse.Namespace) -> int:
    from vizjax.models.weights import convert_keras

    out = convert_keras(args.file, args.out, model=args.model)
    print(f"wrote {out} (orbax checkpoint + manifest.json; preprocessing: caffe)")
    return 0


def cmd_atlas(args: argparse.Namespace) -> int:
    from vizjax.run import run_request

    req = atlas_request(args)
    if req.plan:
        return _print_plan(req)
    summary = run_request(req.run, quiet=req.quiet)
    _print_summary(summary, json_out=req.json, quiet=req.quiet)
    return 0


def _print_plan(req: AtlasRequest) -> int:
    """``atlas --plan``: what the run would do and take here (vizjax.plan); writes nothing."""
    from vizjax.plan import format_plan, make_plan

    plan = make_plan(req.run)
    print(json.dumps(plan, indent=2) if req.json else format_plan(plan))
    return 0


def _print_summary(
    summary: dict, *, json_out: bool, quiet: bool, interrupted: str | None = None
) -> None:
    """The run summary: JSON on stdout with ``--json`` (for scripts), else a line per layer on
    stderr (unless ``--quiet``) and ``wrote OUT`` on stdout."""
    if json_out:
        print(json.dumps({**summary, "interrupted": interrupted}, indent=2, sort_keys=True))
        return
    if not quiet:
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
    from vizjax import images
    from vizjax.engine import ascent
    from vizjax.run import start_image

    images.check_png_target(args.out)  # before computing: a user's file is never replaced
    w = _weights(args)
    w.network.layer_index(args.layer)
    x0, recipe = start_image(_recipe(args), w.network)
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
        spec = args.filters or f"0:{min(20, layer.num_filters)}"
        wanted = parse_filters(spec, layer.num_filters, args.layer)
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

    from vizjax import images
    from vizjax.analysis import fidelity
    from vizjax.atlas import open_atlas

    if args.atlas is None:
        return _print_tuning_table(args.json)
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
                # The images' channels (the model's input) and how pictures show them.
                "image_channels": layer.image_channels,
                "picture": images.view(layer.image_channels),
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
    config = {k: v for k, v in out["config"].items() if k != "tuning"}
    print("config: " + json.dumps(config, sort_keys=True))
    for name, t in (out["config"].get("tuning") or {}).items():
        print(f"  {name} ran with {_decision_text(t)}")
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
            + (
                f"; images of {s['image_channels']} channel(s), pictured as {s['picture']}"
                if s["image_channels"] != 3
                else ""
            )
            + (f"; NON-FINITE {s['nonfinite_filters']}" if s["nonfinite"] else "")
        )
    return 0


def _decision_text(t: dict) -> str:
    """A layer's execution decision (:meth:`vizjax.engine.tuning.Decision.to_json`) in words."""
    s = t.get("source", {})
    words = {"flag": "flag", "table": "tuning table", "measured": "measured", "rule": "rule"}
    return (
        f"conv {t.get('conv')} ({words.get(s.get('conv'), '?')}), {t.get('per_device') or 'auto'} "
        f"filter(s) per device ({words.get(s.get('per_device'), '?')}), {t.get('dtype')} "
        f"({words.get(s.get('dtype'), '?')})"
    )


def _print_tuning_table(json_out: bool) -> int:
    """``vizjax info`` without an atlas: the tuning table's path, this machine's key and its
    entries (vizjax.engine.tuning)."""
    from vizjax.engine import tuning

    table = tuning.Table.load()
    entries = table.entries()
    m = table.machine
    if json_out:
        out = {"path": str(table.path), "machine": m.key, "cpu": m.cpu, "entries": entries}
        out["mode"] = tuning.mode()
        print(json.dumps(out, indent=2, sort_keys=True))
        return 0
    print(
        f"tuning table {table.path} ({'exists' if table.path.exists() else 'not written yet'}); "
        f"this machine: {m.cpu}, jax {m.jax} (key {m.key}); tuning {tuning.mode()}"
    )
    others = len(table.data["machines"]) - (m.key in table.data["machines"])
    if others:
        print(f"  ({others} other machine(s) or jax version(s) in the file: not used here)")
    if not entries:
        print("  no decisions for this machine yet")
    for key, e in sorted(entries.items()):
        timings = e.get("ms_per_filter_step") or {}
        shown = ", ".join(f"{k} {v:.1f}" for k, v in timings.items())
        print(
            f"  {key}: conv {e.get('conv')}, {e.get('per_device')} filter(s) per device, "
            f"{e.get('dtype')} ({e.get('date', '?')}; ms per filter-step: {shown or '-'})"
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
    from vizjax.cli.options import own_model
    from vizjax.run import measure_atlas

    summary = measure_atlas(
        args.atlas,
        args.layer,
        execution=Execution(batch=args.batch),
        force=args.force,
        quiet=args.quiet,
        model=own_model(args),
    )
    for layer, s in summary["layers"].items():
        print(f"{layer}: measured {s['measured']} filters in {s['seconds']} s", file=sys.stderr)
    print(f"wrote the measures into {args.atlas}; see: vizjax info {args.atlas}")
    return 0


def cmd_merge(args: argparse.Namespace) -> int:
    from pathlib import Path

    from vizjax.atlas import merge_atlases

    existed = Path(args.out).exists() and not any(
        Path(p).exists() and Path(p).samefile(args.out) for p in args.parts
    )
    merge_atlases(args.out, args.parts)
    kept = " and the rows it held" if existed else ""
    print(f"wrote {args.out} from {len(args.parts)} parts{kept}")
    return 0


def cmd_gallery(args: argparse.Namespace) -> int:
    from vizjax.gallery import write_site

    out = write_site(args.atlas, args.out, layers=args.layer, quiet=args.quiet, beside=args.beside)
    print(f"wrote {out} (open it in a browser; no server needed)")
    return 0


def cmd_exemplars(args: argparse.Namespace) -> int:
    from vizjax.analysis.exemplars import run_exemplars
    from vizjax.cli.options import own_model

    s = run_exemplars(
        args.atlas,
        args.images,
        args.layer,
        top=args.top,
        batch=args.batch,
        input_size=args.input_size,
        crop_size=args.crop_size,
        quiet=args.quiet,
        model=own_model(args),
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
