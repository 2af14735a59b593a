"""A run's config: recipe + execution + weights, written into every atlas, read back by one function.

:class:`RunConfig` is what an atlas' ``config`` attribute holds (:meth:`RunConfig.to_json`). Every
reader of that attribute goes through :func:`as_current` (the stored JSON, of any version, in
today's layout) -- :func:`read_config` (typed), :func:`identity` and :func:`differences` (may two
runs share an atlas?) are built on it. Layouts read:

* today's: ``{"recipe": {...}, "execution": {...}, "model", "weights", "layers", "filters",
  "tuning"}``;
* format 2 of earlier versions: the recipe without ``init``, the execution fields, ``init``,
  model, weights, layers and filters flat beside it;
* format 1: everything flat, ``"recipe": "classic"`` (a preset name) and ``step_size``.

Which settings identify a run follows from the dataclasses' field metadata
(``metadata={"identity": False}`` marks a field that may differ between runs writing one atlas:
what is computed and how fast, not what a filter's picture is), as :meth:`Recipe.program` follows
``"input"`` for the compile cache. The start photo counts by its sha256 (``recipe.init_sha256``),
not its path.
"""

from __future__ import annotations

import dataclasses
import json
import typing
from collections.abc import Mapping
from typing import Any

from vizjax.engine.execution import Execution
from vizjax.engine.recipe import PRESETS, Recipe
from vizjax.errors import VizjaxError
from vizjax.models.weights import DEFAULT_WEIGHTS


def _volatile(default: Any) -> Any:
    """A field that does not identify a run (runs that differ in it may share an atlas)."""
    return dataclasses.field(default=default, metadata={"identity": False})


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """Every setting of a run.

    Attributes:
      recipe: what makes a filter's picture (:class:`vizjax.engine.recipe.Recipe`).
      execution: how the run executes (:class:`vizjax.engine.execution.Execution`).
      weights: the weight set's name (its sha256 is the atlas' ``weights_sha256`` attribute).
      model: the network.
      architecture: a generic model's architecture hash
        (:meth:`vizjax.models.generic.GenericModel.architecture_hash`; "" for the built-in
        networks, whose name says it).
      preprocessing: a generic model's input preprocessing as JSON ("" for the built-in
        networks, whose weights fix it).
      channels: the model's input channels, the images' D (3: RGB, as for every atlas written
        before it was recorded).
      layers, filters: what this run asked for (not its identity: another run may add more).
      tuning: per layer, the execution decided for it and where each setting came from
        (:meth:`vizjax.engine.tuning.Decision.to_json`): how fast, not what picture. A resumed
        run adds its layers' decisions to the atlas' (:meth:`vizjax.atlas.AtlasWriter
        .record_config`).
    """

    recipe: Recipe = Recipe()
    execution: Execution = Execution()
    weights: str = DEFAULT_WEIGHTS
    model: str = "vgg16"
    architecture: str = ""
    preprocessing: str = ""
    channels: int = 3
    layers: tuple[str, ...] = _volatile(())
    filters: str | tuple[int, ...] = _volatile("all")
    tuning: Mapping[str, Any] = dataclasses.field(
        default_factory=dict, metadata={"identity": False}, hash=False
    )

    def to_json(self) -> dict[str, Any]:
        """The config as stored in an atlas (JSON-ready)."""
        return {
            "recipe": self.recipe.to_json(),
            "execution": self.execution.to_json(),
            "weights": self.weights,
            "model": self.model,
            "architecture": self.architecture,
            "preprocessing": self.preprocessing,
            "channels": self.channels,
            "layers": list(self.layers),
            "filters": self.filters if isinstance(self.filters, str) else list(self.filters),
            "tuning": {k: dict(v) for k, v in self.tuning.items()},
        }


_GROUPS = ("recipe", "execution")
#: Keys of the command line that format 1 wrote into the config; they never identified a run.
_V1_CLI_KEYS = frozenset({"quiet", "out", "progress"})


def _field_names(cls: type) -> set[str]:
    return {f.name for f in dataclasses.fields(cls)}


def as_current(data: Mapping[str, Any]) -> dict[str, Any]:
    """A stored config (any layout, see the module docstring) in today's layout.

    Fields missing from ``recipe`` or ``execution`` (added to vizjax after the atlas was written)
    get their defaults; a format 1 preset name becomes that preset's fields. Keys this version does
    not know are kept (at the top level), so they still count in :func:`identity`.
    """
    data = json.loads(json.dumps(dict(data)))  # a deep copy with JSON types (tuples -> lists)
    if isinstance(data.get("execution"), dict) and isinstance(data.get("recipe"), dict):
        rec, exe, rest = data.pop("recipe"), data.pop("execution"), data
    elif isinstance(data.get("recipe"), dict):  # format 2 of earlier versions
        rec = data.pop("recipe")
        rec["init"] = data.pop("init", rec.get("init"))
        exe = {k: data.pop(k) for k in _field_names(Execution) if k in data}
        rest = data
    else:  # format 1: flat
        name = data.pop("recipe", None)
        rec = PRESETS[name].to_json() if name in PRESETS else {"name": name or "classic"}
        if "step_size" in data:
            rec["optimizer"] = {**rec.get("optimizer", {}), "lr": data.pop("step_size")}
        rec.update({k: data.pop(k) for k in _field_names(Recipe) if k in data})
        exe = {k: data.pop(k) for k in _field_names(Execution) if k in data}
        rest = {k: v for k, v in data.items() if k not in _V1_CLI_KEYS}
    return {
        "recipe": {**Recipe().to_json(), **rec},
        "execution": {**Execution().to_json(), **exe},
        **{k: v for k, v in RunConfig().to_json().items() if k not in _GROUPS},
        **rest,
    }


def read_config(data: Mapping[str, Any]) -> RunConfig:
    """The :class:`RunConfig` an atlas' config attribute (any layout) describes; VizjaxError if it
    is not one this version can read."""
    cur = as_current(data)
    try:
        filters = cur["filters"]
        return RunConfig(
            recipe=Recipe.from_json(cur["recipe"]),
            execution=Execution(**cur["execution"]),
            weights=str(cur["weights"]),
            model=str(cur["model"]),
            architecture=str(cur.get("architecture", "")),
            preprocessing=str(cur.get("preprocessing", "")),
            channels=int(cur.get("channels", 3)),
            layers=tuple(cur["layers"] or ()),
            filters=filters if isinstance(filters, str) else tuple(filters or ()),
            tuning=dict(cur.get("tuning") or {}),
        )
    except (TypeError, ValueError, KeyError, VizjaxError) as e:
        raise VizjaxError(f"the atlas' config is not a run config vizjax can read ({e})") from None


def _identifies(path: tuple[str, ...]) -> bool:
    """Whether the setting at ``path`` (``("recipe", "init")``) identifies a run: no field on the
    way is marked ``identity: False``. Keys no dataclass declares identify (to be safe)."""
    cls: Any = RunConfig
    for name in path:
        if not (isinstance(cls, type) and dataclasses.is_dataclass(cls)):
            return True
        field = {f.name: f for f in dataclasses.fields(cls)}.get(name)
        if field is None:
            return True
        if field.metadata.get("identity") is False:
            return False
        cls = typing.get_type_hints(cls).get(name)
    return True


def _flat(value: Any, path: tuple[str, ...]) -> dict[tuple[str, ...], Any]:
    if isinstance(value, dict) and value:
        out: dict[tuple[str, ...], Any] = {}
        for k, v in value.items():
            out.update(_flat(v, (*path, str(k))))
        return out
    return {path: value}


def identity(data: Mapping[str, Any]) -> dict[str, Any]:
    """The settings of a stored config that identify its run, by name (``"size"``,
    ``"optimizer.lr"``, ``"dtype"``, ``"weights"``: the recipe's and the execution's fields
    without their group, as ``--set`` names them)."""
    out = {}
    for path, value in _flat(as_current(data), ()).items():
        if _identifies(path):
            out[".".join(path[1:] if path[0] in _GROUPS else path)] = value
    return out


_ABSENT = object()


@dataclasses.dataclass(frozen=True)
class Difference:
    """One identifying setting on which two configs differ (``_ABSENT`` where one has none)."""

    name: str
    theirs: Any
    ours: Any


def differences(theirs: Mapping[str, Any], ours: Mapping[str, Any]) -> list[Difference]:
    """The identifying settings (:func:`identity`) whose values differ, sorted by name."""
    a, b = identity(theirs), identity(ours)
    return [
        Difference(k, a.get(k, _ABSENT), b.get(k, _ABSENT))
        for k in sorted(set(a) | set(b))
        if a.get(k, _ABSENT) != b.get(k, _ABSENT)
    ]


#: Longest value shown in a refusal; the differing fields at most (then "and N more").
_SHOW_CHARS = 40
_SHOW_FIELDS = 4


def show(value: Any) -> str:
    """A setting as a refusal shows it: ``48x48`` for a size, strings bare, JSON otherwise."""
    if value is _ABSENT:
        return "(unset)"
    if (
        isinstance(value, list)
        and len(value) == 2
        and all(isinstance(v, int) and not isinstance(v, bool) for v in value)
    ):
        text = f"{value[0]}x{value[1]}"
    else:
        text = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
    return text if len(text) <= _SHOW_CHARS else text[: _SHOW_CHARS - 3] + "..."


def describe(diffs: list[Difference], theirs: str, ours: str) -> str:
    """``size 48x48 in the atlas, 32x32 now; steps 20 in the atlas, 3 now`` (``theirs`` = "in the
    atlas", ``ours`` = "now"); at most a few fields, then how many more."""
    parts = [f"{d.name} {show(d.theirs)} {theirs}, {show(d.ours)} {ours}" for d in diffs]
    if len(parts) > _SHOW_FIELDS:
        parts = [*parts[:_SHOW_FIELDS], f"and {len(parts) - _SHOW_FIELDS} more"]
    return "; ".join(parts)
