import numpy as np
import pytest
import tensorflow as tf
from google.protobuf import text_format

from detbench.core import post_processing
from detbench.protos import post_processing_pb2
from tests.numpy_reference import iou as np_iou


def np_nms(boxes, scores, iou_threshold, score_threshold, max_out):
    keep = []
    for i in np.argsort(-scores, kind="stable"):
        if len(keep) == max_out or not scores[i] > score_threshold:
            break
        if all(np_iou(boxes[i], boxes[j]) <= iou_threshold for j in keep):
            keep.append(i)
    return keep


def np_batch_multiclass_nms(
    boxes,
    scores,
    score_threshold,
    iou_threshold,
    per_class,
    total,
    pre_nms_top_k=None,
    clip_window=None,
    agnostic=False,
):
    """Per-class greedy NMS, then the top ``total`` over all classes."""
    batch, _, q, _ = boxes.shape
    num_classes = scores.shape[2]
    out = {
        "detection_boxes": np.zeros((batch, total, 4), np.float32),
        "detection_scores": np.zeros((batch, total), np.float32),
        "detection_classes": np.zeros((batch, total), np.float32),
        "num_detections": np.zeros(batch, np.int32),
    }
    for b in range(batch):
        img_boxes = boxes[b]
        if clip_window is not None:
            ymin, xmin, ymax, xmax = clip_window[b]
            img_boxes = np.clip(img_boxes, [ymin, xmin, ymin, xmin], [ymax, xmax, ymax, xmax])
        found = []  # (score, class, box)
        if agnostic:
            best = scores[b].argmax(-1)
            best_scores = scores[b].max(-1)
            cls_boxes = img_boxes[np.arange(len(best)), best if q > 1 else 0]
            for i in np_nms(cls_boxes, best_scores, iou_threshold, score_threshold, total):
                found.append((best_scores[i], best[i] + 1, cls_boxes[i]))
        else:
            for c in range(num_classes):
                cls_boxes = img_boxes[:, c if q > 1 else 0]
                cls_scores = scores[b, :, c].copy()
                if pre_nms_top_k:
                    cls_scores[np.argsort(-cls_scores)[pre_nms_top_k:]] = -np.inf
                for i in np_nms(cls_boxes, cls_scores, iou_threshold, score_threshold, per_class):
                    found.append((cls_scores[i], c + 1, cls_boxes[i]))
        found.sort(key=lambda t: -t[0])
        found = found[:total]
        out["num_detections"][b] = len(found)
        for j, (score, cls, box) in enumerate(found):
            out["detection_boxes"][b, j] = box
            out["detection_scores"][b, j] = score
            out["detection_classes"][b, j] = cls
    return out


def random_case(seed, batch=2, num=60, num_classes=4, q=1):
    rng = np.random.default_rng(seed)
    yx = rng.uniform(-0.1, 0.8, (batch, num, q, 2))
    hw = rng.uniform(0.05, 0.4, (batch, num, q, 2))
    boxes = np.concatenate([yx, yx + hw], -1).astype(np.float32)
    scores = rng.uniform(0, 1, (batch, num, num_classes)).astype(np.float32)
    return boxes, scores


def assert_same(out, expect):
    for key in ("num_detections", "detection_classes"):
        np.testing.assert_array_equal(out[key].numpy(), expect[key], err_msg=key)
    for key in ("detection_boxes", "detection_scores"):
        np.testing.assert_allclose(out[key].numpy(), expect[key], atol=1e-6, err_msg=key)


@pytest.mark.parametrize("q", [1, 4])
def test_matches_numpy_reference(q):
    boxes, scores = random_case(0, q=q)
    kwargs = dict(
        score_threshold=0.3, iou_threshold=0.5, max_detections_per_class=6, max_total_detections=15
    )
    fn = tf.function(lambda b, s: post_processing.batch_multiclass_nms(b, s, **kwargs))
    out = fn(boxes, scores)
    assert out["detection_boxes"].shape == (2, 15, 4)
    assert out["num_detections"].dtype == tf.int32
    expect = np_batch_multiclass_nms(boxes, scores, 0.3, 0.5, 6, 15)
    assert_same(out, expect)


def test_pre_nms_top_k_and_clip_window():
    boxes, scores = random_case(1, num=40, num_classes=3)
    window = np.array([[0.0, 0.0, 1.0, 1.0], [0.1, 0.2, 0.7, 0.9]], np.float32)
    fn = tf.function(post_processing.batch_multiclass_nms)
    for threshold in (0.1, 0.95):  # top-k applied / skipped (few candidates)
        out = fn(boxes, scores, threshold, 0.4, 8, 20, pre_nms_top_k=5, clip_window=window)
        expect = np_batch_multiclass_nms(
            boxes, scores, threshold, 0.4, 8, 20, pre_nms_top_k=5, clip_window=window
        )
        assert_same(out, expect)
    assert out["detection_boxes"].numpy()[1, :, 0].min() >= 0.0
    # Top-k really restricts: each class keeps at most 5 candidates.
    out = fn(boxes, scores, 0.0, 1.0, 8, 30, pre_nms_top_k=5)
    np.testing.assert_array_equal(out["num_detections"].numpy(), [15, 15])


def test_class_agnostic_matches_reference():
    for q in (1, 3):
        boxes, scores = random_case(2, num=50, num_classes=3, q=q)
        out = tf.function(post_processing.batch_multiclass_nms)(
            boxes, scores, 0.2, 0.5, 100, 12, use_class_agnostic_nms=True
        )
        assert_same(out, np_batch_multiclass_nms(boxes, scores, 0.2, 0.5, 100, 12, agnostic=True))


def test_hand_made_cases():
    boxes = np.array(
        [[[[0, 0, 0.5, 0.5]], [[0, 0, 0.5, 0.52]], [[0.6, 0.6, 1, 1]], [[0, 0, 0.5, 0.5]]]],
        np.float32,
    )
    # anchor 1 overlaps anchor 0 (same class 1) -> suppressed; anchor 3 is the
    # same box but class 2 -> kept; anchor 2 scores under the threshold.
    scores = np.array([[[0.9, 0.0], [0.8, 0.0], [0.05, 0.1], [0.0, 0.7]]], np.float32)
    out = post_processing.batch_multiclass_nms(boxes, scores, 0.2, 0.5, 10, 5)
    np.testing.assert_array_equal(out["num_detections"].numpy(), [2])
    np.testing.assert_allclose(out["detection_scores"].numpy(), [[0.9, 0.7, 0, 0, 0]])
    np.testing.assert_array_equal(out["detection_classes"].numpy(), [[1, 2, 0, 0, 0]])
    np.testing.assert_allclose(
        out["detection_boxes"].numpy()[0, :2], [[0, 0, 0.5, 0.5], [0, 0, 0.5, 0.5]]
    )
    np.testing.assert_array_equal(out["detection_boxes"].numpy()[0, 2:], 0.0)
    # Class-agnostic: the class-2 duplicate is now suppressed by the class-1 box.
    out = post_processing.batch_multiclass_nms(
        boxes, scores, 0.2, 0.5, 10, 5, use_class_agnostic_nms=True
    )
    np.testing.assert_array_equal(out["num_detections"].numpy(), [1])
    np.testing.assert_array_equal(out["detection_classes"].numpy(), [[1, 0, 0, 0, 0]])
    # Score threshold is strict.
    out = post_processing.batch_multiclass_nms(boxes, scores, 0.7, 0.5, 10, 5)
    np.testing.assert_array_equal(out["num_detections"].numpy(), [1])


def test_build_post_processing_and_score_converters():
    config = text_format.Parse(
        """
        batch_non_max_suppression { score_threshold: 0.3 iou_threshold: 0.5
          max_detections_per_class: 6 max_total_detections: 15 pre_nms_top_k: 0 }
        score_converter: SOFTMAX""",
        post_processing_pb2.PostProcessing(),
    )
    nms_fn, convert = post_processing.build_post_processing(config)
    rng = np.random.default_rng(4)
    logits = rng.normal(size=(2, 60, 5)).astype(np.float32)
    scores = convert(logits).numpy()
    probs = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    np.testing.assert_allclose(scores, probs[..., 1:], rtol=1e-5)
    boxes, _ = random_case(5, num=60)
    assert_same(
        tf.function(nms_fn)(boxes, scores), np_batch_multiclass_nms(boxes, scores, 0.3, 0.5, 6, 15)
    )

    config.score_converter = post_processing_pb2.PostProcessing.SIGMOID
    _, convert = post_processing.build_post_processing(config)
    np.testing.assert_allclose(convert(logits).numpy(), 1 / (1 + np.exp(-logits)), rtol=1e-5)
    config.score_converter = post_processing_pb2.PostProcessing.IDENTITY
    _, convert = post_processing.build_post_processing(config)
    np.testing.assert_array_equal(convert(logits).numpy(), logits)
    config.batch_non_max_suppression.iou_threshold = 1.5
    with pytest.raises(ValueError, match="iou_threshold"):
        post_processing.build_post_processing(config)
