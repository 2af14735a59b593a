"""images: start images in (any mode, one-line refusals), PNGs and labelled grids out."""

import numpy as np
import pytest
from PIL import Image

from vizjax import images
from vizjax.errors import VizjaxError


def test_rgb_png_round_trip_and_resize(tmp_path):
    pixels = np.random.default_rng(0).integers(0, 256, (5, 7, 3), np.uint8)
    path = images.save_png(pixels, tmp_path / "sub" / "a.png")  # creates the folder
    got = images.load_image(path)
    assert got.dtype == np.float32 and got.shape == (5, 7, 3)
    np.testing.assert_array_equal(got, pixels.astype(np.float32))
    assert images.load_image(path, size=(10, 4)).shape == (10, 4, 3)  # (h, w)


def test_modes_become_8_bit_rgb(tmp_path):
    grey16 = np.array([[0, 65535, 257 * 100]], np.uint16)
    Image.fromarray(grey16).save(tmp_path / "g16.png")
    np.testing.assert_array_equal(images.load_image(tmp_path / "g16.png")[0, :, 0], [0, 255, 100])
    rgba = np.zeros((1, 2, 4), np.uint8)
    rgba[0, 0] = [10, 20, 30, 255]  # opaque
    rgba[0, 1] = [250, 0, 0, 0]  # fully transparent: its colour must not show
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    got = images.load_image(tmp_path / "a.png")
    np.testing.assert_array_equal(got[0], [[10, 20, 30], [127, 127, 127]])
    Image.fromarray(np.full((3, 3), 200, np.uint8), "L").save(tmp_path / "l.png")
    np.testing.assert_array_equal(images.load_image(tmp_path / "l.png"), np.full((3, 3, 3), 200))
    frames = [Image.new("RGB", (2, 2), c) for c in ((255, 0, 0), (0, 0, 255))]
    frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:])
    assert images.load_image(tmp_path / "anim.gif")[0, 0, 0] > 200  # the first (red) frame


def test_unusable_start_images_are_one_line(tmp_path, monkeypatch):
    (tmp_path / "text.png").write_text("hello")
    Image.fromarray(np.ones((2, 2), np.float32), "F").save(tmp_path / "f.tiff")
    Image.new("RGB", (40, 30)).save(tmp_path / "big.png")
    monkeypatch.setattr(images, "MAX_START_SIDE", 32)
    cases = {
        tmp_path / "none.png": "does not exist",
        tmp_path: "is not a file",
        tmp_path / "text.png": "is not a readable image",
        tmp_path / "f.tiff": "floating-point pixels",
        tmp_path / "big.png": "is 40x30 px; vizjax reads at most 32 px a side",
    }
    for path, message in cases.items():
        with pytest.raises(VizjaxError, match=message) as e:
            images.load_image(path)
        assert "\n" not in str(e.value)
    assert images.load_image(tmp_path / "big.png", size=(8, 8)).shape == (8, 8, 3)  # resized


def test_save_png_into_a_file_is_one_line(tmp_path):
    (tmp_path / "file").write_text("")
    with pytest.raises(VizjaxError, match="cannot write"):
        images.save_png(np.zeros((2, 2, 3), np.uint8), tmp_path / "file" / "a.png")


def test_grid_layout_by_hand():
    tiles = np.stack([np.full((4, 6, 3), v, np.uint8) for v in (10, 20, 30)])
    out = images.grid(tiles, cols=2, pad=1, background=255)
    assert out.shape == (2 * (4 + 1) + 1, 2 * (6 + 1) + 1, 3)  # 2 rows, 2 columns
    assert (out[1:5, 1:7] == 10).all() and (out[1:5, 8:14] == 20).all()
    assert (out[6:10, 1:7] == 30).all() and (out[6:10, 8:14] == 255).all()  # an empty slot
    assert (out[0] == 255).all() and (out[:, 7] == 255).all()  # padding
    assert images.grid(tiles).shape == (2 * 6 + 2, 2 * 8 + 2, 3)  # default ~sqrt(3) = 2 columns
    assert images.grid(tiles, cols=10).shape[1] == 3 * 8 + 2  # never more columns than tiles
    labelled = images.grid(tiles, labels=["a", "b", "c"], cols=3, pad=2)
    assert labelled.shape == (4 + images.LABEL_H + 2 + 2, 3 * 8 + 2, 3)
    strip = labelled[2 + 4 : 2 + 4 + images.LABEL_H, 2 : 2 + 6]
    assert (strip < 128).any()  # the label's dark text
    with pytest.raises(VizjaxError, match="no images"):
        images.grid(np.zeros((0, 4, 4, 3), np.uint8))


def test_the_shipped_cat():
    cat = images.load_image(images.sample_path())
    assert cat.shape == (300, 451, 3)  # scikit-image's chelsea.png


def test_pictures_of_other_channel_counts(tmp_path):
    """One place turns a model's D channels into a picture: 1 gray, 2 the gray mean, 3 RGB, more
    the first three; PNGs and grids of grayscale pictures are mode L."""
    rng = np.random.default_rng(0)
    one = rng.integers(0, 256, (4, 5, 1), np.uint8)
    two = np.stack([np.full((4, 5), 10, np.uint8), np.full((4, 5), 21, np.uint8)], axis=-1)
    four = rng.integers(0, 256, (4, 5, 4), np.uint8)
    np.testing.assert_array_equal(images.picture(one), one[..., 0])
    np.testing.assert_array_equal(images.picture(two), np.full((4, 5), 16, np.uint8))  # 15.5
    np.testing.assert_array_equal(images.picture(four), four[..., :3])
    np.testing.assert_array_equal(images.picture(four[..., :3]), four[..., :3])
    assert images.picture(np.stack([one, one])).shape == (2, 4, 5)  # a batch of pictures
    assert [images.view(d) for d in (1, 3)] == ["grayscale", "RGB"]
    assert "mean" in images.view(2) and "0, 1, 2 of 4" in images.view(4)
    with Image.open(images.save_png(one, tmp_path / "one.png")) as im:
        assert im.mode == "L" and im.size == (5, 4)
    with Image.open(images.save_png(four, tmp_path / "four.png")) as im:
        assert im.mode == "RGB"
    tiles = images.grid(np.stack([one, one, one]), labels=["0", "1", "2"])
    assert tiles.ndim == 2  # grayscale, labels drawn in black
    with Image.open(images.save_png(tiles, tmp_path / "grid.png")) as im:
        assert im.mode == "L"
    assert images.grid(np.stack([four, four])).shape[-1] == 3


def test_squares_and_start_images_for_a_grayscale_model(tmp_path):
    rgb = np.zeros((6, 8, 3), np.uint8)
    rgb[..., 1] = 200  # green: luminance 0.587 * 200
    Image.fromarray(rgb).save(tmp_path / "g.png")
    square = images.load_square(tmp_path / "g.png", 4, channels=1)
    assert square.shape == (4, 4, 1) and abs(int(square[0, 0, 0]) - 117) <= 1
    start = images.load_image(tmp_path / "g.png", channels=1)
    assert start.shape == (6, 8, 1) and abs(float(start[0, 0, 0]) - 117) <= 1
