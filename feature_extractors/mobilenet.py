"""MobileNet v1 and v2 feature extractors (Howard et al.; Sandler et al.; Huang et al.).

Built from the Model Garden's MobileNet block specs and blocks
(``official.vision.modeling.backbones.mobilenet``: ``MNV1_BLOCK_SPECS`` /
``MNV2_BLOCK_SPECS``, ``Conv2DBNBlock``, ``nn_blocks.DepthwiseSeparableConvBlock``,
``nn_blocks.InvertedBottleneckBlock``), with TF OD API channel rules:
v1 ``max(int(d * depth_multiplier), min_depth)``; v2
``make_divisible(d * depth_multiplier, 8, min_depth)`` and the last 1x1 conv
kept at 1280 when depth_multiplier < 1 (finegrain classification mode, as
keras.applications). At depth_multiplier 1 the backbone has exactly the
parameters of keras.applications' MobileNet / MobileNetV2 (include_top=False).

Layers are numbered as the specs (index 0 = the first 3x3/2 conv, v1's
"Conv2d_0"). Every sub-network re-calls the same layer objects.

* first stage (stride 16): v1 Conv2d_11 (512*m channels); v2 the output of
  spec 13 (the last 96-channel inverted bottleneck, the layer before the
  stride-32 block).
    8: the stride-16 layer unstrided, the layers after it up to the first
       stage dilated by 2 (the Model Garden's output_stride rule);
   32: the layer after the stride-16 layer strided by 2 (v1 Conv2d_7, v2 spec
       8, whose residual then drops out as it does for any strided block).
* box classifier: the remaining layers as in the backbone (v1 Conv2d_12-13,
  v2 specs 14-18, the first strided) + global average pooling -> [N,1024*m]
  (v1) / [N,1280] (v2).
* SSD: the stride-16 map (v1 Conv2d_11; v2 the expansion output of spec 14,
  TF OD API's ``layer_15/expansion_output``) and the stride-32 map (v1
  Conv2d_13, v2 the 1280 conv) + extras 512/256/256/128 (scaled by
  depth_multiplier, at least min_depth), ReLU6: 6 maps.
* FPN (v2 only): C2-C5 = specs 3, 6, 13 and 18 (strides 4, 8, 16, 32).
"""

import tf_keras
from official.vision.modeling.backbones import mobilenet as mg_mobilenet
from official.vision.modeling.layers import nn_blocks, nn_layers

from detbench.core.regularizers import l2_regularizer
from detbench.errors import ConfigError
from detbench.feature_extractors import fpn as fpn_lib, weights
from detbench.feature_extractors.base import FEATURE_EXTRACTORS, FeatureExtractor

SSD_EXTRA_DEPTHS = (512, 256, 256, 128)


class MobileNet(FeatureExtractor):
    specs = None
    supported_output_strides = (8, 16, 32)
    rfcn_bins_and_crop = (3, 12)
    max_stride = 32
    first_stage_index = None  # spec index of the first-stage layer (stride 16)
    stride16_index = None  # spec index of the layer that reaches stride 16
    fpn_indices = None  # spec indices of C2..C5
    # The Model Garden trains its classifiers on ImageNet mean / std inputs
    # (official.vision.dataloaders.classification_input), Keras and slim on [-1, 1].
    file_conventions = {weights.GARDEN: {"input_normalization": "MEAN_STD"}}

    def __init__(self, config, is_training=True):
        super().__init__(config, is_training)
        self._cache = fpn_lib.SubNetworkCache(self.freeze_batchnorm)
        self._blocks = None
        self._ssd_extras = None
        self._fpn_decoders = {}

    @classmethod
    def check_config(cls, config, meta_arch=None):
        super().check_config(config, meta_arch)
        if config.depth_multiplier <= 0:
            raise ConfigError(
                "feature_extractor.depth_multiplier: must be positive, "
                f"not {config.depth_multiplier}"
            )
        if config.HasField("fpn") and config.output_stride != 16:
            raise ConfigError(
                "feature_extractor.output_stride: FPN uses the backbone's own "
                f"strides (4..32); set 16, not {config.output_stride}"
            )

    @property
    def name(self):
        return getattr(self, "registered_name", type(self).__name__)

    def depth(self, d, index=None):
        """Channels of a layer of nominal depth ``d`` (spec ``index``)."""
        raise NotImplementedError

    def _ssd_stride16_and_top(self, inputs):
        """Image -> (stride-32 map, stride-16 map) for SSD."""
        raise NotImplementedError

    # -- shared layers ----------------------------------------------------------
    def _strides_and_rates(self):
        """Per spec index: (stride, dilation) for the configured output stride."""
        s16, fs = self.stride16_index, self.first_stage_index
        out = []
        for i, spec in enumerate(self.specs["block_specs"]):
            stride, rate = spec[2], 1
            if self.output_stride == 8:
                if i == s16:
                    stride = 1
                elif s16 < i <= fs:
                    rate = 2
            elif self.output_stride == 32 and i == s16 + 1:
                stride = 2
            out.append((stride, rate))
        return out

    def _layers(self):
        if self._blocks is not None:
            return
        c = self.config
        reg = l2_regularizer(c.weight_decay)
        common = dict(
            kernel_regularizer=reg,
            norm_momentum=c.batch_norm_momentum,
            norm_epsilon=c.batch_norm_epsilon,
        )
        self._blocks = []
        in_filters = 3
        for i, ((stride, rate), decoded) in enumerate(
            zip(self._strides_and_rates(), self._decoded())
        ):
            filters = self.depth(decoded.filters, i)
            if decoded.block_fn == "convbn":
                block = mg_mobilenet.Conv2DBNBlock(
                    filters=filters,
                    kernel_size=decoded.kernel_size,
                    strides=stride,
                    activation="relu6",
                    name=f"layer_{i}",
                    **common,
                )
            elif decoded.block_fn == "depsepconv":
                block = nn_blocks.DepthwiseSeparableConvBlock(
                    filters=filters,
                    kernel_size=decoded.kernel_size,
                    strides=stride,
                    dilation_rate=rate,
                    activation="relu6",
                    name=f"layer_{i}",
                    **common,
                )
            else:
                block = nn_blocks.InvertedBottleneckBlock(
                    in_filters=in_filters,
                    out_filters=filters,
                    expand_ratio=decoded.expand_ratio,
                    strides=stride,
                    kernel_size=decoded.kernel_size,
                    dilation_rate=rate,
                    activation="relu6",
                    divisible_by=8,
                    name=f"layer_{i}",
                    **common,
                )
            self._blocks.append(block)
            in_filters = filters

    def _decoded(self):
        return mg_mobilenet.block_spec_decoder(self.specs, 1.0, divisible_by=1)

    def _run(self, x, last, taps=()):
        """Run specs 0..last; return (output, {index: output of the spec at index})."""
        self._layers()
        tapped = {}
        for i in range(last + 1):
            x = self._blocks[i](x)
            if i in taps:
                tapped[i] = x
        return x, tapped

    # -- sub-networks ---------------------------------------------------------
    def build_backbone(self):
        def build():
            inputs = self._image_input()
            x, _ = self._run(inputs, len(self.specs["block_specs"]) - 1)
            return tf_keras.Model(inputs, x, name=self.name)

        return self._cache.get("backbone", build)

    def build_first_stage(self):
        def build():
            inputs = self._image_input()
            x, _ = self._run(inputs, self.first_stage_index)
            return tf_keras.Model(inputs, x, name=f"{self.name}_first_stage")

        return self._cache.get("first_stage", build)

    def build_box_classifier(self):
        self.refuse_fpn_box_classifier()

        def build():
            self._layers()
            depth = self.depth(
                self._decoded()[self.first_stage_index].filters, self.first_stage_index
            )
            inputs = tf_keras.Input((None, None, depth), name="crops")
            x = inputs
            for block in self._blocks[self.first_stage_index + 1 :]:
                x = block(x)
            x = tf_keras.layers.GlobalAveragePooling2D(name="box_classifier_pool")(x)
            return tf_keras.Model(inputs, x, name=f"{self.name}_box_classifier")

        return self._cache.get("box_classifier", build)

    def build_ssd_feature_maps(self):
        def build():
            if self._ssd_extras is None:
                depths = [
                    max(int(d * self.depth_multiplier), self.min_depth) for d in SSD_EXTRA_DEPTHS
                ]
                self._ssd_extras = fpn_lib.SSDExtraLayers(self.config, depths, "relu6")
            inputs = self._image_input()
            top, stride16 = self._ssd_stride16_and_top(inputs)
            maps = [stride16, top] + self._ssd_extras(top)
            return tf_keras.Model(inputs, maps, name=f"{self.name}_ssd_feature_maps")

        return self._cache.get("ssd", build)


@FEATURE_EXTRACTORS.register("mobilenet_v1")
class MobileNetV1(MobileNet):
    specs = mg_mobilenet.MNV1_BLOCK_SPECS
    first_stage_index = 11
    stride16_index = 6
    # With the common recipe (peak 0.002, 500 steps) v1 reached 0.66 held-out accuracy
    # against v2's 0.90: it starts near chance and learns slowly. Peak 0.005 for 800
    # steps: 0.93 (docs/pretraining.md).
    pretraining_recipe = {"learning_rate": 0.005, "steps": 800}

    def depth(self, d, index=None):
        return max(int(d * self.depth_multiplier), self.min_depth)

    def _ssd_stride16_and_top(self, inputs):
        top, tapped = self._run(inputs, 13, taps=(11,))
        return top, tapped[11]


@FEATURE_EXTRACTORS.register("mobilenet_v2")
class MobileNetV2(MobileNet):
    specs = mg_mobilenet.MNV2_BLOCK_SPECS
    first_stage_index = 13
    stride16_index = 7
    supports_fpn = True
    fpn_indices = (3, 6, 13, 18)

    def depth(self, d, index=None):
        if index == len(self.specs["block_specs"]) - 1 and self.depth_multiplier < 1:
            return int(d)  # finegrain classification mode: the 1280 conv keeps its width
        return nn_layers.round_filters(
            d, self.depth_multiplier, divisor=8, min_depth=self.min_depth
        )

    def _ssd_stride16_and_top(self, inputs):
        top, tapped = self._run(inputs, 18, taps=(13,))
        # TF OD API's layer_15/expansion_output: spec 14's 1x1 expansion + BN + ReLU6,
        # re-calling that block's own sub-layers (built by the call above).
        block = self._blocks[14]
        x = block._conv0(tapped[13])
        x = block._norm0(x)
        x = block._activation_layer(x)
        return top, x

    def build_fpn(self, min_level, max_level, depth):
        fpn_lib.check_fpn_levels(self.name, min_level, max_level, depth)
        fpn_lib.check_fpn_stride(self.output_stride)

        def build():
            inputs = self._image_input()
            _, tapped = self._run(inputs, self.fpn_indices[-1], taps=self.fpn_indices)
            endpoints = {str(level): tapped[i] for level, i in zip(range(2, 6), self.fpn_indices)}
            return fpn_lib.pyramid_model(
                self.name,
                self.config,
                self._fpn_decoders,
                inputs,
                endpoints,
                min_level,
                max_level,
                depth,
            )

        return self._cache.get(("fpn", min_level, max_level, depth), build)
