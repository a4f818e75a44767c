"""Decoding an image to the models' input, 8-bit RGB, from any pixel mode; one place.

Two decoders, the same conversions:

- ``decode_image`` (TensorFlow, in the graph): the dataset readers and the
  exported SavedModel's encoded-image inputs. ``tf.io.decode_image`` with
  ``channels=3`` scales 16-bit PNGs to 8 bits (not clipping them), expands
  palettes, drops alpha and turns grayscale and CMYK JPEGs into RGB.
- ``to_rgb`` (PIL, in Python): images read from a file by a command
  (``detbench.infer``). PIL's own ``convert("RGB")`` clips 16-bit grayscale to
  255 (a 0..65535 gradient becomes white), so 16- and 32-bit integer pixels are
  scaled by 255/65535 here; float pixels, whose range no file records, are refused.
"""

import numpy as np

from detbench.data.errors import DataError
from detbench.paths import MAX_IMAGE_BYTES, check_input_file

# PIL modes whose convert("RGB") is right: palette expanded, alpha dropped (as
# TensorFlow does), grayscale replicated, CMYK / YCbCr converted.
_CONVERT = ("RGB", "RGBA", "RGBX", "RGBa", "L", "LA", "La", "P", "PA", "1", "CMYK", "YCbCr")
# integer modes of 16-bit files: 0..65535 -> 0..255
_SIXTEEN_BIT = ("I;16", "I;16L", "I;16B", "I;16N", "I")


def _converted(image, name):
    return np.asarray(image.convert("RGB"))


def _scaled_16bit(image, name):
    pixels = np.asarray(image).astype(np.int64)
    if pixels.size and (pixels.min() < 0 or pixels.max() > 65535):
        raise DataError(
            f"{name}: {image.mode} pixels range {pixels.min()}..{pixels.max()}, "
            "outside the 16-bit 0..65535 this reader scales to 8 bits"
        )
    gray = ((pixels * 255 + 32767) // 65535).astype(np.uint8)  # round(x / 257)
    return np.repeat(gray[..., np.newaxis], 3, axis=-1)


MODES = {**{m: _converted for m in _CONVERT}, **{m: _scaled_16bit for m in _SIXTEEN_BIT}}


def to_rgb(image, name):
    """A PIL image -> uint8 [H, W, 3]; DataError naming ``name`` for a mode with no
    defined conversion (e.g. 'F', 32-bit float)."""
    convert = MODES.get(image.mode)
    if convert is None:
        raise DataError(
            f"{name}: image mode {image.mode} is not supported (no defined range "
            f"or colour conversion); supported: {', '.join(MODES)}"
        )
    return convert(image, name)


def read_rgb(path, name=None):
    """The image file at ``path`` as uint8 [H, W, 3]; DataError naming it if unreadable."""
    from PIL import Image, UnidentifiedImageError

    name = name or str(path)
    check_input_file(path, "", MAX_IMAGE_BYTES, error=DataError, name=name)
    try:
        with Image.open(path) as image:
            return to_rgb(image, name)
    except FileNotFoundError:
        raise DataError(f"{name}: no such file") from None
    except (UnidentifiedImageError, OSError) as e:
        raise DataError(f"{name}: not a readable image ({e})") from None


def decode_image(encoded):
    """Encoded bytes (JPEG, PNG, BMP, GIF; a string tensor) -> uint8 [H, W, 3] tensor."""
    import tensorflow as tf

    image = tf.io.decode_image(encoded, channels=3, expand_animations=False)
    image.set_shape([None, None, 3])
    return image
