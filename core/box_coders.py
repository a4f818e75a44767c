"""Box coders: boxes <-> regression targets relative to anchors.

Both coders work on the centre/size offsets of a box relative to its anchor,
    ty = (y - ya) / ha,  tx = (x - xa) / wa,  th = log(h / ha),  tw = log(w / wa)
over [..., 4] tensors of [ymin, xmin, ymax, xmax] boxes (any leading dims;
boxes and anchors broadcast).  Heights and widths are floored at ``EPSILON``
before log and division, and decoded th, tw are clamped at log(1000 / 16)
as in Detectron, so decoding never overflows.
"""

import math

import tensorflow as tf

EPSILON = 1e-8
# Largest decoded log size ratio (Detectron's bbox_xform_clip).
LOG_SCALE_CLIP = math.log(1000.0 / 16.0)


def _center_size(boxes):
    ymin, xmin, ymax, xmax = tf.unstack(tf.convert_to_tensor(boxes, tf.float32), 4, axis=-1)
    h = tf.maximum(ymax - ymin, EPSILON)
    w = tf.maximum(xmax - xmin, EPSILON)
    return ymin + 0.5 * h, xmin + 0.5 * w, h, w


def encode_offsets(boxes, anchors):
    """[..., 4] boxes and anchors -> raw (ty, tx, th, tw) offsets [..., 4]."""
    ya, xa, ha, wa = _center_size(anchors)
    y, x, h, w = _center_size(boxes)
    return tf.stack(
        [(y - ya) / ha, (x - xa) / wa, tf.math.log(h / ha), tf.math.log(w / wa)], axis=-1
    )


def decode_offsets(offsets, anchors):
    """Raw (ty, tx, th, tw) offsets [..., 4] + anchors -> boxes [..., 4]."""
    ya, xa, ha, wa = _center_size(anchors)
    ty, tx, th, tw = tf.unstack(tf.convert_to_tensor(offsets, tf.float32), 4, axis=-1)
    h = tf.exp(tf.minimum(th, LOG_SCALE_CLIP)) * ha
    w = tf.exp(tf.minimum(tw, LOG_SCALE_CLIP)) * wa
    y = ty * ha + ya
    x = tx * wa + xa
    return tf.stack([y - 0.5 * h, x - 0.5 * w, y + 0.5 * h, x + 0.5 * w], axis=-1)


class MeanStddevBoxCoder:
    """Codes (t - mean) / stddev per coordinate, as Cascade R-CNN per stage."""

    def __init__(self, mean=(0.0, 0.0, 0.0, 0.0), stddev=(0.1, 0.1, 0.2, 0.2)):
        mean, stddev = [float(m) for m in mean], [float(s) for s in stddev]
        if len(mean) != 4 or len(stddev) != 4:
            raise ValueError(f"box coder mean and stddev need 4 values each, got {mean}, {stddev}")
        if min(stddev) <= 0:
            raise ValueError(f"box coder stddev must be positive, got {stddev}")
        self.mean, self.stddev = tuple(mean), tuple(stddev)

    @property
    def code_size(self):
        return 4

    def encode(self, boxes, anchors):
        """boxes [..., 4], anchors [..., 4] (broadcast) -> rel_codes [..., 4]."""
        return (encode_offsets(boxes, anchors) - self.mean) / self.stddev

    def decode(self, rel_codes, anchors):
        """rel_codes [..., 4], anchors [..., 4] (broadcast) -> boxes [..., 4]."""
        rel_codes = tf.convert_to_tensor(rel_codes, tf.float32)
        return decode_offsets(rel_codes * self.stddev + self.mean, anchors)

    def __repr__(self):
        return f"{type(self).__name__}(mean={self.mean}, stddev={self.stddev})"


class FasterRcnnBoxCoder(MeanStddevBoxCoder):
    """Codes (ty, tx, th, tw) times scale_factors (default 10, 10, 5, 5)."""

    def __init__(self, scale_factors=(10.0, 10.0, 5.0, 5.0)):
        scale_factors = tuple(float(s) for s in scale_factors)
        if len(scale_factors) != 4 or min(scale_factors) <= 0:
            raise ValueError(f"scale_factors must be 4 positive numbers, got {scale_factors}")
        super().__init__(mean=(0.0,) * 4, stddev=[1.0 / s for s in scale_factors])
        self.scale_factors = scale_factors

    def encode(self, boxes, anchors):
        return encode_offsets(boxes, anchors) * self.scale_factors

    def decode(self, rel_codes, anchors):
        rel_codes = tf.convert_to_tensor(rel_codes, tf.float32)
        return decode_offsets(rel_codes / self.scale_factors, anchors)

    def __repr__(self):
        return f"{type(self).__name__}(scale_factors={self.scale_factors})"


def build_box_coder(proto):
    """BoxCoder proto -> coder; Faster R-CNN (10, 10, 5, 5) when unset."""
    which = proto.WhichOneof("box_coder")
    if which is None:
        return FasterRcnnBoxCoder()
    if which == "faster_rcnn":
        c = proto.faster_rcnn
        return FasterRcnnBoxCoder((c.y_scale, c.x_scale, c.height_scale, c.width_scale))
    c = proto.mean_stddev
    for name in ("mean", "stddev"):
        if len(getattr(c, name)) not in (0, 4):
            raise ValueError(
                f"box_coder.mean_stddev.{name} needs 0 or 4 values, got {list(getattr(c, name))}"
            )
    return MeanStddevBoxCoder(
        mean=list(c.mean) or (0.0,) * 4, stddev=list(c.stddev) or (0.1, 0.1, 0.2, 0.2)
    )
