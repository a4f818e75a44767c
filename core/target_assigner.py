"""Target assignment: anchors + groundtruth -> classification and box targets.

Per anchor: ``cls_targets`` int32 (gt class, 1-based; 0 = background),
``cls_weights`` (gt weight for positives, negative_class_weight for
negatives, 0 for ignored), ``reg_targets`` [4] (encoded matched gt box,
zeros elsewhere), ``reg_weights`` (gt weight for positives, 0 elsewhere) and
``match`` int32 (see matchers.Match).  Anchors matched to a crowd box
(gt_is_crowd) become ignored: never positive, weight 0.
"""

import tensorflow as tf

from detbench.core import box_ops, matchers as matchers_lib

KEYS = ("cls_targets", "cls_weights", "reg_targets", "reg_weights", "match")


class TargetAssigner:
    def __init__(self, matcher, box_coder, similarity_fn=box_ops.iou, negative_class_weight=1.0):
        """similarity_fn(gt_boxes [M, 4], anchors [N, 4]) -> [M, N]."""
        self.matcher, self.box_coder = matcher, box_coder
        self.similarity_fn = similarity_fn
        self.negative_class_weight = float(negative_class_weight)

    def assign(
        self, anchors, gt_boxes, gt_labels, num_valid_gt=None, gt_weights=None, gt_is_crowd=None
    ):
        """anchors [N, 4], gt_boxes [M, 4], gt_labels [M] -> dict of targets.

        Rows at or beyond num_valid_gt (scalar) are padding and never match.
        gt_weights [M] default 1; gt_is_crowd bool [M] default False.
        """
        anchors = tf.convert_to_tensor(anchors, tf.float32)
        gt_boxes = tf.convert_to_tensor(gt_boxes, tf.float32)
        gt_labels = tf.cast(gt_labels, tf.int32)
        m = tf.shape(gt_boxes)[0]
        valid = (
            tf.ones([m], tf.bool)
            if num_valid_gt is None
            else tf.range(m) < tf.cast(num_valid_gt, tf.int32)
        )
        if gt_weights is None:
            gt_weights = tf.ones([m], tf.float32)
        gt_weights = tf.cast(gt_weights, tf.float32)

        match = self.matcher.match(self.similarity_fn(gt_boxes, anchors), valid)
        if gt_is_crowd is not None:
            crowd = tf.cast(gt_is_crowd, tf.bool) & valid
            hit_crowd = tf.gather(tf.concat([[False, False], crowd], 0), match.match_results + 2)
            match = matchers_lib.Match(
                tf.where(hit_crowd, matchers_lib.IGNORED, match.match_results)
            )

        positive = match.matched_mask()
        matched_boxes = match.gather_based_on_match(
            gt_boxes, unmatched_value=[0.0, 0.0, 1.0, 1.0], ignored_value=[0.0, 0.0, 1.0, 1.0]
        )
        reg_targets = tf.where(
            positive[:, None], self.box_coder.encode(matched_boxes, anchors), 0.0
        )
        return {
            "cls_targets": match.gather_based_on_match(gt_labels, 0, 0),
            "cls_weights": match.gather_based_on_match(gt_weights, self.negative_class_weight, 0.0),
            "reg_targets": reg_targets,
            "reg_weights": match.gather_based_on_match(gt_weights, 0.0, 0.0),
            "match": match.match_results,
        }

    def batch_assign(self, anchors, gt_boxes, gt_labels, num_gt, gt_weights=None, gt_is_crowd=None):
        """Padded batch: anchors [N, 4] or [B, N, 4], gt_boxes [B, M, 4],
        gt_labels [B, M], num_gt [B] (optional gt_weights [B, M], gt_is_crowd
        [B, M]) -> the keys of ``assign``, each with a leading batch dim."""
        anchors = tf.convert_to_tensor(anchors, tf.float32)
        gt_boxes = tf.convert_to_tensor(gt_boxes, tf.float32)
        batch_size = tf.shape(gt_boxes)[0]
        if anchors.shape.rank == 2:
            anchors = tf.broadcast_to(
                anchors[None], tf.concat([[batch_size], tf.shape(anchors)], 0)
            )
        m = tf.shape(gt_boxes)[1]
        if gt_weights is None:
            gt_weights = tf.ones([batch_size, m], tf.float32)
        if gt_is_crowd is None:
            gt_is_crowd = tf.zeros([batch_size, m], tf.bool)
        elems = (
            anchors,
            gt_boxes,
            tf.cast(gt_labels, tf.int32),
            tf.cast(num_gt, tf.int32),
            tf.cast(gt_weights, tf.float32),
            tf.cast(gt_is_crowd, tf.bool),
        )
        signature = {
            "cls_targets": tf.TensorSpec(None, tf.int32),
            "cls_weights": tf.TensorSpec(None, tf.float32),
            "reg_targets": tf.TensorSpec(None, tf.float32),
            "reg_weights": tf.TensorSpec(None, tf.float32),
            "match": tf.TensorSpec(None, tf.int32),
        }
        out = tf.map_fn(lambda e: self.assign(*e), elems, fn_output_signature=signature)
        n = anchors.shape[1]
        for key in KEYS:  # map_fn loses the static anchor dim; restore it
            out[key].set_shape([gt_boxes.shape[0], n] + ([4] if key == "reg_targets" else []))
        return out
