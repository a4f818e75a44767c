"""Post-processing: score conversion and batched multi-class NMS.

``batch_multiclass_nms`` runs per-class NMS for the whole batch in one
``tf.image.combined_non_max_suppression`` kernel call (classes processed in
parallel inside the kernel), after an optional per-class pre-NMS top-k that
removes low-ranked candidates before the kernel builds its queues.  The
class-agnostic variant takes each anchor's best class and runs one
single-class NMS kernel per image.

The pre-NMS top-k only runs when some class has more than k candidates above
the score threshold: ``tf.math.top_k`` is slow on CPU (about 20 ms for 90
classes x 1917 anchors at k = 1000, more than the NMS kernel itself), so it
pays only for very many anchors (RetinaNet-size N) at low thresholds.
"""

import functools

import tensorflow as tf

from detbench.protos import post_processing_pb2


def clip_to_window(boxes, window):
    """boxes [B, ..., 4], window [B, 4] (ymin, xmin, ymax, xmax) -> clipped."""
    boxes = tf.convert_to_tensor(boxes, tf.float32)
    window = tf.convert_to_tensor(window, tf.float32)
    window = tf.reshape(window, [-1] + [1] * (boxes.shape.rank - 2) + [4])
    lo = tf.concat([window[..., :2], window[..., :2]], -1)
    hi = tf.concat([window[..., 2:], window[..., 2:]], -1)
    return tf.clip_by_value(boxes, lo, hi)


def _keep_pre_nms_top_k(scores, k, score_threshold):
    """Set every score below its class's k-th best (per image) to -inf.

    The per-class top-k is costly on CPU (a [B, C, N] top_k), so it only runs
    when some class has more than k candidates above ``score_threshold``.
    """
    num_anchors = scores.shape[1]
    if num_anchors is not None and k >= num_anchors:
        return scores

    def mask_below_kth():
        per_class = tf.transpose(scores, [0, 2, 1])  # [B, C, N]
        kth = tf.math.top_k(
            per_class, k=tf.minimum(k, tf.shape(per_class)[-1]), sorted=False
        ).values
        kth = tf.reduce_min(kth, -1)  # [B, C]
        return tf.where(scores >= kth[:, None, :], scores, -float("inf"))

    num_candidates = tf.reduce_sum(tf.cast(scores > score_threshold, tf.int32), 1)
    return tf.cond(tf.reduce_max(num_candidates) > k, mask_below_kth, lambda: scores)


def _class_agnostic_nms(boxes, scores, score_threshold, iou_threshold, max_total):
    """boxes [B, N, q, 4], scores [B, N, C]: best class per anchor, one NMS."""
    classes = tf.argmax(scores, -1, output_type=tf.int32)  # [B, N]
    best = tf.reduce_max(scores, -1)
    if boxes.shape[2] == 1:
        boxes = boxes[:, :, 0]
    else:
        boxes = tf.gather(boxes, classes, axis=2, batch_dims=2)

    def one_image(args):
        img_boxes, img_scores, img_classes = args
        # The kernel itself: tf.image.non_max_suppression_padded wraps it in
        # a batched Python implementation that takes seconds to trace.
        idx, num = tf.raw_ops.NonMaxSuppressionV4(
            boxes=img_boxes,
            scores=img_scores,
            max_output_size=max_total,
            iou_threshold=iou_threshold,
            score_threshold=score_threshold,
            pad_to_max_output_size=True,
        )
        valid = tf.range(max_total) < num
        validf = tf.cast(valid, tf.float32)
        return (
            tf.gather(img_boxes, idx) * validf[:, None],
            tf.gather(img_scores, idx) * validf,
            tf.cast(tf.gather(img_classes, idx) + 1, tf.float32) * validf,
            num,
        )

    out_boxes, out_scores, out_classes, num = tf.map_fn(
        one_image,
        (boxes, best, classes),
        fn_output_signature=(
            tf.TensorSpec([max_total, 4], tf.float32),
            tf.TensorSpec([max_total], tf.float32),
            tf.TensorSpec([max_total], tf.float32),
            tf.TensorSpec([], tf.int32),
        ),
    )
    return out_boxes, out_scores, out_classes, num


def batch_multiclass_nms(
    boxes,
    scores,
    score_threshold,
    iou_threshold,
    max_detections_per_class,
    max_total_detections,
    use_class_agnostic_nms=False,
    pre_nms_top_k=None,
    clip_window=None,
):
    """Per-class NMS over a batch.

    Args:
      boxes: [B, N, q, 4] normalized; q = 1 (shared by all classes) or
        num_classes (class-specific).
      scores: [B, N, num_classes], no background column.
      score_threshold: keep scores strictly above it.
      iou_threshold: suppress a box overlapping a higher-scored kept box of
        the same class with IoU above it.
      max_detections_per_class, max_total_detections: output caps.
      use_class_agnostic_nms: one NMS over all classes (each anchor with its
        best class) instead of per-class NMS.
      pre_nms_top_k: per class (per image), only the top k scores enter NMS
        (None or 0: all).
      clip_window: [B, 4] normalized true-image window; boxes are clipped to
        it before NMS (None: no clipping).

    Returns dict: detection_boxes [B, T, 4], detection_scores [B, T],
    detection_classes [B, T] float32 1-based, num_detections [B] int32, with
    T = max_total_detections, sorted by score and zero-padded.
    """
    boxes = tf.convert_to_tensor(boxes, tf.float32)
    scores = tf.convert_to_tensor(scores, tf.float32)
    if boxes.shape.rank != 4 or scores.shape.rank != 3:
        raise ValueError(
            "batch_multiclass_nms: boxes must be [B, N, q, 4] and scores "
            f"[B, N, num_classes], got {boxes.shape} and {scores.shape}"
        )
    if clip_window is not None:
        boxes = clip_to_window(boxes, clip_window)
    if pre_nms_top_k:
        scores = _keep_pre_nms_top_k(scores, int(pre_nms_top_k), score_threshold)

    if use_class_agnostic_nms:
        out_boxes, out_scores, out_classes, num = _class_agnostic_nms(
            boxes, scores, score_threshold, iou_threshold, max_total_detections
        )
    else:
        out_boxes, out_scores, classes0, num = tf.image.combined_non_max_suppression(
            boxes,
            scores,
            max_output_size_per_class=max_detections_per_class,
            max_total_size=max_total_detections,
            iou_threshold=iou_threshold,
            score_threshold=score_threshold,
            pad_per_class=False,
            clip_boxes=False,
        )
        valid = tf.range(max_total_detections)[None, :] < num[:, None]
        out_classes = tf.where(valid, classes0 + 1.0, 0.0)
    return {
        "detection_boxes": out_boxes,
        "detection_scores": out_scores,
        "detection_classes": out_classes,
        "num_detections": tf.cast(num, tf.int32),
    }


def identity_scores(logits):
    return tf.convert_to_tensor(logits, tf.float32)


def sigmoid_scores(logits):
    return tf.sigmoid(tf.cast(logits, tf.float32))


def softmax_scores(logits):
    """Softmax over [..., 1 + num_classes]; drops the background column 0."""
    return tf.nn.softmax(tf.cast(logits, tf.float32), -1)[..., 1:]


_SCORE_CONVERTERS = {
    post_processing_pb2.PostProcessing.IDENTITY: identity_scores,
    post_processing_pb2.PostProcessing.SIGMOID: sigmoid_scores,
    post_processing_pb2.PostProcessing.SOFTMAX: softmax_scores,
}


def build_score_converter(converter):
    """PostProcessing.ScoreConverter enum value -> fn(logits) -> scores."""
    if converter not in _SCORE_CONVERTERS:
        raise ValueError(
            f"PostProcessing.score_converter: unknown value {converter}; "
            "known: IDENTITY, SIGMOID, SOFTMAX"
        )
    return _SCORE_CONVERTERS[converter]


def build_post_processing(config):
    """PostProcessing proto -> (nms_fn, score_converter_fn).

    ``nms_fn(boxes, scores, clip_window=None)`` is ``batch_multiclass_nms``
    with the proto's settings bound.
    """
    nms = config.batch_non_max_suppression
    if not 0.0 <= nms.iou_threshold <= 1.0:
        raise ValueError(
            f"BatchNonMaxSuppression.iou_threshold must be in [0, 1], got {nms.iou_threshold}"
        )
    if nms.max_detections_per_class <= 0 or nms.max_total_detections <= 0:
        raise ValueError(
            "BatchNonMaxSuppression.max_detections_per_class and max_total_detections must be > 0"
        )
    nms_fn = functools.partial(
        batch_multiclass_nms,
        score_threshold=nms.score_threshold,
        iou_threshold=nms.iou_threshold,
        max_detections_per_class=nms.max_detections_per_class,
        max_total_detections=nms.max_total_detections,
        use_class_agnostic_nms=nms.use_class_agnostic_nms,
        pre_nms_top_k=nms.pre_nms_top_k or None,
    )
    return nms_fn, build_score_converter(config.score_converter)
