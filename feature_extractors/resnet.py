"""ResNet v1 50/101/152 feature extractors (He et al.; Huang et al. supplementary).

Built from the Model Garden's pieces in the Model Garden's layout
(``official.vision.modeling.backbones.ResNet``, stem ``v0``: 7x7/2 conv, BN,
ReLU, 3x3/2 max-pool; ``nn_blocks.BottleneckBlock`` with the stride on the
first unit of each group and no conv biases), so the backbone has exactly the
variables (shapes and order) of ``backbones.ResNet(model_id)``; its parameter
count is keras.applications' ResNet minus its conv biases (BN follows every
conv) — the TF-slim ``resnet_v1_N`` count.

Every sub-network is a tf_keras functional model built by calling the same
layer objects, so loading ``build_backbone()``'s weights initialises all of
them.

* first stage: the last unit of conv4 (``block_group_l4``), 1024 channels,
  at ``output_stride``:
    16: conv4's first unit strided (the usual network);
     8: conv4 unstrided, every conv4 3x3 conv dilated by 2 (DeepLab/DilatedResNet);
    32: conv4's first unit with stride 4 (its 3x3 conv and its projection
        shortcut), every other unit as usual.
  The variables are the same at every stride.
* box classifier: conv5 (3 units, the first one strided by 2, as in the
  backbone — He et al.'s Faster R-CNN; TF OD API uses stride 1 there) and
  global average pooling: [N,h,w,1024] -> [N,2048]. 7x7 crops give a 4x4
  conv5 map. With ``fpn`` configured the box head is the meta-architecture's
  fc head (``fpn_head``); asking the extractor for one is a ConfigError.
* SSD: conv4 (stride 16 at the default output_stride) + extra layers of depth
  512, 512, 256, 256, 128 (ReLU): 6 maps, finest first.
* FPN: C2-C5 = the outputs of conv2..conv5 (strides 4..32) into the Model
  Garden FPN decoder (needs ``output_stride`` 16).
"""

import tensorflow as tf
import tf_keras
from official.vision.modeling.layers import nn_blocks

from detbench.core.regularizers import l2_regularizer
from detbench.errors import ConfigError
from detbench.feature_extractors import fpn as fpn_lib
from detbench.feature_extractors.base import FEATURE_EXTRACTORS, FeatureExtractor

UNITS = {50: (3, 4, 6, 3), 101: (3, 4, 23, 3), 152: (3, 8, 36, 3)}
FILTERS = (64, 128, 256, 512)
# conv4 first-unit stride and dilation of every conv4 unit, per output stride.
CONV4_STRIDE_DILATION = {8: (1, 2), 16: (2, 1), 32: (4, 1)}
# Model Garden / ImageNet normalization (official.vision.ops.preprocess_ops).
MEAN_RGB = (0.485 * 255, 0.456 * 255, 0.406 * 255)
STDDEV_RGB = (0.229 * 255, 0.224 * 255, 0.225 * 255)
SSD_EXTRA_DEPTHS = (512, 512, 256, 256, 128)


class ResNetV1(FeatureExtractor):
    model_id = None
    supported_output_strides = (8, 16, 32)
    supports_fpn = True
    rfcn_bins_and_crop = (7, 21)
    max_stride = 32
    first_stage_depth = 1024
    box_classifier_depth = 2048

    def __init__(self, config, is_training=True):
        super().__init__(config, is_training)
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

    def preprocess(self, images):
        return (tf.cast(images, tf.float32) - MEAN_RGB) / STDDEV_RGB

    # -- shared layers ----------------------------------------------------------
    def _layers(self):
        if self._groups is not None:
            return
        c = self.config
        reg = l2_regularizer(c.weight_decay)
        self._stem = [
            tf_keras.layers.Conv2D(
                64,
                7,
                2,
                padding="same",
                use_bias=False,
                kernel_initializer="VarianceScaling",
                kernel_regularizer=reg,
                name="conv1",
            ),
            fpn_lib.batch_norm(c, "conv1_bn"),
            tf_keras.layers.Activation("relu", name="conv1_relu"),
            tf_keras.layers.MaxPool2D(3, 2, padding="same", name="pool1"),
        ]
        self._groups = []
        for g, (filters, units) in enumerate(zip(FILTERS, UNITS[self.model_id])):
            stride, dilation = {
                0: (1, 1),
                1: (2, 1),
                2: CONV4_STRIDE_DILATION[self.output_stride],
                3: (2, 1),
            }[g]
            self._groups.append(
                [
                    nn_blocks.BottleneckBlock(
                        filters=filters,
                        strides=stride if u == 0 else 1,
                        dilation_rate=dilation,
                        use_projection=(u == 0),
                        kernel_regularizer=reg,
                        norm_momentum=c.batch_norm_momentum,
                        norm_epsilon=c.batch_norm_epsilon,
                        name=f"conv{g + 2}_unit{u + 1}",
                    )
                    for u in range(units)
                ]
            )

    def _run(self, x, last_group):
        """Image -> {str(level): output of conv<level>} for conv2..conv<last_group>."""
        self._layers()
        for layer in self._stem:
            x = layer(x)
        endpoints = {}
        for g in range(last_group - 1):
            for unit in self._groups[g]:
                x = unit(x)
            endpoints[str(g + 2)] = x
        return endpoints

    # -- sub-networks ---------------------------------------------------------
    def build_backbone(self):
        def build():
            inputs = self._image_input()
            return tf_keras.Model(inputs, self._run(inputs, 5), name=self.name)

        return self._cache.get("backbone", build)

    def build_first_stage(self):
        def build():
            inputs = self._image_input()
            return tf_keras.Model(
                inputs, self._run(inputs, 4)["4"], name=f"{self.name}_first_stage"
            )

        return self._cache.get("first_stage", build)

    def build_box_classifier(self):
        self.refuse_fpn_box_classifier()

        def build():
            self._layers()
            inputs = tf_keras.Input((None, None, self.first_stage_depth), name="crops")
            x = inputs
            for unit in self._groups[3]:
                x = unit(x)
            x = tf_keras.layers.GlobalAveragePooling2D(name="box_classifier_pool")(x)
            return tf_keras.Model(inputs, x, name=f"{self.name}_box_classifier")

        return self._cache.get("box_classifier", build)

    def build_ssd_feature_maps(self):
        def build():
            if self._ssd_extras is None:
                self._ssd_extras = fpn_lib.SSDExtraLayers(self.config, SSD_EXTRA_DEPTHS, "relu")
            inputs = self._image_input()
            conv4 = self._run(inputs, 4)["4"]
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
                self._run(inputs, 5),
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
