"""Which runs may share an atlas: the refusals of the writer, merge and the format 1 upgrade.

The settings that identify a run, and how a stored config of any version is read, are
:mod:`vizjax.config`'s (one reader for everybody); this file turns their differences into the
one-line refusals the atlas raises. (:mod:`vizjax.config` is imported where a run is compared,
not with the package: reading an atlas does not import jax.)
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from vizjax.atlas.files import _text
from vizjax.errors import AtlasError

if TYPE_CHECKING:
    from vizjax.config import Difference


def stored_config(attrs: Mapping[str, Any], where: object) -> dict[str, Any]:
    """The parsed ``config`` root attribute; AtlasError if it is not a JSON object."""
    try:
        value = json.loads(_text(attrs.get("config", "{}")))
    except (TypeError, ValueError):
        value = None
    if not isinstance(value, dict):
        raise AtlasError(f"{where} has an unreadable config attribute")
    return value


def run_differences(
    theirs: Mapping[str, Any], ours: Mapping[str, Any], sha_theirs: str, sha_ours: str
) -> list[Difference]:
    """What makes two runs (their configs and weights' sha256) different runs; [] if none."""
    from vizjax.config import Difference, differences

    diffs = differences(theirs, ours)
    if sha_theirs != sha_ours:
        short = [s[:12] + "..." if len(s) > 12 else s or "(unset)" for s in (sha_theirs, sha_ours)]
        diffs.insert(0, Difference("weights_sha256", *short))
    return diffs


def check_same_run(
    path: object,
    theirs: Mapping[str, Any],
    ours: Mapping[str, Any],
    sha_theirs: str,
    sha_ours: str,
) -> None:
    """AtlasError in one line, naming only the differing settings, if the run that wrote the atlas
    at ``path`` (``theirs``) is not this one (``ours``)."""
    from vizjax.config import describe

    diffs = run_differences(theirs, ours, sha_theirs, sha_ours)
    if diffs:
        raise AtlasError(
            f"refusing to mix runs in {path}: {describe(diffs, 'in the atlas', 'now')}; "
            "write to another --out"
        )


def check_model(path: object, attrs: Mapping[str, Any], identity: Mapping[str, str] | None) -> None:
    """AtlasError in one line unless the model given for the atlas at ``path`` is the one that made
    it: ``identity`` is a generic model's (:meth:`vizjax.models.generic.GenericModel.identity`:
    kind, name, architecture, weights) or None for a built-in network; the atlas records a generic
    model as the root attributes ``model_kind``, ``architecture`` and ``weights_sha256``, and its
    input channels in the config (``channels``; 3 where absent)."""
    made_by = str(_text(attrs.get("model", "")))
    if not attrs.get("model_kind"):
        if identity is not None:
            raise AtlasError(
                f"{path} was made with the built-in network {made_by or 'vgg16'}: leave out --model"
            )
        return
    if identity is None:
        raise AtlasError(
            f"{path} was made with {made_by} (a {_text(attrs['model_kind'])} model, not a "
            "built-in network): give the same model with --model"
        )
    theirs = stored_config(attrs, path).get("channels", 3)
    if str(theirs) != identity.get("channels", "3"):
        raise AtlasError(
            f"{identity['name']} takes {identity.get('channels', '3')} input channel(s); {path} "
            f"was made with a {theirs}-channel model"
        )
    for key, mine, what in (
        ("architecture", identity["architecture"], "architecture"),
        ("weights_sha256", identity["weights"], "weights"),
    ):
        theirs = str(_text(attrs.get(key, "")))
        if theirs and theirs != mine:
            raise AtlasError(
                f"{identity['name']} is not the model that made {path} (other {what}: "
                f"{mine[:12]}... here, {theirs[:12]}... in the atlas)"
            )
