"""Every image mode becomes the right 8-bit RGB (issue 18, item 3): 16-bit scaled, not
clipped; palette, CMYK, alpha and grayscale to RGB; a mode without a defined range is
refused in one line. Expected pixels are computed here with numpy from the source
values, not by the code under test."""

import io

import numpy as np
import pytest
from PIL import Image

from detbench.data.errors import DataError
from detbench.data.images import decode_image, to_rgb
from detbench.infer import read_image

GRADIENT16 = np.tile(np.linspace(0, 65535, 64).round().astype(np.uint16), (8, 1))
GRAY8 = np.tile(np.arange(0, 256, 4, dtype=np.uint8), (8, 1))  # 64 wide


def _png(image):
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def _gray3(values):
    return np.repeat(values[..., None], 3, axis=-1)


def test_16bit_grayscale_is_scaled_not_clipped(tmp_path):
    path = tmp_path / "gray16.png"
    Image.fromarray(GRADIENT16).save(path)
    with Image.open(path) as im:
        assert im.mode.startswith("I")  # what a 16-bit PNG opens as
    got = read_image(str(path))  # detbench.infer's reader
    expected = _gray3(np.floor(GRADIENT16 / 257 + 0.5).astype(np.uint8))
    assert got.dtype == np.uint8 and got.shape == (8, 64, 3)
    np.testing.assert_array_equal(got, expected)
    assert got[0, 0, 0] == 0 and got[0, -1, 0] == 255 and len(np.unique(got)) > 60
    # the in-graph decoder (dataset readers, exported encoded-image inputs) agrees
    tf_got = decode_image(path.read_bytes()).numpy()
    assert np.abs(tf_got.astype(int) - expected).max() <= 1


def test_32bit_integer_pixels_of_a_16bit_range_are_scaled():
    im = Image.fromarray(GRADIENT16.astype(np.int32), mode="I")
    np.testing.assert_array_equal(
        to_rgb(im, "x"), _gray3(np.floor(GRADIENT16 / 257 + 0.5).astype(np.uint8))
    )
    with pytest.raises(DataError, match=r"x: I pixels range -5\.\.65535"):
        to_rgb(Image.fromarray(np.array([[-5, 65535]], np.int32), mode="I"), "x")


@pytest.mark.parametrize("mode", ["L", "LA", "RGBA"])
def test_grayscale_and_alpha_drop_to_rgb(mode):
    im = Image.fromarray(GRAY8).convert(mode)
    if "A" in mode:  # a varying alpha must be dropped, not blended
        im.putalpha(Image.fromarray(np.full_like(GRAY8, 7)))
    np.testing.assert_array_equal(to_rgb(im, "x"), _gray3(GRAY8))
    np.testing.assert_array_equal(decode_image(_png(im)).numpy(), _gray3(GRAY8))


def test_palette_is_looked_up():
    palette = np.zeros((256, 3), np.uint8)
    palette[:4] = [[255, 0, 0], [0, 255, 0], [0, 0, 255], [10, 20, 30]]
    indices = np.tile(np.arange(4, dtype=np.uint8), (2, 4))
    im = Image.fromarray(indices, mode="P")
    im.putpalette(palette.ravel().tolist())
    expected = palette[indices]
    np.testing.assert_array_equal(to_rgb(im, "x"), expected)
    np.testing.assert_array_equal(decode_image(_png(im)).numpy(), expected)


def test_cmyk_becomes_rgb():
    cmyk = np.zeros((4, 4, 4), np.uint8)
    cmyk[..., 0] = 200  # cyan
    cmyk[..., 3] = np.arange(0, 256, 16, dtype=np.uint8).reshape(4, 4)  # black
    im = Image.fromarray(cmyk, mode="CMYK")
    c, k = cmyk[..., 0].astype(float), cmyk[..., 3].astype(float)
    expected = np.stack([(255 - c) * (255 - k) / 255, 255 - k, 255 - k], -1)
    assert np.abs(to_rgb(im, "x").astype(float) - expected).max() <= 1


def test_float_pixels_are_refused_naming_the_image(tmp_path):
    path = tmp_path / "depth.tif"
    Image.fromarray(np.ones((4, 4), np.float32)).save(path)
    with pytest.raises(DataError) as e:
        read_image(str(path))
    assert str(e.value).startswith(f"--image {path}: image mode F is not supported")
    assert "\n" not in str(e.value)
