"""Anchor generators: grid (RPN), multiscale (SSD) and multilevel (FPN).

All anchors are normalized [ymin, xmin, ymax, xmax] float32, ordered by
(y, x, anchor type) within a feature map, maps concatenated in order.  Within
a location the anchor types are ordered scale-major, aspect-ratio-minor
(for s in scales: for ar in aspect_ratios).  An anchor of scale side s and
aspect ratio ar (width / height) has height s / sqrt(ar), width s * sqrt(ar).
Cell centres are offset + i * stride with offset = stride / 2, i.e. the
centre of cell i is (i + 0.5) * stride.  Anchors may extend beyond the image;
``clip=True`` clips them to [0, 1].
"""

import math

import numpy as np
import tensorflow as tf

from detbench.core import box_ops

_UNIT_WINDOW = (0.0, 0.0, 1.0, 1.0)


def _grid(feature_map_shape, stride, offset, heights, widths):
    """Anchors [h*w*A, 4] centred at offset + i*stride with the given sizes.

    stride, offset: (y, x) pairs; heights, widths: [A]; all in one unit.
    """
    fh, fw = feature_map_shape
    cy = tf.cast(tf.range(fh), tf.float32) * stride[0] + offset[0]
    cx = tf.cast(tf.range(fw), tf.float32) * stride[1] + offset[1]
    cy, cx = tf.meshgrid(cy, cx, indexing="ij")
    cy, cx = cy[:, :, None], cx[:, :, None]
    hh = tf.cast(heights, tf.float32) / 2.0
    hw = tf.cast(widths, tf.float32) / 2.0
    boxes = tf.stack([cy - hh, cx - hw, cy + hh, cx + hw], axis=-1)
    return tf.reshape(boxes, [-1, 4])


def _sizes(specs):
    """[(side, aspect_ratio)] -> (heights, widths)."""
    return ([s / math.sqrt(ar) for s, ar in specs], [s * math.sqrt(ar) for s, ar in specs])


def _maybe_clip(anchors, clip):
    return box_ops.clip_to_window(anchors, _UNIT_WINDOW) if clip else anchors


class GridAnchorGenerator:
    """RPN anchors on one feature map (Faster R-CNN).

    Sizes in pixels: side = scale * base_size; stride in pixels, or None for
    the feature map's own stride (image size / feature map size, per axis).
    Centres are offset + i * stride, offset defaulting to stride / 2 (the TF
    Object Detection API's grid generator defaults to offset 0 instead).
    """

    def __init__(
        self,
        scales=(0.25, 0.5, 1.0, 2.0),
        aspect_ratios=(0.5, 1.0, 2.0),
        base_size=256,
        stride=None,
        offset=None,
        clip=False,
    ):
        self.scales = tuple(float(s) for s in scales)
        self.aspect_ratios = tuple(float(a) for a in aspect_ratios)
        if not self.scales or not self.aspect_ratios:
            raise ValueError("grid anchors need at least one scale and aspect ratio")
        self.base_size, self.stride, self.offset = float(base_size), stride, offset
        self.clip = clip
        self._specs = [(s * self.base_size, a) for s in self.scales for a in self.aspect_ratios]

    def num_anchors_per_location(self):
        return len(self._specs)

    def generate(self, feature_map_shape, image_shape):
        """(h, w), (H, W) (ints or scalar tensors) -> [h*w*A, 4] normalized."""
        fh, fw = feature_map_shape
        ih = tf.cast(image_shape[0], tf.float32)
        iw = tf.cast(image_shape[1], tf.float32)
        if self.stride:
            stride = (float(self.stride), float(self.stride))
        else:
            stride = (ih / tf.cast(fh, tf.float32), iw / tf.cast(fw, tf.float32))
        offset = (
            (stride[0] / 2.0, stride[1] / 2.0)
            if self.offset is None
            else (float(self.offset), float(self.offset))
        )
        anchors = _grid((fh, fw), stride, offset, *_sizes(self._specs))
        anchors = box_ops.to_normalized_coordinates(anchors, ih, iw)
        return _maybe_clip(anchors, self.clip)


class MultiscaleAnchorGenerator:
    """SSD anchors (Liu et al.; the TF OD API's multiple grid generator).

    Layer k of L has scale s_k = min + (max - min) * k / (L - 1) and
    s_L = 1.0; its anchors are (s_k, ar) for every aspect ratio, then the
    extra (sqrt(s_k * s_{k+1}), interpolated_scale_aspect_ratio) anchor.
    With reduce_boxes_in_lowest_layer, layer 0 has (0.1, 1), (s_0, 2),
    (s_0, 0.5).  Anchors are in normalized units directly, centred at
    ((i + 0.5) / h_k, (j + 0.5) / w_k).  Non-square images: when
    ``image_shape`` is given to ``generate``, heights are multiplied by
    min(H, W) / H and widths by min(H, W) / W, so scales are relative to the
    shorter side and aspect ratios hold in pixels (the TF OD API's convention);
    without it, scales are relative to each side.
    """

    def __init__(
        self,
        num_layers=6,
        min_scale=0.2,
        max_scale=0.95,
        aspect_ratios=(1.0, 2.0, 0.5, 3.0, 1.0 / 3.0),
        interpolated_scale_aspect_ratio=1.0,
        reduce_boxes_in_lowest_layer=True,
        clip=False,
    ):
        if num_layers < 1:
            raise ValueError(f"num_layers must be >= 1, got {num_layers}")
        if not 0.0 < min_scale <= max_scale:
            raise ValueError(
                f"multiscale anchors need 0 < min_scale <= max_scale, got {min_scale}, {max_scale}"
            )
        if min(aspect_ratios, default=1.0) <= 0:
            raise ValueError(f"aspect ratios must be positive, got {list(aspect_ratios)}")
        self.num_layers, self.clip = num_layers, clip
        scales = [
            min_scale + (max_scale - min_scale) * k / max(num_layers - 1, 1)
            for k in range(num_layers)
        ] + [1.0]
        self.scales = scales[:-1]
        self.layer_specs = []
        for k in range(num_layers):
            if k == 0 and reduce_boxes_in_lowest_layer:
                specs = [(0.1, 1.0), (scales[0], 2.0), (scales[0], 0.5)]
            else:
                specs = [(scales[k], float(a)) for a in aspect_ratios]
                if interpolated_scale_aspect_ratio > 0:
                    specs.append(
                        (
                            math.sqrt(scales[k] * scales[k + 1]),
                            float(interpolated_scale_aspect_ratio),
                        )
                    )
            self.layer_specs.append(specs)

    def num_anchors_per_location(self):
        return [len(s) for s in self.layer_specs]

    def generate(self, feature_map_shapes, image_shape=None):
        """[(h_k, w_k)] * num_layers -> [sum_k h_k*w_k*A_k, 4] normalized."""
        if len(feature_map_shapes) != self.num_layers:
            raise ValueError(
                f"MultiscaleAnchorGenerator has {self.num_layers} "
                f"layers, got {len(feature_map_shapes)} feature maps"
            )
        y_factor = x_factor = 1.0
        if image_shape is not None:
            ih = tf.cast(image_shape[0], tf.float32)
            iw = tf.cast(image_shape[1], tf.float32)
            y_factor, x_factor = tf.minimum(ih, iw) / ih, tf.minimum(ih, iw) / iw
        out = []
        for (fh, fw), specs in zip(feature_map_shapes, self.layer_specs):
            stride = (1.0 / tf.cast(fh, tf.float32), 1.0 / tf.cast(fw, tf.float32))
            offset = (stride[0] / 2.0, stride[1] / 2.0)
            heights, widths = _sizes(specs)
            out.append(
                _grid(
                    (fh, fw),
                    stride,
                    offset,
                    tf.constant(heights) * y_factor,
                    tf.constant(widths) * x_factor,
                )
            )
        return _maybe_clip(tf.concat(out, axis=0), self.clip)


class MultilevelAnchorGenerator:
    """FPN / RetinaNet anchors: one anchor size per pyramid level.

    Level l has stride 2^l and feature map side ceil(H / 2^l); its anchors
    have side anchor_scale * 2^l * 2^(j / scales_per_octave) pixels for
    j < scales_per_octave, at every aspect ratio.
    """

    def __init__(
        self,
        min_level=2,
        max_level=6,
        anchor_scale=8.0,
        scales_per_octave=1,
        aspect_ratios=(0.5, 1.0, 2.0),
        clip=False,
    ):
        if min_level > max_level or scales_per_octave < 1:
            raise ValueError(
                f"bad levels {min_level}..{max_level} or scales_per_octave {scales_per_octave}"
            )
        self.min_level, self.max_level = min_level, max_level
        self.anchor_scale, self.scales_per_octave = anchor_scale, scales_per_octave
        self.aspect_ratios = tuple(float(a) for a in aspect_ratios)
        self.clip = clip

    @property
    def levels(self):
        return list(range(self.min_level, self.max_level + 1))

    def num_anchors_per_location(self):
        return self.scales_per_octave * len(self.aspect_ratios)

    def level_specs(self, level):
        """[(side in pixels, aspect ratio)] for one level."""
        return [
            (self.anchor_scale * 2.0**level * 2.0 ** (j / self.scales_per_octave), a)
            for j in range(self.scales_per_octave)
            for a in self.aspect_ratios
        ]

    def generate(self, image_shape, feature_map_shapes=None):
        """(H, W), optional {level: (h, w)} -> {level: [h*w*A, 4] normalized}."""
        ih, iw = image_shape
        out = {}
        for level in self.levels:
            s = 2**level
            shape = (feature_map_shapes or {}).get(level)
            if shape is None:
                shape = ((ih + s - 1) // s, (iw + s - 1) // s)
            anchors = _grid(
                shape, (float(s), float(s)), (s / 2.0, s / 2.0), *_sizes(self.level_specs(level))
            )
            out[level] = _maybe_clip(box_ops.to_normalized_coordinates(anchors, ih, iw), self.clip)
        return out


def concat_levels(anchors_by_level):
    """{level: [n_l, 4]} -> [sum n_l, 4], levels in increasing order."""
    return tf.concat([anchors_by_level[l] for l in sorted(anchors_by_level)], 0)


def generate_anchors(generator, image_shape, feature_map_shapes):
    """Any generator's anchors [N, 4] for an input of (H, W) and its feature
    maps' [(h, w)] in anchor order (one map for a grid generator, one per
    layer for multiscale, one per level for multilevel, levels concatenated)."""
    if isinstance(generator, MultilevelAnchorGenerator):
        shapes = dict(zip(generator.levels, feature_map_shapes))
        return concat_levels(generator.generate(image_shape, shapes))
    if isinstance(generator, GridAnchorGenerator):
        return generator.generate(feature_map_shapes[0], image_shape)
    return generator.generate(list(feature_map_shapes), image_shape)


def _static(dims):
    """A tuple of Python ints, or None when any dimension is unknown."""
    dims = tuple(dims)
    return dims if all(isinstance(d, (int, np.integer)) for d in dims) else None


class AnchorCache:
    """A generator's anchors, computed once per (input shape, feature-map
    shapes) and entered into a traced graph as a constant.

    Anchors depend only on those shapes. With static shapes they are computed
    eagerly once and kept as a numpy array (plain, untracked state); with
    shapes known only at run time they are computed in the graph.
    """

    def __init__(self, generator):
        self.generator = generator
        self._cache = {}

    def __len__(self):
        return len(self._cache)

    def __call__(self, image_shape, feature_maps):
        """image_shape: the input's (H, W), ints or scalar tensors;
        feature_maps: the maps [B, h, w, C] in anchor order -> [N, 4]."""
        image = _static(image_shape)
        shapes = [_static(tf.TensorShape(m.shape[1:3]).as_list()) for m in feature_maps]
        if image is None or any(s is None for s in shapes):
            dynamic = [tuple(tf.unstack(tf.shape(m)[1:3])) for m in feature_maps]
            return generate_anchors(self.generator, tuple(image_shape), dynamic)
        key = (tuple(int(v) for v in image), tuple(shapes))
        if key not in self._cache:
            with tf.init_scope():
                anchors = generate_anchors(self.generator, key[0], list(key[1]))
                if not tf.executing_eagerly():  # TF1-style graph: no constant to cache
                    return anchors
                self._cache[key] = np.asarray(anchors.numpy(), np.float32)
        return tf.constant(self._cache[key])


def build_anchor_generator(proto, num_layers=6):
    """AnchorGenerator proto -> generator.

    ``num_layers`` (the number of SSD feature maps, which the proto does not
    carry) is used only for the multiscale generator.
    """
    which = proto.WhichOneof("anchor_generator")
    if which == "grid":
        c = proto.grid
        return GridAnchorGenerator(
            scales=list(c.scales) or (0.25, 0.5, 1.0, 2.0),
            aspect_ratios=list(c.aspect_ratios) or (0.5, 1.0, 2.0),
            base_size=c.base_size,
            stride=c.stride or None,
        )
    if which == "multiscale":
        c = proto.multiscale
        return MultiscaleAnchorGenerator(
            num_layers=num_layers,
            min_scale=c.min_scale,
            max_scale=c.max_scale,
            aspect_ratios=list(c.aspect_ratios) or (1.0, 2.0, 0.5, 3.0, 1.0 / 3.0),
            interpolated_scale_aspect_ratio=c.interpolated_scale_aspect_ratio,
            reduce_boxes_in_lowest_layer=c.reduce_boxes_in_lowest_layer,
        )
    if which == "multilevel":
        c = proto.multilevel
        return MultilevelAnchorGenerator(
            min_level=c.min_level,
            max_level=c.max_level,
            anchor_scale=c.anchor_scale,
            scales_per_octave=c.scales_per_octave,
            aspect_ratios=list(c.aspect_ratios) or (0.5, 1.0, 2.0),
        )
    raise ValueError("anchor_generator: set one of grid, multiscale, multilevel")
