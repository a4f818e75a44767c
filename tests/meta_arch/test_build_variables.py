"""build_model creates every variable before the first call, so a tf.function
of ``detect`` (or of a training step) traces its Python function once.

A tf.function whose first call creates variables traces twice (once creating
them, once more without); these tests count the traces and the variables."""

import numpy as np
import pytest
import tensorflow as tf

from detbench.builders.model_builder import build_model
from detbench.protos import model_pb2
from tests.meta_arch import test_ssd
from tests.meta_arch.test_cascade_rcnn import tiny_cascade_config
from tests.meta_arch.test_faster_rcnn import _config as faster_rcnn_config
from tests.meta_arch.test_rfcn import tiny_rfcn_config


def _model_config(name, message):
    config = model_pb2.DetectionModel()
    getattr(config, name).CopyFrom(message)
    return config


CONFIGS = {
    "ssd": lambda: _model_config("ssd", test_ssd._config(test_ssd.SOFTMAX, size=96)),
    "ssd_fpn": lambda: _model_config(
        "ssd", test_ssd._config(test_ssd.RETINANET, size=96, max_level=6)
    ),
    "faster_rcnn": lambda: faster_rcnn_config(),
    "faster_rcnn_fpn": lambda: faster_rcnn_config(fpn=True),
    "rfcn": lambda: _model_config("rfcn", tiny_rfcn_config()),
    "cascade_rcnn": lambda: _model_config("cascade_rcnn", tiny_cascade_config()),
    "cascade_rcnn_fpn": lambda: _model_config("cascade_rcnn", tiny_cascade_config(fpn=True)),
}


def _weights(model):
    return {v.name: v.numpy() for v in model.variables}


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_detect_traces_once_and_creates_no_variable(name):
    model = build_model(CONFIGS[name](), is_training=False)
    before = _weights(model)
    assert before, "build_model created no variable"
    fn = tf.function(model.detect, autograph=False)
    images = tf.random.stateless_uniform([1, 96, 128, 3], [3, 4], 0, 255)
    detections = fn(images)
    assert fn.experimental_get_tracing_count() == 1
    after = _weights(model)
    assert sorted(after) == sorted(before)  # the call created no variable
    for key, value in before.items():  # and changed none
        np.testing.assert_array_equal(after[key], value)
    assert detections["detection_boxes"].shape[0] == 1


def test_build_variables_is_idempotent_and_matches_a_lazy_model():
    """The variables build_model creates are those a first call would (same
    names and shapes), and a second build_variables adds none."""
    config = CONFIGS["faster_rcnn_fpn"]()
    eager = build_model(config, is_training=False)
    shapes = {v.name: tuple(v.shape) for v in eager.variables}
    eager.build_variables()
    assert {v.name: tuple(v.shape) for v in eager.variables} == shapes
    from detbench.meta_arch.faster_rcnn import FasterRcnn

    lazy = FasterRcnn.from_config(config.faster_rcnn, is_training=False)
    lazy.detect(tf.zeros([1, 96, 128, 3]))
    assert sorted(tuple(v.shape) for v in lazy.variables) == sorted(shapes.values())
    assert len(lazy.variables) == len(shapes)


def test_training_step_traces_once():
    """make_train_step creates the optimizer's slots (and the model's
    variables) before its tf.function's first call."""
    import tf_keras

    from detbench.meta_arch.faster_rcnn import FasterRcnn
    from detbench.train.trainer import make_train_step
    from tests.meta_arch.test_rfcn import scene_batch

    model = FasterRcnn.from_config(CONFIGS["faster_rcnn"]().faster_rcnn, is_training=True)
    images, gt = scene_batch()
    inputs, true_shapes = model.preprocess(images)
    step = make_train_step(model, tf_keras.optimizers.Adam(1e-3))
    variables = len(model.variables)
    for _ in range(2):
        losses = step({"image": inputs, "true_shape": true_shapes, **gt})
    assert step.experimental_get_tracing_count() == 1
    assert len(model.variables) == variables
    assert np.isfinite(float(losses["total_loss"]))
