"""Read VGG16's (or VGG19's) convolution weights from a Keras HDF5 file into plain numpy arrays.

Three generations of Keras wrote the same logical layout with different details, and the weights a
user has on disk may come from any of them:

* the original ``vgg16_weights_tf_dim_ordering_tf_kernels[_notop].h5`` (Keras 1): ``layer_names`` on
  the root, datasets named ``block1_conv1_W_1:0`` / ``block1_conv1_b_1:0`` inside each layer group;
* Keras 2 and Keras 3's legacy writer: weight names ``block1_conv1/kernel:0`` (the ``:0`` is absent
  in Keras 3), i.e. nested groups, plus ``backend`` and ``keras_version`` attributes;
* full-model saves, which put all of the above under a ``model_weights`` group.

Any of them may split a long name list over ``weight_names0``, ``weight_names1``, ... (HDF5 limits
an object header to 64 KB). So we never guess dataset names: we follow ``layer_names`` ->
``weight_names`` -> datasets, exactly as Keras' own loader does, and tell kernel from bias by rank.
Kernels are HWIO in Keras and in Flax alike, so they are copied as they are.
"""

from __future__ import annotations

import os
import re
from typing import Any

import h5py
import numpy as np

from vizjax.errors import WeightsError
from vizjax.models import vgg
from vizjax.models.network import Network

Params = dict[str, dict[str, np.ndarray]]


def read_keras_h5(
    path: str | os.PathLike, network: Network = vgg.NETWORK
) -> tuple[Params, dict[str, Any]]:
    """Read the conv layers of ``network`` (VGG16's 13 by default, VGG19's 16) from a Keras HDF5
    weight or model file.

    Returns ``(params, info)``: ``params[name] = {"kernel": (3, 3, Cin, Cout), "bias": (Cout,)}``
    (float32) for every convolution of ``network``, and ``info`` with ``format``,
    ``keras_version``, ``backend`` (``None`` when the file does not say) and ``skipped_layers`` (the
    non-conv layers that carry weights, e.g. ``fc1``). Every problem raises a one-line
    :class:`~vizjax.errors.WeightsError`.
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise WeightsError(f"{path}: no such file")
    if not os.path.isfile(path):
        raise WeightsError(f"{path} is not a file")
    if not h5py.is_hdf5(path):
        raise WeightsError(f"{path} is not an HDF5 file")
    try:
        with h5py.File(path, "r") as f:
            return _read(f, path, network)
    except (OSError, KeyError, RuntimeError, ValueError, TypeError) as e:
        # h5py reports a truncated or damaged file as whatever low-level error it hit first.
        msg = " ".join(str(e).split()) or type(e).__name__
        raise WeightsError(
            f"{path}: cannot read it, the file is truncated or corrupt ({msg})"
        ) from None


def _read(f: h5py.File, path: str, network: Network) -> tuple[Params, dict[str, Any]]:
    """Walk ``layer_names`` -> ``weight_names`` -> datasets of an open file."""
    if _has_list(f.attrs, "layer_names"):
        root, fmt = f, "keras_h5_weights"
    elif "model_weights" in f and _has_list(f["model_weights"].attrs, "layer_names"):
        root, fmt = f["model_weights"], "keras_h5_model"
    else:
        hint = " (a Keras 3 native .weights.h5 file?)" if "layers" in f else ""
        raise WeightsError(
            f"{path}: no Keras 'layer_names' attribute, not a Keras weight file{hint}"
        )

    shapes = network.conv_shapes()
    params: Params = {}
    skipped: list[str] = []
    with_weights: list[str] = []
    for name in _str_list(root.attrs, "layer_names"):
        if name not in root:
            raise WeightsError(f"{path}: layer_names lists {name} but the file has no such group")
        group = root[name]
        if not isinstance(group, h5py.Group):
            raise WeightsError(f"{path}: layer {name} is a {_kind(group)}, not a group")
        weight_names = _str_list(group.attrs, "weight_names")
        if not weight_names:
            continue  # input, pooling and flatten layers
        with_weights.append(name)
        if name not in shapes:
            if _CONV_NAME.fullmatch(name):  # VGG19's block3_conv4 in a VGG16 conversion, say
                other = "vgg19" if network.name == "vgg16" else "vgg16"
                raise WeightsError(
                    f"{path}: has layer {name}, which {network.name} lacks "
                    f"(a {other.upper()} file? use --model {other})"
                )
            skipped.append(name)
            continue
        arrays = []
        for wn in weight_names:
            # Relative lookup, as Keras does: "block1_conv1/kernel:0" resolves to a nested group.
            if wn not in group:
                raise WeightsError(
                    f"{path}: layer {name} lists weight {wn} but it is not in the file"
                )
            arrays.append(_weight(group[wn], f"{path}: layer {name} weight {wn}"))
        params[name] = _kernel_and_bias(name, arrays, path, shapes[name])

    missing = [name for name in network.conv_layers if name not in params]
    if missing:
        found = ", ".join(with_weights) or "no layers with weights"
        raise WeightsError(f"{path}: missing layer {missing[0]} (found: {found})")
    info = {
        "format": fmt,
        "keras_version": _attr_str(root, f, "keras_version"),
        "backend": _attr_str(root, f, "backend"),
        "skipped_layers": skipped,
    }
    return params, info


#: No VGG weight has more elements than block4/5's 3x3x512x512 kernels: a dataset declaring more
#: is refused from its header instead of being read (it could declare terabytes).
_MAX_WEIGHT_SIZE = max(int(np.prod(k)) for k, _ in vgg.CONV_SHAPES.values())
#: A VGG convolution's Keras name.
_CONV_NAME = re.compile(r"block\d+_conv\d+")


def _kind(obj: object) -> str:
    return "group" if isinstance(obj, h5py.Group) else type(obj).__name__.lower()


def _weight(obj: object, what: str) -> np.ndarray:
    """A weight dataset as float32, checked before it is read: a real-number dataset of a
    plausible size (a group, strings, compound or complex numbers are refused)."""
    if not isinstance(obj, h5py.Dataset):
        raise WeightsError(f"{what} is a {_kind(obj)}, not a dataset")
    if obj.dtype.kind not in "fiu":
        raise WeightsError(f"{what} has dtype {obj.dtype}, expected real numbers")
    if obj.size > _MAX_WEIGHT_SIZE:
        raise WeightsError(f"{what} has shape {obj.shape}, larger than any VGG16 weight")
    return np.asarray(obj[()], dtype=np.float32)


def _kernel_and_bias(
    name: str, arrays: list[np.ndarray], path: str, shapes: tuple[tuple[int, ...], ...]
) -> dict[str, np.ndarray]:
    """Pick kernel and bias by rank (order as a fallback) and check them against ``shapes``
    (the kernel's and the bias')."""
    if len(arrays) != 2:
        raise WeightsError(
            f"{path}: layer {name} has {len(arrays)} weights, expected 2 (kernel and bias)"
        )
    kernel, bias = arrays
    if kernel.ndim == 1 and bias.ndim == 4:
        kernel, bias = bias, kernel
    kshape, bshape = shapes
    for key, arr, want in (("kernel", kernel, kshape), ("bias", bias, bshape)):
        if arr.shape != want:
            hint = ""
            if key == "kernel" and sorted(arr.shape) == sorted(want):
                hint = " (a channels-first/Theano kernel? use the tf_dim_ordering file)"
            raise WeightsError(
                f"{path}: {name}/{key}: expected shape {want}, found {arr.shape}{hint}"
            )
    return {"kernel": kernel, "bias": bias}


def _has_list(attrs: h5py.AttributeManager, name: str) -> bool:
    return name in attrs or f"{name}0" in attrs


def _str_list(attrs: h5py.AttributeManager, name: str) -> list[str]:
    """A string list attribute, joined from ``name0``, ``name1``, ... when Keras had to split it."""
    if name in attrs:
        chunks = [attrs[name]]
    else:
        chunks, i = [], 0
        while f"{name}{i}" in attrs:
            chunks.append(attrs[f"{name}{i}"])
            i += 1
    return [_decode(v) for chunk in chunks for v in np.atleast_1d(chunk).ravel()]


def _attr_str(root: h5py.Group, f: h5py.File, name: str) -> str | None:
    """A scalar string attribute of the weights group, else of the file root, else None."""
    for obj in (root, f):
        if name in obj.attrs:
            return _decode(obj.attrs[name])
    return None


def _decode(value: Any) -> str:
    """h5py returns ``str``, ``bytes``/``np.bytes_`` or 0-d arrays, depending on the writer."""
    if isinstance(value, np.ndarray):
        value = value.item()
    return value.decode("utf8") if isinstance(value, bytes) else str(value)
