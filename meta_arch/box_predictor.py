"""Convolutional box predictor: per-anchor class logits and box encodings.

Applied to a list of feature maps (SSD maps or FPN levels, finest first), it
returns, for every anchor of every map, ``num_class_columns`` class logits and
``code_size`` box encodings, flattened in the anchor generators' order: maps
concatenated, within a map (y, x, anchor type).

Per map: ``num_layers_before_predictor`` k x k convolutions of ``depth``
channels with ReLU (the RetinaNet "tower"), then one k x k convolution for the
class logits (A * C channels) and one for the box encodings (A * code_size
channels). With ``separate_class_and_box_towers`` the class logits and the box
encodings each get their own tower (RetinaNet's two subnets, Lin et al.).
With ``share_weights_across_levels`` one tower and one pair of output
convolutions serve every map (RetinaNet); that needs equal depths and equal
anchors per location across maps.

Initialisation follows Lin et al. (RetinaNet): kernels N(0, 0.01), biases 0,
except the class bias when ``class_prior_probability`` p > 0: every column
gets -log((1 - p) / p) (sigmoid: every class starts at probability p) or, with
a background column (softmax), column 0 gets log((1 - p) / p) and the rest 0,
so the foreground classes start small.
"""

import math

import tensorflow as tf
import tf_keras

from detbench.core.regularizers import l2_regularizer
from detbench.errors import ConfigError
from detbench.protos import ssd_pb2

_PREDICTOR = ssd_pb2.ConvolutionalBoxPredictor()  # the constructor's defaults


def _static_or_dynamic(tensor, axis):
    dim = tensor.shape[axis]
    return dim if dim is not None else tf.shape(tensor)[axis]


def _check_settings(kernel_size, depth, num_layers, class_prior_probability, share, anchors):
    """ConfigError (field relative to the predictor's message) on settings no
    predictor can have; ``anchors``: anchors per location on each map."""
    if kernel_size < 1 or num_layers < 0 or depth < 1:
        raise ConfigError(
            "box_predictor: kernel_size and depth must be >= 1 and "
            "num_layers_before_predictor >= 0, got "
            f"{kernel_size}, {depth}, {num_layers}"
        )
    if not 0.0 <= class_prior_probability < 1.0:
        raise ConfigError(
            f"box_predictor.class_prior_probability must be in [0, 1), got {class_prior_probability}"
        )
    if share and len(set(anchors)) != 1:
        raise ConfigError(
            "box_predictor.share_weights_across_levels needs the same number of anchors "
            f"per location on every map, got {list(anchors)}"
        )


def check_box_predictor(config, num_anchors_per_location):
    """A ConvolutionalBoxPredictor proto's settings (what the layer would refuse)."""
    _check_settings(
        config.kernel_size,
        config.depth,
        config.num_layers_before_predictor,
        config.class_prior_probability,
        config.share_weights_across_levels,
        num_anchors_per_location,
    )


class ConvolutionalBoxPredictor(tf_keras.layers.Layer):
    """feature maps [B, h_k, w_k, d_k] -> (box_encodings [B, N, code_size],
    class_logits [B, N, num_class_columns]), N = sum_k h_k * w_k * A_k."""

    def __init__(
        self,
        num_class_columns,
        num_anchors_per_location,
        kernel_size=_PREDICTOR.kernel_size,
        num_layers_before_predictor=_PREDICTOR.num_layers_before_predictor,
        depth=_PREDICTOR.depth,
        share_weights_across_levels=_PREDICTOR.share_weights_across_levels,
        class_prior_probability=_PREDICTOR.class_prior_probability,
        background_column=False,
        code_size=4,
        weight_decay=0.0,
        separate_class_and_box_towers=_PREDICTOR.separate_class_and_box_towers,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.num_class_columns = int(num_class_columns)
        self.num_anchors_per_location = [int(a) for a in num_anchors_per_location]
        self.kernel_size = int(kernel_size)
        self.num_layers_before_predictor = int(num_layers_before_predictor)
        self.depth = int(depth)
        self.share_weights = bool(share_weights_across_levels)
        self.class_prior_probability = float(class_prior_probability)
        self.background_column = bool(background_column)
        self.code_size = int(code_size)
        self.weight_decay = float(weight_decay)
        self.separate_towers = bool(separate_class_and_box_towers)
        _check_settings(
            self.kernel_size,
            self.depth,
            self.num_layers_before_predictor,
            self.class_prior_probability,
            self.share_weights,
            self.num_anchors_per_location,
        )
        self._regularizer = l2_regularizer(weight_decay)
        heads = 1 if self.share_weights else len(self.num_anchors_per_location)
        self.towers = [
            [
                self._conv(self.depth, f"tower_{h}_{i}", "relu", kernel_initializer="he_normal")
                for i in range(self.num_layers_before_predictor)
            ]
            for h in range(heads)
        ]
        # With separate towers, self.towers feed the class logits and these the boxes.
        self.box_towers = (
            [
                [
                    self._conv(
                        self.depth, f"box_tower_{h}_{i}", "relu", kernel_initializer="he_normal"
                    )
                    for i in range(self.num_layers_before_predictor)
                ]
                for h in range(heads)
            ]
            if self.separate_towers
            else None
        )
        a = self.num_anchors_per_location
        self.class_convs = [
            self._conv(
                a[h] * self.num_class_columns, f"class_{h}", bias_initializer=self._class_bias(a[h])
            )
            for h in range(heads)
        ]
        self.box_convs = [self._conv(a[h] * self.code_size, f"box_{h}") for h in range(heads)]

    def _conv(
        self, filters, name, activation=None, bias_initializer="zeros", kernel_initializer=None
    ):
        return tf_keras.layers.Conv2D(
            filters,
            self.kernel_size,
            padding="same",
            activation=activation,
            name=name,
            kernel_initializer=(
                kernel_initializer or tf_keras.initializers.RandomNormal(stddev=0.01)
            ),
            bias_initializer=bias_initializer,
            kernel_regularizer=self._regularizer,
        )

    def _class_bias(self, num_anchors):
        p = self.class_prior_probability
        if p <= 0.0:
            return "zeros"
        prior = math.log((1.0 - p) / p)
        row = [0.0] * self.num_class_columns
        if self.background_column:
            row[0] = prior
        else:
            row = [-prior] * self.num_class_columns
        return tf_keras.initializers.Constant(row * num_anchors)

    def _flatten(self, x, channels):
        """[B, h, w, A * channels] -> [B, h * w * A, channels], static where possible."""
        h, w, ac = x.shape[1], x.shape[2], x.shape[3]
        n = h * w * (ac // channels) if h is not None and w is not None else -1
        return tf.reshape(x, [_static_or_dynamic(x, 0), n, channels])

    def call(self, feature_maps, training=False):
        feature_maps = list(feature_maps)
        if len(feature_maps) != len(self.num_anchors_per_location):
            raise ValueError(
                f"box predictor built for {len(self.num_anchors_per_location)} "
                f"feature maps, got {len(feature_maps)}"
            )
        if self.share_weights:
            depths = {int(f.shape[-1]) for f in feature_maps}
            if len(depths) != 1:
                raise ConfigError(
                    "box_predictor.share_weights_across_levels needs feature "
                    f"maps of equal depth, got depths {sorted(depths)}"
                )
        boxes, classes = [], []
        for k, x in enumerate(feature_maps):
            h = 0 if self.share_weights else k
            box_x = x
            for conv in self.towers[h]:
                x = conv(x)
            if self.separate_towers:
                for conv in self.box_towers[h]:
                    box_x = conv(box_x)
            else:
                box_x = x
            boxes.append(self._flatten(self.box_convs[h](box_x), self.code_size))
            classes.append(self._flatten(self.class_convs[h](x), self.num_class_columns))
        return tf.concat(boxes, axis=1), tf.concat(classes, axis=1)

    def get_config(self):
        config = super().get_config()
        config.update(
            num_class_columns=self.num_class_columns,
            num_anchors_per_location=self.num_anchors_per_location,
            kernel_size=self.kernel_size,
            num_layers_before_predictor=self.num_layers_before_predictor,
            depth=self.depth,
            share_weights_across_levels=self.share_weights,
            class_prior_probability=self.class_prior_probability,
            background_column=self.background_column,
            code_size=self.code_size,
            weight_decay=self.weight_decay,
            separate_class_and_box_towers=self.separate_towers,
        )
        return config


def build_box_predictor(
    config, num_class_columns, num_anchors_per_location, background_column=False, weight_decay=0.0
):
    """ConvolutionalBoxPredictor proto -> ConvolutionalBoxPredictor layer."""
    return ConvolutionalBoxPredictor(
        num_class_columns,
        num_anchors_per_location,
        kernel_size=config.kernel_size,
        num_layers_before_predictor=config.num_layers_before_predictor,
        depth=config.depth,
        share_weights_across_levels=config.share_weights_across_levels,
        class_prior_probability=config.class_prior_probability,
        background_column=background_column,
        weight_decay=weight_decay,
        separate_class_and_box_towers=config.separate_class_and_box_towers,
        name="box_predictor",
    )
