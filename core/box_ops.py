"""Box arithmetic on normalized or absolute [ymin, xmin, ymax, xmax] boxes.

Every function takes float tensors whose last dimension is 4; pairwise
functions (``intersection``, ``iou``, ``ioa``) take ``[N, 4] x [M, 4] -> [N, M]``
or batched ``[B, N, 4] x [B, M, 4] -> [B, N, M]`` (any equal leading dims).
Degenerate boxes (ymax < ymin or xmax < xmin) count as zero area, and pairs
whose union is empty give IoU 0, never NaN, with finite gradients.
"""

import tensorflow as tf


def _unstack(boxes):
    return tf.unstack(tf.convert_to_tensor(boxes, tf.float32), 4, axis=-1)


def area(boxes):
    """[..., 4] -> [...]: box areas, zero for degenerate boxes."""
    ymin, xmin, ymax, xmax = _unstack(boxes)
    return tf.maximum(ymax - ymin, 0.0) * tf.maximum(xmax - xmin, 0.0)


def intersection(boxes1, boxes2):
    """[..., N, 4] x [..., M, 4] -> [..., N, M] intersection areas."""
    b1 = tf.expand_dims(tf.convert_to_tensor(boxes1, tf.float32), -2)
    b2 = tf.expand_dims(tf.convert_to_tensor(boxes2, tf.float32), -3)
    ymin1, xmin1, ymax1, xmax1 = _unstack(b1)
    ymin2, xmin2, ymax2, xmax2 = _unstack(b2)
    h = tf.maximum(tf.minimum(ymax1, ymax2) - tf.maximum(ymin1, ymin2), 0.0)
    w = tf.maximum(tf.minimum(xmax1, xmax2) - tf.maximum(xmin1, xmin2), 0.0)
    return h * w


def _safe_divide(num, den):
    positive = den > 0.0
    return tf.where(positive, num / tf.where(positive, den, 1.0), 0.0)


def iou(boxes1, boxes2):
    """[..., N, 4] x [..., M, 4] -> [..., N, M] intersection over union."""
    inter = intersection(boxes1, boxes2)
    union = tf.expand_dims(area(boxes1), -1) + tf.expand_dims(area(boxes2), -2) - inter
    return _safe_divide(inter, union)


def ioa(boxes1, boxes2):
    """[..., N, 4] x [..., M, 4] -> [..., N, M]: intersection / area(boxes2).

    Entry (i, j) is the fraction of boxes2[j] covered by boxes1[i] (the TF
    Object Detection API's convention); 0 where boxes2[j] has zero area.
    """
    return _safe_divide(intersection(boxes1, boxes2), tf.expand_dims(area(boxes2), -2))


def clip_to_window(boxes, window):
    """Clips [..., 4] boxes to window [ymin, xmin, ymax, xmax] (same units)."""
    ymin, xmin, ymax, xmax = _unstack(boxes)
    wymin, wxmin, wymax, wxmax = _unstack(window)
    ymin = tf.clip_by_value(ymin, wymin, wymax)
    ymax = tf.clip_by_value(ymax, wymin, wymax)
    xmin = tf.clip_by_value(xmin, wxmin, wxmax)
    xmax = tf.clip_by_value(xmax, wxmin, wxmax)
    return tf.stack([ymin, xmin, ymax, xmax], axis=-1)


def inside_window_mask(boxes, window):
    """[..., 4] -> [...] bool: True where the box lies entirely inside window.

    The static-shape counterpart of ``prune_outside_window``.
    """
    ymin, xmin, ymax, xmax = _unstack(boxes)
    wymin, wxmin, wymax, wxmax = _unstack(window)
    return (ymin >= wymin) & (xmin >= wxmin) & (ymax <= wymax) & (xmax <= wxmax)


def nonzero_area_mask(boxes):
    """[..., 4] -> [...] bool: True where the box has positive area.

    The static-shape counterpart of ``prune_zero_area``.
    """
    return area(boxes) > 0.0


def _prune(boxes, keep):
    indices = tf.cast(tf.reshape(tf.where(keep), [-1]), tf.int32)
    return tf.gather(boxes, indices), indices


def prune_outside_window(boxes, window):
    """[N, 4] -> (kept boxes [K, 4], kept indices int32 [K]).

    Removes boxes that fall even partly outside ``window``.
    """
    boxes = tf.convert_to_tensor(boxes, tf.float32)
    return _prune(boxes, inside_window_mask(boxes, window))


def prune_zero_area(boxes):
    """[N, 4] -> (kept boxes [K, 4], kept indices int32 [K]) of positive area."""
    boxes = tf.convert_to_tensor(boxes, tf.float32)
    return _prune(boxes, nonzero_area_mask(boxes))


def scale(boxes, y_scale, x_scale):
    """Multiplies y coordinates by y_scale and x coordinates by x_scale."""
    boxes = tf.convert_to_tensor(boxes, tf.float32)
    y_scale = tf.cast(y_scale, tf.float32)
    x_scale = tf.cast(x_scale, tf.float32)
    return boxes * tf.stack([y_scale, x_scale, y_scale, x_scale])


def to_normalized_coordinates(boxes, height, width):
    """Absolute pixel boxes -> normalized boxes for an image of height x width."""
    return scale(boxes, 1.0 / tf.cast(height, tf.float32), 1.0 / tf.cast(width, tf.float32))


def to_absolute_coordinates(boxes, height, width):
    """Normalized boxes -> absolute pixel boxes for an image of height x width."""
    return scale(boxes, height, width)
