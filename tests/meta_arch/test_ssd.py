"""SSD / RetinaNet meta-architecture: building, anchors, losses, post-processing, training."""

import glob
import math
import os

import numpy as np
import pytest
import tensorflow as tf
import tf_keras
from google.protobuf import text_format

from detbench.builders.model_builder import build_model
from detbench.errors import ConfigError
from detbench.meta_arch.base import DETECTION_KEYS, META_ARCHITECTURES
from detbench.meta_arch.ssd import SSDMetaArch
from detbench.protos import model_pb2, ssd_pb2
from tests.meta_arch.tiny_extractor import register

register()

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
NUM_CLASSES = 3

SOFTMAX = """
num_classes: 3
image_resizer { fixed_shape { height: %(size)d width: %(size)d } }
feature_extractor { type: "test_tiny" weight_decay: 0.0 }
loss { classification_loss { softmax {} } localization_loss { smooth_l1 {} } }
post_processing {
  batch_non_max_suppression { score_threshold: 0.05 iou_threshold: 0.5
                              max_detections_per_class: 10 max_total_detections: %(max_total)d }
}
"""

RETINANET = """
num_classes: 3
image_resizer { fixed_shape { height: %(size)d width: %(size)d } }
feature_extractor { type: "test_tiny" weight_decay: 0.0
                    fpn { min_level: 3 max_level: %(max_level)d depth: 32 } }
box_predictor { num_layers_before_predictor: 2 depth: 32 share_weights_across_levels: true
                class_prior_probability: 0.01 }
loss { classification_loss { focal { gamma: 2.0 alpha: 0.25 } }
       localization_loss { smooth_l1 { delta: 0.1 } } }
use_hard_negative_mining: false
post_processing {
  batch_non_max_suppression { score_threshold: 0.05 iou_threshold: 0.5
                              max_detections_per_class: 10 max_total_detections: %(max_total)d }
  score_converter: SIGMOID
}
"""


def _config(template, size=128, max_total=20, max_level=7, extra=""):
    text = template % {"size": size, "max_total": max_total, "max_level": max_level} + extra
    return text_format.Parse(text, ssd_pb2.Ssd())


# Synthetic scenes: dark noise with bright rectangles; colour = class
# (1 red, 2 green, 3 blue). Boxes are normalized (ymin, xmin, ymax, xmax).
SCENES = [
    [(0.10, 0.10, 0.50, 0.60, 1), (0.55, 0.40, 0.95, 0.90, 2)],
    [(0.30, 0.20, 0.80, 0.50, 3)],
    [(0.05, 0.50, 0.45, 0.95, 2), (0.60, 0.05, 0.90, 0.45, 1)],
    [(0.20, 0.25, 0.75, 0.75, 3)],
]
COLOURS = {1: (255, 40, 40), 2: (40, 255, 40), 3: (40, 40, 255)}


def _scenes(size, scenes=SCENES, seed=0):
    rng = np.random.RandomState(seed)
    b, m = len(scenes), max(len(s) for s in scenes)
    images = rng.uniform(0, 40, [b, size, size, 3]).astype(np.float32)
    boxes = np.zeros([b, m, 4], np.float32)
    classes = np.zeros([b, m], np.int32)
    for i, scene in enumerate(scenes):
        for j, (*box, label) in enumerate(scene):
            y0, x0, y1, x1 = [int(round(v * size)) for v in box]
            images[i, y0:y1, x0:x1] = COLOURS[label]
            boxes[i, j] = np.array([y0, x0, y1, x1], np.float32) / size  # the pixels drawn
            classes[i, j] = label
    groundtruth = {
        "groundtruth_boxes": tf.constant(boxes),
        "groundtruth_classes": tf.constant(classes),
        "num_groundtruth_boxes": tf.constant([len(s) for s in scenes], tf.int32),
    }
    return tf.constant(images), groundtruth


def _iou(a, b):
    """numpy IoU of two [4] boxes."""
    ih = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iw = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ih * iw
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def _train(model, images, groundtruth, steps, learning_rate):
    optimizer = tf_keras.optimizers.Adam(learning_rate)

    @tf.function
    def step():
        inputs, true_shapes = model.preprocess(images)
        with tf.GradientTape() as tape:
            predictions = model.predict(inputs, true_shapes, training=True, groundtruth=groundtruth)
            losses = model.loss(predictions, groundtruth)
            total = tf.add_n(list(losses.values()))
        grads = tape.gradient(total, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables))
        return losses, total

    model.build_variables()  # create the variables
    optimizer.build(model.trainable_variables)  # ... and the slots: one trace
    history = []
    for _ in range(steps):
        losses, total = step()
        history.append(float(total))
    assert set(losses) == {"localization_loss", "classification_loss"}
    return history


def _check_detections(detections, groundtruth):
    """Every groundtruth box is among the top detections (as many as there are
    groundtruth boxes in the image) with IoU > 0.5 and the right class."""
    boxes = detections["detection_boxes"].numpy()
    classes = detections["detection_classes"].numpy()
    gt_boxes = groundtruth["groundtruth_boxes"].numpy()
    gt_classes = groundtruth["groundtruth_classes"].numpy()
    for i, n in enumerate(groundtruth["num_groundtruth_boxes"].numpy()):
        assert detections["num_detections"][i] >= n
        for j in range(n):
            hits = [
                _iou(boxes[i, k], gt_boxes[i, j])
                for k in range(n)
                if classes[i, k] == gt_classes[i, j]
            ]
            assert hits and max(hits) > 0.5, (
                f"image {i}: groundtruth {gt_boxes[i, j]} class {gt_classes[i, j]} not found in "
                f"top detections {boxes[i, :n]} classes {classes[i, :n]}"
            )


# -- building ------------------------------------------------------------------
def test_registered_and_built_through_model_builder():
    assert META_ARCHITECTURES.get("ssd") is SSDMetaArch
    model = build_model(model_pb2.DetectionModel(ssd=_config(SOFTMAX)), is_training=True)
    assert isinstance(model, SSDMetaArch)
    direct = SSDMetaArch.from_config(_config(SOFTMAX), is_training=False)
    assert direct.image_size == (128, 128) and direct.background_column
    assert direct.backbone_models() == [direct.feature_maps]


def test_defaults_when_messages_unset():
    config = text_format.Parse(
        'num_classes: 2 feature_extractor { type: "test_tiny" }', ssd_pb2.Ssd()
    )
    model = SSDMetaArch.from_config(config)
    assert model.image_size == (300, 300)
    assert model.background_column  # smooth L1 + softmax
    assert model.hard_negative_miner.max_negatives_per_positive == 3
    matcher = model.target_assigner.matcher
    assert (matcher.matched_threshold, matcher.unmatched_threshold) == (0.5, 0.5)
    assert matcher.force_match_for_each_row


def test_num_anchors_multiscale_by_hand():
    # tiny extractor: maps at strides 8, 16, 32 -> 16x16, 8x8, 4x4 at 128 px;
    # lowest layer 3 anchors (0.1:1, s0:2, s0:0.5), others 5 ratios + 1 interpolated
    model = SSDMetaArch.from_config(_config(SOFTMAX))
    assert model.num_anchors_per_location == [3, 6, 6]
    images, _ = _scenes(128, SCENES[:2])
    predictions = model.predict(*model.preprocess(images))
    n = 16 * 16 * 3 + 8 * 8 * 6 + 4 * 4 * 6
    assert n == 1248
    assert predictions["anchors"].shape == (n, 4)
    assert predictions["box_encodings"].shape == (2, n, 4)
    assert predictions["class_logits"].shape == (2, n, NUM_CLASSES + 1)  # + background
    # first anchor: cell (0, 0) of the 16x16 map, scale 0.1, ratio 1, centre 1/32
    c = 1.0 / 32
    np.testing.assert_allclose(
        predictions["anchors"][0], [c - 0.05, c - 0.05, c + 0.05, c + 0.05], atol=1e-6
    )


def test_num_anchors_fpn_by_hand():
    # P3..P7 at 128 px: 16, 8, 4, 2, 1 per side; 3 scales x 3 ratios
    model = SSDMetaArch.from_config(_config(RETINANET))
    images, _ = _scenes(128, SCENES[:1])
    predictions = model.predict(*model.preprocess(images))
    n = (16 * 16 + 8 * 8 + 4 * 4 + 2 * 2 + 1) * 9
    assert n == 3069
    assert predictions["box_encodings"].shape == (1, n, 4)
    assert predictions["class_logits"].shape == (1, n, NUM_CLASSES)  # sigmoid: no background
    # P3 anchor 0: side 4 * 8 px at ratio 0.5 (h = 32 / sqrt(.5)), centred at 4 px
    h, w = 32 / math.sqrt(0.5) / 128, 32 * math.sqrt(0.5) / 128
    c = 4.0 / 128
    np.testing.assert_allclose(
        predictions["anchors"][0], [c - h / 2, c - w / 2, c + h / 2, c + w / 2], atol=1e-6
    )


def test_anchors_are_a_graph_constant():
    model = SSDMetaArch.from_config(_config(SOFTMAX, size=64))
    images, _ = _scenes(64, SCENES[:1])
    op_types = []

    @tf.function
    def run(x):
        predictions = model.predict(*model.preprocess(x))
        op_types.append(predictions["anchors"].op.type)
        return predictions

    run(images)
    assert op_types and set(op_types) == {"Const"}  # (traced twice when variables are created)


@pytest.mark.parametrize("template", [SOFTMAX, RETINANET], ids=["multiscale", "fpn"])
def test_anchors_for_unknown_input_shapes_match_the_constant(template):
    model = SSDMetaArch.from_config(_config(template, size=64))
    images, _ = _scenes(64, SCENES[:1])
    inputs, true_shapes = model.preprocess(images)
    static = model.predict(inputs, true_shapes)

    @tf.function(
        input_signature=[tf.TensorSpec([None, None, None, 3]), tf.TensorSpec([None, 3], tf.int32)]
    )
    def run(x, shapes):
        predictions = model.predict(x, shapes)
        assert predictions["anchors"].op.type != "Const"
        return predictions

    dynamic = run(inputs, true_shapes)
    np.testing.assert_allclose(dynamic["anchors"], static["anchors"], atol=1e-6)
    np.testing.assert_allclose(dynamic["box_encodings"], static["box_encodings"], atol=1e-5)


@pytest.mark.parametrize(
    "text, message",
    [
        ("image_resizer { keep_aspect_ratio {} }", "fixed_shape"),
        ("anchor_generator { grid {} }", "multiscale"),
        ("anchor_generator { multilevel {} }", "needs feature_extractor.fpn"),
        (
            "loss { classification_loss { sigmoid {} } } "
            "post_processing { score_converter: SOFTMAX }",
            "score_converter",
        ),
        ("post_processing { score_converter: SIGMOID }", "score_converter"),
    ],
)
def test_config_errors_name_the_field(text, message):
    config = text_format.Parse(
        'num_classes: 2 feature_extractor { type: "test_tiny" } ' + text, ssd_pb2.Ssd()
    )
    with pytest.raises(ConfigError, match=message):
        SSDMetaArch.from_config(config)


# -- loss and post-processing ---------------------------------------------------
def test_postprocess_outputs_under_tf_function():
    max_total = 7
    model = SSDMetaArch.from_config(_config(SOFTMAX, size=64, max_total=max_total), False)
    images, _ = _scenes(80, SCENES[:3])  # resized to 64 in preprocess
    detections = tf.function(model.detect)(images)
    assert set(detections) == set(DETECTION_KEYS)
    assert detections["detection_boxes"].shape == (3, max_total, 4)
    assert detections["detection_scores"].shape == (3, max_total)
    assert detections["detection_classes"].shape == (3, max_total)
    assert detections["num_detections"].shape == (3,)
    num = detections["num_detections"].numpy()
    assert np.all(num <= max_total) and num.max() > 0
    boxes = detections["detection_boxes"].numpy()
    assert np.all(boxes >= 0.0) and np.all(boxes <= 1.0)  # clipped to the image
    classes = detections["detection_classes"].numpy()
    for i, n in enumerate(num):
        assert np.all((classes[i, :n] >= 1) & (classes[i, :n] <= NUM_CLASSES))
        assert np.all(classes[i, n:] == 0)


def test_anchors_matched_to_crowd_boxes_are_ignored():
    model = SSDMetaArch.from_config(_config(SOFTMAX, size=64), False)
    images, gt = _scenes(64, SCENES[1:2])  # one box
    predictions = model.predict(*model.preprocess(images))
    plain = model.loss(predictions, gt)
    assert plain["localization_loss"] > 0 and plain["classification_loss"] > 0
    # the only box is a crowd: no positive, so hard mining keeps no negative
    crowd = model.loss(predictions, dict(gt, groundtruth_is_crowd=tf.constant([[True]])))
    assert float(crowd["localization_loss"]) == 0.0
    assert float(crowd["classification_loss"]) == 0.0


def test_padded_input_uses_the_true_window():
    """Groundtruth and detections are relative to the true image: a true image
    filling the top half of the input gives the same loss for y-doubled boxes,
    and detections inside the true image."""
    model = SSDMetaArch.from_config(_config(SOFTMAX, size=64, max_total=50), False)
    images, _ = _scenes(64, SCENES[:2])
    inputs, full = model.preprocess(images)
    half = full - tf.constant([[32, 0, 0]])  # true image: the top 32 rows
    top = [[0.0, 0.1, 0.4, 0.5], [0.05, 0.3, 0.45, 0.7]]  # boxes in the input's top half
    gt_input = {
        "groundtruth_boxes": tf.constant([[top[0]], [top[1]]]),
        "groundtruth_classes": tf.constant([[1], [2]]),
        "num_groundtruth_boxes": tf.constant([1, 1]),
    }
    gt_true = dict(gt_input, groundtruth_boxes=gt_input["groundtruth_boxes"] * [2.0, 1.0, 2.0, 1.0])
    loss_full = model.loss(model.predict(inputs, full), gt_input)
    loss_half = model.loss(model.predict(inputs, half), gt_true)
    for key in loss_full:
        np.testing.assert_allclose(loss_full[key], loss_half[key], rtol=1e-5)
    predictions = model.predict(inputs, half)
    logits = predictions["class_logits"]  # every anchor: a confident object
    predictions["class_logits"] = tf.where(tf.range(NUM_CLASSES + 1) == 0, -4.0, 4.0 + 0.0 * logits)
    det = model.postprocess(predictions, half)
    assert int(tf.reduce_min(det["num_detections"])) > 0
    boxes = det["detection_boxes"].numpy()
    assert boxes.min() >= 0.0 and boxes.max() <= 1.0 + 1e-6
    # an anchor box reaching below the true image is clipped there: some y reaches 1
    assert np.isclose(boxes[..., 2].max(), 1.0)


def test_fpn_pads_a_size_not_divisible_by_the_largest_stride():
    """80 px with an FPN (top-down pathway over strides 8-32): the input is padded
    to 96 at the bottom / right, anchors cover the padded input (P3-P5 at 96 px:
    12, 6, 3 per side, 9 each) and detections stay inside the true image."""
    model = SSDMetaArch.from_config(_config(RETINANET, size=80, max_level=5, max_total=50), False)
    images, _ = _scenes(80, SCENES[:1])
    inputs, true = model.preprocess(images)
    assert tuple(inputs.shape) == (1, 96, 96, 3)
    assert true.numpy().tolist() == [[80, 80, 3]]
    assert not np.any(inputs.numpy()[:, 80:]) and not np.any(inputs.numpy()[:, :, 80:])
    predictions = model.predict(inputs, true)
    assert predictions["box_encodings"].shape[1] == (12 * 12 + 6 * 6 + 3 * 3) * 9
    predictions["class_logits"] = 4.0 + 0.0 * predictions["class_logits"]
    det = model.postprocess(predictions, true)
    boxes = det["detection_boxes"].numpy()[0, : int(det["num_detections"][0])]
    assert len(boxes) and boxes.min() >= 0.0 and boxes.max() <= 1.0 + 1e-6
    assert tf.function(model.detect)(images)["detection_boxes"].shape[0] == 1
    # an unpadded SSD (no FPN) keeps its input size
    assert tuple(
        SSDMetaArch.from_config(_config(SOFTMAX, size=80), False).preprocess(images)[0].shape
    ) == (1, 80, 80, 3)


# -- training to convergence ------------------------------------------------------
def test_trains_softmax_with_hard_negative_mining():
    size = 96
    tf_keras.utils.set_random_seed(0)
    model = SSDMetaArch.from_config(_config(SOFTMAX, size=size))
    assert model.hard_negative_miner is not None and model.background_column
    images, gt = _scenes(size)
    history = _train(model, images, gt, steps=100, learning_rate=3e-3)
    assert history[-1] < 0.2 * history[0], history[::10]
    _check_detections(tf.function(model.detect)(images), gt)


def test_trains_retinanet_fpn_with_focal_loss():
    size = 96
    tf_keras.utils.set_random_seed(0)
    model = SSDMetaArch.from_config(_config(RETINANET, size=size, max_level=5))
    assert model.hard_negative_miner is None and not model.background_column
    images, gt = _scenes(size)
    history = _train(model, images, gt, steps=250, learning_rate=4e-3)
    assert history[-1] < 0.2 * history[0], history[::10]
    _check_detections(tf.function(model.detect)(images), gt)


# -- the example configs ----------------------------------------------------------
SSD_CONFIGS = sorted(glob.glob(os.path.join(REPO_ROOT, "configs", "ssd_*.pbtxt")))


def test_there_are_ssd_configs():
    assert len(SSD_CONFIGS) >= 4


@pytest.mark.slow
@pytest.mark.parametrize("path", SSD_CONFIGS, ids=os.path.basename)
def test_example_config_trains_and_detects(path):
    import detbench.feature_extractors  # noqa: F401  (registers the families)
    from detbench.config import load_pipeline, load_text_proto
    from detbench.feature_extractors.base import FEATURE_EXTRACTORS
    from detbench.protos import pipeline_pb2

    name = load_text_proto(path, pipeline_pb2.Pipeline()).model.ssd.feature_extractor.type
    if name not in FEATURE_EXTRACTORS:
        pytest.skip(f"{name} not registered yet")
    pipeline = load_pipeline(
        path, overrides=["model.ssd.image_resizer={fixed_shape {height: 128 width: 128}}"]
    )
    model = build_model(pipeline.model, is_training=True)
    images, gt = _scenes(128, SCENES[:1])
    # one eager training step (tracing a full backbone's backward pass costs
    # far more than running it once), then the exported path under tf.function
    model.predict(*model.preprocess(images))  # create the variables
    before = [v.numpy() for v in model.box_predictor.trainable_variables]
    optimizer = tf_keras.optimizers.SGD(1e-3)
    with tf.GradientTape() as tape:
        inputs, true_shapes = model.preprocess(images)
        losses = model.loss(model.predict(inputs, true_shapes, training=True, groundtruth=gt), gt)
        total = tf.add_n(list(losses.values()))
    grads = tape.gradient(total, model.trainable_variables)
    assert np.isfinite(float(total)) and all(g is not None for g in grads)
    optimizer.apply_gradients(zip(grads, model.trainable_variables))
    assert any(
        not np.array_equal(b, v.numpy())
        for b, v in zip(before, model.box_predictor.trainable_variables)
    )
    detections = tf.function(model.detect)(images)
    max_total = pipeline.model.ssd.post_processing.batch_non_max_suppression.max_total_detections
    assert set(detections) == set(DETECTION_KEYS)
    assert detections["detection_boxes"].shape == (1, max_total, 4)
    assert np.all(detections["num_detections"].numpy() <= max_total)
