"""run: filter specs, the start image, the stored config, progress lines, stopping on a signal,
and a whole run (and its measures recomputed) on the tiny network."""

import os
import signal

import numpy as np
import pytest
from PIL import Image

from vizjax import run
from vizjax.atlas import open_atlas
from vizjax.engine.execution import Execution
from vizjax.engine.recipe import CLASSIC
from vizjax.errors import Interrupted, VizjaxError


def test_filter_specs():
    assert run.parse_filters("all", 4) == [0, 1, 2, 3]
    assert run.parse_filters("0:3", 8) == [0, 1, 2]
    assert run.parse_filters(":2,6:", 8) == [0, 1, 6, 7]
    assert run.parse_filters("5, 1,5,0:2", 8) == [5, 1, 0]  # unique, first order kept
    assert run.parse_filters([3, 1], 8) == [3, 1]
    for spec, message in {
        "8": "filter index 8 out of range for L (0..7)",
        "6:10": "filter range 6:10 goes past L's 8 filters (0..7)",
        "-1": "out of range",
        "2:2": "selects no filter",
        "a": "bad --filters 'a'",
        "1.5": "bad --filters",
    }.items():
        with pytest.raises(VizjaxError, match=message.replace("(", r"\(").replace(")", r"\)")):
            run.parse_filters(spec, 8, "L")
    with pytest.raises(VizjaxError, match="out of range"):
        run.parse_filters([8], 8)


def test_start_image_from_noise_and_from_a_photo(tmp_path):
    x0, r = run.start_image(CLASSIC.replace(size=(8, 6), seed=4))
    assert x0.shape == (8, 6, 3) and r.size == (8, 6) and r.init_sha256 is None
    assert abs(float(x0.mean()) - 127.0) < 5 and 5 < float(x0.std()) < 15  # N(127, 10)
    again, _ = run.start_image(CLASSIC.replace(size=(8, 6), seed=4))
    np.testing.assert_array_equal(again, x0)
    _, default = run.start_image(CLASSIC)
    assert default.size == (128, 128)
    Image.fromarray(np.full((5, 9, 3), 40, np.uint8)).save(tmp_path / "p.png")
    x1, r1 = run.start_image(CLASSIC.replace(init=str(tmp_path / "p.png")))
    assert x1.shape == (5, 9, 3) and r1.size == (5, 9) and (x1 == 40).all()
    assert r1.init_sha256 and len(r1.init_sha256) == 64


def test_a_signal_stops_at_the_next_check_and_a_second_at_once():
    before = signal.getsignal(signal.SIGTERM)
    with run.StopOnSignal() as stop:
        stop.check({"n": 0})  # nothing yet
        os.kill(os.getpid(), signal.SIGTERM)
        assert stop.signum == signal.SIGTERM  # heard, not acted on...
        with pytest.raises(Interrupted) as e:
            stop.check({"n": 1})  # ...until the run checks, with what it has done
        assert e.value.signum == signal.SIGTERM and e.value.summary == {"n": 1}
        with pytest.raises(Interrupted):
            os.kill(os.getpid(), signal.SIGINT)  # a second signal stops at once
    assert signal.getsignal(signal.SIGTERM) is before  # handlers restored


def test_a_run_on_the_tiny_network_and_its_measures_recomputed(tiny_weights, tmp_path):
    out = tmp_path / "a.h5"
    r = CLASSIC.replace(size=(32, 32), steps=2)
    ex = Execution(batch=4)
    summary = run.run_atlas(out, ["block1_conv1"], "0:6", r, tiny_weights, execution=ex, quiet=True)
    s = summary["layers"]["block1_conv1"]
    assert summary["out"] == str(out)
    assert (s["done"], s["computed"], s["nonfinite_computed"]) == (6, 6, 0)
    with open_atlas(out) as a:
        assert a.attrs["weights"] == "tiny-vgg16" and a.attrs["model"] == "vgg16"
        assert a.config["recipe"]["steps"] == 2 and a.config["filters"] == "0:6"
        assert a.config["execution"]["batch"] == 4 and a.config["weights"] == "tiny-vgg16"
        layer = a.layers["block1_conv1"]
        assert layer.num_filters == 8  # the tiny network's block1 width
        stored = np.asarray(layer.field("hf_energy")[:])
        assert layer.activation_matrix.shape == (6, 1, 8)
    # Resuming with nothing left to do computes nothing.
    again = run.run_atlas(out, ["block1_conv1"], "0:6", r, tiny_weights, execution=ex, quiet=True)
    assert again["layers"]["block1_conv1"]["computed"] == 0
    # Measures recomputed from the stored images equal those the run stored.
    m = run.measure_atlas(out, execution=ex, force=True, quiet=True)
    assert m["layers"]["block1_conv1"]["measured"] == 6
    with open_atlas(out) as a:
        np.testing.assert_allclose(a.layers["block1_conv1"].field("hf_energy")[:], stored, 1e-6)
    with pytest.raises(VizjaxError, match="has no layer 'block2_conv1'"):
        run.measure_atlas(out, ["block2_conv1"], quiet=True)


def test_layers_read_back_in_the_networks_order(tiny_weights, tmp_path):
    # The main job writes block1_conv2 (its full layer) before block1_conv1: the atlas, and the
    # gallery made from it, list them as the network has them.
    from vizjax.gallery import write_site

    out = tmp_path / "a.h5"
    r = CLASSIC.replace(size=(32, 32), steps=2)
    for layer in ("block2_conv1", "block1_conv2", "block1_conv1"):
        run.run_atlas(out, [layer], "0:2", r, tiny_weights, quiet=True)
    with open_atlas(out) as a:
        assert list(a.layers) == ["block1_conv1", "block1_conv2", "block2_conv1"]
    index = write_site(out, tmp_path / "site").read_text()
    shown = [index.index(f'href="{n}/index.html"') for n in ("block1_conv1", "block1_conv2")]
    assert shown == sorted(shown) and index.index('href="block2_conv1/index.html"') > shown[1]
