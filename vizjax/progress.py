"""Progress of a long run: a tqdm bar at a terminal, a line every so often in a log, or nothing.

:func:`_progress` picks one; both take ``update(n, work=None)`` (filters done, and their work in
the units of :mod:`vizjax.engine.cost`) and ``set_description``. Given a :class:`WorkMeter`, the ETA is
the work left over the work rate measured so far in this run (so a deeper layer, which costs more
per filter, is not extrapolated from a cheap one), each layer at its own rate once it has one,
plus a compile for each layer not started, scaled by its program's size; before the first chunk
is done there is no ETA ("estimating...").
"""

from __future__ import annotations

import math
import os
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

from vizjax.engine import cost
from vizjax.engine.cost import duration_text as _duration
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


class WorkMeter:
    """The work done by this run and the time it took, chunk by chunk, split in two: each layer's
    first chunk (it includes compiling that layer's program and finishing the layer before) and the
    steady chunks after it. The rate comes from the steady chunks (all chunks while there are none
    yet); the compile time per layer is what a first chunk took beyond its work at that rate.

    ``work_total``: the work of every filter this run computes; ``layers``: how many layers it
    computes filters of (each compiles once); ``warn``: makes the line to print first (once, see
    :meth:`warning`) when the ETA exceeds :data:`vizjax.engine.cost.LONG_RUN_SECONDS`. Call
    :meth:`new_layer` before a layer's first chunk and :meth:`add` after each chunk.

    ``plan`` (one ``(work, compile weight)`` per layer, in run order; see
    :func:`vizjax.engine.cost.compile_weight`) makes the ETA per layer: a layer that has timed a steady
    chunk runs at its own rate, the layers ahead at the rate of the last layer timed (the cost
    model carries it from one layer to the next), and each layer ahead compiles for its weight
    times the seconds per weight that the compiles so far took. Without it, one rate for all
    and the mean compile per layer.
    """

    def __init__(
        self,
        work_total: float,
        layers: int,
        clock: Callable[[], float] = time.monotonic,
        warn: Callable[[float], str] | None = None,
        plan: Sequence[tuple[float, float]] | None = None,
    ) -> None:
        self.work_total, self.layers, self.clock = float(work_total), layers, clock
        self.warn, self.warned = warn, False
        self.plan = [(float(w), float(c)) for w, c in plan] if plan is not None else None
        self.work_done = self.steady_work = self.steady_s = 0.0
        self.firsts: list[tuple[float, float]] = []  # (work, seconds) of each layer's first chunk
        # Per layer begun: [work done, steady work, steady seconds, share].
        self._layers: list[list[float]] = []
        #: The share of its modeled work that the layer now running really does (set by the run:
        #: :func:`vizjax.engine.cost.fast_path_share` on the one-channel fast path, else 1).
        self.share = 1.0
        self._first = True
        self.last = clock()

    def new_layer(self) -> None:
        self._first = True
        self.share = 1.0
        self._layers.append([0.0, 0.0, 0.0, 1.0])

    def add(self, work: float) -> None:
        now = self.clock()
        seconds, self.last = now - self.last, now
        self.work_done += work
        if not self._layers:
            self._layers.append([0.0, 0.0, 0.0, 1.0])
        here = self._layers[-1]
        here[0] += work
        here[3] = self.share
        if self._first:
            self.firsts.append((work, seconds))
            self._first = False
        else:
            self.steady_work += work
            self.steady_s += seconds
            here[1] += work
            here[2] += seconds

    @property
    def steady(self) -> bool:
        """A rate measured on chunks that compiled nothing."""
        return self.steady_s > 0

    def rate(self) -> float | None:
        """Work per second of computing, or None before the first chunk."""
        if self.steady:
            return self.steady_work / self.steady_s
        seconds = sum(s for _, s in self.firsts)
        return sum(w for w, _ in self.firsts) / seconds if seconds > 0 else None

    def compile_s(self) -> float:
        """Seconds per layer beyond its work: compiling (0 until a steady rate is known)."""
        rate = self.rate()
        if not self.steady or not rate or not self.firsts:
            return 0.0
        return sum(max(0.0, s - w / rate) for w, s in self.firsts) / len(self.firsts)

    def eta(self) -> float | None:
        """Seconds left (:func:`vizjax.engine.cost.eta_seconds`), or None ("estimating...") until a
        chunk that compiled nothing was timed (or, without one, two layers' first chunks)."""
        if not self.steady and len(self.firsts) < 2:
            return None
        if self.plan is not None and len(self._layers) <= len(self.plan):
            return self._planned_eta()
        return cost.eta_seconds(
            max(0.0, self.work_total - self.work_done),
            self.rate(),
            max(0, self.layers - len(self.firsts)),
            self.compile_s(),
        )

    def _planned_eta(self) -> float | None:
        assert self.plan is not None
        own = [w / s if s > 0 else None for _, w, s, _ in self._layers]
        # The layers ahead run at the last rate timed on a layer of its own (nearest in depth), in
        # the work that layer really did (its share of the modeled work: the fast path).
        shares = [sh for _, _, _, sh in self._layers]
        real = [r * sh for r, sh in zip(own, shares, strict=True) if r]
        ahead = real[-1] if real else self.rate()
        if not ahead:
            return None
        rates = [r or ahead / sh for r, sh in zip(own, shares, strict=True)]
        # Compile seconds per unit of weight: the first chunks' time beyond their work, over the
        # layers timed at their own rate where there are any.
        timed = [i for i, r in enumerate(own) if r] or list(range(len(self.firsts)))
        extra = sum(max(0.0, self.firsts[i][1] - self.firsts[i][0] / rates[i]) for i in timed)
        weight = sum(self.plan[i][1] for i in timed)
        per_weight = extra / weight if weight > 0 else 0.0
        # A layer past its first chunk but not timed on a steady one yet: that chunk's time less
        # the compile predicted for it is its own rate's first estimate (a deep layer after a
        # cheap one runs slower than the cheap one's rate says), unless that leaves too little.
        for i, r in enumerate(own):
            if r is None and i < len(self.firsts) and i not in timed:
                work, seconds = self.firsts[i]
                computing = seconds - per_weight * self.plan[i][1]
                if work > 0 and computing > 0.25 * seconds:
                    rates[i] = min(rates[i], work / computing)
        left = sum(
            max(0.0, self.plan[i][0] - done) / rates[i]
            for i, (done, _, _, _) in enumerate(self._layers)
        )
        for work, compile_weight in self.plan[len(self._layers) :]:
            left += work / ahead + per_weight * compile_weight
        return left

    def warning(self) -> str | None:
        """The long-run line, once: when the ETA first exceeds the limit, else None."""
        if self.warn is None or self.warned:
            return None
        eta = self.eta()
        if eta is None:
            return None
        self.warned = True
        return self.warn(eta) if eta > cost.LONG_RUN_SECONDS else None


def _eta_text(meter: WorkMeter | None, rate: float, left: int) -> str:
    """``ETA 3h02m`` from the meter (or from the filter rate without one), ``estimating...``
    while nothing is measured yet."""
    if meter is not None:
        eta = meter.eta()
    else:
        eta = left / rate if rate > 0 else None
    return "estimating..." if eta is None else f"ETA {_duration(eta)}"


class LineProgress:
    """Progress for logs: a line ``layer: done/total filters, rate, ETA`` every ``interval``
    seconds and one when the layer ends, instead of a bar redrawn with carriage returns. The
    rate counts the filters computed by this run (not those resumed)."""

    def __init__(
        self,
        total: int,
        desc: str,
        initial: int = 0,
        interval: float | None = None,
        meter: WorkMeter | None = None,
    ) -> None:
        self.total, self.desc, self.meter = total, desc, meter
        self.interval = progress_seconds() if interval is None else interval
        self.done = self.initial = initial
        self.t0 = self.last = time.monotonic()

    def set_description(self, desc: str) -> None:
        self.desc = desc

    def update(self, n: int, work: float | None = None) -> None:
        self.done += n
        if self.meter is not None:
            self.meter.add(n if work is None else work)
            warning = self.meter.warning()
            if warning:
                self.write(warning)
            if self.meter.eta() is None:
                return  # no line without an ETA: the first one comes with it (or the warning)
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
            text += f", {_eta_text(self.meter, rate, self.total - self.done)}" if not end else ""
        print(text + end, file=sys.stderr, flush=True)

    def write(self, text: str, file: Any = None) -> None:
        """One line of text among the progress lines (as ``tqdm.write``)."""
        print(text, file=file or sys.stderr, flush=True)

    def close(self) -> None:
        if self.done > self.initial:
            self._line(time.monotonic(), f" (done in {_duration(time.monotonic() - self.t0)})")


class _Silent:
    """``--quiet``: no output; the meter still counts (a caller may ask it for an ETA)."""

    def __init__(self, meter: WorkMeter | None) -> None:
        self.meter = meter

    def update(self, n: int, work: float | None = None) -> None:
        if self.meter is not None:
            self.meter.add(n if work is None else work)

    def set_description(self, desc: str) -> None:
        pass

    def write(self, text: str, file: Any = None) -> None:
        pass

    def close(self) -> None:
        pass


def _bar_label(layers: Sequence[str], i: int) -> str:
    """The progress bar's label while layer ``i`` runs: its name, and its rank in a longer run."""
    return layers[i] if len(layers) == 1 else f"{layers[i]} (layer {i + 1}/{len(layers)})"


def _progress(
    total: int, desc: str, quiet: bool, initial: int = 0, meter: WorkMeter | None = None
) -> Any:
    """A tqdm bar on a terminal, :class:`LineProgress` lines otherwise, nothing if ``quiet``.

    With a ``meter`` the bar fills by work (its percentage is of the work this run computes) and
    its text still counts filters: ``done/total filters [elapsed, filters/s, ETA]``."""
    from tqdm import tqdm

    if quiet:
        return _Silent(meter)
    if not sys.stderr.isatty():
        return LineProgress(total, desc, initial, meter=meter)
    if meter is not None:
        return _work_bar(total, desc, initial, meter)
    return tqdm(
        total=total,
        initial=initial,
        desc=desc,
        unit="filter",
        file=sys.stderr,
        dynamic_ncols=True,
        smoothing=0.1,
    )


def _work_bar(total: int, desc: str, initial: int, meter: WorkMeter) -> Any:
    """A tqdm bar whose ``n``/``total`` are work units while its text counts filters."""
    from tqdm import tqdm

    class WorkBar(tqdm):
        def __init__(self, **kwargs: Any) -> None:
            self.filters_done = initial  # read by format_dict while tqdm's __init__ draws
            super().__init__(**kwargs)

        def update(self, n: int = 1, work: float | None = None) -> None:  # type: ignore[override]
            self.filters_done += n
            meter.add(n if work is None else work)
            warning = meter.warning()
            if warning:
                self.write(warning, file=sys.stderr)
            super().update(n if work is None else work)

        @property
        def format_dict(self) -> dict[str, Any]:
            d = super().format_dict
            done = self.filters_done - initial
            rate = done / d["elapsed"] if d["elapsed"] > 0 else 0.0
            d["filters"] = f"{self.filters_done}/{total} filters"
            d["speed"] = f"{rate:.3g} filters/s, " if done else ""
            d["eta_text"] = _eta_text(meter, rate, total - self.filters_done)
            return d

    bar = WorkBar(
        total=max(meter.work_total, 1e-9),
        desc=desc,
        file=sys.stderr,
        dynamic_ncols=True,
        delay=0,
        bar_format="{desc}: {percentage:3.0f}%|{bar}| {filters} [{elapsed}, {speed}{eta_text}]",
    )
    return bar
