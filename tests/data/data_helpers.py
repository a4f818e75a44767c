"""Helpers for the data tests: small hand-made COCO datasets on disk.

Imported as ``tests.data.data_helpers``, as the other test folders do.
"""

import json
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
from PIL import Image

from detbench.protos import input_reader_pb2


def pattern_image(height, width, seed):
    """A deterministic RGB uint8 image (PNG keeps it exactly)."""
    return np.random.default_rng(seed).integers(0, 256, size=(height, width, 3), dtype=np.uint8)


def write_coco(root, images, annotations, categories, image_format="PNG"):
    """images: list of (id, file_name, height, width); writes the files and the JSON.

    Returns (image_dir, annotations_file).
    """
    image_dir = os.path.join(root, "images")
    os.makedirs(image_dir, exist_ok=True)
    entries = []
    for image_id, file_name, height, width in images:
        Image.fromarray(pattern_image(height, width, image_id)).save(
            os.path.join(image_dir, file_name), format=image_format
        )
        entries.append({"id": image_id, "file_name": file_name, "height": height, "width": width})
    annotations_file = os.path.join(root, "instances.json")
    with open(annotations_file, "w") as f:
        json.dump({"images": entries, "annotations": annotations, "categories": categories}, f)
    return image_dir, annotations_file


def ann(ann_id, image_id, category_id, bbox, iscrowd=0):
    return {
        "id": ann_id,
        "image_id": image_id,
        "category_id": category_id,
        "bbox": bbox,
        "area": float(bbox[2] * bbox[3]),
        "iscrowd": iscrowd,
    }


# Non-contiguous category ids, listed out of order.
CATEGORIES = [{"id": 12, "name": "kite"}, {"id": 3, "name": "cat"}, {"id": 7, "name": "dog"}]


def coco_reader_config(image_dir, annotations_file, **fields):
    config = input_reader_pb2.InputReader()
    config.coco_json.image_dir = image_dir
    config.coco_json.annotations_file = annotations_file
    for key, value in fields.items():
        setattr(config, key, value)
    return config
