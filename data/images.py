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
    from PIL import ImageOps

    try:
        with Image.open(path) as image:
            upright = ImageOps.exif_transpose(image) if image.format == "JPEG" else image
            return to_rgb(upright, name)
    except FileNotFoundError:
        raise DataError(f"{name}: no such file") from None
    except (UnidentifiedImageError, OSError) as e:
        raise DataError(f"{name}: not a readable image ({e})") from None


def decode_image(encoded):
    """Encoded bytes (JPEG, PNG, BMP, GIF; a string tensor) -> uint8 [H, W, 3] tensor,
    turned upright by the JPEG's EXIF orientation (as ``read_rgb`` does)."""
    import tensorflow as tf

    image = tf.io.decode_image(encoded, channels=3, expand_animations=False)
    image = apply_orientation(image, exif_orientation(encoded))
    image.set_shape([None, None, 3])
    return image


# EXIF orientation: photos are stored as the sensor saw them and a tag says how to turn
# them upright; labelling tools show (and box) them upright, so every reader here does
# too (Pillow's ImageOps.exif_transpose; TensorFlow's decoders ignore the tag).
ORIENTATION_TAG = 0x0112
ROTATED_ORIENTATIONS = (5, 6, 7, 8)  # width and height swap
_EXIF_HEAD_BYTES = 4096  # where a JPEG keeps its EXIF orientation (IFD0, near the start)
_EXIF_SEGMENTS = 4  # APP segments looked through (APP0 JFIF, APP1 Exif, ...)
_EXIF_ENTRIES = 32  # IFD0 entries looked through


def oriented_size(width, height, orientation):
    """(width, height) of the upright image."""
    return (height, width) if orientation in ROTATED_ORIENTATIONS else (width, height)


def exif_orientation(encoded):
    """The EXIF orientation (1..8; 1: none or no EXIF) of an encoded image, in the graph
    (a SavedModel's encoded-image input has no Python): the APP1 'Exif' segment among
    the first few, its TIFF header's byte order, IFD0's tag 0x0112."""
    import tensorflow as tf

    n = _EXIF_HEAD_BYTES
    padded = tf.strings.join([tf.strings.substr(encoded, 0, n), tf.constant(b"\0" * n)])
    head = tf.cast(tf.io.decode_raw(tf.strings.substr(padded, 0, n), tf.uint8), tf.int32)

    def byte(i):
        return tf.gather(head, tf.clip_by_value(i, 0, n - 1))

    def u16(i, little):
        return tf.where(little, byte(i) + 256 * byte(i + 1), 256 * byte(i) + byte(i + 1))

    def u32(i, little):
        return tf.where(
            little,
            u16(i, little) + 65536 * u16(i + 2, little),
            65536 * u16(i, little) + u16(i + 2, little),
        )

    big = tf.constant(False)
    is_jpeg = tf.logical_and(tf.equal(byte(0), 0xFF), tf.equal(byte(1), 0xD8))
    position, tiff = tf.constant(2), tf.constant(-1)
    exif = tf.constant([ord(c) for c in "Exif"] + [0, 0])
    for _ in range(_EXIF_SEGMENTS):
        marker = tf.logical_and(tf.equal(byte(position), 0xFF), tf.equal(byte(position + 1), 0xE1))
        named = tf.reduce_all(tf.equal(byte(position + 4 + tf.range(6)), exif))
        found = tf.logical_and(tf.less(tiff, 0), tf.logical_and(marker, named))
        tiff = tf.where(found, position + 10, tiff)
        position = position + 2 + u16(position + 2, big)
    little = tf.equal(byte(tiff), ord("I"))
    ifd = tiff + u32(tiff + 4, little)
    entries = ifd + 2 + 12 * tf.range(_EXIF_ENTRIES)
    tags = u16(entries, little)
    match = tf.logical_and(
        tf.less(tf.range(_EXIF_ENTRIES), u16(ifd, little)), tf.equal(tags, ORIENTATION_TAG)
    )
    values = u16(entries + 8, little)
    value = tf.reduce_max(tf.where(match, values, 0))
    ok = tf.logical_and(is_jpeg, tf.greater_equal(tiff, 0))
    ok = tf.logical_and(ok, tf.logical_and(tf.greater_equal(value, 1), tf.less_equal(value, 8)))
    return tf.where(ok, value, 1)


def apply_orientation(image, orientation):
    """[H, W, C] stored -> upright, for EXIF orientation 1..8 (Pillow's exif_transpose)."""
    import tensorflow as tf

    branches = [
        lambda: image,
        lambda: tf.image.flip_left_right(image),
        lambda: tf.image.rot90(image, 2),
        lambda: tf.image.flip_up_down(image),
        lambda: tf.image.transpose(image),
        lambda: tf.image.rot90(image, 3),
        lambda: tf.image.rot90(tf.image.transpose(image), 2),
        lambda: tf.image.rot90(image, 1),
    ]
    return tf.switch_case(tf.cast(orientation, tf.int32) - 1, branches)
