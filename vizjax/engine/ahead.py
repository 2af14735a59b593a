"""Compiling ahead: the next layer's programs compile in a background thread while a layer runs.

A multi-layer run (:func:`vizjax.run.run_atlas`) would otherwise compile each layer's programs when
that layer starts: about 19 s per layer for the lucid recipe at 224 px on a GPU host, thirteen
times for VGG16, while the accelerator idles. Here the run submits the next layer when a layer
starts; one daemon thread runs :func:`vizjax.engine.ascent.prepare` and :func:`vizjax.engine.ascent.compiled`
(``jit(...).lower().compile()`` of the engine's one jit boundary) for it; when that layer's turn
comes, :meth:`CompileAhead.take` hands the compiled programs to :func:`vizjax.engine.ascent.iter_chunks`,
which then compiles nothing. The results are those of the programs compiled on first use (the
same programs; tested bit for bit).

On by default on accelerators only (:func:`compiles_ahead`): there the host's cores are idle while
the device computes; on a CPU, XLA:CPU runs on the cores the compile would take.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import queue
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from vizjax.engine import ascent
from vizjax.engine.execution import Execution
from vizjax.engine.recipe import Recipe
from vizjax.errors import VizjaxError
from vizjax.models.network import Preprocessing

#: Seconds between two checks for a stop while a layer waits for its compile.
POLL_S = 0.2


def compiles_ahead(execution: Execution, platform: str) -> bool:
    """Whether a multi-layer run compiles the next layer while one runs
    (``execution.compile_ahead``; "auto": on accelerators, not on CPU)."""
    if execution.compile_ahead == "auto":
        return platform != "cpu"
    return execution.compile_ahead == "on"


def _key(layer: str, filters: Sequence[int], recipe: Recipe, kw: dict[str, Any]) -> tuple:
    """What makes :func:`vizjax.engine.ascent.prepare` of a layer what it is (not the values)."""
    start = kw.get("start")
    return (
        layer,
        len(list(filters)),
        recipe.program(),
        kw.get("execution", ascent.DEFAULT_EXECUTION),
        None if start is None else tuple(start.shape),
        kw.get("mesh"),
        bool(kw.get("measure", False)),
    )


class CompileAhead:
    """One background thread compiling the layers submitted to it, in order.

    :meth:`submit` takes the arguments :func:`vizjax.engine.ascent.iter_chunks` will get; :meth:`take`
    with the same arguments returns the compiled :class:`vizjax.engine.ascent.Prepared` (waiting for a
    compile in flight) for ``iter_chunks(..., prepared=...)``. A failed compile raises at
    :meth:`take`, in one line. The thread is a daemon and :meth:`close` does not wait for it: a
    stopped run never waits for a compile. ``log`` lists ``(layer, "start" | "end",
    time.monotonic())`` of every compile (tests read it).
    """

    def __init__(self) -> None:
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._jobs: dict[tuple, concurrent.futures.Future[ascent.Prepared | None]] = {}
        self._layers: set[str] = set()
        self.log: list[tuple[str, str, float]] = []
        self._thread = threading.Thread(target=self._work, name="vizjax-compile", daemon=True)
        self._thread.start()

    def submit(
        self,
        layer: str,
        filters: Sequence[int],
        recipe: Recipe,
        params: Any,
        preprocessing: Preprocessing,
        **kw: Any,
    ) -> None:
        """Compile what ``iter_chunks(layer, filters, recipe, params, preprocessing, **kw)``
        runs, in the background, after the layers submitted before."""
        future: concurrent.futures.Future[ascent.Prepared | None] = concurrent.futures.Future()
        self._jobs[_key(layer, filters, recipe, kw)] = future
        self._layers.add(layer)
        self._queue.put((future, (layer, filters, recipe, params, preprocessing), kw))

    def submitted(self, layer: str) -> bool:
        """Whether ``layer`` was submitted (taken since or not)."""
        return layer in self._layers

    def take(
        self,
        layer: str,
        filters: Sequence[int],
        recipe: Recipe,
        check: Callable[[], None] = lambda: None,
        **kw: Any,
    ) -> ascent.Prepared | None:
        """The compiled layer submitted with these arguments (waiting for it, calling ``check``
        every :data:`POLL_S` meanwhile: a stop raises there); None if none was (or it has no
        filters). VizjaxError in one line if its compile failed."""
        future = self._jobs.pop(_key(layer, filters, recipe, kw), None)
        if future is None:
            return None
        while True:
            try:
                return future.result(timeout=POLL_S)
            except concurrent.futures.TimeoutError:
                check()  # raises to stop: not the compile's error
            except VizjaxError:
                raise
            except Exception as e:
                msg = " ".join(f"{type(e).__name__}: {e}".split())[:300]
                raise VizjaxError(
                    f"compiling {layer} (ahead, in the background) failed: {msg}"
                ) from e

    def close(self) -> None:
        """Cancel the compiles not started; the thread ends after the one in flight (never
        waited for)."""
        for future in self._jobs.values():
            future.cancel()
        self._jobs.clear()
        self._queue.put(None)

    def _work(self) -> None:
        while (item := self._queue.get()) is not None:
            future, args, kw = item
            if not future.set_running_or_notify_cancel():
                continue
            self.log.append((args[0], "start", time.monotonic()))
            try:
                job = ascent.prepare(*args, **kw)
                future.set_result(None if job is None else ascent.compiled(job))
            except BaseException as e:  # handed to the layer that needs it
                future.set_exception(e)
            self.log.append((args[0], "end", time.monotonic()))


@contextlib.contextmanager
def compile_ahead(on: bool = True) -> Iterator[CompileAhead | None]:
    """A :class:`CompileAhead` for a run (closed when it ends), or None if not ``on``."""
    if not on:
        yield None
        return
    ahead = CompileAhead()
    try:
        yield ahead
    finally:
        ahead.close()
