"""The image frame every detector shares: resize, normalize, pad, and the
mapping of boxes between the true image and the network input.

    images [B, H, W, 3] --resize--> [B, h, w, 3] --normalize--> --pad--> inputs [B, H', W', 3]

The resized image (h x w, the *true image*) sits at the top left of the
input; the bottom / right padding is zeros, to a multiple of ``pad_multiple``
(an FPN's top-down pathway, an extractor's output stride) or to a
``max_dimension`` square. ``true_shapes`` int32 [B, 3] holds (h, w, 3).

Inside a model boxes are normalized to the input (H', W'); groundtruth
arrives and detections leave normalized to the true image. The true image is
the window [0, 0, h/H', w/W'] of the input, so a box is mapped from the true
image to the input by multiplying by (h/H', w/W', h/H', w/W')
(``to_input_frame``) and back by dividing (``to_true_frame``).

One ``ImageFrame`` serves SSD (a fixed size) and the two-stage models (an
``ImageResizer`` proto as ``config.checks.resolved_resizer`` gives it: fixed
shape, or keep aspect ratio).
"""

import math

import numpy as np
import tensorflow as tf

from detbench.protos import image_resizer_pb2

_KEEP_ASPECT_RATIO = image_resizer_pb2.KeepAspectRatioResizer()  # its defaults: 600 / 1024


def keep_aspect_ratio_size(height, width, min_dimension, max_dimension):
    """Size with the shorter side at min_dimension unless the longer side
    would exceed max_dimension (then the longer side is max_dimension).

    Python ints in -> Python ints out (static shapes); tensors otherwise.
    """
    if isinstance(height, (int, np.integer)) and isinstance(width, (int, np.integer)):
        scale = min_dimension / min(height, width)
        if round(max(height, width) * scale) > max_dimension:
            scale = max_dimension / max(height, width)
        return (
            min(max(int(round(height * scale)), 1), max_dimension),
            min(max(int(round(width * scale)), 1), max_dimension),
        )
    h = tf.cast(height, tf.float32)
    w = tf.cast(width, tf.float32)
    scale = min_dimension / tf.minimum(h, w)
    scale = tf.where(
        tf.round(tf.maximum(h, w) * scale) > max_dimension, max_dimension / tf.maximum(h, w), scale
    )
    size = tf.clip_by_value(tf.cast(tf.round(tf.stack([h, w]) * scale), tf.int32), 1, max_dimension)
    return size[0], size[1]


def _round_up(value, multiple):
    if isinstance(value, (int, np.integer)):
        return int(math.ceil(value / multiple) * multiple)
    return (value + multiple - 1) // multiple * multiple


def input_hw(inputs):
    """(height, width) of a [B, H, W, C] tensor: Python ints where static."""
    dyn = tf.shape(inputs)
    return tuple(int(inputs.shape[i]) if inputs.shape[i] is not None else dyn[i] for i in (1, 2))


class ImageFrame:
    """Resize + normalize + pad, for one detector.

    ``fixed_size``: (height, width) every image is resized to; else the
    keep-aspect-ratio rule (``min_dimension`` / ``max_dimension``, padded to a
    ``max_dimension`` square when ``pad_to_max_dimension``). ``normalize``:
    the extractor's preprocessing, applied to the resized image before
    padding (padding stays zero). Static input sizes give static outputs.
    """

    def __init__(
        self,
        fixed_size=None,
        min_dimension=_KEEP_ASPECT_RATIO.min_dimension,
        max_dimension=_KEEP_ASPECT_RATIO.max_dimension,
        pad_to_max_dimension=False,
        pad_multiple=1,
        normalize=None,
    ):
        self.fixed_size = None if fixed_size is None else tuple(int(s) for s in fixed_size)
        self.min_dimension, self.max_dimension = int(min_dimension), int(max_dimension)
        self.pad_to_max_dimension = bool(pad_to_max_dimension)
        self.pad_multiple = max(1, int(pad_multiple))
        self.normalize = normalize

    @classmethod
    def from_resizer(cls, resizer, pad_multiple=1, normalize=None):
        """``ImageResizer`` proto, as ``config.checks.resolved_resizer`` gives
        it (an unset one reads as keep aspect ratio at the proto's defaults)."""
        if resizer.WhichOneof("image_resizer") == "fixed_shape":
            fixed = resizer.fixed_shape
            return cls((fixed.height, fixed.width), pad_multiple=pad_multiple, normalize=normalize)
        keep = resizer.keep_aspect_ratio
        return cls(
            None,
            keep.min_dimension,
            keep.max_dimension,
            keep.pad_to_max_dimension,
            pad_multiple=pad_multiple,
            normalize=normalize,
        )

    def resized_size(self, height, width):
        """The true image's (h, w) for an (H, W) image (ints, or tensors)."""
        if self.fixed_size is not None:
            return self.fixed_size
        return keep_aspect_ratio_size(height, width, self.min_dimension, self.max_dimension)

    def input_size(self, height, width):
        """The padded input's (H', W') for a true image of (height, width)."""
        square = self.max_dimension if self.pad_to_max_dimension else None
        return (
            _round_up(square or height, self.pad_multiple),
            _round_up(square or width, self.pad_multiple),
        )

    def __call__(self, images):
        """images [B, H, W, 3] -> (inputs [B, H', W', 3], true_shapes int32 [B, 3])."""
        images = tf.cast(images, tf.float32)
        shape = images.shape
        height = int(shape[1]) if shape[1] is not None else tf.shape(images)[1]
        width = int(shape[2]) if shape[2] is not None else tf.shape(images)[2]
        new_h, new_w = self.resized_size(height, width)
        static = all(isinstance(v, int) for v in (new_h, new_w))
        same = static and all(isinstance(v, int) for v in (height, width))
        if not (same and (height, width) == (new_h, new_w)):
            images = tf.image.resize(images, tf.stack([new_h, new_w]))
            if static:
                images.set_shape([shape[0], new_h, new_w, shape[3]])
        if self.normalize is not None:
            images = self.normalize(images)
        target_h, target_w = self.input_size(new_h, new_w)
        inputs = tf.pad(images, [[0, 0], [0, target_h - new_h], [0, target_w - new_w], [0, 0]])
        if all(isinstance(v, int) for v in (target_h, target_w)):
            inputs.set_shape([shape[0], target_h, target_w, shape[3]])
        true_shape = tf.cast(tf.stack([new_h, new_w, 3]), tf.int32)
        return inputs, tf.tile(true_shape[None], [tf.shape(images)[0], 1])


# -- boxes between the true image and the input ---------------------------------
def true_image_scale(true_shapes, image_shape):
    """[B, 4] factors (h/H, w/W, h/H, w/W): true-image frame -> input frame.

    ``image_shape``: the input's (H, W), a [2] tensor or a pair of ints /
    scalar tensors."""
    true_hw = tf.cast(tf.convert_to_tensor(true_shapes)[:, :2], tf.float32)
    if isinstance(image_shape, (list, tuple)):
        image_shape = tf.stack(list(image_shape))
    ratio = true_hw / tf.cast(image_shape, tf.float32)[None]
    return tf.concat([ratio, ratio], axis=1)


def true_window(true_shapes, image_shape):
    """[B, 4] window of the true image in the input frame: [0, 0, h/H, w/W]."""
    scale = true_image_scale(true_shapes, image_shape)
    return tf.concat([tf.zeros_like(scale[:, :2]), scale[:, 2:]], axis=1)


def _per_image(scale, boxes):
    """[B, 4] -> [B, 1, ..., 1, 4] broadcasting over boxes [B, ..., 4]."""
    return tf.reshape(scale, [-1] + [1] * (boxes.shape.rank - 2) + [4])


def to_input_frame(boxes, true_shapes, image_shape):
    """Boxes [B, ..., 4] relative to the true image -> relative to the input."""
    boxes = tf.cast(boxes, tf.float32)
    return boxes * _per_image(true_image_scale(true_shapes, image_shape), boxes)


def to_true_frame(boxes, true_shapes, image_shape):
    """Boxes [B, ..., 4] relative to the input -> relative to the true image."""
    return boxes / _per_image(true_image_scale(true_shapes, image_shape), boxes)


def groundtruth_in_input_frame(groundtruth, true_shapes, image_shape):
    """Groundtruth dict (data keys) -> {"boxes", "classes", "num", "is_crowd"?}
    with boxes normalized to the network input (``num``: every box when
    ``num_groundtruth_boxes`` is absent)."""
    boxes = to_input_frame(groundtruth["groundtruth_boxes"], true_shapes, image_shape)
    num = groundtruth.get("num_groundtruth_boxes")
    if num is None:
        num = tf.fill([tf.shape(boxes)[0]], tf.shape(boxes)[1])
    gt = {
        "boxes": boxes,
        "classes": tf.cast(groundtruth["groundtruth_classes"], tf.int32),
        "num": tf.cast(num, tf.int32),
    }
    if "groundtruth_is_crowd" in groundtruth:
        gt["is_crowd"] = tf.cast(groundtruth["groundtruth_is_crowd"], tf.bool)
    return gt
