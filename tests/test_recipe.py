"""Recipes end to end on small images: every preset climbs, results do not depend on chunks,
devices or segments, the redirected ReLU wakes dead filters, and recipes round-trip through JSON,
``--set`` and the atlas."""

import json

import jax
import numpy as np
import pytest

from vizjax.engine import ascent, recipe
from vizjax.engine.execution import Execution
from vizjax.engine.recipe import PRESETS, Recipe, apply_override
from vizjax.errors import VizjaxError
from vizjax.models import vgg

LAYER = "block2_conv1"


def small(name: str, steps: int, size: int = 32) -> Recipe:
    return PRESETS[name].replace(size=(size, size), steps=steps)


def _close(got, want, tol):
    np.testing.assert_allclose(got, want, rtol=tol, atol=tol * max(float(np.abs(want).max()), 1e-9))


#: A rolled loop compiles one step whatever the step count, and XLA's convolution compiles ~4x
#: faster than the Winograd one: tests compile less (speed is measured in bench/, not here; the
#: Winograd engine gives the same images: tests/test_conv.py).
ROLLED = Execution(unroll=1, conv="xla")


#: Presets whose variant of a test runs only with ``-m slow`` (scripts/test.sh --all, CI): classic
#: and keras-vis share the pixel parameterization and RMS-scaled steps, and the classic engine's
#: climb and chunk independence are tested by tests/test_ascent.py in the default run.
SLOW_PRESETS = ("classic", "keras-vis")


#: And where the chunk independence of one Adam preset stands for the others by default: lucent
#: (the default recipe) runs there; lucid and maco share its render loop and optimizer, so their
#: variants of that test run with ``-m slow``.
SLOW_DETERMINISM = (*SLOW_PRESETS, "lucid", "maco")


#: lucid climbs with lucent's param, loop and optimizer (only the transforms differ), so its climb
#: runs with ``-m slow`` too.
SLOW_CLIMB = (*SLOW_PRESETS, "lucid")


def _presets(slow: tuple[str, ...] = SLOW_PRESETS):
    return [pytest.param(n, marks=pytest.mark.slow) if n in slow else n for n in PRESETS]


@pytest.mark.parametrize("name", _presets(SLOW_CLIMB))
def test_every_recipe_climbs(tiny_weights, name):
    w = tiny_weights
    # Two live filters of the tiny network (its filter 0 barely turns on: a random kernel).
    res = ascent.visualize(
        LAYER, [1, 2], small(name, steps=12), w.params, w.preprocessing, execution=ROLLED
    )
    assert res.images.dtype == np.uint8 and res.images.shape == (2, 1, 32, 32, 3)
    assert not res.nonfinite.any() and np.all(np.isfinite(res.raw))
    # "The objective rises after a few steps on a 32x32 image" (Lucid's test): compare the means
    # of the first and last three steps (transforms make single steps noisy).
    first, last = res.objective[:, :3].mean(axis=1), res.objective[:, -3:].mean(axis=1)
    assert np.all(last > first), (first, last)


#: Steps at which two chunkings are compared. Adam and NAdam (lucid, maco) amplify float rounding:
#: their first steps move every coefficient by about lr * sign(gradient), so a coefficient whose
#: gradient is ~0 goes +-lr depending on the summation order of a convolution. Two chunkings agree
#: to 1e-6 of the pixel range after one step and drift apart after (0.4 and 5 of 255 after three
#: steps, measured) while staying the same picture to the eye; classic and keras-vis (RMS-scaled
#: steps) agree to 1e-6 after three.
DETERMINISM_STEPS = {"classic": 3, "keras-vis": 3, "lucid": 1, "lucent": 1, "maco": 1}


@pytest.mark.parametrize("name", _presets(SLOW_DETERMINISM))
def test_a_filters_picture_does_not_depend_on_chunks_devices_or_padding(tiny_weights, name):
    w = tiny_weights
    r = small(name, steps=DETERMINISM_STEPS[name])
    one = ascent.local_mesh(jax.devices()[:1])
    run = lambda filters, batch, **kw: ascent.visualize(  # noqa: E731
        LAYER, filters, r, w.params, w.preprocessing, execution=ROLLED.replace(batch=batch), **kw
    )
    base = run([0, 1, 2], 1, mesh=one)  # one filter per program: the one-channel fast path
    # Reversed, padded to 8 over 4 devices: two filters per device compute the whole layer.
    other = run([2, 1, 0], 8)
    order = np.argsort(other.filters)
    _close(other.raw[order], base.raw, 1e-5)
    _close(other.objective[order], base.objective, 1e-5)


@pytest.mark.slow  # default run: test_execution's segmented-vs-rolled lucid, test_render's segments
def test_segments_do_not_change_the_result(tiny_weights):
    w = tiny_weights
    r = small("lucid", steps=4)  # random draws are keyed by the absolute step
    args = (LAYER, [0, 5], r, w.params, w.preprocessing)
    whole = ascent.visualize(*args, execution=ROLLED.replace(segment=4))
    parts = ascent.visualize(*args, execution=ROLLED.replace(segment=3))  # 3 + 1 steps
    _close(parts.raw, whole.raw, 1e-5)
    _close(parts.objective, whole.objective, 1e-5)


def _dead_params(w, f=5):
    params = jax.tree.map(np.array, w.params)
    params["params"][LAYER]["bias"][f] = -1e4  # relu(conv - 1e4) == 0: a dead unit, live kernel
    return params


def test_redirected_relu_wakes_a_dead_filter_then_gives_way(tiny_weights):
    w, f = tiny_weights, 5
    params = _dead_params(w, f)
    base = Recipe(size=(32, 32), steps=3, optimizer=recipe.optim.Optimizer("sgd", lr=1e3))
    run = lambda r: ascent.visualize(LAYER, [f], r, params, w.preprocessing)  # noqa: E731
    classic = run(base)
    assert classic.zero_start_grad[0]
    np.testing.assert_array_equal(classic.raw[0, 0], ascent.noise_image(base))  # never moved
    redirected = run(base.replace(redirect_relu=2))  # steps 0, 1, 2 redirected (Lucid: <= 16)
    assert not redirected.zero_start_grad[0]
    assert np.abs(redirected.raw[0, 0] - ascent.noise_image(base)).max() > 1e-3
    # After the redirected steps the true gradient (zero: still dead) moves nothing.
    longer = run(base.replace(redirect_relu=2, steps=6))
    np.testing.assert_array_equal(longer.raw, redirected.raw)
    assert np.all(longer.objective == 0)
    # The lucid preset redirects, classic does not.
    assert PRESETS["lucid"].redirect_relu == 16 and PRESETS["classic"].redirect_relu == 0


def test_redirected_relu_gradient_rule():
    x = np.array([[-1.0, 2.0, -3.0]], np.float32)  # one example
    for g, on, want in [
        ([1.0, 1.0, -1.0], True, [0.0, 1.0, 0.0]),  # some true gradient: the plain ReLU's
        ([1.0, 0.0, -1.0], True, [1.0, 0.0, 0.0]),  # none: let the upward push through
        ([1.0, 0.0, -1.0], False, [0.0, 0.0, 0.0]),  # switched off: plain ReLU
    ]:
        _, vjp = jax.vjp(lambda x, on=on: vgg.redirected_relu(x, np.bool_(on)), x)
        np.testing.assert_array_equal(vjp(np.array([g], np.float32))[0], [want])


def test_recipe_json_round_trip_and_atlas_config(tiny_weights, tmp_path):
    for r in PRESETS.values():
        assert Recipe.from_json(json.loads(json.dumps(r.to_json()))) == r
    from vizjax.atlas import open_atlas
    from vizjax.config import read_config
    from vizjax.run import run_atlas

    r = apply_override(small("keras-vis", steps=2), "objective.tv=0.5")
    run_atlas(tmp_path / "a.h5", ["block1_conv1"], [0], r, tiny_weights, quiet=True)
    with open_atlas(tmp_path / "a.h5") as a:
        stored = read_config(a.config)
    assert stored.recipe == r and stored.layers == ("block1_conv1",) and stored.filters == (0,)
    assert r.program() == r.replace(seed=9, size=(64, 64)).program()  # inputs are not compiled in


def test_set_overrides_and_their_errors():
    r = apply_override(PRESETS["lucid"], "optimizer.lr=0.02")
    assert r.optimizer.lr == 0.02 and r.optimizer.name == "adam"
    assert apply_override(r, "param.decay=1.5").param.decay == 1.5
    assert apply_override(r, "transforms.1.d=4").transforms[1].d == 4
    assert apply_override(r, "transforms=none").transforms == ()
    assert apply_override(r, "param=pixel").param == recipe.param.Pixel()
    assert apply_override(r, "size=96x64").size == (96, 64)
    assert apply_override(r, "preprocess=false").preprocess is False
    bad = {
        "optimizer.lrr=1": "optimizer has no field 'lrr'; valid: b1, b2, decay, eps, lr, name",
        "steps=abc": "'abc' is not a valid int",
        "steps=0": "steps must be a positive integer",
        "param=foo": "unknown kind 'foo'; known: pixel, fft, maco",
        "transforms=x": "unknown set 'x'",
        "optimizer.lr=nan": "not a valid finite number",
        "optimizer.lr=-1": "optimizer.lr must be positive",
        "nokey": "expects key=value",
        "transforms.9.d=1": "not an index",
        "optimizer=adam": "give a field",
        "objective.kind=bogus": "objective.kind must be one of channel, neuron, deepdream",
        "optimizer.name=lbfgs": "optimizer.name must be one of",
        "modifiers=keras-vis": None,  # fine on pixels...
        "bogus=1": "recipe has no field 'bogus'",
    }
    for assignment, message in bad.items():
        if message is None:
            apply_override(PRESETS["classic"], assignment)
            continue
        with pytest.raises(VizjaxError, match=message.replace("(", r"\(").replace(")", r"\)")):
            apply_override(PRESETS["lucid"], assignment)
    with pytest.raises(VizjaxError, match="modifiers change the image itself"):
        apply_override(PRESETS["lucid"], "modifiers=keras-vis")  # ...not on a spectrum


def test_the_default_recipe_is_lucent_at_64_steps_on_every_command():
    # Typed-in values: the bench's frontier chose them (bench/README.md, "Quality per second").
    assert recipe.DEFAULT_RECIPE == "lucent"
    lucent, lucid = PRESETS["lucent"], PRESETS["lucid"]
    assert lucent.steps == 64 and lucid.steps == 512  # Lucid's own preset keeps its 512
    assert lucent.replace(steps=512, transforms=lucid.transforms, name="lucid") == lucid
    from vizjax import cli

    for command in (
        ["atlas", "--out", "o.h5"],
        ["render", "--layer", "block1_conv1", "--filter", "0", "--out", "o.png"],
    ):
        assert cli.build_parser().parse_args(command).recipe == "lucent"
