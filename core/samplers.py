"""Choosing which anchors / RoIs contribute to a loss.

* ``BalancedPositiveNegativeSampler``: a random minibatch with at most a given
  fraction of positives (Ren et al.'s RPN and second-stage sampling).
* ``HardNegativeMiner``: SSD's hard negative mining (Liu et al.): all
  positives plus the highest-loss negatives, at most k per positive.
* ``ohem_select`` / ``OnlineHardExampleMiner``: OHEM (Shrivastava et al.,
  CVPR 2016): the B hardest RoIs after NMS on the loss.

Everything returns masks with the input's shape (no dynamically shaped
outputs), so it runs inside ``tf.function``.
"""

import numpy as np
import tensorflow as tf


def _ranks(keys):
    """Rank of each entry along the last axis when sorted by descending key."""
    order = tf.argsort(keys, axis=-1, direction="DESCENDING", stable=True)
    return tf.argsort(order, axis=-1, stable=True)


def _seeded_uniform(shape, seed):
    if seed is None:
        return tf.random.uniform(shape)
    if isinstance(seed, int):
        seed = [seed, 0]
    return tf.random.stateless_uniform(shape, seed=tf.cast(seed, tf.int64))


def _selection_mask(scores, keep_count):
    """True for the ``keep_count`` [...] highest ``scores`` along the last axis.

    Entries with score -inf are never selected.
    """
    ranks = _ranks(scores)
    keep = ranks < tf.expand_dims(tf.cast(keep_count, ranks.dtype), -1)
    return tf.logical_and(keep, scores > -float("inf"))


class BalancedPositiveNegativeSampler:
    """Random subsample of at most ``batch_size`` examples, with at most
    ``positive_fraction`` of them positive, the rest filled with negatives."""

    def __init__(self, batch_size=256, positive_fraction=0.5):
        if batch_size <= 0:
            raise ValueError(f"BalancedSampler.batch_size must be > 0, got {batch_size}")
        if not 0.0 <= positive_fraction <= 1.0:
            raise ValueError(
                f"BalancedSampler.positive_fraction must be in [0, 1], got {positive_fraction}"
            )
        self.batch_size = int(batch_size)
        self.positive_fraction = float(positive_fraction)

    def batch_subsample(self, indicator, labels, seed=None):
        """indicator, labels: bool [B, N] (labels True = positive) -> bool [B, N].

        Only entries with ``indicator`` True are eligible.  ``seed`` (int or a
        [2] tensor) makes the draw deterministic (stateless RNG).
        """
        indicator = tf.convert_to_tensor(indicator, tf.bool)
        labels = tf.convert_to_tensor(labels, tf.bool)
        positives = tf.logical_and(indicator, labels)
        negatives = tf.logical_and(indicator, tf.logical_not(labels))
        noise = _seeded_uniform(tf.shape(indicator), seed)  # in [0, 1)
        neg_inf = tf.fill(tf.shape(noise), -float("inf"))

        max_pos = int(self.batch_size * self.positive_fraction)
        num_pos = tf.minimum(tf.reduce_sum(tf.cast(positives, tf.int32), -1), max_pos)
        pos_mask = _selection_mask(tf.where(positives, noise, neg_inf), num_pos)
        num_neg = self.batch_size - num_pos
        neg_mask = _selection_mask(tf.where(negatives, noise, neg_inf), num_neg)
        return tf.logical_or(pos_mask, neg_mask)

    def subsample(self, indicator, labels, seed=None):
        """indicator, labels: bool [N] -> bool [N] (see ``batch_subsample``)."""
        sampled = self.batch_subsample(
            tf.expand_dims(indicator, 0), tf.expand_dims(labels, 0), seed
        )
        return sampled[0]


def _nms_select(boxes, scores, max_output, iou_threshold):
    """One image: bool [N] mask of the (at most ``max_output``) boxes NMS keeps,
    visiting them by descending score; entries with score -inf are skipped."""
    num = tf.shape(scores)[0]
    selected = tf.image.non_max_suppression(
        boxes,
        scores,
        max_output_size=max_output,
        iou_threshold=iou_threshold,
        score_threshold=float(np.finfo(np.float32).min),
    )
    hits = tf.scatter_nd(selected[:, None], tf.ones_like(selected), [num])
    return hits > 0


class HardNegativeMiner:
    """SSD hard negative mining.

    Keeps every positive and the highest-loss negatives, at most
    ``max_negatives_per_positive`` per positive (``min_negatives_per_image``
    when an image has fewer positives), and never more than
    ``num_hard_examples`` negatives (0: no cap).  With ``iou_threshold`` < 1
    and boxes given, negatives are visited by descending loss and one
    overlapping a harder selected negative above that IoU is skipped
    (NMS dedupe, one NMS kernel call per image).
    """

    def __init__(
        self,
        max_negatives_per_positive=3,
        min_negatives_per_image=0,
        num_hard_examples=3000,
        iou_threshold=0.99,
    ):
        if max_negatives_per_positive < 0 or min_negatives_per_image < 0:
            raise ValueError(
                "HardNegativeMiner: max_negatives_per_positive and "
                "min_negatives_per_image must be >= 0"
            )
        if num_hard_examples < 0:
            raise ValueError(
                f"HardNegativeMiner.num_hard_examples must be >= 0, got {num_hard_examples}"
            )
        self.max_negatives_per_positive = float(max_negatives_per_positive)
        self.min_negatives_per_image = int(min_negatives_per_image)
        self.num_hard_examples = int(num_hard_examples)
        self.iou_threshold = float(iou_threshold)

    def __call__(
        self,
        classification_losses,
        positives,
        negatives=None,
        localization_losses=None,
        decoded_boxes=None,
    ):
        """classification_losses [B, N], positives bool [B, N], negatives bool
        [B, N] (default: not positive), localization_losses [B, N] (added to
        the ranking loss when given), decoded_boxes [B, N, 4] (for the NMS
        dedupe) -> float32 [B, N] mask of selected examples."""
        losses = tf.convert_to_tensor(classification_losses, tf.float32)
        if localization_losses is not None:
            losses = losses + tf.convert_to_tensor(localization_losses, tf.float32)
        positives = tf.convert_to_tensor(positives, tf.bool)
        if negatives is None:
            negatives = tf.logical_not(positives)
        negatives = tf.logical_and(
            tf.convert_to_tensor(negatives, tf.bool), tf.logical_not(positives)
        )

        num_pos = tf.reduce_sum(tf.cast(positives, tf.float32), -1)
        num_neg = tf.cast(tf.floor(num_pos * self.max_negatives_per_positive), tf.int32)
        num_neg = tf.maximum(num_neg, self.min_negatives_per_image)
        if self.num_hard_examples > 0:
            num_neg = tf.minimum(num_neg, self.num_hard_examples)

        neg_scores = tf.where(negatives, losses, -float("inf"))
        if decoded_boxes is not None and self.iou_threshold < 1.0:
            boxes = tf.convert_to_tensor(decoded_boxes, tf.float32)
            hard = tf.map_fn(
                lambda args: _nms_select(args[0], args[1], args[2], self.iou_threshold),
                (boxes, neg_scores, num_neg),
                fn_output_signature=tf.TensorSpec(neg_scores.shape[1:], tf.bool),
            )
        else:
            hard = _selection_mask(neg_scores, num_neg)
        return tf.cast(tf.logical_or(positives, hard), tf.float32)


def ohem_select(losses, boxes, valid, batch_size, iou_threshold=0.7):
    """OHEM for one image: losses [N] (total loss per RoI), boxes [N, 4],
    valid bool [N] -> float32 [N] 0/1 mask of the ``batch_size`` hardest valid
    RoIs, after suppressing any RoI that overlaps a harder kept RoI above
    ``iou_threshold`` (NMS with the loss as score; >= 1 disables it)."""
    losses = tf.convert_to_tensor(losses, tf.float32)
    scores = tf.where(tf.convert_to_tensor(valid, tf.bool), losses, -float("inf"))
    if iou_threshold < 1.0:
        mask = _nms_select(
            tf.convert_to_tensor(boxes, tf.float32), scores, batch_size, iou_threshold
        )
    else:
        mask = _selection_mask(scores[None], tf.constant([batch_size]))[0]
    return tf.cast(mask, tf.float32)


class OnlineHardExampleMiner:
    """Batched ``ohem_select``: losses [B, N], boxes [B, N, 4], valid [B, N]
    (default all) -> float32 [B, N] mask, ``batch_size`` RoIs per image."""

    def __init__(self, batch_size=128, iou_threshold=0.7):
        if batch_size <= 0:
            raise ValueError(f"Ohem.batch_size must be > 0, got {batch_size}")
        self.batch_size = int(batch_size)
        self.iou_threshold = float(iou_threshold)

    def __call__(self, losses, boxes, valid=None):
        losses = tf.convert_to_tensor(losses, tf.float32)
        boxes = tf.convert_to_tensor(boxes, tf.float32)
        if valid is None:
            valid = tf.ones_like(losses, tf.bool)
        valid = tf.convert_to_tensor(valid, tf.bool)
        return tf.map_fn(
            lambda args: ohem_select(
                args[0], args[1], args[2], self.batch_size, self.iou_threshold
            ),
            (losses, boxes, valid),
            fn_output_signature=tf.TensorSpec(losses.shape[1:], tf.float32),
        )


def build_sampler(config):
    """BalancedSampler proto -> BalancedPositiveNegativeSampler."""
    return BalancedPositiveNegativeSampler(config.batch_size, config.positive_fraction)


def build_hard_negative_miner(config):
    """HardNegativeMiner proto -> HardNegativeMiner."""
    return HardNegativeMiner(
        config.max_negatives_per_positive,
        config.min_negatives_per_image,
        config.num_hard_examples,
        config.iou_threshold,
    )


def build_ohem(config):
    """Ohem proto -> OnlineHardExampleMiner."""
    return OnlineHardExampleMiner(config.batch_size, config.iou_threshold)
