"""Compiling the next layer while a layer runs (issue 21, item 2): the order (the next layer's
compile starts before this layer's last chunk ends), no second compile when the layer runs, no
result changed, a failed background compile said in one line at the layer that needs it, and a
stop that does not wait for a compile in flight. On the tiny network, at 32 px."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

import jax
import numpy as np
import pytest
from jax import monitoring

from vizjax import run
from vizjax.atlas import open_atlas
from vizjax.engine import ahead as compiling
from vizjax.engine import ascent
from vizjax.engine.execution import Execution
from vizjax.engine.recipe import CLASSIC
from vizjax.errors import Interrupted, VizjaxError

ROOT = Path(__file__).resolve().parent.parent
LAYERS = ["block1_conv1", "block1_conv2"]

#: (thread name, time) of every XLA compile in this process.
COMPILES: list[tuple[str, float]] = []


def _on_event(event: str, duration: float, **kw) -> None:
    if event == "/jax/core/compile/backend_compile_duration":
        COMPILES.append((threading.current_thread().name, time.monotonic()))


monitoring.register_event_duration_secs_listener(_on_event)


@pytest.fixture
def no_disk_cache():
    """Every new program compiles (the persistent cache would serve one compiled before)."""
    before = jax.config.jax_enable_compilation_cache
    jax.config.update("jax_enable_compilation_cache", False)
    yield
    jax.config.update("jax_enable_compilation_cache", before)


def _main_thread_compiles(since: int) -> int:
    return sum(1 for name, _ in COMPILES[since:] if name != "vizjax-compile")


def test_the_next_layer_compiles_while_this_one_runs_and_not_again(tiny_weights, no_disk_cache):
    w = tiny_weights
    recipe = CLASSIC.replace(size=(32, 32), steps=3)  # programs no other test compiled
    ex = Execution(batch=2, compile_ahead="on")
    kw = {"execution": ex, "measure": True}
    with compiling.compile_ahead() as ahead:
        ahead.submit(LAYERS[1], range(6), recipe, w.params, w.preprocessing, **kw)
        ended = []
        for _ in ascent.iter_chunks(LAYERS[0], range(6), recipe, w.params, w.preprocessing, **kw):
            ended.append(time.monotonic())
        started = [t for layer, what, t in ahead.log if (layer, what) == (LAYERS[1], "start")]
        assert len(ended) >= 2 and started and started[0] < ended[-1]
        n = len(COMPILES)
        prepared = ahead.take(LAYERS[1], range(6), recipe, **kw)
        assert prepared is not None
        args = (LAYERS[1], range(6), recipe, w.params, w.preprocessing)
        second = list(ascent.iter_chunks(*args, prepared=prepared, **kw))
        assert _main_thread_compiles(n) == 0  # it ran what the background compiled
        assert [(layer, what) for layer, what, _ in ahead.log] == [
            (LAYERS[1], "start"),
            (LAYERS[1], "end"),
        ]
    # The check can fail: the same layer at another size, not compiled ahead, compiles here.
    n = len(COMPILES)
    other = recipe.replace(size=(40, 40))
    list(ascent.iter_chunks(LAYERS[1], range(6), other, w.params, w.preprocessing, **kw))
    assert _main_thread_compiles(n) > 0
    # The results are those of the programs compiled on first use (bitwise).
    plain = list(ascent.iter_chunks(LAYERS[1], range(6), recipe, w.params, w.preprocessing, **kw))
    for a, b in zip(second, plain, strict=True):
        for field in ("filters", "images", "raw", "objective", "final_activation", "hf_energy"):
            np.testing.assert_array_equal(getattr(a, field), getattr(b, field), err_msg=field)


def test_a_run_compiled_ahead_writes_the_same_atlas_bit_for_bit(tiny_weights, tmp_path):
    recipe = CLASSIC.replace(size=(32, 32), steps=2)
    rows = {}
    for switch in ("on", "off"):
        out = tmp_path / f"{switch}.h5"
        ex = Execution(batch=4, compile_ahead=switch)
        run.run_atlas(out, LAYERS, "0:6", recipe, tiny_weights, execution=ex, quiet=True)
        with open_atlas(out) as a:
            rows[switch] = {
                (layer, field): np.asarray(getattr(a.layers[layer], field)[...])
                for layer in LAYERS
                for field in ("filters", "images", "raw", "objective", "activation_matrix")
            }
    for key, value in rows["on"].items():
        np.testing.assert_array_equal(value, rows["off"][key], err_msg=str(key))


def test_compile_ahead_is_on_for_accelerators_only_by_default():
    assert compiling.compiles_ahead(Execution(), "gpu") and compiling.compiles_ahead(
        Execution(), "tpu"
    )
    assert not compiling.compiles_ahead(Execution(), "cpu")
    assert compiling.compiles_ahead(Execution(compile_ahead="on"), "cpu")
    assert not compiling.compiles_ahead(Execution(compile_ahead="off"), "gpu")
    with pytest.raises(VizjaxError, match="compile_ahead must be one of auto, on, off"):
        Execution(compile_ahead="yes")
    # Not part of the program (nor of an atlas' identity): both share one compiled program.
    assert Execution(compile_ahead="on").program() == Execution(compile_ahead="off").program()


def test_a_failed_background_compile_is_one_line_at_the_layer_that_needs_it(
    tiny_weights, tmp_path, monkeypatch
):
    def broken(job):
        raise RuntimeError("XLA said no\nin two lines")

    monkeypatch.setattr(ascent, "compiled", broken)
    recipe = CLASSIC.replace(size=(32, 32), steps=2)
    out = tmp_path / "a.h5"
    ex = Execution(batch=4, compile_ahead="on")
    with pytest.raises(VizjaxError) as e:
        run.run_atlas(out, LAYERS, "0:6", recipe, tiny_weights, execution=ex, quiet=True)
    msg = str(e.value)
    assert "\n" not in msg
    assert msg.startswith(f"compiling {LAYERS[1]} (ahead, in the background) failed: RuntimeError")
    assert "XLA said no in two lines" in msg
    with open_atlas(out) as a:  # the layer before it is done and kept
        assert sorted(a.layers[LAYERS[0]].completed().tolist()) == list(range(6))
        assert not a.layers[LAYERS[1]].completed().size


def test_a_stop_does_not_wait_for_a_compile_in_flight(tiny_weights, monkeypatch):
    release = threading.Event()

    def slow(*args, **kw):
        release.wait(60)  # a compile that takes a minute
        return None

    monkeypatch.setattr(ascent, "prepare", slow)
    t0 = time.monotonic()
    with pytest.raises(Interrupted):
        with compiling.compile_ahead() as ahead:
            recipe = CLASSIC.replace(size=(32, 32), steps=2)
            ahead.submit(LAYERS[1], range(6), recipe, tiny_weights.params, None)
            ahead.submit("block2_conv1", range(6), recipe, tiny_weights.params, None)
            time.sleep(0.1)  # the first is in flight

            def stopped() -> None:  # what the run's check does after a SIGTERM
                raise Interrupted(15)

            ahead.take(LAYERS[1], range(6), recipe, stopped)  # the layer waits: a stop ends it
    assert time.monotonic() - t0 < 5
    release.set()
    # And a process ends while a background compile is still running (a daemon thread).
    code = (
        "import threading, time\n"
        "from vizjax.engine import ahead, ascent\n"
        "from vizjax.engine.recipe import CLASSIC\n"
        "ascent.prepare = lambda *a, **k: time.sleep(60)\n"
        "a = ahead.CompileAhead()\n"
        "a.submit('block1_conv1', [0], CLASSIC, None, None)\n"
        "time.sleep(0.2)\n"
        "raise SystemExit(3)\n"
    )
    t0 = time.monotonic()
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, timeout=120)
    assert done.returncode == 3 and time.monotonic() - t0 < 40


def test_the_bench_predicts_a_run_that_pays_one_compile():
    from bench.whole_model import total_compiled_ahead

    # 13 layers of 19 s compile and 60 s run: the first compile, then the runs back to back.
    assert total_compiled_ahead([(19.0, 60.0)] * 13) == 19 + 13 * 60
    # Layers shorter than a compile wait for it: 19 + 5, then 5 (compiled meanwhile), then the
    # third compile starts when the second layer starts (24 s) and ends at 43 s.
    assert total_compiled_ahead([(19.0, 5.0)] * 3) == 48
    assert total_compiled_ahead([(10.0, 1.0), (20.0, 1.0), (1.0, 1.0)]) == 22
    assert total_compiled_ahead([]) == 0
