"""ResNet v1 50/101/152 feature extractors (He et al.; Huang et al. supplementary).

Built from the Model Garden's pieces in the Model Garden's layout
(``official.vision.modeling.backbones.ResNet``, stem ``v0``: 7x7/2 conv, BN,
ReLU, 3x3/2 max-pool; ``nn_blocks.BottleneckBlock`` with no conv biases), so
the backbone has exactly the variables (shapes and order) of
``backbones.ResNet(model_id)`` whatever the stride placement; its parameter
count is keras.applications' ResNet minus its conv biases (BN follows every
conv) — the TF-slim ``resnet_v1_N`` count.

Stride placement (``feature_extractor.stride_placement``; unset: the weights
file's, ``file_conventions``): where the network strides, as the three
published ResNet v1 variants do. The variables are the same in all three.

* ``MODEL_GARDEN`` (v1.5): each stage's first unit strides on its 3x3 conv
  ('same' padding); stem conv and max-pool 'same'.
* ``KERAS`` (keras.applications, the original Caffe ResNet): each stage's first
  unit strides on its first 1x1 conv and its projection; the stem conv is
  zero-padded by 3 and the max-pool by 1, both then 'valid'.
* ``SLIM`` (TF-slim ``resnet_v1_N``, the TF OD API's): the *last* unit of
  conv2..conv4 strides on its 3x3 conv, padded explicitly (slim's
  ``conv2d_same``), its identity shortcut subsampled; conv5 does not stride;
  stem conv padded by 3, max-pool 'same'. C2..C4 are those last units before
  their stride (slim's ``store_non_strided_activations``, as the OD API's FPN
  reads them), the next stage starting from every other pixel: the same
  network, evaluated where an endpoint is needed.

Every sub-network is a tf_keras functional model built by calling the same
layer objects (a unit takes its stride and dilation as call arguments), so
loading ``build_backbone()``'s weights initialises all of them.

* first stage: conv4's output (1024 channels) at ``output_stride``.
  MODEL_GARDEN and KERAS:
    16: conv4's first unit strided (the usual network);
     8: conv4 unstrided, every conv4 3x3 conv dilated by 2 (DeepLab/DilatedResNet);
    32: conv4's first unit with stride 4 (where that placement strides).
  SLIM: slim's atrous rule (``resnet_utils.stack_blocks_dense``): once the
  stride reaches ``output_stride`` the units that would stride do not, and
  the later ones dilate by the stride skipped (32: the plain network, conv4's
  map then at 32).
* box classifier: conv5 (3 units) and global average pooling: [N,h,w,1024]
  -> [N,2048]. MODEL_GARDEN / KERAS: its first unit strided by 2 (He et al.'s
  Faster R-CNN; 7x7 crops give a 4x4 map); SLIM: unstrided, as the TF OD API's
  ``SecondStageFeatureExtractor``. With ``fpn`` configured the box head is the
  meta-architecture's fc head (``fpn_head``); asking for this one is a
  ConfigError.
* SSD: the first-stage map + extra layers of depth 512, 512, 256, 256, 128
  (ReLU): 6 maps, finest first.
* FPN: C2-C5 (strides 4..32) into the Model Garden FPN decoder (needs
  ``output_stride`` 16).
"""

import dataclasses

import tensorflow as tf
import tf_keras
from official.vision.modeling.layers import nn_blocks

from detbench.core.regularizers import l2_regularizer
from detbench.errors import ConfigError
from detbench.feature_extractors import fpn as fpn_lib, weights, weights_keras, weights_slim
from detbench.feature_extractors.base import FEATURE_EXTRACTORS, FeatureExtractor
from detbench.registry import Registry

UNITS = {50: (3, 4, 6, 3), 101: (3, 4, 23, 3), 152: (3, 8, 36, 3)}
FILTERS = (64, 128, 256, 512)
# conv4 first-unit stride and dilation of every conv4 unit, per output stride
# (the placements that stride a stage's first unit).
CONV4_STRIDE_DILATION = {8: (1, 2), 16: (2, 1), 32: (4, 1)}
SSD_EXTRA_DEPTHS = (512, 512, 256, 256, 128)
# How each published ResNet v1 file was trained.
_SLIM_CONVENTIONS = {
    "stride_placement": "SLIM",
    "input_normalization": "RGB_MEANS",
    "batch_norm_epsilon": 1e-5,
}
FILE_CONVENTIONS = {
    weights_keras.FORMAT: {
        "stride_placement": "KERAS",
        "input_normalization": "CAFFE_BGR",
        "batch_norm_epsilon": 1.001e-5,
    },
    weights_slim.FORMAT: _SLIM_CONVENTIONS,
    weights.GARDEN: {
        "stride_placement": "MODEL_GARDEN",
        "input_normalization": "MEAN_STD",
        "batch_norm_epsilon": 0.001,
    },
    weights.ODAPI_FASTER_RCNN: _SLIM_CONVENTIONS,
}


def _first_unit_plan(units, output_stride, conv5_stride=2):
    """[[(stride, dilation) per unit] per stage]: each stage's first unit strides."""
    stages = ((1, 1), (2, 1), CONV4_STRIDE_DILATION[output_stride], (conv5_stride, 1))
    return [[(s if u == 0 else 1, d) for u in range(n)] for (s, d), n in zip(stages, units)]


def _slim_plan(units, output_stride):
    """TF-slim's: conv2..conv4's last unit strides by 2, conv5 not; from the stem's 4 on,
    a unit that would pass ``output_stride`` does not stride and later ones dilate."""
    natural = [[1] * (n - 1) + [2] for n in units[:3]] + [[1] * units[3]]
    current, rate, plan = 4, 1, []
    for stage in natural:
        row = []
        for s in stage:
            if current == output_stride:
                row.append((1, rate))
                rate *= s
            else:
                row.append((s, 1))
                current *= s
        plan.append(row)
    return plan


@dataclasses.dataclass(frozen=True)
class Placement:
    """Where a ResNet v1 variant strides (see the module docstring)."""

    plan: object  # (units per stage, output_stride) -> [[(stride, dilation)]]
    stride_on_1x1: bool  # a unit strides its first 1x1 conv (and projection), not its 3x3
    explicit_padding: bool  # a strided 3x3 conv is padded by 1 then 'valid' (slim's conv2d_same)
    stem_conv_padding: bool  # the stem's 7x7 conv is padded by 3 then 'valid'
    stem_pool_padding: bool  # the stem's max-pool is zero-padded by 1 then 'valid'
    backbone_output_stride: object  # config output stride -> the backbone's (FPN, pretraining)
    box_classifier_stride: int  # conv5's stride in the box classifier


PLACEMENTS = Registry("ResNet v1 stride placement")
PLACEMENTS.register("MODEL_GARDEN")(
    Placement(_first_unit_plan, False, False, False, False, lambda os: os, 2)
)
PLACEMENTS.register("KERAS")(Placement(_first_unit_plan, True, False, True, True, lambda os: os, 2))
PLACEMENTS.register("SLIM")(Placement(_slim_plan, False, True, True, False, lambda os: 32, 1))


class ResNetUnit(nn_blocks.BottleneckBlock):
    """The Model Garden's bottleneck unit (same variables, same object paths) whose stride
    and dilation are call arguments, striding where ``placement`` says."""

    def __init__(self, placement, **kwargs):
        super().__init__(**kwargs)
        self._placement = placement

    def build(self, input_shape):
        super().build(input_shape)
        channels = int(input_shape[-1])
        if self._use_projection:
            self._shortcut.build([None, None, None, channels])
        self._conv1.build([None, None, None, channels])
        self._conv2.build([None, None, None, self._filters])
        self._conv3.build([None, None, None, self._filters])

    def call(self, inputs, training=None, stride=1, dilation=1):
        p = self._placement
        s1, s2 = (stride, 1) if p.stride_on_1x1 else (1, stride)
        if self._use_projection:
            shortcut = self._norm0(_conv(self._shortcut, inputs, stride))
        else:
            shortcut = inputs[:, ::stride, ::stride, :] if stride > 1 else inputs
        x = self._activation1(self._norm1(_conv(self._conv1, inputs, s1)))
        x = _conv(self._conv2, x, s2, dilation, explicit=p.explicit_padding)
        x = self._activation2(self._norm2(x))
        x = self._norm3(_conv(self._conv3, x))
        return self._activation3(self._add([x, shortcut]))


def _conv(layer, x, stride=1, dilation=1, explicit=False):
    """``layer``'s convolution at ``stride`` / ``dilation`` ('same', or padded by
    (k - 1) / 2 then 'valid' when ``explicit`` and strided: slim's conv2d_same)."""
    padding = "SAME"
    if explicit and stride > 1:
        k = layer.kernel_size[0]
        x = tf.pad(x, [[0, 0], [(k - 1) // 2, k // 2], [(k - 1) // 2, k // 2], [0, 0]])
        padding = "VALID"
    return tf.nn.convolution(x, layer.kernel, strides=stride, padding=padding, dilations=dilation)


class ResNetV1(FeatureExtractor):
    model_id = None
    supported_output_strides = (8, 16, 32)
    supports_fpn = True
    rfcn_bins_and_crop = (7, 21)
    max_stride = 32
    first_stage_depth = 1024
    box_classifier_depth = 2048
    default_normalization = "MEAN_STD"
    stride_placements = tuple(PLACEMENTS.names())
    file_conventions = FILE_CONVENTIONS

    def __init__(self, config, is_training=True):
        super().__init__(config, is_training)
        self.placement = PLACEMENTS.get(self.stride_placement)
        self._cache = fpn_lib.SubNetworkCache(self.freeze_batchnorm)
        self._stem = None
        self._groups = None
        self._ssd_extras = None
        self._fpn_decoders = {}

    @classmethod
    def check_config(cls, config, meta_arch=None):
        super().check_config(config, meta_arch)
        if config.HasField("fpn") and config.output_stride != 16:
            raise ConfigError(
                "feature_extractor.output_stride: FPN uses the backbone's own "
                f"strides (4..32); set 16, not {config.output_stride}"
            )

    @property
    def name(self):
        return getattr(self, "registered_name", f"resnet{self.model_id}_v1")

    # -- shared layers ----------------------------------------------------------
    def _layers(self):
        if self._groups is not None:
            return
        c = self.config
        p = self.placement
        reg = l2_regularizer(c.weight_decay)
        self._stem = [
            tf_keras.layers.Conv2D(
                64,
                7,
                2,
                padding="valid" if p.stem_conv_padding else "same",
                use_bias=False,
                kernel_initializer="VarianceScaling",
                kernel_regularizer=reg,
                name="conv1",
            ),
            fpn_lib.batch_norm(c, "conv1_bn"),
            tf_keras.layers.Activation("relu", name="conv1_relu"),
            tf_keras.layers.MaxPool2D(
                3, 2, padding="valid" if p.stem_pool_padding else "same", name="pool1"
            ),
        ]
        self._groups = [
            [
                ResNetUnit(
                    p,
                    filters=filters,
                    strides=1,
                    use_projection=(u == 0),
                    kernel_regularizer=reg,
                    norm_momentum=c.batch_norm_momentum,
                    norm_epsilon=c.batch_norm_epsilon,
                    name=f"conv{g + 2}_unit{u + 1}",
                )
                for u in range(units)
            ]
            for g, (filters, units) in enumerate(zip(FILTERS, UNITS[self.model_id]))
        ]

    def _plan(self, output_stride):
        return self.placement.plan(UNITS[self.model_id], output_stride)

    def _run(self, x, last_group, output_stride, endpoints_at_every_stage=False):
        """Image -> {str(level): output of conv<level>} for conv2..conv<last_group>, the
        first-stage map at ``output_stride``. ``endpoints_at_every_stage``: a stage
        whose last unit strides (SLIM) is evaluated unstrided, its output the
        stage's endpoint, and the next stage starts from every other pixel (the
        same network)."""
        self._layers()
        conv, norm, relu, pool = self._stem
        p = self.placement
        if p.stem_conv_padding:
            x = tf.pad(x, [[0, 0], [3, 3], [3, 3], [0, 0]])
        x = relu(norm(conv(x)))
        if p.stem_pool_padding:
            x = tf.pad(x, [[0, 0], [1, 1], [1, 1], [0, 0]])  # after ReLU: zeros act as -inf
        x = pool(x)
        plan = self._plan(output_stride)
        endpoints = {}
        for g in range(last_group - 1):
            units, skipped = self._groups[g], 1
            for u, (unit, (stride, dilation)) in enumerate(zip(units, plan[g])):
                if endpoints_at_every_stage and u == len(units) - 1 and u > 0 and stride > 1:
                    stride, skipped = 1, stride
                x = unit(x, stride=stride, dilation=dilation)
            endpoints[str(g + 2)] = x
            if skipped > 1:
                x = x[:, ::skipped, ::skipped, :]
        return endpoints

    def _endpoints(self, inputs):
        """C2..C5 of the backbone (FPN, pretraining, what weight files hold)."""
        output_stride = self.placement.backbone_output_stride(self.output_stride)
        return self._run(inputs, 5, output_stride, endpoints_at_every_stage=True)

    # -- sub-networks ---------------------------------------------------------
    def build_backbone(self):
        def build():
            inputs = self._image_input()
            return tf_keras.Model(inputs, self._endpoints(inputs), name=self.name)

        return self._cache.get("backbone", build)

    def build_first_stage(self):
        def build():
            inputs = self._image_input()
            return tf_keras.Model(
                inputs,
                self._run(inputs, 4, self.output_stride)["4"],
                name=f"{self.name}_first_stage",
            )

        return self._cache.get("first_stage", build)

    def build_box_classifier(self):
        self.refuse_fpn_box_classifier()

        def build():
            self._layers()
            inputs = tf_keras.Input((None, None, self.first_stage_depth), name="crops")
            x = inputs
            for u, unit in enumerate(self._groups[3]):
                x = unit(x, stride=self.placement.box_classifier_stride if u == 0 else 1)
            x = tf_keras.layers.GlobalAveragePooling2D(name="box_classifier_pool")(x)
            return tf_keras.Model(inputs, x, name=f"{self.name}_box_classifier")

        return self._cache.get("box_classifier", build)

    def build_ssd_feature_maps(self):
        def build():
            if self._ssd_extras is None:
                self._ssd_extras = fpn_lib.SSDExtraLayers(self.config, SSD_EXTRA_DEPTHS, "relu")
            inputs = self._image_input()
            conv4 = self._run(inputs, 4, self.output_stride)["4"]
            maps = [conv4] + self._ssd_extras(conv4)
            return tf_keras.Model(inputs, maps, name=f"{self.name}_ssd_feature_maps")

        return self._cache.get("ssd", build)

    def build_fpn(self, min_level, max_level, depth):
        fpn_lib.check_fpn_levels(self.name, min_level, max_level, depth)
        fpn_lib.check_fpn_stride(self.output_stride)

        def build():
            inputs = self._image_input()
            return fpn_lib.pyramid_model(
                self.name,
                self.config,
                self._fpn_decoders,
                inputs,
                self._endpoints(inputs),
                min_level,
                max_level,
                depth,
            )

        return self._cache.get(("fpn", min_level, max_level, depth), build)


@FEATURE_EXTRACTORS.register("resnet50_v1")
class ResNet50V1(ResNetV1):
    model_id = 50


@FEATURE_EXTRACTORS.register("resnet101_v1")
class ResNet101V1(ResNetV1):
    model_id = 101


@FEATURE_EXTRACTORS.register("resnet152_v1")
class ResNet152V1(ResNetV1):
    model_id = 152
