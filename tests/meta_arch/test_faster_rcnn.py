"""Faster R-CNN: preprocessing, training to convergence on drawn images (plain,
FPN, OHEM), test-time proposal counts, output stride, FLOPs vs proposals and
the shipped configs."""

import glob
import os

import numpy as np
import pytest
import tensorflow as tf
import tf_keras
from google.protobuf import text_format

from detbench.builders.model_builder import build_model
from detbench.core import box_ops
from detbench.meta_arch import image_frame
from detbench.meta_arch.faster_rcnn import FasterRcnn
from detbench.protos import image_resizer_pb2, model_pb2
from tests.conftest import REPO_ROOT
from tests.meta_arch.tiny_extractor import register

register()

TINY = 'feature_extractor { type: "test_tiny" output_stride: %d %s }'
TINY_FPN = "fpn { min_level: 2 max_level: 5 depth: 32 }"


def _config(stride=16, fpn=False, extra="", rpn_extra="", size=(96, 128)):
    if fpn:
        anchors = "anchor_generator { multilevel { min_level: 2 max_level: 5 anchor_scale: 4 } }"
        extra += " fpn_head { num_fc_layers: 2 fc_depth: 128 }"
    else:
        anchors = "anchor_generator { grid { base_size: 64 } }"
    text = f"""faster_rcnn {{
      num_classes: 2
      image_resizer {{ keep_aspect_ratio {{ min_dimension: {size[0]} max_dimension: {size[1]} }} }}
      {TINY % (stride, TINY_FPN if fpn else "")}
      rpn {{ {anchors} conv_depth: 32 max_proposals_train: 64 max_proposals: 20
             pre_nms_top_k: 300 {rpn_extra} }}
      second_stage_sampler {{ batch_size: 32 }}
      {extra}
    }}"""
    return text_format.Parse(text, model_pb2.DetectionModel())


def _model(benchmark_mode=False, **kwargs):
    return FasterRcnn.from_config(
        _config(**kwargs).faster_rcnn, is_training=True, benchmark_mode=benchmark_mode
    )


# -- synthetic data: bright rectangles of two colours (= classes) on dark ------
COLOURS = {1: (230, 60, 60), 2: (60, 230, 230)}
LAYOUTS = [  # (class, ymin, xmin, ymax, xmax) in pixels of a 96 x 96 image
    [(1, 8, 8, 40, 48), (2, 50, 40, 88, 80)],
    [(2, 10, 50, 50, 90), (1, 55, 10, 90, 40)],
    [(1, 30, 30, 70, 60)],
    [(2, 5, 5, 35, 35), (1, 60, 60, 92, 92), (2, 20, 60, 50, 90)],
]


def _synthetic(size=96):
    images = np.full([len(LAYOUTS), size, size, 3], 20, np.float32)
    boxes = np.zeros([len(LAYOUTS), 3, 4], np.float32)
    classes = np.zeros([len(LAYOUTS), 3], np.int32)
    for b, layout in enumerate(LAYOUTS):
        for i, (c, y0, x0, y1, x1) in enumerate(layout):
            images[b, y0:y1, x0:x1] = COLOURS[c]
            boxes[b, i] = np.array([y0, x0, y1, x1]) / size
            classes[b, i] = c
    gt = {
        "groundtruth_boxes": tf.constant(boxes),
        "groundtruth_classes": tf.constant(classes),
        "num_groundtruth_boxes": tf.constant([len(l) for l in LAYOUTS], tf.int32),
    }
    return tf.constant(images), gt


def _train_step_fn(model, optimizer, eager=False):
    def step(images, gt):
        with tf.GradientTape() as tape:
            inputs, true_shapes = model.preprocess(images)
            predictions = model.predict(inputs, true_shapes, training=True, groundtruth=gt)
            losses = model.loss(predictions, gt)
            total = tf.add_n(list(losses.values()))
        variables = model.trainable_variables
        optimizer.apply_gradients(zip(tape.gradient(total, variables), variables))
        return total, losses

    return step if eager else tf.function(step)


def _train(model, steps, lr=1e-3, until=None, extra_steps=(100, 100)):
    """Train ``steps`` steps; if ``until(model, images, gt, totals)`` is given and false, train up to
    ``extra_steps`` more chunks (the run's float summation order varies with the
    process's history, so a run that needs a few more steps still counts)."""
    images, gt = _synthetic()
    step = _train_step_fn(model, tf_keras.optimizers.Adam(lr))
    totals = []
    for chunk in (steps,) + tuple(extra_steps):
        for _ in range(chunk):
            total, losses = step(images, gt)
            totals.append(float(total))
        if until is None or until(model, images, gt, totals):
            break
    assert set(losses) == {
        "rpn_localization_loss",
        "rpn_objectness_loss",
        "box_classifier_localization_loss",
        "box_classifier_classification_loss",
    }
    return totals, images, gt


def _loss_fell(totals):
    return np.mean(totals[-10:]) < 0.2 * np.mean(totals[:3])


def _converged(model, images, gt, totals):
    """Both criteria of the convergence test: the loss fell and every box is found."""
    if not _loss_fell(totals):
        return False
    try:
        _assert_detects_every_box(model, images, gt)
    except AssertionError:
        return False
    return True


def _assert_detects_every_box(model, images, gt):
    detections = tf.function(model.detect)(images)
    for b in range(images.shape[0]):
        n = int(gt["num_groundtruth_boxes"][b])
        ious = box_ops.iou(gt["groundtruth_boxes"][b, :n], detections["detection_boxes"][b]).numpy()
        scores = detections["detection_scores"][b].numpy()
        classes = detections["detection_classes"][b].numpy()
        for i in range(n):
            label = int(gt["groundtruth_classes"][b, i])
            hit = (ious[i] > 0.5) & (scores > 0.5) & (classes == label)
            assert hit.any(), (
                f"image {b} box {i}: best IoU {ious[i].max():.2f}, "
                f"classes {classes[:5]}, scores {scores[:5]}"
            )


@pytest.mark.slow
@pytest.mark.parametrize("variant", ["plain", "fpn", "ohem"])
def test_training_converges_and_detects_every_box(variant):
    tf_keras.utils.set_random_seed(1)
    if variant == "ohem":
        model = _model(extra="hard_example_miner { batch_size: 32 }")
    else:
        model = _model(fpn=variant == "fpn")
    totals, images, gt = _train(model, 250, until=_converged)
    assert np.mean(totals[-10:]) < 0.2 * np.mean(totals[:3]), totals[::25]
    _assert_detects_every_box(model, images, gt)


# -- preprocessing ------------------------------------------------------------
def test_keep_aspect_ratio_size_by_hand():
    assert image_frame.keep_aspect_ratio_size(100, 200, 64, 100) == (50, 100)  # long side caps
    assert image_frame.keep_aspect_ratio_size(100, 150, 64, 100) == (64, 96)  # short side rules
    h, w = image_frame.keep_aspect_ratio_size(tf.constant(100), tf.constant(150), 64, 100)
    assert (int(h), int(w)) == (64, 96)


@pytest.mark.parametrize("pad_to_max, expected_input", [(False, (64, 128)), (True, (128, 128))])
def test_preprocess_resizes_pads_and_reports_true_shapes(pad_to_max, expected_input):
    resizer = image_resizer_pb2.ImageResizer()
    resizer.keep_aspect_ratio.min_dimension = 64
    resizer.keep_aspect_ratio.max_dimension = 100
    resizer.keep_aspect_ratio.pad_to_max_dimension = pad_to_max
    images = tf.fill([2, 100, 200, 3], 255.0)
    frame = image_frame.ImageFrame.from_resizer(resizer, 32, lambda x: x / 255.0)
    inputs, true_shapes = frame(images)
    assert tuple(inputs.shape) == (2,) + expected_input + (3,)
    np.testing.assert_array_equal(true_shapes.numpy(), [[50, 100, 3], [50, 100, 3]])
    np.testing.assert_allclose(inputs[:, :50, :100].numpy(), 1.0)
    assert not inputs[:, 50:].numpy().any() and not inputs[:, :, 100:].numpy().any()


def test_postprocess_boxes_are_relative_to_the_true_image():
    model = _model()
    # Input 64 x 128 holding a 32 x 96 true image; one RoI, zero box codes,
    # logits for class 2.
    rois = tf.constant([[[0.25, 0.25, 0.5, 0.5]]])
    logits = tf.constant([[[0.0, 0.0, 10.0]]])
    predictions = {
        "rois": rois,
        "roi_valid": tf.constant([[True]]),
        "refined_box_encodings": tf.zeros([1, 1, 2, 4]),
        "class_predictions_with_background": logits,
        "image_shape": tf.constant([64, 128]),
    }
    det = model.postprocess(predictions, tf.constant([[32, 96, 3]]))
    assert int(det["num_detections"][0]) == 2
    assert det["detection_classes"][0, 0] == 2
    # y: 0.25..0.5 of 64 px = 16..32 px of the 32 px image (clipped to 1);
    # x: 32..64 px of the 96 px image.
    np.testing.assert_allclose(det["detection_boxes"][0, 0], [0.5, 1 / 3, 1.0, 2 / 3], rtol=1e-5)
    # An invalid RoI never becomes a detection.
    predictions["roi_valid"] = tf.constant([[False]])
    assert int(model.postprocess(predictions, tf.constant([[32, 96, 3]]))["num_detections"][0]) == 0


# -- proposals, stride, FLOPs ---------------------------------------------------
def _box_classifier_rois(concrete_fn):
    """Number of RoIs each CropAndResize in the traced graph crops."""
    counts = []

    def walk(graph):
        for op in graph.get_operations():
            if op.type == "CropAndResize":
                counts.append(op.outputs[0].shape[0])
            if op.type in ("PartitionedCall", "StatefulPartitionedCall"):
                walk(graph._get_function(op.get_attr("f").name).graph)  # noqa: SLF001

    walk(concrete_fn.graph)
    return counts


@pytest.mark.parametrize("num_proposals", [10, 50])
@pytest.mark.parametrize("benchmark_mode", [False, True])
def test_test_time_proposals_are_honoured_exactly(num_proposals, benchmark_mode):
    model = _model(benchmark_mode=benchmark_mode)
    model.max_proposals = num_proposals
    images = tf.random.uniform([2, 96, 96, 3], 0, 255, seed=3)

    @tf.function
    def run(images):
        inputs, true_shapes = model.preprocess(images)
        predictions = model.predict(inputs, true_shapes, training=False)
        return predictions, model.postprocess(predictions, true_shapes)

    predictions, detections = run(images)
    concrete = run.get_concrete_function(images)
    assert _box_classifier_rois(concrete) == [2 * num_proposals]
    assert predictions["class_predictions_with_background"].shape == (2, num_proposals, 3)
    assert predictions["refined_box_encodings"].shape == (2, num_proposals, 2, 4)
    num = predictions["num_proposals"].numpy()
    if benchmark_mode:
        np.testing.assert_array_equal(num, [num_proposals] * 2)
        assert predictions["proposal_valid"].numpy().all()
        # Every slot holds a real box (the best pre-NMS boxes fill the gaps).
        areas = box_ops.area(predictions["proposal_boxes"]).numpy()
        assert (areas > 0).all()
    else:
        assert (num <= num_proposals).all()
        np.testing.assert_array_equal(
            predictions["proposal_valid"].numpy(), np.arange(num_proposals)[None] < num[:, None]
        )
    assert detections["detection_boxes"].shape == (2, 100, 4)


def test_stage_methods_compose_to_detect():
    model = _model()
    images = tf.random.uniform([1, 96, 128, 3], 0, 255, seed=5)

    @tf.function
    def staged(images):
        inputs, true_shapes = model.preprocess(images)
        features = model.extract_features(inputs)
        first = model.propose(features, true_shapes)
        second = model.classify_boxes(features, first["proposal_boxes"])
        return model.postprocess({**first, **second}, true_shapes)

    staged_out = staged(images)
    detect_out = tf.function(model.detect)(images)
    for key in ("detection_boxes", "detection_scores", "detection_classes", "num_detections"):
        np.testing.assert_allclose(staged_out[key].numpy(), detect_out[key].numpy(), rtol=1e-5)


@pytest.mark.parametrize("fpn", [False, True])
def test_unknown_input_sizes_give_the_same_detections(fpn):
    # The exported signature has unknown sizes: anchors and resizing are then
    # computed in the graph instead of being constants.
    model = _model(fpn=fpn)
    images = tf.random.uniform([1, 80, 130, 3], 0, 255, seed=7)
    dynamic = tf.function(
        model.detect, input_signature=[tf.TensorSpec([None, None, None, 3], tf.float32)]
    )(images)
    static = tf.function(model.detect)(images)
    for key in ("detection_boxes", "detection_scores", "num_detections"):
        np.testing.assert_allclose(dynamic[key].numpy(), static[key].numpy(), atol=1e-5)


def test_output_stride_8_doubles_the_first_stage_side():
    sides = {}
    for stride in (8, 16):
        model = _model(stride=stride)
        inputs, _ = model.preprocess(tf.zeros([1, 96, 128, 3]))
        features = model.extract_features(inputs)
        sides[stride] = tuple(features["rpn_maps"].shape[1:3])
        anchors = model.rpn.anchors(features["rpn_maps"], features["image_shape"])
        assert anchors.shape[0] == sides[stride][0] * sides[stride][1] * 12
    assert sides[16] == (6, 8)
    assert sides[8] == (12, 16)


def _count_flops(fn, spec):
    try:
        from detbench.benchmark.flops import count_flops
    except ImportError:
        count_flops = None
    if count_flops is not None:
        return count_flops(fn, spec)
    graph = tf.function(fn).get_concrete_function(spec).graph
    opts = tf.compat.v1.profiler.ProfileOptionBuilder.float_operation()
    return tf.compat.v1.profiler.profile(graph, options=opts).total_float_ops


def test_box_classifier_flops_grow_linearly_with_proposals():
    model = _model(benchmark_mode=True)
    model.detect(tf.zeros([1, 96, 96, 3]))  # build the variables
    spec = tf.TensorSpec([1, 96, 96, 3], tf.float32)
    flops = {}
    for n in (10, 100):
        model.max_proposals = n
        flops[n] = _count_flops(lambda x: model.detect(x), spec)
    # Per RoI, by hand (tiny extractor, stride 16, 64 channels): crop 14x14,
    # 2x2 max-pool (1 FLOP per window element: 14*14*64), the head's 3x3 conv
    # 64->64 on 7x7 (+ bias), global average pool (7*7*64), logits 64->3 and
    # box codes 64->8 (+ biases).
    per_roi = (
        14 * 14 * 64 + 2 * 49 * 9 * 64 * 64 + 49 * 64 + 49 * 64 + 2 * 64 * 3 + 3 + 2 * 64 * 8 + 8
    )
    growth = flops[100] - flops[10]
    assert flops[10] > 0
    # The rest that scales with proposals (box decoding, softmax) is small.
    assert 90 * per_roi <= growth <= 1.1 * 90 * per_roi, (growth, 90 * per_roi)


# -- shipped configs ------------------------------------------------------------
CONFIGS = sorted(glob.glob(os.path.join(REPO_ROOT, "configs", "faster_rcnn_*.pbtxt")))
OVERRIDES = [
    "model.faster_rcnn.image_resizer={keep_aspect_ratio {min_dimension: 128 max_dimension: 160}}",
    "model.faster_rcnn.rpn.max_proposals=16",
    "model.faster_rcnn.rpn.max_proposals_train=64",
    "model.faster_rcnn.rpn.pre_nms_top_k=256",
    "model.faster_rcnn.second_stage_sampler.batch_size=16",
]


@pytest.mark.slow
@pytest.mark.parametrize("path", CONFIGS, ids=[os.path.basename(p) for p in CONFIGS])
def test_config_builds_trains_one_step_and_detects(path):
    import detbench.feature_extractors  # noqa: F401
    from detbench.config import load_pipeline
    from detbench.feature_extractors.base import FEATURE_EXTRACTORS

    pipeline = load_pipeline(path, OVERRIDES, check_registry=False)
    extractor = pipeline.model.faster_rcnn.feature_extractor.type
    if extractor not in FEATURE_EXTRACTORS:
        pytest.skip(f"feature extractor {extractor!r} is not registered yet")
    model = build_model(pipeline.model, is_training=True)
    images = tf.random.uniform([1, 120, 150, 3], 0, 255, seed=1)
    gt = {
        "groundtruth_boxes": tf.constant([[[0.1, 0.1, 0.6, 0.5], [0.4, 0.5, 0.9, 0.9]]]),
        "groundtruth_classes": tf.constant([[1, 3]]),
        "num_groundtruth_boxes": tf.constant([2]),
    }
    # The training step runs eagerly: tracing a big backbone's gradient graph
    # costs ~5x the step itself, and graph mode is covered by the tiny models.
    step = _train_step_fn(model, tf_keras.optimizers.SGD(1e-3), eager=True)
    total, losses = step(images, gt)
    assert np.isfinite(float(total)) and len(losses) == 4
    detections = tf.function(model.detect)(images)
    assert detections["detection_boxes"].shape == (1, 100, 4)
    assert np.isfinite(detections["detection_scores"].numpy()).all()


def test_weights_path_initialises_first_stage_and_box_classifier(tmp_path):
    source = _model()
    path = str(tmp_path / "tiny_backbone.weights.h5")
    source.feature_extractor.build_backbone().save_weights(path)
    config = _config().faster_rcnn
    config.feature_extractor.weights_path = path
    model = FasterRcnn.from_config(config)
    saved = source.feature_extractor.build_backbone().weights
    loaded = model.feature_extractor.build_backbone().weights
    assert len(saved) == len(loaded) > 0
    for a, b in zip(saved, loaded):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    # the first stage shares those variables
    first = {v.ref() for v in model.first_stage_model.weights}
    assert first <= {v.ref() for v in loaded}
