"""Recipes: everything that decides what picture a filter gets, as one frozen dataclass.

A :class:`Recipe` names the param, the transforms, the objective, the optimizer, the number of
steps and the start (size, seed, start noise or photo). How a run *executes* (dtype, convolution
algorithm, unrolling, chunk size) lives apart, in :mod:`vizjax.engine.execution`. From a recipe follow:

* the compiled program's cache key: :meth:`Recipe.program` (the recipe with its *inputs* -- fields
  the program takes as arguments, marked ``metadata={"input": True}`` -- set to their defaults);
* the atlas' identity: every field but ``init`` (marked ``metadata={"identity": False}``: the
  start photo counts by its sha256), see :mod:`vizjax.config`.

Presets (:data:`PRESETS`), each documented in the README with its source:

* ``classic`` -- the seed article: pixels from N(127, 10), channel mean, the RMS-normalized step of
  1.0, 20 steps, Chollet's display transform. Must stay exact.
* ``lucid`` -- Lucid's feature visualization: FFT param with decorrelated colour and sigmoid,
  ``standard_transforms``, Adam(0.05), 512 steps, redirected ReLU gradient for the first 16 steps.
* ``lucent`` -- the default (:data:`DEFAULT_RECIPE`): ``lucid`` with the transforms of
  torch-lucent 0.1.8's ``render_vis`` (its ``standard_transforms`` and ``fixed_image_size``:
  :class:`vizjax.engine.transform.LucentView`), which make the pictures survive being moved, and 64
  steps: by the fidelity measures its picture is Lucent's 512-step one by then (bench/README.md,
  "Quality per second").
* ``keras-vis`` -- tf-keras-vis' ActivationMaximization defaults (tuned for VGG16): pixels from
  U(0, 255), jitter 4 (roll) and rotate up to 1 degree applied to the image itself every step, total
  variation 1.0 + L1 0.3 (normalized by element count), RMSprop(1.0, rho 0.999), 200 steps.
* ``maco`` -- MACO (Fel et al. 2023; Horama): phase-only spectrum with a fixed natural magnitude,
  4 random crops per step with noise, NAdam(1.0), 256 steps (see :mod:`vizjax.engine.param`,
  :class:`vizjax.engine.transform.Crops` for how Horama's 1280 px settings were scaled).

:func:`apply_override` implements ``--set key=value`` (``optimizer.lr=0.02``, ``param=fft``,
``param.decay=1.5``, ``transforms=standard``, ``transforms.1.d=4``, ``objective.tv=0.5``...).
"""

from __future__ import annotations

import dataclasses
import json
import math
import types
import typing
from typing import Any

from vizjax.engine import objectives, optim, param, transform
from vizjax.errors import VizjaxError

DISPLAYS = ("deprocess", "clip")
#: Weight of the diversity term when ``--diversity K`` does not say. Measured (lucid, block3_conv1,
#: 64 px, 64 steps, K = 3): the images' mean pairwise Gram cosine similarity is 0.98 at weight 0,
#: 0.96 at 1, 0.28 at 10 (their activations 20% lower), 0.05 at 100 (activations near 0). Lucid's
#: notebook uses 1e2 x its own (K - 1)-times larger sum on GoogLeNet; activations differ per layer.
DEFAULT_DIVERSITY_WEIGHT = 10.0


def _input(default: Any) -> Any:
    """A field the compiled program takes as an argument (not part of its cache key)."""
    return dataclasses.field(default=default, metadata={"input": True})


@dataclasses.dataclass(frozen=True)
class Recipe:
    """What makes a filter's picture.

    Attributes:
      name: the preset it started from (informational).
      param: how the image is represented (:mod:`vizjax.engine.param`).
      transforms: random transforms of each image before the network sees it, per step
        (:mod:`vizjax.engine.transform`; robustness, Lucid's way).
      modifiers: random transforms applied to the image ITSELF before every step (tf-keras-vis'
        "input modifiers"; pixel param only).
      objective: what to maximize (:class:`vizjax.engine.objectives.Spec`), at the target layer.
      optimizer: the optax optimizer (:class:`vizjax.engine.optim.Optimizer`).
      steps: optimization steps.
      redirect_relu: Lucid's redirected ReLU gradient while ``step <= redirect_relu`` (Lucid: 16,
        i.e. its ``global_step > 16`` test); 0 = off.
      images: K images per filter, optimized together (diversity; see ``objective.diversity``).
      display: ``"deprocess"`` (Chollet's: standardize, x0.1 + 0.5, clip, x255) or ``"clip"``
        (the image itself, clipped to 0-255).
      preprocess: apply the weights' input preprocessing (False: feed 0-255 pixels raw, as the
        article's code does).
      size: ``(height, width)`` of the image; None: 128x128, or the start photo's own size.
      seed: seeds the shared start noise and every filter's key
        ``fold_in(fold_in(key(seed), layer), filter)``.
      noise_mean, noise_std: the shared start noise N(mean, std), RGB 0-255 units.
      init: path of a start photo (not part of the identity: ``init_sha256`` is).
    """

    name: str = "classic"
    param: param.Param = param.Pixel()
    transforms: tuple[transform.Transform, ...] = ()
    modifiers: tuple[transform.Transform, ...] = ()
    objective: objectives.Spec = objectives.Spec()
    optimizer: optim.Optimizer = optim.Optimizer()
    steps: int = 20
    redirect_relu: int = 0
    images: int = 1
    display: str = "deprocess"
    preprocess: bool = True
    size: tuple[int, int] | None = _input(None)
    seed: int = _input(0)
    noise_mean: float = _input(127.0)
    noise_std: float = _input(10.0)
    init: str | None = dataclasses.field(  # the path: the photo counts by its sha256
        default=None, metadata={"input": True, "identity": False}
    )
    init_sha256: str | None = _input(None)

    def __post_init__(self) -> None:
        _check(self)

    def replace(self, **changes: Any) -> Recipe:
        return dataclasses.replace(self, **changes)

    def with_diversity(self, k: int, weight: float | None = None) -> Recipe:
        """``k`` images per filter pushed apart by ``weight`` x their mean pairwise Gram cosine
        similarity (default: the recipe's ``objective.diversity``, or
        :data:`DEFAULT_DIVERSITY_WEIGHT` when that is 0)."""
        w = weight if weight is not None else self.objective.diversity or DEFAULT_DIVERSITY_WEIGHT
        return self.replace(images=k, objective=dataclasses.replace(self.objective, diversity=w))

    def program(self) -> Recipe:
        """The recipe as the compiled program sees it: inputs at their defaults, except that
        whether a start photo is given changes some params' programs (kept via ``init``)."""
        inputs = {f.name: f.default for f in dataclasses.fields(self) if f.metadata.get("input")}
        if self.init is not None:
            inputs["init"] = "photo"
        return dataclasses.replace(self, **inputs)

    def to_json(self) -> dict[str, Any]:
        """Every field as JSON-ready data (params, transforms tagged with their ``kind``)."""
        return {f.name: _encode(getattr(self, f.name)) for f in dataclasses.fields(self)}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Recipe:
        """Inverse of :meth:`to_json`; VizjaxError on unknown fields or kinds."""
        hints = typing.get_type_hints(cls)
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise VizjaxError(f"unknown recipe fields {sorted(unknown)}; known: {sorted(known)}")
        return cls(**{k: _decode(hints[k], v, k) for k, v in data.items()})


#: Upper bounds that turn a typo (``--steps 2000000000``, ``--size 100000``) into one line instead
#: of an out-of-memory crash minutes later. Far above anything useful: VGG16 at 4096x4096 px
#: already needs ~4 GB per image for block1's activations alone.
MAX_STEPS = 1_000_000
MAX_SIDE = 4096
MAX_IMAGES = 256
#: Seeds travel as int32 (the compiled program's seed argument).
SEED_RANGE = (-(2**31), 2**31 - 1)


def _check(r: Recipe) -> None:
    """One-line VizjaxErrors for recipes that cannot run."""
    if not isinstance(r.steps, int) or not 0 < r.steps <= MAX_STEPS:
        raise VizjaxError(f"steps must be a positive integer up to {MAX_STEPS}, got {r.steps}")
    if not isinstance(r.images, int) or not 0 < r.images <= MAX_IMAGES:
        raise VizjaxError(f"images must be a positive integer up to {MAX_IMAGES}, got {r.images}")
    if not isinstance(r.seed, int) or not SEED_RANGE[0] <= r.seed <= SEED_RANGE[1]:
        raise VizjaxError(
            f"seed must be an integer in {SEED_RANGE[0]}..{SEED_RANGE[1]}, got {r.seed}"
        )
    if r.redirect_relu < 0:
        raise VizjaxError(f"redirect_relu must be >= 0, got {r.redirect_relu}")
    if r.display not in DISPLAYS:
        raise VizjaxError(f"display must be one of {', '.join(DISPLAYS)}, got {r.display!r}")
    if r.size is not None and (len(r.size) != 2 or min(r.size) <= 0 or max(r.size) > MAX_SIDE):
        raise VizjaxError(f"size must be two positive integers up to {MAX_SIDE}, got {r.size}")
    if r.objective.kind not in objectives.Spec.KINDS:
        raise VizjaxError(
            f"objective.kind must be one of {', '.join(objectives.Spec.KINDS)}, "
            f"got {r.objective.kind!r}"
        )
    if r.optimizer.name not in optim.Optimizer.NAMES:
        raise VizjaxError(
            f"optimizer.name must be one of {', '.join(optim.Optimizer.NAMES)}, "
            f"got {r.optimizer.name!r}"
        )
    if r.modifiers and not isinstance(r.param, param.Pixel):
        raise VizjaxError("modifiers change the image itself: they need param=pixel")
    if any(isinstance(t, transform.Crops) for t in r.modifiers):
        raise VizjaxError("crops cannot be a modifier")
    for t in r.transforms[:-1]:
        if isinstance(t, transform.Crops):
            raise VizjaxError("crops must be the last transform")
    numbers = {
        "optimizer.lr": r.optimizer.lr,
        "noise_std": r.noise_std,
        "noise_mean": r.noise_mean,
        **{f"objective.{f.name}": getattr(r.objective, f.name) for f in _float_fields(r.objective)},
    }
    for key, value in numbers.items():
        if not math.isfinite(value):
            raise VizjaxError(f"{key} must be a finite number, got {value}")
    if r.optimizer.lr <= 0:
        raise VizjaxError(f"optimizer.lr must be positive, got {r.optimizer.lr}")
    # Adam's betas and RMSprop's rho are decay rates: outside [0, 1) the moments grow without
    # bound (checked for every optimizer: a recipe is refused whole, not when its field is used).
    for key in ("b1", "b2", "decay"):
        value = getattr(r.optimizer, key)
        if not (isinstance(value, int | float) and 0 <= value < 1):
            raise VizjaxError(f"optimizer.{key} must be in [0, 1), got {value}")
    if not (isinstance(r.optimizer.eps, int | float) and 0 <= r.optimizer.eps < math.inf):
        raise VizjaxError(f"optimizer.eps must be a finite number >= 0, got {r.optimizer.eps}")
    layer = r.objective.diversity_layer
    if layer:
        from vizjax import models  # here: importing the model is slow, and only this check needs it

        # The recipe does not know its network: any model's convolution passes here, and the
        # engine refuses one its network lacks (Network.layer_index).
        convs = {m: m_.network.conv_layers for m, m_ in models.MODELS.items()}
        if not any(layer in names for names in convs.values()):
            raise VizjaxError(
                f"objective.diversity_layer {layer!r} is not a convolution layer of "
                + ", ".join(f"{m} ({c[0]} ... {c[-1]})" for m, c in convs.items())
            )


def _float_fields(obj: Any) -> list[dataclasses.Field]:
    return [f for f in dataclasses.fields(obj) if f.type in ("float", float)]


# --------------------------------------------------------------------------------------------------
# JSON


def _encode(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        out = {f.name: _encode(getattr(value, f.name)) for f in dataclasses.fields(value)}
        kind = getattr(type(value), "kind", None)
        return {"kind": kind, **out} if isinstance(kind, str) else out
    if isinstance(value, tuple | list):
        return [_encode(v) for v in value]
    return value


_UNION_KINDS: dict[str, dict[str, type]] = {"param": param.KINDS, "transform": transform.KINDS}


def _decode(hint: Any, value: Any, where: str) -> Any:
    """``value`` (from JSON) as the type ``hint`` says; ``where`` names it in errors."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if value is None:
        return None
    if origin in (types.UnionType, typing.Union):
        kinds = [a for a in args if a is not type(None)]
        if dataclasses.is_dataclass(kinds[0]) and len(kinds) > 1:
            registry = {k.kind: k for k in kinds}
            return _decode_dataclass(registry, value, where)
        return _decode(kinds[0], value, where)
    if origin is tuple:
        if not isinstance(value, list | tuple):
            raise VizjaxError(f"{where} must be a list, got {value!r}")
        item = args[0]
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_decode(item, v, f"{where}.{i}") for i, v in enumerate(value))
        if len(value) != len(args):
            raise VizjaxError(f"{where} must have {len(args)} items, got {value!r}")
        pairs = enumerate(zip(args, value, strict=True))
        return tuple(_decode(a, v, f"{where}.{i}") for i, (a, v) in pairs)
    if dataclasses.is_dataclass(hint):
        registry = {getattr(hint, "kind", hint.__name__): hint}
        return _decode_dataclass(registry, value, where)
    if hint is float:
        return float(value)
    if hint is int:
        return int(value)
    return value


def _decode_dataclass(registry: dict[str, type], value: Any, where: str) -> Any:
    if not isinstance(value, dict):
        raise VizjaxError(f"{where} must be an object, got {value!r}")
    value = dict(value)
    kind = value.pop("kind", None)
    cls = registry.get(kind) if kind is not None else next(iter(registry.values()))
    if cls is None:
        raise VizjaxError(f"unknown {where} kind {kind!r}; known: {', '.join(registry)}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(value) - names
    if unknown:
        raise VizjaxError(f"unknown {where} fields {sorted(unknown)}; known: {sorted(names)}")
    return cls(**{k: _decode(hints[k], v, f"{where}.{k}") for k, v in value.items()})


# --------------------------------------------------------------------------------------------------
# presets


#: Named transform sets for ``--set transforms=NAME`` (and modifiers).
TRANSFORM_SETS: dict[str, tuple[transform.Transform, ...]] = {
    "none": (),
    "standard": transform.STANDARD,
    "keras-vis": (
        transform.Jitter(4, mode="roll"),
        transform.Rotate(angles=(), degrees=1.0, pi=math.pi, order=1, fill="reflect"),
    ),
    "maco": (transform.Crops(),),
    "lucent": (transform.LucentView(),),
}

CLASSIC = Recipe()

PRESETS: dict[str, Recipe] = {
    "classic": CLASSIC,
    "lucid": Recipe(
        name="lucid",
        param=param.FFT(),
        transforms=transform.STANDARD,
        optimizer=optim.Optimizer("adam", lr=0.05),
        steps=512,
        redirect_relu=16,
        display="clip",
    ),
    "keras-vis": Recipe(
        name="keras-vis",
        param=param.Pixel(start="uniform", low=0.0, high=255.0),
        modifiers=TRANSFORM_SETS["keras-vis"],
        objective=objectives.Spec(tv=1.0, l1=0.3),
        optimizer=optim.Optimizer("rmsprop", lr=1.0, decay=0.999),
        steps=200,
        display="clip",
    ),
    "maco": Recipe(
        name="maco",
        param=param.Maco(),
        transforms=TRANSFORM_SETS["maco"],
        optimizer=optim.Optimizer("nadam", lr=1.0),
        steps=256,
        display="clip",
    ),
}

# Lucid's param, objective and optimizer with Lucent's transforms: the network sees each
# transformed canvas resized back to the image size (see transform.LucentView). 64 steps, not
# Lucent's 512: on the bench's frontier (block5_conv1, 8 filters) robustness stops improving
# after 32-64 steps while HF energy keeps growing (0.17 at 64, 0.42 at 512; the photo's 0.03).
PRESETS["lucent"] = PRESETS["lucid"].replace(
    name="lucent", transforms=TRANSFORM_SETS["lucent"], steps=64
)

#: The recipe of ``vizjax atlas`` and the API when none is named: the best picture per second
#: measured (bench/README.md, "Quality per second"; README, "Which default and why").
DEFAULT_RECIPE = "lucent"

DEFAULT_SIZE = (128, 128)


def preset(name: str) -> Recipe:
    """The preset called ``name``; VizjaxError listing the known ones otherwise."""
    try:
        return PRESETS[name]
    except KeyError:
        raise VizjaxError(f"unknown recipe {name!r}; known: {', '.join(PRESETS)}") from None


# --------------------------------------------------------------------------------------------------
# --set key=value


def parse_size(text: str) -> tuple[int, int]:
    """``"128"`` -> (128, 128); ``"96x160"`` -> (96, 160) (height x width)."""
    try:
        parts = [int(p) for p in text.lower().split("x")]
    except ValueError:
        raise VizjaxError(f"size must look like 128 or 96x160, got {text!r}") from None
    if len(parts) == 1:
        parts = parts * 2
    if len(parts) != 2 or min(parts) <= 0 or max(parts) > MAX_SIDE:
        raise VizjaxError(
            f"size must look like 128 or 96x160 (positive, at most {MAX_SIDE}), got {text!r}"
        )
    return parts[0], parts[1]


def _parse_scalar(hint: Any, text: str, key: str) -> Any:
    """``text`` as the type of field ``key``; VizjaxError naming what was expected."""
    origin = typing.get_origin(hint)
    if origin in (types.UnionType, typing.Union):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if text.lower() in ("none", "null", ""):
            return None
        hint = args[0]
        origin = typing.get_origin(hint)
    try:
        if hint is bool:
            low = text.lower()
            if low not in ("true", "false", "1", "0", "yes", "no"):
                raise ValueError
            return low in ("true", "1", "yes")
        if hint is int:
            return int(text)
        if hint is float:
            value = float(text)
            if not math.isfinite(value):
                raise ValueError
            return value
        if origin is tuple:
            if key == "size":
                return parse_size(text)
            args = typing.get_args(hint)
            item = args[0]
            parts = [p for p in text.replace(" ", "").split(",") if p]
            return tuple(_parse_scalar(item, p, key) for p in parts)
    except ValueError:
        raise VizjaxError(f"--set {key}: {text!r} is not a valid {_type_name(hint)}") from None
    return text


def _type_name(hint: Any) -> str:
    if typing.get_origin(hint) is tuple:
        return "comma-separated list"
    return "finite number" if hint is float else getattr(hint, "__name__", str(hint))


def _keys(obj: Any, prefix: str = "") -> list[str]:
    out = []
    for f in dataclasses.fields(obj):
        out.append(prefix + f.name)
    return out


def apply_override(recipe: Recipe, assignment: str) -> Recipe:
    """``recipe`` with one ``key=value`` applied (``--set``); one-line VizjaxError otherwise.

    Keys are dotted paths into the recipe: ``steps``, ``optimizer.lr``, ``param.decay``,
    ``objective.tv``, ``transforms.0.width``; ``param=KIND`` and ``transforms=SET`` (and
    ``modifiers=SET``) replace the whole part with that kind's defaults or a named set.
    """
    if "=" not in assignment:
        raise VizjaxError(f"--set expects key=value, got {assignment!r}")
    key, text = (s.strip() for s in assignment.split("=", 1))
    path = key.split(".")
    try:
        return _set(recipe, path, text, key)
    except TypeError as e:
        raise VizjaxError(f"--set {key}: {e}") from None


def _set(obj: Any, path: list[str], text: str, key: str) -> Any:
    head, rest = path[0], path[1:]
    if isinstance(obj, tuple):
        try:
            i = int(head)
            item = obj[i]
        except (ValueError, IndexError):
            raise VizjaxError(
                f"--set {key}: {head!r} is not an index of a list of {len(obj)}"
            ) from None
        if not rest:
            raise VizjaxError(f"--set {key}: give a field of item {i}, e.g. {key}.FIELD=VALUE")
        return obj[:i] + (_set(item, rest, text, key),) + obj[i + 1 :]
    fields = {f.name: f for f in dataclasses.fields(obj)}
    if head not in fields:
        where = ".".join(key.split(".")[: -len(path)]) or "recipe"
        valid = ", ".join(sorted(fields))
        raise VizjaxError(f"--set {key}: {where} has no field {head!r}; valid: {valid}")
    hints = typing.get_type_hints(type(obj))
    current = getattr(obj, head)
    if rest:
        new = _set(current, rest, text, key)
    elif head == "param":
        if text not in param.KINDS:
            raise VizjaxError(
                f"--set param: unknown kind {text!r}; known: {', '.join(param.KINDS)}"
            )
        new = param.KINDS[text]()
    elif head in ("transforms", "modifiers"):
        if text not in TRANSFORM_SETS:
            raise VizjaxError(
                f"--set {head}: unknown set {text!r}; known: {', '.join(TRANSFORM_SETS)}"
            )
        new = TRANSFORM_SETS[text]
    elif dataclasses.is_dataclass(current):
        raise VizjaxError(f"--set {key}: give a field, e.g. {key}.{_keys(current)[0]}=VALUE")
    else:
        new = _parse_scalar(hints[head], text, key)
    return dataclasses.replace(obj, **{head: new})


def to_text(recipe: Recipe) -> str:
    """The recipe as one JSON line (sorted keys), as written into atlases."""
    return json.dumps(recipe.to_json(), sort_keys=True)
