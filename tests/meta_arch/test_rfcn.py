"""R-FCN: trains on drawn scenes, box-classifier FLOPs flat in the proposal
count, proposals honoured, builds from protos and from the shipped configs.

The scene / training / matching helpers here are shared with
``test_cascade_rcnn.py``.
"""

import glob
import os

import numpy as np
import pytest
import tensorflow as tf
import tf_keras

from tests.conftest import REPO_ROOT
from tests.meta_arch.tiny_extractor import register

register()

from detbench.builders.model_builder import build_model  # noqa: E402
from detbench.config import load_pipeline, parse_text  # noqa: E402
from detbench.feature_extractors.base import FEATURE_EXTRACTORS  # noqa: E402
from detbench.meta_arch.faster_rcnn import FasterRcnn  # noqa: E402
from detbench.meta_arch.rfcn import Rfcn  # noqa: E402
from detbench.protos import faster_rcnn_pb2, model_pb2, rfcn_pb2  # noqa: E402
from tests.numpy_reference import iou_matrix as np_iou  # noqa: E402

IMAGE_SIZE = 128
# Two classes told apart by colour: 1 = bright red, 2 = bright green.
CLASS_COLOURS = {1: (250, 40, 40), 2: (40, 250, 40)}
# Per image: (class, [ymin, xmin, ymax, xmax] in pixels).
SCENES = [
    [(1, [16, 20, 56, 64]), (2, [72, 70, 116, 110])],
    [(2, [10, 60, 50, 118]), (1, [70, 12, 118, 52])],
    [(1, [40, 40, 90, 100])],
]
TINY_RPN = """
  conv_depth: 64
  anchor_generator { grid { scales: 0.5 scales: 1.0 scales: 2.0
                            aspect_ratios: 0.5 aspect_ratios: 1.0 aspect_ratios: 2.0
                            base_size: 64 } }
  max_proposals_train: 128
  max_proposals: 32
"""


# -- helpers shared with test_cascade_rcnn.py ------------------------------------
def scene_batch(scenes=SCENES, size=IMAGE_SIZE):
    """Dark images with bright filled rectangles -> (images [B, S, S, 3],
    groundtruth dict with padded normalized boxes)."""
    rng = np.random.RandomState(0)
    max_boxes = max(len(s) for s in scenes)
    images = rng.uniform(0, 30, (len(scenes), size, size, 3)).astype(np.float32)
    boxes = np.zeros((len(scenes), max_boxes, 4), np.float32)
    classes = np.zeros((len(scenes), max_boxes), np.int32)
    for i, scene in enumerate(scenes):
        for j, (cls, (y0, x0, y1, x1)) in enumerate(scene):
            images[i, y0:y1, x0:x1] = CLASS_COLOURS[cls]
            boxes[i, j] = np.array([y0, x0, y1, x1], np.float32) / size
            classes[i, j] = cls
    gt = {
        "groundtruth_boxes": tf.constant(boxes),
        "groundtruth_classes": tf.constant(classes),
        "num_groundtruth_boxes": tf.constant([len(s) for s in scenes], tf.int32),
    }
    return tf.constant(images), gt


def train(
    model, images, groundtruth, steps, learning_rate=2e-3, until=None, extra_steps=(100, 100)
):
    """Adam on the summed losses; returns the total loss of every step.

    With ``until(losses)``, trains up to ``extra_steps`` more chunks while it is
    false: under ``pytest -n 2`` a worker's history changes float summation
    order, and a run that needs a few more steps to converge still counts."""
    optimizer = tf_keras.optimizers.Adam(learning_rate)
    # Create every variable first, so the step is traced once, not twice.
    model.build_variables()
    optimizer.build(model.trainable_variables)

    @tf.function
    def step():
        with tf.GradientTape() as tape:
            inputs, true_shapes = model.preprocess(images)
            predictions = model.predict(inputs, true_shapes, training=True, groundtruth=groundtruth)
            total = tf.add_n(list(model.loss(predictions, groundtruth).values()))
        variables = model.trainable_variables
        grads = tape.gradient(total, variables)
        optimizer.apply_gradients([(g, v) for g, v in zip(grads, variables) if g is not None])
        return total

    losses = [float(step()) for _ in range(steps)]
    for extra in extra_steps:
        if until is None or until(losses):
            break
        losses += [float(step()) for _ in range(extra)]
    return losses


def converged(model, images, groundtruth, fraction=0.15):
    """``until`` for ``train``: the loss fell below ``fraction`` of its start and
    every groundtruth box is detected (the tests then assert both)."""

    def check(losses):
        if not np.mean(losses[-10:]) < fraction * losses[0]:
            return False
        try:
            assert_detects_every_box(model.detect(images), groundtruth)
        except AssertionError:
            return False
        return True

    return check


def assert_detects_every_box(detections, groundtruth, min_score=0.5):
    """Every groundtruth box has a detection of its class, score >= min_score,
    at IoU > 0.5."""
    for i in range(int(groundtruth["num_groundtruth_boxes"].shape[0])):
        n = int(detections["num_detections"][i])
        keep = detections["detection_scores"][i, :n].numpy() >= min_score
        boxes = detections["detection_boxes"][i, :n].numpy()[keep]
        classes = detections["detection_classes"][i, :n].numpy()[keep]
        for j in range(int(groundtruth["num_groundtruth_boxes"][i])):
            gt_box = groundtruth["groundtruth_boxes"][i, j].numpy()
            gt_cls = int(groundtruth["groundtruth_classes"][i, j])
            ious = np_iou(gt_box[None], boxes)[0] if len(boxes) else np.zeros(0)
            hits = (ious > 0.5) & (classes == gt_cls)
            assert hits.any(), (
                f"image {i} box {j} (class {gt_cls}) not found; "
                f"best IoU {ious.max() if len(ious) else 0:.2f}, "
                f"detections {list(zip(classes, np.round(ious, 2)))}"
            )


# -- R-FCN ---------------------------------------------------------------------
def tiny_rfcn_config(extra=""):
    return parse_text(
        f"""
        num_classes: 2
        image_resizer {{ fixed_shape {{ height: {IMAGE_SIZE} width: {IMAGE_SIZE} }} }}
        feature_extractor {{ type: "test_tiny" output_stride: 16 weight_decay: 0 }}
        rpn {{ {TINY_RPN} }}
        reduction_depth: 64
        hard_example_miner {{ batch_size: 32 }}
        {extra}""",
        rfcn_pb2.Rfcn(),
    )


def test_rfcn_with_ohem_learns_drawn_scenes():
    tf.random.set_seed(1)
    model = Rfcn.from_config(tiny_rfcn_config())
    assert model.hard_example_miner is not None and model.hard_example_miner.batch_size == 32
    assert (model.num_spatial_bins, model.crop_size) == (3, 12)  # the extractor's defaults
    images, gt = scene_batch()
    losses = train(model, images, gt, steps=300, until=converged(model, images, gt))
    assert np.mean(losses[-10:]) < 0.15 * losses[0], losses[::25]
    assert_detects_every_box(model.detect(images), gt)


def test_rfcn_loss_names_and_random_sampler_without_ohem():
    model = Rfcn.from_config(
        tiny_rfcn_config("use_ohem: false second_stage_sampler { batch_size: 16 }")
    )
    assert model.hard_example_miner is None
    images, gt = scene_batch()
    inputs, true_shapes = model.preprocess(images)
    predictions = model.predict(inputs, true_shapes, training=True, groundtruth=gt)
    assert predictions["rois"].shape[1] == 16  # the sampled minibatch
    assert predictions["class_predictions_with_background"].shape == (3, 16, 3)
    assert predictions["refined_box_encodings"].shape == (3, 16, 1, 4)  # class-agnostic
    losses = model.loss(predictions, gt)
    assert sorted(losses) == sorted(
        [
            "rpn_localization_loss",
            "rpn_objectness_loss",
            "box_classifier_localization_loss",
            "box_classifier_classification_loss",
        ]
    )
    assert all(np.isfinite(float(v)) for v in losses.values())


def test_position_sensitive_head_matches_numpy_voting():
    """classify_boxes == per-bin average pooling of the bin's own channel group,
    voted over bins (numpy, box exactly on feature-pixel centres)."""
    model = Rfcn.from_config(tiny_rfcn_config("num_spatial_bins: 2 crop_size: 4"))
    images, _ = scene_batch(SCENES[:1])
    inputs, true_shapes = model.preprocess(images)
    features = model.extract_features(inputs)
    maps = model.position_sensitive_maps(features).numpy()[0]  # [8, 8, 2 * 2 * 7]
    h = maps.shape[0]
    # A RoI in feature-pixel units; crop_and_resize samples box corners at
    # pixel centres (normalized coordinate * (h - 1)), bilinearly.
    y0, x0, y1, x1 = 1.0, 2.0, 6.0, 6.5
    roi = tf.constant([[[y0 / (h - 1), x0 / (h - 1), y1 / (h - 1), x1 / (h - 1)]]], tf.float32)
    out = model.classify_boxes(features, roi)
    k, s, depth = 2, 2, 7

    def bilinear(img, y, x):
        y_lo, x_lo = int(np.floor(y)), int(np.floor(x))
        dy, dx = y - y_lo, x - x_lo
        y_hi, x_hi = min(y_lo + 1, h - 1), min(x_lo + 1, h - 1)
        return (
            (1 - dy) * (1 - dx) * img[y_lo, x_lo]
            + (1 - dy) * dx * img[y_lo, x_hi]
            + dy * (1 - dx) * img[y_hi, x_lo]
            + dy * dx * img[y_hi, x_hi]
        )

    votes = []
    for i in range(k):
        for j in range(k):
            group = maps[..., (i * k + j) * depth : (i * k + j + 1) * depth]
            by0, by1 = y0 + i * (y1 - y0) / k, y0 + (i + 1) * (y1 - y0) / k
            bx0, bx1 = x0 + j * (x1 - x0) / k, x0 + (j + 1) * (x1 - x0) / k
            samples = [
                bilinear(group, by0 + a * (by1 - by0) / (s - 1), bx0 + b * (bx1 - bx0) / (s - 1))
                for a in range(s)
                for b in range(s)
            ]
            votes.append(np.mean(samples, 0))
    expected = np.mean(votes, 0)
    np.testing.assert_allclose(
        out["class_predictions_with_background"].numpy()[0, 0], expected[:3], rtol=1e-4, atol=1e-5
    )
    np.testing.assert_allclose(
        out["refined_box_encodings"].numpy()[0, 0, 0], expected[3:], rtol=1e-4, atol=1e-5
    )


def _flops_at(model, proposals):
    from detbench.benchmark.flops import count_flops

    model.max_proposals = proposals
    return count_flops(model.detect, [tf.TensorSpec([1, IMAGE_SIZE, IMAGE_SIZE, 3])])


def test_box_classifier_flops_flat_for_rfcn_linear_for_faster_rcnn():
    rfcn = Rfcn.from_config(tiny_rfcn_config(), is_training=False, benchmark_mode=True)
    faster = FasterRcnn.from_config(
        parse_text(
            f"""
        num_classes: 2
        image_resizer {{ fixed_shape {{ height: {IMAGE_SIZE} width: {IMAGE_SIZE} }} }}
        feature_extractor {{ type: "test_tiny" output_stride: 8 }}
        rpn {{ {TINY_RPN} }}""",
            faster_rcnn_pb2.FasterRcnn(),
        ),
        is_training=False,
        benchmark_mode=True,
    )
    rfcn_ratio = _flops_at(rfcn, 300) / _flops_at(rfcn, 10)
    faster_ratio = _flops_at(faster, 300) / _flops_at(faster, 10)
    assert rfcn_ratio < 1.1, rfcn_ratio
    assert faster_ratio > 2.0, faster_ratio


def test_test_time_proposals_honoured_exactly():
    model = build_model(model_pb2.DetectionModel(rfcn=tiny_rfcn_config()), is_training=False)
    assert isinstance(model, Rfcn)
    images, _ = scene_batch()
    for benchmark_mode, proposals in ((False, 7), (True, 19)):
        model.benchmark_mode = benchmark_mode
        model.max_proposals = proposals
        inputs, true_shapes = model.preprocess(images)
        predictions = model.predict(inputs, true_shapes)
        assert predictions["rois"].shape == (3, proposals, 4)
        assert predictions["class_predictions_with_background"].shape == (3, proposals, 3)
        if benchmark_mode:
            np.testing.assert_array_equal(predictions["num_proposals"], [proposals] * 3)
            assert predictions["roi_valid"].numpy().all()
        detections = model.postprocess(predictions, true_shapes)
        assert detections["detection_boxes"].shape == (3, 100, 4)


def test_rfcn_rejects_fpn_and_bad_crop():
    from detbench.errors import ConfigError

    with pytest.raises(ConfigError, match="fpn"):
        Rfcn.from_config(
            parse_text(
                'num_classes: 2 feature_extractor { type: "test_tiny" fpn {} }', rfcn_pb2.Rfcn()
            )
        )
    with pytest.raises(ConfigError, match="crop_size"):
        Rfcn.from_config(tiny_rfcn_config("num_spatial_bins: 3 crop_size: 10"))


# -- the shipped configs, at reduced resolution ----------------------------------
def config_smoke(path, meta_arch, extra_overrides=()):
    """Build ``path`` with a small resolution and few proposals, run one
    training step and one inference (eagerly: no tracing of the big backbone)."""
    overrides = [
        f"model.{meta_arch}.image_resizer={{keep_aspect_ratio {{min_dimension: 128 "
        "max_dimension: 160}}",
        f"model.{meta_arch}.rpn.max_proposals_train=64",
        f"model.{meta_arch}.rpn.max_proposals=16",
        f"model.{meta_arch}.second_stage_sampler.batch_size=32",
        *extra_overrides,
    ]
    pipeline = load_pipeline(path, overrides, check_registry=False)
    extractor = getattr(pipeline.model, meta_arch).feature_extractor.type
    import detbench.feature_extractors  # noqa: F401  (registers every family)

    if extractor not in FEATURE_EXTRACTORS:
        pytest.skip(
            f"feature extractor {extractor!r} is not registered yet (importing "
            "detbench.feature_extractors does not register it)"
        )
    pipeline = load_pipeline(path, overrides)
    model = build_model(pipeline.model, is_training=True)
    images, gt = scene_batch([SCENES[0]], size=96)
    images = tf.image.resize(images, [96, 120])
    with tf.GradientTape() as tape:
        inputs, true_shapes = model.preprocess(images)
        assert inputs.shape[1:3] == (128, 160)
        predictions = model.predict(inputs, true_shapes, training=True, groundtruth=gt)
        losses = model.loss(predictions, gt)
        total = tf.add_n(list(losses.values()))
    grads = tape.gradient(total, model.trainable_variables)
    assert np.isfinite(float(total))
    assert sum(g is not None for g in grads) > 0.9 * len(grads)
    model.max_proposals = 16
    detections = model.detect(images)
    assert detections["detection_boxes"].shape == (1, 100, 4)
    return model, losses


@pytest.mark.parametrize(
    "path", sorted(glob.glob(os.path.join(REPO_ROOT, "configs", "rfcn_*.pbtxt")))
)
def test_rfcn_configs_train_and_infer(path):
    model, losses = config_smoke(path, "rfcn")
    assert isinstance(model, Rfcn)
    assert "box_classifier_classification_loss" in losses
