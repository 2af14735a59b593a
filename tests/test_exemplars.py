"""Dataset examples: receptive fields against a brute-force check, the top-k bookkeeping, a scan
of a folder with a known winner and bad files, and resume after kill -9."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import tiny_network
from brute_force import assert_fields_match
from PIL import Image

from vizjax import images
from vizjax.analysis import exemplars
from vizjax.atlas import data_dir
from vizjax.models import vgg


def random_params(seed: int = 0) -> dict:
    """VGG16's shapes with random weights (see ``tiny_network.params``)."""
    return {"params": tiny_network.params(seed, vgg.WIDTHS)}


# ---------------------------------------------------------------------------------------------
# Receptive fields.


def test_receptive_field_matches_brute_force_for_every_layer():
    """Perturb one input pixel; the units that change must be exactly those whose computed field
    holds the pixel, for every layer (pools included).

    To see every dependence (a ReLU or a max could hide one), the random VGG16 gets non-negative
    kernels, zero biases and no preprocessing, and the input is all zeros but one pixel: then every
    unit that depends on the pixel is > 0 and every other one is exactly 0. At 128 px even
    block5_pool's field (212 px) covers only part of the grid, so size, jump and offset all show.
    """
    size = 128
    params = jax.tree.map(np.abs, random_params(seed=1))  # biases are zero
    model = vgg.VGG16(preprocessing=vgg.IDENTITY)
    pixels = [(0, 0), (size - 1, size - 1), (45, 90)]
    x = np.zeros((len(pixels), size, size, 3), np.float32)
    for b, (py, px) in enumerate(pixels):
        x[b, py, px] = 1.0
    # One forward to the last layer, keeping every convolution's output; each pool's output is the
    # model's own pool applied to the convolution before it.
    last, state = model.apply(params, x, "block5_pool", capture_intermediates=True)
    outputs, prev = {}, None
    for layer, kind, *_ in vgg.LAYERS:
        if kind == "conv":
            prev = state["intermediates"][layer]["__call__"][0]
        else:
            prev = vgg.max_pool2x2(prev)
        outputs[layer] = prev
    np.testing.assert_array_equal(outputs["block5_pool"], last)
    assert_fields_match(vgg.NETWORK, outputs, pixels, size)
    # The well-known VGG16 figures, as a readable cross-check.
    assert vgg.receptive_field("block1_conv1") == vgg.ReceptiveField(3, 1, -1)
    assert vgg.receptive_field("block3_conv3").size == 40
    assert vgg.receptive_field("block5_pool") == vgg.ReceptiveField(212, 32, -90)


def test_box_is_clipped_to_the_square():
    rf = vgg.receptive_field("block2_conv2")  # size 14, jump 2, offset -6
    assert rf.box(0, 0, 32) == (0, 0, 8, 8)
    assert rf.box(5, 3, 32) == (4, 0, 18, 14)
    assert rf.box(15, 15, 32) == (24, 24, 32, 32)


# ---------------------------------------------------------------------------------------------
# Top-k.


def test_topk_does_not_depend_on_how_the_stream_is_cut_and_ties_go_to_the_earlier_image():
    rng = np.random.default_rng(0)
    n, c, top = 50, 6, 4
    act = rng.integers(0, 5, (n, c)).astype(np.float32)  # many ties
    pos = rng.integers(0, 9, (n, c, 2)).astype(np.int32)
    results = []
    for cut in (1, 7, 50):
        t = exemplars.TopK.empty(c, top)
        for i in range(0, n, cut):
            t.update(act[i : i + cut], np.arange(i, min(i + cut, n)), pos[i : i + cut])
        results.append(t)
    for t in results[1:]:
        np.testing.assert_array_equal(t.index, results[0].index)
        np.testing.assert_array_equal(t.position, results[0].position)
    t = results[0]
    for ch in range(c):
        expected = sorted(range(n), key=lambda i: (-act[i, ch], i))[:top]
        assert t.index[ch].tolist() == expected
        np.testing.assert_array_equal(t.activation[ch], act[expected, ch])
        np.testing.assert_array_equal(t.position[ch], pos[expected, ch])


def test_topk_with_fewer_images_than_top_keeps_empty_slots():
    t = exemplars.TopK.empty(2, 3)
    t.update(np.asarray([[1.0, 2.0]]), np.asarray([4]), np.zeros((1, 2, 2), np.int32))
    assert t.index.tolist() == [[4, -1, -1], [4, -1, -1]]
    assert np.isneginf(t.activation[:, 1:]).all()


# ---------------------------------------------------------------------------------------------
# Reading a folder.


def test_load_square_resizes_the_short_side_and_cuts_the_centre(tmp_path):
    im = np.zeros((40, 100, 3), np.uint8)
    im[:, 30:70] = 255  # a white band in the middle 40 columns: exactly the centre square
    Image.fromarray(im).save(tmp_path / "wide.png")
    sq = images.load_square(tmp_path / "wide.png", 20)
    assert sq.shape == (20, 20, 3) and sq.dtype == np.uint8
    assert sq[:, 1:-1].min() == 255  # bilinear may soften the outermost columns only
    # 16-bit greys are scaled, not clipped; transparent pixels become grey; big JPEGs decode
    # at a reduced scale first (same result up to rounding).
    Image.fromarray(np.full((24, 24), 51400, np.uint16)).save(tmp_path / "g16.png")
    assert images.load_square(tmp_path / "g16.png", 16).max() == 200
    Image.fromarray(np.zeros((24, 24, 4), np.uint8)).save(tmp_path / "clear.png")
    assert (images.load_square(tmp_path / "clear.png", 16) == 127).all()
    Image.fromarray(np.full((1200, 1600, 3), (200, 40, 90), np.uint8)).save(tmp_path / "big.jpg")
    big = images.load_square(tmp_path / "big.jpg", 32).astype(int)
    assert big.shape == (32, 32, 3) and np.abs(big - (200, 40, 90)).max() <= 3


def _colour_filter(weights):
    """The block1_conv1 filter whose best flat colour comes nearest its best possible input.

    Returns ``(filter, colour)``: ``colour`` (3,) in {0, 255} maximizes the filter's response to a
    flat image (sign of its kernel summed over space, per input channel: the preprocessing is
    increasing in every channel). For the chosen filter the flat colour reaches ~93% of the largest
    response any 3x3 patch can give, so no image can beat it by much, and the margin to the next
    corner colour is large.
    """
    k = np.asarray(weights.params["params"]["block1_conv1"]["kernel"], np.float64)  # (3,3,3,64)
    b = np.asarray(weights.params["params"]["block1_conv1"]["bias"], np.float64)
    # torchvision's preprocessing, typed in (the formulas below assume it): RGB / 255, then these.
    mean, std = np.asarray([0.485, 0.456, 0.406]), np.asarray([0.229, 0.224, 0.225])
    p = weights.preprocessing
    assert (p.name, p.bgr, p.scale, p.mean, p.std) == ("torch", False, 255.0, (*mean,), (*std,))
    corners = np.asarray([[r, g, bl] for r in (0, 255) for g in (0, 255) for bl in (0, 255)])
    flat = ((corners / 255 - mean) / std) @ k.sum((0, 1)) + b  # (8, 64): interior response
    best_patch = (
        (np.maximum(k, 0) / std[:, None]).sum((0, 1, 2)) + (-mean / std) @ k.sum((0, 1)) + b
    )
    top2 = np.sort(flat, axis=0)[-2:]
    score = top2[1] / best_patch * (top2[1] - top2[0]) / np.abs(top2[1])
    f = int(np.argmax(score))
    assert top2[1, f] / best_patch[f] > 0.9
    return f, corners[int(np.argmax(flat[:, f]))]


def _write_folder(root, weights, n_noise=6):
    """Flat images of all 8 RGB corner colours, noise, stripes, an unreadable PNG and a text file."""
    f, colour = _colour_filter(weights)
    rng = np.random.default_rng(0)
    (root / "sub").mkdir(parents=True)
    names = {}
    for i, r in enumerate((0, 255)):
        for j, g in enumerate((0, 255)):
            for k, bl in enumerate((0, 255)):
                name = f"flat_{i}{j}{k}.png"
                Image.fromarray(np.full((36, 48, 3), (r, g, bl), np.uint8)).save(root / name)
                names[(r, g, bl)] = name
    for i in range(n_noise):
        noise = rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)
        Image.fromarray(noise).save(root / "sub" / f"noise_{i}.jpg", quality=95)
    stripes = np.zeros((32, 32, 3), np.uint8)
    stripes[:, ::2] = 255
    Image.fromarray(stripes).save(root / "stripes.png")
    (root / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 40)  # a PNG header, no image
    (root / "notes.txt").write_text("not an image\n")
    return f, names[tuple(int(v) for v in colour)]


def test_scan_ranks_the_known_image_first_and_counts_bad_files(tmp_path, default_weights):
    f, known = _write_folder(tmp_path / "imgs", default_weights)
    w = default_weights
    layers = ["block1_conv1", "block2_conv1"]
    res = exemplars.scan(
        tmp_path / "imgs", layers, w.params, w.preprocessing, top=3, batch=3, input_size=32
    )
    assert len(res.listing) == 8 + 6 + 1 + 2
    assert res.n_skipped == 2 and res.n_images == len(res.listing) - 2
    t = res.top["block1_conv1"]
    assert t.index.shape == (64, 3) and res.top["block2_conv1"].index.shape == (128, 3)
    assert res.listing.paths[t.index[f, 0]] == known
    assert t.activation[f, 0] > t.activation[f, 1] > 0
    bad = {res.listing.paths.index("broken.png"), res.listing.paths.index("notes.txt")}
    assert not bad & set(res.top["block2_conv1"].index.ravel().tolist())

    arrays = exemplars.cut_crops(res, crop_size=16)
    a = arrays["block1_conv1"]
    assert a["paths"][f, 0] == known
    assert a["crops"].shape == (64, 3, 16, 16, 3) and a["crops"].dtype == np.uint8
    colour = np.asarray(Image.open(tmp_path / "imgs" / known))[0, 0]
    assert (a["crops"][f, 0] == colour).all()  # a crop of a flat image is that colour
    rf = vgg.receptive_field("block2_conv1")
    b = arrays["block2_conv1"]
    for ch, r in [(0, 0), (5, 2), (127, 1)]:
        y, x = b["position"][ch, r]
        assert tuple(b["box"][ch, r]) == rf.box(int(y), int(x), 32)
        assert 0 <= y < 16 and 0 <= x < 16  # block2's grid at 32 px


def test_scan_of_a_folder_with_fewer_images_than_top(tmp_path):
    (tmp_path / "one").mkdir()
    Image.fromarray(np.full((32, 32, 3), 90, np.uint8)).save(tmp_path / "one" / "a.png")
    res = exemplars.scan(
        tmp_path / "one", ["block1_conv1"], random_params(), vgg.IDENTITY, top=2, input_size=32
    )
    arrays = exemplars.cut_crops(res, crop_size=8)["block1_conv1"]
    assert arrays["paths"][:, 0].tolist() == ["a.png"] * 64
    assert arrays["paths"][:, 1].tolist() == [""] * 64
    assert np.isnan(arrays["activation"][:, 1]).all()


def test_missing_folder_is_one_clear_error(tmp_path):
    with pytest.raises(exemplars.VizjaxError, match="does not exist"):
        exemplars.scan(tmp_path / "nope", ["block1_conv1"], random_params(), vgg.IDENTITY)


# ---------------------------------------------------------------------------------------------
# Resume after kill -9.

_SCAN = textwrap.dedent(
    """
    import sys
    from vizjax.analysis import exemplars
    from vizjax.models import vgg
    from test_exemplars import random_params
    res = exemplars.scan(sys.argv[1], ["block1_conv2", "block3_conv1"], random_params(seed=3),
                         vgg.IDENTITY, top=4, batch=4, input_size=32, state_path=sys.argv[2])
    """
)


def _random_folder(root, n):
    rng = np.random.default_rng(1)
    root.mkdir()
    for i in range(n):
        h, w = rng.integers(32, 64, 2)
        im = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        Image.fromarray(im).save(root / f"{i:04d}.png", compress_level=0)


# Slow (scripts/test.sh --all, CI): the scan's resume after a kill; the default run keeps the
# atlas' and the CLI run's kill -9 tests (tests/test_atlas_crash.py, tests/test_faults.py).
@pytest.mark.slow
def test_scan_killed_after_a_committed_batch_resumes_to_the_uninterrupted_result(tmp_path):
    n = 100
    _random_folder(tmp_path / "imgs", n)
    state = tmp_path / "state.npz"
    # conftest's 4 CPU devices are inherited: batch 4 is one image per device, as in-process below.
    env = {**os.environ, "PYTHONPATH": os.path.dirname(__file__)}  # to import random_params
    proc = subprocess.Popen(
        [sys.executable, "-c", _SCAN, str(tmp_path / "imgs"), str(state)], env=env
    )
    try:
        deadline = time.monotonic() + 120
        while not state.exists():
            assert proc.poll() is None, "the scan finished before it could be killed"
            assert time.monotonic() < deadline
            time.sleep(0.005)
        proc.send_signal(signal.SIGSTOP)  # freeze it, then check it is mid-way
        with np.load(state) as z:
            committed = int(z["counts"][0])
        assert 0 < committed < n, committed
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    finally:
        proc.kill()
    assert proc.returncode == -signal.SIGKILL

    layers = ["block1_conv2", "block3_conv1"]
    args = (layers, random_params(seed=3), vgg.IDENTITY)
    kw = dict(top=4, batch=4, input_size=32)
    resumed = exemplars.scan(tmp_path / "imgs", *args, state_path=state, **kw)
    assert resumed.resumed_from >= committed > 0
    ref = exemplars.scan(tmp_path / "imgs", *args, **kw)
    assert ref.resumed_from == 0 and resumed.n_images == ref.n_images == n
    for layer in layers:
        a, b = resumed.top[layer], ref.top[layer]
        np.testing.assert_array_equal(a.index, b.index)
        np.testing.assert_array_equal(a.activation, b.activation)
        np.testing.assert_array_equal(a.position, b.position)
    # A checkpoint of another scan (here: another top) is not resumed.
    other = exemplars.scan(tmp_path / "imgs", *args, state_path=state, **{**kw, "top": 2})
    assert other.resumed_from == 0
    with np.load(state) as z:
        assert json.loads(str(z["identity"]))["top"] == 2


def test_compiled_forward_is_sharded_over_the_devices():
    from vizjax.engine import ascent

    mesh = ascent.local_mesh()
    fn = ascent.compiled_forward(("block1_conv1",), vgg.IDENTITY, mesh)
    x = np.zeros((2 * mesh.devices.size, 16, 16, 3), np.uint8)
    mean, flat = fn(random_params(), x)["block1_conv1"]
    assert mean.shape == (2 * mesh.devices.size, 64) and flat.dtype == jnp.int32
    assert len(mean.sharding.device_set) == jax.device_count() == 4


# ---------------------------------------------------------------------------------------------
# The command: into an atlas, with the atlas' weights.


def _atlas_for(path, weights, sha=None, name=None):
    """An atlas with block1_conv1 and block2_conv1 rows, made with ``weights`` (or claiming to be)."""
    import dataclasses

    from vizjax.atlas import AtlasWriter

    attrs = {
        "model": "vgg16",
        "weights": name or weights.name,
        "weights_sha256": sha or weights.source_sha256,
        "preprocessing": json.dumps(dataclasses.asdict(weights.preprocessing), sort_keys=True),
    }
    with AtlasWriter(path, attrs, {"steps": 1}) as w:
        for layer in ("block1_conv1", "block2_conv1"):
            w.begin_layer(layer, vgg.num_channels(layer), [0, 1], (8, 8), 1)
            w.write_chunk(layer, {"filters": np.array([0, 1])})
    return path


def test_exemplars_command_stores_them_in_the_atlas(tmp_path, default_weights, capsys):
    from vizjax.atlas import open_atlas, sidecar_path
    from vizjax.cli import main

    f, known = _write_folder(tmp_path / "imgs", default_weights)
    atlas = _atlas_for(tmp_path / "a.h5", default_weights)
    argv = ["exemplars", str(atlas), "--images", str(tmp_path / "imgs"), "--input-size", "32"]
    assert main([*argv, "--top", "4", "--crop-size", "12", "--layer", "block1_conv1"]) == 0
    assert "15 images read, 2 files skipped" in capsys.readouterr().out
    with open_atlas(atlas) as a:
        layer = a.layers["block1_conv1"]
        ex = layer.exemplars(f)
        assert ex["paths"][0] == known and len(ex["paths"]) == 4
        assert ex["crops"].shape == (4, 12, 12, 3)
        assert np.all(np.diff(ex["activation"]) <= 0)  # descending
        attrs = layer.exemplar_attrs
        assert attrs["n_images"] == 15 and attrs["n_skipped"] == 2 and attrs["top"] == 4
        assert attrs["receptive_field"] == 3 and attrs["input_size"] == 32
        assert attrs["listing_sha256"] == images.list_images(tmp_path / "imgs").sha256
        assert a.layers["block2_conv1"].exemplars(0) is None  # not asked for
    assert not sidecar_path(atlas, "exemplars.state.npz").exists()  # done: no state left
    # The same command again has nothing to do; a changed folder is scanned again.
    assert main([*argv, "--top", "4", "--crop-size", "12", "--layer", "block1_conv1"]) == 0
    assert "up to date" in capsys.readouterr().out
    (tmp_path / "imgs" / "new.png").write_bytes((tmp_path / "imgs" / known).read_bytes())
    assert main([*argv, "--top", "4", "--crop-size", "12", "--layer", "block1_conv1"]) == 0
    assert "16 images read" in capsys.readouterr().out
    # The default is every layer of the atlas.
    assert main([*argv, "--top", "2", "--crop-size", "8", "--quiet"]) == 0
    with open_atlas(atlas) as a:
        assert a.layers["block2_conv1"].exemplar_attrs["top"] == 2


def test_exemplars_command_refuses_with_one_line(tmp_path, default_weights, capsys):
    from vizjax.cli import main

    (tmp_path / "imgs").mkdir()
    foreign = _atlas_for(tmp_path / "foreign.h5", default_weights, sha="ab" * 32)
    unknown = _atlas_for(tmp_path / "unknown.h5", default_weights, name="no-such-weights")
    ok = _atlas_for(tmp_path / "ok.h5", default_weights)
    imgs = ["--images", str(tmp_path / "imgs"), "--quiet"]
    for argv, expected in [
        (["exemplars", str(foreign), *imgs], "are not the ones the atlas was made with"),
        (["exemplars", str(unknown), *imgs], "weights 'no-such-weights' are not available here"),
        (["exemplars", str(ok), *imgs, "--layer", "block3_conv1"], "has no layer 'block3_conv1'"),
        (["exemplars", str(ok), "--images", str(tmp_path / "none")], "does not exist"),
        (["exemplars", str(tmp_path / "no.h5"), *imgs], "no atlas at"),
        (["exemplars", str(ok), *imgs, "--top", "0"], "must be positive"),
    ]:
        assert main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("vizjax: ") and "\n" not in err and expected in err, err


def test_exemplars_of_an_atlas_made_without_preprocessing_run_the_network_without_it(
    tmp_path, default_weights, capsys
):
    """``--no-preprocess`` is part of the run: the dataset examples see the network as the
    atlas' images did (issue 17: they were computed with the weights' preprocessing on)."""
    import h5py

    from vizjax.atlas import open_atlas
    from vizjax.cli import main

    atlas = tmp_path / "raw.h5"
    run = ["atlas", "--recipe", "classic", "--layer", "block1_conv1", "--filters", "0:2"]
    run += ["--size", "32", "--steps", "1", "--no-preprocess", "--out", str(atlas), "--quiet"]
    assert main(run) == 0
    _random_folder(tmp_path / "imgs", 3)
    argv = ["exemplars", str(atlas), "--images", str(tmp_path / "imgs"), "--input-size", "32"]
    assert main([*argv, "--top", "3", "--crop-size", "8", "--quiet"]) == 0

    squares = np.stack(
        [images.load_square(p, 32) for p in sorted((tmp_path / "imgs").iterdir())]
    ).astype(np.float32)

    def means(prep):
        a = vgg.VGG16(preprocessing=prep).apply(default_weights.params, squares, "block1_conv1")
        return np.sort(np.asarray(a).mean(axis=(1, 2)), axis=0)[::-1].T  # (C, 3) best first

    with open_atlas(atlas) as a:
        layer = a.layers["block1_conv1"]
        stored = np.stack([layer.exemplars(c)["activation"] for c in range(64)])
        prep = json.loads(layer.exemplar_attrs["preprocessing"])
    np.testing.assert_allclose(stored, means(vgg.IDENTITY), rtol=1e-4, atol=1e-4)
    assert prep["name"] == "none"
    # The check can fail: with the preprocessing the numbers are far apart.
    assert not np.allclose(stored, means(default_weights.preprocessing), rtol=1e-2)
    # Exemplars an earlier version stored with the preprocessing on are not "up to date".
    assert main([*argv, "--top", "3", "--crop-size", "8"]) == 0
    assert "up to date" in capsys.readouterr().out
    with h5py.File(data_dir(atlas) / "exemplars.block1_conv1.h5", "r+") as f:
        f.attrs["preprocessing"] = default_weights.preprocessing.to_json()
    assert main([*argv, "--top", "3", "--crop-size", "8"]) == 0
    assert "up to date" not in capsys.readouterr().out
    with open_atlas(atlas) as a:
        assert json.loads(a.layers["block1_conv1"].exemplar_attrs["preprocessing"]) == prep
