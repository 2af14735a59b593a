"""``--model``'s values: built-in names, factories in files and packages, ``.keras`` files; and every
bad model a user can give, refused in ONE ``vizjax:`` line with nothing written (the atlas writer
is replaced by a sentinel, so a case that passes every check stops before writing)."""

from __future__ import annotations

import sys
from pathlib import Path
from unittest import mock

import pytest

from vizjax.errors import VizjaxError
from vizjax.models import loader
from vizjax.models.generic import GenericModel

TESTS = Path(__file__).resolve().parent
sys.path.insert(0, str(TESTS))
from bad_input import Reached, assert_refused, run_cli  # noqa: E402

NETS = f"{TESTS / 'flax_nets.py'}"
RUN = ["--out", "a.h5", "--size", "32", "--steps", "2", "--recipe", "classic", "--quiet"]


@pytest.fixture
def folder(monkeypatch, tmp_path):
    """An empty working folder; the atlas writer replaced by the Reached sentinel."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("vizjax.run.atlas.AtlasWriter", mock.Mock(side_effect=Reached))
    return tmp_path


def test_builtin_names_stay_names():
    assert loader.load("vgg16") == "vgg16" and loader.load("alexnet") == "alexnet"


def test_a_file_factory_gives_a_flax_model_with_its_preprocessing():
    model = loader.load(f"{NETS}:odd")
    assert isinstance(model, GenericModel) and model.kind == "flax"
    assert model.name == "flax:flax_nets:odd"
    assert model.layers[:4] == ("conv", "vector", "index", "constant")
    assert model.preprocessing.name == "torch"


def test_a_package_factory_and_a_ready_generic_model():
    model = loader.load("flax_nets:vit_model")  # tests/ is on sys.path
    assert model.input_size == 32 and model.name == "flax:vit"


@pytest.mark.parametrize(
    "spec, words",
    [
        ("nosuchmodel", "unknown model 'nosuchmodel'"),
        (f"{TESTS / 'nope.py'}:f", "no Python file"),
        ("no_such_package.nets:f", "no Python module 'no_such_package.nets'"),
        (f"{NETS}:nope", "has no callable 'nope'"),
        (f"{NETS}:raises", "raised RuntimeError: the checkpoint is not here"),
        (f"{NETS}:wrong", "returned a str; expected (module, variables)"),
        (f"{NETS}:nan_weights", "NaN or Inf (at ['params']['conv']['kernel'])"),
        ("missing.keras", "no Keras model file missing.keras"),
    ],
)
def test_bad_models_are_one_line(spec, words):
    with pytest.raises(VizjaxError) as e:
        loader.load(spec)
    assert words in str(e.value) and "\n" not in str(e.value)


def test_a_file_that_fails_to_import_is_one_line(tmp_path):
    bad = tmp_path / "broken.py"
    bad.write_text("import no_such_module_here\n")
    with pytest.raises(VizjaxError, match="importing .*broken.py failed: ModuleNotFoundError"):
        loader.load(f"{bad}:f")


@pytest.mark.parametrize(
    "argv, words",
    [
        (["--model", f"{NETS}:odd", "--layer", "nope"], "unknown layer 'nope'"),
        (["--model", f"{NETS}:odd", "--layer", "vector"], "no channel axis"),
        (["--model", f"{NETS}:odd", "--layer", "index"], "integer output"),
        (["--model", f"{NETS}:odd", "--layer", "constant"], "does not depend on the input"),
        (["--model", f"{NETS}:nan_weights", "--layer", "conv"], "NaN"),
        (["--model", f"{NETS}:raises", "--layer", "conv"], "raised RuntimeError"),
        (["--model", f"{NETS}:wrong", "--layer", "conv"], "returned a str"),
        (["--model", f"{NETS}:resnet_no_preprocessing", "--layer", "Stage_0"], "--preprocess"),
        (["--model", f"{NETS}:odd", "--preprocess", "mean=x", "--layer", "conv"], "numbers"),
        (["--model", f"{NETS}:odd", "--weights", "tiny-vgg16", "--layer", "conv"], "own weights"),
        (["--preprocess", "torch", "--layer", "block1_conv1"], "--preprocess is for your own"),
        (["--model", f"{NETS}:vit_model", "--layer", "Conv_0", "--size", "48"], "32x32 inputs"),
        (["--model", f"{NETS}:gray", "--preprocess", "torch", "--layer", "Stage_0"], "3 mean"),
        (["--model", "not_a_model.keras", "--layer", "conv"], "not_a_model.keras"),
    ],
)
def test_bad_runs_are_one_line_and_write_nothing(folder, argv, words):
    if "not_a_model.keras" in argv:
        (folder / "not_a_model.keras").write_text("this is not a Keras model")
    assert_refused(["atlas", *RUN, *argv], folder, words)


def test_a_good_model_passes_every_check(folder):
    rc, err = run_cli(["atlas", *RUN, "--model", f"{NETS}:odd", "--layer", "conv"])
    assert rc is None, err  # reached the writer
    assert not list(folder.iterdir())


def test_the_redirected_relu_is_said_off_for_a_generic_model(folder):
    argv = ["atlas", *RUN, "--recipe", "lucid", "--model", f"{NETS}:odd", "--layer", "conv"]
    rc, err = run_cli(argv)
    assert rc is None, err
    assert err.strip() == (
        "vizjax: the redirected ReLU (redirect_relu=16) is off for flax:flax_nets:odd: only the "
        "built-in table networks have it"
    )


def test_all_layers_of_a_generic_model_are_its_float_layers_with_channels():
    from vizjax.cli.options import _all_layers

    assert _all_layers(loader.load(f"{NETS}:odd"), (8, 8)) == ("conv", "constant")


def test_a_keras_file_is_loaded_in_safe_mode_unless_trusted(tmp_path, monkeypatch):
    """The loader hands .keras files to keras_model.from_keras (faked here): safe mode by
    default, safe_mode=False only with --trust-model-file."""
    import types

    odd = loader.load(f"{NETS}:odd")
    seen = []
    fake = types.ModuleType("vizjax.models.keras_model")
    fake.from_keras = lambda path, safe_mode=True: seen.append((path, safe_mode)) or odd
    monkeypatch.setitem(sys.modules, "vizjax.models.keras_model", fake)
    monkeypatch.setattr("vizjax.models.keras_model", fake, raising=False)
    (tmp_path / "m.keras").write_bytes(b"PK")
    monkeypatch.chdir(tmp_path)
    assert loader.load("m.keras") is odd and loader.load("m.keras", trust=True) is odd
    assert seen == [("m.keras", True), ("m.keras", False)]
    from vizjax.cli import main

    assert main(["layers", "--model", "m.keras", "--trust-model-file"]) == 0
    assert seen[-1] == ("m.keras", False)


def test_a_factory_may_return_an_nnx_module():
    model = loader.load(f"{NETS}:nnx_net")
    assert model.kind == "flax-nnx" and model.preprocessing.name == "torch"
    with pytest.raises(VizjaxError, match="training mode"):
        loader.load(f"{NETS}:nnx_net_training")
