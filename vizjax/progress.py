"""Progress of a long run: a tqdm bar at a terminal, a line every so often in a log, or nothing."""

from __future__ import annotations

import math
import os
import sys
import time
from collections.abc import Sequence
from typing import Any

from vizjax.errors import VizjaxError

#: Default seconds between progress lines when stderr is not a terminal (a log file, a
#: scheduler); ``VIZJAX_PROGRESS_SECONDS`` overrides it (:func:`progress_seconds`).
PROGRESS_SECONDS = 30.0


def progress_seconds() -> float:
    """Seconds between progress lines: ``VIZJAX_PROGRESS_SECONDS`` if set, else
    :data:`PROGRESS_SECONDS`. A value that is not a finite number >= 0 is a :class:`VizjaxError`."""
    text = os.environ.get("VIZJAX_PROGRESS_SECONDS")
    if text is None or not text.strip():
        return PROGRESS_SECONDS
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value < 0:
        raise VizjaxError(f"VIZJAX_PROGRESS_SECONDS must be a number of seconds >= 0, got {text!r}")
    return value


def _duration(seconds: float) -> str:
    s = int(round(seconds))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


class LineProgress:
    """Progress for logs: a line ``layer: done/total filters, rate, ETA`` every ``interval``
    seconds and one when the layer ends, instead of a bar redrawn with carriage returns. The
    rate counts the filters computed by this run (not those resumed)."""

    def __init__(
        self, total: int, desc: str, initial: int = 0, interval: float | None = None
    ) -> None:
        self.total, self.desc = total, desc
        self.interval = progress_seconds() if interval is None else interval
        self.done = self.initial = initial
        self.t0 = self.last = time.monotonic()

    def set_description(self, desc: str) -> None:
        self.desc = desc

    def update(self, n: int) -> None:
        self.done += n
        now = time.monotonic()
        if now - self.last >= self.interval and self.done < self.total:
            self.last = now
            self._line(now)

    def _line(self, now: float, end: str = "") -> None:
        computed, elapsed = self.done - self.initial, max(now - self.t0, 1e-9)
        rate = computed / elapsed
        text = f"{self.desc}: {self.done}/{self.total} filters"
        if computed:
            text += f", {rate:.3g} filters/s"
            text += f", ETA {_duration((self.total - self.done) / rate)}" if not end else ""
        print(text + end, file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.done > self.initial:
            self._line(time.monotonic(), f" (done in {_duration(time.monotonic() - self.t0)})")


def _bar_label(layers: Sequence[str], i: int) -> str:
    """The progress bar's label while layer ``i`` runs: its name, and its rank in a longer run."""
    return layers[i] if len(layers) == 1 else f"{layers[i]} (layer {i + 1}/{len(layers)})"


def _progress(total: int, desc: str, quiet: bool, initial: int = 0) -> Any:
    """A tqdm bar on a terminal, :class:`LineProgress` lines otherwise, nothing if ``quiet``."""
    from tqdm import tqdm

    if not quiet and not sys.stderr.isatty():
        return LineProgress(total, desc, initial)
    return tqdm(
        total=total,
        initial=initial,
        desc=desc,
        unit="filter",
        disable=quiet,
        file=sys.stderr,
        dynamic_ncols=True,
        smoothing=0.1,
    )
