"""RoI feature cropping on ``tf.image.crop_and_resize``.

* ``crop_and_resize_rois``: Faster R-CNN's RoI crop as in Huang et al.
  (bilinear crop to 14x14, then 2x2 max-pool with stride 2 to 7x7).
* ``position_sensitive_crop``: R-FCN's position-sensitive RoI pooling, each
  bin cropped for all RoIs at once from its own channel group.
* ``fpn_levels_for_boxes`` / ``multilevel_crop_and_resize``: FPN's RoI-to-level
  assignment (Lin et al., eq. 1) and cropping from the assigned level.

Boxes are normalized [ymin, xmin, ymax, xmax]; ``crop_and_resize`` samples the
box corners at the centres of the corner pixels (coordinate y * (H - 1)).
"""

import math

import tensorflow as tf


def _pair(size):
    return (int(size), int(size)) if isinstance(size, int) else tuple(int(s) for s in size)


def _flat_box_indices(boxes):
    """boxes [B, N, 4] -> ([B*N, 4], [B*N] image index of each box)."""
    shape = tf.shape(boxes)
    indices = tf.repeat(tf.range(shape[0]), shape[1])
    return tf.reshape(boxes, [-1, 4]), indices


def _maxpool(crops, kernel_size, stride):
    if not kernel_size:
        return crops
    return tf.nn.max_pool2d(crops, kernel_size, stride or kernel_size, padding="VALID")


def crop_and_resize_rois(features, boxes, crop_size, maxpool_kernel_size=None, maxpool_stride=None):
    """features [B, H, W, C], boxes [B, N, 4] -> [B*N, crop', crop', C]
    (RoIs of image 0 first), optionally max-pooled (VALID padding)."""
    features = tf.convert_to_tensor(features)
    flat_boxes, box_indices = _flat_box_indices(tf.cast(tf.convert_to_tensor(boxes), tf.float32))
    crops = tf.image.crop_and_resize(features, flat_boxes, box_indices, _pair(crop_size))
    return _maxpool(crops, maxpool_kernel_size, maxpool_stride)


def build_roi_crop_fn(config):
    """RoiCrop proto -> fn(features, boxes) -> [B*N, c, c, C]."""
    if config.initial_crop_size <= 0:
        raise ValueError(f"RoiCrop.initial_crop_size must be > 0, got {config.initial_crop_size}")

    def roi_crop(features, boxes):
        return crop_and_resize_rois(
            features,
            boxes,
            config.initial_crop_size,
            config.maxpool_kernel_size,
            config.maxpool_stride,
        )

    return roi_crop


def position_sensitive_crop(features, boxes, crop_size, num_spatial_bins, global_pool=True):
    """R-FCN position-sensitive RoI pooling.

    features [B, H, W, k*k*D]: channel group (i*k + j) holds the score maps
    of bin (row i, column j).  Each RoI is split into k x k sub-boxes; bin
    (i, j) is cropped (crop_size / k pixels per side) from sub-box (i, j) in
    its own channel group and averaged.  Returns [B*N, 1, 1, D], the vote
    (mean) over bins, or with ``global_pool=False`` the per-bin averages
    [B*N, k, k, D].

    The channel groups come from one ``tf.split`` (its gradient is one
    concat) and each bin is one ``crop_and_resize`` over all RoIs.  Measured
    on 2 CPU cores (38x38x(49*91) features, k = 7, 300 RoIs) this is 2-4x
    faster, forward and backward, than a single crop_and_resize of all
    k*k*N sub-boxes from the [B*k*k, H, W, D] transposed map.
    """
    k = int(num_spatial_bins)
    crop_h, crop_w = _pair(crop_size)
    if crop_h % k or crop_w % k:
        raise ValueError(
            f"position_sensitive_crop: crop_size {crop_size} must be a "
            f"multiple of num_spatial_bins {k}"
        )
    features = tf.convert_to_tensor(features)
    depth = features.shape[-1]
    if depth is None or depth % (k * k):
        raise ValueError(
            f"position_sensitive_crop: feature depth {depth} must be a "
            f"multiple of num_spatial_bins^2 = {k * k}"
        )
    groups = tf.split(features, k * k, axis=-1)
    flat_boxes, box_indices = _flat_box_indices(tf.cast(tf.convert_to_tensor(boxes), tf.float32))
    ymin, xmin, ymax, xmax = tf.unstack(flat_boxes, axis=-1)
    step_y, step_x = (ymax - ymin) / k, (xmax - xmin) / k
    bin_means = []  # k*k x [B*N, D], bin g = i*k + j
    for i in range(k):
        for j in range(k):
            sub_boxes = tf.stack(
                [
                    ymin + i * step_y,
                    xmin + j * step_x,
                    ymin + (i + 1) * step_y,
                    xmin + (j + 1) * step_x,
                ],
                -1,
            )
            crop = tf.image.crop_and_resize(
                groups[i * k + j], sub_boxes, box_indices, (crop_h // k, crop_w // k)
            )
            bin_means.append(tf.reduce_mean(crop, [1, 2]))
    if global_pool:
        return (tf.add_n(bin_means) / (k * k))[:, None, None, :]
    return tf.reshape(tf.stack(bin_means, 1), [-1, k, k, depth // (k * k)])


def fpn_levels_for_boxes(boxes, min_level, max_level, image_size=None, k0=4, canonical_size=224):
    """FPN level of each RoI: floor(k0 + log2(sqrt(w h) / canonical_size)),
    clamped to [min_level, max_level].

    boxes [..., 4] in pixels, or normalized with ``image_size`` (height,
    width) given.  Returns int32 [...].
    """
    boxes = tf.cast(tf.convert_to_tensor(boxes), tf.float32)
    heights = tf.maximum(boxes[..., 2] - boxes[..., 0], 0.0)
    widths = tf.maximum(boxes[..., 3] - boxes[..., 1], 0.0)
    if image_size is not None:
        image_size = tf.cast(image_size, tf.float32)
        heights, widths = heights * image_size[0], widths * image_size[1]
    scale = tf.sqrt(heights * widths)
    # The small epsilon keeps exact powers of two (224, 448 px) on their level.
    levels = tf.floor(k0 + tf.math.log(scale / canonical_size) / math.log(2.0) + 1e-5)
    levels = tf.clip_by_value(levels, float(min_level), float(max_level))
    return tf.cast(levels, tf.int32)


def multilevel_crop_and_resize(
    features,
    boxes,
    image_size,
    crop_size,
    min_level=None,
    max_level=None,
    k0=4,
    canonical_size=224,
    maxpool_kernel_size=None,
    maxpool_stride=None,
):
    """Crop each RoI from its FPN level.

    features: dict level -> [B, H_l, W_l, C]; boxes [B, N, 4] normalized;
    image_size (height, width) of the network input in pixels; levels default
    to the dict's range.  Returns [B*N, crop', crop', C] in the RoIs' order.

    Each level crops only its own RoIs (``dynamic_partition`` -> one
    ``crop_and_resize`` per level -> ``dynamic_stitch`` back into order), so
    the cost is that of one crop per RoI, not one per RoI and level.
    """
    levels = sorted(features)
    min_level = levels[0] if min_level is None else min_level
    max_level = levels[-1] if max_level is None else max_level
    missing = [lvl for lvl in range(min_level, max_level + 1) if lvl not in features]
    if missing:
        raise ValueError(
            f"multilevel_crop_and_resize: no features for levels {missing}; have {levels}"
        )
    boxes = tf.cast(tf.convert_to_tensor(boxes), tf.float32)
    flat_boxes, box_indices = _flat_box_indices(boxes)
    assigned = (
        tf.reshape(
            fpn_levels_for_boxes(boxes, min_level, max_level, image_size, k0, canonical_size), [-1]
        )
        - min_level
    )
    num_levels = max_level - min_level + 1
    order = tf.range(tf.shape(flat_boxes)[0])
    part_order = tf.dynamic_partition(order, assigned, num_levels)
    part_boxes = tf.dynamic_partition(flat_boxes, assigned, num_levels)
    part_images = tf.dynamic_partition(box_indices, assigned, num_levels)
    crops = [
        tf.image.crop_and_resize(
            features[min_level + i], part_boxes[i], part_images[i], _pair(crop_size)
        )
        for i in range(num_levels)
    ]
    out = tf.dynamic_stitch(part_order, crops)
    crop_h, crop_w = _pair(crop_size)
    # Keep the RoI count static when the boxes' is (dynamic_stitch loses it):
    # shape inference and FLOP counting downstream need it.
    rois = (
        boxes.shape[0] * boxes.shape[1]
        if boxes.shape[0] is not None and boxes.shape[1] is not None
        else -1
    )
    out = tf.reshape(out, [rois, crop_h, crop_w, features[min_level].shape[-1]])
    return _maxpool(out, maxpool_kernel_size, maxpool_stride)
