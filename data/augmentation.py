"""Training-time augmentation in TF ops (runs inside tf.data), driven by the
``Augmentation`` proto.

Boxes are normalized (ymin, xmin, ymax, xmax) to the image they belong to. Every
random choice uses stateless random ops with an explicit ``seed`` (int32 or
int64 [2]), so a pipeline with a fixed seed is reproducible. Functions that can
drop boxes return ``keep``, the int32 indices of the input boxes kept, so the
caller can gather the classes and crowd flags that go with them.
"""

import tensorflow as tf

SSD_MIN_IOUS = (0.1, 0.3, 0.5, 0.7, 0.9)


def flip_boxes_left_right(boxes):
    ymin, xmin, ymax, xmax = tf.unstack(boxes, axis=1)
    return tf.stack([ymin, 1.0 - xmax, ymax, 1.0 - xmin], axis=1)


def random_horizontal_flip(image, boxes, seed):
    """Flip the image and its boxes left-right with probability 1/2."""
    flip = tf.random.stateless_uniform([], seed) < 0.5
    image = tf.cond(flip, lambda: tf.reverse(image, axis=[1]), lambda: image)
    boxes = tf.cond(flip, lambda: flip_boxes_left_right(boxes), lambda: boxes)
    return image, boxes


def crop_to_window(image, boxes, window):
    """Crop to the pixel window (y0, x0, y1, x1), int32, end exclusive.

    Keeps the boxes whose centre lies strictly inside the window, expressed in
    the crop's normalized coordinates and clipped to it. Returns (image, boxes, keep).
    """
    window = tf.cast(window, tf.int32)
    y0, x0, y1, x1 = tf.unstack(window)
    shape = tf.cast(tf.shape(image)[:2], tf.float32)
    crop = image[y0:y1, x0:x1]
    scale = tf.stack([shape[0], shape[1], shape[0], shape[1]])
    pixels = boxes * scale
    w = tf.cast(window, tf.float32)
    cy = (pixels[:, 0] + pixels[:, 2]) / 2.0
    cx = (pixels[:, 1] + pixels[:, 3]) / 2.0
    inside = (cy > w[0]) & (cy < w[2]) & (cx > w[1]) & (cx < w[3])
    keep = tf.cast(tf.reshape(tf.where(inside), [-1]), tf.int32)
    size = tf.stack([w[2] - w[0], w[3] - w[1], w[2] - w[0], w[3] - w[1]])
    moved = (tf.gather(pixels, keep) - tf.stack([w[0], w[1], w[0], w[1]])) / size
    return crop, tf.clip_by_value(moved, 0.0, 1.0), keep


def _iou(windows, boxes):
    """IoU [T, n] between normalized windows [T, 4] and boxes [n, 4]."""
    w = windows[:, None, :]
    b = boxes[None, :, :]
    inter_h = tf.maximum(tf.minimum(w[..., 2], b[..., 2]) - tf.maximum(w[..., 0], b[..., 0]), 0.0)
    inter_w = tf.maximum(tf.minimum(w[..., 3], b[..., 3]) - tf.maximum(w[..., 1], b[..., 1]), 0.0)
    inter = inter_h * inter_w
    area_w = (w[..., 2] - w[..., 0]) * (w[..., 3] - w[..., 1])
    area_b = (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])
    return inter / tf.maximum(area_w + area_b - inter, 1e-12)


def ssd_random_crop(image, boxes, seed, num_trials=50):
    """SSD's random crop (Liu et al. 2016), returns (image, boxes, keep).

    One of seven options, uniformly: the whole image; a patch whose IoU with some
    box is at least 0.1, 0.3, 0.5, 0.7 or 0.9; or any patch. A patch covers
    [0.1, 1] of the image area with aspect ratio in [1/2, 2] (relative to the
    image) and must hold at least one box centre. ``num_trials`` candidates are
    drawn; the first that qualifies is used, else the whole image. Boxes whose
    centre falls outside the patch are dropped, the rest clipped to it.
    """
    seeds = tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), 6)
    shape = tf.shape(image)[:2]
    height, width = tf.cast(shape[0], tf.float32), tf.cast(shape[1], tf.float32)
    option = tf.random.stateless_uniform([], seeds[0], 0, len(SSD_MIN_IOUS) + 2, tf.int32)
    min_iou = tf.gather(tf.constant((0.0,) + SSD_MIN_IOUS + (0.0,)), option)

    area = tf.random.stateless_uniform([num_trials], seeds[1], 0.1, 1.0)
    log_ratio = tf.random.stateless_uniform(
        [num_trials], seeds[2], tf.math.log(0.5), tf.math.log(2.0)
    )
    w = tf.sqrt(area * tf.exp(log_ratio))
    h = tf.sqrt(area / tf.exp(log_ratio))
    fits = (w <= 1.0) & (h <= 1.0)
    x0 = tf.random.stateless_uniform([num_trials], seeds[3]) * tf.maximum(1.0 - w, 0.0)
    y0 = tf.random.stateless_uniform([num_trials], seeds[4]) * tf.maximum(1.0 - h, 0.0)
    # Integer pixel windows; IoU and centres are judged on exactly these.
    py0 = tf.floor(y0 * height)
    px0 = tf.floor(x0 * width)
    py1 = tf.minimum(tf.maximum(py0 + 1.0, tf.round((y0 + h) * height)), height)
    px1 = tf.minimum(tf.maximum(px0 + 1.0, tf.round((x0 + w) * width)), width)
    windows = tf.stack([py0 / height, px0 / width, py1 / height, px1 / width], axis=1)

    num_boxes = tf.shape(boxes)[0]
    iou = _iou(windows, boxes)
    best_iou = tf.reduce_max(tf.concat([iou, tf.fill([num_trials, 1], -1.0)], axis=1), axis=1)
    cy = (boxes[:, 0] + boxes[:, 2]) / 2.0
    cx = (boxes[:, 1] + boxes[:, 3]) / 2.0
    centre_inside = (
        (cy[None] > windows[:, 0:1])
        & (cy[None] < windows[:, 2:3])
        & (cx[None] > windows[:, 1:2])
        & (cx[None] < windows[:, 3:4])
    )
    any_centre = tf.reduce_any(centre_inside, axis=1) | tf.equal(num_boxes, 0)
    is_any = tf.equal(option, len(SSD_MIN_IOUS) + 1)
    ok = fits & any_centre & ((best_iou >= min_iou) | is_any)
    use = tf.reduce_any(ok) & tf.not_equal(option, 0)
    chosen = tf.argmax(tf.cast(ok, tf.int32), output_type=tf.int32)
    full = tf.stack([0.0, 0.0, height, width])
    window = tf.where(use, tf.stack([py0[chosen], px0[chosen], py1[chosen], px1[chosen]]), full)
    return crop_to_window(image, boxes, tf.cast(window, tf.int32))


def _resize_like(image, size):
    resized = tf.image.resize(image, size, method="bilinear")
    if image.dtype == tf.uint8:
        return tf.cast(tf.clip_by_value(tf.round(resized), 0.0, 255.0), tf.uint8)
    return tf.cast(resized, image.dtype)


def random_scale_jitter(image, boxes, scale_min, scale_max, seed):
    """Rescale the image content by f in [scale_min, scale_max] on a same-size canvas.

    f > 1 zooms in: a random window of the original size is cropped from the
    enlarged image (boxes whose centre leaves are dropped); f < 1 zooms out: the
    smaller image sits at the top left, zero-padded to the original size.
    Returns (image, boxes, keep).
    """
    seeds = tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), 3)
    shape = tf.shape(image)[:2]
    f = tf.random.stateless_uniform([], seeds[0], scale_min, scale_max)
    new = tf.maximum(tf.cast(tf.round(tf.cast(shape, tf.float32) * f), tf.int32), 1)
    resized = _resize_like(image, new)
    padded_shape = tf.maximum(new, shape)
    padded = tf.image.pad_to_bounding_box(resized, 0, 0, padded_shape[0], padded_shape[1])
    ratio = tf.cast(new, tf.float32) / tf.cast(padded_shape, tf.float32)
    boxes = boxes * tf.stack([ratio[0], ratio[1], ratio[0], ratio[1]])
    slack = padded_shape - shape
    oy = tf.random.stateless_uniform([], seeds[1], 0, slack[0] + 1, tf.int32)
    ox = tf.random.stateless_uniform([], seeds[2], 0, slack[1] + 1, tf.int32)
    return crop_to_window(padded, boxes, tf.stack([oy, ox, oy + shape[0], ox + shape[1]]))


def _gather_fields(example, keep):
    for key in ("groundtruth_classes", "groundtruth_is_crowd"):
        example[key] = tf.gather(example[key], keep)
    return example


def augment(example, config, seed):
    """Apply the augmentations ``config`` (an Augmentation proto) switches on.

    ``example`` holds 'image' [H, W, 3] and 'groundtruth_boxes' / '_classes' /
    '_is_crowd'; a new dict is returned.
    """
    example = dict(example)
    seeds = tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), 3)
    if config.ssd_random_crop:
        image, boxes, keep = ssd_random_crop(
            example["image"], example["groundtruth_boxes"], seeds[0]
        )
        example.update(image=image, groundtruth_boxes=boxes)
        example = _gather_fields(example, keep)
    if config.scale_jitter_min != config.scale_jitter_max:
        lo, hi = sorted((config.scale_jitter_min, config.scale_jitter_max))
        image, boxes, keep = random_scale_jitter(
            example["image"], example["groundtruth_boxes"], lo, hi, seeds[1]
        )
        example.update(image=image, groundtruth_boxes=boxes)
        example = _gather_fields(example, keep)
    if config.random_horizontal_flip:
        image, boxes = random_horizontal_flip(
            example["image"], example["groundtruth_boxes"], seeds[2]
        )
        example.update(image=image, groundtruth_boxes=boxes)
    return example
