"""Issue 27 item 9: a JPEG's EXIF orientation is applied by every reader (training and
evaluation data, inference, the exported model's encoded-image input), as Pillow's
ImageOps.exif_transpose (and Ultralytics) do, so boxes drawn on the upright photo fit."""

import io
import json
import os

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image, ImageOps

from detbench.data import coco, images
from detbench.data.dataset import build_dataset
from detbench.protos import input_reader_pb2

# Upright: 60 wide, 40 high, a white box at x 10..30, y 5..20 on black.
W, H, BOX = 60, 40, (10, 5, 30, 20)
# The stored image of orientation o is the upright one turned by the inverse of what
# exif_transpose does for o.
STORED = {
    1: None,
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_90,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_270,
}


def _upright():
    pixels = np.zeros((H, W, 3), np.uint8)
    x0, y0, x1, y1 = BOX
    pixels[y0:y1, x0:x1] = 255
    return Image.fromarray(pixels)


def _jpeg(orientation, path=None):
    stored = (
        _upright() if STORED[orientation] is None else _upright().transpose(STORED[orientation])
    )
    exif = Image.Exif()
    exif[images.ORIENTATION_TAG] = orientation
    buffer = io.BytesIO()
    stored.save(buffer, format="JPEG", quality=95, exif=exif.tobytes())
    data = buffer.getvalue()
    if path:
        with open(path, "wb") as f:
            f.write(data)
    return data


@tf.function(input_signature=[tf.TensorSpec([], tf.string)])  # traced once for every test
def _decode_in_graph(encoded):
    return images.decode_image(encoded), images.exif_orientation(encoded)


def _box_is_white(pixels):
    x0, y0, x1, y1 = BOX
    gray = np.asarray(pixels, np.float32).mean(-1)
    assert gray.shape == (H, W)
    inside = gray[y0 + 1 : y1 - 1, x0 + 1 : x1 - 1].mean()
    outside = np.concatenate([gray[: y0 - 1].ravel(), gray[y1 + 1 :].ravel()]).mean()
    return inside > 200 and outside < 30


@pytest.mark.parametrize("orientation", range(1, 9))
def test_every_reader_turns_the_photo_upright(orientation, tmp_path):
    data = _jpeg(orientation, str(tmp_path / "p.jpg"))
    with Image.open(io.BytesIO(data)) as im:  # the reference: Pillow's exif_transpose
        assert _box_is_white(ImageOps.exif_transpose(im).convert("RGB"))
    # the graph decoder: datasets and the SavedModel's encoded-image input
    image, found = _decode_in_graph(tf.constant(data))
    assert _box_is_white(image.numpy()) and int(found) == orientation
    # inference (detbench infer) and the size the COCO reader checks and boxes against
    assert _box_is_white(images.read_rgb(str(tmp_path / "p.jpg")))
    assert coco.inspect_image(str(tmp_path / "p.jpg"), "p.jpg")[:2] == (W, H)


def test_images_without_exif_or_not_jpeg_stay_as_they_are():
    buffer = io.BytesIO()
    _upright().save(buffer, format="PNG")
    assert int(_decode_in_graph(tf.constant(buffer.getvalue()))[1]) == 1
    assert int(images.exif_orientation(tf.constant(b"\xff\xd8\xff"))) == 1  # truncated


def test_a_rotated_photo_in_a_coco_set_trains_and_evaluates_upright(tmp_path):
    image_dir = tmp_path / "images"
    os.makedirs(image_dir)
    _jpeg(6, str(image_dir / "phone.jpg"))  # stored 40 wide x 60 high, shown 60 x 40
    x0, y0, x1, y1 = BOX
    annotations = tmp_path / "instances.json"
    annotations.write_text(
        json.dumps(
            {
                "images": [{"id": 1, "file_name": "phone.jpg", "width": W, "height": H}],
                "annotations": [
                    {
                        "id": 1,
                        "image_id": 1,
                        "category_id": 1,
                        "bbox": [x0, y0, x1 - x0, y1 - y0],
                        "area": (x1 - x0) * (y1 - y0),
                        "iscrowd": 0,
                    }
                ],
                "categories": [{"id": 1, "name": "box"}],
            }
        )
    )
    reader = input_reader_pb2.InputReader()
    reader.coco_json.annotations_file = str(annotations)
    reader.coco_json.image_dir = str(image_dir)
    reader.shuffle = False
    [example] = list(build_dataset(reader, 1, training=False).take(1))
    image = example["image"][0].numpy()
    assert _box_is_white(image)
    np.testing.assert_allclose(
        example["groundtruth_boxes"][0, 0].numpy(), [y0 / H, x0 / W, y1 / H, x1 / W], atol=1e-6
    )
