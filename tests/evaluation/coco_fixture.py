"""A tiny COCO-style set on disk (JPEG images + instances json) and a fixed-output model."""

import json
import os

import numpy as np
import tensorflow as tf
from PIL import Image

from detbench.meta_arch.base import DetectionModel

# (width, height, boxes [x, y, w, h, category_id]); category ids 5 and 9 -> labels 1 and 2
IMAGES = [
    (60, 40, [[15, 10, 30, 20, 5]]),  # exactly the fixed detection
    (80, 80, [[0, 0, 10, 10, 9]]),  # elsewhere, another class
    (40, 60, [[10, 15, 20, 30, 5], [0, 0, 8, 8, 9]]),  # the fixed detection + a missed box
]
FIXED_BOX = [0.25, 0.25, 0.75, 0.75]  # normalized (ymin, xmin, ymax, xmax)


def write_coco_set(folder):
    image_dir = os.path.join(folder, "images")
    os.makedirs(image_dir, exist_ok=True)
    images, annotations = [], []
    rng = np.random.default_rng(0)
    for i, (w, h, boxes) in enumerate(IMAGES):
        name = f"{i}.jpg"
        Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(
            os.path.join(image_dir, name)
        )
        images.append({"id": 10 + i, "file_name": name, "width": w, "height": h})
        for x, y, bw, bh, cat in boxes:
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": 10 + i,
                    "category_id": cat,
                    "bbox": [x, y, bw, bh],
                    "area": bw * bh,
                    "iscrowd": 0,
                }
            )
    path = os.path.join(folder, "instances.json")
    with open(path, "w") as f:
        json.dump(
            {
                "images": images,
                "annotations": annotations,
                "categories": [{"id": 5, "name": "five"}, {"id": 9, "name": "nine"}],
            },
            f,
        )
    return image_dir, path


def set_eval_reader(pipeline, image_dir, annotations_file):
    reader = pipeline.eval_input_reader
    reader.coco_json.image_dir = image_dir
    reader.coco_json.annotations_file = annotations_file
    reader.shuffle = False
    reader.max_num_boxes = 4
    return pipeline


class FixedBoxModel(DetectionModel):
    """Always detects FIXED_BOX as label 1 (score 0.9); one trainable scalar."""

    def __init__(self, num_classes=2, is_training=False):
        super().__init__(num_classes, is_training)
        self.scale = self.add_weight(name="scale", shape=[], initializer="ones")

    @classmethod
    def from_config(cls, config, is_training=True):
        return cls(is_training=is_training)

    def preprocess(self, images):
        images = tf.image.resize(tf.cast(images, tf.float32), [32, 32])
        true_shapes = tf.tile(tf.constant([[32, 32, 3]], tf.int32), [tf.shape(images)[0], 1])
        return images, true_shapes

    def predict(self, inputs, true_shapes, training=False, groundtruth=None):
        batch = tf.shape(inputs)[0]
        return {"boxes": tf.tile(tf.constant([[FIXED_BOX]]), [batch, 1, 1]) * self.scale}

    def loss(self, predictions, groundtruth):
        return {"zero": tf.reduce_sum(predictions["boxes"]) * 0.0}

    def postprocess(self, predictions, true_shapes):
        batch = tf.shape(predictions["boxes"])[0]
        return {
            "detection_boxes": predictions["boxes"],
            "detection_scores": tf.fill([batch, 1], 0.9),
            "detection_classes": tf.ones([batch, 1]),
            "num_detections": tf.ones([batch]),
        }
