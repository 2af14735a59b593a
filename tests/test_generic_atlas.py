"""Atlases of networks vizjax did not write (tests/flax_nets.py), through the CLI's
``--model path/to/file.py:factory`` and the Python API: ``vizjax layers``, a residual stage's
channels, resume, the refusal of another model's or other weights' run into the same atlas, and
the README's and docs/pages/models.md's "Your own model" examples (tests/data/your_own_model.py, tests/data/readme_model.py) run as written."""

from __future__ import annotations

import runpy
import sys
from pathlib import Path

import numpy as np
import pytest

import vizjax
from vizjax.cli import main

TESTS = Path(__file__).resolve().parent
sys.path.insert(0, str(TESTS))
from bad_input import assert_refused, run_cli  # noqa: E402

NETS = str(TESTS / "flax_nets.py")
STEPS = ["--size", "32", "--steps", "2", "--recipe", "classic", "--quiet"]


def test_layers_lists_paths_shapes_and_channels(capsys):
    assert main(["layers", "--model", f"{NETS}:resnet", "--size", "32"]) == 0
    out = capsys.readouterr().out
    assert "flax:flax_nets:resnet" in out and "preprocessing torch" in out
    rows = {line.split()[0]: line.split()[1:] for line in out.splitlines()[3:]}
    assert "".join(rows["Stage_1/Block_0"]) == "(16,16,16)16"
    assert rows["output"][-1] == "-"  # (10,): no channel axis
    # Listing needs no preprocessing (a run does).
    assert main(["layers", "--model", f"{NETS}:resnet_no_preprocessing"]) == 0
    assert "unknown: pass --preprocess" in capsys.readouterr().out
    # --preprocess given: the listing says the one the atlas would store.
    argv = ["layers", "--model", f"{NETS}:resnet_no_preprocessing", "--preprocess", "tf"]
    assert main(argv) == 0
    assert "preprocessing tf" in capsys.readouterr().out


def test_cli_atlas_resume_and_refusals(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    argv = ["atlas", "--model", f"{NETS}:resnet", "--layer", "Stage_1", "--filters", "0:3"]
    assert main([*argv, "--out", "r.h5", *STEPS]) == 0
    with vizjax.open_atlas("r.h5") as a:
        layer = a.layers["Stage_1"]
        assert list(layer.filters) == [0, 1, 2] and layer.images.shape[1:] == (1, 32, 32, 3)
        assert a.attrs["model"] == "flax:flax_nets:resnet"
        assert a.attrs["model_kind"] == "flax" and len(a.attrs["architecture"]) == 64
        first = np.array(layer.images)
    # Resume: nothing left to compute, and one more filter adds one row.
    rc, err = run_cli([*argv[:-1], "0:4", "--out", "r.h5", *STEPS])
    assert rc == 0, err
    with vizjax.open_atlas("r.h5") as a:
        assert list(a.layers["Stage_1"].filters) == [0, 1, 2, 3]
        np.testing.assert_array_equal(a.layers["Stage_1"].images[:3], first)
    # Another preprocessing, other weights, another architecture: refused in one line.
    assert_refused(
        [*argv, "--out", "r.h5", *STEPS, "--preprocess", "tf"], tmp_path, "preprocessing"
    )
    other = ["atlas", "--model", f"{NETS}:resnet_other_weights", "--layer", "Stage_1"]
    assert_refused([*other, "--out", "r.h5", *STEPS], tmp_path, "weights_sha256")
    wider = ["atlas", "--model", f"{NETS}:resnet_wider", "--layer", "Stage_1"]
    assert_refused([*wider, "--out", "r.h5", *STEPS], tmp_path, "architecture")


@pytest.mark.slow
def test_generic_atlases_merge_and_refuse_other_weights(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    argv = ["atlas", "--model", f"{NETS}:resnet", "--layer", "Stage_1"]
    assert main([*argv, "--filters", "0:2", "--out", "r.h5", *STEPS]) == 0
    assert main([*argv, "--filters", "2:4", "--out", "s.h5", *STEPS]) == 0
    assert main(["merge", "m.h5", "r.h5", "s.h5"]) == 0
    with vizjax.open_atlas("m.h5") as a:
        assert sorted(a.layers["Stage_1"].filters) == [0, 1, 2, 3]
    other = ["atlas", "--model", f"{NETS}:resnet_other_weights", "--layer", "Stage_1"]
    assert main([*other, "--filters", "0:2", "--out", "t.h5", *STEPS]) == 0
    assert_refused(["merge", "n.h5", "r.h5", "t.h5"], tmp_path, "weights_sha256")


@pytest.mark.slow
def test_vit_token_neuron_atlas_through_the_python_api(tmp_path):
    import flax_nets

    recipe = vizjax.preset("classic").replace(size=(32, 32), steps=2)
    recipe = recipe.replace(objective=recipe.objective.__class__(kind="neuron"))
    out = tmp_path / "vit.h5"
    model = flax_nets.vit_model()
    # An MLP layer's neurons (a (T, C) token layer, named by its module path) and a block's.
    layers = ["EncoderBlock_1/MlpIn", "EncoderBlock_1"]
    summary = vizjax.run_atlas(out, layers, "0:3", recipe, model, quiet=True)
    assert [summary["layers"][n]["computed"] for n in layers] == [3, 3]
    with vizjax.open_atlas(out) as a:
        assert list(a.layers) == layers  # the network's order
        table = a.layers["EncoderBlock_1/MlpIn"].fidelity
        assert len(table["filter"]) == 3 and np.isfinite(table["hf_energy"]).all()


@pytest.mark.slow
def test_the_readme_example_runs_as_written(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    runpy.run_path(str(TESTS / "data" / "your_own_model.py"), run_name="__main__")
    out = capsys.readouterr().out
    assert "(4, 1, 32, 32, 3)" in out and "['Block_0', 'Block_1']" in out
    assert (tmp_path / "my_net.h5").is_file()


def test_a_fixed_size_model_runs_at_its_size_after_the_transforms():
    import flax_nets

    from vizjax.engine import cost
    from vizjax.run import start_image

    model = flax_nets.vit_model()
    for name in ("classic", "lucid"):
        x0, recipe = start_image(vizjax.preset(name), model)
        assert cost.network_hw(recipe) == (32, 32) and x0.shape[:2] == recipe.size


@pytest.mark.slow
def test_the_readme_block_runs_as_written(tmp_path, monkeypatch, capsys):
    """README.md's "Your own model" block (tests/data/readme_model.py holds it verbatim)."""
    monkeypatch.chdir(tmp_path)
    runpy.run_path(str(TESTS / "data" / "readme_model.py"), run_name="__main__")
    out = capsys.readouterr().out
    assert out.splitlines()[-1] == "['output'] [0 1 2 3 4 5 6 7]"  # the last layer, 8 filters
