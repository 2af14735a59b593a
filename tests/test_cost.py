"""The cost model (vizjax.engine.cost): FLOPs against a hand count, and an ETA that knows deeper layers
cost more."""

import time

import pytest

from vizjax import run
from vizjax.engine import cost
from vizjax.engine.execution import Execution
from vizjax.engine.recipe import preset
from vizjax.progress import WorkMeter


def test_forward_flops_match_a_hand_count():
    # block2_conv1 at 32x32: conv1 3->64 and conv2 64->64 at 32x32, a pool, conv 64->128 at 16x16;
    # 2 FLOPs per multiply-add, 9 taps.
    conv1 = 2 * 32 * 32 * 9 * 3 * 64  # 3,538,944
    conv2 = 2 * 32 * 32 * 9 * 64 * 64  # 75,497,472
    conv3 = 2 * 16 * 16 * 9 * 64 * 128  # 37,748,736
    assert cost.forward_flops("block1_conv1", 32, 32) == 3_538_944 == conv1
    assert cost.forward_flops("block2_conv1", 32, 32) == 116_785_152 == conv1 + conv2 + conv3
    # A pool alone adds nothing; odd sizes floor at the pool, as in the network.
    assert cost.forward_flops("block1_pool", 32, 32) == conv1 + conv2
    assert cost.forward_flops("block2_conv1", 33, 33) == pytest.approx(
        2 * 9 * (33 * 33 * (3 * 64 + 64 * 64) + 16 * 16 * 64 * 128)
    )


def test_work_counts_what_the_network_sees():
    classic = preset("classic").replace(size=(32, 32), steps=10)
    assert cost.network_hw(classic) == (32, 32)
    # forward + input gradient, one view.
    assert cost.flops_per_filter_step("block2_conv1", classic) == 2 * 116_785_152
    # The work adds the image side: IMAGE_FLOPS_PER_PIXEL per pixel of each view.
    image_side = cost.IMAGE_FLOPS_PER_PIXEL * 32 * 32
    assert cost.filter_work("block2_conv1", classic) == 10 * (2 * 116_785_152 + image_side)
    # Lucid pads 128 px by 12 on each side, then crops 8 and 4 px: the network sees 140 px.
    lucid = preset("lucid").replace(size=(128, 128))
    assert cost.network_hw(lucid) == (140, 140)
    assert cost.flops_per_filter_step("block1_conv1", lucid) == 2 * 2 * 140 * 140 * 9 * 3 * 64
    # MACO shows the network 4 crops per step; --diversity K shows K images.
    maco = preset("maco").replace(size=(64, 64))
    assert cost.views_per_step(maco) == 4
    assert cost.flops_per_filter_step("block1_conv1", maco) == 4 * 2 * 2 * 64 * 64 * 27 * 64
    assert cost.views_per_step(classic.with_diversity(3)) == 3
    plan = {"block1_conv1": 3, "block3_conv1": 2}
    assert cost.run_work(plan, classic) == 3 * cost.filter_work(
        "block1_conv1", classic
    ) + 2 * cost.filter_work("block3_conv1", classic)
    # Deeper layers cost more per filter.
    works = [cost.filter_work(n, lucid) for n in ("block1_conv1", "block3_conv1", "block5_conv1")]
    assert works == sorted(works) and works[-1] > 10 * works[0]


def test_meter_gives_no_eta_before_the_first_chunk_and_times_compiles_apart():
    now = [0.0]
    m = WorkMeter(100.0, layers=2, clock=lambda: now[0])
    assert m.eta() is None  # "estimating..."
    m.new_layer()
    now[0] = 12.0  # first chunk: 10 s compiling + 2 s for 10 units
    m.add(10.0)
    assert m.eta() is None  # that rate includes compiling: still "estimating..."
    now[0] = 14.0  # a steady chunk: 10 units in 2 s
    m.add(10.0)
    assert m.rate() == pytest.approx(5.0) and m.compile_s() == pytest.approx(10.0)
    # 80 units at 5/s, plus one layer still to compile.
    assert m.eta() == pytest.approx(80 / 5 + 10.0)
    # Two layers of one chunk each, never a steady chunk: the all-in rate after both.
    now[0] = 0.0
    m = WorkMeter(100.0, layers=3, clock=lambda: now[0])
    for t in (20.0, 40.0):
        m.new_layer()
        now[0] = t
        m.add(10.0)
    assert not m.steady and m.eta() == pytest.approx(80 / (20 / 40))


def test_meter_warns_once_when_the_eta_is_long(monkeypatch):
    now = [0.0]
    m = WorkMeter(1e6, layers=1, clock=lambda: now[0], warn=lambda eta: f"long: {eta:.0f}")
    for t in (1.0, 2.0, 3.0):
        now[0] = t
        m.add(1.0)
        if t == 1.0:
            assert m.warning() is None  # no ETA yet
        elif t == 2.0:
            assert m.warning() == f"long: {(1e6 - 2) / 1.0 + 0:.0f}"
        else:
            assert m.warning() is None  # once
    short = WorkMeter(10.0, layers=1, clock=lambda: now[0], warn=lambda eta: "long")
    for t in (4.0, 5.0):
        now[0] = t
        short.add(1.0)
    assert short.warning() is None and short.warned


def test_long_run_warning_says_what_would_shorten_it():
    text = cost.long_run_warning(4 * 86400 + 3600, 512, (224, 224), "cpu")
    assert text.startswith("vizjax: this run will take about 97h00m")
    for hint in ("--steps 128", "--size 112", "--filters", "accelerator"):
        assert hint in text
    assert "accelerator" not in cost.long_run_warning(4 * 3600, 512, (224, 224), "gpu")


@pytest.mark.slow  # ~3 min on a loaded 2-core CPU, most of it compiling the two programs
def test_eta_after_the_first_layer_predicts_the_second(tmp_path, default_weights, monkeypatch):
    """A 2-layer run whose second layer costs 5x more per filter than its first: the ETA when
    the second layer starts is within 25% of the time the second layer then takes (an ETA from
    the filter rate would be 5x short), both in this process's CPU seconds. The programs are
    compiled by a first run of the same shapes, so what is compared is the work model (the meter
    times compiles apart, and the two layers' differ).

    Two filters per device (chunks of 8 on the tests' 4 devices) so both layers compute whole
    convolutions, as counted: one filter per device computes one channel of the target layer,
    which makes block1_conv2 a different, slower kind of program. block1_conv1 is not used: its
    cost is almost all image side (cost.IMAGE_FLOPS_PER_PIXEL), whose ratio to convolution cost
    was calibrated on one device at 224 px and is ~2x off on 4 fake devices at 48 px."""
    layers = ["block1_conv2", "block4_conv3"]
    recipe = preset("lucid").replace(size=(48, 48), steps=32)
    per_filter = [cost.filter_work(n, recipe) for n in layers]
    assert per_filter[1] > 5 * per_filter[0]
    ex = Execution(batch=8)
    run.run_atlas(
        tmp_path / "warm.h5", layers, "0:8", recipe, default_weights, execution=ex, quiet=True
    )
    seen = {}
    # Seconds of CPU used by this process, for the meter and for the real time alike: on a
    # shared machine other processes' load comes and goes between the two layers.
    clock = time.process_time

    class Recorder(WorkMeter):
        def __init__(self, work_total, layers, **kwargs):
            super().__init__(work_total, layers, **{**kwargs, "clock": clock})

        def new_layer(self):
            if self.firsts:  # the second layer begins: what would the bar say now?
                seen["eta"], seen["t"] = self.eta(), clock()
            super().new_layer()

    monkeypatch.setattr(run, "WorkMeter", Recorder)
    # 24 filters of each, in 3 chunks: ~4 CPU s for the first layer, ~17 for the second.
    run.run_atlas(
        tmp_path / "a.h5", layers, "0:24", recipe, default_weights, execution=ex, quiet=True
    )
    real = clock() - seen["t"]
    print(f"ETA {seen['eta']:.2f} s, real {real:.2f} s")
    assert seen["eta"] == pytest.approx(real, rel=0.25)


# ---------------------------------------------------------------------------------------------
# XLA's own count, for models without a table.


def _vgg16_as_generic():
    """VGG16 (the built-in module, weights only as shapes) seen as a generic model: XLA counts
    what the table counts, without the table."""
    import jax
    import numpy as np

    from vizjax.models import vgg
    from vizjax.models.generic import GenericModel
    from vizjax.models.network import IDENTITY

    module = vgg.NETWORK.module(IDENTITY)
    params = {
        "params": {
            name: {
                "kernel": jax.ShapeDtypeStruct(k, np.float32),
                "bias": jax.ShapeDtypeStruct(b, np.float32),
            }
            for name, (k, b) in vgg.NETWORK.conv_shapes().items()
        }
    }
    return GenericModel(
        kind="flax",
        name="vgg16-as-generic",
        apply=lambda p, x, layers: module.apply(p, x, outputs=layers),
        params=params,
        layers=vgg.NETWORK.layer_names,
        preprocessing=IDENTITY,
        input_size=None,
    )


#: XLA's forward count / the table's, at 140 px (what lucid's views are): XLA leaves out the
#: padding taps (-) and counts bias, ReLU and pools (+); see vizjax.engine.cost's docstring.
TOLERANCE = 0.05


@pytest.mark.parametrize("layer", ["block1_conv1", "block3_conv3", "block5_conv1"])
def test_xla_counts_vgg16_layers_like_the_table(layer):
    model = _vgg16_as_generic()
    table = cost.forward_flops(layer, 140, 140)
    forward = cost.forward_flops(layer, 140, 140, model)
    assert forward == pytest.approx(table, rel=TOLERANCE)
    # A filter-step (forward + input gradient of each view): about twice the forward.
    lucid = preset("lucid")
    step = cost.flops_per_filter_step(layer, lucid, model)
    assert step == pytest.approx(cost.flops_per_filter_step(layer, lucid), rel=2 * TOLERANCE)
    assert 1.8 * forward < step / cost.views_per_step(lucid) < 2.2 * forward


def test_xla_flops_follows_the_program_and_compiles_only_what_is_asked():
    import jax
    import jax.numpy as jnp

    x = jax.ShapeDtypeStruct((64, 32), jnp.float32)
    w = jax.ShapeDtypeStruct((32, 16), jnp.float32)
    assert cost.xla_flops(lambda x, w: x @ w, x, w) == pytest.approx(2 * 64 * 32 * 16, rel=0.01)
    # What the output does not need is not counted (XLA drops it when it compiles).
    dead = cost.xla_flops(lambda x, w: (x @ w, (x @ w.T.T) @ w.T)[0], x, w)
    assert dead == pytest.approx(2 * 64 * 32 * 16, rel=0.01)
