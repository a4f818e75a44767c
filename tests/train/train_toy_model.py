"""A tiny DetectionModel (meta_arch/base.py contract) and an in-memory dataset for training tests.

The model predicts one box per image from a global-pooled conv feature; its
loss is the L1 distance to the first groundtruth box.
"""

import numpy as np
import tensorflow as tf
import tf_keras

from detbench.meta_arch.base import DetectionModel

IMAGE_SIZE = 16
MAX_BOXES = 3


class ToyDetector(DetectionModel):
    def __init__(self, num_classes=2, is_training=True, hidden=0, l2=0.0):
        super().__init__(num_classes, is_training)
        regularizer = tf_keras.regularizers.l2(l2) if l2 else None
        self.backbone = tf_keras.Sequential(
            [
                tf_keras.layers.Conv2D(
                    6, 3, strides=2, activation="relu", kernel_regularizer=regularizer
                )
            ]
        )
        self.hidden = tf_keras.layers.Dense(hidden, activation="relu") if hidden else None
        self.box_head = tf_keras.layers.Dense(4)

    @classmethod
    def from_config(cls, config, is_training=True):
        return cls(is_training=is_training)

    def preprocess(self, images):
        images = tf.image.resize(tf.cast(images, tf.float32), [IMAGE_SIZE, IMAGE_SIZE])
        true_shapes = tf.tile(
            tf.constant([[IMAGE_SIZE, IMAGE_SIZE, 3]], tf.int32), [tf.shape(images)[0], 1]
        )
        return images / 127.5 - 1.0, true_shapes

    def predict(self, inputs, true_shapes, training=False, groundtruth=None):
        features = tf.reduce_mean(self.backbone(inputs, training=training), axis=[1, 2])
        if self.hidden is not None:
            features = self.hidden(features)
        return {"boxes": tf.sigmoid(self.box_head(features))}

    def loss(self, predictions, groundtruth):
        target = groundtruth["groundtruth_boxes"][:, 0]
        l1 = tf.reduce_sum(tf.abs(predictions["boxes"] - target), axis=-1)
        return {"box_loss": tf.reduce_mean(l1)}

    def postprocess(self, predictions, true_shapes):
        boxes = predictions["boxes"][:, tf.newaxis]
        batch = tf.shape(boxes)[0]
        return {
            "detection_boxes": boxes,
            "detection_scores": tf.ones([batch, 1]),
            "detection_classes": tf.ones([batch, 1]),
            "num_detections": tf.ones([batch], tf.float32),
        }

    def backbone_models(self):
        return [self.backbone]


def make_examples(num_images=8, seed=0, nan_at=None):
    """Images [N,S,S,3] in [0,255] with one bright square each, and its box (normalized)."""
    rng = np.random.default_rng(seed)
    images = rng.uniform(0, 60, (num_images, IMAGE_SIZE, IMAGE_SIZE, 3)).astype(np.float32)
    boxes = np.zeros((num_images, MAX_BOXES, 4), np.float32)
    for i in range(num_images):
        y0, x0 = rng.integers(0, IMAGE_SIZE // 2, 2)
        h, w = rng.integers(4, IMAGE_SIZE // 2, 2)
        images[i, y0 : y0 + h, x0 : x0 + w] = 250.0
        boxes[i, 0] = [
            y0 / IMAGE_SIZE,
            x0 / IMAGE_SIZE,
            (y0 + h) / IMAGE_SIZE,
            (x0 + w) / IMAGE_SIZE,
        ]
    if nan_at is not None:
        boxes[nan_at, 0] = np.nan
    return images, boxes


def make_dataset(model, batch_size=4, num_images=8, seed=0, nan_at=None, repeat=True):
    """Batched dicts in the data pipeline's layout; 'image' is the model input."""
    images, boxes = make_examples(num_images, seed, nan_at)
    classes = np.zeros((num_images, MAX_BOXES), np.int32)
    classes[:, 0] = 1
    num_boxes = np.ones(num_images, np.int32)

    def transform(example):
        image, true_shape = model.preprocess_single(example["image"])
        return dict(example, image=image, true_shape=true_shape)

    dataset = (
        tf.data.Dataset.from_tensor_slices(
            {
                "image": images,
                "source_id": np.array([str(i + 1).encode() for i in range(num_images)]),
                "groundtruth_boxes": boxes,
                "groundtruth_classes": classes,
                "groundtruth_is_crowd": np.zeros((num_images, MAX_BOXES), bool),
                "num_groundtruth_boxes": num_boxes,
            }
        )
        .map(transform)
        .batch(batch_size, drop_remainder=True)
    )
    return dataset.repeat() if repeat else dataset


def toy_pipeline(num_steps=5, optimizer="momentum", learning_rate=0.05, batch_size=4, **train):
    from detbench.protos import pipeline_pb2

    pipeline = pipeline_pb2.Pipeline()
    tc = pipeline.train_config
    tc.num_steps = num_steps
    tc.batch_size = batch_size
    tc.log_every_n_steps = 1
    getattr(tc.optimizer, optimizer).learning_rate.constant.learning_rate = learning_rate
    for key, value in train.items():
        setattr(tc, key, value)
    return pipeline
