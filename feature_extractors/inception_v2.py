"""Inception v2 (BN-Inception, Ioffe & Szegedy 2015) as TF-slim's ``inception_v2``.

Layer by layer slim's ``inception_v2_base`` with its defaults: a separable
7x7 stem (depthwise multiplier 8), SAME padding everywhere, batch norm without
scale (slim's ``inception_arg_scope``) after every convolution, ReLU.

* first stage: ``Mixed_4e`` (stride 16, 576 channels), as the TF OD API's
  Faster R-CNN Inception v2;
* box classifier: ``Mixed_5a`` .. ``Mixed_5c`` then global average pooling
  (1024);
* SSD: ``Mixed_4c`` (stride 16), ``Mixed_5c`` (stride 32) and extra maps of
  depth 512/256/256/128 (6 maps, as the TF OD API's SSD Inception v2).
"""

import tf_keras

from detbench.feature_extractors.base import FEATURE_EXTRACTORS
from detbench.feature_extractors.layers import LayerBankExtractor, concat

# name, 1x1, (3x3 reduce, 3x3), (double-3x3 reduce, double 3x3), pool, pool projection.
# A module without a 1x1 branch is a stride-2 reduction: its 3x3 and the last
# double-3x3 convolutions have stride 2 and its pool branch is a plain max pool.
MODULES = (
    ("Mixed_3b", 64, (64, 64), (64, 96), "avg", 32),
    ("Mixed_3c", 64, (64, 96), (64, 96), "avg", 64),
    ("Mixed_4a", None, (128, 160), (64, 96), "max", None),
    ("Mixed_4b", 224, (64, 96), (96, 128), "avg", 128),
    ("Mixed_4c", 192, (96, 128), (96, 128), "avg", 128),
    ("Mixed_4d", 160, (128, 160), (128, 160), "avg", 96),
    ("Mixed_4e", 96, (128, 192), (160, 192), "avg", 96),
    ("Mixed_5a", None, (128, 192), (192, 256), "max", None),
    ("Mixed_5b", 352, (192, 320), (160, 224), "avg", 128),
    ("Mixed_5c", 352, (192, 320), (192, 224), "max", 128),
)
_INDEX = {m[0]: i for i, m in enumerate(MODULES)}


@FEATURE_EXTRACTORS.register("inception_v2")
class InceptionV2(LayerBankExtractor):
    supported_output_strides = (16,)
    rfcn_bins_and_crop = (3, 12)
    max_stride = 32
    first_stage_depth = 576
    ssd_extra_depths = (512, 256, 256, 128)

    def _stem(self, x):
        b = self.bank
        with b.scope("stem"):
            x = b.conv_bn(x, 64, 7, strides=2, separable_depth_multiplier=8, name="Conv2d_1a_7x7")
            x = tf_keras.layers.MaxPooling2D(3, strides=2, padding="same")(x)
            x = b.conv_bn(x, 64, 1, name="Conv2d_2b_1x1")
            x = b.conv_bn(x, 192, 3, name="Conv2d_2c_3x3")
            return tf_keras.layers.MaxPooling2D(3, strides=2, padding="same")(x)

    def _module(self, x, name, b0, b1, b2, pool, proj):
        b = self.bank
        stride = 2 if b0 is None else 1
        with b.scope(name):
            branches = [] if b0 is None else [b.conv_bn(x, b0, 1)]
            y = b.conv_bn(x, b1[0], 1)
            branches.append(b.conv_bn(y, b1[1], 3, strides=stride))
            y = b.conv_bn(x, b2[0], 1)
            y = b.conv_bn(y, b2[1], 3)
            branches.append(b.conv_bn(y, b2[1], 3, strides=stride))
            pool_layer = (
                tf_keras.layers.AveragePooling2D if pool == "avg" else tf_keras.layers.MaxPooling2D
            )
            y = pool_layer(3, strides=stride, padding="same")(x)
            branches.append(y if proj is None else b.conv_bn(y, proj, 1))
            return concat(branches, name)

    def _modules(self, x, first, last, collect=()):
        """Run modules ``first`` .. ``last``; returns the output and the ``collect`` maps."""
        found = []
        for module in MODULES[_INDEX[first] : _INDEX[last] + 1]:
            x = self._module(x, *module)
            if module[0] in collect:
                found.append(x)
        return x, found

    def _backbone(self, x):
        return self._modules(self._stem(x), "Mixed_3b", "Mixed_5c")[0]

    def _first_stage(self, x):
        return self._modules(self._stem(x), "Mixed_3b", "Mixed_4e")[0]

    def _box_classifier_features(self, x):
        return self._modules(x, "Mixed_5a", "Mixed_5c")[0]

    def _ssd_backbone_maps(self, x):
        return self._modules(
            self._stem(x), "Mixed_3b", "Mixed_5c", collect=("Mixed_4c", "Mixed_5c")
        )[1]
