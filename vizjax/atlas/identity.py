"""Which settings identify a run: two runs may write the same atlas when these agree."""

from __future__ import annotations

import json
from typing import Any

#: Settings that may differ between runs writing the same atlas (they choose *what* to compute and
#: how it is reported, not what a filter's image looks like). The start image is compared by its
#: sha256 (``init_sha256``), so the same photo at another path is the same run.
VOLATILE_KEYS: frozenset[str] = frozenset(
    {"batch", "layers", "filters", "quiet", "out", "progress", "init"}
)

_ABSENT = object()  # a config key one side does not have


def _show(value: Any) -> str:
    """A config value as it appears in error messages."""
    if value is _ABSENT:
        return "(unset)"
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True)


def _config_diff(
    theirs: dict[str, Any], ours: dict[str, Any], volatile: frozenset[str]
) -> list[tuple[str, Any, Any]]:
    """``(key, their value, our value)`` for every non-volatile key whose values differ."""
    keys = sorted((set(theirs) | set(ours)) - volatile)
    return [
        (k, theirs.get(k, _ABSENT), ours.get(k, _ABSENT))
        for k in keys
        if theirs.get(k, _ABSENT) != ours.get(k, _ABSENT)
    ]


def _describe_diff(diff: list[tuple[str, Any, Any]], theirs: str, ours: str) -> str:
    return ", ".join(f"{k} {_show(a)} ({theirs}) vs {_show(b)} ({ours})" for k, a, b in diff)
