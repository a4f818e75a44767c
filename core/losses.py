"""Per-anchor weighted losses.

Every loss is a callable ``loss(prediction, target, weights) -> [B, N]``: one
value per anchor (summed over box coordinates or classes), multiplied by the
anchor's weight and never reduced, so samplers can rank anchors by it and the
meta-architecture normalizes it as it likes.

Shapes: localization losses take prediction / target [B, N, 4] (any code
size); classification losses take logits [B, N, C] and targets one-hot
[B, N, C] (or integer class ids [B, N], one-hot encoded here).  ``weights`` is
[B, N]; the sigmoid losses also accept per-class weights [B, N, C].
"""

import tensorflow as tf


def _one_hot_if_int(target, num_classes):
    target = tf.convert_to_tensor(target)
    if target.dtype.is_integer:
        return tf.one_hot(target, num_classes, dtype=tf.float32)
    return tf.cast(target, tf.float32)


class WeightedSmoothL1LocalizationLoss:
    """Huber loss with threshold ``delta`` per coordinate, summed over coords:
    0.5 x^2 if |x| <= delta else delta (|x| - 0.5 delta)."""

    def __init__(self, delta=1.0):
        if delta <= 0:
            raise ValueError(f"WeightedSmoothL1Loss.delta must be > 0, got {delta}")
        self.delta = float(delta)

    def __call__(self, prediction, target, weights):
        diff = tf.abs(tf.cast(prediction, tf.float32) - tf.cast(target, tf.float32))
        quadratic = tf.minimum(diff, self.delta)
        linear = diff - quadratic
        per_coord = 0.5 * quadratic * quadratic + self.delta * linear
        return tf.reduce_sum(per_coord, -1) * tf.cast(weights, tf.float32)


class WeightedL2LocalizationLoss:
    """0.5 * sum over coordinates of the squared difference."""

    def __call__(self, prediction, target, weights):
        diff = tf.cast(prediction, tf.float32) - tf.cast(target, tf.float32)
        return 0.5 * tf.reduce_sum(diff * diff, -1) * tf.cast(weights, tf.float32)


class WeightedSoftmaxClassificationLoss:
    """Softmax cross-entropy of ``logits / logit_scale``."""

    def __init__(self, logit_scale=1.0):
        if logit_scale <= 0:
            raise ValueError(f"WeightedSoftmaxLoss.logit_scale must be > 0, got {logit_scale}")
        self.logit_scale = float(logit_scale)

    def __call__(self, prediction, target, weights):
        logits = tf.cast(prediction, tf.float32) / self.logit_scale
        target = _one_hot_if_int(target, tf.shape(logits)[-1])
        loss = tf.nn.softmax_cross_entropy_with_logits(labels=target, logits=logits)
        return loss * tf.cast(weights, tf.float32)


def _class_weights(weights):
    weights = tf.cast(weights, tf.float32)
    return weights[..., None] if weights.shape.rank == 2 else weights


class WeightedSigmoidClassificationLoss:
    """Independent sigmoid cross-entropy per class, summed over classes."""

    def __call__(self, prediction, target, weights):
        logits = tf.cast(prediction, tf.float32)
        target = _one_hot_if_int(target, tf.shape(logits)[-1])
        loss = tf.nn.sigmoid_cross_entropy_with_logits(labels=target, logits=logits)
        return tf.reduce_sum(loss * _class_weights(weights), -1)


class SigmoidFocalClassificationLoss:
    """Focal loss (Lin et al.): alpha_t (1 - p_t)^gamma CE, summed over classes."""

    def __init__(self, gamma=2.0, alpha=0.25):
        self.gamma = float(gamma)
        self.alpha = None if alpha is None else float(alpha)

    def __call__(self, prediction, target, weights):
        logits = tf.cast(prediction, tf.float32)
        target = _one_hot_if_int(target, tf.shape(logits)[-1])
        ce = tf.nn.sigmoid_cross_entropy_with_logits(labels=target, logits=logits)
        prob = tf.sigmoid(logits)
        p_t = target * prob + (1.0 - target) * (1.0 - prob)
        loss = ce if self.gamma == 0 else tf.pow(1.0 - p_t, self.gamma) * ce
        if self.alpha is not None:
            loss *= target * self.alpha + (1.0 - target) * (1.0 - self.alpha)
        return tf.reduce_sum(loss * _class_weights(weights), -1)


# What an unset loss is, for every meta-architecture (the one place these
# defaults live): softmax classification, smooth L1 localization.
DEFAULT_CLASSIFICATION_LOSS = "softmax"
DEFAULT_LOCALIZATION_LOSS = "smooth_l1"


def classification_loss_kind(config):
    """ClassificationLoss proto -> its kind ("softmax" when unset)."""
    return config.WhichOneof("classification_loss") or DEFAULT_CLASSIFICATION_LOSS


def build_localization_loss(config):
    """LocalizationLoss proto -> loss callable (smooth L1, delta 1, when unset)."""
    kind = config.WhichOneof("localization_loss") or DEFAULT_LOCALIZATION_LOSS
    if kind == "smooth_l1":
        return WeightedSmoothL1LocalizationLoss(config.smooth_l1.delta)
    if kind == "l2":
        return WeightedL2LocalizationLoss()
    raise ValueError(f"LocalizationLoss: unknown kind {kind} (smooth_l1, l2)")


def build_classification_loss(config):
    """ClassificationLoss proto -> loss callable (softmax, logit scale 1, when unset)."""
    kind = classification_loss_kind(config)
    if kind == "softmax":
        return WeightedSoftmaxClassificationLoss(config.softmax.logit_scale)
    if kind == "sigmoid":
        return WeightedSigmoidClassificationLoss()
    if kind == "focal":
        return SigmoidFocalClassificationLoss(config.focal.gamma, config.focal.alpha)
    raise ValueError(f"ClassificationLoss: unknown kind {kind} (softmax, sigmoid, focal)")


def build_loss(config):
    """Loss proto (SSD's ``loss``, a two-stage model's ``second_stage_loss``;
    unset parts take the defaults above) -> (classification_loss,
    localization_loss, classification_weight, localization_weight)."""
    return (
        build_classification_loss(config.classification_loss),
        build_localization_loss(config.localization_loss),
        config.classification_weight,
        config.localization_weight,
    )
