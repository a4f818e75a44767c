"""Inception v3 (Szegedy et al. 2016), layer by layer keras.applications' ``InceptionV3``.

Same layers, order and padding as the reference (VALID stem, batch norm
without scale), so its ImageNet weight file loads layer by layer. Module names
follow TF-slim (keras name in brackets): Mixed_5b-5d (mixed0-2), Mixed_6a
(mixed3), Mixed_6b-6e (mixed4-7), Mixed_7a (mixed8), Mixed_7b-7c (mixed9-10).

* first stage: ``Mixed_6e`` (stride 16, 768 channels);
* box classifier: ``Mixed_7a`` .. ``Mixed_7c`` then global average pooling
  (2048); crops smaller than 3x3 are zero-padded to 3x3 for Mixed_7a's VALID
  convolutions;
* SSD: ``Mixed_6e`` (stride 16), ``Mixed_7c`` (stride 32) and extra maps of
  depth 512/256/256/128 (6 maps).

The VALID stem makes maps slightly smaller than H/stride: with
``v(n) = (n - 3) // 2 + 1`` the stride-8 side is ``v(v(v(H) - 2) - 2)``, the
stride-16 side ``v`` of that and the stride-32 side ``v`` again. The smallest
input is 75 px for the full network (and SSD), 43 px for the first stage.
"""

import tf_keras

from detbench.feature_extractors.base import FEATURE_EXTRACTORS
from detbench.feature_extractors.layers import (
    LayerBankExtractor,
    PadToMinSize,
    concat,
    inception_v3_stem,
)

L = tf_keras.layers


@FEATURE_EXTRACTORS.register("inception_v3")
class InceptionV3(LayerBankExtractor):
    supported_output_strides = (16,)
    rfcn_bins_and_crop = (7, 21)
    max_stride = 32
    first_stage_depth = 768
    ssd_extra_depths = (512, 256, 256, 128)

    def _stem(self, x):
        return inception_v3_stem(self.bank, x)

    def _block_35(self, x, name, pool_proj):
        """Mixed_5b-5d: 1x1 | 1x1-5x5 | 1x1-3x3-3x3 | avgpool-1x1."""
        b = self.bank
        with b.scope(name):
            b0 = b.conv_bn(x, 64, 1)
            b1 = b.conv_bn(b.conv_bn(x, 48, 1), 64, 5)
            b2 = b.conv_bn(b.conv_bn(b.conv_bn(x, 64, 1), 96, 3), 96, 3)
            b3 = b.conv_bn(L.AveragePooling2D(3, strides=1, padding="same")(x), pool_proj, 1)
            return concat([b0, b1, b2, b3], name)

    def _mixed_6a(self, x):
        b = self.bank
        with b.scope("Mixed_6a"):
            b0 = b.conv_bn(x, 384, 3, strides=2, padding="valid")
            b1 = b.conv_bn(b.conv_bn(x, 64, 1), 96, 3)
            b1 = b.conv_bn(b1, 96, 3, strides=2, padding="valid")
            b2 = L.MaxPooling2D(3, strides=2)(x)
            return concat([b0, b1, b2], "Mixed_6a")

    def _block_17(self, x, name, c):
        """Mixed_6b-6e: 1x1 | 1x1-1x7-7x1 | 1x1-7x1-1x7-7x1-1x7 | avgpool-1x1."""
        b = self.bank
        with b.scope(name):
            b0 = b.conv_bn(x, 192, 1)
            b1 = b.conv_bn(x, c, 1)
            b1 = b.conv_bn(b1, c, (1, 7))
            b1 = b.conv_bn(b1, 192, (7, 1))
            b2 = b.conv_bn(x, c, 1)
            for filters, kernel in ((c, (7, 1)), (c, (1, 7)), (c, (7, 1)), (192, (1, 7))):
                b2 = b.conv_bn(b2, filters, kernel)
            b3 = b.conv_bn(L.AveragePooling2D(3, strides=1, padding="same")(x), 192, 1)
            return concat([b0, b1, b2, b3], name)

    def _mixed_7a(self, x):
        b = self.bank
        with b.scope("Mixed_7a"):
            b0 = b.conv_bn(b.conv_bn(x, 192, 1), 320, 3, strides=2, padding="valid")
            b1 = b.conv_bn(x, 192, 1)
            b1 = b.conv_bn(b1, 192, (1, 7))
            b1 = b.conv_bn(b1, 192, (7, 1))
            b1 = b.conv_bn(b1, 192, 3, strides=2, padding="valid")
            b2 = L.MaxPooling2D(3, strides=2)(x)
            return concat([b0, b1, b2], "Mixed_7a")

    def _block_8(self, x, name):
        """Mixed_7b-7c: 1x1 | 1x1-(1x3,3x1) | 1x1-3x3-(1x3,3x1) | avgpool-1x1."""
        b = self.bank
        with b.scope(name):
            b0 = b.conv_bn(x, 320, 1)
            y = b.conv_bn(x, 384, 1)
            b1 = concat([b.conv_bn(y, 384, (1, 3)), b.conv_bn(y, 384, (3, 1))], name + "_b1")
            y = b.conv_bn(b.conv_bn(x, 448, 1), 384, 3)
            b2 = concat([b.conv_bn(y, 384, (1, 3)), b.conv_bn(y, 384, (3, 1))], name + "_b2")
            b3 = b.conv_bn(L.AveragePooling2D(3, strides=1, padding="same")(x), 192, 1)
            return concat([b0, b1, b2, b3], name)

    # -- the network --------------------------------------------------------------
    def _first_stage(self, x):
        x = self._stem(x)
        for name, proj in (("Mixed_5b", 32), ("Mixed_5c", 64), ("Mixed_5d", 64)):
            x = self._block_35(x, name, proj)
        x = self._mixed_6a(x)
        for name, c in (("Mixed_6b", 128), ("Mixed_6c", 160), ("Mixed_6d", 160), ("Mixed_6e", 192)):
            x = self._block_17(x, name, c)
        return x

    def _top(self, x):
        x = self._mixed_7a(x)
        for name in ("Mixed_7b", "Mixed_7c"):
            x = self._block_8(x, name)
        return x

    def _backbone(self, x):
        return self._top(self._first_stage(x))

    def _box_classifier_features(self, x):
        return self._top(PadToMinSize(3, name="box_classifier_pad")(x))

    def _ssd_backbone_maps(self, x):
        mixed_6e = self._first_stage(x)
        return [mixed_6e, self._top(mixed_6e)]
