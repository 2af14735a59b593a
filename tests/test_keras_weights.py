"""Tests for vizjax.models.keras_weights: synthetic Keras HDF5 files in every layout, read back bit for bit."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import h5py
import numpy as np
import pytest

from vizjax.errors import WeightsError
from vizjax.models.keras_weights import read_keras_h5
from vizjax.models.vgg import CONV_LAYERS, CONV_SHAPES, LAYER_NAMES

# Fake fully connected layers: they are skipped, so their shapes need not be real (25088x4096).
TOP = {
    "flatten": {},
    "fc1": {"kernel": np.ones((8, 4), np.float32), "bias": np.ones(4, np.float32)},
    "fc2": {"kernel": np.ones((4, 4), np.float32), "bias": np.ones(4, np.float32)},
    "predictions": {"kernel": np.ones((4, 3), np.float32), "bias": np.ones(3, np.float32)},
}

# layout -> how that Keras generation names weights and stores its attributes.
LAYOUTS = {
    "original_notop": dict(names="{layer}_{short}_1:0", top=False, model=False, split=False),
    "original_top": dict(names="{layer}_{short}_1:0", top=True, model=False, split=False),
    "keras2": dict(names="{layer}/{weight}:0", top=False, model=False, split=False),
    "keras3_model": dict(names="{layer}/{weight}", top=True, model=True, split=False),
    "split": dict(names="{layer}/{weight}:0", top=False, model=False, split=True),
}
VERSIONS = {"keras2": ("2.15.0", "tensorflow"), "split": ("2.4.0", "tensorflow")}
VERSIONS["keras3_model"] = ("3.3.3", "jax")


@pytest.fixture(scope="module")
def weights() -> dict[str, dict[str, np.ndarray]]:
    """Random conv weights with the real VGG16 shapes (one generator, made once per module)."""
    rng = np.random.default_rng(0)
    return {
        name: {
            "kernel": rng.standard_normal(kshape, dtype=np.float32),
            "bias": rng.standard_normal(bshape, dtype=np.float32),
        }
        for name, (kshape, bshape) in CONV_SHAPES.items()
    }


def _set_names(attrs: h5py.AttributeManager, key: str, names: list[str], layout: str) -> None:
    """Store a name list the way ``layout``'s Keras would: bytes, str, or split into chunks."""
    if layout == "keras3_model":
        attrs[key] = names  # h5py stores a list of str as variable-length strings
    elif LAYOUTS[layout]["split"] and len(names) > 1:
        half = len(names) // 2
        attrs[f"{key}0"] = np.array([n.encode() for n in names[:half]])
        attrs[f"{key}1"] = np.array([n.encode() for n in names[half:]])
    else:
        attrs[key] = np.array([n.encode() for n in names]) if names else np.asarray([])


def write_keras_h5(
    path: Path,
    conv: dict[str, dict[str, np.ndarray]],
    layout: str,
    layer_names: tuple[str, ...] = LAYER_NAMES,
) -> Path:
    """Write ``conv`` (only the layers given, in network order) plus pools etc. as ``layout``;
    ``layer_names``: the network's (VGG16's by default, VGG19's for its converter tests)."""
    spec = LAYOUTS[layout]
    with h5py.File(path, "w") as f:
        root = f
        if spec["model"]:
            f.attrs["model_config"] = json.dumps({"class_name": "Functional"})
            root = f.create_group("model_weights")
        if layout in VERSIONS:
            for obj in (f, root):
                obj.attrs["keras_version"], obj.attrs["backend"] = VERSIONS[layout]
        layers = {"input_1": {}}
        for name in layer_names:
            if name in conv or name.endswith("_pool"):  # pools have no weights
                layers[name] = conv.get(name, {})
        if spec["top"]:
            layers.update(TOP)
        for layer, ws in layers.items():
            group = root.create_group(layer)
            names = []
            for weight, array in ws.items():
                short = {"kernel": "W", "bias": "b"}.get(weight, weight)
                names.append(spec["names"].format(layer=layer, weight=weight, short=short))
                group.create_dataset(names[-1], data=array)
            _set_names(group.attrs, "weight_names", names, layout)
        _set_names(root.attrs, "layer_names", list(layers), layout)
    return path


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_reads_every_layout_exactly(tmp_path: Path, weights, layout: str) -> None:
    path = write_keras_h5(tmp_path / f"{layout}.h5", weights, layout)
    params, info = read_keras_h5(path)
    assert list(params) == list(CONV_LAYERS)
    for name in CONV_LAYERS:
        assert set(params[name]) == {"kernel", "bias"}
        for key in ("kernel", "bias"):
            assert params[name][key].dtype == np.float32
            np.testing.assert_array_equal(params[name][key], weights[name][key])
    assert info["format"] == ("keras_h5_model" if LAYOUTS[layout]["model"] else "keras_h5_weights")
    version, backend = VERSIONS.get(layout, (None, None))
    assert (info["keras_version"], info["backend"]) == (version, backend)
    top = ["fc1", "fc2", "predictions"] if LAYOUTS[layout]["top"] else []
    assert info["skipped_layers"] == top


def test_accepts_str_path_and_bias_listed_first(tmp_path: Path, weights) -> None:
    """Kernel and bias are told apart by rank, not by their order or their names."""
    swapped = {n: {"bias": w["bias"], "kernel": w["kernel"]} for n, w in weights.items()}
    path = write_keras_h5(tmp_path / "swapped.h5", swapped, "keras2")
    params, _ = read_keras_h5(os.fspath(path))
    np.testing.assert_array_equal(
        params["block5_conv3"]["kernel"], weights["block5_conv3"]["kernel"]
    )
    np.testing.assert_array_equal(params["block5_conv3"]["bias"], weights["block5_conv3"]["bias"])


def test_missing_layer(tmp_path: Path, weights) -> None:
    conv = {n: w for n, w in weights.items() if n != "block3_conv2"}
    path = write_keras_h5(tmp_path / "missing.h5", conv, "keras2")
    with pytest.raises(WeightsError, match=r"missing layer block3_conv2 \(found: block1_conv1, "):
        read_keras_h5(path)


@pytest.mark.parametrize(
    ("kernel_shape", "hint"),
    [((3, 3, 64, 64), ""), ((128, 64, 3, 3), " (a channels-first")],
)
def test_wrong_shape(tmp_path: Path, weights, kernel_shape, hint: str) -> None:
    conv = dict(weights)
    conv["block2_conv1"] = {
        "kernel": np.zeros(kernel_shape, np.float32),
        "bias": np.zeros(128, np.float32),
    }
    path = write_keras_h5(tmp_path / "shape.h5", conv, "original_notop")
    message = f"block2_conv1/kernel: expected shape (3, 3, 64, 128), found {kernel_shape}{hint}"
    with pytest.raises(WeightsError, match=re.escape(message)):
        read_keras_h5(path)


def test_wrong_number_of_weights(tmp_path: Path, weights) -> None:
    conv = dict(weights)
    conv["block4_conv1"] = {**weights["block4_conv1"], "extra": np.zeros(3, np.float32)}
    path = write_keras_h5(tmp_path / "count.h5", conv, "keras2")
    with pytest.raises(WeightsError, match=r"layer block4_conv1 has 3 weights, expected 2"):
        read_keras_h5(path)


def test_truncated_file(tmp_path: Path, weights) -> None:
    path = write_keras_h5(tmp_path / "truncated.h5", weights, "keras2")
    with open(path, "r+b") as fh:
        fh.truncate(path.stat().st_size // 2)
    with pytest.raises(WeightsError, match=r"truncated\.h5: .*truncated or corrupt") as err:
        read_keras_h5(path)
    assert "\n" not in str(err.value)


def test_not_hdf5(tmp_path: Path) -> None:
    path = tmp_path / "weights.h5"
    path.write_text("not weights at all\n")
    with pytest.raises(WeightsError, match="is not an HDF5 file"):
        read_keras_h5(path)


def test_hdf5_without_keras_layout(tmp_path: Path) -> None:
    path = tmp_path / "other.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("x", data=np.zeros(3))
    with pytest.raises(WeightsError, match="no Keras 'layer_names' attribute"):
        read_keras_h5(path)


def test_nonexistent_path(tmp_path: Path) -> None:
    with pytest.raises(WeightsError, match=r"nope\.h5: no such file"):
        read_keras_h5(tmp_path / "nope.h5")
